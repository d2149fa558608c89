//! Two real `tapd` processes on one PostgreSQL database (issue 6): a one-time TAP gives exactly
//! one web session however many sign-ins race for it on both nodes; a session started on one
//! node continues on the other (an authenticator app enrolled on one is confirmed on the
//! other); both answer RADIUS; through a few seconds of PostgreSQL outage RADIUS sends no reply,
//! the web answers 503 with a clear page, the admin API 503, and both nodes reconnect by
//! themselves with every acknowledged TAP and method still there; manual syncs started on both
//! at once are serialised by the sync lease; after `kill -9` of the node that last synced the
//! survivor keeps serving and syncs.
//!
//! A second test shows the automatic takeover at the shortest sync interval (30 s): the node
//! doing the scheduled syncs is killed mid-sync, holding the lease with its changes written but
//! not committed; the store keeps no part of them, and the other node's own schedule completes
//! the sync within two sync intervals of the kill (`tapctl sync status` names the node, and
//! `initiatedBy` is `tapd`, not an administrator). It takes about a minute.
//!
//! Both nodes share one `public_url` (as nodes behind one load balancer do): the web checks the
//! `Origin` header against it, not the port a request arrived on, so the test sends the same
//! `Origin` to either node's listener. The lease rules themselves (one holder, renewal, lapse,
//! by the database's clock) are also tested in `tests/postgres_nodes/database.rs` and the store
//! conformance suite.
//!
//! A third test freezes a node (SIGSTOP) inside its sync past its lease: after another node
//! took over and synced, the frozen node's late commit is refused by the lease's fencing token
//! and the store keeps the other node's result.

use crate::support::audit;
use crate::support::http::form_encode;
use crate::support::postgres as postgres_cluster;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::Request;
use serde_json::Value;

use crate::support::config::{repo_path, require_tool, write_private, ConfigFile};
use crate::support::daemon::Launch;
use crate::support::http::{http, Answer};
use crate::support::tapctl::Tapctl;
use postgres_cluster::PostgresCluster;

const RADIUS_SECRET: &str = "radius-test-secret-0123456789";

/// One `tapd` node on the shared database, run by the test kit: stopped on drop, its log
/// printed on failure.
struct Node {
    name: &'static str,
    daemon: crate::support::daemon::Tapd,
    tapctl: Tapctl,
    web: SocketAddr,
    radius: SocketAddr,
    /// The node identity it logs (`… (node ID)`), which sync status names.
    identity: String,
}

/// What differs between the nodes of the two tests.
struct Setup {
    /// The directory (an LDIF file; both nodes read the same one, as nodes share a directory).
    ldif: PathBuf,
    /// `[directory] sync_interval`.
    sync_interval: &'static str,
    /// `[directory] incremental_interval`.
    incremental_interval: &'static str,
    /// `[store] statement_timeout`.
    statement_timeout: &'static str,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            ldif: repo_path("etc/tapd/demo-directory.ldif"),
            sync_interval: "1h",
            incremental_interval: "1m",
            statement_timeout: "3s",
        }
    }
}

impl Node {
    fn start(name: &'static str, store_url: &str, public_url: &str) -> Node {
        Node::start_with(name, store_url, public_url, &Setup::default())
    }

