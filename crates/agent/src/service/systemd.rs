//! systemd backend: asks `systemctl show` for a unit's `LoadState` and `ActiveState`. The
//! application runs while the unit is `active`, `reloading` or `refreshing` (active and
//! re-reading its configuration). Every other state, an unknown unit, a missing `systemctl`
//! and a system not booted with systemd all count as down, each with its reason.
//!
//! Needs systemd as PID 1 to give live answers; without it `systemctl` fails and every
//! unit is down ("System has not been booted with systemd …").

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::ServiceState;
use crate::checks::one_line;

/// The program asked by default (found on the `PATH`).
pub const SYSTEMCTL: &str = "systemctl";

/// How long one `systemctl show` may take.
pub const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(5);

/// `ActiveState` values in which the application runs.
const UP_STATES: &[&str] = &["active", "reloading", "refreshing"];

/// Asks `systemctl` (a program name or path) about `unit`.
pub async fn unit_state(systemctl: &Path, unit: &str) -> ServiceState {
    let run = Command::new(systemctl)
        .args([
            "show",
            "--no-pager",
            "--property=LoadState",
            "--property=ActiveState",
            "--",
            unit,
        ])
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let shown = systemctl.display();
    match tokio::time::timeout(SYSTEMCTL_TIMEOUT, run).await {
        Err(_) => ServiceState::down(format!(
            "{shown} show {unit} did not answer within {}",
            crate::checks::shown(SYSTEMCTL_TIMEOUT)
        )),
        Ok(Err(e)) => ServiceState::down(format!("cannot run {shown}: {e}")),
        Ok(Ok(output)) if !output.status.success() => {
            let said = one_line(&String::from_utf8_lossy(&output.stderr), 200);
            ServiceState::down(format!(
                "{shown} show {unit} failed ({}){}{said}",
                output.status,
                if said.is_empty() { "" } else { ": " }
            ))
        }
        Ok(Ok(output)) => parse_show(unit, &String::from_utf8_lossy(&output.stdout)),
    }
}

/// Judges the output of `systemctl show --property=LoadState --property=ActiveState UNIT`:
/// `KEY=value` lines in any order; blank and other lines are ignored. A lone value with no
/// `=` (the `--value` form) is taken as the `ActiveState`.
pub fn parse_show(unit: &str, output: &str) -> ServiceState {
    let mut load_state = None;
    let mut active_state = None;
    let mut bare = Vec::new();
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.split_once('=') {
            Some((key, value)) => match key.trim() {
                "LoadState" => load_state = load_state.or(Some(value.trim())),
                "ActiveState" => active_state = active_state.or(Some(value.trim())),
                _ => {}
            },
            None => bare.push(line),
        }
    }
    if active_state.is_none()
        && let [only] = bare.as_slice()
    {
        active_state = Some(only);
    }
    let Some(active) = active_state.filter(|s| !s.is_empty()) else {
        return ServiceState::down(format!(
            "systemctl reported no ActiveState for {unit}: \"{}\"",
            one_line(output, 80)
        ));
    };
    if UP_STATES.contains(&active) {
        return ServiceState::Up;
    }
    match load_state {
        Some("not-found") => ServiceState::down(format!("unit {unit} does not exist")),
        Some(load) if load != "loaded" && !load.is_empty() => {
            ServiceState::down(format!("unit {unit} is {active} (LoadState={load})"))
        }
        _ => ServiceState::down(format!("unit {unit} is {active}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(state: ServiceState) -> String {
        match state {
            ServiceState::Up => "up".to_owned(),
            ServiceState::Down { reason } => reason,
        }
    }

    #[test]
    fn active_and_reloading_units_are_up() {
        for output in [
            "LoadState=loaded\nActiveState=active\n",
            "ActiveState=reloading\nLoadState=loaded\n",
            "ActiveState=refreshing\n",
            "  ActiveState = active  \r\n",
            "active\n",
            "Id=nginx.service\nActiveState=active\nSubState=running\n",
        ] {
            assert_eq!(
                parse_show("nginx.service", output),
                ServiceState::Up,
                "{output:?}"
            );
        }
    }

    #[test]
    fn every_other_state_is_down_with_the_state_named() {
        for (output, expected) in [
            (
                "LoadState=loaded\nActiveState=inactive\n",
                "unit u is inactive",
            ),
            ("LoadState=loaded\nActiveState=failed\n", "unit u is failed"),
            ("ActiveState=activating\n", "unit u is activating"),
            ("ActiveState=deactivating\n", "unit u is deactivating"),
            ("ActiveState=maintenance\n", "unit u is maintenance"),
            (
                "LoadState=masked\nActiveState=inactive\n",
                "unit u is inactive (LoadState=masked)",
            ),
            ("inactive\n", "unit u is inactive"),
        ] {
            assert_eq!(reason(parse_show("u", output)), expected, "{output:?}");
        }
    }

    #[test]
    fn an_unknown_unit_is_down() {
        // What systemctl prints for a unit that does not exist (exit status 0).
        let output = "LoadState=not-found\nActiveState=inactive\n";
        assert_eq!(
            reason(parse_show("nope.service", output)),
            "unit nope.service does not exist"
        );
    }

    #[test]
    fn output_without_an_active_state_is_down() {
        for output in [
            "",
            "\n\n",
            "LoadState=loaded\n",
            "ActiveState=\n",
            "two\nwords\n",
        ] {
            let why = reason(parse_show("u", output));
            assert!(
                why.starts_with("systemctl reported no ActiveState for u"),
                "{output:?}: {why}"
            );
        }
    }

    #[test]
    fn the_first_value_of_a_repeated_key_counts() {
        let output = "ActiveState=active\nActiveState=failed\n";
        assert_eq!(parse_show("u", output), ServiceState::Up);
    }
}
