//! Crash safety: writers create TAPs concurrently through the socket, the daemon is killed with
//! SIGKILL in the middle, and after a restart on the same store every acknowledged creation is
//! there. One user per writer, so for each user the TAP stored after the restart must be the
//! last one acknowledged, or the one whose request was in flight at the kill (never an older
//! acknowledged one: each create replaced the previous TAP).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::json;
use tapd::admin::client::AdminClient;

use super::harness::{taps_path, Tapd};
use crate::support::audit;

const WRITERS: [&str; 4] = ["tapit-w0", "tapit-w1", "tapit-w2", "tapit-w3"];

/// Acknowledged creations (all writers together) after which the daemon is killed.
const ACKS_BEFORE_KILL: usize = 40;

/// Upper bound per writer, so the loop ends even if the kill never comes.
const MAX_CREATES_PER_WRITER: usize = 200;

/// What one writer saw.
#[derive(Debug, Default)]
struct WriterLog {
    user: &'static str,
    /// Ids of the TAPs whose 201 arrived, in order.
    acknowledged: Vec<String>,
    /// A request was sent (or being sent) when the connection broke: its TAP may or may not
    /// have been stored.
    in_flight_at_kill: bool,
    /// How the loop ended.
    end: String,
    /// An answer that is neither 201 nor a broken connection.
    unexpected: Option<String>,
}

async fn writer(socket: PathBuf, user: &'static str, acknowledged: Arc<AtomicUsize>) -> WriterLog {
    let mut log = WriterLog {
        user,
        ..WriterLog::default()
    };
    let mut client = match AdminClient::connect(&socket).await {
        Ok(client) => client,
        Err(e) => {
            log.unexpected = Some(format!("can't connect: {e}"));
            return log;
        }
    };
    let path = taps_path(user);
    for _ in 0..MAX_CREATES_PER_WRITER {
        match client.raw(Method::POST, &path, Some(b"{}".to_vec())).await {
            Ok((StatusCode::CREATED, body)) => match body["id"].as_str() {
                Some(id) => {
                    log.acknowledged.push(id.to_owned());
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                }
                None => {
                    log.unexpected = Some(format!("201 without an id: {body}"));
                    return log;
                }
            },
            Ok((status, body)) => {
                log.unexpected = Some(format!("{status}: {body}"));
                return log;
            }
            Err(e) => {
                log.in_flight_at_kill = true;
                log.end = format!("connection broke: {e}");
                return log;
            }
        }
    }
    log.end = "finished all creates".into();
    log
}

#[test]
fn acknowledged_creations_survive_kill_9_and_the_daemon_restarts_cleanly() {
    let mut tapd = Tapd::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = WRITERS
        .iter()
        .map(|user| runtime.spawn(writer(tapd.socket.clone(), user, acknowledged.clone())))
        .collect();

    let deadline = Instant::now() + Duration::from_secs(30);
    while acknowledged.load(Ordering::SeqCst) < ACKS_BEFORE_KILL
        && !writers.iter().all(|w| w.is_finished())
    {
        assert!(
            Instant::now() < deadline,
            "only {} creations acknowledged in 30 s",
            acknowledged.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    tapd.kill9();
    let logs: Vec<WriterLog> = runtime.block_on(async {
        let mut logs = Vec::new();
        for handle in writers {
            let log = tokio::time::timeout(Duration::from_secs(30), handle)
                .await
                .expect("writer did not stop after the kill")
                .expect("writer task");
            logs.push(log);
        }
        logs
    });
    for log in &logs {
        assert!(log.unexpected.is_none(), "{log:?}");
    }
    for log in &logs {
        eprintln!(
            "{}: {} acknowledged, in flight at the kill: {} ({})",
            log.user,
            log.acknowledged.len(),
            log.in_flight_at_kill,
            log.end
        );
    }
    let total: usize = logs.iter().map(|l| l.acknowledged.len()).sum();
    assert!(total >= ACKS_BEFORE_KILL, "{logs:#?}");

    // The killed daemon left its socket behind; the new one replaces it and starts cleanly.
    assert!(
        tapd::admin::server::is_socket(&tapd.socket),
        "no stale socket after kill -9"
    );
    tapd.restart();
    let log = tapd.log_text();
    let second_run = log.split("==== tapd run 2 ====").nth(1).unwrap_or("");
    assert!(
        !second_run.lines().any(|l| l.starts_with("ERROR")),
        "errors after the restart:\n{second_run}"
    );

    for writer in &logs {
        let list = tapd.get(&taps_path(writer.user));
        let stored: Vec<&str> = list["value"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t["id"].as_str()).collect())
            .unwrap_or_default();
        let Some(last) = writer.acknowledged.last() else {
            assert!(
                writer.in_flight_at_kill && stored.len() <= 1,
                "{writer:?}: {stored:?}"
            );
            continue;
        };
        assert_eq!(stored.len(), 1, "{writer:?}: stored {stored:?}");
        let stored = stored[0];
        if stored != last {
            assert!(
                writer.in_flight_at_kill,
                "{}: stored TAP {stored} is not the last acknowledged {last} and no create \
                 was in flight ({writer:?})",
                writer.user
            );
            assert!(
                !writer.acknowledged.iter().any(|id| id == stored),
                "{}: an older acknowledged TAP {stored} came back instead of {last}",
                writer.user
            );
        }
    }

    // Every acknowledged creation is in the audit log, which is written in the same transaction.
    let audit = tapd.audit();
    let audited: Vec<&str> = audit
        .iter()
        .filter(|e| e["result"] == "success")
        .filter_map(|e| audit::detail(e, "TemporaryAccessPass.Id"))
        .collect();
    for writer in &logs {
        for id in &writer.acknowledged {
            assert!(
                audited.contains(&id.as_str()),
                "{}: acknowledged TAP {id} has no audit event",
                writer.user
            );
        }
    }

    // And the restarted daemon keeps working on the same store.
    for user in WRITERS {
        let (status, body) = tapd.api(Method::POST, &taps_path(user), Some(&json!({})));
        assert_eq!(status, StatusCode::CREATED, "{user}: {body}");
    }
}
