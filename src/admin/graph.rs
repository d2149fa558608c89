//! Graph-shaped JSON for the admin API: the one place that decides field names and formats.
//!
//! May depend on: `model`, `service` views, `policy`.

use chrono::SecondsFormat;
use serde_json::{json, Value};

use crate::model::{
    AuditEvent, AuditResult, Channel, Group, RegisteredMethod, SyncStatus, TapPolicy, Timestamp,
    User,
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
        // Graph's `manager` is a navigation property; its id is given here, and the details
        // of one user carry `manager` as `{id, userPrincipalName, mail}`.
        "managerId": u.manager_id,
    });
    if let (Some(manager_dn), Value::Object(map)) = (&u.manager_dn, &mut v) {
        map.insert(
            "onPremisesManagerDistinguishedName".into(),
            json!(manager_dn),
        );
    }
    if let (false, Value::Object(map)) = (u.dates.is_empty(), &mut v) {
        map.insert("onboardingDates".into(), json!(u.dates));
    }
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
            "manager".into(),
            match &d.manager {
                Some(m) => json!({
                    "id": m.id,
                    "userPrincipalName": m.user_principal_name,
                    "mail": m.mail,
                    "accountEnabled": m.account_enabled,
                }),
                None => Value::Null,
            },
        );
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

/// An audit event as Graph writes it: a sign-in attempt (web, RADIUS, federation) as a
/// `signIn` resource, everything else as a `directoryAudit`. Both carry tapd's own
/// `activityDisplayName`, `reasonCode`, `channel` and `sourceAddress` as well, so one list can
/// be filtered and tabled alike. The README's audit mapping table lists every activity.
pub fn audit_event(e: &AuditEvent) -> Value {
    let ev = &e.event;
    let details = ev.details.as_object();
    let detail = |key: &str| details.and_then(|d| d.get(key)).cloned();
    let result = match ev.result {
        AuditResult::Success => "success",
        AuditResult::Failure => "failure",
    };
    let is_sign_in = ev.activity == crate::service::activity::SIGN_IN
        && matches!(
            ev.channel,
            Channel::Web | Channel::Radius | Channel::Federation
        );
    if is_sign_in {
        let method = detail("authenticationMethod");
        let succeeded = ev.result == AuditResult::Success;
        let reason = ev.reason_code.as_deref();
        return json!({
            "@odata.type": "#microsoft.graph.signIn",
            "id": e.id.to_string(),
            "createdDateTime": time(&ev.time),
            "activityDateTime": time(&ev.time),
            "activityDisplayName": ev.activity,
            "userPrincipalName": ev.target,
            "appDisplayName": match ev.channel {
                Channel::Web => "tapd web registration".to_owned(),
                _ => ev.actor.clone(),
            },
            "clientAppUsed": match ev.channel {
                Channel::Web => "Browser",
                Channel::Radius => "RADIUS",
                _ => "Federation",
            },
            "ipAddress": ev.source_address.as_deref().map(ip_address),
            "status": {
                "errorCode": reason.map_or(0, sign_in_error_code),
                "failureReason": reason.map(failure_reason),
                "additionalDetails": reason,
            },
            "authenticationDetails": [{
                "authenticationMethod": method,
                "succeeded": succeeded,
                "authenticationStepDateTime": time(&ev.time),
                "authenticationStepResultDetail": reason.map_or("Correct credential".to_owned(), |r| r.to_owned()),
            }],
            "result": result,
            "reasonCode": ev.reason_code,
            "channel": ev.channel.as_str(),
            "sourceAddress": ev.source_address,
            "additionalDetails": additional_details(&ev.details),
        });
    }
    let (category, service) = audit_category(&ev.activity, ev.channel);
    let category = detail("category")
        .and_then(|c| c.as_str().map(str::to_owned))
        .unwrap_or_else(|| category.to_owned());
    let result_reason = detail("resultReason")
        .or_else(|| detail("message"))
        .or_else(|| ev.reason_code.clone().map(Value::String))
        .unwrap_or(Value::String(String::new()));
    let initiated_by = if ev.actor.contains('@') {
        json!({ "user": {
            "userPrincipalName": ev.actor,
            "ipAddress": ev.source_address.as_deref().map(ip_address),
        }, "app": null })
    } else {
        json!({ "user": null, "app": { "displayName": ev.actor } })
    };
    let target_resources: Vec<Value> = ev
        .target
        .iter()
        .map(|t| {
            if t.contains('@') {
                json!({ "type": "User", "userPrincipalName": t, "displayName": t })
            } else {
                json!({ "type": "Other", "displayName": t })
            }
        })
        .collect();
    json!({
        "@odata.type": "#microsoft.graph.directoryAudit",
        "id": e.id.to_string(),
        "activityDateTime": time(&ev.time),
        "activityDisplayName": ev.activity,
        "category": category,
        "loggedByService": service,
        "operationType": operation_type(&ev.activity),
        "result": result,
        "resultReason": result_reason,
        "initiatedBy": initiated_by,
        "targetResources": target_resources,
        "additionalDetails": additional_details(&ev.details),
        "reasonCode": ev.reason_code,
        "channel": ev.channel.as_str(),
        "sourceAddress": ev.source_address,
    })
}

