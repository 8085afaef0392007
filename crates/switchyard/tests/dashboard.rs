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
    /// Headless flags, the profile first.
    fn flags(&self) -> Vec<String> {
        [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--metrics-recording-only",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain([format!("--user-data-dir={}", self.profile.path().display())])
        .collect()
    }

    fn command(&self, extra: &[String]) -> switchyard_testbed::NsCommand {
        let mut cmd = self
            .ns
            .command([self.exe.as_os_str()])
            // Several polls (one a second) before the page is taken.
            .arg("--virtual-time-budget=5000")
            .env("HOME", self.profile.path())
            .timeout(BROWSER_TIMEOUT);
        for arg in self.flags().iter().chain(extra) {
            cmd = cmd.arg(arg);
        }
        cmd
    }

    /// Opens `url`, runs `script` (an expression giving a promise) in the page as the
    /// DevTools protocol's `Runtime.evaluate` and returns the value it resolves to: a
    /// real page with its script, clicked on like an operator would.
    fn evaluate(&self, url: &str, script: &str) -> Result<String, String> {
        let mut devtools =
            devtools::Session::open(&self.exe, self.ns.name(), &self.flags(), url, &self.profile)?;
        // The page target starts blank and then loads `url`: wait until it has, since a
        // script in the blank page would be destroyed with it.
        let loaded = wait_loaded(&mut devtools, url);
        let result = loaded.and_then(|()| devtools.evaluate(script, BROWSER_TIMEOUT));
        devtools.close();
        result
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

/// Polls the page until it shows `url`, fully loaded.
fn wait_loaded(devtools: &mut devtools::Session, url: &str) -> Result<(), String> {
    let want = format!("complete {url}");
    let deadline = std::time::Instant::now() + BROWSER_TIMEOUT;
    loop {
        let state = devtools.evaluate(
            "Promise.resolve(document.readyState + ' ' + location.href)",
            Duration::from_secs(5),
        );
        match state {
            Ok(state) if state == want => return Ok(()),
            _ if std::time::Instant::now() > deadline => {
                return Err(format!("the page never loaded {url}: {state:?}"));
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Waits for web-2's drain button, clicks it and resolves to the page's note about the
/// act once the unit answered.
const CLICK_DRAIN_OF_WEB_2: &str = r#"new Promise((resolve, reject) => {
  const start = Date.now();
  const late = (what) => Date.now() - start > 30000 && (reject(what), true);
  const answered = () => {
    const note = document.getElementById("act");
    if (note.dataset.state === "done" || note.dataset.state === "error") resolve(note.textContent);
    else if (!late("no answer to the act: " + note.textContent)) setTimeout(answered, 100);
  };
  const click = () => {
    const button = document.querySelector('article[data-host="web-2"] button[data-act="drain"]');
    if (button) { button.click(); answered(); }
    else if (!late("no drain button on web-2's card")) setTimeout(click, 100);
  };
  click();
})"#;

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

    // A drain from the dashboard: the operator clicks web-2's drain button, the unit
    // relays the act to web-2's agent, and the card follows the directive until the
    // handshake completes.
    let note = browser
        .evaluate(&url, CLICK_DRAIN_OF_WEB_2)
        .unwrap_or_else(|e| panic!("clicking web-2's drain button: {e}"));
    assert!(
        note.contains("web-2: drain taken by the host") && note.contains("target draining"),
        "the page reports the act: {note}"
    );
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

/// Chromium driven through the DevTools protocol on a pipe (`--remote-debugging-pipe`: it
/// reads NUL-terminated JSON commands on fd 3 and writes answers and events on fd 4), in a
/// namespace through `ip netns exec`.
mod devtools {
    use std::io::{BufRead, BufReader, Write};
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use serde_json::{Value, json};

    pub struct Session {
        child: Child,
        commands: std::fs::File,
        answers: mpsc::Receiver<Value>,
        next: u64,
        session: Option<String>,
    }

    impl Session {
        pub fn open(
            exe: &Path,
            ns: &str,
            flags: &[String],
            url: &str,
            profile: &tempfile::TempDir,
        ) -> Result<Self, String> {
            let (their_commands, commands) =
                nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
            let (answers_in, their_answers) =
                nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
            let (read_fd, write_fd) = (their_commands.as_raw_fd(), their_answers.as_raw_fd());
            let mut command = Command::new("ip");
            command
                .args(["netns", "exec", ns])
                .arg(exe)
                .args(flags)
                .arg("--remote-debugging-pipe")
                .arg(url)
                .env("HOME", profile.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: runs in the forked child before exec and only calls fcntl(2) and
            // dup2(2), which are async-signal-safe, on descriptors open in the child. Both
            // ends are first copied above 9, so placing one at 3 or 4 cannot close the other.
            unsafe {
                command.pre_exec(move || {
                    let read = libc::fcntl(read_fd, libc::F_DUPFD, 10);
                    let write = libc::fcntl(write_fd, libc::F_DUPFD, 10);
                    if read < 0 || write < 0 || libc::dup2(read, 3) < 0 || libc::dup2(write, 4) < 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = command.spawn().map_err(|e| format!("run chromium: {e}"))?;
            drop((their_commands, their_answers));
            let (tx, answers) = mpsc::channel();
            let reader: OwnedFd = answers_in;
            std::thread::spawn(move || {
                let mut reader = BufReader::new(std::fs::File::from(reader));
                let mut message = Vec::new();
                while reader.read_until(0, &mut message).is_ok_and(|n| n > 0) {
                    message.pop_if(|b| *b == 0);
                    if let Ok(value) = serde_json::from_slice::<Value>(&message)
                        && tx.send(value).is_err()
                    {
                        break;
                    }
                    message.clear();
                }
            });
            let mut session = Self {
                child,
                commands: std::fs::File::from(commands),
                answers,
                next: 0,
                session: None,
            };
            let deadline = Instant::now() + super::BROWSER_TIMEOUT;
            let page = loop {
                let targets =
                    session.call("Target.getTargets", json!({}), super::BROWSER_TIMEOUT)?;
                let page = targets["targetInfos"].as_array().and_then(|list| {
                    list.iter()
                        .find(|t| t["type"] == "page")
                        .and_then(|t| t["targetId"].as_str())
                        .map(str::to_owned)
                });
                match page {
                    Some(page) => break page,
                    None if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(100))
                    }
                    None => return Err(format!("no page target: {targets}")),
                }
            };
            let attached = session.call(
                "Target.attachToTarget",
                json!({"targetId": page, "flatten": true}),
                super::BROWSER_TIMEOUT,
            )?;
            session.session = attached["sessionId"].as_str().map(str::to_owned);
            if session.session.is_none() {
                return Err(format!("no session: {attached}"));
            }
            Ok(session)
        }

        /// Sends one command and waits for its answer's `result`.
        fn call(
            &mut self,
            method: &str,
            params: Value,
            timeout: Duration,
        ) -> Result<Value, String> {
            self.next += 1;
            let id = self.next;
            let mut command = json!({"id": id, "method": method, "params": params});
            if let Some(session) = &self.session {
                command["sessionId"] = json!(session);
            }
            let mut bytes = command.to_string().into_bytes();
            bytes.push(0);
            self.commands
                .write_all(&bytes)
                .map_err(|e| format!("send {method}: {e}"))?;
            let deadline = Instant::now() + timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let answer = self
                    .answers
                    .recv_timeout(left)
                    .map_err(|_| format!("no answer to {method} in {timeout:?}"))?;
                if answer["id"] != id {
                    continue;
                }
                if let Some(error) = answer.get("error") {
                    return Err(format!("{method}: {error}"));
                }
                return Ok(answer["result"].clone());
            }
        }

        /// `Runtime.evaluate` of a promise; the string it resolves to.
        pub fn evaluate(&mut self, script: &str, timeout: Duration) -> Result<String, String> {
            let result = self.call(
                "Runtime.evaluate",
                json!({"expression": script, "awaitPromise": true, "returnByValue": true}),
                timeout,
            )?;
            if let Some(exception) = result.get("exceptionDetails") {
                return Err(format!("the script failed: {exception}"));
            }
            Ok(result["result"]["value"]
                .as_str()
                .map_or_else(|| result.to_string(), str::to_owned))
        }

        pub fn close(mut self) {
            self.session = None;
            let _ = self.call("Browser.close", json!({}), Duration::from_secs(5));
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Drop for Session {
        fn drop(&mut self) {
            if matches!(self.child.try_wait(), Ok(None)) {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}
