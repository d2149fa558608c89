//! The life of one Temporary Access Pass under the policy: the terms it is created with, whether
//! it is usable at a given instant (`isUsable` / `methodUsabilityReason`), and why a web sign-in
//! with it fails (the reason codes and user-facing messages of DESIGN §2, word for word).
//!
//! ```text
//!   create ──> NotYetValid ──(now = start)──> usable ──(now = start + lifetime)──> Expired
//!                                               │
//!                     one-time: first web sign-in (consumed atomically by the store) ──> OneTimeUsed
//!   out of scope, or multi-use while the policy demands one-time ──> DisabledByPolicy / blocked
//! ```
//!
//! Pure: depends on `crate::model`, `super::scope` and `super::settings`; `now` is always a
//! parameter. Verifying the code against its hash and consuming a one-time TAP are the
//! caller's job (see `crate::tapcode` and `Store::consume_one_time_tap`).

use chrono::{Duration, SecondsFormat};
use serde::Serialize;

use super::scope::in_scope;
use super::settings::{LIFETIME_MINUTES_MAX, LIFETIME_MINUTES_MIN};
use crate::group_ref::GroupIndex;
use crate::model::{Group, StoredTap, TapPolicy, Timestamp, User};

/// How far before `now` a requested `startDateTime` may lie and still be taken as "now":
/// absorbs clock skew between the admin's machine and tapd. Earlier starts are refused.
pub const START_CLOCK_SKEW: Duration = Duration::seconds(60);

/// How far ahead a TAP may be scheduled to start. Graph documents no bound; tapd caps it at
/// 365 days so a typo ("2062" for "2026") is caught instead of creating a pass nobody can use.
pub const MAX_START_AHEAD: Duration = Duration::days(365);

/// The body of `POST …/temporaryAccessPassMethods`; every field optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreateTapRequest {
    /// `startDateTime`; default: now.
    pub start: Option<Timestamp>,
    /// `lifetimeInMinutes`; default: the policy's default lifetime.
    pub lifetime_in_minutes: Option<i64>,
    /// `isUsableOnce`; default: the policy's `isUsableOnce`.
    pub is_usable_once: Option<bool>,
}

/// The validated terms a new TAP is stored with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapTerms {
    /// When it becomes usable (never before `now`).
    pub start: Timestamp,
    /// Minutes from `start` to expiry, within the policy bounds and 10–43200.
    pub lifetime_in_minutes: u32,
    /// One-time or multi-use.
    pub is_usable_once: bool,
}

impl TapTerms {
    /// The first instant at which the TAP is no longer usable.
    pub fn expires(&self) -> Timestamp {
        self.start + Duration::minutes(i64::from(self.lifetime_in_minutes))
    }
}

/// Why a create request was refused (answered with 400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CreationError {
    /// The lifetime (requested, or the policy default) is outside the policy's bounds
    /// (themselves clamped to 10–43200).
    #[error("Invalid lifetimeInMinutes {requested}: the policy allows {min} to {max} minutes.")]
    LifetimeOutOfRange {
        /// The lifetime asked for.
        requested: i64,
        /// Smallest lifetime allowed now.
        min: i64,
        /// Largest lifetime allowed now.
        max: i64,
    },
    /// `isUsableOnce: false` was asked for while the policy demands one-time passes.
    #[error(
        "A multi-use Temporary Access Pass can't be created: the policy requires every pass to \
         be one-time (isUsableOnce is true)."
    )]
    MultiUseNotAllowed,
    /// `startDateTime` lies more than [`START_CLOCK_SKEW`] before now.
    #[error("Invalid startDateTime {}: it is in the past (now is {}).", rfc3339(.start), rfc3339(.now))]
    StartInPast {
        /// The start asked for.
        start: Timestamp,
        /// The time of the request.
        now: Timestamp,
    },
    /// `startDateTime` lies more than [`MAX_START_AHEAD`] after now.
    #[error("Invalid startDateTime {}: a pass can start at most 365 days ahead (by {}).", rfc3339(.start), rfc3339(.latest))]
    StartTooFarAhead {
        /// The start asked for.
        start: Timestamp,
        /// The latest start allowed.
        latest: Timestamp,
    },
}