/// Graph's `additionalDetails`: key/value pairs of strings, from tapd's detail object (the
/// fields lifted to the top level, `category` and `resultReason`, are left out).
fn additional_details(details: &Value) -> Vec<Value> {
    let Some(map) = details.as_object() else {
        return Vec::new();
    };
    map.iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "category" | "resultReason" | "activityDisplayName"
            )
        })
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            json!({ "key": k, "value": value })
        })
        .collect()
}

/// The address without its port, as Graph's `ipAddress` (`uid=0 pid=12` stays as it is).
fn ip_address(source: &str) -> String {
    match source.parse::<std::net::SocketAddr>() {
        Ok(addr) => addr.ip().to_string(),
        Err(_) => source.to_owned(),
    }
}

/// `category` and `loggedByService` of a directory audit event, by activity.
fn audit_category(activity: &str, channel: Channel) -> (&'static str, &'static str) {
    let lower = activity.to_ascii_lowercase();
    if lower.contains("security info") || lower.contains("temporary access pass") {
        ("UserManagement", "Authentication Methods")
    } else if lower.contains("authentication methods policy") {
        ("Policy", "Authentication Methods")
    } else if channel == Channel::Sync || lower.contains("directory sync") {
        ("DirectoryManagement", "Core Directory")
    } else if lower.contains("role") {
        ("RoleManagement", "Core Directory")
    } else if lower == "user signed out" {
        ("UserManagement", "Authentication Methods")
    } else {
        ("Other", "Core Directory")
    }
}

/// `operationType`: Add, Delete, Update or Other.
fn operation_type(activity: &str) -> &'static str {
    let lower = activity.to_ascii_lowercase();
    if lower.contains("registered") || lower.contains("granted") || lower.contains("entered") {
        "Add"
    } else if lower.contains("deleted") || lower.contains("revoked") {
        "Delete"
    } else if lower.starts_with("update") || lower.contains("applied") {
        "Update"
    } else {
        "Other"
    }
}

/// `status.errorCode` of a failed sign-in: Entra's AADSTS number where Entra has one for the
/// same refusal (130501 "blocked due to User Credential Policy", 130504 expired, 130506 "must
/// be used for Web Sign In", 130507 not found; 50126 wrong password, 50057 disabled account,
/// 50034 unknown user, 50053 locked), else 1: a failure Entra has no public code for.
pub fn sign_in_error_code(reason: &str) -> u32 {
    match reason {
        "tap_out_of_scope" | "tap_one_time_used" | "tap_multi_use_forbidden" => 130501,
        "tap_expired" => 130504,
        "tap_not_supported_radius" | "tap_not_supported_federation" => 130506,
        "tap_not_found" => 130507,
        "invalid_password" | "invalid_credentials" => 50126,
        "account_disabled" => 50057,
        "user_not_found" => 50034,
        "throttled" => 50053,
        _ => 1,
    }
}

/// `status.failureReason` of a failed sign-in: what the reason code means, for an operator.
pub fn failure_reason(reason: &str) -> String {
    match reason {
        "tap_out_of_scope" => "Temporary Access Pass sign in was blocked due to User Credential Policy: the user is not in the policy's scope.",
        "tap_one_time_used" => "Temporary Access Pass sign in was blocked due to User Credential Policy: the one-time pass was already used.",
        "tap_multi_use_forbidden" => "Temporary Access Pass sign in was blocked due to User Credential Policy: a multi-use pass while the policy requires one-time passes.",
        "tap_expired" => "Your Temporary Access Pass has expired.",
        "tap_not_yet_valid" => "Your Temporary Access Pass is not valid yet.",
        "tap_not_found" => "An access pass could not be found or verified for the user.",
        "tap_not_supported_radius" => "A Temporary Access Pass can't be used with RADIUS (NPS extension).",
        "tap_not_supported_federation" => "A Temporary Access Pass can't be used with the federation (AD FS) adapter.",
        "invalid_password" | "invalid_credentials" => "Invalid username or password.",
        "account_disabled" => "The user account is disabled.",
        "user_not_found" => "The user account does not exist.",
        "throttled" => "Too many failed attempts from this source; try again later.",
        "identity_conflict" => "The account is quarantined by an identity conflict.",
        other => return other.to_owned(),
    }
    .to_owned()
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
