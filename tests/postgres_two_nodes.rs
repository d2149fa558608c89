//! Two real `tapd` processes on one PostgreSQL database (issue 6): a one-time TAP gives exactly
//! one web session however many sign-ins race for it on both nodes; a session started on one
//! node continues on the other (an authenticator app enrolled on one is confirmed on the
//! other); both answer RADIUS; through a few seconds of PostgreSQL outage RADIUS sends no reply,
//! the web answers 503 with a clear page, the admin API 503, and both nodes reconnect by
//! themselves with every acknowledged TAP and method still there; manual syncs started on both
//! at once are serialised by the sync lease; after `kill -9` of the node that last synced the
//! survivor keeps serving and syncs.
//!
//! Both nodes share one `public_url` (as nodes behind one load balancer do): the web checks the
//! `Origin` header against it, not the port a request arrived on, so the test sends the same
//! `Origin` to either node's listener. The lease that keeps a second node from syncing while
//! one does, and the takeover once a dead holder's lease lapses, are tested with a manual clock
//! in `tests/postgres_nodes.rs` (the sync interval is at least 30 s); here the process-level
//! checks are the refusals of concurrent manual runs and that the survivor of a `kill -9` runs
//! `tapctl sync run` and the status names it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/postgres.rs"]
mod postgres_cluster;

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use postgres_cluster::PostgresCluster;

const RADIUS_SECRET: &str = "radius-test-secret-0123456789";

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn require_tool(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{tool}` is missing: run scripts/test.sh (it installs Debian's {package} package)"
    );
}

/// One `tapd` node on the shared database; stopped on drop, its log printed on failure.
struct Node {
    name: &'static str,
    child: Child,
    dir: tempfile::TempDir,
    web: SocketAddr,
    radius: SocketAddr,
    /// The node identity it logs (`… (node ID)`), which sync status names.
    identity: String,
}

impl Node {
    fn start(name: &'static str, store_url: &str, public_url: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("radius.secret");
        std::fs::write(&secret, RADIUS_SECRET).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = format!(
            r#"
[store]
url = "{store_url}"
statement_timeout = "3s"
connect_timeout = "2s"
pool_size = 8

[directory]
url = "file:{ldif}"
preset = "openldap"
base_dn = "dc=example,dc=org"
sync_interval = "1h"

[admin]
socket = "{socket}"
root_is_global_administrator = true

[admin.roles]
global_administrator = ["tap-global-admins"]

[radius]
listen = ["127.0.0.1:0"]

[[radius.clients]]
name = "test-nas"
address = "127.0.0.1"
secret_file = "{secret}"

[web]
listen = "127.0.0.1:0"
public_url = "{public_url}"

[log]
level = "info"
format = "stderr"

[metrics]
enabled = false
"#,
            ldif = repo_path("etc/tapd/demo-directory.ldif").display(),
            socket = dir.path().join("admin.sock").display(),
            secret = secret.display(),
        );
        let config_path = dir.path().join("tapd.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("tapd.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tapd"))
            .arg("--config")
            .arg(&config_path)
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut node = Node {
            name,
            child,
            dir,
            web: "0.0.0.0:0".parse().unwrap(),
            radius: "0.0.0.0:0".parse().unwrap(),
            identity: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = node.log();
            let after = |prefix: &str| {
                text.lines()
                    .find_map(|l| l.split(prefix).nth(1))
                    .map(|rest| rest.trim().to_owned())
            };
            let web = after("listening for web on ");
            let radius = after("listening for RADIUS on ");
            let identity =
                after("(node ").and_then(|rest| rest.split(')').next().map(str::to_owned));
            if let (Some(web), Some(radius), Some(identity)) = (web, radius, identity) {
                if node.socket().exists() && node.tapctl_ok(&["user", "show", "alice"]) {
                    node.web = web.parse().unwrap();
                    node.radius = radius.parse().unwrap();
                    node.identity = identity;
                    return node;
                }
            }
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!("tapd {name} exited with {status}:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "tapd {name} did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tapd.log")).unwrap_or_default()
    }

    fn tapctl_output(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_tapctl"))
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .unwrap()
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
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("tapd {} exited ({status}):\n{}", self.name, self.log());
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let mut stderr = std::io::stderr();
            let _ = writeln!(stderr, "--- tapd {} log ---\n{}", self.name, self.log());
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

/// What the web answered.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    body: String,
}

impl Answer {
    /// The value a `Set-Cookie` header gives `name`.
    fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| c.strip_prefix(&format!("{name}=")))
            .and_then(|rest| rest.split(';').next())
            .map(str::to_owned)
    }
}

/// One plain-HTTP request to `addr` on a fresh connection.
async fn http(addr: SocketAddr, request: Request<Full<Bytes>>) -> Answer {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn form_encode(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
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
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();
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
