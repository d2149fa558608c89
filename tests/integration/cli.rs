//! The command-line contract: `tapd check-config` on the shipped and on a broken config,
//! `--help` and `--version` of both binaries, and a clean stop on SIGTERM.

use std::path::Path;
use std::process::Command;

use super::harness::{run_bounded, CommandRun, Tapd, Who};
use crate::support::config::ConfigFile;

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
    // The README's first command: the demo's secret files are made private (a git checkout
    // gives them 0644, which tapd refuses).
    for file in ["demo-radius.secret", "demo-federation.token"] {
        std::fs::set_permissions(
            std::path::Path::new("etc/tapd").join(file),
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
        )
        .unwrap();
    }
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
listen = ["127.0.0.1:0"]

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

/// An attacker with a local account reads a world-readable RADIUS secret (or LDAP password,
/// TLS key…): `check-config` and the daemon refuse such a file, naming it and the fix.
#[test]
fn check_config_refuses_a_world_readable_secret_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("directory.ldif"), "").unwrap();
    let secret = dir.path().join("radius.secret");
    std::fs::write(&secret, "a-long-enough-radius-secret").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = ConfigFile::new()
        .store("sqlite:tapd.db")
        .string("directory", "url", "file:directory.ldif")
        .string("admin", "socket", "admin.sock")
        .radius_on_loopback("0s")
        .radius_client("vpn", "127.0.0.1", &secret)
        .no_metrics()
        .write(&dir.path().join("tapd.toml"));
    let config = config.to_string_lossy().into_owned();
    let out = run(TAPD, &["check-config", "--config", &config]);
    assert_eq!(out.code(), Some(1), "{out}");
    let fix = format!("chmod 600 {}", secret.display());
    for named in ["radius.clients[0].secret_file:", "every local user", &fix] {
        assert!(out.stderr.contains(named), "{named:?} not named:\n{out}");
    }
    let out = run(TAPD, &["--config", &config]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains(&fix), "{out}");

    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(TAPD, &["check-config", "--config", &config]);
    assert!(out.ok().contains("configuration is valid"), "{out}");
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

/// `tapd check-config` warns about a role named by a cn that two synced groups share (it
/// names neither), reading the groups of the last sync from the store; a role named by DN is
/// not warned about.
#[test]
fn check_config_warns_about_a_cn_two_synced_groups_share() {
    use tapd::model::Group;
    use tapd::store::{sqlite::SqliteStore, Store, SyncPlan};

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tapd.db");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(&db, std::time::Duration::from_secs(5))
            .await
            .unwrap();
        let group = |id: &str, dn: &str| Group {
            id: id.to_owned(),
            dn: dn.to_owned(),
            display_name: "helpdesk".to_owned(),
            member_user_ids: Vec::new(),
        };
        let plan = SyncPlan {
            upsert_groups: vec![
                group("g-1", "cn=helpdesk,ou=groups,dc=example,dc=org"),
                group("g-2", "cn=helpdesk,ou=projects,dc=example,dc=org"),
            ],
            ..SyncPlan::default()
        };
        let fence = store
            .try_sync_lease("test", std::time::Duration::from_secs(60))
            .await
            .unwrap()
            .granted()
            .unwrap()
            .fence();
        store.apply_sync(&fence, &plan, &[]).await.unwrap();
    });
    let config = dir.path().join("tapd.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[store]
url = "sqlite:{}"

[directory]
url = "file:{}/etc/tapd/demo-directory.ldif"

[admin]
socket = "admin.sock"

[admin.roles]
authentication_administrator = ["helpdesk"]
global_reader = ["cn=helpdesk,ou=groups,dc=example,dc=org"]
"#,
            db.display(),
            env!("CARGO_MANIFEST_DIR")
        ),
    )
    .unwrap();
    let out = run(
        TAPD,
        &["check-config", "--config", &config.to_string_lossy()],
    );
    assert!(out.ok().contains("configuration is valid"), "{out}");
    let text = &out.stderr;
    assert!(
        text.contains(
            "admin.roles.authentication_administrator: group reference \"helpdesk\" is ambiguous"
        ),
        "{out}"
    );
    assert!(text.contains("ou=projects"), "{out}");
    assert!(!text.contains("global_reader"), "{out}");
}
