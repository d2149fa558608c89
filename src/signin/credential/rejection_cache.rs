//! The credential path's memory of recent rejections: a repeated wrong (user, credential)
//! pair is answered from here, without another directory bind or hash, for
//! [`REJECTION_CACHE_TTL`]. Bounded in entries; the credential is never kept, only an HMAC of it
//! under a per-process key (computed by the caller).
//!
//! May depend on: `model`, `signin::outcome`.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use super::super::outcome::RejectReason;
use super::chrono_duration;
use crate::model::Timestamp;

/// How long a rejected (user, credential) pair is remembered.
const REJECTION_CACHE_TTL: Duration = Duration::from_secs(120);

/// Most remembered rejections; the oldest go first.
pub(crate) const REJECTION_CACHE_ENTRIES: usize = 10_000;

/// Recently rejected (user, credential) pairs, keyed by an HMAC with a per-process random
/// key so that the credential itself is never kept. Pure: `now` is a parameter.
#[derive(Debug, Default)]
pub(super) struct RejectionCache {
    entries: HashMap<[u8; 32], (RejectReason, Timestamp)>,
    order: VecDeque<([u8; 32], Timestamp)>,
}

impl RejectionCache {
    pub(super) fn lookup(&mut self, key: &[u8; 32], now: Timestamp) -> Option<RejectReason> {
        self.purge(now);
        self.entries
            .get(key)
            .filter(|(_, expires)| now < *expires)
            .map(|(reason, _)| *reason)
    }

    pub(super) fn insert(&mut self, key: [u8; 32], reason: RejectReason, now: Timestamp) {
        self.purge(now);
        while self.entries.len() >= REJECTION_CACHE_ENTRIES {
            let Some((oldest, _)) = self.order.pop_front() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let expires = now + chrono_duration(REJECTION_CACHE_TTL);
        self.entries.insert(key, (reason, expires));
        self.order.push_back((key, expires));
    }

    fn purge(&mut self, now: Timestamp) {
        while let Some((key, expires)) = self.order.front().copied() {
            if now < expires {
                break;
            }
            self.order.pop_front();
            if self.entries.get(&key).is_some_and(|(_, e)| *e == expires) {
                self.entries.remove(&key);
            }
        }
    }
}
