//! What the RADIUS server counts (RFC 2865 §1.2: a silently discarded packet "SHOULD
//! [be recorded] in a statistics counter"): lock-free atomics the handler and the socket
//! loop bump, and a plain [`CountersSnapshot`] for whoever exports them (metrics, logs,
//! tests).

use std::sync::atomic::{AtomicU64, Ordering};

use super::request::DropReason;

/// The RADIUS server's counters. All monotonic; read them with [`RadiusCounters::snapshot`].
#[derive(Debug, Default)]
pub struct RadiusCounters {
    /// Datagrams received on any listener.
    pub received: AtomicU64,
    /// Datagrams from a source address no client covers (dropped silently).
    pub unknown_client: AtomicU64,
    /// Datagrams dropped because the bounded worker pool was full.
    pub dropped_overload: AtomicU64,
    /// Datagrams dropped by validation, indexed like [`DropReason::ALL`].
    dropped: [AtomicU64; DropReason::ALL.len()],
    /// Retransmissions answered from the reply cache (byte-identical reply).
    pub duplicates_replayed: AtomicU64,
    /// Retransmissions of a request still being processed (dropped).
    pub duplicates_in_flight: AtomicU64,
    /// Status-Server requests answered.
    pub status_server: AtomicU64,
    /// Status-Server requests dropped by the per-client rate limit.
    pub status_server_rate_limited: AtomicU64,
    /// Access-Accepts sent (not counting cache replays).
    pub access_accept: AtomicU64,
    /// Access-Rejects sent (not counting cache replays), all reasons.
    pub access_reject: AtomicU64,
    /// Of those, rejections of a TAP.
    pub tap_rejected: AtomicU64,
    /// Of those, rejections of CHAP, MS-CHAP, EAP or a request without credential.
    pub unsupported_method: AtomicU64,
    /// Requests left unanswered because the directory (or store) was unavailable.
    pub unavailable_dropped: AtomicU64,
    /// Requests rejected because the directory was unavailable (`directory_unavailable =
    /// "reject"`).
    pub unavailable_rejected: AtomicU64,
    /// Replies that could not be encoded (a bug or an oversized attribute set).
    pub encode_errors: AtomicU64,
    /// Replies the socket refused to send.
    pub send_errors: AtomicU64,
}

/// A point-in-time copy of [`RadiusCounters`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// See [`RadiusCounters::received`].
    pub received: u64,
    /// See [`RadiusCounters::unknown_client`].
    pub unknown_client: u64,
    /// See [`RadiusCounters::dropped_overload`].
    pub dropped_overload: u64,
    /// Validation drops by reason label ([`DropReason::as_str`]), every reason listed.
    pub dropped: Vec<(&'static str, u64)>,
    /// See [`RadiusCounters::duplicates_replayed`].
    pub duplicates_replayed: u64,
    /// See [`RadiusCounters::duplicates_in_flight`].
    pub duplicates_in_flight: u64,
    /// See [`RadiusCounters::status_server`].
    pub status_server: u64,
    /// See [`RadiusCounters::status_server_rate_limited`].
    pub status_server_rate_limited: u64,
    /// See [`RadiusCounters::access_accept`].
    pub access_accept: u64,
    /// See [`RadiusCounters::access_reject`].
    pub access_reject: u64,
    /// See [`RadiusCounters::tap_rejected`].
    pub tap_rejected: u64,
    /// See [`RadiusCounters::unsupported_method`].
    pub unsupported_method: u64,
    /// See [`RadiusCounters::unavailable_dropped`].
    pub unavailable_dropped: u64,
    /// See [`RadiusCounters::unavailable_rejected`].
    pub unavailable_rejected: u64,
    /// See [`RadiusCounters::encode_errors`].
    pub encode_errors: u64,
    /// See [`RadiusCounters::send_errors`].
    pub send_errors: u64,
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl RadiusCounters {
    /// Counts a validation drop.
    pub fn count_drop(&self, reason: DropReason) {
        if let Some(index) = DropReason::ALL.iter().position(|r| *r == reason) {
            bump(&self.dropped[index]);
        }
    }

    /// Validation drops for one reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |index| read(&self.dropped[index]))
    }

    /// Copies every counter.
    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            received: read(&self.received),
            unknown_client: read(&self.unknown_client),
            dropped_overload: read(&self.dropped_overload),
            dropped: DropReason::ALL
                .iter()
                .zip(&self.dropped)
                .map(|(reason, count)| (reason.as_str(), read(count)))
                .collect(),
            duplicates_replayed: read(&self.duplicates_replayed),
            duplicates_in_flight: read(&self.duplicates_in_flight),
            status_server: read(&self.status_server),
            status_server_rate_limited: read(&self.status_server_rate_limited),
            access_accept: read(&self.access_accept),
            access_reject: read(&self.access_reject),
            tap_rejected: read(&self.tap_rejected),
            unsupported_method: read(&self.unsupported_method),
            unavailable_dropped: read(&self.unavailable_dropped),
            unavailable_rejected: read(&self.unavailable_rejected),
            encode_errors: read(&self.encode_errors),
            send_errors: read(&self.send_errors),
        }
    }
}
