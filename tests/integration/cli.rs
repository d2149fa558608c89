//! The command-line contract: `tapd check-config` on the shipped and on a broken config,
//! `--help` and `--version` of both binaries, and a clean stop on SIGTERM.

use std::path::Path;
use std::process::Command;

use super::harness::{run_bounded, CommandRun, Tapd, Who};

const TAPD: &str = env!("CARGO_BIN_EXE_tapd");
const TAPCTL: &str = env!("CARGO_BIN_EXE_tapctl");

fn run(program: &str, args: &[&str]) -> CommandRun {
    let name = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    run_bounded(
        Command::new(program)
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("TAPD_SOCKET"),
        format!("{name} {}", args.join(" ")),
    )
}

#[test]
fn shipped_configs_pass_check_config() {
    for config in ["etc/tapd/demo.toml", "etc/tapd/tapd.toml"] {
        let out = run(TAPD, &["check-config", "--config", config]);
        assert!(out.ok().contains("configuration is valid"), "{out}");
    }
}

#[test]
fn check_config_names_every_problem_of_a_broken_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broken.toml");
    std::fs::write(
        &config,
        r#"
[store]
url = "sqlite:tapd.db"

[directory]
url = "file:directory.ldif"

[admin]
socket = "admin.sock"
socket_grup = "tapd"

[radius]
listen = ["127.0.0.1:18120"]

[[radius.clients]]
name = "vpn"
address = "10.0.0.0/33"
secret_file = "no-such.secret"

[metrics]
enabled = false
"#,
    )
    .unwrap();
    let out = run(
        TAPD,
        &["check-config", "--config", &config.to_string_lossy()],
    );
    assert_eq!(out.code(), Some(1), "{out}");
    for problem in [
        "admin.socket_grup: unknown key",
        "radius.clients[0].address:",
        "10.0.0.0/33",
        "radius.clients[0].secret_file:",
        "no-such.secret",
    ] {
        assert!(
            out.stderr.contains(problem),
            "{problem:?} not named:\n{out}"
        );
    }
    // The daemon refuses to start on it the same way.
    let out = run(TAPD, &["--config", &config.to_string_lossy()]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("admin.socket_grup"), "{out}");
}

#[test]
fn both_binaries_have_help_and_version() {
    let version = env!("CARGO_PKG_VERSION");
    let out = run(TAPD, &["--version"]);
    assert_eq!(out.ok().trim(), format!("tapd {version}"), "{out}");
    let out = run(TAPD, &["--help"]);
    assert!(out.ok().contains("check-config"), "{out}");
    assert!(out.stdout.contains("--config"), "{out}");

    let out = run(TAPCTL, &["--version"]);
    assert_eq!(out.ok().trim(), format!("tapctl {version}"), "{out}");
    let out = run(TAPCTL, &["--help"]);
    for verb in [
        "tap", "policy", "user", "methods", "sync", "audit", "--json", "--socket",
    ] {
        assert!(out.ok().contains(verb), "{verb} missing:\n{out}");
    }
    let out = run(TAPCTL, &["tap", "--help"]);
    for verb in ["create", "show", "delete"] {
        assert!(out.ok().contains(verb), "{verb} missing:\n{out}");
    }

    // Without a daemon, tapctl says what is wrong and how to point it at the socket.
    let out = run(
        TAPCTL,
        &["--socket", "/nonexistent/tapd.sock", "policy", "show"],
    );
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("is tapd running?"), "{out}");
}

#[test]
fn sigterm_stops_the_daemon_with_exit_0_and_removes_the_socket() {
    let mut tapd = Tapd::start();
    tapd.tapctl(Who::Root, &["sync", "status"]).ok();
    assert!(tapd::admin::server::is_socket(&tapd.socket));
    let status = tapd.terminate();
    assert_eq!(status.code(), Some(0), "tapd ended with {status}");
    assert!(
        !tapd.socket.exists(),
        "the admin socket {} is still there",
        tapd.socket.display()
    );
    let log = tapd.log_text();
    assert!(log.contains("SIGTERM received, stopping"), "{log}");
    assert!(log.contains("tapd stopped"), "{log}");
}
