//! Unit tests of the TAP lifecycle rules: creation terms, usability at each instant, and the
//! web sign-in failure reasons and messages.

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

fn req(start: Option<Timestamp>, lifetime: Option<i64>, once: Option<bool>) -> CreateTapRequest {
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
        let got = creation_terms(&p, &req(None, None, requested), now()).map(|x| x.is_usable_once);
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
                let (usable, reason) = usability(p, &user(), &[], &GroupIndex::default(), tp, at);
                let signed_in =
                    web_sign_in_check(p, &user(), &[], &GroupIndex::default(), Some(tp), true, at);
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