impl CreationError {
    /// Stable reason code for audit and the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            CreationError::LifetimeOutOfRange { .. } => "lifetime_out_of_range",
            CreationError::MultiUseNotAllowed => "multi_use_not_allowed",
            CreationError::StartInPast { .. } => "start_in_past",
            CreationError::StartTooFarAhead { .. } => "start_too_far_ahead",
        }
    }
}

/// Renders a timestamp as RFC 3339 UTC to the second, e.g. `2026-11-27T10:00:00Z`.
pub fn rfc3339(t: &Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Works out the terms of a new TAP from the policy and the request at `now`.
///
/// - lifetime: requested or the policy default; must lie within the policy's
///   [minimum, maximum] (and 10–43200), else [`CreationError::LifetimeOutOfRange`];
/// - one-time: requested or the policy's value; `false` while the policy demands one-time is
///   [`CreationError::MultiUseNotAllowed`];
/// - start: requested or `now`; up to [`START_CLOCK_SKEW`] in the past is clamped to `now`,
///   earlier is [`CreationError::StartInPast`]; later than `now` + [`MAX_START_AHEAD`] is
///   [`CreationError::StartTooFarAhead`].
///
/// Checked in that order; the first failure is returned. Scope is not checked: an
/// administrator may create a TAP for any user (only in-scope users can sign in with it).
pub fn creation_terms(
    policy: &TapPolicy,
    req: &CreateTapRequest,
    now: Timestamp,
) -> Result<TapTerms, CreationError> {
    let requested = req
        .lifetime_in_minutes
        .unwrap_or(i64::from(policy.default_lifetime_in_minutes));
    let min = i64::from(policy.minimum_lifetime_in_minutes).max(LIFETIME_MINUTES_MIN);
    let max = i64::from(policy.maximum_lifetime_in_minutes).min(LIFETIME_MINUTES_MAX);
    let out_of_range = CreationError::LifetimeOutOfRange {
        requested,
        min,
        max,
    };
    if !(min..=max).contains(&requested) {
        return Err(out_of_range);
    }
    let lifetime_in_minutes = u32::try_from(requested).map_err(|_| out_of_range)?;

    if req.is_usable_once == Some(false) && policy.is_usable_once {
        return Err(CreationError::MultiUseNotAllowed);
    }
    let is_usable_once = req.is_usable_once.unwrap_or(policy.is_usable_once);

    let start = match req.start {
        None => now,
        Some(s) if s < now - START_CLOCK_SKEW => {
            return Err(CreationError::StartInPast { start: s, now });
        }
        Some(s) if s > now + MAX_START_AHEAD => {
            return Err(CreationError::StartTooFarAhead {
                start: s,
                latest: now + MAX_START_AHEAD,
            });
        }
        Some(s) => s.max(now),
    };

    Ok(TapTerms {
        start,
        lifetime_in_minutes,
        is_usable_once,
    })
}

/// Graph's `methodUsabilityReason`, serialized exactly as these PascalCase names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum UsabilityReason {
    /// Usable now.
    EnabledByPolicy,
    /// The user is out of the policy's scope, or the TAP is multi-use while the policy now
    /// demands one-time passes.
    DisabledByPolicy,
    /// `now` is before `startDateTime`.
    NotYetValid,
    /// `now` is at or after `startDateTime + lifetimeInMinutes`.
    Expired,
    /// A one-time TAP already used for a sign-in.
    OneTimeUsed,
}

impl UsabilityReason {
    /// The Graph string, same as the serialized form.
    pub fn as_str(self) -> &'static str {
        match self {
            UsabilityReason::EnabledByPolicy => "EnabledByPolicy",
            UsabilityReason::DisabledByPolicy => "DisabledByPolicy",
            UsabilityReason::NotYetValid => "NotYetValid",
            UsabilityReason::Expired => "Expired",
            UsabilityReason::OneTimeUsed => "OneTimeUsed",
        }
    }

    /// `isUsable`: true only for [`UsabilityReason::EnabledByPolicy`].
    pub fn is_usable(self) -> bool {
        self == UsabilityReason::EnabledByPolicy
    }
}

/// A multi-use TAP created earlier while the policy now demands one-time passes.
fn multi_use_forbidden(policy: &TapPolicy, tap: &StoredTap) -> bool {
    policy.is_usable_once && !tap.is_usable_once
}

