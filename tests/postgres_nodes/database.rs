//! tapd on PostgreSQL: TLS to the database as `sslmode` asks; a database outage (the store reports
//! `Unavailable` and recovers by itself; the real `tapd` answers 503 on the admin API and the
//! site while PostgreSQL is down, logs the driver's error the site's page hides, and serves
//! again when it returns, with every acknowledged TAP still there), and sync leadership between two nodes (one syncs at a time; the other takes over
//! once a dead holder's lease lapses).
//!
//! Every test starts its own throwaway PostgreSQL cluster (`tests/support/postgres.rs`) or a
//! database in a shared one; the tests that stop the server own theirs.

use crate::support::postgres as postgres_cluster;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use tapd::admin::client::AdminClient;
use tapd::clock::{Clock, ManualClock};
use tapd::directory::ldif::LdifDirectory;
use tapd::model::{AuditResult, Channel, NewAuditEvent, SyncStatus};
use tapd::store::postgres::{PostgresSettings, PostgresStore};
use tapd::store::{Store, StoreError};
use tapd::sync::plan::DeletionGuard;
use tapd::sync::{SyncError, SyncOptions, Syncer};

use crate::support::config::{demo_ldif, repo_path, ConfigFile};
use crate::support::daemon::Launch;
use postgres_cluster::PostgresCluster;

/// Settings for a test: short timeouts, so an outage shows within a second or two.
fn settings(url: &str) -> PostgresSettings {
    PostgresSettings {
        statement_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(2),
        pool_size: 4,
        ..PostgresSettings::new(url)
    }
}

/// Retries `attempt` every 200 ms until it returns `Some`, for at most `limit`.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn audit_event(activity: &str) -> NewAuditEvent {
    NewAuditEvent {
        time: chrono::Utc::now(),
        actor: "test".to_owned(),
        activity: activity.to_owned(),
        target: None,
        result: AuditResult::Success,
        reason_code: None,
        channel: Channel::Admin,
        source_address: None,
        details: json!({}),
    }
}

// ---------------------------------------------------------------------------------------------
// The store through an outage

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_is_unavailable_while_postgres_is_down_then_recovers() {
    let cluster = PostgresCluster::start();
    let url = cluster.create_database().await;
    let store = Arc::new(PostgresStore::open(&settings(&url)).await.unwrap());
    store
        .append_audit(&audit_event("before the outage"))
        .await
        .unwrap();
    // Open every pooled connection, so that several die with the server.
    let mut warm = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let store = store.clone();
        warm.spawn(async move { store.audit(&Default::default()).await });
    }
    while let Some(done) = warm.join_next().await {
        done.unwrap().unwrap();
    }

    cluster.stop();
    for _ in 0..3 {
        match store.append_audit(&audit_event("during the outage")).await {
            Err(StoreError::Unavailable(message)) => {
                assert!(message.contains("PostgreSQL"), "{message}")
            }
            other => panic!("expected Unavailable while PostgreSQL is down, got {other:?}"),
        }
    }
    assert!(matches!(
        store.policy().await,
        Err(StoreError::Unavailable(_))
    ));

    cluster.restart();
    // No restart of tapd's side: the pool drops the dead connections and opens new ones.
    eventually(
        Duration::from_secs(20),
        "the store to answer again",
        || async { store.policy().await.ok() },
    )
    .await;
    for _ in 0..8 {
        store
            .append_audit(&audit_event("after the outage"))
            .await
            .unwrap();
    }
    let kept: Vec<String> = store
        .audit(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event.activity)
        .collect();
    assert!(kept.contains(&"before the outage".to_owned()));
    assert!(!kept.contains(&"during the outage".to_owned()));
    assert_eq!(kept.iter().filter(|a| *a == "after the outage").count(), 8);
}

// ---------------------------------------------------------------------------------------------
// TLS to the database

