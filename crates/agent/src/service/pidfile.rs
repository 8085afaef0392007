//! Pid-file backend: the application runs while the process whose pid its pid file holds is
//! alive. Alive means `kill(pid, 0)` finds it (also when it belongs to another user) and
//! `/proc/PID/stat` does not show it as a zombie. A missing, unreadable or malformed pid
//! file means down.

use std::io::ErrorKind;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;

use super::ServiceState;
use crate::checks::one_line;

/// Most bytes read from a pid file (a pid and a newline need a dozen).
const MAX_PIDFILE: u64 = 4096;

/// Reads the pid file at `path` and checks its process.
pub async fn process_state(path: &Path) -> ServiceState {
    let shown = path.display();
    let text = match read_bounded(path).await {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return ServiceState::down(format!("pid file {shown} does not exist"));
        }
        Err(e) => return ServiceState::down(format!("cannot read pid file {shown}: {e}")),
    };
    match parse_pid(&text) {
        Some(pid) => process_alive(pid),
        None => ServiceState::down(format!(
            "pid file {shown} holds no pid: \"{}\"",
            one_line(&text, 40)
        )),
    }
}

async fn read_bounded(path: &Path) -> std::io::Result<String> {
    let file = tokio::fs::File::open(path).await?;
    let mut bytes = Vec::new();
    file.take(MAX_PIDFILE).read_to_end(&mut bytes).await?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The pid on the first line of a pid file: a positive decimal number, surrounding
/// whitespace allowed. 0 and negative numbers are refused (to `kill` they mean process
/// groups).
pub fn parse_pid(text: &str) -> Option<i32> {
    let first = text.lines().next()?.trim();
    first.parse::<i32>().ok().filter(|pid| *pid > 0)
}

/// Whether process `pid` runs.
pub fn process_alive(pid: i32) -> ServiceState {
    if pid <= 0 {
        return ServiceState::down(format!("{pid} is not a process id"));
    }
    match kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(Errno::EPERM) => {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            match stat.as_deref().and_then(stat_state) {
                Some('Z' | 'X') => ServiceState::down(format!(
                    "process {pid} has exited (a zombie its parent has not reaped)"
                )),
                _ => ServiceState::Up,
            }
        }
        Err(Errno::ESRCH) => ServiceState::down(format!("process {pid} is not running")),
        Err(e) => ServiceState::down(format!("cannot check process {pid}: {e}")),
    }
}

/// The state letter of a `/proc/PID/stat` line: the first word after the command name,
/// which is in parentheses and may itself contain spaces and parentheses.
fn stat_state(stat: &str) -> Option<char> {
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.trim_start().chars().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_are_positive_numbers_on_the_first_line() {
        assert_eq!(parse_pid("1234\n"), Some(1234));
        assert_eq!(parse_pid("  42  \nextra\n"), Some(42));
        assert_eq!(parse_pid("0\n"), None);
        assert_eq!(parse_pid("-1\n"), None);
        assert_eq!(parse_pid("abc\n"), None);
        assert_eq!(parse_pid("\n1234\n"), None);
        assert_eq!(parse_pid(""), None);
        assert_eq!(parse_pid("99999999999\n"), None);
    }

    #[test]
    fn stat_state_survives_odd_command_names() {
        assert_eq!(stat_state("123 (sleep) S 1 123 123 0"), Some('S'));
        assert_eq!(stat_state("123 (a) b) Z 1 123"), Some('Z'));
        assert_eq!(stat_state("123 (my prog) R 1"), Some('R'));
        assert_eq!(stat_state("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_group_pids_are_refused() {
        let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        assert_eq!(process_alive(me), ServiceState::Up);
        assert!(!process_alive(0).is_up());
        assert!(!process_alive(-1).is_up());
    }
}
