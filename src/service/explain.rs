//! `tapctl tap explain`: why a user's TAP does or doesn't work, as a helpdesk would ask it.
//!
//! Walks Entra's troubleshooting list for "my TAP doesn't work" in order and stops at the first
//! cause: identity conflict (quarantine) → policy disabled → account disabled → not included →
//! excluded → no TAP → not valid yet → expired → one-time TAP already used → multi-use TAP
//! while the policy requires one-time → usable. The order is the sign-in's own
//! (`policy::web_sign_in_check`, `policy::usability`), so the cause named here is the reason
//! code a web sign-in would record now. The evidence (policy state, the include/exclude
//! targets that apply with their nested group paths, the TAP's start and end, its one-time
//! use, registration-interrupt membership, throttling and the last attempt on each channel,
//! from the audit) is gathered whatever the cause, so one command answers the support call.
//!
//! [`walk`] is pure (everything it needs, `now` included, is a parameter); the admin session
//! gathers its inputs. Front ends render an [`Explanation`]; [`Cause::sentence`] is the one
//! place that words a cause, with times formatted by the reader (tapctl: local time; the admin
//! API: RFC 3339 UTC).
//!
//! May depend on: `model`, `policy`, `group_ref`, `sync::access` (membership paths),
//! `directory::groups` (nesting).

use serde::{Deserialize, Serialize};

use crate::directory::groups::GroupNesting;
use crate::group_ref::GroupIndex;
use crate::model::{
    AuditEvent, AuditResult, Channel, Group, PolicyState, StoredTap, TapPolicy, TargetType,
    Timestamp, User, ALL_USERS,
};
use crate::policy::scope::target_matches;

/// The first cause the walk found, with what its sentence needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "code",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum Cause {
    /// The user is quarantined: one of their sign-in names is also another user's.
    IdentityConflict {
        /// Which names, and who else claims them.
        conflict: String,
    },
    /// The TAP policy's state is `disabled`.
    PolicyDisabled,
    /// The directory account is disabled.
    AccountDisabled,
    /// No include target names the user or one of their groups.
    NotIncluded,
    /// An exclude target names the user (the first that applies; all are in the evidence).
    Excluded {
        /// The target's id as written in the policy.
        target: String,
        /// The user, then the chain of groups to the excluded group.
        path: Vec<String>,
    },
    /// The user holds no TAP.
    NoTap,
    /// The TAP's start lies in the future.
    NotYetValid {
        /// When it becomes usable.
        #[serde(rename = "startDateTime")]
        start: Timestamp,
    },
    /// The TAP's lifetime is over.
    Expired {
        /// When it stopped being usable.
        #[serde(rename = "endDateTime")]
        end: Timestamp,
    },
    /// A one-time TAP that was already used.
    OneTimeUsed {
        /// When it was used.
        #[serde(rename = "usedDateTime")]
        used: Timestamp,
        /// Where it was used, from the audit (`web`), when the audit still has the event.
        channel: Option<String>,
        /// From which address, when the audit still has the event.
        source_address: Option<String>,
    },
    /// A multi-use TAP while the policy now requires one-time passes.
    MultiUseForbidden,
    /// Nothing is in the way: the TAP works on the web page now.
    Usable {
        /// When it stops being usable.
        #[serde(rename = "endDateTime")]
        end: Timestamp,
    },
}

