//! The non-web sign-in decision shared by the RADIUS and federation paths: given a user
//! name, a credential and where the attempt came from, accept the directory password, reject
//! a Temporary Access Pass with the documented message (never consuming it), reject anything
//! else, and audit every decision.
//!
//! Order of checks (first match wins):
//! 0. the presented name is checked by [`check_sign_in_name`] (at most 256 bytes, no control
//!    character) → `name_invalid`, before anything else: no store read, no hashing, no
//!    throttle entry, no audit event (only the front end's rejection counter sees it);
//! 1. the user is looked up in the store by username or userPrincipalName (not by id):
//!    unknown → `user_not_found`; disabled → `account_disabled`;
//! 2. an empty or NUL-only credential → `empty_password`, before any directory call (an LDAP
//!    "unauthenticated bind" with an empty password succeeds on many servers);
//! 3. the same credential for the same user was rejected moments ago → the same rejection,
//!    from a short-lived in-memory cache (no bind, no argon2, not counted as a new failure):
//!    a NAS retrying an old password or a TAP costs nothing and can't lock the account;
//! 4. the user is throttled *from this source* (too many failures in the window) →
//!    `throttled`, no bind; throttled attempts are audited at most once per (user, source)
//!    per minute, the event carrying `details.attempts` ([`AuditAggregator`]);
//! 5. `DirectorySource::check_password`: valid → accept, with the user's effective groups;
//!    the directory can't be reached → `Unavailable`; the password bound, but to an entry that
//!    is not this user → `bound_identity_mismatch`, and an incremental sync is requested
//!    (without waiting for it) so that the store learns where the user went;
//! 6. invalid → when the user holds a TAP and the credential has that TAP's length (recorded at
//!    creation) and alphabet, it is verified against the TAP's hash: a match →
//!    `tap_not_supported_radius` / `tap_not_supported_federation` with the DESIGN §2 message;
//!    anything else is `invalid_credentials` without any argon2 work (no decoy: whether a user
//!    holds a TAP is not a secret, the web page prompts for it; `[radius] reject_delay` and
//!    `[federation] reject_delay` even out the answer time). Every verification counts in
//!    `tapd_tap_verifications_total`.
//!    Both count as a failure for throttling (the directory saw a failed bind either way).
//!
//! Metrics: every password check is timed into `tapd_ldap_bind_duration_seconds` (whatever
//! the directory source), and every refused TAP counts in `tapd_tap_rejections_total` under
//! its channel; the front ends count their own requests.
//!
//! Lockout that spares the victim (Entra's smart lockout locks the attacker's location, not
//! the familiar one): failures are counted per (user, source), where the source is the
//! request's Calling-Station-Id when present, else the NAS (NAS-Identifier, then
//! NAS-IP-Address), else the peer address; on the federation path, the peer address. Eight
//! wrong passwords for erin from one station lock erin *from that station*; erin's correct
//! password from her own device keeps working. The limit of this design: Calling-Station-Id
//! is chosen by the NAS's client and can be spoofed, but a spoofed value only selects which
//! key the attempts count under: an attacker can spread guesses over many invented stations
//! (each gets `max_failures` per window, which is why the directory's own lockout stays the
//! backstop and the RADIUS reject delay slows each guess), and can lock only the keys it
//! sends, never the victim's real station unless it also knows and forges exactly that
//! value. The throttle holds at most 10,000 keys (expired first, then unlocked, then oldest
//! evicted), so rotating sources cannot grow memory.
//!
//! Throttling and the rejection cache are per node, in memory: with several nodes a device
//! can make `max_failures` attempts per node per window, and a restart forgets both. That is
//! enough for their purpose, which is to keep a misbehaving device below the directory's own
//! lockout threshold, not to be the lockout itself.
//!
//! May depend on: `model`, `policy` (messages), `store` and `directory` (traits), `tapcode`,
//! `clock`, `audit`, `metrics`, `sync` (to request a sync). Knows nothing about RADIUS packets or HTTP.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use rand::RngCore;
use serde_json::json;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::audit::AuditWriter;
use crate::clock::Clock;
use crate::directory::{password_is_unusable, DirectoryError, DirectorySource, PasswordCheck};
use crate::group_ref::{GroupIndex, SharedGroupIndex};
use crate::metrics::{LdapBindResult, Metrics, TapRejection};
#[cfg(test)]
use crate::model::Channel;
use crate::model::{AuditResult, GroupRef, NewAuditEvent, StoredTap, User};
use crate::policy::{LENGTH_MAX, LENGTH_MIN};
use crate::store::Store;
use crate::sync::Syncer;
use crate::tapcode::{HashError, Hasher};

