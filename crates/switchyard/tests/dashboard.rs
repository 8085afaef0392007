//! The live dashboard (`GET /` on a unit's admin API) in headless Chromium, and
//! `switchyard ctl watch`, against a live cluster of real processes: one `switchyard lb`
//! unit and three hosts with their agents in network namespaces (`support::cluster`). Chromium runs inside the unit's namespace, where
//! the admin API listens on `127.0.0.1:9180`, so nothing is exposed on the machine's own
//! loopback and the browser cannot reach anything but the namespaces' addresses.
//!
//! Needs root (namespaces) and Debian's `chromium`; skipped without either, failed under
//! `CI=true` (`.ci/run` installs the package). The screenshot of the final state is kept
//! under the cargo target directory (`CARGO_TARGET_TMPDIR/dashboard/`); the test prints
//! its path.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::cluster::{ADMIN, Cluster, ClusterSpec};
use support::wait::wait_until;
use switchyard_testbed::Netns;

const SETTLE: Duration = Duration::from_secs(20);
/// How long one Chromium run may take (a cold start on a loaded 2-core machine is slow).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

/// The Chromium executable, or `None` after printing why the test is skipped (failing
/// under `CI=true`, where `.ci/run` installs it).
fn chromium(test: &str) -> Option<PathBuf> {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let path = Path::new(dir).join("chromium");
        if path.is_file() {
            return Some(path);
        }
    }
    let ci = std::env::var("CI").ok();
    match switchyard_testbed::on_unavailable(ci.as_deref()) {
        switchyard_testbed::OnUnavailable::Fail => {
            panic!("{test} needs Debian's chromium package, which CI must provide (.ci/run)")
        }
        switchyard_testbed::OnUnavailable::Skip => {
            eprintln!(
                "\n{}",
                switchyard_testbed::skip_line(
                    test,
                    "chromium",
                    "no chromium executable (apt-get install chromium)"
                )
                .trim_end()
            );
            None
        }
    }
}

/// Headless Chromium inside a namespace, with its profile in a directory of its own.
struct Browser {
    exe: PathBuf,
    ns: Netns,
    profile: tempfile::TempDir,
}

impl Browser {
    fn command(&self, extra: &[String]) -> switchyard_testbed::NsCommand {
        let mut cmd = self
            .ns
            .command([self.exe.as_os_str()])
            .arg("--headless")
            .arg("--no-sandbox")
            .arg("--disable-gpu")
            .arg("--disable-dev-shm-usage")
            .arg("--no-first-run")
            .arg("--disable-extensions")
            .arg("--disable-background-networking")
            .arg("--disable-component-update")
            .arg("--disable-sync")
            .arg("--metrics-recording-only")
            .arg(format!("--user-data-dir={}", self.profile.path().display()))
            // Several polls (one a second) before the page is taken.
            .arg("--virtual-time-budget=5000")
            .env("HOME", self.profile.path())
            .timeout(BROWSER_TIMEOUT);
        for arg in extra {
            cmd = cmd.arg(arg);
        }
        cmd
    }

    /// The page's DOM after the time budget.
    fn dom(&self, url: &str) -> Result<String, String> {
        let out = self
            .command(&["--dump-dom".to_owned(), url.to_owned()])
            .output()
            .map_err(|e| format!("run chromium: {e}"))?;
        let dom = out.stdout;
        if !out.status.success() || !dom.contains("</html>") {
            return Err(format!(
                "chromium exited {} with no page; stderr: {}",
                out.status, out.stderr
            ));
        }
        Ok(dom)
    }

