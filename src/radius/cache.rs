//! The RFC 5080 §2.2.2 duplicate-detection and reply cache, without I/O or a clock:
//! `now` is a parameter. A retransmission of an answered request gets the byte-identical
//! cached reply without being processed again; a retransmission of a request still being
//! processed is dropped; a valid request with the same source, receiving socket and
//! Identifier but a new Request Authenticator purges the old entry.
//!
//! Only validated requests may touch the cache ("Packets with invalid
//! Message-Authenticators MUST NOT affect the cache in any way"), so call it after
//! [`parse_request`](super::parse_request) succeeded.
//!
//! Not synchronised: the socket loop wraps it in a `Mutex` (every operation is O(1)
//! amortised, so the lock is held briefly) or shards it by source address.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::crypto::DIGEST_LEN;
use super::request::Request;

/// Identifies a request for duplicate detection (RFC 5080 §2.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The local address of the socket the request arrived on.
    pub receiver: SocketAddr,
    /// The client's source address and port.
    pub source: SocketAddr,
    /// The RADIUS Identifier.
    pub identifier: u8,
    /// The Request Authenticator.
    pub authenticator: [u8; DIGEST_LEN],
}

impl CacheKey {
    /// The key of `request`, received on `receiver` from `source`.
    pub fn new(receiver: SocketAddr, source: SocketAddr, request: &Request) -> Self {
        CacheKey {
            receiver,
            source,
            identifier: request.identifier,
            authenticator: request.authenticator,
        }
    }
}

/// Limits of the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyCacheConfig {
    /// How long a sent reply is kept for retransmissions (RFC 5080: 5 to 30 s).
    pub ttl: Duration,
    /// How long a request may stay "in flight" before a retransmission is processed anew
    /// (covers a worker that never called `complete` or `abandon`).
    pub in_flight_timeout: Duration,
    /// Most entries kept; beyond it the oldest answered entry (else the oldest in-flight
    /// one) is evicted.
    pub max_entries: usize,
}

impl Default for ReplyCacheConfig {
    fn default() -> Self {
        ReplyCacheConfig {
            ttl: Duration::from_secs(10),
            in_flight_timeout: Duration::from_secs(30),
            max_entries: 65_536,
        }
    }
}

/// What to do with a validated request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheLookup {
    /// A true duplicate of an answered request: resend these bytes, do nothing else.
    Replay(Vec<u8>),
    /// A duplicate of a request still being processed: drop it silently.
    InFlight,
    /// Not seen (or expired): process it.
    Miss,
}

/// What a slot is keyed by: the source address and port, the receiving socket (as an index
/// into [`ReplyCache::receivers`]) and the Identifier. Packed: at high concurrency the cache
/// holds one slot per (client port, Identifier), 65,536 for 256 clients, and two
/// `SocketAddr`s (32 bytes each) per key and per order record were most of its memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SlotKey {
    /// IPv4 addresses as IPv4-mapped IPv6.
    source_ip: [u8; 16],
    /// IPv6 scope id (link-local sources on different interfaces are different clients).
    source_scope: u32,
    source_port: u16,
    receiver: u16,
    identifier: u8,
}

#[derive(Debug)]
struct Slot {
    authenticator: [u8; DIGEST_LEN],
    generation: u64,
    expires_at: Instant,
    /// The reply sent; `None` while the request is in flight.
    reply: Option<Box<[u8]>>,
}

impl Slot {
    fn is_answered(&self) -> bool {
        self.reply.is_some()
    }
}

/// The reply cache; see the module documentation.
#[derive(Debug)]
pub struct ReplyCache {
    config: ReplyCacheConfig,
    slots: HashMap<SlotKey, Slot>,
    /// In-flight entries in `begin` order (same timeout for all, so also expiry order).
    in_flight_order: VecDeque<(SlotKey, u64)>,
    /// Answered entries in `complete` order (same TTL for all, so also expiry order).
    answered_order: VecDeque<(SlotKey, u64)>,
    next_generation: u64,
    /// The receiving sockets seen, indexed by [`SlotKey::receiver`] (a daemon has a few).
    receivers: Vec<SocketAddr>,
}

impl ReplyCache {
    /// An empty cache. A `max_entries` of 0 is treated as 1.
    pub fn new(config: ReplyCacheConfig) -> Self {
        ReplyCache {
            config: ReplyCacheConfig {
                max_entries: config.max_entries.max(1),
                ..config
            },
            slots: HashMap::new(),
            in_flight_order: VecDeque::new(),
            answered_order: VecDeque::new(),
            next_generation: 0,
            receivers: Vec::new(),
        }
    }

    /// The slot key of `key`; `None` when its receiving socket is new and `register` is
    /// false (nothing can be cached for it yet).
    fn slot_key(&mut self, key: &CacheKey, register: bool) -> Option<SlotKey> {
        let receiver = match self.receivers.iter().position(|r| *r == key.receiver) {
            Some(index) => index,
            None if register && self.receivers.len() <= usize::from(u16::MAX) => {
                self.receivers.push(key.receiver);
                self.receivers.len() - 1
            }
            None => return None,
        };
        let (source_ip, source_scope) = match key.source {
            SocketAddr::V4(v4) => (v4.ip().to_ipv6_mapped().octets(), 0),
            SocketAddr::V6(v6) => (v6.ip().octets(), v6.scope_id()),
        };
        Some(SlotKey {
            source_ip,
            source_scope,
            source_port: key.source.port(),
            receiver: u16::try_from(receiver).ok()?,
            identifier: key.identifier,
        })
    }