use super::outcome::{
    AttemptContext, RejectReason, SignInChannel, SignInError, SignInOutcome, UnavailableReason,
};
use super::second_factor::ChallengeStore;
use super::site::method_name;
#[cfg(test)]
use super::throttle::AGGREGATOR_ENTRIES;
use super::throttle::{AuditAggregator, FailureThrottle};
#[cfg(test)]
use super::MAX_NAME_BYTES;
use super::{check_sign_in_name, NameError};

mod rejection_cache;
mod settings;

use rejection_cache::RejectionCache;
pub(super) use rejection_cache::REJECTION_CACHE_ENTRIES;
pub use settings::SignInSettings;

/// The audit activity of every RADIUS and federation sign-in attempt.
pub const SIGN_IN_ACTIVITY: &str = crate::service::activity::SIGN_IN;

/// Longest credential passed to the directory; longer ones are rejected unchecked.
pub const MAX_CREDENTIAL_BYTES: usize = 1024;

/// Longest presented user name recorded in audit as given (longer ones are cut).
const MAX_AUDITED_NAME_CHARS: usize = 128;

/// Quoted in TAP rejections when no `web.public_url` is configured.
/// Repeats of a recently rejected (name, credential) pair decided at once; more are shed
/// (see [`SignIn::authenticate`]). Small: a repeat is answered from the rejection cache, so
/// a handful in flight keep up with any honest device, while a flood of them can't take the
/// server's time from other users' sign-ins.
const MAX_REPEATS_IN_FLIGHT: usize = 4;

/// At most one "shedding" log line per this interval.
const SHED_LOG_INTERVAL: Duration = Duration::from_secs(10);

const UNKNOWN_PUBLIC_URL: &str = "the web registration page";

pub(super) fn chrono_duration(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

/// A credential checked by [`SignIn::check_credential`], before its audit event.
pub(super) struct Checked {
    /// The decision on the credential.
    pub outcome: SignInOutcome,
    /// The user it concerned, when known.
    pub user: Option<User>,
    /// The method the credential turned out to be (password or TAP).
    pub method: &'static str,
    /// What the audit event says beyond the decision.
    pub note: AuditNote,
    /// `false`: a throttled attempt already stood for by an earlier event.
    pub audited: bool,
}

/// What an audit event says beyond the decision.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct AuditNote {
    /// Answered from the rejection cache.
    pub cached: bool,
    /// The throttled attempts this event stands for ([`AuditAggregator`]).
    pub attempts: Option<u64>,
    /// A password leg on a client that wants a second factor: what came of it
    /// (`details.secondFactor`).
    pub second_factor: Option<&'static str>,
}

/// The sign-in decision service; see the module documentation. Cheap to share in an `Arc`.
pub struct SignIn {
    pub(super) store: Arc<dyn Store>,
    directory: Arc<dyn DirectorySource>,
    pub(super) hasher: Hasher,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) metrics: Arc<Metrics>,
    settings: RwLock<SignInSettings>,
    pub(super) throttle: Mutex<FailureThrottle>,
    rejections: Mutex<RejectionCache>,
    cache_key: Zeroizing<[u8; 32]>,
    audit_writer: AuditWriter,
    /// Rejected (presented name, credential) pairs: recognises a repeat before any store read.
    rejected_names: Mutex<RejectionCache>,
    repeats: Arc<tokio::sync::Semaphore>,
    shed_logged: Mutex<Option<Instant>>,
    /// One audit event per throttle key per minute for throttled attempts.
    refusal_audits: AuditAggregator,
    /// Asked for an incremental sync when a bind reached another entry than the user's.
    syncer: Option<Arc<Syncer>>,
    group_index: SharedGroupIndex,
    /// The States of outstanding Access-Challenges ([`super::second_factor`]).
    pub(super) challenges: Mutex<ChallengeStore>,
}