/// A one-time TAP already consumed. `used_at` on a multi-use TAP is ignored (the model only
/// sets it for one-time passes).
fn one_time_used(tap: &StoredTap) -> bool {
    tap.is_usable_once && tap.used_at.is_some()
}

/// `isUsable` and `methodUsabilityReason` of the user's `tap` at `now`, first match wins:
///
/// 1. `DisabledByPolicy`: the user is not in scope ([`in_scope`]; `groups` = effective groups);
/// 2. `NotYetValid`: `now < start` (usable exactly at `start`);
/// 3. `Expired`: `now >= start + lifetime` (expired exactly at that instant);
/// 4. `OneTimeUsed`: a one-time TAP with `used_at` set;
/// 5. `DisabledByPolicy`: a multi-use TAP while the policy now requires one-time use (checked
///    after the time checks so an expired pass still reads `Expired`; same order as
///    [`web_sign_in_check`]);
/// 6. else `EnabledByPolicy`.
pub fn usability(
    policy: &TapPolicy,
    user: &User,
    groups: &[Group],
    index: &GroupIndex,
    tap: &StoredTap,
    now: Timestamp,
) -> (bool, UsabilityReason) {
    let reason = if !in_scope(policy, user, groups, index) {
        UsabilityReason::DisabledByPolicy
    } else if now < tap.start {
        UsabilityReason::NotYetValid
    } else if now >= tap.expires() {
        UsabilityReason::Expired
    } else if one_time_used(tap) {
        UsabilityReason::OneTimeUsed
    } else if multi_use_forbidden(policy, tap) {
        UsabilityReason::DisabledByPolicy
    } else {
        UsabilityReason::EnabledByPolicy
    };
    (reason.is_usable(), reason)
}

/// Why a sign-in with a TAP failed; each has a stable reason code (audit, metrics, logs, JSON)
/// and a user-facing message (DESIGN §2).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignInFailure {
    /// The TAP's lifetime is over.
    #[error("tap_expired")]
    TapExpired,
    /// The TAP's start lies in the future.
    #[error("tap_not_yet_valid")]
    TapNotYetValid {
        /// When it becomes usable.
        start: Timestamp,
    },
    /// No TAP, or the code does not match it.
    #[error("tap_not_found")]
    TapNotFound,
    /// The user is not in the policy's scope (policy disabled, not included, excluded, or the
    /// account disabled). The user sees Entra's single "blocked due to User Credential Policy"
    /// sentence; the code tells an administrator which of the three policy blocks it was.
    #[error("tap_out_of_scope")]
    TapOutOfScope,
    /// A one-time TAP that was already used for a sign-in (same user-facing sentence).
    #[error("tap_one_time_used")]
    TapOneTimeUsed,
    /// A multi-use TAP while the policy now requires one-time passes (same user-facing
    /// sentence).
    #[error("tap_multi_use_forbidden")]
    TapMultiUseForbidden,
    /// A TAP was presented on the RADIUS path, which never accepts one.
    #[error("tap_not_supported_radius")]
    TapNotSupportedRadius,
    /// A TAP was presented to the federation adapter, which never accepts one.
    #[error("tap_not_supported_federation")]
    TapNotSupportedFederation,
}

impl SignInFailure {
    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            SignInFailure::TapExpired => "tap_expired",
            SignInFailure::TapNotYetValid { .. } => "tap_not_yet_valid",
            SignInFailure::TapNotFound => "tap_not_found",
            SignInFailure::TapOutOfScope => "tap_out_of_scope",
            SignInFailure::TapOneTimeUsed => "tap_one_time_used",
            SignInFailure::TapMultiUseForbidden => "tap_multi_use_forbidden",
            SignInFailure::TapNotSupportedRadius => "tap_not_supported_radius",
            SignInFailure::TapNotSupportedFederation => "tap_not_supported_federation",
        }
    }

    /// The user-facing message of DESIGN §2, word for word; `{start}` is rendered as RFC 3339
    /// UTC to the second and `{public_url}` is the web page's public URL, as given.
    pub fn message(&self, public_url: &str) -> String {
        match self {
            SignInFailure::TapExpired => "Your Temporary Access Pass has expired.".to_owned(),
            SignInFailure::TapNotYetValid { start } => format!(
                "Your Temporary Access Pass is not valid yet. It can be used from {}.",
                rfc3339(start)
            ),
            SignInFailure::TapNotFound => {
                "An access pass could not be found or verified for the user.".to_owned()
            }
            SignInFailure::TapOutOfScope
            | SignInFailure::TapOneTimeUsed
            | SignInFailure::TapMultiUseForbidden => {
                "Temporary Access Pass sign in was blocked due to User Credential Policy."
                    .to_owned()
            }
            SignInFailure::TapNotSupportedRadius => format!(
                "A Temporary Access Pass can't be used with RADIUS (NPS extension). \
                 Use it for web sign-in at {public_url}."
            ),
            SignInFailure::TapNotSupportedFederation => format!(
                "A Temporary Access Pass can't be used with the federation (AD FS) adapter. \
                 Use it for web sign-in at {public_url}."
            ),
        }
    }
}

