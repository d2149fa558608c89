//! `[audit] retention`: audit events older than the retention are deleted in small batches by
//! a background task, so the audit table does not grow without bound (issue 15) and pruning
//! never holds the store's write lock for long: each batch is one short transaction of at most
//! [`BATCH`] rows, followed by a [`PAUSE`] before the next while whole batches keep going.
//!
//! May depend on: `store`, `clock`. The daemon spawns [`prune_loop`].

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::logging::ErrorChain;
use crate::model::Timestamp;
use crate::store::{Store, StoreError};

/// Events deleted per transaction.
pub const BATCH: u32 = 1_000;
/// Pause between two full batches, so sign-ins and admin writes get the store in between.
pub const PAUSE: Duration = Duration::from_millis(200);
/// How often the task looks for expired events.
pub const INTERVAL: Duration = Duration::from_secs(3600);

/// Deletes every event older than `retention` at `now`, `batch` rows per transaction with
/// `pause` in between; the number deleted. Stops early (with what was done) when `shutdown`
/// fires.
pub async fn prune_once(
    store: &dyn Store,
    now: Timestamp,
    retention: Duration,
    batch: u32,
    pause: Duration,
    shutdown: &CancellationToken,
) -> Result<u64, StoreError> {
    let Ok(retention) = chrono::Duration::from_std(retention) else {
        return Ok(0);
    };
    let Some(before) = now.checked_sub_signed(retention) else {
        return Ok(0);
    };
    let mut total = 0;
    loop {
        let deleted = store.prune_audit(before, batch).await?;
        total += deleted;
        if deleted < u64::from(batch) || shutdown.is_cancelled() {
            return Ok(total);
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(total),
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Prunes at start and then every [`INTERVAL`] until `shutdown`; a failure is logged and
/// retried at the next interval.
pub async fn prune_loop(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    retention: Duration,
    shutdown: CancellationToken,
) {
    loop {
        match prune_once(&*store, clock.now(), retention, BATCH, PAUSE, &shutdown).await {
            Ok(0) => {}
            Ok(deleted) => log::info!(
                "audit retention: deleted {deleted} event(s) older than {} days",
                retention.as_secs() / 86_400
            ),
            Err(e) => log::warn!(
                "audit retention: pruning failed, retrying later: {}",
                ErrorChain(&e)
            ),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(INTERVAL) => {}
        }
    }
}
