//! The authenticator-app code as a second factor after the directory password, for RADIUS
//! clients with `second_factor = "totp"`:
//!
//! - **challenge mode** (RFC 2865 §4.4): a correct password from a user with an app gets a
//!   [`SecondFactorOutcome::Challenge`] with a random State, bound to the user, the RADIUS
//!   client and the request's Calling-Station-Id, valid for the configured lifetime (120 s at
//!   most) and usable once; [`SignIn::answer_challenge`] takes the follow-up request with that
//!   State and the code;
//! - **append mode**: the code follows the password and a separator in one credential,
//!   split at the LAST separator ([`split_appended`]).
//!
//! The code is checked with the web's rule ([`totp::accept_code`]: ±1 step, each code once,
//! whichever channel used it first). A Temporary Access Pass is refused as the password (by
//! [`SignIn::check_credential`]) and as the answer, with the `tap_not_supported_radius`
//! message, and never consumed. Each leg is audited: the password leg with method
//! "Password" (a success whose `details.secondFactor` says a code is still due), the code
//! leg with method "Authenticator app (TOTP)". Wrong codes, replays and TAP answers count as
//! failures in the per-(user, source) throttle, which an accepted password does not reset
//! while a code is still due: the password alone does not buy unlimited code guesses.
//!
//! The [`ChallengeStore`] is one per [`SignIn`], shared by every socket and thread and kept
//! across configuration reloads; it holds at most [`MAX_CHALLENGES`] States (oldest evicted
//! first) in memory, so a restart or another node does not know a State: the answer is then
//! `state_unknown` and the user signs in again.
//!
//! May depend on: `model`, `config` (the per-client settings), `store` (through
//! [`totp`]), `clock` (through [`SignIn`]), `audit`. Knows nothing about RADIUS packets.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use rand::RngCore;

use crate::config::{SecondFactorMode, TotpRequirement, WithoutSecondFactor};
use crate::model::{GroupRef, Timestamp, User};

use super::check_sign_in_name;
use super::credential::{chrono_duration, AuditNote, SignIn};
use super::outcome::{AttemptContext, RejectReason, SignInOutcome, UnavailableReason};
use super::site::method_name;
use super::totp::{self, AppCode};

/// The Reply-Message of an Access-Challenge.
pub const CHALLENGE_MESSAGE: &str = "Enter the code from your authenticator app";

/// The audit method of the code leg.
pub const TOTP_METHOD: &str = "Authenticator app (TOTP)";

/// States held at once; beyond this the oldest is forgotten (its answer gets
/// `state_unknown`).
pub const MAX_CHALLENGES: usize = 10_000;

/// Octets of a State: 128 random bits.
pub const STATE_BYTES: usize = 16;

/// How long an expired State is still recognised as expired (rather than unknown).
const EXPIRED_GRACE: Duration = Duration::from_secs(600);

/// What a State is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The user's stable id.
    pub user_id: String,
    /// The RADIUS client's configured name.
    pub client: String,
    /// The request's Calling-Station-Id (`None`: the request had none, and the answer must
    /// have none either).
    pub station: Option<String>,
}

/// Why a State is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateProblem {
    /// Never issued, used already, forgotten, or bound to another user, client or station.
    Unknown,
    /// Issued longer ago than its lifetime.
    Expired,
}

#[derive(Debug)]
struct Issued {
    binding: Binding,
    expires: Timestamp,
}

/// The issued States; pure, `now` is a parameter. See the module documentation.
#[derive(Debug, Default)]
pub struct ChallengeStore {
    entries: HashMap<[u8; STATE_BYTES], Issued>,
    order: VecDeque<[u8; STATE_BYTES]>,
}

impl ChallengeStore {
    /// A new random State for `binding`, valid until `now + lifetime`.
    pub fn issue(
        &mut self,
        binding: Binding,
        now: Timestamp,
        lifetime: Duration,
    ) -> [u8; STATE_BYTES] {
        self.purge(now);
        while self.entries.len() >= MAX_CHALLENGES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let mut state = [0u8; STATE_BYTES];
        loop {
            rand::rngs::OsRng.fill_bytes(&mut state);
            if !self.entries.contains_key(&state) {
                break;
            }
        }
        let expires = now + chrono_duration(lifetime);
        self.entries.insert(state, Issued { binding, expires });
        self.order.push_back(state);
        state
    }

