//! The tamper-evident audit on SQLite, end to end: `tapctl audit verify` passes on what the
//! daemon wrote, and names the first broken sequence number after a row is changed or deleted
//! with the real `sqlite3`; after retention pruned a prefix it verifies from the signed
//! checkpoint (and says so), and a forged checkpoint fails. The chain head is in the journal
//! (here: the log the daemon writes on stderr, with the same key-value fields) at start and
//! at shutdown.
//!
//! Also the privileged-target alert: a TAP for `padmin` (a privileged authentication
//! administrator in the demo directory) logs a warning with `tapd_alert=privileged_tap`
//! (journal field `TAPD_ALERT`) and counts `tapd_alerts_total{kind="privileged_tap"}`; under
//! `[policy] privileged_tap = "deny"` it is refused with 403 naming the rule, and audited.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use crate::{demo_ldif, metric, require_tool, ConfigFile, Tapd, WAIT};

/// The demo directory's role mapping (as `etc/tapd/demo.toml` has it), beyond the kit's
/// `global_administrator`.
const DEMO_ROLES: &str =
    "privileged_authentication_administrator = [\"tap-privileged-auth-admins\"]
authentication_administrator = [\"tap-auth-admins\"]
authentication_policy_administrator = [\"tap-policy-admins\"]
global_reader = [\"tap-readers\"]";

fn config(dir: &std::path::Path) -> String {
    ConfigFile::new()
        .store(&format!("sqlite:{}/tapd.db", dir.display()))
        .ldif_directory(&demo_ldif(), "dc=example,dc=org")
        .string("directory", "sync_interval", "30s")
        .admin(&dir.join("admin.sock"))
        .lines("admin.roles", DEMO_ROLES)
        .log_to_stderr()
        .metrics_on_loopback()
        .text()
}

fn start(env: &[(&str, String)]) -> Tapd {
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path());
    let mut tapd = Tapd::start_with_config(dir, &text, env);
    // Ready for TAPs once the first sync brought the demo users.
    let deadline = std::time::Instant::now() + WAIT;
    while !tapd.tapctl(&["user", "show", "padmin"]).status.success() {
        assert!(std::time::Instant::now() < deadline, "no first sync");
        assert!(tapd.is_running());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    tapd
}

/// `sqlite3` on the daemon's database.
fn sqlite3(tapd: &Tapd, sql: &str) -> String {
    crate::support::sqlite::sqlite3(&tapd.dir().join("tapd.db"), sql)
}

/// `tapctl audit verify ARGS…`: success, stdout, stderr.
fn verify(tapd: &Tapd, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["audit", "verify"];
    all.extend_from_slice(args);
    let output = tapd.tapctl(&all);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The last chain head the daemon logged: (seq, hash).
fn logged_head(tapd: &Tapd) -> (i64, String) {
    let line = tapd
        .log()
        .into_iter()
        .rev()
        .find(|l| l.contains("audit chain head: seq"))
        .expect("a logged chain head");
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_else(|| panic!("{key} in {line}"))
            .to_owned()
    };
    (
        field("audit_chain_seq=").parse().unwrap(),
        field("audit_chain_hash="),
    )
}

#[test]
fn audit_verify_on_sqlite_names_changed_and_deleted_rows_and_trusts_only_a_signed_checkpoint() {
    require_tool("sqlite3", "sqlite3");
    let mut tapd = start(&[]);
    assert_eq!(logged_head(&tapd).0, 0, "the head is logged at start");
    tapd.tapctl.ok(&["policy", "set", "--state", "enabled"]);
    for user in ["alice", "bob", "erin", "alice", "bob"] {
        tapd.tapctl.ok(&["tap", "create", user]);
    }
    let (ok, out, err) = verify(&tapd, &[]);
    assert!(ok, "{out}{err}");
    let head_seq: i64 = sqlite3(&tapd, "SELECT head_seq FROM audit_chain")
        .parse()
        .unwrap();
    assert!(head_seq >= 6, "{head_seq}");
    assert!(
        out.contains(&format!(
            "audit chain verified: {head_seq} event(s), sequence 1 to {head_seq}"
        )),
        "{out}"
    );

    // A changed row is named by its sequence number, the exit code is 1.
    let actor = sqlite3(&tapd, "SELECT actor FROM audit WHERE seq = 2");
    sqlite3(&tapd, "UPDATE audit SET actor = 'mallory' WHERE seq = 2");
    let output = tapd.tapctl(&["audit", "verify"]);
    assert_eq!(output.status.code(), Some(1));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("audit chain broken at sequence 2: event 2 was changed"),
        "{err}"
    );
    // --json says the same as a document (and still exits 1).
    let output = tapd.tapctl(&["--json", "audit", "verify"]);
    assert_eq!(output.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(doc["valid"], false);
    assert_eq!(doc["firstBreak"]["sequence"], 2);
    sqlite3(
        &tapd,
        &format!(
            "UPDATE audit SET actor = '{}' WHERE seq = 2",
            actor.replace('\'', "''")
        ),
    );
    assert!(verify(&tapd, &[]).0);

    // A deleted row is named as missing; the last row is checked against the head.
    sqlite3(&tapd, "DELETE FROM audit WHERE seq = 3");
    let (ok, _, err) = verify(&tapd, &[]);
    assert!(!ok);
    assert!(
        err.contains("broken at sequence 3: sequence 3 is missing"),
        "{err}"
    );
    let (ok, out, err) = verify(&tapd, &["--from", "4"]);
    assert!(ok, "{out}{err}");
    sqlite3(
        &tapd,
        &format!("UPDATE audit SET result = 'failure' WHERE seq = {head_seq}"),
    );
    let (ok, _, err) = verify(&tapd, &["--from", "4"]);
    assert!(!ok);
    assert!(
        err.contains(&format!("broken at sequence {head_seq}:")),
        "{err}"
    );
    sqlite3(
        &tapd,
        &format!("UPDATE audit SET result = 'success' WHERE seq = {head_seq}"),
    );

    // At shutdown the head goes to the journal once more, after the last event.
    tapd.tapctl.ok(&["tap", "create", "erin"]);
    tapd.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(tapd.wait_exit().success());
    let stored: i64 = sqlite3(&tapd, "SELECT head_seq FROM audit_chain")
        .parse()
        .unwrap();
    let hash = sqlite3(&tapd, "SELECT head_hash FROM audit_chain");
    assert_eq!(logged_head(&tapd), (stored, hash));
    assert_eq!(stored, head_seq + 1);

    // Retention prunes what links up (events 1 and 2) but refuses to prune past the deleted
    // event 3, which would hide the deletion behind a signed checkpoint.
    let pruned = prune(&tapd, 2);
    assert_eq!(pruned, 2);
    assert!(
        prune_err(&tapd, 10).contains("refuses to prune a broken chain"),
        "pruning must not hide the deleted event 3 behind a signed checkpoint"
    );
    tapd.restart();
    let (ok, _, err) = verify(&tapd, &[]);
    assert!(!ok);
    assert!(
        err.contains("broken at sequence 3: sequence 3 is missing"),
        "{err}"
    );
    let (ok, out, err) = verify(&tapd, &["--from", "4"]);
    assert!(ok, "{out}{err}");
    tapd.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(tapd.wait_exit().success());
}

/// Prunes up to `limit` events (all older than a day from now) as the daemon's retention
/// task does, through the store with the daemon's own secrets key; the daemon must be
/// stopped.
fn prune(tapd: &Tapd, limit: u32) -> u64 {
    try_prune(tapd, limit).unwrap()
}

fn prune_err(tapd: &Tapd, limit: u32) -> String {
    try_prune(tapd, limit).unwrap_err()
}

fn try_prune(tapd: &Tapd, limit: u32) -> Result<u64, String> {
    let dir = tapd.dir().to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        use tapd::store::Store;
        let key = tapd::config::secrets_key::read(&dir.join("secrets.key")).unwrap();
        let store = tapd::store::sqlite::SqliteStore::open(
            &dir.join("tapd.db"),
            tapd::store::sqlite::DEFAULT_BUSY_TIMEOUT,
        )
        .await
        .unwrap()
        .with_secrets(tapd::store::seal::Sealer::new(&key, None))
        .await
        .unwrap();
        store
            .prune_audit(chrono::Utc::now() + chrono::Duration::days(1), limit)
            .await
            .map_err(|e| e.to_string())
    })
}

#[test]
fn retention_checkpoint_is_verified_and_a_forged_one_fails() {
    require_tool("sqlite3", "sqlite3");
    let mut tapd = start(&[]);
    tapd.tapctl.ok(&["policy", "set", "--state", "enabled"]);
    for user in ["alice", "bob", "erin", "alice"] {
        tapd.tapctl.ok(&["tap", "create", user]);
    }
    tapd.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(tapd.wait_exit().success());
    let head: i64 = sqlite3(&tapd, "SELECT head_seq FROM audit_chain")
        .parse()
        .unwrap();
    assert_eq!(prune(&tapd, 3), 3);
    tapd.restart();
    let (ok, out, err) = verify(&tapd, &[]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(
            "retention checkpoint: events up to sequence 3 were pruned (3 in all); its \
             signature is valid"
        ),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "audit chain verified: {} event(s), sequence 4 to {head}",
            head - 3
        )),
        "{out}"
    );

    // Someone deletes event 4 too and moves the checkpoint over it, with event 4's true hash
    // (event 5 records it) but without the secrets key.
    let hash = sqlite3(&tapd, "SELECT prev_hash FROM audit WHERE seq = 5");
    sqlite3(
        &tapd,
        &format!(
            "DELETE FROM audit WHERE seq = 4; UPDATE audit_chain SET checkpoint_seq = 4, \
             checkpoint_hash = '{hash}', checkpoint_count = 4"
        ),
    );
    let (ok, out, err) = verify(&tapd, &[]);
    assert!(!ok);
    assert!(out.contains("its signature does NOT verify"), "{out}");
    assert!(
        err.contains("audit chain broken at sequence 5: the retention checkpoint (events up to 4, 4 pruned) is forged"),
        "{err}"
    );
}