    fn start_with(name: &'static str, store_url: &str, public_url: &str, setup: &Setup) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("radius.secret");
        write_private(&secret, RADIUS_SECRET);
        let socket = dir.path().join("admin.sock");
        ConfigFile::new()
            .store(store_url)
            .string(
                "store",
                "secrets_key_file",
                crate::support::postgres::shared_secrets_key(store_url).display(),
            )
            .string("store", "statement_timeout", setup.statement_timeout)
            .string("store", "connect_timeout", "2s")
            .set("store", "pool_size", 8)
            .ldif_directory(&setup.ldif, "dc=example,dc=org")
            .string("directory", "preset", "openldap")
            .string("directory", "sync_interval", setup.sync_interval)
            .string(
                "directory",
                "incremental_interval",
                setup.incremental_interval,
            )
            .admin(&socket)
            .radius_on_loopback("0")
            .radius_client("test-nas", "127.0.0.1", &secret)
            .string("web", "listen", "127.0.0.1:0")
            .string("web", "public_url", public_url)
            .log_to_stderr()
            .no_metrics()
            .write(&dir.path().join("tapd.toml"));
        let mut daemon = Launch::new(dir)
            .listener("web")
            .listener("RADIUS")
            .listener("admin")
            .terminate_on_drop()
            .start();
        let identity = daemon.wait_for_log("its node identity", |l| l.contains("(node "));
        let identity = identity
            .split("(node ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .unwrap()
            .trim()
            .to_owned();
        let mut node = Node {
            name,
            web: daemon.addr("web"),
            radius: daemon.addr("RADIUS"),
            daemon,
            tapctl: Tapctl::new(socket),
            identity,
        };
        // Ready once the store knows the demo users (this node's first sync, or another's).
        let deadline = Instant::now() + Duration::from_secs(30);
        while !node.tapctl_ok(&["user", "show", "alice"]) {
            node.assert_running();
            assert!(
                Instant::now() < deadline,
                "tapd {name} did not start:\n{}",
                node.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        node
    }

    fn log(&self) -> String {
        self.daemon.log_text()
    }

    fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// `kill -9`.
    fn kill9(&mut self) {
        self.daemon.kill9();
    }

    fn tapctl_output(&self, args: &[&str]) -> std::process::Output {
        self.tapctl.output(args)
    }

    fn tapctl_ok(&self, args: &[&str]) -> bool {
        self.tapctl_output(args).status.success()
    }

    /// `tapctl --json ARGS…` parsed; panics on failure.
    fn tapctl(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let output = self.tapctl_output(&all);
        assert!(
            output.status.success(),
            "tapctl {args:?} on {} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
    }

    fn assert_running(&mut self) {
        if !self.daemon.is_running() {
            panic!("tapd {} exited:\n{}", self.name, self.log());
        }
    }
}

/// `radclient` auth with PAP: `Some("Access-Accept")`, `Some("Access-Reject")` or `None` when
/// no reply came (within about two seconds).
fn radius_reply(server: SocketAddr, user: &str, password: &str) -> Option<String> {
    let mut child = Command::new("radclient")
        .args(["-x", "-r", "1", "-t", "2"])
        .arg(server.to_string())
        .arg("auth")
        .arg(RADIUS_SECRET)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            format!(
                "User-Name = \"{user}\", User-Password = \"{password}\", \
             Message-Authenticator = 0x00\n"
            )
            .as_bytes(),
        )
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    ["Access-Accept", "Access-Reject"]
        .into_iter()
        .find(|code| text.contains(&format!("Received {code}")))
        .map(str::to_owned)
}

/// GET `/` for a CSRF cookie (plain-HTTP public URL: `tapd-csrf`).
async fn csrf_token(addr: SocketAddr, host: &str) -> String {
    let page = http(
        addr,
        Request::get("/")
            .header("host", host)
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    page.cookie("tapd-csrf").expect("a CSRF cookie")
}

/// POSTs the TAP sign-in form to `addr` with the shared public origin.
async fn sign_in_with_tap(
    addr: SocketAddr,
    public_url: &str,
    csrf: &str,
    user: &str,
    code: &str,
) -> Answer {
    let host = public_url.trim_start_matches("http://");
    let form = form_encode(&[("csrf", csrf), ("username", user), ("code", code)]);
    http(
        addr,
        Request::post("/sign-in/tap")
            .header("host", host)
            .header("origin", public_url)
            .header("cookie", format!("tapd-csrf={csrf}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .unwrap(),
    )
    .await
}

/// POSTs a form with a session, its CSRF token and the shared public origin.
async fn post_with_session(
    addr: SocketAddr,
    public_url: &str,
    path: &str,
    session: &str,
    csrf: &str,
    pairs: &[(&str, &str)],
) -> Answer {
    let mut all = vec![("csrf", csrf)];
    all.extend_from_slice(pairs);
    http(
        addr,
        Request::post(path)
            .header("host", public_url.trim_start_matches("http://"))
            .header("origin", public_url)
            .header("cookie", format!("tapd-session={session}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form_encode(&all))))
            .unwrap(),
    )
    .await
}

/// The value of the hidden input `name` on a page.
fn hidden_field(body: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = body
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {body}"))
        + marker.len();
    let end = body[start..].find('"').unwrap();
    body[start..start + end].to_owned()
}

/// The authenticator-app code for the secret shown on an enrolment page, now.
fn current_code(body: &str) -> String {
    let marker = r#"<code id="totp-secret">"#;
    let start = body.find(marker).unwrap() + marker.len();
    let end = body[start..].find('<').unwrap();
    let secret = tapd::web::totp::base32_decode(&body[start..start + end]).unwrap();
    tapd::web::totp::code_at_step(&secret, tapd::web::totp::step_at(chrono::Utc::now()))
}

/// The ids of `user`'s authentication methods, sorted, as `node` lists them.
fn method_ids(node: &Node, user: &str) -> Vec<String> {
    let listed = node.tapctl(&["methods", "list", user]);
    let mut ids: Vec<String> = listed["value"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .filter_map(|m| m["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

async fn get_with_session(addr: SocketAddr, host: &str, path: &str, session: &str) -> Answer {
    http(
        addr,
        Request::get(path)
            .header("host", host)
            .header("cookie", format!("tapd-session={session}"))
            .body(Full::default())
            .unwrap(),
    )
    .await
}

/// Creates a TAP for `user` on `node`: its id and code.
fn create_tap(node: &Node, user: &str, one_time: bool) -> (String, String) {
    let once = if one_time {
        "--one-time"
    } else {
        "--multi-use"
    };
    let created = node.tapctl(&["tap", "create", user, once]);
    (
        created["id"].as_str().unwrap().to_owned(),
        created["temporaryAccessPass"].as_str().unwrap().to_owned(),
    )
}

/// The id of `user`'s TAP, as `node` shows it (`None`: no TAP).
fn tap_id(node: &Node, user: &str) -> Option<String> {
    let shown = node.tapctl(&["tap", "show", user]);
    shown["value"][0]["id"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_postgres_database() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test administers tapd as root (the break-glass administrator): run it as root, \
         as scripts/test.sh does"
    );
    require_tool("radclient", "freeradius-utils");
    let cluster = PostgresCluster::start();
    let url = cluster.create_database().await;
    let public_url = "http://localhost:8080";
    let host = "localhost:8080";
    let mut a = Node::start("A", &url, public_url);
    let mut b = Node::start("B", &url, public_url);
    assert_ne!(a.identity, b.identity);

    a.tapctl(&[
        "policy",
        "set",
        "--state",
        "enabled",
        "--include-groups",
        "tap-users",
    ]);

    // (1) 40 concurrent web sign-ins with one one-time TAP, half on each node: one session.
    let (_, code) = create_tap(&a, "alice", true);
    let mut tokens = Vec::new();
    for i in 0..40 {
        let node = if i % 2 == 0 { a.web } else { b.web };
        tokens.push((node, csrf_token(node, host).await));
    }
    let mut racing = tokio::task::JoinSet::new();
    for (node, csrf) in tokens {
        let code = code.clone();
        racing.spawn(async move {
            let answer = sign_in_with_tap(node, public_url, &csrf, "alice", &code).await;
            (node, answer)
        });
    }
    let mut sessions = Vec::new();
    while let Some(joined) = racing.join_next().await {
        let (node, answer) = joined.unwrap();
        assert_ne!(answer.status, 500, "{}", answer.body);
        if let Some(session) = answer.cookie("tapd-session").filter(|s| !s.is_empty()) {
            assert_eq!(answer.status, 303, "{}", answer.body);
            sessions.push((node, session));
        }
    }
    assert_eq!(
        sessions.len(),
        1,
        "one one-time TAP, one session: {sessions:?}"
    );

    // The shared audit log agrees: 40 attempts, one success.
    let audit = b.tapctl(&["audit", "--limit", "500"]);
    let events: Vec<&Value> = audit["value"]
        .as_array()
        .unwrap_or_else(|| panic!("{audit}"))
        .iter()
        .filter(|e| e["activityDisplayName"] == "User sign-in")
        .collect();
    assert_eq!(events.len(), 40, "{audit}");
    let successes = events
        .iter()
        .filter(|e| e["result"].as_str() == Some("success"))
        .count();
    assert_eq!(successes, 1, "{audit}");

    // (2) The session continues on the other node.
    let (started_on, session) = sessions.pop().unwrap();
    let other = if started_on == a.web { b.web } else { a.web };
    for node in [started_on, other] {
        let page = get_with_session(node, host, "/security-info", &session).await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains("alice"), "{}", page.body);
    }

    // An authenticator app registered across the nodes: enrolment on one, confirmation on the
    // other (the ceremony lives in the shared database). Signed in, the CSRF token is the
    // session's, from its pages.
    let page = get_with_session(started_on, host, "/security-info", &session).await;
    let csrf = hidden_field(&page.body, "csrf");
    let enrolment = post_with_session(
        started_on,
        public_url,
        "/security-info/authenticator-app",
        &session,
        &csrf,
        &[],
    )
    .await;
    assert_eq!(enrolment.status, 200, "{}", enrolment.body);
    let confirmed = post_with_session(
        other,
        public_url,
        "/security-info/authenticator-app/confirm",
        &session,
        &csrf,
        &[
            ("ceremony", &hidden_field(&enrolment.body, "ceremony")),
            ("code", &current_code(&enrolment.body)),
        ],
    )
    .await;
    assert_eq!(confirmed.status, 303, "{}", confirmed.body);
    let methods_before = method_ids(&a, "alice");
    assert!(
        methods_before.len() >= 2,
        "password and app: {methods_before:?}"
    );
    assert_eq!(method_ids(&b, "alice"), methods_before);

    // (3) Both nodes answer RADIUS.
    for node in [&a, &b] {
        assert_eq!(
            radius_reply(node.radius, "alice", "alice-demo-pw").as_deref(),
            Some("Access-Accept"),
            "node {}",
            node.name
        );
    }

    // (5) PostgreSQL down for a few seconds, under light load.
    let (tap_a, _) = create_tap(&a, "bob", false);
    let (tap_b, erin_code) = create_tap(&b, "erin", false);
    let fresh_csrf = csrf_token(a.web, host).await;
    cluster.stop();
    let outage = Instant::now();
    let mut rounds = 0;
    while outage.elapsed() < Duration::from_secs(3) || rounds < 2 {
        for node in [&a, &b] {
            assert_eq!(
                radius_reply(node.radius, "alice", "alice-demo-pw"),
                None,
                "no RADIUS reply while the store is down (node {})",
                node.name
            );
            let page =
                sign_in_with_tap(node.web, public_url, &fresh_csrf, "erin", &erin_code).await;
            assert_eq!(page.status, 503, "node {}: {}", node.name, page.body);
            assert!(
                page.body.contains("unavailable"),
                "node {}: {}",
                node.name,
                page.body
            );
            let page = get_with_session(node.web, host, "/security-info", &session).await;
            assert_eq!(page.status, 503, "node {}: {}", node.name, page.body);
            let output = node.tapctl_output(&["tap", "show", "bob"]);
            assert!(!output.status.success(), "node {}", node.name);
            let said = String::from_utf8_lossy(&output.stderr).to_lowercase();
            assert!(
                said.contains("503") || said.contains("unavailable"),
                "node {}: {said}",
                node.name
            );
        }
        rounds += 1;
    }
    cluster.restart();
    for node in [&mut a, &mut b] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !node.tapctl_ok(&["tap", "show", "bob"]) {
            node.assert_running();
            assert!(
                Instant::now() < deadline,
                "node {} did not reconnect:\n{}",
                node.name,
                node.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for node in [&a, &b] {
        assert_eq!(
            tap_id(node, "bob"),
            Some(tap_a.clone()),
            "node {}",
            node.name
        );
        assert_eq!(
            tap_id(node, "erin"),
            Some(tap_b.clone()),
            "node {}",
            node.name
        );
        assert_eq!(
            radius_reply(node.radius, "alice", "alice-demo-pw").as_deref(),
            Some("Access-Accept"),
            "node {} after the outage",
            node.name
        );
    }

    // (4) Manual syncs started on both nodes at once: each either runs or is refused because
    // the other node holds the sync lease, naming it; never two at once.
    let mut refused = 0;
    for _ in 0..5 {
        let outcomes = std::thread::scope(|scope| {
            let runs: Vec<_> = [&a, &b]
                .into_iter()
                .map(|node| scope.spawn(move || (node, node.tapctl_output(&["sync", "run"]))))
                .collect();
            runs.into_iter()
                .map(|run| run.join().unwrap())
                .collect::<Vec<_>>()
        });
        for (node, output) in outcomes {
            if output.status.success() {
                continue;
            }
            let other = if node.identity == a.identity { &b } else { &a };
            let said = String::from_utf8_lossy(&output.stderr);
            assert!(
                said.contains(&format!("running on node {}", other.identity)),
                "node {}: {said}",
                node.name
            );
            refused += 1;
        }
    }
    eprintln!("concurrent manual syncs: {refused} of 10 refused by the lease");

    // (4) kill -9 of the node that synced last: the survivor keeps serving and syncs.
    let status = a.tapctl(&["sync", "status"]);
    let holder = status["node"].as_str().unwrap_or_default().to_owned();
    assert!(
        holder == a.identity || holder == b.identity,
        "sync status names one of the nodes: {status}"
    );
    let (mut dead, survivor) = if holder == a.identity { (a, b) } else { (b, a) };
    dead.kill9();
    survivor.tapctl(&["sync", "run"]);
    let status = survivor.tapctl(&["sync", "status"]);
    assert_eq!(
        status["node"].as_str(),
        Some(survivor.identity.as_str()),
        "{status}"
    );
    assert_eq!(status["lastResult"].as_str(), Some("success"), "{status}");
    assert_eq!(
        radius_reply(survivor.radius, "alice", "alice-demo-pw").as_deref(),
        Some("Access-Accept")
    );
    let page = get_with_session(survivor.web, host, "/security-info", &session).await;
    assert_eq!(page.status, 200, "{}", page.body);
}

/// The shortest `[directory] sync_interval` the configuration accepts, used as is.
const SYNC_INTERVAL: Duration = Duration::from_secs(30);

/// A user the directory gains, and a display name it changes, while node A syncs.
const NEW_USER_LDIF: &str = "
dn: uid=frank,ou=people,dc=example,dc=org
objectClass: top
objectClass: person
objectClass: organizationalPerson
objectClass: inetOrgPerson
entryUUID: 7c1e5a10-0001-4b6e-9a11-0000000000f0
uid: frank
cn: Frank Takeover
sn: Takeover
displayName: Frank Takeover
mail: frank@example.org
";

/// Replaces `path` with `text` in one rename, so a node never reads half a file.
fn write_atomically(path: &Path, text: &str) {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, text).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

/// `tapctl --json sync status` on `node`.
fn sync_status(node: &Node) -> Value {
    node.tapctl(&["sync", "status"])
}

/// A time field of a JSON answer.
fn time_field(value: &Value, field: &str) -> chrono::DateTime<chrono::Utc> {
    let text = value[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {value}"));
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{field} {text:?}: {e}"))
        .with_timezone(&chrono::Utc)
}

/// The `Directory sync applied changes` audit events, newest first.
fn applied_syncs(node: &Node) -> Vec<Value> {
    let audit = node.tapctl(&["audit", "--activity", "Directory sync applied changes"]);
    audit["value"]
        .as_array()
        .unwrap_or_else(|| panic!("{audit}"))
        .clone()
}

/// `(holder, expires)` of the sync lease row, read straight from the database.
async fn lease_row(db: &tokio_postgres::Client) -> Option<(String, chrono::DateTime<chrono::Utc>)> {
    db.query_opt("SELECT holder, expires FROM sync_lease WHERE id = 1", &[])
        .await
        .unwrap()
        .map(|row| (row.get(0), row.get(1)))
}

/// Automatic takeover at process level, at the shortest sync interval the configuration
/// accepts (30 s; the lease lasts as long). Node A runs alone and does the scheduled syncs.
/// The directory gains a user and changes another; the test holds a lock on the audit table,
/// so A's next scheduled sync stops at its last statement: every change is written inside its
/// transaction, nothing committed, A holding the sync lease. Node B starts meanwhile (its sync
/// at start is refused: A holds the lease). `kill -9` of A then leaves no partial sync, and B
/// completes a scheduled sync on its own (no `tapctl sync run` anywhere) within two sync
/// intervals of the kill, applying exactly the changes A never committed. About a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survivor_takes_over_scheduled_syncs_after_kill_mid_sync() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test administers tapd as root (the break-glass administrator): run it as root, \
         as scripts/test.sh does"
    );
    let cluster = PostgresCluster::start();
    let url = cluster.create_database().await;
    let connect = || async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    };
    let observer = connect().await;
    let mut locker = connect().await;

    let directory = tempfile::tempdir().unwrap();
    let ldif = directory.path().join("directory.ldif");
    let original = std::fs::read_to_string(repo_path("etc/tapd/demo-directory.ldif")).unwrap();
    write_atomically(&ldif, &original);
    let setup = Setup {
        ldif: ldif.clone(),
        sync_interval: "30s",
        incremental_interval: "0s",
        // Long enough for A's stalled statement to outlast B's start (it is killed first).
        statement_timeout: "30s",
    };
    let public_url = "http://localhost:8080";

    // A alone: its sync at start fills the store. Its listeners come up before that sync
    // has finished, so wait for the status to show a result.
    let mut a = Node::start_with("A", &url, public_url, &setup);
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let status = sync_status(&a);
        if !status["lastResult"].is_null() {
            break status;
        }
        a.assert_running();
        assert!(
            Instant::now() < deadline,
            "A's sync at start did not finish: {status}\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(first["node"].as_str(), Some(a.identity.as_str()), "{first}");
    assert_eq!(first["initiatedBy"].as_str(), Some("tapd"), "{first}");
    assert_eq!(first["lastResult"].as_str(), Some("success"), "{first}");
    let bob_before = a.tapctl(&["user", "show", "bob"])["displayName"].clone();
    assert_eq!(bob_before.as_str(), Some("Bob Builder"));

    // The directory changes; A's next scheduled sync will stall on its audit insert, the last
    // statement of its transaction.
    let changed = format!(
        "{}{NEW_USER_LDIF}",
        original.replace("displayName: Bob Builder", "displayName: Bob Rebuilt")
    );
    write_atomically(&ldif, &changed);
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE audit IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let deadline = Instant::now() + SYNC_INTERVAL + Duration::from_secs(20);
    let stalled_pid: i32 = loop {
        let waiting = observer
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO audit%'",
                &[],
            )
            .await
            .unwrap();
        if let Some(row) = waiting {
            break row.get(0);
        }
        a.assert_running();
        assert!(
            Instant::now() < deadline,
            "A's scheduled sync did not reach its audit insert:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (holder, expires) = lease_row(&observer).await.expect("A holds the sync lease");
    assert_eq!(holder, a.identity, "the stalled sync is A's");

    // A fails: frozen first (SIGSTOP), so that it can't renew its lease while B starts, then
    // killed. Were it still renewing, whether a renewal fell between B's first look at the
    // lease and the kill would decide whether B's first or second scheduled run takes over
    // (both within two intervals, but the test would not know which to expect).
    let a_pid = nix::unistd::Pid::from_raw(a.pid() as i32);
    nix::sys::signal::kill(a_pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let stopped_at = chrono::Utc::now();

    // B starts while A is frozen mid-sync: its sync at start finds the lease held by A.
    let b = Node::start_with("B", &url, public_url, &setup);
    let refused = format!(
        "directory sync skipped: node {} holds the sync lease",
        a.identity
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !b.log().contains(&refused) {
        assert!(
            Instant::now() < deadline,
            "B's sync at start was not refused:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // kill -9 of A, mid-sync and holding the lease.
    a.assert_running();
    let killed_at = chrono::Utc::now();
    a.kill9();
    assert_eq!(
        lease_row(&observer).await,
        Some((a.identity.clone(), expires)),
        "the dead node's lease, not renewed since it froze"
    );
    eprintln!(
        "A frozen mid-sync, killed {:.1} s later; its lease ran {:.1} s more",
        (killed_at - stopped_at).num_milliseconds() as f64 / 1000.0,
        (expires - killed_at).num_milliseconds() as f64 / 1000.0
    );
    lock.rollback().await.unwrap();
    // A's stalled connection goes once PostgreSQL finds its client gone; its transaction,
    // never committed, goes with it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while observer
        .query_opt(
            "SELECT 1 FROM pg_stat_activity WHERE pid = $1",
            &[&stalled_pid],
        )
        .await
        .unwrap()
        .is_some()
    {
        assert!(
            Instant::now() < deadline,
            "A's stalled backend is still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // No partial sync: none of A's changes, no status or audit of its run.
    let output = b.tapctl_output(&["user", "show", "frank"]);
    assert!(
        !output.status.success(),
        "frank must not be there yet: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(
        b.tapctl(&["user", "show", "bob"])["displayName"],
        bob_before
    );
    assert_eq!(sync_status(&b)["lastRunStarted"], first["lastRunStarted"]);
    assert_eq!(applied_syncs(&b).len(), 1, "only A's sync at start");

    // B's own schedule takes over: no one asks it to sync.
    let deadline = Instant::now() + 2 * SYNC_INTERVAL + Duration::from_secs(15);
    let status = loop {
        let status = sync_status(&b);
        if status["node"].as_str() == Some(b.identity.as_str()) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "B did not take over the directory sync: {status}\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let takeover = time_field(&status, "lastRunStarted");
    let after_kill = takeover - killed_at;
    eprintln!(
        "B's scheduled sync started {:.1} s after kill -9 of A, {:.1} s after A froze \
         (at most {} s)",
        after_kill.num_milliseconds() as f64 / 1000.0,
        (takeover - stopped_at).num_milliseconds() as f64 / 1000.0,
        2 * SYNC_INTERVAL.as_secs()
    );
    assert!(
        takeover >= expires,
        "B ran before A's lease lapsed: {status}"
    );
    assert!(
        after_kill <= chrono::Duration::from_std(2 * SYNC_INTERVAL).unwrap(),
        "takeover later than two sync intervals after the kill: {status}"
    );
    assert_eq!(status["initiatedBy"].as_str(), Some("tapd"), "{status}");
    assert_eq!(status["lastResult"].as_str(), Some("success"), "{status}");
    // Exactly the changes A had written and never committed.
    assert_eq!(status["usersAdded"], 1, "{status}");
    assert_eq!(status["usersUpdated"], 1, "{status}");
    assert_eq!(
        b.tapctl(&["user", "show", "frank"])["displayName"],
        "Frank Takeover"
    );
    assert_eq!(
        b.tapctl(&["user", "show", "bob"])["displayName"],
        "Bob Rebuilt"
    );
    let applied = applied_syncs(&b);
    assert_eq!(applied.len(), 2, "A's at start and B's: {applied:?}");
    assert_eq!(audit::initiator(&applied[0]), Some("tapd"), "{applied:?}");
    assert_eq!(
        audit::detail(&applied[0], "usersAdded"),
        Some("1"),
        "{applied:?}"
    );
    let requested = b.tapctl(&["audit", "--activity", "Admin started directory sync"]);
    assert_eq!(requested["value"], Value::Array(Vec::new()), "{requested}");
    let (holder, expires) = lease_row(&observer).await.expect("the lease row stays");
    assert_eq!(holder, b.identity);
    assert!(expires <= chrono::Utc::now(), "B released the lease");
}

/// A node frozen past its lease can't commit over the sync of the node that took over: every
/// write of a sync carries the lease's fencing token, checked by the store in the write's own
/// transaction by the database's clock. Node A starts a manual sync of a changed directory
/// (Bob renamed "Bob Rebuilt", Frank added); the test holds a lock on the users table so that
/// A stops at its store read, inside its run, holding the lease and no row locks. A is frozen
/// (SIGSTOP), the lock is released, and A's lease (a minute at `sync_interval = "1h"`) lapses
/// by the database's clock. The directory changes again (Bob becomes "Bob Third") and B syncs
/// it. A is resumed (SIGCONT): its plan, read before B's sync, would set Bob back to "Bob
/// Rebuilt"; the store refuses it, A logs why at warning and its `tapctl sync run` fails
/// naming the fencing tokens, and the store keeps B's result: Bob, the sync status and the
/// audit show B's run, none of A's late one. About 70 seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_frozen_past_its_lease_cannot_commit_over_the_takeover() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test administers tapd as root (the break-glass administrator): run it as root, \
         as scripts/test.sh does"
    );
    let cluster = PostgresCluster::shared();
    let url = cluster.create_database().await;
    let connect = || async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    };
    let observer = connect().await;
    let mut locker = connect().await;

    let directory = tempfile::tempdir().unwrap();
    let ldif = directory.path().join("directory.ldif");
    let original = std::fs::read_to_string(repo_path("etc/tapd/demo-directory.ldif")).unwrap();
    write_atomically(&ldif, &original);
    let setup = Setup {
        ldif: ldif.clone(),
        // No scheduled run during the test: only the runs at start and the manual ones.
        sync_interval: "1h",
        incremental_interval: "0s",
        statement_timeout: "30s",
    };
    let public_url = "http://localhost:8080";
    let mut a = Node::start_with("A", &url, public_url, &setup);
    let b = Node::start_with("B", &url, public_url, &setup);
    // Both nodes' runs at start are over once B's has recorded its status.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sync_status(&b)["node"].as_str() != Some(b.identity.as_str()) {
        assert!(Instant::now() < deadline, "B's sync at start did not run");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let applied_before = applied_syncs(&b).len();

    // The directory changes; A's manual sync reads it, then waits for its store read.
    write_atomically(
        &ldif,
        &format!(
            "{}{NEW_USER_LDIF}",
            original.replace("displayName: Bob Builder", "displayName: Bob Rebuilt")
        ),
    );
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let late_run = a
        .tapctl
        .command(&["sync", "run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting = observer
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock' AND query LIKE 'SELECT%FROM users u%'",
                &[],
            )
            .await
            .unwrap();
        if waiting.is_some() {
            break;
        }
        a.assert_running();
        assert!(
            Instant::now() < deadline,
            "A's sync did not reach its store read:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (holder, expires) = lease_row(&observer).await.expect("A holds the sync lease");
    assert_eq!(holder, a.identity, "the waiting sync is A's");

    // A freezes inside its run; its read then completes, leaving it no locks to hold.
    let a_pid = nix::unistd::Pid::from_raw(a.pid() as i32);
    nix::sys::signal::kill(a_pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    lock.rollback().await.unwrap();

    // A's lease lapses by the database's clock while A is frozen.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let lapsed: bool = observer
            .query_one("SELECT $1 <= clock_timestamp()", &[&expires])
            .await
            .unwrap()
            .get(0);
        if lapsed {
            break;
        }
        assert!(Instant::now() < deadline, "A's lease did not lapse");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The directory changes again, and B syncs it under the lease it now takes.
    write_atomically(
        &ldif,
        &format!(
            "{}{NEW_USER_LDIF}",
            original.replace("displayName: Bob Builder", "displayName: Bob Third")
        ),
    );
    let taken = b.tapctl(&["sync", "run"]);
    assert_eq!(taken["lastResult"].as_str(), Some("success"), "{taken}");
    assert_eq!(taken["node"].as_str(), Some(b.identity.as_str()), "{taken}");
    assert_eq!(
        b.tapctl(&["user", "show", "bob"])["displayName"],
        "Bob Third"
    );

    // A resumes and tries to commit its plan, read before B's sync.
    nix::sys::signal::kill(a_pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let output = late_run.wait_with_output().unwrap();
    let answer = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !output.status.success(),
        "A's late sync succeeded: {answer}"
    );
    assert!(
        answer.contains("sync lease lost (fencing token"),
        "A's late sync failed for another reason: {answer}"
    );
    a.assert_running();
    let log = a.log();
    let refused = log
        .lines()
        .find(|l| l.contains("the store refused its writes: sync lease lost"))
        .unwrap_or_else(|| panic!("A did not log the refusal:\n{log}"));
    assert!(refused.contains("WARN"), "not a warning: {refused}");
    assert!(
        refused.contains(&format!("held by node {}", b.identity)),
        "the refusal names another holder: {refused}"
    );
    eprintln!("A's late sync: {}", answer.trim());

    // The store holds B's result: nothing of A's late run.
    assert_eq!(
        b.tapctl(&["user", "show", "bob"])["displayName"],
        "Bob Third"
    );
    let status = sync_status(&b);
    assert_eq!(
        status["node"].as_str(),
        Some(b.identity.as_str()),
        "{status}"
    );
    assert_eq!(
        status["lastRunStarted"], taken["lastRunStarted"],
        "{status}"
    );
    let applied = applied_syncs(&b);
    assert_eq!(
        applied.len(),
        applied_before + 1,
        "B's run only: {applied:?}"
    );
    assert_eq!(
        audit::detail(&applied[0], "node"),
        Some(b.identity.as_str()),
        "{applied:?}"
    );
}

/// Runs `sql` with the real `psql` on the test database (what anyone with write access to the
/// store could do).
fn psql(url: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .args([
            url,
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "psql {sql:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// `tapctl audit verify ARGS…` on `node`: exit success, stdout, stderr.
fn audit_verify(node: &Node, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["audit", "verify"];
    all.extend_from_slice(args);
    let output = node.tapctl_output(&all);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The tamper-evident audit chain with two nodes writing at once: admin writes on both nodes
/// and RADIUS sign-ins (batched by the group commit) on both, concurrently, leave one chain
/// without gaps or forks that `tapctl audit verify` accepts on either node; a row changed with
/// `psql` is named by its sequence number, and so is a deleted one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_chain_stays_whole_with_two_nodes_writing() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test administers tapd as root (the break-glass administrator): run it as root, \
         as scripts/test.sh does"
    );
    require_tool("radclient", "freeradius-utils");
    require_tool("psql", "postgresql-client");
    let cluster = PostgresCluster::shared();
    let url = cluster.create_database().await;
    let public_url = "http://localhost:8080";
    let a = Node::start("A", &url, public_url);
    let b = Node::start("B", &url, public_url);

    std::thread::scope(|scope| {
        for (i, node) in [&a, &b].into_iter().enumerate() {
            scope.spawn(move || {
                for round in 0..6 {
                    let user = ["alice", "bob", "erin"][(round + i) % 3];
                    node.tapctl(&["tap", "create", user, "--multi-use"]);
                }
            });
            scope.spawn(move || {
                for _ in 0..6 {
                    assert_eq!(
                        radius_reply(node.radius, "bob", "not-the-password").as_deref(),
                        Some("Access-Reject")
                    );
                }
            });
        }
    });
    // RADIUS sign-in events are stored by group commit within `[audit] sign_in_flush`
    // (100 ms by default): let the last window close before counting.
    std::thread::sleep(Duration::from_secs(1));
    // Count and span from one snapshot, so an event committed between two queries can't
    // look like a gap.
    let counted = psql(
        &url,
        "SELECT count(*) || ' ' || (max(seq) - min(seq) + 1) FROM audit",
    );
    let (events, span) = counted.split_once(' ').expect("count and span");
    let events: i64 = events.parse().unwrap();
    assert!(
        events >= 24,
        "expected at least 24 audit events, found {events}"
    );
    assert_eq!(span, events.to_string(), "sequence numbers without gaps");
    for node in [&a, &b] {
        let (ok, out, err) = audit_verify(node, &[]);
        assert!(ok, "verify on {} failed: {out}{err}", node.name);
        assert!(
            out.contains(&format!("audit chain verified: {events} event(s)")),
            "{out}"
        );
    }

    // A changed row: the first broken sequence number is that row's.
    let changed = events / 2;
    let actor = psql(
        &url,
        &format!("SELECT actor FROM audit WHERE seq = {changed}"),
    );
    psql(
        &url,
        &format!("UPDATE audit SET actor = 'mallory' WHERE seq = {changed}"),
    );
    let (ok, _, err) = audit_verify(&b, &[]);
    assert!(!ok);
    assert!(
        err.contains(&format!("broken at sequence {changed}:")),
        "{err}"
    );
    // Verification from a later sequence number skips it.
    let (ok, out, err) = audit_verify(&a, &["--from", &(changed + 1).to_string()]);
    assert!(ok, "{out}{err}");

    // A deleted row is named as missing, even after the change is undone.
    psql(
        &url,
        &format!("UPDATE audit SET actor = $a${actor}$a$ WHERE seq = {changed}"),
    );
    assert!(audit_verify(&a, &[]).0);
    psql(
        &url,
        &format!("DELETE FROM audit WHERE seq = {}", changed - 3),
    );
    let (ok, _, err) = audit_verify(&a, &[]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "broken at sequence {}: sequence {} is missing",
            changed - 3,
            changed - 3
        )),
        "{err}"
    );
}
