//! Graph-shaped JSON for the admin API: the one place that decides field names and formats.
//!
//! May depend on: `model`, `service` views, `policy`.

use chrono::SecondsFormat;
use serde_json::{json, Value};

use crate::model::{
    AuditEvent, AuditResult, Group, RegisteredMethod, SyncStatus, TapPolicy, Timestamp, User,
};
use crate::service::explain::{self, Attempt, Explanation, TargetMatch};
use crate::service::{TapDetails, UserDetails, UserMethods};

pub use crate::model::PASSWORD_METHOD_ID;

/// A timestamp as Graph writes it: RFC 3339, UTC, `Z`.
pub fn time(t: &Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn opt_time(t: &Option<Timestamp>) -> Value {
    t.as_ref().map_or(Value::Null, |t| Value::String(time(t)))
}

/// A collection response.
pub fn collection(context: &str, value: Vec<Value>) -> Value {
    json!({ "@odata.context": context, "value": value })
}

/// The TAP policy resource.
pub fn policy(p: &TapPolicy) -> Value {
    let mut v = json!({
        "@odata.type": "#microsoft.graph.temporaryAccessPassAuthenticationMethodConfiguration",
        "id": "TemporaryAccessPass",
    });
    if let (Value::Object(map), Ok(Value::Object(fields))) = (&mut v, serde_json::to_value(p)) {
        map.extend(fields);
    }
    v
}

/// A TAP; the code only when given (the create response).
pub fn tap(d: &TapDetails, code: Option<&str>) -> Value {
    json!({
        "endDateTime": time(&d.tap.expires()),
        "@odata.type": "#microsoft.graph.temporaryAccessPassAuthenticationMethod",
        "id": d.tap.id,
        "temporaryAccessPass": code,
        "createdDateTime": time(&d.tap.created),
        "startDateTime": time(&d.tap.start),
        "lifetimeInMinutes": d.tap.lifetime_in_minutes,
        "isUsableOnce": d.tap.is_usable_once,
        "isUsable": d.is_usable,
        "methodUsabilityReason": d.reason,
    })
}

/// A user in a list.
pub fn user(u: &User) -> Value {
    let mut v = json!({
        "id": u.id,
        "userPrincipalName": u.user_principal_name,
        "onPremisesSamAccountName": u.username,
        "displayName": u.display_name,
        "mail": u.mail,
        "accountEnabled": u.account_enabled,
        "onPremisesDistinguishedName": u.dn,
    });
    if let (Some(conflict), Value::Object(map)) = (&u.identity_conflict, &mut v) {
        map.insert("identityConflict".into(), json!(conflict));
        map.insert("identityConflictMessage".into(), json!(conflict.describe()));
    }
    v
}

/// A user with groups, roles and TAP scope.
pub fn user_details(d: &UserDetails) -> Value {
    let mut v = user(&d.user);
    if let Value::Object(map) = &mut v {
        map.insert(
            "memberOf".into(),
            Value::Array(d.groups.iter().map(group_ref).collect()),
        );
        map.insert(
            "adminRoles".into(),
            Value::Array(
                d.roles
                    .iter()
                    .map(|r| Value::String(r.as_str().into()))
                    .collect(),
            ),
        );
        map.insert(
            "inTemporaryAccessPassScope".into(),
            Value::Bool(d.in_tap_scope),
        );
    }
    v
}

fn group_ref(g: &Group) -> Value {
    json!({ "id": g.id, "displayName": g.display_name, "onPremisesDistinguishedName": g.dn })
}

/// A group.
pub fn group(g: &Group) -> Value {
    json!({
        "id": g.id,
        "displayName": g.display_name,
        "onPremisesDistinguishedName": g.dn,
        "transitiveMemberCount": g.member_user_ids.len(),
    })
}

fn method(m: &RegisteredMethod) -> Value {
    let kind = match m.kind {
        crate::model::MethodKind::Fido2 => "#microsoft.graph.fido2AuthenticationMethod",
        crate::model::MethodKind::SoftwareOath => {
            "#microsoft.graph.softwareOathAuthenticationMethod"
        }
    };
    json!({
        "@odata.type": kind,
        "id": m.id,
        "displayName": m.display_name,
        "createdDateTime": time(&m.created),
    })
}

/// All of a user's methods: password, registered ones, TAP.
pub fn methods(m: &UserMethods) -> Value {
    let mut value = vec![json!({
        "@odata.type": "#microsoft.graph.passwordAuthenticationMethod",
        "id": PASSWORD_METHOD_ID,
        "displayName": "Directory password",
        "createdDateTime": Value::Null,
    })];
    value.extend(m.registered.iter().map(method));
    if let Some(t) = &m.tap {
        value.push(tap(t, None));
    }
    collection("#users/authentication/methods", value)
}

/// The sync status.
pub fn sync_status(s: &SyncStatus) -> Value {
    json!({
        "lastRunStarted": opt_time(&s.last_run_started),
        "lastRunFinished": opt_time(&s.last_run_finished),
        "lastRunDurationMs": s.last_run_duration_ms,
        "lastResult": s.last_result,
        "lastSuccess": opt_time(&s.last_success),
        "lastError": s.last_error,
        "usersSeen": s.users_seen,
        "groupsSeen": s.groups_seen,
        "usersAdded": s.users_added,
        "usersUpdated": s.users_updated,
        "usersDeleted": s.users_deleted,
        "deletionsRefused": s.deletions_refused,
        "nextRun": opt_time(&s.next_run),
        "node": s.node,
        "initiatedBy": s.initiated_by,
        "identityConflicts": s.identity_conflicts,
    })
}

/// An audit event, in the spirit of Graph's `directoryAudit`.
pub fn audit_event(e: &AuditEvent) -> Value {
    let ev = &e.event;
    json!({
        "id": e.id.to_string(),
        "activityDateTime": time(&ev.time),
        "activityDisplayName": ev.activity,
        "initiatedBy": ev.actor,
        "targetResource": ev.target,
        "result": match ev.result { AuditResult::Success => "success", AuditResult::Failure => "failure" },
        "reasonCode": ev.reason_code,
        "channel": ev.channel.as_str(),
        "sourceAddress": ev.source_address,
        "additionalDetails": ev.details,
    })
}

/// `GET …/temporaryAccessPassMethods/explain`: the first cause and the evidence. The shape is
/// documented in the README ("Why doesn't my TAP work?") and pinned by a golden file in the
/// integration tests; times are RFC 3339 UTC.
pub fn explanation(e: &Explanation) -> Value {
    let mut cause = serde_json::to_value(&e.cause).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut cause {
        for (_, value) in map.iter_mut() {
            if let Some(t) = value.as_str().and_then(|s| s.parse::<Timestamp>().ok()) {
                *value = Value::String(time(&t));
            }
        }
        map.insert("reasonCode".into(), json!(e.cause.reason_code()));
        map.insert(
            "message".into(),
            json!(e.cause.sentence(&e.user.username, &|t| time(t))),
        );
    }
    let checks: Vec<Value> = explain::steps(&e.cause)
        .into_iter()
        .map(|(check, result)| json!({ "check": check, "result": result }))
        .collect();
    let tap = e.tap.as_ref().map(|t| {
        json!({
            "id": t.id,
            "createdDateTime": time(&t.created),
            "startDateTime": time(&t.start),
            "endDateTime": time(&t.expires()),
            "lifetimeInMinutes": t.lifetime_in_minutes,
            "isUsableOnce": t.is_usable_once,
            "usedDateTime": opt_time(&t.used_at),
            "usedOn": e.tap_use.as_ref().map(|u| json!({
                "channel": u.channel,
                "sourceAddress": u.source_address,
            })),
        })
    });
    let last = |channel: &str| {
        e.last_attempts
            .iter()
            .find(|a| a.channel == channel)
            .map_or(Value::Null, attempt)
    };
    json!({
        "@odata.context": "#users/authentication/temporaryAccessPassMethods/explain",
        "user": {
            "id": e.user.id,
            "userPrincipalName": e.user.user_principal_name,
            "onPremisesSamAccountName": e.user.username,
        },
        "evaluatedDateTime": time(&e.evaluated),
        "isUsable": e.cause.reason_code().is_none(),
        "cause": cause,
        "checks": checks,
        "evidence": {
            "policy": {
                "state": e.policy_state,
                "isUsableOnce": e.policy_requires_one_time,
            },
            "accountEnabled": e.user.account_enabled,
            "identityConflict": e.user.identity_conflict.as_ref().map(|c| c.describe()),
            "includeTargets": e.included_by.iter().map(target).collect::<Vec<_>>(),
            "excludeTargets": e.excluded_by.iter().map(target).collect::<Vec<_>>(),
            "temporaryAccessPass": tap,
            "registrationInterrupt": {
                "inScope": !e.registration_interrupt.is_empty(),
                "groups": e.registration_interrupt.iter().map(target).collect::<Vec<_>>(),
            },
            "throttle": {
                "throttledAttemptsLastHour": e.throttled.len(),
                "lastThrottled": e.throttled.first().map_or(Value::Null, attempt),
            },
            "lastAttempts": {
                "web": last("web"),
                "radius": last("radius"),
                "federation": last("federation"),
            },
        },
    })
}

fn target(t: &TargetMatch) -> Value {
    json!({ "id": t.id, "targetType": t.target_type, "path": t.path })
}

fn attempt(a: &Attempt) -> Value {
    json!({
        "activityDateTime": time(&a.time),
        "result": a.result,
        "reasonCode": a.reason_code,
        "authenticationMethod": a.method,
        "sourceAddress": a.source_address,
    })
}