/// Opens a store on `host` with `sslmode`, trusting `ca_file`: the TLS version the server sees
/// (`None`: not encrypted), or why it could not open.
async fn open_over(
    cluster: &PostgresCluster,
    db: &str,
    host: &str,
    sslmode: &str,
    ca_file: Option<PathBuf>,
) -> Result<Option<String>, String> {
    let url = cluster.url_with(db, host, sslmode);
    let store = PostgresStore::open(&PostgresSettings {
        ca_file,
        ..settings(&url)
    })
    .await
    .map_err(|e| e.to_string())?;
    Ok(store.connection_tls().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_connects_over_tls_as_sslmode_asks() {
    let cluster = PostgresCluster::start_with_tls();
    let url = cluster.create_database().await;
    let db = url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let (ca, other) = (Some(cluster.ca_file()), Some(cluster.other_ca_file()));
    let encrypted = |r: Result<Option<String>, String>| match r {
        Ok(version) => version.is_some(),
        Err(e) => panic!("expected to connect: {e}"),
    };
    let refused = |r: Result<Option<String>, String>| match r {
        Ok(_) => panic!("expected the certificate to be refused"),
        Err(e) => e,
    };

    // The server certificate names localhost and is signed by `ca`.
    assert!(encrypted(
        open_over(&cluster, &db, "localhost", "verify-full", ca.clone()).await
    ));
    // verify-full checks the name: 127.0.0.1 is not in the certificate.
    let err = refused(open_over(&cluster, &db, "127.0.0.1", "verify-full", ca.clone()).await);
    assert!(err.contains("PostgreSQL can't be reached"), "{err}");
    // verify-ca checks the chain only; both modes refuse an unrelated CA.
    assert!(encrypted(
        open_over(&cluster, &db, "127.0.0.1", "verify-ca", ca.clone()).await
    ));
    refused(open_over(&cluster, &db, "localhost", "verify-ca", other.clone()).await);
    refused(open_over(&cluster, &db, "localhost", "verify-full", other.clone()).await);
    // With no CA file the system roots are used, which don't know the test CA.
    refused(open_over(&cluster, &db, "localhost", "verify-full", None).await);
    // require: encrypted, certificate unchecked; with a CA file it is checked (as libpq).
    assert!(encrypted(
        open_over(&cluster, &db, "127.0.0.1", "require", None).await
    ));
    refused(open_over(&cluster, &db, "localhost", "require", other).await);
    // prefer encrypts when offered; disable never does.
    assert!(encrypted(
        open_over(&cluster, &db, "127.0.0.1", "prefer", None).await
    ));
    assert!(!encrypted(
        open_over(&cluster, &db, "127.0.0.1", "disable", ca).await
    ));
}

// ---------------------------------------------------------------------------------------------
// The real daemon through an outage

/// A `tapd` process on a PostgreSQL store, with the demo directory and the registration site
/// on plain HTTP, run by the test kit: stopped on drop, its log printed when the test failed.
struct Tapd {
    daemon: std::sync::Mutex<crate::support::daemon::Tapd>,
    socket: PathBuf,
    web: std::net::SocketAddr,
}

impl Tapd {
    fn start(store_url: &str) -> Tapd {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        ConfigFile::new()
            .store(store_url)
            .string(
                "store",
                "secrets_key_file",
                crate::support::postgres::shared_secrets_key(store_url).display(),
            )
            .string("store", "statement_timeout", "3s")
            .string("store", "connect_timeout", "2s")
            .set("store", "pool_size", 4)
            .ldif_directory(&demo_ldif(), "dc=example,dc=org")
            .string("directory", "preset", "openldap")
            .string("directory", "sync_interval", "1h")
            .admin(&socket)
            .web_on_loopback("http://localhost:8080")
            .log_to_stderr()
            .no_metrics()
            .write(&dir.path().join("tapd.toml"));
        let daemon = Launch::new(dir)
            .listener("admin")
            .listener("web")
            .terminate_on_drop()
            .start();
        Tapd {
            web: daemon.addr("web"),
            daemon: std::sync::Mutex::new(daemon),
            socket,
        }
    }

    /// The registration site's start page for a visitor whose cookie names a session, which
    /// the site looks up in the store.
    async fn web_page_with_a_session(&self) -> crate::support::http::Answer {
        let request = hyper::Request::get("/")
            .header("host", "localhost:8080")
            .header("cookie", format!("tapd-session={}", "s".repeat(43)))
            .body(http_body_util::Full::default())
            .unwrap();
        crate::support::http::http(self.web, request).await
    }

    /// Panics with the log when tapd has exited (it should run until the test stops it).
    fn assert_running(&self) {
        let mut daemon = self.daemon.lock().unwrap();
        assert!(daemon.is_running(), "tapd exited:\n{}", daemon.log_text());
    }

    fn socket(&self) -> PathBuf {
        self.socket.clone()
    }

    fn log(&self) -> String {
        self.daemon
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log_text()
    }

    /// One request on a fresh connection (a connection may not outlive an outage's errors).
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut client = AdminClient::connect(&self.socket())
            .await
            .unwrap_or_else(|e| panic!("connecting to tapd: {e}\n{}", self.log()));
        client
            .raw(method, path, body.map(|b| b.to_string().into_bytes()))
            .await
            .unwrap_or_else(|e| panic!("admin request: {e}\n{}", self.log()))
    }
}

const TAPS: &str = "/v1/users/alice/authentication/temporaryAccessPassMethods";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_and_web_answer_503_while_postgres_is_down_and_recover() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test acts as the break-glass administrator (uid 0) on the admin socket: \
         run it as root, as scripts/test.sh does"
    );
    let cluster = PostgresCluster::start();
    let url = cluster.create_database().await;
    let tapd = Tapd::start(&url);

    // Up once the socket answers and the first sync brought alice in.
    eventually(Duration::from_secs(30), "tapd to serve alice", || async {
        tapd.assert_running();
        if !tapd.socket().exists() {
            return None;
        }
        let (status, _) = tapd.request(Method::GET, "/v1/users/alice", None).await;
        (status == StatusCode::OK).then_some(())
    })
    .await;
    let (status, created) = tapd
        .request(Method::POST, TAPS, Some(json!({ "isUsableOnce": true })))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let tap_id = created["id"].as_str().unwrap().to_owned();
    let page = tapd.web_page_with_a_session().await;
    assert_eq!(page.status, 200, "{}", page.body);

    cluster.stop();
    // A few seconds of outage: reads and writes get a clear 503, and nothing hangs.
    let outage = Instant::now();
    let mut answered = 0;
    while outage.elapsed() < Duration::from_secs(3) || answered < 3 {
        for (method, body) in [(Method::GET, None), (Method::POST, Some(json!({})))] {
            let (status, body) = tapd.request(method, TAPS, body).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert_eq!(body["error"]["code"], "serviceUnavailable", "{body}");
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("store unavailable") && message.contains("PostgreSQL"),
                "{message}"
            );
        }
        // The site shows its visitors the outage, never its detail.
        let page = tapd.web_page_with_a_session().await;
        assert_eq!(page.status, 503, "{}", page.body);
        assert!(page.body.contains("Service unavailable"), "{}", page.body);
        assert!(
            page.body
                .contains("reach the directory or its database right now. Try again in a minute."),
            "{}",
            page.body
        );
        assert!(!page.body.contains("PostgreSQL"), "{}", page.body);
        answered += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The log has what the page hid: the site's failure with the driver's own error beneath it.
    let log = tapd.log();
    let web_lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("web: service unavailable: "))
        .collect();
    assert!(
        web_lines
            .iter()
            .any(|line| line.contains("PostgreSQL") && line.contains("Connection refused")),
        "no logged web failure shows the driver's error:\n{log}"
    );

    cluster.restart();
    // tapd reconnects by itself; the TAP acknowledged before the outage is still there, and
    // nothing refused during the outage was stored.
    let listed = eventually(Duration::from_secs(30), "tapd to answer again", || async {
        tapd.assert_running();
        let (status, body) = tapd.request(Method::GET, TAPS, None).await;
        (status == StatusCode::OK).then_some(body)
    })
    .await;
    let ids: Vec<&str> = listed["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(ids, [tap_id.as_str()], "{listed}");
    let (status, body) = tapd.request(Method::POST, TAPS, Some(json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

// ---------------------------------------------------------------------------------------------
// Sync leadership

/// A syncer at a two-second interval, so that its lease (as long as the interval) lapses in
/// real time: the lease is judged by the database's clock, which no test clock moves.
fn syncer(store: Arc<dyn Store>, clock: Arc<ManualClock>, node: &str) -> Syncer {
    let directory = LdifDirectory::open(repo_path("etc/tapd/demo-directory.ldif"))
        .unwrap()
        .with_base_dn("dc=example,dc=org");
    let clock: Arc<dyn Clock> = clock;
    Syncer::new(
        store,
        Arc::new(directory),
        clock,
        SyncOptions {
            interval: LEASE_TTL,
            guard: DeletionGuard::default(),
            node: node.to_owned(),
        },
        Arc::new(tapd::metrics::Metrics::new()),
    )
}

/// The syncers' interval and so their lease's lifetime.
const LEASE_TTL: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_syncs_at_a_time_and_another_takes_over() {
    let cluster = PostgresCluster::shared();
    let url = cluster.create_database().await;
    let store_a: Arc<dyn Store> = Arc::new(PostgresStore::open(&settings(&url)).await.unwrap());
    let store_b: Arc<dyn Store> = Arc::new(PostgresStore::open(&settings(&url)).await.unwrap());
    let start = chrono::Utc::now();
    let (clock_a, clock_b) = (
        Arc::new(ManualClock::new(start)),
        Arc::new(ManualClock::new(start)),
    );
    let node_a = syncer(store_a.clone(), clock_a.clone(), "node-a");
    let node_b = syncer(store_b.clone(), clock_b.clone(), "node-b");

    let at = |seconds: i64| start + chrono::Duration::seconds(seconds);

    // A syncs (next run due at +2 s by the nodes' clocks); the status says so, and B's
    // scheduled run is not due.
    let status = node_a.run(false, "tapd").await.unwrap();
    assert_eq!(status.last_result.as_deref(), Some("success"));
    assert_eq!(status.node.as_deref(), Some("node-a"));
    assert!(store_b.user("alice").await.unwrap().is_some());
    clock_b.set(at(1));
    assert_eq!(node_b.run_scheduled().await.unwrap(), None);

    // A "dies" in the middle of its next sync: it holds the lease (for two seconds by the
    // database's clock) and never releases it. B is refused and told by whom, without
    // touching the shared status, however far B's own clock has moved.
    let stale = store_a
        .try_sync_lease("node-a", LEASE_TTL)
        .await
        .unwrap()
        .granted()
        .expect("A takes the lease");
    clock_b.set(at(3600));
    assert!(matches!(
        node_b.run_scheduled().await,
        Err(SyncError::HeldElsewhere { .. })
    ));
    match node_b.run(false, "tapd").await {
        Err(SyncError::HeldElsewhere { holder, .. }) => assert_eq!(holder, "node-a"),
        other => panic!("expected HeldElsewhere, got {other:?}"),
    }
    let before: SyncStatus = store_b.sync_status().await.unwrap();
    assert_eq!(before.node.as_deref(), Some("node-a"));

    // Once A's lease has lapsed (by the database's clock), B's scheduled run takes over.
    tokio::time::sleep(LEASE_TTL + Duration::from_millis(300)).await;
    let taken = node_b.run_scheduled().await.unwrap().expect("B syncs");
    assert_eq!(taken.node.as_deref(), Some("node-b"));
    assert_eq!(taken.last_result.as_deref(), Some("success"));
    // A's late write under its old lease is refused and changes nothing.
    match store_a.put_sync_status(&stale.fence(), &before, &[]).await {
        Err(StoreError::LeaseLost(lost)) => {
            assert_eq!(lost.token, stale.epoch);
            assert_eq!(lost.holder.as_deref(), Some("node-b"));
        }
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    assert_eq!(
        store_a.sync_status().await.unwrap().node.as_deref(),
        Some("node-b")
    );
    // B released the lease after its run: a manual run on A goes ahead.
    clock_a.set(at(3700));
    let again = node_a.run(false, "root (uid 0)").await.unwrap();
    assert_eq!(again.node.as_deref(), Some("node-a"));
}
