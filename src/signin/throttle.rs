//! Guessing resistance, both kinds: the credential path's [`FailureThrottle`] (failures per
//! user and source in a window, then a cooldown; the module doc of [`super::credential`]
//! says why), and, below, the sign-in page's [`Throttle`]: consecutive failures per
//! (account, source) and per source address, growing delays, then lockouts that grow each
//! time. Both audit refusals through one [`AuditAggregator`].
//!
//! Lockout that spares the victim (Entra smart lockout: the attacker's location is locked, not
//! the familiar one): failures are counted per (account, source address), IPv6 addresses
//! collapsed to their /64 ([`source_key`]), so a flood of wrong TAPs or passwords for erin from
//! one address locks erin *from that address* only; erin's correct TAP from her own address
//! keeps working. The limit: an attacker who controls many addresses gets the allowance once
//! per address (the per-address lockout bounds what each one can sweep, and argon2 bounds the
//! rate); an attacker can never lock the victim's own address without sending from it.
//!
//! Passkeys are counted apart ([`Throttle::check_passkey`]): a failed password, TAP or app
//! code never locks a passkey sign-in, and failed assertions lock only passkey sign-ins from
//! their source.
//!
//! Per (account, source): the first [`ThrottleSettings::free_failures`] failures cost nothing; each further
//! one makes the account wait 1 s, 2 s, 4 s … (at most [`ThrottleSettings::max_delay`]) before
//! the next attempt; the [`ThrottleSettings::lockout_threshold`]-th failure in a row locks it
//! for [`ThrottleSettings::lockout`], and every failure after that locks it again for twice as
//! long as the time before, up to [`ThrottleSettings::max_lockout`] (Entra's smart lockout:
//! threshold 10, 60 s, "If an account locks repeatedly, this duration increases"). A success
//! resets the account. Names are counted whether or not the account exists, so the throttle
//! tells nothing about which accounts do.
//!
//! Per address: only lockouts, at a higher threshold, so many users behind one NAT are not
//! slowed by one person's typos while one address can't sweep many accounts.
//!
//! Refused attempts are audited at most once per throttle key per minute, with a count
//! ([`Throttle::note_refusal`], [`crate::signin::AuditAggregator`]).
//!
//! Attempts are refused *before* any hashing, so a locked-out flood costs no argon2 time. The
//! state is in memory, per node, bounded in size; time is a parameter.
//!
//! May depend on: `model` (timestamps) and the credential path's settings only.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;

use chrono::Duration;

use super::credential::{chrono_duration, SignInSettings, REJECTION_CACHE_ENTRIES};
use crate::model::Timestamp;

pub use crate::http_listener::source_key;

/// How the throttle counts and waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Failures in a row an account may have without any wait.
    pub free_failures: u32,
    /// The failure in a row that locks the account.
    pub lockout_threshold: u32,
    /// The first lockout.
    pub lockout: Duration,
    /// The longest lockout (and the longest address lockout).
    pub max_lockout: Duration,
    /// The longest wait before the lockout threshold.
    pub max_delay: Duration,
    /// Failures in a row from one address that lock the address.
    pub address_lockout_threshold: u32,
    /// Entries idle this long are forgotten.
    pub forget_after: Duration,
    /// At most this many accounts and this many addresses are tracked.
    pub max_entries: usize,
}

impl Default for ThrottleSettings {
    /// 3 free failures, then 1 s, 2 s, 4 s … up to 8 s; the 10th failure locks for 60 s, doubling
    /// up to an hour; an address locks after 50 failures; entries forgotten after a day idle.
    fn default() -> Self {
        ThrottleSettings {
            free_failures: 3,
            lockout_threshold: 10,
            lockout: Duration::seconds(60),
            max_lockout: Duration::hours(1),
            max_delay: Duration::seconds(8),
            address_lockout_threshold: 50,
            forget_after: Duration::hours(24),
            max_entries: 100_000,
        }
    }
}

/// An attempt refused because of earlier failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("too many failed sign-in attempts; try again in {} seconds", .retry_after.num_seconds().max(1))]
pub struct Throttled {
    /// How long until the next attempt is allowed.
    pub retry_after: Duration,
    /// Whether it is a lockout (threshold reached), not just a growing delay.
    pub locked_out: bool,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    failures: u32,
    blocked_until: Option<Timestamp>,
    locked: bool,
    last_lockout: Option<Duration>,
    last_seen: Timestamp,
}

