//! Binding and serving the local API: a loopback TCP listener and a Unix socket (parent
//! directory created, a stale socket of a dead agent replaced, mode 0660 from the start).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};
use axum::Router;
use tokio::net::{TcpListener, UnixListener};

/// Binds the API's TCP listener; refuses a non-loopback address (the API is
/// unauthenticated).
pub async fn bind_tcp(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    if !addr.ip().is_loopback() {
        bail!(
            "the local API address {addr} is not a loopback address; the API is unauthenticated and only listens on loopback (e.g. 127.0.0.1:9181)"
        );
    }
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the local API"))
}

/// Binds the API's Unix socket at `path`: creates the parent directory (mode 0755) if
/// needed, replaces a stale socket nobody listens on, refuses to replace anything else, and
/// makes the socket mode 0660 (owner and group may use the API).
pub fn bind_unix(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
        && !parent.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => bail!(
                    "{} is in use: another agent serves its local API there",
                    path.display()
                ),
                Err(_) => std::fs::remove_file(path).with_context(|| {
                    format!("cannot remove the stale socket {}", path.display())
                })?,
            }
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; not replacing it",
            path.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    }
    bind_private(path)
}

/// Binds the socket where nobody else can reach it yet, then moves it into place: bound
/// inside a fresh directory of mode 0700 next to `path`, given mode 0660, renamed to
/// `path`. The socket is never more open than 0660, whatever the process umask (a
/// umask change would be process-wide, and the agent has other threads).
fn bind_private(path: &Path) -> anyhow::Result<UnixListener> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    path.file_name()
        .with_context(|| format!("{} does not name a file", path.display()))?;
    // Short names: a socket path has at most 107 bytes.
    let private = parent.join(format!(".sock-{}", std::process::id()));
    // A directory left by a crash of an earlier process with the same pid.
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .with_context(|| format!("cannot create {}", private.display()))?;
    let staged = private.join("s");
    let result = (|| -> anyhow::Result<UnixListener> {
        let listener = UnixListener::bind(&staged).with_context(|| {
            format!(
                "cannot listen on {} for the local API (bound first as {})",
                path.display(),
                staged.display()
            )
        })?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o660))
            .with_context(|| format!("cannot set the mode of {}", staged.display()))?;
        std::fs::rename(&staged, path)
            .with_context(|| format!("cannot move the socket to {}", path.display()))?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    result
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve_tcp(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves `router` on the Unix socket `listener` until `shutdown` completes.
pub async fn serve_unix(
    listener: UnixListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[tokio::test]
    async fn the_socket_is_bound_with_mode_0660_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("run").join("agent.sock");
        let listener = bind_unix(&path).expect("bind");
        let meta = std::fs::symlink_metadata(&path).expect("socket");
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o777, 0o660);
        // Only the socket is in its directory: the private staging directory is gone.
        let entries: Vec<_> = std::fs::read_dir(path.parent().expect("parent"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(entries, [std::ffi::OsString::from("agent.sock")]);
        // It still accepts connections after the move.
        let (client, accepted) =
            tokio::join!(tokio::net::UnixStream::connect(&path), listener.accept());
        client.expect("connect");
        accepted.expect("accept");
        // A second agent is refused; a stale socket is replaced.
        assert!(
            bind_unix(&path).is_err(),
            "socket in use must not be replaced"
        );
        drop(listener);
        let _again = bind_unix(&path).expect("stale socket replaced");
    }
}
