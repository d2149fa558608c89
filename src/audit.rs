//! Writes audit events to the log (and so to the journal) with structured fields an operator
//! can filter on: `REASON_CODE`, `CHANNEL`, `TAPD_USER`, `SOURCE_ADDRESS`, and `RADIUS_CLIENT`
//! for RADIUS events (`journalctl -u tapd REASON_CODE=tap_not_supported_radius`). The store
//! keeps the queryable copy; this is the second copy the design asks for.
//!
//! The fields are `log` key-values with snake_case keys; `systemd-journal-logger` turns each
//! key into a journal field name by upper-casing it (`reason_code` → `REASON_CODE`). The RADIUS
//! client's configured name is taken from the event's details under
//! [`RADIUS_CLIENT_DETAIL`], so the RADIUS path only has to put it there.
//!
//! [`AuditWriter`] stores the sign-in events of the RADIUS and federation paths by group
//! commit, in one of two modes (`[audit] sign_in_flush`):
//! - a window (default 100 ms): a sign-in decision changes no state, so its event is queued and
//!   the answer goes out at once; the writer task wakes for the first event of a window,
//!   sleeps out the window while more queue up (without being woken by each), and hands the
//!   whole batch to [`Store::append_audits`] in one transaction. An event is durable within
//!   the window (plus the commit); [`AuditWriter::flush`], called at shutdown, commits what
//!   is queued, so a SIGTERM loses nothing. A crash (SIGKILL, power loss) may lose at most the
//!   last window's events; the journal line written before the answer still has them.
//! - `0`: each caller waits until its event is durable, but the events that arrive while one
//!   commit is in progress go to the store together in the next, so a busy server pays one
//!   fsync per batch instead of one per request.
//!
//! Only sign-in events that change nothing go through here; admin actions and TAP
//! consumption are written by the store together with the change they record.
//!
//! May depend on: `model`, `store`, tokio.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};

use crate::model::{AuditResult, NewAuditEvent};
use crate::store::{Store, StoreError};

/// Most events one group commit writes; more wait for the next.
const MAX_BATCH: usize = 2048;
/// Events waiting for a commit at most (a few MB); a caller beyond that waits for room.
const QUEUE_DEPTH: usize = 16_384;

type Done = oneshot::Sender<Result<(), StoreError>>;

enum Pending {
    /// An event, with the caller waiting for its commit when the window is zero.
    Event(NewAuditEvent, Option<Done>),
    /// Commit everything queued before this now, then answer.
    Flush(Done),
}

/// The queue into the writer task, and the bell that cuts its window short.
struct Queue {
    sender: mpsc::Sender<Pending>,
    hurry: Arc<Notify>,
}

/// Stores audit events through one background task that commits whatever has queued up as one
/// transaction ([`Store::append_audits`]), at most `window` after the first of them (at once
/// with a zero window, the caller waiting for the commit). Started by [`AuditWriter::start`]
/// or on first use, inside the runtime of the caller; ends when the writer is dropped.
pub struct AuditWriter {
    store: Arc<dyn Store>,
    window: Duration,
    queue: OnceLock<Queue>,
}

