//! Liveness of the daemon's long-running loops (admin API, metrics, directory sync, and the
//! RADIUS and web servers as they land), for systemd's watchdog and `/readyz`.
//!
//! Each loop is spawned through [`Heartbeats::supervise`], which polls the loop's future
//! together with a ticker in the same task and records a heartbeat on every tick. A heartbeat
//! older than the stale limit means that task is no longer being polled: it has ended, or it
//! is stuck blocking its worker thread. The daemon's main loop sends `WATCHDOG=1` only while
//! no loop is stale (and it leaves its select loop, and so stops pinging, as soon as any loop
//! ends), so a wedged daemon is restarted by systemd instead of silently serving nothing.
//!
//! May depend on: nothing in this crate.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Heartbeat period when systemd's watchdog is off (only `/readyz` looks then).
const DEFAULT_PERIOD: Duration = Duration::from_secs(1);

/// Shortest heartbeat period, however short the watchdog interval.
const MIN_PERIOD: Duration = Duration::from_millis(50);

/// One supervised loop.
#[derive(Debug)]
struct Beat {
    name: String,
    /// Milliseconds since `Heartbeats::origin` at the last tick.
    last_ms: AtomicU64,
}

/// The registry of supervised loops.
#[derive(Debug)]
pub struct Heartbeats {
    origin: Instant,
    period: Duration,
    stale_after: Duration,
    loops: Mutex<Vec<Arc<Beat>>>,
}

impl Heartbeats {
    /// Loops beat every `period` and count as stale after `stale_after` without a beat.
    pub fn new(period: Duration, stale_after: Duration) -> Arc<Self> {
        Arc::new(Heartbeats {
            origin: Instant::now(),
            period: period.max(MIN_PERIOD),
            stale_after: stale_after.max(period * 2),
            loops: Mutex::new(Vec::new()),
        })
    }

    /// Settings that fit systemd's watchdog interval (`WATCHDOG_USEC`): the main loop pings
    /// every half interval, so a loop is stale after half an interval and beats eight times
    /// in it. Without a watchdog: a beat a second, stale after five.
    pub fn for_watchdog(interval: Option<Duration>) -> Arc<Self> {
        match interval {
            Some(interval) => Self::new(interval / 8, interval / 2),
            None => Self::new(DEFAULT_PERIOD, DEFAULT_PERIOD * 5),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Registers a loop named `name` and returns `work` wrapped so that it beats while it
    /// is being polled. Spawn the returned future; it ends when `work` ends.
    pub fn supervise<F>(
        self: &Arc<Self>,
        name: &str,
        work: F,
    ) -> impl Future<Output = F::Output> + Send + 'static
    where
        F: Future + Send + 'static,
        F::Output: Send,
    {
        let beat = Arc::new(Beat {
            name: name.to_owned(),
            last_ms: AtomicU64::new(self.now_ms()),
        });
        self.loops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(beat.clone());
        let heartbeats = self.clone();
        async move {
            let mut work = std::pin::pin!(work);
            let mut ticker = tokio::time::interval(heartbeats.period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    output = &mut work => return output,
                    _ = ticker.tick() => beat.last_ms.store(heartbeats.now_ms(), Ordering::Relaxed),
                }
            }
        }
    }

    /// Names of the loops without a recent heartbeat (empty: all alive).
    pub fn stale(&self) -> Vec<String> {
        let now = self.now_ms();
        let limit = u64::try_from(self.stale_after.as_millis()).unwrap_or(u64::MAX);
        self.loops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|beat| now.saturating_sub(beat.last_ms.load(Ordering::Relaxed)) > limit)
            .map(|beat| beat.name.clone())
            .collect()
    }

    /// Names of every supervised loop.
    pub fn names(&self) -> Vec<String> {
        self.loops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|beat| beat.name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_running_loop_stays_fresh_and_an_ended_one_goes_stale() {
        let heartbeats = Heartbeats::new(Duration::from_millis(100), Duration::from_millis(500));
        let running = tokio::spawn(heartbeats.supervise("forever", std::future::pending::<()>()));
        let ended = tokio::spawn(heartbeats.supervise("short", async {}));
        ended.await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(heartbeats.stale(), vec!["short".to_owned()]);
        assert_eq!(
            heartbeats.names(),
            vec!["forever".to_owned(), "short".to_owned()]
        );
        running.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_task_goes_stale() {
        let heartbeats = Heartbeats::new(Duration::from_millis(100), Duration::from_millis(500));
        // A future that never yields back to the ticker is modelled by never polling it:
        // registering without spawning leaves the beat at its registration time.
        let _never_polled = heartbeats.supervise("blocked", std::future::pending::<()>());
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(heartbeats.stale(), vec!["blocked".to_owned()]);
    }
}