    /// Takes `state` for an answer bound as `binding`: the State is gone afterwards, whatever
    /// the result (single use, also for a mismatched or late answer).
    pub fn take(
        &mut self,
        state: &[u8],
        binding: &Binding,
        now: Timestamp,
    ) -> Result<(), StateProblem> {
        self.purge(now);
        let Ok(key) = <[u8; STATE_BYTES]>::try_from(state) else {
            return Err(StateProblem::Unknown);
        };
        let Some(issued) = self.entries.remove(&key) else {
            return Err(StateProblem::Unknown);
        };
        self.order.retain(|k| *k != key);
        let bound = &issued.binding;
        if bound.user_id != binding.user_id
            || bound.client != binding.client
            || bound.station != binding.station
        {
            return Err(StateProblem::Unknown);
        }
        if now >= issued.expires {
            return Err(StateProblem::Expired);
        }
        Ok(())
    }

    /// States held (expired ones within their grace included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn purge(&mut self, now: Timestamp) {
        let grace = chrono_duration(EXPIRED_GRACE);
        while let Some(key) = self.order.front().copied() {
            match self.entries.get(&key) {
                Some(issued) if now < issued.expires + grace => break,
                _ => {
                    self.order.pop_front();
                    self.entries.remove(&key);
                }
            }
        }
    }
}

/// Splits an append-mode credential at the LAST `separator`: the password and the code
/// (`None` when there is no separator or nothing after the last one).
pub fn split_appended<'a>(credential: &'a str, separator: &str) -> (&'a str, Option<&'a str>) {
    match credential.rsplit_once(separator) {
        Some((password, code)) if !code.trim().is_empty() => (password, Some(code)),
        Some((password, _)) => (password, None),
        None => (credential, None),
    }
}

/// The outcome of a sign-in on a client that wants a second factor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecondFactorOutcome {
    /// Decided: accept, reject or unavailable.
    Decided(SignInOutcome),
    /// The password was right and a code is due: send an Access-Challenge.
    Challenge {
        /// The State to send.
        state: Vec<u8>,
        /// The Reply-Message ([`CHALLENGE_MESSAGE`]).
        message: String,
    },
}

impl SignIn {
    /// Audits the password leg of `user`'s sign-in on a second-factor client (the password
    /// was right; `note` says what became of the second factor).
    async fn audit_password_leg(
        &self,
        context: &AttemptContext,
        username: &str,
        user: &User,
        outcome: &SignInOutcome,
        note: AuditNote,
    ) {
        self.audit(
            context,
            username,
            Some(user),
            outcome,
            method_name::PASSWORD,
            note,
        )
        .await;
    }

    /// A sign-in on a client with `second_factor = "totp"`: the password (and in append mode
    /// the code after it); see the module documentation. `station` is the request's
    /// Calling-Station-Id; `lifetime` how long a State stays valid.
    pub async fn sign_in_with_second_factor(
        &self,
        context: &AttemptContext,
        username: &str,
        credential: &str,
        requirement: &TotpRequirement,
        station: Option<&str>,
        lifetime: Duration,
    ) -> SecondFactorOutcome {
        let (password, code) = match &requirement.mode {
            SecondFactorMode::Challenge => (credential, None),
            SecondFactorMode::Append { separator } => split_appended(credential, separator),
        };
        let checked = match self
            .check_credential(context, username, password, false)
            .await
        {
            Ok(checked) => checked,
            Err(outcome) => return SecondFactorOutcome::Decided(outcome),
        };
        let (user, groups) = match (&checked.outcome, &checked.user) {
            (SignInOutcome::Accept { user, groups }, _) => ((**user).clone(), groups.clone()),
            _ => {
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
                return SecondFactorOutcome::Decided(checked.outcome);
            }
        };
        let has_app = match totp::has_app(self.store.as_ref(), &user.id).await {
            Ok(has_app) => has_app,
            Err(e) => {
                log::error!("sign-in: the store could not be read: {e}");
                return SecondFactorOutcome::Decided(SignInOutcome::Unavailable {
                    reason: UnavailableReason::Store,
                });
            }
        };
        if !has_app {
            let outcome = match requirement.without_app {
                WithoutSecondFactor::Accept => checked.outcome,
                WithoutSecondFactor::Reject => SignInOutcome::Reject {
                    reason: RejectReason::SecondFactorMissing,
                    message: Some(self.register_app_message()),
                },
            };
            if matches!(outcome, SignInOutcome::Accept { .. }) {
                self.clear_failures(context, &user);
            }
            let mut note = checked.note;
            note.second_factor = Some("no authenticator app registered");
            self.audit_password_leg(context, username, &user, &outcome, note)
                .await;
            return SecondFactorOutcome::Decided(outcome);
        }

        match &requirement.mode {
            SecondFactorMode::Challenge => {
                let binding = Binding {
                    user_id: user.id.clone(),
                    client: context.client.clone(),
                    station: station.map(str::to_owned),
                };
                let now = self.clock.now();
                let state = self
                    .challenges
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .issue(binding, now, lifetime);
                let mut note = checked.note;
                note.second_factor = Some("challenge sent");
                self.audit_password_leg(context, username, &user, &checked.outcome, note)
                    .await;
                SecondFactorOutcome::Challenge {
                    state: state.to_vec(),
                    message: CHALLENGE_MESSAGE.to_owned(),
                }
            }
            SecondFactorMode::Append { separator } => {
                let mut note = checked.note;
                note.second_factor = Some("code appended");
                let Some(code) = code else {
                    let outcome = SignInOutcome::Reject {
                        reason: RejectReason::SecondFactorMissing,
                        message: Some(format!(
                            "Type your password, then {separator}, then the code from your authenticator app."
                        )),
                    };
                    self.audit_password_leg(context, username, &user, &outcome, note)
                        .await;
                    return SecondFactorOutcome::Decided(outcome);
                };
                self.audit_password_leg(context, username, &user, &checked.outcome, note)
                    .await;
                SecondFactorOutcome::Decided(
                    self.check_code(context, username, user, groups, code).await,
                )
            }
        }
    }