impl std::fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditWriter")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl AuditWriter {
    /// A writer into `store` whose callers wait for each commit (`sign_in_flush = 0`).
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_window(store, Duration::ZERO)
    }

    /// A writer into `store` that commits within `window` of an event (zero: before
    /// answering the caller).
    pub fn with_window(store: Arc<dyn Store>, window: Duration) -> Self {
        AuditWriter {
            store,
            window,
            queue: OnceLock::new(),
        }
    }

    /// How long an event may wait before it is durable.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Starts the writer task on the current runtime (if not yet started), so that it runs
    /// there whichever runtime records the first event.
    pub fn start(&self) {
        self.queue();
    }

    fn queue(&self) -> &Queue {
        self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(QUEUE_DEPTH);
            let hurry = Arc::new(Notify::new());
            tokio::spawn(commit_batches(
                self.store.clone(),
                receiver,
                self.window,
                hurry.clone(),
            ));
            Queue { sender, hurry }
        })
    }

    /// Stores `event`: with a window, queues it and returns (it is committed within the
    /// window); without, returns once it is committed (or the commit failed).
    pub async fn record(&self, event: NewAuditEvent) -> Result<(), StoreError> {
        let queue = self.queue();
        if !self.window.is_zero() {
            let pending = match queue.sender.try_send(Pending::Event(event, None)) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(pending)) => {
                    // A full queue is committed now rather than at the end of the window.
                    queue.hurry.notify_one();
                    pending
                }
                Err(mpsc::error::TrySendError::Closed(pending)) => {
                    return self.write_directly(pending).await
                }
            };
            return match queue.sender.send(pending).await {
                Ok(()) => Ok(()),
                Err(mpsc::error::SendError(pending)) => self.write_directly(pending).await,
            };
        }
        let (done, committed) = oneshot::channel();
        if let Err(mpsc::error::SendError(pending)) =
            queue.sender.send(Pending::Event(event, Some(done))).await
        {
            // The task is gone (its runtime shut down): write this one directly.
            return self.write_directly(pending).await;
        }
        match committed.await {
            Ok(result) => result,
            Err(_) => Err(StoreError::unavailable(
                "the audit writer stopped before committing".to_owned(),
            )),
        }
    }

    async fn write_directly(&self, pending: Pending) -> Result<(), StoreError> {
        match pending {
            Pending::Event(event, _) => self.store.append_audit(&event).await,
            Pending::Flush(_) => Ok(()),
        }
    }

    /// Commits every event queued so far and returns when they are durable (at shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let Some(queue) = self.queue.get() else {
            return Ok(());
        };
        let (done, committed) = oneshot::channel();
        queue.hurry.notify_one();
        if queue.sender.send(Pending::Flush(done)).await.is_err() {
            return Ok(());
        }
        committed.await.unwrap_or_else(|_| {
            Err(StoreError::unavailable(
                "the audit writer stopped before committing".to_owned(),
            ))
        })
    }
}

/// Moves `batch` into `events` and `waiters`; true when it held a flush.
fn take(
    batch: &mut Vec<Pending>,
    events: &mut Vec<NewAuditEvent>,
    waiters: &mut Vec<Done>,
) -> bool {
    let mut flushing = false;
    for pending in batch.drain(..) {
        match pending {
            Pending::Event(event, done) => {
                events.push(event);
                waiters.extend(done);
            }
            Pending::Flush(done) => {
                flushing = true;
                waiters.push(done);
            }
        }
    }
    flushing
}

/// The writer task: take what has queued (up to [`MAX_BATCH`]); with a window and nobody
/// waiting, sleep out the window (or until hurried) and take what queued meanwhile; commit
/// it in one transaction, tell every waiting caller, repeat until all senders are gone.
async fn commit_batches(
    store: Arc<dyn Store>,
    mut queue: mpsc::Receiver<Pending>,
    window: Duration,
    hurry: Arc<Notify>,
) {
    let mut events = Vec::with_capacity(MAX_BATCH);
    let mut waiters: Vec<Done> = Vec::with_capacity(MAX_BATCH);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut flushing = take(&mut batch, &mut events, &mut waiters);
        if !window.is_zero() && !flushing && events.len() < MAX_BATCH {
            tokio::select! {
                _ = tokio::time::sleep(window) => {}
                _ = hurry.notified() => {}
            }
            while events.len() < MAX_BATCH && !flushing {
                match queue.try_recv() {
                    Ok(pending) => {
                        batch.push(pending);
                        flushing |= take(&mut batch, &mut events, &mut waiters);
                    }
                    Err(_) => break,
                }
            }
        }
        let result = if events.is_empty() {
            Ok(())
        } else {
            store.append_audits(&events).await
        };
        if let Err(e) = &result {
            if !window.is_zero() {
                log::error!(
                    "could not record {} sign-in audit events: {e}",
                    events.len()
                );
            }
        }
        for done in waiters.drain(..) {
            // A caller that stopped waiting doesn't need the answer.
            let _ = done.send(result.clone());
        }
        events.clear();
    }
}

/// Key in [`NewAuditEvent::details`] holding the configured name of the RADIUS client a
/// request came from; logged as the `RADIUS_CLIENT` journal field.
pub const RADIUS_CLIENT_DETAIL: &str = "radiusClient";

