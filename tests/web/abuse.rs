//! Abuse resistance of the sign-in page (issue 15): bounded names, lockout per (account,
//! source) that spares the victim, passkeys apart from password/TAP lockout, one audit event a
//! minute for a locked flood, a bounded number of passkey ceremonies per source, and the real
//! daemon's database and memory under 300 sign-ins with 60 KB names.

use axum::http::StatusCode;
use chrono::Duration;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::Request;
use serde_json::json;
use tapd::model::{AuditFilter, NewAuditEvent};

use crate::authenticator::SoftAuthenticator;
use crate::harness::{form_encode, Browser, Site, Tapd, PUBLIC_URL};
use crate::support::http::{http, Answer};

async fn sign_in_events(site: &Site) -> Vec<NewAuditEvent> {
    site.service
        .store()
        .audit(&AuditFilter {
            activity: Some("User sign-in".into()),
            limit: 10_000,
            ..AuditFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect()
}

fn from(site: &Site, peer: &str) -> Browser {
    let mut browser = site.browser();
    browser.peer = peer.parse().unwrap();
    browser
}

/// Ten wrong codes for `user` from `browser`, waiting out every growing delay: the account is
/// then locked from that browser's address.
async fn lock_out(site: &Site, browser: &mut Browser, user: &str) {
    browser.identify(user).await;
    for attempt in 1..=10 {
        let page = browser
            .post(
                "/sign-in/tap",
                &[("username", user), ("code", "WRONG-CODE")],
            )
            .await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
        site.clock.advance(Duration::seconds(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erins_correct_tap_from_another_address_works_while_one_address_is_locked_out() {
    let site = Site::new().await;
    let code = site.create_tap("erin", false, None, Some(480)).await;
    let mut attacker = from(&site, "127.0.0.1:40000");
    lock_out(&site, &mut attacker, "erin").await;
    let page = attacker
        .post("/sign-in/tap", &[("username", "erin"), ("code", &code)])
        .await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{}", page.body);

    // Erin, from her own address, with her correct TAP: signed in.
    let mut erin = from(&site, "127.0.0.2:40000");
    let page = erin.sign_in_with_tap("erin", &code).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert!(erin.cookies.contains_key("tapd-session"));
    // The attacker's address stays locked.
    let page = attacker
        .post("/sign-in/tap", &[("username", "erin"), ("code", &code)])
        .await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_a_locked_address_adds_at_most_one_audit_event_a_minute() {
    let site = Site::new().await;
    let code = site.create_tap("erin", false, None, Some(480)).await;
    let mut attacker = site.browser();
    lock_out(&site, &mut attacker, "erin").await;
    let before = sign_in_events(&site).await.len();
    for _ in 0..200 {
        let page = attacker
            .post("/sign-in/tap", &[("username", "erin"), ("code", &code)])
            .await;
        assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
    }
    site.clock.advance(Duration::seconds(40));
    for _ in 0..100 {
        attacker
            .post("/sign-in/tap", &[("username", "erin"), ("code", "x")])
            .await;
    }
    let events = sign_in_events(&site).await;
    assert_eq!(
        events.len(),
        before + 1,
        "300 locked attempts within a minute: one event"
    );
    assert_eq!(events[0].reason_code.as_deref(), Some("throttled"));
    assert_eq!(events[0].details["attempts"], 1);

    // An address locked for sweeping many names: one key, whatever name each attempt gives.
    let mut sweeper = from(&site, "127.0.0.3:40000");
    sweeper.identify("nobody").await;
    for i in 0..50 {
        let name = format!("nobody{i}");
        sweeper
            .post("/sign-in/tap", &[("username", &name), ("code", "x")])
            .await;
    }
    let before = sign_in_events(&site).await.len();
    for i in 0..100 {
        let name = format!("someone{i}");
        let page = sweeper
            .post("/sign-in/tap", &[("username", &name), ("code", "x")])
            .await;
        assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(sign_in_events(&site).await.len(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passkey_signs_in_while_the_tap_is_locked_from_the_same_address() {
    let site = Site::new().await;
    let code = site.create_tap("alice", false, None, None).await;
    let mut browser = site.browser();
    let page = browser.sign_in_with_tap("alice", &code).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    browser.follow(&page).await;
    let mut key = SoftAuthenticator::new();
    let start = browser
        .post_json("/security-info/passkeys/start", &json!({}))
        .await
        .json();
    let credential = key.register(&start["options"], PUBLIC_URL);
    let done = browser
        .post_json(
            "/security-info/passkeys/finish",
            &json!({ "ceremony": start["ceremony"], "name": "Key", "credential": credential }),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);

    // From the same address: alice's TAP locked, and the address locked for sweeping names.
    let mut visitor = site.browser();
    lock_out(&site, &mut visitor, "alice").await;
    for i in 0..50 {
        let name = format!("nobody{i}");
        visitor
            .post("/sign-in/tap", &[("username", &name), ("code", "x")])
            .await;
    }
    let page = visitor
        .post("/sign-in/tap", &[("username", "alice"), ("code", &code)])
        .await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);

    // Her passkey still signs her in from there.
    let start = visitor
        .post_json("/sign-in/passkey/start", &json!({}))
        .await;
    assert_eq!(start.status, StatusCode::OK, "{}", start.body);
    let start = start.json();
    let assertion = key.assert(&start["options"], PUBLIC_URL);
    let ok = visitor
        .post_json(
            "/sign-in/passkey/finish",
            &json!({ "ceremony": start["ceremony"], "credential": assertion }),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert!(visitor.cookies.contains_key("tapd-session"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_too_long_or_with_control_characters_get_a_400_and_nothing_is_stored() {
    let site = Site::new().await;
    let code = site.create_tap("alice", false, None, None).await;
    let mut browser = site.browser();
    browser.get("/").await;
    let before = sign_in_events(&site).await.len();
    let long = format!("{}@example.org", "a".repeat(300));
    let names = [
        long.as_str(),
        "alice\u{1b}[2J",
        "ali\u{7f}ce",
        "ali\u{85}ce",
        "\u{9b}31malice",
        "al\u{0}ice",
    ];
    for name in names {
        for (path, fields) in [
            ("/sign-in", vec![("username", name)]),
            (
                "/sign-in/tap",
                vec![("username", name), ("code", code.as_str())],
            ),
            (
                "/sign-in/password",
                vec![("username", name), ("password", "x")],
            ),
        ] {
            let page = browser.post(path, &fields).await;
            assert_eq!(page.status, StatusCode::BAD_REQUEST, "{path} {name:?}");
            assert!(
                page.body.contains("too long") || page.body.contains("control character"),
                "{path}: {}",
                page.body
            );
        }
    }
    assert_eq!(sign_in_events(&site).await.len(), before, "no audit event");
    assert_eq!(
        site.signin().throttle().tracked(),
        (0, 0),
        "no throttle entry"
    );
    assert!(!browser.cookies.contains_key("tapd-session"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passkey_ceremonies_are_limited_per_address_and_expire() {
    let site = Site::new().await;
    let mut visitor = site.browser();
    visitor.get("/").await;
    let mut ceremonies = Vec::new();
    for _ in 0..tapd::web::passkeys::MAX_CEREMONIES_PER_SOURCE {
        let start = visitor
            .post_json("/sign-in/passkey/start", &json!({}))
            .await;
        assert_eq!(start.status, StatusCode::OK, "{}", start.body);
        ceremonies.push(start.json()["ceremony"].clone());
    }
    let refused = visitor
        .post_json("/sign-in/passkey/start", &json!({}))
        .await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.body
    );
    // Another address is not affected.
    let mut other = from(&site, "127.0.0.2:40000");
    other.get("/").await;
    let start = other.post_json("/sign-in/passkey/start", &json!({})).await;
    assert_eq!(start.status, StatusCode::OK);
    // Ceremonies expire; their slots with them.
    site.clock.advance(Duration::minutes(5));
    let start = visitor
        .post_json("/sign-in/passkey/start", &json!({}))
        .await;
    assert_eq!(start.status, StatusCode::OK, "{}", start.body);
    // An expired ceremony was pruned from the store: answering it is refused.
    let stale = visitor
        .post_json(
            "/sign-in/passkey/finish",
            &json!({ "ceremony": ceremonies[0], "credential": {} }),
        )
        .await;
    assert_ne!(stale.status, StatusCode::OK);
}

async fn plain(tapd: &Tapd, request: Request<Full<Bytes>>) -> Answer {
    http(tapd.web_addr, request).await
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn file_size(path: &std::path::Path) -> u64 {
    // The database with its write-ahead log.
    let wal = path.with_extension("db-wal");
    std::fs::metadata(path).map_or(0, |m| m.len()) + std::fs::metadata(wal).map_or(0, |m| m.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_sign_ins_with_60_kb_names_grow_neither_database_nor_memory() {
    // The site listens on a port the OS picks; requests name the public origin.
    let base = PUBLIC_URL;
    let host = base.trim_start_matches("http://");
    let tapd = Tapd::start(&format!(
        "[web]\nlisten = \"127.0.0.1:0\"\npublic_url = \"{base}\"\n"
    ));
    tapd.enable_policy_and_create_tap("alice", false);
    let db = tapd.socket.with_file_name("tapd.db");
    let first = plain(
        &tapd,
        Request::get("/")
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let cookie = first
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join("; ");
    let csrf = crate::http::field(&first.body, "csrf");
    // Warm up (first-use allocations), then measure.
    let sign_in = |name: String| {
        Request::post("/sign-in/tap")
            .header("host", host)
            .header("origin", base)
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form_encode(&[
                ("csrf", &csrf),
                ("username", &name),
                ("code", "WRONG-CODE"),
            ]))))
            .unwrap()
    };
    for i in 0..20 {
        plain(&tapd, sign_in(format!("warm{i}{}", "x".repeat(60 * 1024)))).await;
    }
    let pid = tapd.pid();
    let rss_before = vm_rss_kib(pid);
    let db_before = file_size(&db);
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..300 {
        let name = format!("{i}{}", "n".repeat(60 * 1024));
        let answer = plain(&tapd, sign_in(name)).await;
        *statuses.entry(answer.status).or_insert(0) += 1;
    }
    let rss_after = vm_rss_kib(pid);
    let db_after = file_size(&db);
    assert!(
        db_after.saturating_sub(db_before) < 1024 * 1024,
        "the database grew by {} bytes",
        db_after - db_before
    );
    assert!(
        rss_after.saturating_sub(rss_before) < 5 * 1024,
        "RSS grew by {} KiB",
        rss_after - rss_before
    );
    // A body limit in front (413) would do as well; either way no attempt is looked up.
    assert!(
        statuses.keys().all(|s| *s == 400 || *s == 413),
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passkey_registrations_started_and_not_finished_are_limited_per_user() {
    let site = Site::new().await;
    let code = site.create_tap("alice", false, None, None).await;
    let mut browser = site.browser();
    let page = browser.sign_in_with_tap("alice", &code).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    browser.follow(&page).await;
    let mut started = Vec::new();
    for _ in 0..tapd::web::passkeys::MAX_CEREMONIES_PER_SOURCE {
        let start = browser
            .post_json("/security-info/passkeys/start", &json!({}))
            .await;
        assert_eq!(start.status, StatusCode::OK, "{}", start.body);
        started.push(start.json());
    }
    let refused = browser
        .post_json("/security-info/passkeys/start", &json!({}))
        .await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.body
    );
    // Finishing one (even unsuccessfully: an answer for another origin) frees its slot.
    let mut key = SoftAuthenticator::new();
    let credential = key.register(&started[0]["options"], "https://evil.example");
    let finished = browser
        .post_json(
            "/security-info/passkeys/finish",
            &json!({ "ceremony": started[0]["ceremony"], "name": "k", "credential": credential }),
        )
        .await;
    assert_eq!(finished.status, StatusCode::FORBIDDEN, "{}", finished.body);
    let start = browser
        .post_json("/security-info/passkeys/start", &json!({}))
        .await;
    assert_eq!(start.status, StatusCode::OK, "{}", start.body);
    let start = browser
        .post_json("/security-info/passkeys/start", &json!({}))
        .await;
    assert_eq!(start.status, StatusCode::TOO_MANY_REQUESTS);
    // Abandoned ones free theirs when they expire.
    site.clock.advance(Duration::minutes(5));
    let start = browser
        .post_json("/security-info/passkeys/start", &json!({}))
        .await;
    assert_eq!(start.status, StatusCode::OK, "{}", start.body);
}