/// Whether a web sign-in with a TAP may succeed at `now`. The caller has looked up the user's
/// TAP and verified the typed code against its hash (`code_matches`); when the user has no TAP
/// it should still spend the same hashing time so timing does not reveal that.
///
/// Checked in this order, first failure wins:
/// 1. user not in scope → [`SignInFailure::TapOutOfScope`];
/// 2. no TAP, a TAP of another user, or the code does not match → [`SignInFailure::TapNotFound`];
/// 3. `now < start` → [`SignInFailure::TapNotYetValid`];
/// 4. `now >= start + lifetime` → [`SignInFailure::TapExpired`];
/// 5. one-time TAP already used → [`SignInFailure::TapOneTimeUsed`];
/// 6. multi-use TAP while the policy requires one-time → [`SignInFailure::TapMultiUseForbidden`];
/// 7. else `Ok`: for a one-time TAP the caller must now consume it atomically
///    (`Store::consume_one_time_tap`) and fail with `TapOneTimeUsed` if that returns false.
pub fn web_sign_in_check(
    policy: &TapPolicy,
    user: &User,
    groups: &[Group],
    index: &GroupIndex,
    tap: Option<&StoredTap>,
    code_matches: bool,
    now: Timestamp,
) -> Result<(), SignInFailure> {
    if !in_scope(policy, user, groups, index) {
        return Err(SignInFailure::TapOutOfScope);
    }
    let tap = match tap {
        Some(tap) if code_matches && tap.user_id == user.id => tap,
        _ => return Err(SignInFailure::TapNotFound),
    };
    if now < tap.start {
        return Err(SignInFailure::TapNotYetValid { start: tap.start });
    }
    if now >= tap.expires() {
        return Err(SignInFailure::TapExpired);
    }
    if one_time_used(tap) {
        return Err(SignInFailure::TapOneTimeUsed);
    }
    if multi_use_forbidden(policy, tap) {
        return Err(SignInFailure::TapMultiUseForbidden);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::model::{PolicyState, TapPolicy};

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn secs(n: i64) -> Duration {
        Duration::seconds(n)
    }

    fn now() -> Timestamp {
        t("2026-11-27T09:00:00Z")
    }

    fn policy() -> TapPolicy {
        TapPolicy {
            state: PolicyState::Enabled,
            ..TapPolicy::default()
        }
    }

    fn user() -> User {
        User {
            id: "u-1".into(),
            dn: "uid=alice,dc=example,dc=org".into(),
            username: "alice".into(),
            user_principal_name: "alice@example.org".into(),
            display_name: "Alice".into(),
            mail: None,
            account_enabled: true,
            group_ids: vec![],
            identity_conflict: None,
            manager_dn: None,
            manager_id: None,
            dates: Default::default(),
        }
    }

    /// Starts 2026-11-27T10:00:00Z, 60 minutes: usable [10:00:00, 11:00:00).
    fn tap(once: bool, used: bool) -> StoredTap {
        StoredTap {
            id: "tap-1".into(),
            user_id: "u-1".into(),
            code_hash: "$argon2id$…".into(),
            created: now(),
            start: t("2026-11-27T10:00:00Z"),
            lifetime_in_minutes: 60,
            is_usable_once: once,
            used_at: used.then(|| t("2026-11-27T10:05:00Z")),
            code_length: Some(8),
        }
    }

    fn req(
        start: Option<Timestamp>,
        lifetime: Option<i64>,
        once: Option<bool>,
    ) -> CreateTapRequest {
        CreateTapRequest {
            start,
            lifetime_in_minutes: lifetime,
            is_usable_once: once,
        }
    }

    fn bounds(min: u32, max: u32, default: u32, once: bool) -> TapPolicy {
        TapPolicy {
            minimum_lifetime_in_minutes: min,
            maximum_lifetime_in_minutes: max,
            default_lifetime_in_minutes: default,
            is_usable_once: once,
            ..TapPolicy::default()
        }
    }

    fn out_of_range(requested: i64, min: i64, max: i64) -> CreationError {
        CreationError::LifetimeOutOfRange {
            requested,
            min,
            max,
        }
    }

    #[test]
    fn creation_lifetime_table() {
        let default = TapPolicy::default();
        let wide = bounds(10, 43200, 60, false);
        // A stored policy that slipped past validation is still held to 10..=43200.
        let corrupt = bounds(5, 50000, 7, false);
        #[rustfmt::skip]
        let cases: Vec<(&TapPolicy, Option<i64>, Result<u32, CreationError>)> = vec![
            (&default, None, Ok(60)),
            (&default, Some(59), Err(out_of_range(59, 60, 480))),
            (&default, Some(60), Ok(60)),
            (&default, Some(480), Ok(480)),
            (&default, Some(481), Err(out_of_range(481, 60, 480))),
            (&default, Some(0), Err(out_of_range(0, 60, 480))),
            (&default, Some(-1), Err(out_of_range(-1, 60, 480))),
            (&default, Some(i64::MAX), Err(out_of_range(i64::MAX, 60, 480))),
            (&wide, Some(9), Err(out_of_range(9, 10, 43200))),
            (&wide, Some(10), Ok(10)),
            (&wide, Some(43200), Ok(43200)),
            (&wide, Some(43201), Err(out_of_range(43201, 10, 43200))),
            (&corrupt, Some(9), Err(out_of_range(9, 10, 43200))),
            (&corrupt, Some(43201), Err(out_of_range(43201, 10, 43200))),
            (&corrupt, None, Err(out_of_range(7, 10, 43200))),
        ];
        for (policy, lifetime, want) in cases {
            let got = creation_terms(policy, &req(None, lifetime, None), now())
                .map(|terms| terms.lifetime_in_minutes);
            assert_eq!(got, want, "{lifetime:?} under {policy:?}");
        }
    }

    #[test]
    fn creation_one_time_table() {
        #[rustfmt::skip]
        let cases = [
            // (policy isUsableOnce, requested, result)
            (false, None, Ok(false)),
            (false, Some(false), Ok(false)),
            (false, Some(true), Ok(true)),
            (true, None, Ok(true)),
            (true, Some(true), Ok(true)),
            (true, Some(false), Err(CreationError::MultiUseNotAllowed)),
        ];
        for (policy_once, requested, want) in cases {
            let p = bounds(60, 480, 60, policy_once);
            let got =
                creation_terms(&p, &req(None, None, requested), now()).map(|x| x.is_usable_once);
            assert_eq!(got, want, "policy {policy_once}, requested {requested:?}");
        }
    }

    #[test]
    fn creation_start_table() {
        let n = now();
        let latest = n + MAX_START_AHEAD;
        #[rustfmt::skip]
        let cases = [
            (None, Ok(n)),
            (Some(n - secs(3600)), Err(CreationError::StartInPast { start: n - secs(3600), now: n })),
            (Some(n - secs(61)), Err(CreationError::StartInPast { start: n - secs(61), now: n })),
            (Some(n - secs(60)), Ok(n)),
            (Some(n - secs(1)), Ok(n)),
            (Some(n), Ok(n)),
            (Some(n + secs(1)), Ok(n + secs(1))),
            (Some(t("2026-12-01T08:00:00Z")), Ok(t("2026-12-01T08:00:00Z"))),
            (Some(latest), Ok(latest)),
            (Some(latest + secs(1)), Err(CreationError::StartTooFarAhead { start: latest + secs(1), latest })),
        ];
        for (start, want) in cases {
            let got = creation_terms(&policy(), &req(start, None, None), n).map(|x| x.start);
            assert_eq!(got, want, "start {start:?}");
        }
    }

    #[test]
    fn creation_full_terms_and_check_order() {
        let n = now();
        let start = t("2026-11-28T08:00:00Z");
        let terms = creation_terms(&policy(), &req(Some(start), Some(120), Some(true)), n).unwrap();
        assert_eq!(
            terms,
            TapTerms {
                start,
                lifetime_in_minutes: 120,
                is_usable_once: true
            }
        );
        assert_eq!(terms.expires(), t("2026-11-28T10:00:00Z"));
        // Lifetime is checked before one-time, one-time before start.
        let strict = bounds(60, 480, 60, true);
        let past = Some(n - secs(3600));
        assert_eq!(
            creation_terms(&strict, &req(past, Some(5), Some(false)), n),
            Err(out_of_range(5, 60, 480))
        );
        assert_eq!(
            creation_terms(&strict, &req(past, None, Some(false)), n),
            Err(CreationError::MultiUseNotAllowed)
        );
        // Scope and state play no part: a disabled policy still lets admins create.
        assert!(creation_terms(&TapPolicy::default(), &CreateTapRequest::default(), n).is_ok());
    }

    #[test]
    fn creation_messages_and_codes() {
        let cases = [
            (
                out_of_range(5, 60, 480),
                "lifetime_out_of_range",
                "Invalid lifetimeInMinutes 5: the policy allows 60 to 480 minutes.",
            ),
            (
                CreationError::MultiUseNotAllowed,
                "multi_use_not_allowed",
                "A multi-use Temporary Access Pass can't be created: the policy requires every \
                 pass to be one-time (isUsableOnce is true).",
            ),
            (
                CreationError::StartInPast {
                    start: t("2026-11-27T08:00:00Z"),
                    now: now(),
                },
                "start_in_past",
                "Invalid startDateTime 2026-11-27T08:00:00Z: it is in the past (now is \
                 2026-11-27T09:00:00Z).",
            ),
            (
                CreationError::StartTooFarAhead {
                    start: t("2062-11-27T08:00:00Z"),
                    latest: t("2027-11-27T09:00:00Z"),
                },
                "start_too_far_ahead",
                "Invalid startDateTime 2062-11-27T08:00:00Z: a pass can start at most 365 days \
                 ahead (by 2027-11-27T09:00:00Z).",
            ),
        ];
        for (err, code, message) in cases {
            assert_eq!(err.code(), code);
            assert_eq!(err.to_string(), message);
        }
    }

    const START: &str = "2026-11-27T10:00:00Z";
    const END: &str = "2026-11-27T11:00:00Z";

    #[test]
    fn usability_table() {
        use UsabilityReason::*;
        let (start, end) = (t(START), t(END));
        let enabled = policy();
        let disabled = TapPolicy::default();
        let one_time_policy = TapPolicy {
            is_usable_once: true,
            ..policy()
        };
        #[rustfmt::skip]
        let cases: Vec<(&str, &TapPolicy, StoredTap, Timestamp, UsabilityReason)> = vec![
            // boundaries to the second
            ("start-1s", &enabled, tap(false, false), start - secs(1), NotYetValid),
            ("start", &enabled, tap(false, false), start, EnabledByPolicy),
            ("start+lifetime-1s", &enabled, tap(false, false), end - secs(1), EnabledByPolicy),
            ("start+lifetime", &enabled, tap(false, false), end, Expired),
            ("long after", &enabled, tap(false, false), end + Duration::days(30), Expired),
            ("one-time unused", &enabled, tap(true, false), start, EnabledByPolicy),
            ("one-time used", &enabled, tap(true, true), start + secs(600), OneTimeUsed),
            ("one-time used, last second", &enabled, tap(true, true), end - secs(1), OneTimeUsed),
            // used_at on a multi-use pass means nothing
            ("multi-use with used_at", &enabled, tap(false, true), start, EnabledByPolicy),
            // order: DisabledByPolicy → NotYetValid → Expired → OneTimeUsed → multi-use rule
            ("out of scope beats not yet valid", &disabled, tap(false, false), start - secs(1), DisabledByPolicy),
            ("out of scope beats expired", &disabled, tap(true, true), end, DisabledByPolicy),
            ("out of scope while valid", &disabled, tap(false, false), start, DisabledByPolicy),
            ("not yet valid beats used", &enabled, tap(true, true), start - secs(1), NotYetValid),
            ("expired beats used", &enabled, tap(true, true), end, Expired),
            ("multi-use under one-time policy", &one_time_policy, tap(false, false), start, DisabledByPolicy),
            ("one-time under one-time policy", &one_time_policy, tap(true, false), start, EnabledByPolicy),
            ("one-time used under one-time policy", &one_time_policy, tap(true, true), start, OneTimeUsed),
            ("not yet valid beats multi-use rule", &one_time_policy, tap(false, false), start - secs(1), NotYetValid),
            ("expired beats multi-use rule", &one_time_policy, tap(false, false), end, Expired),
        ];
        for (name, policy, tap, at, want) in cases {
            assert_eq!(
                usability(policy, &user(), &[], &GroupIndex::default(), &tap, at),
                (want == EnabledByPolicy, want),
                "{name}"
            );
        }
        // A disabled account is out of scope.
        let locked = User {
            account_enabled: false,
            ..user()
        };
        assert_eq!(
            usability(
                &enabled,
                &locked,
                &[],
                &GroupIndex::default(),
                &tap(false, false),
                start
            ),
            (false, DisabledByPolicy)
        );
    }

    #[test]
    fn usability_reason_serializes_as_graph_strings() {
        use UsabilityReason::*;
        for (reason, s) in [
            (EnabledByPolicy, "EnabledByPolicy"),
            (DisabledByPolicy, "DisabledByPolicy"),
            (NotYetValid, "NotYetValid"),
            (Expired, "Expired"),
            (OneTimeUsed, "OneTimeUsed"),
        ] {
            assert_eq!(serde_json::to_value(reason).unwrap(), serde_json::json!(s));
            assert_eq!(reason.as_str(), s);
            assert_eq!(reason.is_usable(), reason == EnabledByPolicy);
        }
    }

    #[test]
    fn sign_in_codes_and_messages_word_for_word() {
        let url = "https://tap.example.org";
        // Sub-second starts are rendered to the second.
        let start = t("2026-11-27T10:00:00.250Z");
        #[rustfmt::skip]
        let cases = [
            (SignInFailure::TapExpired, "tap_expired", "Your Temporary Access Pass has expired.".to_owned()),
            (SignInFailure::TapNotYetValid { start }, "tap_not_yet_valid", "Your Temporary Access Pass is not valid yet. It can be used from 2026-11-27T10:00:00Z.".to_owned()),
            (SignInFailure::TapNotFound, "tap_not_found", "An access pass could not be found or verified for the user.".to_owned()),
            (SignInFailure::TapOutOfScope, "tap_out_of_scope", "Temporary Access Pass sign in was blocked due to User Credential Policy.".to_owned()),
            (SignInFailure::TapOneTimeUsed, "tap_one_time_used", "Temporary Access Pass sign in was blocked due to User Credential Policy.".to_owned()),
            (SignInFailure::TapMultiUseForbidden, "tap_multi_use_forbidden", "Temporary Access Pass sign in was blocked due to User Credential Policy.".to_owned()),
            (SignInFailure::TapNotSupportedRadius, "tap_not_supported_radius", "A Temporary Access Pass can't be used with RADIUS (NPS extension). Use it for web sign-in at https://tap.example.org.".to_owned()),
            (SignInFailure::TapNotSupportedFederation, "tap_not_supported_federation", "A Temporary Access Pass can't be used with the federation (AD FS) adapter. Use it for web sign-in at https://tap.example.org.".to_owned()),
        ];
        for (failure, code, message) in cases {
            assert_eq!(failure.code(), code);
            assert_eq!(failure.to_string(), code);
            assert_eq!(failure.message(url), message);
        }
    }

    /// (name, policy, the user's TAP, code matches, now, expected outcome)
    type SignInCase<'a> = (
        &'a str,
        &'a TapPolicy,
        Option<StoredTap>,
        bool,
        Timestamp,
        Result<(), SignInFailure>,
    );

    #[test]
    fn web_sign_in_table() {
        use SignInFailure::*;
        let (start, end) = (t(START), t(END));
        let enabled = policy();
        let disabled = TapPolicy::default();
        let one_time_policy = TapPolicy {
            is_usable_once: true,
            ..policy()
        };
        let someone_elses = StoredTap {
            user_id: "u-2".into(),
            ..tap(false, false)
        };
        let not_yet = TapNotYetValid { start };
        #[rustfmt::skip]
        let cases: Vec<SignInCase<'_>> = vec![
            ("valid multi-use", &enabled, Some(tap(false, false)), true, start + secs(1), Ok(())),
            ("valid one-time", &enabled, Some(tap(true, false)), true, start + secs(1), Ok(())),
            // boundaries to the second
            ("start-1s", &enabled, Some(tap(false, false)), true, start - secs(1), Err(not_yet.clone())),
            ("start", &enabled, Some(tap(false, false)), true, start, Ok(())),
            ("start+lifetime-1s", &enabled, Some(tap(false, false)), true, end - secs(1), Ok(())),
            ("start+lifetime", &enabled, Some(tap(false, false)), true, end, Err(TapExpired)),
            // not found
            ("no tap", &enabled, None, false, start, Err(TapNotFound)),
            ("no tap, code_matches ignored", &enabled, None, true, start, Err(TapNotFound)),
            ("wrong code", &enabled, Some(tap(false, false)), false, start, Err(TapNotFound)),
            ("someone else's tap", &enabled, Some(someone_elses), true, start, Err(TapNotFound)),
            // blocked by policy
            ("one-time used", &enabled, Some(tap(true, true)), true, start + secs(600), Err(TapOneTimeUsed)),
            ("multi-use under one-time policy", &one_time_policy, Some(tap(false, false)), true, start, Err(TapMultiUseForbidden)),
            ("one-time under one-time policy", &one_time_policy, Some(tap(true, false)), true, start, Ok(())),
            ("out of scope", &disabled, Some(tap(false, false)), true, start, Err(TapOutOfScope)),
            // order
            ("scope before not found", &disabled, None, false, start, Err(TapOutOfScope)),
            ("one-time used before multi-use rule", &one_time_policy, Some(tap(true, true)), true, start + secs(600), Err(TapOneTimeUsed)),
            ("not found before not yet valid", &enabled, Some(tap(false, false)), false, start - secs(1), Err(TapNotFound)),
            ("not found before expired", &enabled, Some(tap(false, false)), false, end, Err(TapNotFound)),
            ("not yet valid before used", &enabled, Some(tap(true, true)), true, start - secs(1), Err(not_yet)),
            ("expired before used", &enabled, Some(tap(true, true)), true, end, Err(TapExpired)),
            ("expired before multi-use rule", &one_time_policy, Some(tap(false, false)), true, end, Err(TapExpired)),
        ];
        for (name, policy, tap, code_matches, at, want) in cases {
            assert_eq!(
                web_sign_in_check(
                    policy,
                    &user(),
                    &[],
                    &GroupIndex::default(),
                    tap.as_ref(),
                    code_matches,
                    at
                ),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn usability_and_sign_in_agree() {
        // Over a sweep of instants and TAP shapes, a usable TAP signs in and an unusable one
        // does not, with matching reasons.
        let one_time_policy = TapPolicy {
            is_usable_once: true,
            ..policy()
        };
        let policies = [policy(), TapPolicy::default(), one_time_policy];
        let taps = [tap(false, false), tap(true, false), tap(true, true)];
        let instants = [-61, -1, 0, 1, 3599, 3600, 3601].map(|s| t(START) + secs(s));
        for p in &policies {
            for tp in &taps {
                for at in instants {
                    let (usable, reason) =
                        usability(p, &user(), &[], &GroupIndex::default(), tp, at);
                    let signed_in = web_sign_in_check(
                        p,
                        &user(),
                        &[],
                        &GroupIndex::default(),
                        Some(tp),
                        true,
                        at,
                    );
                    assert_eq!(usable, signed_in.is_ok(), "{p:?} {tp:?} {at}");
                    let expected = match reason {
                        UsabilityReason::EnabledByPolicy => None,
                        UsabilityReason::NotYetValid => Some("tap_not_yet_valid"),
                        UsabilityReason::Expired => Some("tap_expired"),
                        UsabilityReason::OneTimeUsed => Some("tap_one_time_used"),
                        UsabilityReason::DisabledByPolicy => {
                            Some(if p.state == crate::model::PolicyState::Disabled {
                                "tap_out_of_scope"
                            } else {
                                "tap_multi_use_forbidden"
                            })
                        }
                    };
                    assert_eq!(signed_in.err().map(|e| e.code()), expected);
                }
            }
        }
    }
}
