//! The real `tapd` binary synced from slapd, driven with the real `tapctl` over the admin
//! socket: sync status, transitive groups and roles, and a sync while slapd is down (also in
//! `/metrics`, on the port the daemon chose).

use std::process::Output;

use super::fixtures;
use super::harness::{Slapd, BASE_DN, SERVICE_DN, SERVICE_PASSWORD};
use crate::support;
use crate::support::config::{write_private, ConfigFile};
use crate::support::daemon::Launch;
use crate::support::tapctl::Tapctl;

/// A running tapd (the kit's daemon) with its temp dir; killed on drop (its log printed if the
/// test fails).
struct Tapd {
    daemon: support::daemon::Tapd,
    tapctl: Tapctl,
}

impl Tapd {
    fn start(slapd: &Slapd) -> Tapd {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("ldap.secret");
        write_private(&secret, SERVICE_PASSWORD);
        let socket = dir.path().join("admin.sock");
        let config = ConfigFile::new()
            .store(&format!("sqlite:{}", dir.path().join("tapd.db").display()))
            .string("directory", "url", slapd.url())
            .string("directory", "preset", "openldap")
            .string("directory", "base_dn", BASE_DN)
            .string("directory", "bind_dn", SERVICE_DN)
            .string("directory", "bind_password_file", secret.display())
            .string("directory", "connect_timeout", "2s")
            .string("directory", "operation_timeout", "2s")
            .string("directory", "sync_interval", "1h")
            .string("directory", "incremental_interval", "0s")
            .string("admin", "socket", socket.display())
            .set("admin.roles", "global_administrator", "[\"tap-admins\"]")
            .log_to_stderr()
            .metrics_on_loopback()
            .write(&dir.path().join("tapd.toml"));
        Tapd {
            daemon: Launch::new(dir)
                .config(config)
                .listener("admin")
                .listener("metrics")
                .start(),
            tapctl: Tapctl::new(socket),
        }
    }

    /// One series of `/metrics` on the port the daemon logged.
    fn metric(&self, series: &str) -> f64 {
        let body = support::metrics::scrape(self.daemon.addr("metrics"));
        support::metrics::metric(&body, series)
    }

    fn tapctl(&self, args: &[&str]) -> Output {
        self.tapctl.output(args)
    }

    /// Waits until the log holds `needle`.
    fn wait_for_log(&mut self, needle: &str) {
        self.daemon
            .wait_for_log(needle, |line| line.contains(needle));
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            stdout(output),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[test]
fn tapd_syncs_from_slapd_and_reports_a_down_directory() {
    if !nix_is_root() {
        panic!("this test talks to tapd as uid 0 (break-glass admin): run it as root, as scripts/test.sh does");
    }
    let mut slapd = Slapd::start(&fixtures::directory());
    let mut tapd = Tapd::start(&slapd);
    tapd.wait_for_log("full directory sync from LDAP directory");

    let status = json(&tapd.tapctl(&["--json", "sync", "status"]));
    assert_eq!(status["lastResult"], "success", "{status}");
    assert_eq!(
        status["usersSeen"],
        fixtures::user_count() as u64,
        "{status}"
    );

    // Transitive groups and the role on `user show`.
    let erin = tapd.tapctl(&["user", "show", "erin"]);
    assert!(erin.status.success(), "{erin:?}");
    let text = stdout(&erin);
    for group in ["tap-users", "staff", "engineering"] {
        assert!(text.contains(group), "{group} missing from:\n{text}");
    }
    let gadmin = stdout(&tapd.tapctl(&["user", "show", "gadmin"]));
    assert!(
        gadmin.contains("global_administrator") || gadmin.contains("globalAdministrator"),
        "{gadmin}"
    );

    // slapd down: the run reports failure, the status names the error, users stay.
    slapd.stop();
    let run = tapd.tapctl(&["--json", "sync", "run"]);
    let failed = json(&run);
    assert_eq!(failed["lastResult"], "failed", "{failed}");
    let status = json(&tapd.tapctl(&["--json", "sync", "status"]));
    let error = status["lastError"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("directory unavailable"), "{status}");
    assert!(error.contains(&slapd.url()), "{status}");
    let human = stdout(&tapd.tapctl(&["sync", "status"]));
    assert!(human.contains("directory unavailable"), "{human}");
    let unavailable =
        tapd.metric(r#"tapd_directory_sync_errors_total{cause="directory_unavailable"}"#);
    assert!(unavailable >= 1.0, "{unavailable}");
    let users = json(&tapd.tapctl(&["--json", "user", "list"]));
    let count = users
        .as_array()
        .map(Vec::len)
        .or_else(|| users["value"].as_array().map(Vec::len))
        .unwrap_or_default();
    assert_eq!(count, fixtures::user_count(), "users kept");

    // Back up: the next sync succeeds.
    slapd.start_again();
    let run = json(&tapd.tapctl(&["--json", "sync", "run"]));
    assert_eq!(run["lastResult"], "success", "{run}");
}

fn nix_is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}