    /// The follow-up of an Access-Challenge: `state` as it came back, `answer` the
    /// User-Password. Accepts a fresh code of the user's apps when the State is known,
    /// unexpired, unused and bound to this user, client and `station`.
    pub async fn answer_challenge(
        &self,
        context: &AttemptContext,
        username: &str,
        state: &[u8],
        answer: &str,
        station: Option<&str>,
    ) -> SignInOutcome {
        if let Err(e) = check_sign_in_name(username) {
            return self.refuse_name(context, e);
        }
        let found = match self.find_user(username).await {
            Ok(found) => found,
            Err(e) => {
                log::error!("sign-in: the store could not be read: {e}");
                return SignInOutcome::Unavailable {
                    reason: UnavailableReason::Store,
                };
            }
        };
        let binding = Binding {
            user_id: found
                .as_ref()
                .map(|(user, _)| user.id.clone())
                .unwrap_or_default(),
            client: context.client.clone(),
            station: station.map(str::to_owned),
        };
        let now = self.clock.now();
        let taken = self
            .challenges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(state, &binding, now);
        let problem = match (&found, taken) {
            (Some(_), Ok(())) => None,
            (_, Err(StateProblem::Expired)) => Some(RejectReason::StateExpired),
            _ => Some(RejectReason::StateUnknown),
        };
        let (user, groups) = match (found, problem) {
            (Some(found), None) => found,
            (found, problem) => {
                let outcome = SignInOutcome::Reject {
                    reason: problem.unwrap_or(RejectReason::StateUnknown),
                    message: None,
                };
                self.audit(
                    context,
                    username,
                    found.as_ref().map(|(user, _)| user),
                    &outcome,
                    TOTP_METHOD,
                    AuditNote::default(),
                )
                .await;
                return outcome;
            }
        };
        self.check_code(context, username, user, groups, answer)
            .await
    }

    /// Checks `code` for `user` (whose password was accepted), audits the code leg.
    async fn check_code(
        &self,
        context: &AttemptContext,
        username: &str,
        user: User,
        groups: Vec<GroupRef>,
        code: &str,
    ) -> SignInOutcome {
        let throttle_key = (user.id.clone(), context.throttle_source());
        let now = self.clock.now();
        let blocked = self
            .throttle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_blocked(&throttle_key, now);
        let (outcome, method) = if blocked {
            (
                SignInOutcome::Reject {
                    reason: RejectReason::Throttled,
                    message: None,
                },
                TOTP_METHOD,
            )
        } else {
            self.decide_code(context, &user, groups, code).await
        };
        match &outcome {
            SignInOutcome::Accept { .. } => self.clear_failures(context, &user),
            SignInOutcome::Reject {
                reason:
                    RejectReason::TotpInvalid
                    | RejectReason::TotpReplayed
                    | RejectReason::TapNotSupported,
                ..
            } => {
                let settings = self.settings();
                self.throttle
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record_failure(&throttle_key, self.clock.now(), &settings);
            }
            _ => {}
        }
        self.count_tap_rejection(context, &outcome);
        self.audit(
            context,
            username,
            Some(&user),
            &outcome,
            method,
            AuditNote::default(),
        )
        .await;
        outcome
    }