impl Cause {
    /// The reason code a web sign-in with the right code would record now (`None`: it would
    /// succeed).
    pub fn reason_code(&self) -> Option<&'static str> {
        Some(match self {
            Cause::IdentityConflict { .. } => crate::store::identity::IDENTITY_CONFLICT_REASON,
            Cause::PolicyDisabled
            | Cause::AccountDisabled
            | Cause::NotIncluded
            | Cause::Excluded { .. } => "tap_out_of_scope",
            Cause::NoTap => "tap_not_found",
            Cause::NotYetValid { .. } => "tap_not_yet_valid",
            Cause::Expired { .. } => "tap_expired",
            Cause::OneTimeUsed { .. } => "tap_one_time_used",
            Cause::MultiUseForbidden => "tap_multi_use_forbidden",
            Cause::Usable { .. } => return None,
        })
    }

    /// The step of the walk this cause stops at.
    pub fn check(&self) -> Check {
        match self {
            Cause::IdentityConflict { .. } => Check::Identity,
            Cause::PolicyDisabled => Check::PolicyEnabled,
            Cause::AccountDisabled => Check::AccountEnabled,
            Cause::NotIncluded => Check::Included,
            Cause::Excluded { .. } => Check::NotExcluded,
            Cause::NoTap => Check::TapPresent,
            Cause::NotYetValid { .. } => Check::Started,
            Cause::Expired { .. } => Check::NotExpired,
            Cause::OneTimeUsed { .. } => Check::NotUsed,
            Cause::MultiUseForbidden => Check::UsageAllowed,
            Cause::Usable { .. } => Check::Usable,
        }
    }

    /// The cause in a plain sentence about `user`, times written by `time` (the reader's
    /// zone).
    pub fn sentence(&self, user: &str, time: &dyn Fn(&Timestamp) -> String) -> String {
        match self {
            Cause::IdentityConflict { conflict } => format!(
                "{user} is quarantined by an identity conflict and can't sign in on any channel \
                 until the directory is fixed: {conflict}."
            ),
            Cause::PolicyDisabled => "The Temporary Access Pass policy is disabled, so nobody can \
                 sign in with a TAP."
                .to_owned(),
            Cause::AccountDisabled => {
                format!("The directory account of {user} is disabled.")
            }
            Cause::NotIncluded => format!(
                "{user} is not in the TAP policy's scope: no include target names the user or \
                 one of their groups."
            ),
            Cause::Excluded { target, path } => format!(
                "{user} is excluded from the TAP policy by {target} ({}).",
                path.join(" → ")
            ),
            Cause::NoTap => format!("{user} holds no Temporary Access Pass."),
            Cause::NotYetValid { start } => format!(
                "The TAP is not valid yet: it can be used from {}.",
                time(start)
            ),
            Cause::Expired { end } => format!("The TAP expired at {}.", time(end)),
            Cause::OneTimeUsed {
                used,
                channel,
                source_address,
            } => {
                let mut s = format!("The one-time TAP was already used at {}", time(used));
                if let Some(channel) = channel {
                    s.push_str(&format!(" on the {channel} channel"));
                }
                if let Some(address) = source_address {
                    s.push_str(&format!(" from {address}"));
                }
                s.push('.');
                s
            }
            Cause::MultiUseForbidden => "The TAP is multi-use, but the policy now requires \
                 one-time passes: create a new (one-time) TAP."
                .to_owned(),
            Cause::Usable { end } => format!(
                "Nothing is in the way: {user} can sign in with the TAP on the web page until {}.",
                time(end)
            ),
        }
    }
}

/// The steps of the walk, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Not quarantined by an identity conflict.
    Identity,
    /// The policy's state is `enabled`.
    PolicyEnabled,
    /// The directory account is enabled.
    AccountEnabled,
    /// An include target names the user.
    Included,
    /// No exclude target names the user.
    NotExcluded,
    /// The user holds a TAP.
    TapPresent,
    /// Its start has come.
    Started,
    /// Its lifetime is not over.
    NotExpired,
    /// Not a one-time TAP already used.
    NotUsed,
    /// Not multi-use while the policy requires one-time.
    UsageAllowed,
    /// Usable.
    Usable,
}

/// Every step, in the order the walk takes them.
pub const WALK: [Check; 11] = [
    Check::Identity,
    Check::PolicyEnabled,
    Check::AccountEnabled,
    Check::Included,
    Check::NotExcluded,
    Check::TapPresent,
    Check::Started,
    Check::NotExpired,
    Check::NotUsed,
    Check::UsageAllowed,
    Check::Usable,
];

/// A policy target (or interrupt group) that applies to the user, with how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetMatch {
    /// The reference as written (group id, DN or cn; user id or name; `all_users`).
    pub id: String,
    /// `group` or `user`.
    pub target_type: TargetType,
    /// The user, then the chain of groups from one the user is directly in to the target.
    pub path: Vec<String>,
}

/// One audited sign-in attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// `web`, `radius` or `federation`.
    pub channel: String,
    /// When.
    pub time: Timestamp,
    /// `success` or `failure`.
    pub result: String,
    /// The reason code, for a failure.
    pub reason_code: Option<String>,
    /// The method tried (`Temporary Access Pass`, `Password`, …) when recorded.
    pub method: Option<String>,
    /// The source address.
    pub source_address: Option<String>,
}