impl Entry {
    fn new(now: Timestamp) -> Self {
        Entry {
            failures: 0,
            blocked_until: None,
            locked: false,
            last_lockout: None,
            last_seen: now,
        }
    }
}

/// A bounded map of counters.
#[derive(Debug)]
struct Counters<K> {
    entries: Mutex<HashMap<K, Entry>>,
}

impl<K: Eq + Hash + Clone> Counters<K> {
    fn new() -> Self {
        Counters {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn check(&self, key: &K, now: Timestamp) -> Result<(), Throttled> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries
            .get(key)
            .and_then(|e| e.blocked_until.map(|b| (b, e.locked)))
        {
            Some((until, locked)) if now < until => Err(Throttled {
                retry_after: until - now,
                locked_out: locked,
            }),
            _ => Ok(()),
        }
    }

    /// Records a failure; `schedule` turns the entry (with its failure count already raised)
    /// into the wait before the next attempt and whether it is a lockout.
    fn fail(
        &self,
        key: &K,
        now: Timestamp,
        settings: &ThrottleSettings,
        schedule: impl Fn(&Entry) -> Option<(Duration, bool)>,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if !entries.contains_key(key) && entries.len() >= settings.max_entries {
            let forget_before = now - settings.forget_after;
            entries.retain(|_, e| {
                e.last_seen > forget_before || e.blocked_until.is_some_and(|b| b > now)
            });
            if entries.len() >= settings.max_entries {
                // Still full of live entries: drop the ones that are not blocked right now
                // rather than grow without bound.
                entries.retain(|_, e| e.blocked_until.is_some_and(|b| b > now));
            }
        }
        let entry = entries
            .entry(key.clone())
            .or_insert_with(|| Entry::new(now));
        if now - entry.last_seen > settings.forget_after {
            *entry = Entry::new(now);
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last_seen = now;
        if let Some((wait, locked)) = schedule(entry) {
            entry.blocked_until = Some(now + wait);
            entry.locked = locked;
            if locked {
                entry.last_lockout = Some(wait);
            }
        }
    }

    fn succeed(&self, key: &K) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// The next lockout: the first one, then double the previous, capped.
fn next_lockout(entry: &Entry, settings: &ThrottleSettings) -> Duration {
    match entry.last_lockout {
        None => settings.lockout,
        Some(previous) => (previous * 2).min(settings.max_lockout),
    }
}

/// Failure counters per (account, source), per source address, and per source for passkeys.
#[derive(Debug)]
pub struct Throttle {
    settings: ThrottleSettings,
    accounts: Counters<(String, IpAddr)>,
    addresses: Counters<IpAddr>,
    passkeys: Counters<IpAddr>,
    refusals: AuditAggregator,
}

impl Throttle {
    /// An empty throttle.
    pub fn new(settings: ThrottleSettings) -> Self {
        Throttle {
            settings,
            accounts: Counters::new(),
            addresses: Counters::new(),
            passkeys: Counters::new(),
            refusals: AuditAggregator::default(),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &ThrottleSettings {
        &self.settings
    }

    /// The key an account name is counted under: trimmed and lower-cased, so `Alice` and
    /// `alice ` share one counter.
    pub fn account_key(name: &str) -> String {
        name.trim().to_lowercase()
    }

    fn pair(account: &str, address: IpAddr) -> (String, IpAddr) {
        (Self::account_key(account), source_key(address))
    }

    /// Whether an attempt for `account` from `address` may be made at `now`; the longer wait
    /// wins when both are blocked.
    pub fn check(&self, account: &str, address: IpAddr, now: Timestamp) -> Result<(), Throttled> {
        self.check_keyed(account, address, now).map_err(|(t, _)| t)
    }

    /// [`Throttle::check`], and when refused, the key the refusal is counted under for audit
    /// aggregation: the address when the address is locked (a flood over many names from one
    /// address is one key), else the (account, source) pair.
    pub fn check_keyed(
        &self,
        account: &str,
        address: IpAddr,
        now: Timestamp,
    ) -> Result<(), (Throttled, String)> {
        let (name, source) = Self::pair(account, address);
        let by_address = self.addresses.check(&source, now);
        if let Err(t) = by_address {
            let by_account = self.accounts.check(&(name, source), now);
            let longer = match by_account {
                Err(a) if a.retry_after > t.retry_after => a,
                _ => t,
            };
            return Err((longer, format!("address:{source}")));
        }
        self.accounts
            .check(&(name.clone(), source), now)
            .map_err(|t| (t, format!("account:{name}\u{0}{source}")))
    }

    /// Notes a refused attempt under `key` (from [`Throttle::check_keyed`]): `Some(n)` when its
    /// audit event is due, standing for `n` attempts, `None` when it is folded into a later one.
    pub fn note_refusal(&self, key: &str, now: Timestamp) -> Option<u64> {
        self.refusals.note(key, now)
    }

    /// Whether a passkey sign-in from `address` may be made: only failed passkey assertions
    /// from that source count, never password, TAP or app-code failures.
    pub fn check_passkey(&self, address: IpAddr, now: Timestamp) -> Result<(), Throttled> {
        self.passkeys.check(&source_key(address), now)
    }

    /// Records a failed passkey assertion (or an unknown passkey) from `address`.
    pub fn record_passkey_failure(&self, address: IpAddr, now: Timestamp) {
        let s = &self.settings;
        self.passkeys.fail(&source_key(address), now, s, |entry| {
            (entry.failures >= s.address_lockout_threshold).then(|| (next_lockout(entry, s), true))
        });
    }

    /// Records a failed attempt that named no known account.
    pub fn record_address_failure(&self, address: IpAddr, now: Timestamp) {
        let s = &self.settings;
        self.addresses.fail(&source_key(address), now, s, |entry| {
            (entry.failures >= s.address_lockout_threshold).then(|| (next_lockout(entry, s), true))
        });
    }

    /// Records a failed attempt (a credential that did not verify).
    pub fn record_failure(&self, account: &str, address: IpAddr, now: Timestamp) {
        let s = &self.settings;
        self.accounts
            .fail(&Self::pair(account, address), now, s, |entry| {
                if entry.failures >= s.lockout_threshold {
                    Some((next_lockout(entry, s), true))
                } else if entry.failures > s.free_failures {
                    let exponent = (entry.failures - s.free_failures - 1).min(20);
                    let delay = Duration::seconds(1i64 << exponent).min(s.max_delay);
                    Some((delay, false))
                } else {
                    None
                }
            });
        self.record_address_failure(address, now);
    }

    /// Records a successful sign-in: the (account, source) counter starts again. The address
    /// keeps its count (a success on one's own account must not reset a sweep over others).
    pub fn record_success(&self, account: &str, address: IpAddr) {
        self.accounts.succeed(&Self::pair(account, address));
    }

    /// (Account, source) pairs and addresses currently tracked.
    pub fn tracked(&self) -> (usize, usize) {
        (self.accounts.len(), self.addresses.len())
    }

    /// Keys currently remembered for audit aggregation.
    pub fn refusal_keys(&self) -> usize {
        self.refusals.len()
    }
}

// ---- the credential path's throttle and the refusal audit aggregation ----

pub const REFUSAL_AUDIT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Most keys an [`AuditAggregator`] remembers; the oldest go first.
pub(super) const AGGREGATOR_ENTRIES: usize = 10_000;

/// Aggregates the audit events of refused attempts: for one key (a throttle key), at most one
/// event per [`REFUSAL_AUDIT_INTERVAL`]; the event carries the number of attempts it stands
/// for (itself and those refused silently since the key's previous event). A flood against a
/// locked key therefore writes one row a minute, whatever its rate. Attempts refused after the
/// last event of a flood are counted into the key's next event, if one comes; the journal
/// still gets no line per attempt either. Memory is bounded ([`AGGREGATOR_ENTRIES`]).
/// Pure: `now` is a parameter.
#[derive(Debug, Default)]
pub struct AuditAggregator {
    keys: Mutex<HashMap<String, (Timestamp, u64)>>,
}

impl AuditAggregator {
    /// Notes a refused attempt for `key` at `now`: `Some(n)` when an audit event is due, for
    /// `n` attempts; `None` when this one is folded into a later event.
    pub fn note(&self, key: &str, now: Timestamp) -> Option<u64> {
        let interval = chrono_duration(REFUSAL_AUDIT_INTERVAL);
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((last, silent)) = keys.get_mut(key) {
            if now - *last < interval {
                *silent += 1;
                return None;
            }
            let attempts = *silent + 1;
            *last = now;
            *silent = 0;
            return Some(attempts);
        }
        if keys.len() >= AGGREGATOR_ENTRIES {
            keys.retain(|_, (last, _)| now - *last < interval);
            while keys.len() >= AGGREGATOR_ENTRIES {
                let oldest = keys
                    .iter()
                    .min_by_key(|(_, (last, _))| *last)
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(oldest) => keys.remove(&oldest),
                    None => break,
                };
            }
        }
        keys.insert(key.to_owned(), (now, 0));
        Some(1)
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Recent failures per (user id, source), and who is cooling down. Pure: `now` is a
/// parameter. At most [`REJECTION_CACHE_ENTRIES`] keys: when full, expired keys go first, then
/// keys not cooling down, then the oldest, so rotating sources cannot grow memory.
#[derive(Debug, Default)]
pub(super) struct FailureThrottle {
    users: HashMap<(String, String), FailureRecord>,
}

#[derive(Debug, Default)]
struct FailureRecord {
    failures: VecDeque<Timestamp>,
    blocked_until: Option<Timestamp>,
    last_seen: Option<Timestamp>,
}

/// The key failures are counted under: the user and where the attempts come from.
type ThrottleKey = (String, String);

impl FailureThrottle {
    /// Whether `key` is cooling down at `now`.
    pub(super) fn is_blocked(&mut self, key: &ThrottleKey, now: Timestamp) -> bool {
        let Some(record) = self.users.get_mut(key) else {
            return false;
        };
        match record.blocked_until {
            Some(until) if now < until => true,
            Some(_) => {
                self.users.remove(key);
                false
            }
            None => false,
        }
    }

    pub(super) fn make_room(&mut self, now: Timestamp, window: chrono::Duration) {
        if self.users.len() < REJECTION_CACHE_ENTRIES {
            return;
        }
        self.users.retain(|_, record| {
            record.blocked_until.is_some_and(|until| now < until)
                || record
                    .failures
                    .back()
                    .is_some_and(|last| now - *last < window)
        });
        if self.users.len() >= REJECTION_CACHE_ENTRIES {
            self.users
                .retain(|_, record| record.blocked_until.is_some_and(|until| now < until));
        }
        while self.users.len() >= REJECTION_CACHE_ENTRIES {
            let oldest = self
                .users
                .iter()
                .min_by_key(|(_, record)| record.last_seen)
                .map(|(key, _)| key.clone());
            match oldest {
                Some(oldest) => self.users.remove(&oldest),
                None => break,
            };
        }
    }

    /// Counts a failure; returns true when it started a cool-down.
    pub(super) fn record_failure(
        &mut self,
        key: &ThrottleKey,
        now: Timestamp,
        settings: &SignInSettings,
    ) -> bool {
        let window = chrono_duration(settings.failure_window);
        if !self.users.contains_key(key) {
            self.make_room(now, window);
        }
        let record = self.users.entry(key.clone()).or_default();
        record.last_seen = Some(now);
        while record
            .failures
            .front()
            .is_some_and(|first| now - *first >= window)
        {
            record.failures.pop_front();
        }
        record.failures.push_back(now);
        if record.failures.len() >= settings.max_failures as usize {
            record.failures.clear();
            record.blocked_until = Some(now + chrono_duration(settings.cooldown));
            return true;
        }
        false
    }

    /// Forgets the key's failures after a success.
    pub(super) fn record_success(&mut self, key: &ThrottleKey) {
        self.users.remove(key);
    }

    pub(super) fn len(&self) -> usize {
        self.users.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn t0() -> Timestamp {
        "2026-11-27T09:00:00Z".parse().unwrap()
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn delays_grow_then_the_tenth_failure_locks_for_sixty_seconds() {
        let throttle = Throttle::new(ThrottleSettings::default());
        let mut now = t0();
        let mut waits = Vec::new();
        for _ in 0..10 {
            throttle.check("Alice", ip(1), now).unwrap();
            throttle.record_failure("alice", ip(1), now);
            match throttle.check("ALICE ", ip(1), now) {
                Ok(()) => waits.push(0),
                Err(t) => {
                    waits.push(t.retry_after.num_seconds());
                    now += t.retry_after;
                }
            }
        }
        assert_eq!(waits, [0, 0, 0, 1, 2, 4, 8, 8, 8, 60]);
        // The 11th attempt, 59 s into the lockout, is refused; at 60 s it is allowed.
        let locked = throttle.check("alice", ip(1), now - Duration::seconds(1));
        assert!(locked.unwrap_err().locked_out);
        throttle.check("alice", ip(1), now).unwrap();
        // Each further failure locks again, twice as long.
        throttle.record_failure("alice", ip(1), now);
        let again = throttle.check("alice", ip(1), now).unwrap_err();
        assert_eq!(again.retry_after, Duration::seconds(120));
        // A success resets the account.
        throttle.record_success("Alice", ip(1));
        throttle.check("alice", ip(1), now).unwrap();
    }

    #[test]
    fn lockouts_are_capped() {
        let settings = ThrottleSettings::default();
        let throttle = Throttle::new(settings.clone());
        let mut now = t0();
        let mut last = Duration::zero();
        for _ in 0..30 {
            throttle.record_failure("bob", ip(2), now);
            if let Err(t) = throttle.check("bob", ip(2), now) {
                last = t.retry_after;
                now += t.retry_after;
            }
        }
        assert_eq!(last, settings.max_lockout);
    }

    #[test]
    fn unknown_and_known_names_are_counted_alike_and_addresses_lock_at_their_threshold() {
        let throttle = Throttle::new(ThrottleSettings::default());
        let now = t0();
        // 49 failures over many names from one address: the address is not locked yet.
        for i in 0..49 {
            throttle.record_failure(&format!("user{i}"), ip(3), now);
        }
        throttle.check("someone-else", ip(3), now).unwrap();
        throttle.record_failure("user49", ip(3), now);
        let refused = throttle.check("someone-else", ip(3), now).unwrap_err();
        assert!(refused.locked_out);
        assert_eq!(refused.retry_after, Duration::seconds(60));
        // Another address is unaffected.
        throttle.check("someone-else", ip(4), now).unwrap();
    }

    #[test]
    fn memory_stays_bounded() {
        let throttle = Throttle::new(ThrottleSettings {
            max_entries: 100,
            ..ThrottleSettings::default()
        });
        let now = t0();
        for i in 0..1000 {
            throttle.record_failure(
                &format!("u{i}"),
                IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]),
                now,
            );
        }
        let (accounts, addresses) = throttle.tracked();
        assert!(
            accounts <= 100 && addresses <= 100,
            "{accounts} {addresses}"
        );
    }

    #[test]
    fn an_account_locked_from_one_source_still_signs_in_from_another() {
        let throttle = Throttle::new(ThrottleSettings::default());
        let mut now = t0();
        for _ in 0..10 {
            throttle.record_failure("erin", ip(1), now);
            if let Err(t) = throttle.check("erin", ip(1), now) {
                now += t.retry_after - Duration::seconds(1);
                if t.locked_out {
                    break;
                }
                now += Duration::seconds(1);
            }
        }
        assert!(throttle.check("erin", ip(1), now).unwrap_err().locked_out);
        throttle.check("erin", ip(2), now).unwrap();
        // Passkeys are never locked by password or TAP failures, not even from ip(1).
        throttle.check_passkey(ip(1), now).unwrap();
        // IPv6: one /64 is one source; the next /64 is another.
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        for _ in 0..10 {
            throttle.record_failure("frank", a, now);
        }
        assert!(throttle.check("frank", b, now).is_err());
        throttle.check("frank", c, now).unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(source_key(mapped), ip(1));
    }

    #[test]
    fn failed_passkey_assertions_lock_only_passkeys_from_their_source() {
        let settings = ThrottleSettings::default();
        let throttle = Throttle::new(settings.clone());
        let now = t0();
        for _ in 0..settings.address_lockout_threshold {
            throttle.record_passkey_failure(ip(5), now);
        }
        assert!(throttle.check_passkey(ip(5), now).is_err());
        throttle.check_passkey(ip(6), now).unwrap();
        throttle.check("erin", ip(5), now).unwrap();
    }

    #[test]
    fn refusals_from_a_locked_address_share_one_audit_key() {
        let throttle = Throttle::new(ThrottleSettings::default());
        let now = t0();
        for i in 0..50 {
            throttle.record_failure(&format!("user{i}"), ip(7), now);
        }
        let (_, a) = throttle.check_keyed("x", ip(7), now).unwrap_err();
        let (_, b) = throttle.check_keyed("y", ip(7), now).unwrap_err();
        assert_eq!(a, b);
        assert_eq!(throttle.note_refusal(&a, now), Some(1));
        assert_eq!(throttle.note_refusal(&b, now), None);
    }
}