    async fn decide_code(
        &self,
        context: &AttemptContext,
        user: &User,
        groups: Vec<GroupRef>,
        code: &str,
    ) -> (SignInOutcome, &'static str) {
        let reject = |reason| SignInOutcome::Reject {
            reason,
            message: None,
        };
        let now = self.clock.now();
        match totp::accept_code(self.store.as_ref(), &user.id, code, now).await {
            Ok(AppCode::Accepted) => {
                let outcome = SignInOutcome::Accept {
                    user: Box::new(user.clone()),
                    groups,
                };
                return (outcome, TOTP_METHOD);
            }
            Ok(AppCode::Replayed) => return (reject(RejectReason::TotpReplayed), TOTP_METHOD),
            Ok(AppCode::Invalid | AppCode::NoApp) => {}
            Err(e) => {
                log::error!("sign-in: the store could not be read: {e}");
                let outcome = SignInOutcome::Unavailable {
                    reason: UnavailableReason::Store,
                };
                return (outcome, TOTP_METHOD);
            }
        }
        // Not a code of the user's apps: is it the user's TAP? (Only for what can't be a
        // code: a six-digit string is never a TAP, and argon2 is not spent on it.)
        if totp::looks_like_code(code) {
            return (reject(RejectReason::TotpInvalid), TOTP_METHOD);
        }
        match self.is_users_tap(user, code).await {
            Ok(true) => (
                SignInOutcome::Reject {
                    reason: RejectReason::TapNotSupported,
                    message: Some(self.tap_message(context.channel)),
                },
                method_name::TAP,
            ),
            Ok(false) => (reject(RejectReason::TotpInvalid), TOTP_METHOD),
            Err(outcome) => (outcome, TOTP_METHOD),
        }
    }

    fn clear_failures(&self, context: &AttemptContext, user: &User) {
        self.throttle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record_success(&(user.id.clone(), context.throttle_source()));
    }

    /// What a user without an authenticator app reads (`without_second_factor = "reject"`).
    pub fn register_app_message(&self) -> String {
        let place = self.registration_place();
        format!("This sign-in needs the code from an authenticator app. Register one at {place}, then try again.")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use chrono::DateTime;

    fn at(secs: i64) -> Timestamp {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn binding(user: &str, client: &str, station: Option<&str>) -> Binding {
        Binding {
            user_id: user.into(),
            client: client.into(),
            station: station.map(str::to_owned),
        }
    }

    const LIFE: Duration = Duration::from_secs(120);

    #[test]
    fn a_state_works_once_for_its_binding_until_it_expires() {
        let mut store = ChallengeStore::default();
        let bound = binding("u1", "nas", Some("02-00"));
        let state = store.issue(bound.clone(), at(1000), LIFE);
        assert_eq!(store.take(&state, &bound, at(1119)), Ok(()));
        // Single use.
        assert_eq!(
            store.take(&state, &bound, at(1119)),
            Err(StateProblem::Unknown)
        );
        // Expiry to the second.
        let state = store.issue(bound.clone(), at(1000), LIFE);
        assert_eq!(
            store.take(&state, &bound, at(1120)),
            Err(StateProblem::Expired)
        );
        assert!(store.is_empty());
    }

    #[test]
    fn a_state_is_refused_for_another_user_client_or_station_and_is_then_gone() {
        let mut store = ChallengeStore::default();
        let bound = binding("u1", "nas", Some("02-00"));
        for other in [
            binding("u2", "nas", Some("02-00")),
            binding("u1", "other-nas", Some("02-00")),
            binding("u1", "nas", Some("02-01")),
            binding("u1", "nas", None),
        ] {
            let state = store.issue(bound.clone(), at(0), LIFE);
            assert_eq!(
                store.take(&state, &other, at(1)),
                Err(StateProblem::Unknown),
                "{other:?}"
            );
            assert_eq!(
                store.take(&state, &bound, at(1)),
                Err(StateProblem::Unknown),
                "consumed by the mismatched answer"
            );
        }
        assert_eq!(
            store.take(b"short", &bound, at(1)),
            Err(StateProblem::Unknown)
        );
    }

    #[test]
    fn the_store_is_bounded_and_forgets_the_oldest() {
        let mut store = ChallengeStore::default();
        let bound = binding("u1", "nas", None);
        let first = store.issue(bound.clone(), at(0), LIFE);
        for _ in 0..MAX_CHALLENGES {
            store.issue(bound.clone(), at(0), LIFE);
        }
        assert_eq!(store.len(), MAX_CHALLENGES);
        assert_eq!(
            store.take(&first, &bound, at(1)),
            Err(StateProblem::Unknown)
        );
        // Long-expired States are purged.
        store.issue(bound.clone(), at(100_000), LIFE);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn append_mode_splits_at_the_last_separator() {
        assert_eq!(
            split_appended("pa,ss,123456", ","),
            ("pa,ss", Some("123456"))
        );
        assert_eq!(split_appended("password", ","), ("password", None));
        assert_eq!(split_appended("pa,ss,", ","), ("pa,ss", None));
        assert_eq!(split_appended("pw::123456", "::"), ("pw", Some("123456")));
    }
}
