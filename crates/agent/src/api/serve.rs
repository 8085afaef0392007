//! Binding and serving the local API: a loopback TCP listener and a Unix socket (parent
//! directory created, a stale socket of a dead agent replaced, mode 0660).

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
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot listen on {} for the local API", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    Ok(listener)
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
