//! End-to-end tests of the `switchyard` command line: the real binary, real files.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn switchyard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .output()
        .expect("run the switchyard binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn example_configs() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .expect("examples directory")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn check_config_accepts_every_example() {
    let files = example_configs();
    assert!(
        files.len() >= 4,
        "expected the example configs, found {files:?}"
    );
    for file in files {
        let out = switchyard(&["check-config", file.to_str().expect("utf-8 path")]);
        assert!(
            out.status.success(),
            "{} was rejected:\n{}",
            file.display(),
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).starts_with("ok: "),
            "{}",
            text(&out.stdout)
        );
    }
}

#[test]
fn check_config_reports_every_error_with_location_and_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("cluster.key");
    std::fs::write(&secret, "ab".repeat(32)).expect("write secret");
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        r#"[cluster]
id = "test"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb1"
id = 1
address = "198.18.0.1"
roles = ["forwarder", "classifier"]

[[services]]
name = "web"
vip = "198.51.100.10:80"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "nowhere"

[[services]]
name = "web2"
vip = "198.51.100.10:80"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "nowhere"
"#,
    )
    .expect("write config");
    let out = switchyard(&["check-config", config.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1), "stdout: {}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("undefined-pool"), "{stderr}");
    assert!(stderr.contains("duplicate-vip"), "{stderr}");
    assert!(
        stderr.contains("bad.toml:17:"),
        "undefined pool located at line 17: {stderr}"
    );
    assert!(
        stderr.contains("bad.toml:21:"),
        "duplicate VIP located at line 21: {stderr}"
    );
}

#[test]
fn check_config_fails_on_a_missing_file() {
    let out = switchyard(&["check-config", "/nonexistent/switchyard.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/switchyard.toml"));
}

#[test]
fn gen_secret_writes_a_private_hex_secret_that_configs_accept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("cluster.key");
    let secret_arg = secret.to_str().expect("utf-8 path");
    let out = switchyard(&["gen-secret", "--out", secret_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let contents = std::fs::read_to_string(&secret).expect("read secret");
    let hex = contents.trim_end();
    assert_eq!(hex.len(), 64);
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
    let mode = std::fs::metadata(&secret)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A second run must not silently replace the cluster's secret.
    let again = switchyard(&["gen-secret", "--out", secret_arg]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("--force"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&secret).expect("read secret"),
        contents
    );

    // Two generated secrets differ.
    let other = switchyard(&["gen-secret"]);
    assert!(other.status.success());
    assert_ne!(text(&other.stdout).trim_end(), hex);

    // And the generated file is accepted as a cluster secret.
    let config = dir.path().join("min.toml");
    std::fs::write(
        &config,
        "[cluster]\nid = \"test\"\nsecret_file = \"cluster.key\"\n\n\
         [[cluster.units]]\nname = \"lb1\"\nid = 1\naddress = \"198.18.0.1\"\n\
         roles = [\"forwarder\", \"classifier\", \"health-cache\"]\n",
    )
    .expect("write config");
    let checked = switchyard(&["check-config", config.to_str().expect("utf-8 path")]);
    assert!(checked.status.success(), "{}", text(&checked.stderr));
}

#[test]
fn help_lists_exactly_the_implemented_subcommands() {
    let out = switchyard(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for sub in ["demo", "lb", "agent", "ctl", "check-config", "gen-secret"] {
        assert!(help.contains(sub), "--help lacks {sub}:\n{help}");
    }
    // The demo's built-in host application is internal.
    assert!(
        !help.contains("demo-host"),
        "--help advertises demo-host:\n{help}"
    );
}