impl SignIn {
    /// Builds the service over the store, directory, hashing pool and clock, recording into
    /// `metrics`.
    pub fn new(
        store: Arc<dyn Store>,
        directory: Arc<dyn DirectorySource>,
        hasher: Hasher,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        settings: SignInSettings,
    ) -> Result<Self, SignInError> {
        settings.check()?;
        let mut cache_key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(cache_key.as_mut());
        Ok(SignIn {
            audit_writer: AuditWriter::new(store.clone()),
            rejected_names: Mutex::new(RejectionCache::default()),
            repeats: Arc::new(tokio::sync::Semaphore::new(MAX_REPEATS_IN_FLIGHT)),
            shed_logged: Mutex::new(None),
            refusal_audits: AuditAggregator::default(),
            group_index: SharedGroupIndex::default(),
            store,
            directory,
            hasher,
            clock,
            metrics,
            settings: RwLock::new(settings),
            throttle: Mutex::new(FailureThrottle::default()),
            rejections: Mutex::new(RejectionCache::default()),
            cache_key,
            syncer: None,
            challenges: Mutex::new(ChallengeStore::default()),
        })
    }

    /// Requests incremental syncs from `syncer` when a password bound to an entry that is not
    /// the user's ([`RejectReason::BoundIdentityMismatch`]).
    pub fn with_syncer(mut self, syncer: Arc<Syncer>) -> Self {
        self.syncer = Some(syncer);
        self
    }

    /// Stores sign-in audit events within `window` of each decision by group commit instead of
    /// before answering (`[audit] sign_in_flush`; zero keeps durable-before-answer). Starts
    /// the writer on the current runtime.
    pub fn with_audit_flush(mut self, window: Duration) -> Self {
        self.audit_writer = AuditWriter::with_window(self.store.clone(), window);
        self.audit_writer.start();
        self
    }

    /// Stores every sign-in audit event still waiting for its window (at shutdown).
    pub async fn flush_audit(&self) {
        if let Err(e) = self.audit_writer.flush().await {
            log::error!("could not store the last sign-in audit events: {e}");
        }
    }

    /// Resolves group references (an accept's reply attributes) against `index`, the one the
    /// sync keeps current; without it, no cn reference names a group.
    pub fn with_group_index(mut self, index: SharedGroupIndex) -> Self {
        self.group_index = index;
        self
    }

    /// The index of every synced group, for resolving group references.
    pub fn group_index(&self) -> Arc<GroupIndex> {
        self.group_index.current()
    }

    /// Replaces the reloadable settings.
    pub fn update_settings(&self, settings: SignInSettings) -> Result<(), SignInError> {
        settings.check()?;
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = settings;
        Ok(())
    }

