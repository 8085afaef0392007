//! Exec check: runs a command (no shell) and judges it by its exit status: 0 passes,
//! anything else fails. A `load=NN` word on its stdout (0..=100, optionally followed by `%`;
//! the last one wins) becomes the application's reported load; anything else there is
//! ignored. At most [`MAX_STDOUT`] bytes of stdout are kept; the rest is drained and dropped.
//!
//! The command runs in a process group of its own with stdin closed, stderr discarded, and
//! the endpoint in its environment (`SWITCHYARD_ENDPOINT=IP:port`, `SWITCHYARD_ADDRESS`,
//! `SWITCHYARD_PORT`). When the timeout passes, the whole group is killed (so `sh -c` and
//! everything it started go too) and the command is reaped.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::{ProbeResult, one_line, shown};

/// Most stdout bytes kept for the load and the detail line.
pub const MAX_STDOUT: usize = 64 * 1024;

/// Runs `command` (program, then arguments) once for `endpoint`.
pub async fn probe(command: &[String], endpoint: SocketAddr, timeout: Duration) -> ProbeResult {
    let Some((program, args)) = command.split_first() else {
        return ProbeResult::fail("no command to run");
    };
    let mut child = match Command::new(program)
        .args(args)
        .env("SWITCHYARD_ENDPOINT", endpoint.to_string())
        .env("SWITCHYARD_ADDRESS", endpoint.ip().to_string())
        .env("SWITCHYARD_PORT", endpoint.port().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return ProbeResult::fail(format!("cannot run {program}: {e}")),
    };
    let stdout = child.stdout.take();
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let finished = tokio::time::timeout(timeout, async {
        tokio::join!(read_bounded(stdout), child.wait())
    })
    .await;
    match finished {
        Ok((output, Ok(status))) => {
            let text = String::from_utf8_lossy(&output);
            let load = parse_load(&text);
            let said = one_line(&text, 120);
            let mut detail = match status.code() {
                Some(code) => format!("{program} exited with status {code}"),
                None => format!("{program} was killed ({status})"),
            };
            if !said.is_empty() {
                detail.push_str(": ");
                detail.push_str(&said);
            }
            ProbeResult {
                ok: status.success(),
                load,
                detail,
            }
        }
        Ok((_, Err(e))) => ProbeResult::fail(format!("waiting for {program}: {e}")),
        Err(_) => {
            // The group leader is not reaped yet, so its pid (the group id) cannot have been
            // reused: the signal reaches only what the command started.
            if let Some(group) = group {
                let _ = killpg(group, Signal::SIGKILL);
            }
            // Kills the leader (if the group signal missed it) and reaps it.
            let _ = child.kill().await;
            ProbeResult::fail(format!(
                "{program} did not finish within {}; killed",
                shown(timeout)
            ))
        }
    }
}

/// Reads up to [`MAX_STDOUT`] bytes, then drains the rest so the command never blocks on a
/// full pipe.
async fn read_bounded(output: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut output) = output else {
        return kept;
    };
    let limit = u64::try_from(MAX_STDOUT).unwrap_or(u64::MAX);
    if (&mut output)
        .take(limit)
        .read_to_end(&mut kept)
        .await
        .is_ok()
    {
        let _ = tokio::io::copy(&mut output, &mut tokio::io::sink()).await;
    }
    kept
}

/// The load a command reported: the last `load=NN` word with NN in 0..=100 (a trailing `%`
/// is allowed). Other words, and `load=` words with anything else, are ignored.
pub fn parse_load(output: &str) -> Option<u8> {
    output
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("load="))
        .filter_map(|value| {
            let value = value.strip_suffix('%').unwrap_or(value);
            value.parse::<u8>().ok().filter(|load| *load <= 100)
        })
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::parse_load;

    #[test]
    fn load_words_are_found_and_checked() {
        assert_eq!(parse_load("load=42\n"), Some(42));
        assert_eq!(parse_load("ok load=0"), Some(0));
        assert_eq!(parse_load("load=100%"), Some(100));
        assert_eq!(parse_load("load=10 load=20"), Some(20));
        assert_eq!(parse_load("load=30 load=high"), Some(30));
        assert_eq!(parse_load("load=101"), None);
        assert_eq!(parse_load("load=-1"), None);
        assert_eq!(parse_load("load=4.5"), None);
        assert_eq!(parse_load("load= 42"), None);
        assert_eq!(parse_load("overload=42"), None);
        assert_eq!(parse_load("LOAD=42"), None);
        assert_eq!(parse_load(""), None);
    }
}
