//! The testbed's error type. Owns nothing else.

use std::io;
use std::time::Duration;

/// Everything that can go wrong while building, using or tearing down a testbed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// This machine cannot run testbeds (not root, no `ip`, namespaces not permitted…).
    /// Tests turn this into a skip (or a failure under `CI=true`), see [`crate::require`].
    #[error("testbed unavailable: {reason}")]
    Unavailable {
        /// Why, in words a developer can act on.
        reason: String,
    },
    /// A command ran but exited unsuccessfully.
    #[error("`{command}` failed in {place} ({status}): {stderr}")]
    Command {
        /// The command line, shell-quoted.
        command: String,
        /// `namespace NAME` or `root namespace`.
        place: String,
        /// Exit status as text.
        status: String,
        /// What the command wrote to stderr (trimmed).
        stderr: String,
    },
    /// A command or a wait did not finish in time; the command was killed.
    #[error("`{command}` timed out after {after:?} in {place}; stderr: {stderr}")]
    Timeout {
        /// The command line or what was awaited.
        command: String,
        /// `namespace NAME` or `root namespace`.
        place: String,
        /// The limit that was exceeded.
        after: Duration,
        /// Whatever stderr (or log) output was seen before the deadline.
        stderr: String,
    },
    /// A program could not be started at all (usually: not installed).
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        /// The command line, shell-quoted.
        command: String,
        /// The OS error.
        source: io::Error,
    },
    /// Some other I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: io::Error,
    },
    /// An argument was malformed (bad CIDR, bad role name, duplicate namespace…).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// An address or route outside the test ranges (198.18.0.0/15, fc00::/7) was refused, so
    /// that a testbed can never send traffic anywhere but into its own namespaces.
    #[error("{0} is outside the test address ranges (198.18.0.0/15, fc00::/7)")]
    OutsideTestRange(String),
    /// The testbed that owns this handle has already been torn down.
    #[error("testbed {0} has been torn down")]
    TornDown(String),
    /// Teardown could not remove everything; the leftovers are listed.
    #[error("teardown of testbed {testbed} left: {problems:?}")]
    Teardown {
        /// The testbed name.
        testbed: String,
        /// One line per leftover or failure.
        problems: Vec<String>,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
