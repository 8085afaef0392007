//! switchyard's configuration: owns the one TOML schema shared by every role (forwarder,
//! classifier, request router, session store, health cache, host agent), its validation, and the
//! operator-facing diagnostics. It reads the configuration file and the files it references
//! (cluster secret, TLS certificates and keys) and touches nothing else: no sockets, no
//! daemons.
//!
//! ```no_run
//! let config = switchyard_config::load_file(std::path::Path::new("examples/all-in-one.toml"));
//! match config {
//!     Ok(config) => println!("{}", config.summary()),
//!     Err(diagnostics) => eprint!("{diagnostics}"),
//! }
//! ```
//!
//! Loading runs in three stages. TOML syntax errors are reported alone (nothing after them
//! can be trusted). Then every table is read field by field (modules `decode` and `raw`),
//! which reports every unknown field, type error, malformed value and missing field. Then
//! the whole-configuration rules run (module `validate`: unique names, references,
//! combinations, referenced files). All errors of a stage are reported together, each with
//! file, line, column, field path, a stable code ([`codes`]) and usually a hint.

mod decode;
mod diagnostics;
mod duration;
mod files;
mod location;
mod model;
mod raw;
mod router;
mod secret;
mod sessions;
mod validate;

use std::path::Path;

use toml::de::DeTable;

pub use diagnostics::{Diagnostic, Diagnostics, codes};
pub use duration::{format_duration, parse_duration};
pub use model::{
    Affinity, AgentApp, AgentSettings, AttachPoint, Certificate, ClassifierSettings, Cluster,
    Config, Delivery, Firewall, ForwarderSettings, HealthCheck, HealthSettings, Host, HostGroup,
    HostId, Listener, ListenerProtocol, Pool, PortSpan, Prefix, Probe, Protocol, Role, Service,
    ServiceManager, ServiceMode, Unit, UnitId,
};
pub use router::{
    HeaderMatch, PathMatch, Route, RouteCache, RouterSettings, UpstreamSettings, router_defaults,
};
pub use secret::{ClusterSecret, MIN_SECRET_BYTES, SecretError};
pub use sessions::{SessionReplication, SessionSettings, ZombieTimes, session_defaults};
pub use validate::{
    DEFAULT_ADMIN, DEFAULT_AFFINITY_TIMEOUT, DEFAULT_AGENT_API, DEFAULT_AGENT_LISTEN,
    DEFAULT_AGENT_SOCKET, DEFAULT_CAPACITY, DEFAULT_CONTROL_PORT, DEFAULT_EXPECT_STATUS,
    DEFAULT_FALL, DEFAULT_GOSSIP_PORT, DEFAULT_INTERVAL, DEFAULT_RISE, DEFAULT_TIMEOUT,
    MAX_NAME_LEN, health_defaults,
};

use diagnostics::{Sink, file_error};

/// Reads and validates the configuration file at `path`.
///
/// Relative paths inside it (secret, certificates, keys) are resolved against its directory.
/// A file that cannot be read, or is not UTF-8, yields one diagnostic.
pub fn load_file(path: &Path) -> Result<Config, Diagnostics> {
    let bytes = std::fs::read(path).map_err(|e| {
        file_error(
            path,
            codes::UNREADABLE_FILE,
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    match String::from_utf8(bytes) {
        Ok(source) => load_str(&source, path),
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let prefix = String::from_utf8_lossy(&e.as_bytes()[..valid]).into_owned();
            let mut sink = Sink::new(path, &prefix);
            sink.error(
                codes::INVALID_TOML,
                &(valid..valid),
                "",
                format!("{} is not valid UTF-8", path.display()),
                Some("TOML files are UTF-8 text; check the file's encoding".to_owned()),
            );
            Err(sink.finish())
        }
    }
}

/// Validates configuration text. `origin` names it in diagnostics and is the base for
/// relative paths inside it (its directory, or the current directory if it has none).
pub fn load_str(source: &str, origin: &Path) -> Result<Config, Diagnostics> {
    let mut sink = Sink::new(origin, source);
    let (document, syntax_errors) = DeTable::parse_recoverable(source);
    if !syntax_errors.is_empty() {
        // The parser recovers and goes on, so one mistake can cause several follow-on
        // errors on its line; the first one on each line is the one that explains it.
        let mut lines_seen = std::collections::HashSet::new();
        for error in syntax_errors {
            let span = error.span().unwrap_or(0..0);
            let line = source
                .get(..span.start)
                .map_or(0, |s| s.matches('\n').count());
            if !lines_seen.insert(line) {
                continue;
            }
            let message = error.message().trim_end().replace('\n', "; ");
            sink.error(
                codes::INVALID_TOML,
                &span,
                "",
                message,
                Some("fix the TOML syntax first; no other checks ran".to_owned()),
            );
        }
        return Err(sink.finish());
    }
    let raw = raw::read(document.get_ref(), &mut sink);
    match validate::validate(&raw, origin, &mut sink) {
        Some(config) if !sink.has_errors() => Ok(config),
        _ => Err(sink.finish()),
    }
}