    /// A PNG of the page at `path`.
    fn screenshot(&self, url: &str, path: &Path) -> Result<(), String> {
        let out = self
            .command(&[
                format!("--screenshot={}", path.display()),
                "--window-size=1280,900".to_owned(),
                "--hide-scrollbars".to_owned(),
                url.to_owned(),
            ])
            .output()
            .map_err(|e| format!("run chromium: {e}"))?;
        let png = std::fs::read(path).map_err(|e| {
            format!(
                "no screenshot at {} ({e}); chromium exited {}, stderr: {}",
                path.display(),
                out.status,
                out.stderr
            )
        })?;
        if !png.starts_with(b"\x89PNG\r\n\x1a\n") {
            return Err(format!("{} is not a PNG", path.display()));
        }
        Ok(())
    }
}

/// `switchyard ctl ARGS PATH` (an agent's socket last), which must succeed; its stdout.
#[track_caller]
fn ctl(args: &[&str], socket: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("ctl")
        .args(args)
        .arg(socket)
        .output()
        .expect("run switchyard ctl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "switchyard ctl {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The `<article>` card of host `name` in a dumped DOM.
fn card<'a>(dom: &'a str, name: &str) -> Option<&'a str> {
    let marker = format!("data-host=\"{name}\"");
    dom.split("<article")
        .skip(1)
        .find(|part| {
            part.split_once('>')
                .is_some_and(|(attrs, _)| attrs.contains(&marker))
        })
        .map(|part| part.split_once("</article>").map_or(part, |(card, _)| card))
}

/// Checks host `name`'s card holds every `attribute="value"` of `want`.
fn card_shows(dom: &str, name: &str, want: &[(&str, &str)]) -> Result<(), String> {
    let card = card(dom, name).ok_or_else(|| format!("no card for {name} in the page"))?;
    for (attribute, value) in want {
        let needle = format!("{attribute}=\"{value}\"");
        if !card.contains(&needle) {
            return Err(format!("card of {name} lacks {needle}: {card}"));
        }
    }
    Ok(())
}

/// The dashboard shows the three hosts with the health, load and capacity their agents
/// report (web-1's capacity set with `ctl capacity`), then a drain of web-2 (`ctl drain`
/// through its agent's socket) as it completes (a screenshot of it is kept); `ctl watch
/// --count 2` shows the same in two frames and exits.
#[test]
fn dashboard_in_chromium_and_ctl_watch_show_live_hosts_and_a_drain() {
    const TEST: &str = "dashboard_in_chromium_and_ctl_watch_show_live_hosts_and_a_drain";
    let Some(exe) = chromium(TEST) else {
        return;
    };
    let spec = ClusterSpec {
        lb_units: 1,
        ..ClusterSpec::default()
    };
    let Some(c) = Cluster::start("dashboard: one unit, three hosts, chromium", spec) else {
        return;
    };
    c.wait_converged(SETTLE);

    // Distinctive values through the agents' local API.
    let wanted = [
        ("web-1", "healthy", 37u8, 61u8),
        ("web-2", "healthy", 12, 50),
        ("web-3", "failing", 5, 40),
    ];
    for (k, (_, health, load, capacity)) in wanted.iter().enumerate() {
        // web-1's capacity through `switchyard ctl capacity` below.
        let capacity = (k != 0).then_some(*capacity);
        c.set_status(k, Some(health), Some(*load), capacity);
    }
    let out = ctl(
        &["capacity", "web-1", "61", "--agent-socket"],
        &c.agent(0).socket,
    );
    assert!(
        out.contains("web-1/web: target active, capacity 61"),
        "{out}"
    );
    for (k, (name, health, load, capacity)) in wanted.iter().enumerate() {
        c.wait_rows(&format!("{name} reported at the unit"), k, SETTLE, |r| {
            r.health == *health && r.load == *load && r.capacity == *capacity
        });
    }

    let browser = Browser {
        exe,
        ns: c.topo().lb_unit(0).ns().clone(),
        profile: tempfile::tempdir().expect("chromium profile directory"),
    };
    let url = format!("http://{ADMIN}/");

    let (dom, _) = wait_until("the dashboard shows every host's state", SETTLE * 3, || {
        let dom = browser.dom(&url)?;
        for (name, health, load, capacity) in wanted {
            card_shows(
                &dom,
                name,
                &[
                    ("data-health", health),
                    ("data-alive", "true"),
                    ("data-load", &load.to_string()),
                    ("data-capacity", &capacity.to_string()),
                    ("data-target", "active"),
                    ("data-current", "active"),
                ],
            )?;
        }
        Ok(dom)
    });
    assert!(
        dom.contains("unit lb-1 (id 1)"),
        "the page names the unit: {dom}"
    );
    let web1 = card(&dom, "web-1").expect("web-1's card");
    assert!(
        web1.contains("37% of capacity 61"),
        "web-1's card shows load against capacity: {web1}"
    );

    // A drain: the card follows the directive until the handshake completes.
    let out = ctl(&["drain", "web-2", "--agent-socket"], &c.agent(1).socket);
    assert!(out.contains("web-2/web: target draining"), "{out}");
    c.wait_rows("web-2 drained at the unit", 1, SETTLE, |r| {
        r.target == "draining" && r.current == "draining"
    });
    let (dom, _) = wait_until("the dashboard shows web-2 drained", SETTLE * 3, || {
        let dom = browser.dom(&url)?;
        card_shows(
            &dom,
            "web-2",
            &[
                ("data-target", "draining"),
                ("data-current", "draining"),
                ("data-progress", "drained"),
            ],
        )?;
        card_shows(&dom, "web-1", &[("data-target", "active")])?;
        Ok(dom)
    });
    let web2 = card(&dom, "web-2").expect("web-2's card");
    assert!(
        web2.contains("draining: no new connections"),
        "web-2's card says it is drained: {web2}"
    );

    // The same state in the terminal view: two frames, then exit 0.
    let watch = browser
        .ns
        .command([
            env!("CARGO_BIN_EXE_switchyard"),
            "ctl",
            "watch",
            "--count",
            "2",
            "--interval",
            "200ms",
        ])
        .timeout(SETTLE)
        .run()
        .unwrap_or_else(|e| panic!("switchyard ctl watch --count 2: {e}"));
    assert!(
        watch.contains("frame 1") && watch.contains("frame 2") && !watch.contains("frame 3"),
        "two frames: {watch}"
    );
    let last = watch
        .split("frame 2")
        .nth(1)
        .unwrap_or_else(|| panic!("no second frame: {watch}"));
    for (name, parts) in [
        ("web-1 (101)", ["healthy", "37%/61", "active"]),
        ("web-2 (102)", ["healthy", "12%/50", "draining"]),
        ("web-3 (103)", ["failing", "5%/40", "active"]),
    ] {
        let line = last
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no line for {name}: {watch}"));
        for part in parts {
            assert!(line.contains(part), "{name}: {part:?} missing: {line}");
        }
    }
    assert!(
        last.contains("health: 3 hosts (3 in sync), 3 endpoints"),
        "counters line: {last}"
    );

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    let shot = dir.join("dashboard-drained.png");
    let _ = std::fs::remove_file(&shot);
    wait_until("a screenshot of the dashboard", SETTLE * 3, || {
        browser.screenshot(&url, &shot)
    });
    eprintln!("dashboard screenshot: {}", shot.display());
}

/// The DOM helpers find the right card and fail on a value it does not show.
#[test]
fn card_helpers_read_one_host_card() {
    let dom = concat!(
        r#"<html><body><main><article class="host" data-host="web-1" data-health="healthy">"#,
        r#"<div class="row" data-load="37"></div></article>"#,
        r#"<article class="host" data-host="web-10" data-health="failing"></article>"#,
        r#"</main></body></html>"#
    );
    assert!(
        card_shows(
            dom,
            "web-1",
            &[("data-health", "healthy"), ("data-load", "37")]
        )
        .is_ok()
    );
    assert!(card_shows(dom, "web-1", &[("data-health", "failing")]).is_err());
    assert!(card_shows(dom, "web-10", &[("data-load", "37")]).is_err());
    assert!(card_shows(dom, "web-2", &[]).is_err());
}
