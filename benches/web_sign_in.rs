//! Web sign-in benchmarks for BENCHMARKS.md ("Web sign-in (issue 7)"):
//!
//! 1. one argon2id verification at tapd's parameters (m = 19 MiB, t = 2, p = 1);
//! 2. TAP sign-in latency, one user signing in again and again (p50 / p99);
//! 3. TAP sign-ins per second with 20 users signing in at once;
//! 4. Security info page render time (p50 / p99).
//!
//! The site is built exactly as the daemon builds it (`daemon::build_service`, the same argon2
//! pool, a SQLite store on disk with `synchronous=FULL`) and served by `web::serve` on a
//! loopback port; the client is hyper over keep-alive TCP connections in the same process.
//! Run with `cargo bench --bench web_sign_in`; under `cargo test` it only says so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tapd::clock::{Clock, SystemClock};
use tapd::model::{AuditResult, Channel, MethodKind, NewAuditEvent, RegisteredMethod};
use tapd::policy::{CreateTapRequest, PolicyPatch};
use tapd::service::Caller;
use tapd::web::{self, WebSettings, WebState};
use tokio_util::sync::CancellationToken;

#[path = "../examples/web_sign_in_load/client.rs"]
mod client;
use client::Client;

/// The site's public URL: the `Host` and `Origin` the client sends.
const PUBLIC_URL: &str = "http://localhost:8080";

const USERS: usize = 20;
const LATENCY_SIGN_INS: usize = 200;
const SIGN_INS_PER_CONCURRENT_USER: usize = 15;
const PAGE_RENDERS: usize = 1000;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("web_sign_in: a benchmark; run it with `cargo bench --bench web_sign_in`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn directory_ldif() -> String {
    let mut ldif = String::from(
        "version: 1\n\ndn: dc=example,dc=org\nobjectClass: top\nobjectClass: dcObject\n\
         objectClass: organization\no: Example\ndc: example\n\n",
    );
    let mut members = String::new();
    for i in 1..=USERS {
        ldif.push_str(&format!(
            "dn: uid=user{i:02},dc=example,dc=org\nobjectClass: inetOrgPerson\n\
             entryUUID: 00000000-0000-4000-8000-0000000000{i:02}\nuid: user{i:02}\n\
             cn: User {i}\nsn: {i}\nmail: user{i:02}@example.org\n\n"
        ));
        members.push_str(&format!("member: uid=user{i:02},dc=example,dc=org\n"));
    }
    ldif.push_str(&format!(
        "dn: cn=tap-users,dc=example,dc=org\nobjectClass: groupOfNames\n\
         entryUUID: 00000000-0000-4000-9000-000000000001\ncn: tap-users\n{members}\n"
    ));
    ldif
}

/// Verifications per second with `threads` threads doing nothing but argon2 (each with its own
/// reused work area): what this machine delivers right now, other load included.
fn parallel_argon2_rate(phc: &str, threads: usize) -> f64 {
    const EACH: usize = 20;
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut area = Vec::new();
                for _ in 0..EACH {
                    assert!(
                        tapd::tapcode::verify_with_memory("Bench-Code-1", phc, &mut area).unwrap()
                    );
                }
            });
        }
    });
    (threads * EACH) as f64 / start.elapsed().as_secs_f64()
}