    /// The current settings.
    pub fn settings(&self) -> SignInSettings {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The message a TAP gets on `channel` (DESIGN §2), quoting the public URL.
    pub fn tap_message(&self, channel: SignInChannel) -> String {
        channel.tap_failure().message(&self.registration_place())
    }

    /// Where users register methods, as messages name it: `[web] public_url`, or a
    /// description of the page when none is configured.
    pub(super) fn registration_place(&self) -> String {
        let url = self.settings().public_url;
        if url.is_empty() {
            UNKNOWN_PUBLIC_URL.to_owned()
        } else {
            url
        }
    }

    /// Decides on `credential` presented for `username`; audits the decision.
    ///
    /// A repeat of a (name, credential) pair rejected within the rejection cache's lifetime is
    /// recognised before any store read, and at most [`MAX_REPEATS_IN_FLIGHT`] of them are
    /// decided at once: beyond that the attempt is shed as
    /// [`UnavailableReason::Overloaded`] without a decision, so without an audit event (as
    /// the RADIUS server drops datagrams beyond its in-flight limit), and counted by the
    /// front end. A device repeating a TAP or a wrong password in a tight loop then costs
    /// the server next to nothing, and other users' sign-ins keep their share of it.
    pub async fn authenticate(
        &self,
        context: &AttemptContext,
        username: &str,
        credential: &str,
    ) -> SignInOutcome {
        match self
            .check_credential(context, username, credential, true)
            .await
        {
            Ok(checked) => {
                if checked.audited {
                    self.audit(
                        context,
                        username,
                        checked.user.as_ref(),
                        &checked.outcome,
                        checked.method,
                        checked.note,
                    )
                    .await;
                }
                checked.outcome
            }
            Err(outcome) => outcome,
        }
    }

    /// [`SignIn::authenticate`] without the audit event, for callers that decide more before
    /// auditing (the second factor). `Err`: refused or shed before any user was looked up,
    /// never audited. `clear_throttle`: whether an accepted password forgets the user's
    /// failures from this source (not while a second factor is still to come, so that wrong
    /// codes keep counting).
    pub(super) async fn check_credential(
        &self,
        context: &AttemptContext,
        username: &str,
        credential: &str,
        clear_throttle: bool,
    ) -> Result<Checked, SignInOutcome> {
        if let Err(e) = check_sign_in_name(username) {
            return Err(self.refuse_name(context, e));
        }
        let name_key = self.cache_key_for(&username.to_lowercase(), credential);
        let now = self.clock.now();
        let repeat = self
            .rejected_names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lookup(&name_key, now)
            .is_some();
        let _repeat_permit = if repeat {
            match self.repeats.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    self.log_shedding(username);
                    return Err(SignInOutcome::Unavailable {
                        reason: UnavailableReason::Overloaded,
                    });
                }
            }
        } else {
            None
        };
        let (outcome, user, cached) = self
            .decide(context, username, credential, clear_throttle)
            .await;
        let method = match &outcome {
            SignInOutcome::Reject {
                reason: RejectReason::TapNotSupported,
                ..
            } => method_name::TAP,
            _ => method_name::PASSWORD,
        };
        self.count_tap_rejection(context, &outcome);
        if let SignInOutcome::Reject {
            reason: reason @ (RejectReason::TapNotSupported | RejectReason::InvalidCredentials),
            ..
        } = &outcome
        {
            self.rejected_names
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name_key, *reason, self.clock.now());
        }
        let mut attempts = None;
        let mut audited = true;
        if let (
            SignInOutcome::Reject {
                reason: RejectReason::Throttled,
                ..
            },
            Some(user),
        ) = (&outcome, &user)
        {
            let key = format!("{}\u{0}{}", user.id, context.throttle_source());
            match self.refusal_audits.note(&key, self.clock.now()) {
                Some(n) => attempts = Some(n),
                None => audited = false,
            }
        }
        Ok(Checked {
            outcome,
            user,
            method,
            note: AuditNote {
                cached,
                attempts,
                second_factor: None,
            },
            audited,
        })
    }

    /// A name refused by [`check_sign_in_name`]: rejected, logged (rate-limited with the
    /// shedding line), never audited nor looked up.
    pub(super) fn refuse_name(&self, context: &AttemptContext, error: NameError) -> SignInOutcome {
        log::debug!(
            "sign-in from {} ({}) refused: {error}",
            context.source,
            context.client
        );
        SignInOutcome::Reject {
            reason: RejectReason::NameInvalid,
            message: None,
        }
    }

    /// Failures currently counted (keys of the per-(user, source) throttle).
    pub fn throttle_entries(&self) -> usize {
        self.throttle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    fn log_shedding(&self, username: &str) {
        let now = Instant::now();
        let mut last = self.shed_logged.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| now.duration_since(at) < SHED_LOG_INTERVAL) {
            return;
        }
        *last = Some(now);
        log::warn!(
            "sign-in: shedding repeated attempts with a credential just rejected (e.g. for {}); \
             more than {MAX_REPEATS_IN_FLIGHT} were in progress at once",
            printable(username)
        );
    }

    /// Rejects an attempt without checking anything (an unsupported method, a credential
    /// that can't be a password), and audits it. `method` names what was presented.
    pub async fn refuse(
        &self,
        context: &AttemptContext,
        username: &str,
        reason: RejectReason,
        method: &str,
    ) -> SignInOutcome {
        if let Err(e) = check_sign_in_name(username) {
            return self.refuse_name(context, e);
        }
        let message =
            (reason == RejectReason::TapNotSupported).then(|| self.tap_message(context.channel));
        let outcome = SignInOutcome::Reject { reason, message };
        let user = self
            .find_user(username)
            .await
            .ok()
            .flatten()
            .map(|(user, _)| user);
        self.count_tap_rejection(context, &outcome);
        self.audit(
            context,
            username,
            user.as_ref(),
            &outcome,
            method,
            AuditNote::default(),
        )
        .await;
        outcome
    }

    pub(super) fn count_tap_rejection(&self, context: &AttemptContext, outcome: &SignInOutcome) {
        if let SignInOutcome::Reject {
            reason: RejectReason::TapNotSupported,
            ..
        } = outcome
        {
            let failure = context.channel.tap_failure();
            self.metrics.tap_rejections.inc(TapRejection::of(&failure));
        }
    }

    /// Asks the directory, timing the call into `tapd_ldap_bind_duration_seconds`.
    async fn check_password(
        &self,
        user: &User,
        credential: &str,
    ) -> Result<PasswordCheck, DirectoryError> {
        let started = Instant::now();
        let checked = self.directory.check_password(user, credential).await;
        let result = match &checked {
            Ok(PasswordCheck::Valid) => LdapBindResult::Success,
            Ok(PasswordCheck::Invalid) => LdapBindResult::InvalidCredentials,
            Ok(PasswordCheck::BoundIdentityMismatch) => LdapBindResult::BoundIdentityMismatch,
            Err(_) => LdapBindResult::Error,
        };
        self.metrics
            .ldap_bind_duration
            .observe(result, started.elapsed());
        checked
    }

    /// The user a sign-in names and the groups it is in (for an accept's reply attributes and
    /// claims), read together in one store round trip.
    pub(super) async fn find_user(
        &self,
        username: &str,
    ) -> Result<Option<(User, Vec<GroupRef>)>, crate::store::StoreError> {
        let found = self.store.user_with_group_refs(username).await?;
        // The store also matches stable ids; a sign-in names a user by login name or UPN.
        Ok(found.filter(|(u, _)| {
            u.username.eq_ignore_ascii_case(username)
                || u.user_principal_name.eq_ignore_ascii_case(username)
        }))
    }

    fn cache_key_for(&self, user_id: &str, credential: &str) -> [u8; 32] {
        #[allow(clippy::expect_used)] // HMAC takes keys of any length; this never fails.
        let mut mac = Hmac::<Sha256>::new_from_slice(self.cache_key.as_ref())
            .expect("HMAC accepts any key length");
        mac.update(user_id.as_bytes());
        mac.update(&[0]);
        mac.update(credential.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The decision, the user it concerned (when known) and whether it came from the cache.
    async fn decide(
        &self,
        context: &AttemptContext,
        username: &str,
        credential: &str,
        clear_throttle: bool,
    ) -> (SignInOutcome, Option<User>, bool) {
        let channel = context.channel;
        let reject = |reason| SignInOutcome::Reject {
            reason,
            message: None,
        };
        let (user, groups) = match self.find_user(username).await {
            Ok(Some(found)) => found,
            Ok(None) => return (reject(RejectReason::UserNotFound), None, false),
            Err(e) => {
                log::error!("sign-in: the store could not be read: {e}");
                let outcome = SignInOutcome::Unavailable {
                    reason: UnavailableReason::Store,
                };
                return (outcome, None, false);
            }
        };
        if let Some(conflict) = &user.identity_conflict {
            log::warn!(
                "sign-in refused: user {} is quarantined by an identity conflict: {}",
                user.username,
                conflict.describe()
            );
            return (reject(RejectReason::IdentityConflict), Some(user), false);
        }
        if !user.account_enabled {
            return (reject(RejectReason::AccountDisabled), Some(user), false);
        }
        if password_is_unusable(credential) {
            return (reject(RejectReason::EmptyPassword), Some(user), false);
        }
        if credential.len() > MAX_CREDENTIAL_BYTES {
            return (reject(RejectReason::InvalidCredentials), Some(user), false);
        }
        let settings = self.settings();
        let tap_message = || self.tap_message(channel);

        let cache_key = self.cache_key_for(&user.id, credential);
        let now = self.clock.now();
        let cached = self
            .rejections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lookup(&cache_key, now);
        if let Some(reason) = cached {
            let message = (reason == RejectReason::TapNotSupported).then(tap_message);
            return (SignInOutcome::Reject { reason, message }, Some(user), true);
        }
        let throttle_key = (user.id.clone(), context.throttle_source());
        let blocked = self
            .throttle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_blocked(&throttle_key, now);
        if blocked {
            return (reject(RejectReason::Throttled), Some(user), false);
        }

        match self.check_password(&user, credential).await {
            Ok(PasswordCheck::Valid) => {
                if clear_throttle {
                    self.throttle
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .record_success(&throttle_key);
                }
                let outcome = SignInOutcome::Accept {
                    user: Box::new(user.clone()),
                    groups,
                };
                return (outcome, Some(user), false);
            }
            Ok(PasswordCheck::Invalid) => {}
            Ok(PasswordCheck::BoundIdentityMismatch) => {
                log::warn!(
                    "sign-in: the password for {} bound to {}, but that entry is no longer this \
                     user; rejected",
                    user.user_principal_name,
                    user.dn
                );
                if let Some(syncer) = &self.syncer {
                    syncer.request_incremental(&format!(
                        "the entry at {} is no longer {}",
                        user.dn, user.user_principal_name
                    ));
                }
                return (
                    reject(RejectReason::BoundIdentityMismatch),
                    Some(user),
                    false,
                );
            }
            Err(e) => {
                log_directory_error(&e);
                let outcome = SignInOutcome::Unavailable {
                    reason: UnavailableReason::Directory,
                };
                return (outcome, Some(user), false);
            }
        }

        let is_tap = match self.is_users_tap(&user, credential).await {
            Ok(is_tap) => is_tap,
            Err(outcome) => return (outcome, Some(user), false),
        };
        let reason = if is_tap {
            RejectReason::TapNotSupported
        } else {
            RejectReason::InvalidCredentials
        };
        let now = self.clock.now();
        self.rejections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cache_key, reason, now);
        let started_cooldown = self
            .throttle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record_failure(&throttle_key, now, &settings);
        if started_cooldown {
            log::warn!(
                "sign-in: {} failed {} times within {:?} from {}; rejecting from there without a directory check for {:?}",
                user.user_principal_name,
                settings.max_failures,
                settings.failure_window,
                printable(&throttle_key.1),
                settings.cooldown
            );
        }
        let message = is_tap.then(tap_message);
        (SignInOutcome::Reject { reason, message }, Some(user), false)
    }

    /// Whether `credential` is `user`'s TAP. Only a credential with the length and alphabet
    /// of the user's TAP is hashed (and counted in `tapd_tap_verifications_total`): no TAP, or
    /// another shape, is a plain wrong credential decided without argon2 (whether a user holds
    /// a TAP is no secret: the web page prompts for it; the reject delay evens out timing),
    /// and a credential no TAP could be is decided without reading the TAP at all. `Err` is the
    /// outcome when the store can't be read or the hashing pool is full.
    pub(super) async fn is_users_tap(
        &self,
        user: &User,
        credential: &str,
    ) -> Result<bool, SignInOutcome> {
        let tap = self
            .store_tap_if(could_be_tap(credential, None), &user.id)
            .await
            .map_err(|e| {
                log::error!("sign-in: the store could not be read: {e}");
                SignInOutcome::Unavailable {
                    reason: UnavailableReason::Store,
                }
            })?;
        let Some(tap) = tap.filter(|tap| could_be_tap(credential, tap.code_length)) else {
            return Ok(false);
        };
        self.metrics.tap_verifications.inc(crate::metrics::NoLabels);
        match self
            .hasher
            .verify(Zeroizing::new(credential.to_owned()), Some(tap.code_hash))
            .await
        {
            Ok(matches) => Ok(matches),
            Err(HashError::Overloaded) => Err(SignInOutcome::Unavailable {
                reason: UnavailableReason::Overloaded,
            }),
            Err(e) => {
                log::error!(
                    "sign-in: the TAP of {} can't be checked: {e}",
                    user.user_principal_name
                );
                Ok(false)
            }
        }
    }

    /// The user's TAP when `wanted`, else `None` without a store read.
    async fn store_tap_if(
        &self,
        wanted: bool,
        user_id: &str,
    ) -> Result<Option<StoredTap>, crate::store::StoreError> {
        if !wanted {
            return Ok(None);
        }
        self.store.tap_for_user(user_id).await
    }

    pub(super) async fn audit(
        &self,
        context: &AttemptContext,
        username: &str,
        user: Option<&User>,
        outcome: &SignInOutcome,
        method: &str,
        note: AuditNote,
    ) {
        let actor = match context.channel {
            SignInChannel::Radius => format!("RADIUS client {}", context.client),
            SignInChannel::Federation => format!("relying party {}", context.client),
        };
        let target = match user {
            Some(user) => user.user_principal_name.clone(),
            None => printable(username),
        };
        let mut details = context.details.clone();
        details.insert("client".into(), json!(context.client));
        details.insert("authenticationMethod".into(), json!(method));
        if note.cached {
            details.insert("cached".into(), json!(true));
        }
        if let Some(attempts) = note.attempts {
            details.insert("attempts".into(), json!(attempts));
        }
        if let Some(second_factor) = note.second_factor {
            details.insert("secondFactor".into(), json!(second_factor));
        }
        let event = NewAuditEvent {
            time: self.clock.now(),
            actor,
            activity: SIGN_IN_ACTIVITY.to_owned(),
            target: Some(target),
            result: match outcome {
                SignInOutcome::Accept { .. } => AuditResult::Success,
                _ => AuditResult::Failure,
            },
            reason_code: outcome.reason_code(context.channel).map(str::to_owned),
            channel: context.channel.channel(),
            source_address: Some(context.source.clone()),
            details: serde_json::Value::Object(details),
        };
        crate::audit::log(&event);
        if let Err(e) = self.audit_writer.record(event).await {
            log::error!("could not record the sign-in audit event: {e}");
        }
    }
}

/// Whether `credential` has the length and alphabet of a TAP code of `code_length`
/// characters (of any length a TAP may have when `None`: a TAP from before lengths were
/// recorded, or no TAP known yet).
fn could_be_tap(credential: &str, code_length: Option<u32>) -> bool {
    let length = credential.len();
    let length_fits = match code_length {
        Some(n) => usize::try_from(n).is_ok_and(|n| n == length),
        None => {
            usize::try_from(LENGTH_MIN).is_ok_and(|min| length >= min)
                && usize::try_from(LENGTH_MAX).is_ok_and(|max| length <= max)
        }
    };
    length_fits && crate::tapcode::in_alphabet(credential)
}

fn log_directory_error(error: &DirectoryError) {
    log::warn!("sign-in: the directory could not check a password: {error}");
}

/// A presented name as it may be recorded: control characters replaced, length bounded.
fn printable(name: &str) -> String {
    name.chars()
        .take(MAX_AUDITED_NAME_CHARS)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
