//! One module per subcommand of the `switchyard` binary.

pub mod check_config;
pub mod gen_secret;