/// Everything found about the user's TAP, and the first cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// The user.
    pub user: User,
    /// The instant the walk evaluated.
    pub evaluated: Timestamp,
    /// The first cause (or [`Cause::Usable`]).
    pub cause: Cause,
    /// The policy now.
    pub policy_state: PolicyState,
    /// Whether the policy requires one-time passes.
    pub policy_requires_one_time: bool,
    /// Include targets that name the user.
    pub included_by: Vec<TargetMatch>,
    /// Exclude targets that name the user.
    pub excluded_by: Vec<TargetMatch>,
    /// The TAP, if any (its hash is never rendered).
    pub tap: Option<StoredTap>,
    /// The audited one-time use of the TAP: channel and address.
    pub tap_use: Option<Attempt>,
    /// Registration-interrupt groups the user is in.
    pub registration_interrupt: Vec<TargetMatch>,
    /// Throttled attempts recorded in the last hour, newest first.
    pub throttled: Vec<Attempt>,
    /// The newest sign-in attempt per channel (web, RADIUS, federation), in that order.
    pub last_attempts: Vec<Attempt>,
}

/// What [`walk`] needs, read by the caller.
pub struct Inputs<'a> {
    /// The user.
    pub user: &'a User,
    /// Their effective groups.
    pub groups: &'a [Group],
    /// Every synced group.
    pub index: &'a GroupIndex,
    /// The nesting the last sync saw, when known.
    pub nesting: Option<&'a GroupNesting>,
    /// The policy now.
    pub policy: &'a TapPolicy,
    /// The user's TAP.
    pub tap: Option<&'a StoredTap>,
    /// Configured registration-interrupt group references.
    pub interrupt_groups: &'a [String],
    /// The user's audit events, newest first.
    pub audit: &'a [AuditEvent],
    /// Now.
    pub now: Timestamp,
}

/// How long throttled attempts count as the current throttle state.
const THROTTLE_WINDOW_MINUTES: i64 = 60;

/// The walk: the first cause in Entra's order, and the evidence.
pub fn walk(inputs: &Inputs<'_>) -> Explanation {
    let Inputs {
        user,
        groups,
        index,
        nesting,
        policy,
        tap,
        interrupt_groups,
        audit,
        now,
    } = *inputs;
    let side = crate::sync::access::Side {
        user,
        index,
        nesting,
    };
    let matches = |id: &str, target_type: TargetType| -> Option<TargetMatch> {
        if !target_matches(id, target_type, user, groups, index) {
            return None;
        }
        let path = match target_type {
            TargetType::Group if id == ALL_USERS => vec![user.username.clone(), ALL_USERS.into()],
            TargetType::Group => {
                let reference = index.resolve(id);
                let group = groups
                    .iter()
                    .find(|g| reference.names(index, &g.id, &g.dn))?;
                crate::sync::access::membership_path(side, group)
            }
            TargetType::User => vec![user.username.clone()],
        };
        Some(TargetMatch {
            id: id.to_owned(),
            target_type,
            path,
        })
    };
    let included_by: Vec<TargetMatch> = policy
        .include_targets
        .iter()
        .filter_map(|t| matches(&t.id, t.target_type))
        .collect();
    let excluded_by: Vec<TargetMatch> = policy
        .exclude_targets
        .iter()
        .filter_map(|t| matches(&t.id, t.target_type))
        .collect();
    let registration_interrupt: Vec<TargetMatch> = interrupt_groups
        .iter()
        .filter_map(|g| matches(g, TargetType::Group))
        .collect();

    let sign_ins: Vec<Attempt> = audit.iter().filter_map(attempt).collect();
    let tap_use = tap.and_then(|tap| {
        let used = tap.used_at?;
        audit
            .iter()
            .find(|e| {
                e.event.result == AuditResult::Success
                    && e.event.details.get("TemporaryAccessPass.Id")
                        == Some(&serde_json::Value::String(tap.id.clone()))
                    && e.event.channel == Channel::Web
            })
            .and_then(attempt)
            .or(Some(Attempt {
                channel: Channel::Web.as_str().to_owned(),
                time: used,
                result: "success".into(),
                reason_code: None,
                method: None,
                source_address: None,
            }))
    });
    let last_attempts = [Channel::Web, Channel::Radius, Channel::Federation]
        .into_iter()
        .filter_map(|c| sign_ins.iter().find(|a| a.channel == c.as_str()).cloned())
        .collect();
    let throttled = sign_ins
        .iter()
        .filter(|a| {
            a.reason_code.as_deref() == Some("throttled")
                && now - a.time < chrono::Duration::minutes(THROTTLE_WINDOW_MINUTES)
        })
        .cloned()
        .collect();

    let cause = first_cause(user, policy, &included_by, &excluded_by, tap, &tap_use, now);
    Explanation {
        user: user.clone(),
        evaluated: now,
        cause,
        policy_state: policy.state,
        policy_requires_one_time: policy.is_usable_once,
        included_by,
        excluded_by,
        tap: tap.cloned(),
        tap_use,
        registration_interrupt,
        throttled,
        last_attempts,
    }
}