    /// Number of live entries (answered or in flight), expired ones possibly included
    /// until the next call that takes `now`.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the cache holds no entries.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Looks `key` up. A cached entry for the same source, socket and Identifier with a
    /// different authenticator is purged (RFC 5080) and the result is `Miss`.
    pub fn lookup(&mut self, key: &CacheKey, now: Instant) -> CacheLookup {
        self.purge_expired(now);
        let Some(slot_key) = self.slot_key(key, false) else {
            return CacheLookup::Miss;
        };
        let Some(slot) = self.slots.get(&slot_key) else {
            return CacheLookup::Miss;
        };
        if slot.authenticator != key.authenticator || slot.expires_at <= now {
            self.slots.remove(&slot_key);
            return CacheLookup::Miss;
        }
        match &slot.reply {
            None => CacheLookup::InFlight,
            Some(reply) => CacheLookup::Replay(reply.to_vec()),
        }
    }

    /// Marks `key` as being processed, replacing any entry for the same source, socket and
    /// Identifier.
    pub fn begin(&mut self, key: &CacheKey, now: Instant) {
        self.purge_expired(now);
        let Some(slot_key) = self.slot_key(key, true) else {
            return;
        };
        if !self.slots.contains_key(&slot_key) {
            while self.slots.len() >= self.config.max_entries {
                if !self.evict_oldest() {
                    break;
                }
            }
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        self.slots.insert(
            slot_key,
            Slot {
                authenticator: key.authenticator,
                generation,
                expires_at: now + self.config.in_flight_timeout,
                reply: None,
            },
        );
        self.in_flight_order.push_back((slot_key, generation));
        self.compact();
    }

    /// [`lookup`](Self::lookup), and on `Miss` also [`begin`](Self::begin): the one call a
    /// socket loop needs before processing a request.
    pub fn admit(&mut self, key: &CacheKey, now: Instant) -> CacheLookup {
        let found = self.lookup(key, now);
        if found == CacheLookup::Miss {
            self.begin(key, now);
        }
        found
    }

    /// Stores the reply sent for `key`, kept for the TTL from `now`. Ignored when the entry
    /// is no longer in flight (expired, evicted, or replaced by a newer request).
    pub fn complete(&mut self, key: &CacheKey, reply: Vec<u8>, now: Instant) {
        let Some(slot_key) = self.slot_key(key, false) else {
            return;
        };
        let Some(slot) = self.slots.get_mut(&slot_key) else {
            return;
        };
        if slot.authenticator != key.authenticator || slot.is_answered() {
            return;
        }
        slot.reply = Some(reply.into_boxed_slice());
        slot.expires_at = now + self.config.ttl;
        self.answered_order.push_back((slot_key, slot.generation));
        self.compact();
    }

    /// Forgets an in-flight `key` that got no reply (e.g. the directory is down), so that a
    /// retransmission is processed again.
    pub fn abandon(&mut self, key: &CacheKey) {
        let Some(slot_key) = self.slot_key(key, false) else {
            return;
        };
        let in_flight = self
            .slots
            .get(&slot_key)
            .is_some_and(|slot| slot.authenticator == key.authenticator && !slot.is_answered());
        if in_flight {
            self.slots.remove(&slot_key);
        }
    }

    /// Removes every entry that expired at `now`.
    pub fn purge_expired(&mut self, now: Instant) {
        Self::purge_queue(&mut self.slots, &mut self.in_flight_order, now, false);
        Self::purge_queue(&mut self.slots, &mut self.answered_order, now, true);
    }

    fn is_live(slots: &HashMap<SlotKey, Slot>, entry: &(SlotKey, u64), answered: bool) -> bool {
        slots
            .get(&entry.0)
            .is_some_and(|slot| slot.generation == entry.1 && slot.is_answered() == answered)
    }

    fn purge_queue(
        slots: &mut HashMap<SlotKey, Slot>,
        queue: &mut VecDeque<(SlotKey, u64)>,
        now: Instant,
        answered: bool,
    ) {
        while let Some(front) = queue.front() {
            if Self::is_live(slots, front, answered) {
                let expired = slots.get(&front.0).is_some_and(|s| s.expires_at <= now);
                if !expired {
                    break;
                }
                slots.remove(&front.0);
            }
            queue.pop_front();
        }
    }

    /// Evicts the oldest answered entry, else the oldest in-flight one; `false` if none.
    fn evict_oldest(&mut self) -> bool {
        for answered in [true, false] {
            let queue = if answered {
                &mut self.answered_order
            } else {
                &mut self.in_flight_order
            };
            while let Some(front) = queue.pop_front() {
                if Self::is_live(&self.slots, &front, answered) {
                    self.slots.remove(&front.0);
                    return true;
                }
            }
        }
        false
    }

    /// Drops stale order records (left by `complete`, `abandon` and replacements) once they
    /// outnumber live entries, keeping memory proportional to the live entries.
    fn compact(&mut self) {
        let limit = 2 * self.slots.len() + 1024;
        if self.in_flight_order.len() > limit {
            let slots = &self.slots;
            self.in_flight_order
                .retain(|entry| Self::is_live(slots, entry, false));
        }
        if self.answered_order.len() > limit {
            let slots = &self.slots;
            self.answered_order
                .retain(|entry| Self::is_live(slots, entry, true));
        }
    }
}
