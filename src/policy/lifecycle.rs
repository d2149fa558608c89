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
mod tests;