async fn run() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);

    // 1. One argon2id verification.
    let phc = tapd::tapcode::hash_blocking("Bench-Code-1").unwrap();
    let mut verifications: Vec<Duration> = (0..41)
        .map(|_| {
            let start = Instant::now();
            assert!(tapd::tapcode::verify_blocking("Bench-Code-1", &phc).unwrap());
            start.elapsed()
        })
        .collect();
    verifications.sort();
    let verify = percentile(&verifications, 0.5);
    let raw_rate = parallel_argon2_rate(&phc, cores);

    // The site, built as the daemon builds it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("directory.ldif"), directory_ldif()).unwrap();
    let toml = "[store]\nurl = \"sqlite:tapd.db\"\n[directory]\nurl = \"file:directory.ldif\"\n\
                base_dn = \"dc=example,dc=org\"\n[admin]\nsocket = \"admin.sock\"\n\
                [web]\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://localhost:8080\"\n";
    let config = tapd::config::load_from_str(toml, &[], dir.path())
        .unwrap()
        .config;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = tapd::daemon::open_store(&config, clock.clone())
        .await
        .unwrap();
    let directory = tapd::daemon::open_directory(&config).unwrap();
    let service = tapd::daemon::build_service(&config, store, directory.clone(), clock).unwrap();
    service.syncer().run(false, "bench").await.unwrap();
    let admin = service
        .admin(Caller {
            uid: 0,
            pid: None,
            local_username: None,
        })
        .await
        .unwrap();
    admin
        .patch_policy(
            &PolicyPatch::from_json(
                br#"{"state":"enabled","includeTargets":[{"id":"tap-users","targetType":"group"}]}"#,
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let mut codes = Vec::new();
    for i in 1..=USERS {
        let created = admin
            .create_tap(
                &format!("user{i:02}"),
                &CreateTapRequest {
                    start: None,
                    lifetime_in_minutes: Some(480),
                    is_usable_once: Some(false),
                },
            )
            .await
            .unwrap();
        codes.push((format!("user{i:02}"), created.code.to_string()));
    }
    let state = WebState::new(
        service.clone(),
        directory,
        WebSettings::from_config(&config.web).unwrap(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(web::serve(
        listener,
        None,
        web::router(state),
        tapd::config::HttpLimits::default(),
        shutdown.clone(),
    ));

    // 2. One user signing in again and again.
    let (user, code) = codes[0].clone();
    let mut client = Client::connect(addr, PUBLIC_URL).await.unwrap();
    for _ in 0..5 {
        assert!(client.sign_in(&user, &code).await.unwrap());
    }
    let mut latencies = Vec::with_capacity(LATENCY_SIGN_INS);
    for _ in 0..LATENCY_SIGN_INS {
        let start = Instant::now();
        let signed_in = client.sign_in(&user, &code).await.unwrap();
        latencies.push(start.elapsed());
        assert!(signed_in);
    }
    latencies.sort();

    // 3. Twenty users at once.
    let mut clients = Vec::new();
    for (user, code) in &codes {
        clients.push((
            Client::connect(addr, PUBLIC_URL).await.unwrap(),
            user.clone(),
            code.clone(),
        ));
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(USERS + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for (mut client, user, code) in clients {
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            let mut refused = 0;
            for _ in 0..SIGN_INS_PER_CONCURRENT_USER {
                if !client.sign_in(&user, &code).await.unwrap() {
                    refused += 1;
                }
            }
            refused
        });
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut refused = 0;
    while let Some(result) = tasks.join_next().await {
        refused += result.unwrap();
    }
    let elapsed = start.elapsed();
    let total = USERS * SIGN_INS_PER_CONCURRENT_USER;
    let rate = (total - refused) as f64 / elapsed.as_secs_f64();
    let ceiling = cores as f64 / verify.as_secs_f64();

    // 4. The Security info page of a signed-in user with two methods.
    let user_id = service.store().user(&user).await.unwrap().unwrap().id;
    for (kind, name) in [
        (MethodKind::Fido2, "Work laptop"),
        (MethodKind::SoftwareOath, "Phone"),
    ] {
        let method = RegisteredMethod {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: user_id.clone(),
            kind,
            display_name: name.to_owned(),
            created: chrono::Utc::now(),
            data: "{}".to_owned(),
        };
        let event = NewAuditEvent {
            time: chrono::Utc::now(),
            actor: "bench".to_owned(),
            activity: "User registered security info".to_owned(),
            target: None,
            result: AuditResult::Success,
            reason_code: None,
            channel: Channel::Web,
            source_address: None,
            details: serde_json::json!({}),
        };
        service.store().add_method(&method, &event).await.unwrap();
    }
    for _ in 0..20 {
        let (status, body) = client.send("GET", "/security-info", None).await.unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("Work laptop") && body.contains("Phone"));
    }
    let mut renders = Vec::with_capacity(PAGE_RENDERS);
    for _ in 0..PAGE_RENDERS {
        let start = Instant::now();
        let (status, _) = client.send("GET", "/security-info", None).await.unwrap();
        renders.push(start.elapsed());
        assert_eq!(status, 200);
    }
    renders.sort();

    shutdown.cancel();
    let _ = server.await;

    let p99 = percentile(&latencies, 0.99);
    let page_p99 = percentile(&renders, 0.99);
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!("### Results\n");
    println!("| measure | value | target | |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| one argon2id verification (m=19 MiB, t=2, p=1), median of {} | {} | — | |",
        verifications.len(),
        ms(verify)
    );
    println!(
        "| TAP sign-in, 1 user, p50 ({LATENCY_SIGN_INS} sign-ins) | {} | — | |",
        ms(percentile(&latencies, 0.5))
    );
    println!(
        "| TAP sign-in, 1 user, p99 | {} | ≤ 2 × verification = {} | {} |",
        ms(p99),
        ms(verify * 2),
        verdict(p99 <= verify * 2)
    );
    println!(
        "| TAP sign-ins/s, {USERS} users at once ({total} sign-ins, {refused} refused) | {rate:.1}/s | ≥ 0.85 × {cores} cores ÷ verification = {:.1}/s | {} |",
        0.85 * ceiling,
        verdict(rate >= 0.85 * ceiling)
    );
    println!(
        "| argon2id alone on {cores} threads, no server (the machine's ceiling at this moment) | {raw_rate:.1}/s | — | |"
    );
    println!(
        "| TAP sign-ins/s ÷ argon2id alone on {cores} threads | {:.2} | ≥ 0.85 | {} |",
        rate / raw_rate,
        verdict(rate >= 0.85 * raw_rate)
    );
    println!(
        "| Security info page, p50 ({PAGE_RENDERS} renders) | {} | — | |",
        ms(percentile(&renders, 0.5))
    );
    println!(
        "| Security info page, p99 | {} | ≤ 5 ms | {} |",
        ms(page_p99),
        verdict(page_p99 <= Duration::from_millis(5))
    );
}
