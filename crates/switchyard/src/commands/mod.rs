//! One module per subcommand of the `switchyard` binary.

pub mod agent;
pub mod check_config;
pub mod ctl;
pub mod demo;
pub mod gen_secret;
pub mod lb;