/// The troubleshooting list, in order; the first step that fails is the cause.
fn first_cause(
    user: &User,
    policy: &TapPolicy,
    included_by: &[TargetMatch],
    excluded_by: &[TargetMatch],
    tap: Option<&StoredTap>,
    tap_use: &Option<Attempt>,
    now: Timestamp,
) -> Cause {
    if let Some(conflict) = &user.identity_conflict {
        return Cause::IdentityConflict {
            conflict: conflict.describe(),
        };
    }
    if policy.state != PolicyState::Enabled {
        return Cause::PolicyDisabled;
    }
    if !user.account_enabled {
        return Cause::AccountDisabled;
    }
    if included_by.is_empty() {
        return Cause::NotIncluded;
    }
    if let Some(first) = excluded_by.first() {
        return Cause::Excluded {
            target: first.id.clone(),
            path: first.path.clone(),
        };
    }
    let Some(tap) = tap else {
        return Cause::NoTap;
    };
    if now < tap.start {
        return Cause::NotYetValid { start: tap.start };
    }
    if now >= tap.expires() {
        return Cause::Expired { end: tap.expires() };
    }
    if let (true, Some(used)) = (tap.is_usable_once, tap.used_at) {
        return Cause::OneTimeUsed {
            used,
            channel: tap_use.as_ref().map(|u| u.channel.clone()),
            source_address: tap_use.as_ref().and_then(|u| u.source_address.clone()),
        };
    }
    if policy.is_usable_once && !tap.is_usable_once {
        return Cause::MultiUseForbidden;
    }
    Cause::Usable { end: tap.expires() }
}

/// A sign-in attempt on the web, RADIUS or federation channel, from its audit event.
fn attempt(e: &AuditEvent) -> Option<Attempt> {
    let ev = &e.event;
    if !matches!(
        ev.channel,
        Channel::Web | Channel::Radius | Channel::Federation
    ) || !is_sign_in(&ev.activity)
    {
        return None;
    }
    Some(Attempt {
        channel: ev.channel.as_str().to_owned(),
        time: ev.time,
        result: match ev.result {
            AuditResult::Success => "success",
            AuditResult::Failure => "failure",
        }
        .to_owned(),
        reason_code: ev.reason_code.clone(),
        method: ev
            .details
            .get("authenticationMethod")
            .and_then(|m| m.as_str())
            .map(str::to_owned),
        source_address: ev.source_address.clone(),
    })
}

/// Whether an activity name is a sign-in's.
fn is_sign_in(activity: &str) -> bool {
    activity.eq_ignore_ascii_case(super::activity::SIGN_IN)
}