/// One request on the admin socket as root; status and body.
fn admin_request(tapd: &Tapd, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = UnixStream::connect(tapd.dir().join("admin.sock")).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = crate::support::metrics::status_code(&response);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn alerts(tapd: &Tapd) -> f64 {
    let (status, body) = tapd.http_get("/metrics");
    assert_eq!(status, 200);
    metric(&body, r#"tapd_alerts_total{kind="privileged_tap"}"#)
}

#[test]
fn a_tap_for_an_administrator_raises_the_privileged_tap_alert() {
    let mut tapd = start(&[]);
    assert_eq!(alerts(&tapd), 0.0);
    tapd.tapctl.ok(&["tap", "create", "alice"]);
    assert_eq!(alerts(&tapd), 0.0, "alice holds no admin role");
    assert!(!tapd.log().iter().any(|l| l.contains("tapd_alert=")));

    tapd.tapctl.ok(&["tap", "create", "padmin"]);
    let line = tapd.wait_for_log("tapd_alert=privileged_tap");
    assert!(line.starts_with("WARN"), "warning priority: {line}");
    assert!(line.contains("tapd_user=padmin@example.org"), "{line}");
    assert!(
        line.contains("admin_roles=privileged_authentication_administrator"),
        "{line}"
    );
    assert!(line.contains("outcome=created"), "{line}");
    assert_eq!(alerts(&tapd), 1.0);
    // The TAP exists.
    let shown = tapd.tapctl.ok(&["--json", "tap", "show", "padmin"]);
    assert!(shown.contains("\"id\""), "{shown}");
}

#[test]
fn privileged_tap_deny_refuses_with_403_naming_the_rule() {
    let tapd = start(&[("TAPD__POLICY__PRIVILEGED_TAP", "deny".to_owned())]);
    let (status, body) = admin_request(
        &tapd,
        "POST",
        "/v1/users/padmin/authentication/temporaryAccessPassMethods",
        "{}",
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("[policy] privileged_tap = \\\"deny\\\""),
        "{body}"
    );
    let output = tapd.tapctl(&["tap", "create", "gadmin"]);
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("privileged_tap = \"deny\""), "{err}");
    assert!(err.contains("global_administrator"), "{err}");
    // Nothing was created; the refusals are audited, alerted and counted.
    let shown = tapd.tapctl.ok(&["--json", "tap", "show", "padmin"]);
    assert!(!shown.contains("\"id\""), "{shown}");
    let audit = tapd.tapctl.ok(&["--json", "audit"]);
    let audit: serde_json::Value = serde_json::from_str(&audit).unwrap();
    let denied: Vec<&serde_json::Value> = audit["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.to_string().contains("privileged_tap_denied"))
        .collect();
    assert_eq!(denied.len(), 2, "{audit:#}");
    assert!(
        denied[1].to_string().contains("padmin@example.org"),
        "{audit:#}"
    );
    assert!(tapd.log().iter().any(|l| l.starts_with("WARN")
        && l.contains("tapd_alert=privileged_tap")
        && l.contains("outcome=refused")));
    assert_eq!(alerts(&tapd), 2.0);
    // Members still get TAPs.
    tapd.tapctl.ok(&["tap", "create", "alice"]);
}