/// Logs `event` at info (success) or warn (failure) under the `tapd::audit` target.
pub fn log(event: &NewAuditEvent) {
    let level = match event.result {
        AuditResult::Success => log::Level::Info,
        AuditResult::Failure => log::Level::Warn,
    };
    let result = match event.result {
        AuditResult::Success => "success",
        AuditResult::Failure => "failure",
    };
    let target = event.target.as_deref().unwrap_or("-");
    let reason = event.reason_code.as_deref().unwrap_or("-");
    let source = event.source_address.as_deref().unwrap_or("-");
    let channel = event.channel.as_str();
    match event
        .details
        .get(RADIUS_CLIENT_DETAIL)
        .and_then(|client| client.as_str())
    {
        Some(client) => log::log!(
            target: "tapd::audit",
            level,
            channel = channel,
            reason_code = reason,
            tapd_user = target,
            source_address = source,
            radius_client = client;
            "audit: {} by {} on {}: {} ({}) via {} client {} from {}",
            event.activity,
            event.actor,
            target,
            result,
            reason,
            channel,
            client,
            source
        ),
        None => log::log!(
            target: "tapd::audit",
            level,
            channel = channel,
            reason_code = reason,
            tapd_user = target,
            source_address = source;
            "audit: {} by {} on {}: {} ({}) via {} from {}",
            event.activity,
            event.actor,
            target,
            result,
            reason,
            channel,
            source
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use log::kv::{Key, Value, VisitSource};
    use serde_json::json;

    use super::*;
    use crate::model::Channel;

    /// Captures the key-values of audit records whose message contains a marker.
    struct Capture(Mutex<Vec<(String, BTreeMap<String, String>)>>);

    struct Keys<'a>(&'a mut BTreeMap<String, String>);

    impl<'kvs> VisitSource<'kvs> for Keys<'_> {
        fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
            self.0.insert(key.to_string(), value.to_string());
            Ok(())
        }
    }

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, record: &log::Record) {
            let message = record.args().to_string();
            if record.target() == "tapd::audit" && message.contains("audit-field-test") {
                let mut keys = BTreeMap::new();
                record.key_values().visit(&mut Keys(&mut keys)).unwrap();
                self.0.lock().unwrap().push((message, keys));
            }
        }
        fn flush(&self) {}
    }

    static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

    fn event(channel: Channel, details: serde_json::Value) -> NewAuditEvent {
        NewAuditEvent {
            time: "2026-12-06T09:00:00Z".parse().unwrap(),
            actor: "vpn".into(),
            activity: "audit-field-test sign-in".into(),
            target: Some("alice@example.org".into()),
            result: AuditResult::Failure,
            reason_code: Some("tap_not_supported_radius".into()),
            channel,
            source_address: Some("127.0.0.1:40000".into()),
            details,
        }
    }

    /// Journal field names, as systemd-journal-logger derives them from the keys (it
    /// upper-cases each key; see its `JournalLog` docs).
    fn journal_fields(keys: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        keys.iter()
            .map(|(k, v)| (k.to_ascii_uppercase(), v.clone()))
            .collect()
    }

    #[test]
    fn audit_lines_carry_the_journal_fields() {
        // The only test in this crate that installs a logger.
        let _ = log::set_logger(&CAPTURE);
        log::set_max_level(log::LevelFilter::Trace);
        log(&event(
            Channel::Radius,
            json!({ RADIUS_CLIENT_DETAIL: "vpn" }),
        ));
        log(&event(Channel::Web, json!({})));
        let captured = CAPTURE.0.lock().unwrap().clone();
        assert_eq!(captured.len(), 2, "{captured:?}");

        let radius = journal_fields(&captured[0].1);
        assert_eq!(radius["REASON_CODE"], "tap_not_supported_radius");
        assert_eq!(radius["CHANNEL"], "radius");
        assert_eq!(radius["TAPD_USER"], "alice@example.org");
        assert_eq!(radius["SOURCE_ADDRESS"], "127.0.0.1:40000");
        assert_eq!(radius["RADIUS_CLIENT"], "vpn");
        assert!(captured[0].0.contains("client vpn"));

        let web = journal_fields(&captured[1].1);
        assert_eq!(web["CHANNEL"], "web");
        assert!(!web.contains_key("RADIUS_CLIENT"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writer_stores_every_event_before_answering() {
        let store: Arc<dyn Store> = Arc::new(
            crate::store::sqlite::SqliteStore::open_in_memory()
                .await
                .unwrap(),
        );
        let writer = Arc::new(AuditWriter::new(store.clone()));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..300 {
            let writer = writer.clone();
            let store = store.clone();
            tasks.spawn(async move {
                let mut e = event(Channel::Radius, json!({}));
                e.actor = format!("writer-test-{i}");
                writer.record(e).await.unwrap();
                // Answered means committed: the event is already readable.
                let found = store
                    .audit(&crate::model::AuditFilter {
                        limit: 1000,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                assert!(found
                    .iter()
                    .any(|f| f.event.actor == format!("writer-test-{i}")));
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        let all = store
            .audit(&crate::model::AuditFilter {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 300);
    }
}