/// Each step of the walk with its result: `pass` before the cause, `fail` at it (`pass` for
/// [`Cause::Usable`]), `not_reached` after.
pub fn steps(cause: &Cause) -> Vec<(Check, &'static str)> {
    let stop = cause.check();
    let mut reached = true;
    WALK.iter()
        .map(|&check| {
            let result = if !reached {
                "not_reached"
            } else if check == stop {
                reached = false;
                if check == Check::Usable {
                    "pass"
                } else {
                    "fail"
                }
            } else {
                "pass"
            };
            (check, result)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::model::{ExcludeTarget, IncludeTarget};

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn user() -> User {
        User {
            id: "u-1".into(),
            dn: "uid=erin,dc=example,dc=org".into(),
            username: "erin".into(),
            user_principal_name: "erin@example.org".into(),
            display_name: "Erin".into(),
            mail: None,
            account_enabled: true,
            group_ids: vec![],
            identity_conflict: None,
            manager_dn: None,
            manager_id: None,
            dates: Default::default(),
        }
    }

    fn tap(once: bool, used: bool) -> StoredTap {
        StoredTap {
            id: "tap-1".into(),
            user_id: "u-1".into(),
            code_hash: "$argon2id$".into(),
            created: t("2026-11-27T09:00:00Z"),
            start: t("2026-11-27T10:00:00Z"),
            lifetime_in_minutes: 60,
            is_usable_once: once,
            used_at: used.then(|| t("2026-11-27T10:05:00Z")),
            code_length: None,
        }
    }

    fn explain(policy: &TapPolicy, user: &User, tap: Option<&StoredTap>, now: &str) -> Cause {
        walk(&Inputs {
            user,
            groups: &[],
            index: &GroupIndex::default(),
            nesting: None,
            policy,
            tap,
            interrupt_groups: &[],
            audit: &[],
            now: t(now),
        })
        .cause
    }

    /// (name, policy, user, the user's TAP, now, expected cause code)
    type WalkCase<'a> = (
        &'a str,
        &'a TapPolicy,
        &'a User,
        Option<&'a StoredTap>,
        &'a str,
        &'a str,
    );

    /// Where two causes hold at once, the one earlier in Entra's list is named.
    #[test]
    fn the_walk_stops_at_the_first_cause_in_order() {
        let enabled = TapPolicy {
            state: PolicyState::Enabled,
            ..TapPolicy::default()
        };
        let one_time = TapPolicy {
            is_usable_once: true,
            ..enabled.clone()
        };
        let excluding = TapPolicy {
            exclude_targets: vec![ExcludeTarget {
                id: "erin".into(),
                target_type: TargetType::User,
            }],
            ..one_time.clone()
        };
        let nobody = TapPolicy {
            include_targets: vec![IncludeTarget {
                id: "someone-else".into(),
                target_type: TargetType::User,
                is_registration_required: false,
            }],
            ..enabled.clone()
        };
        let disabled_user = User {
            account_enabled: false,
            ..user()
        };
        let erin = user();
        let default_policy = TapPolicy::default();
        let in_window = "2026-11-27T10:10:00Z";
        let before = "2026-11-27T09:30:00Z";
        let after = "2026-11-27T11:00:00Z";
        let used = tap(true, true);
        let multi = tap(false, false);
        #[rustfmt::skip]
        let cases: Vec<WalkCase<'_>> = vec![
            ("policy disabled before account", &default_policy, &disabled_user, Some(&multi), in_window, "policy_disabled"),
            ("account before inclusion", &nobody, &disabled_user, Some(&multi), in_window, "account_disabled"),
            ("inclusion before tap", &nobody, &erin, None, in_window, "not_included"),
            ("exclusion before tap", &excluding, &erin, None, in_window, "excluded"),
            ("no tap", &enabled, &erin, None, in_window, "no_tap"),
            ("not yet valid before used", &enabled, &erin, Some(&used), before, "not_yet_valid"),
            ("expired before used", &enabled, &erin, Some(&used), after, "expired"),
            ("expired before multi-use rule", &one_time, &erin, Some(&multi), after, "expired"),
            ("used before multi-use rule", &one_time, &erin, Some(&used), in_window, "one_time_used"),
            ("multi-use under one-time policy", &one_time, &erin, Some(&multi), in_window, "multi_use_forbidden"),
            ("usable", &enabled, &erin, Some(&multi), in_window, "usable"),
        ];
        for (name, policy, user, tap, now, code) in cases {
            let cause = explain(policy, user, tap, now);
            let json = serde_json::to_value(&cause).unwrap();
            assert_eq!(json["code"], code, "{name}: {cause:?}");
        }
    }

    #[test]
    fn steps_pass_until_the_cause_and_are_not_reached_after() {
        let walked = steps(&Cause::NoTap);
        let results: Vec<&str> = walked.iter().map(|(_, r)| *r).collect();
        assert_eq!(
            results,
            [
                "pass",
                "pass",
                "pass",
                "pass",
                "pass",
                "fail",
                "not_reached",
                "not_reached",
                "not_reached",
                "not_reached",
                "not_reached"
            ]
        );
        assert!(steps(&Cause::Usable {
            end: t("2026-11-27T11:00:00Z")
        })
        .iter()
        .all(|(_, r)| *r == "pass"));
    }

    /// The cause's reason code is what the web sign-in records for the same state.
    #[test]
    fn reason_codes_match_the_sign_in() {
        assert_eq!(
            Cause::OneTimeUsed {
                used: t("2026-11-27T10:05:00Z"),
                channel: None,
                source_address: None
            }
            .reason_code(),
            Some("tap_one_time_used")
        );
        assert_eq!(
            Cause::MultiUseForbidden.reason_code(),
            Some("tap_multi_use_forbidden")
        );
        assert_eq!(
            Cause::AccountDisabled.reason_code(),
            Some("tap_out_of_scope")
        );
        assert_eq!(
            Cause::Usable {
                end: t("2026-11-27T11:00:00Z")
            }
            .reason_code(),
            None
        );
    }
}
