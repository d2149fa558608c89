//! Reading `GET /v1/auditLogs` events, which follow Graph: a `directoryAudit` names its
//! initiator in `initiatedBy.user` or `initiatedBy.app`, its target in `targetResources` and
//! its details as `additionalDetails` key/value pairs; a `signIn` names the user in
//! `userPrincipalName` and the client in `appDisplayName`.

use serde_json::Value;

/// Who acted: the initiating user's UPN, the initiating app's name, or a sign-in's client.
pub fn initiator(event: &Value) -> Option<&str> {
    [
        "/initiatedBy/user/userPrincipalName",
        "/initiatedBy/app/displayName",
        "/appDisplayName",
    ]
    .iter()
    .find_map(|p| event.pointer(p).and_then(Value::as_str))
}

/// The user or object acted upon (a sign-in's user).
pub fn target(event: &Value) -> Option<&str> {
    ["/targetResources/0/displayName", "/userPrincipalName"]
        .iter()
        .find_map(|p| event.pointer(p).and_then(Value::as_str))
}

/// The value of `key` in `additionalDetails` (every value is a string in Graph).
pub fn detail<'a>(event: &'a Value, key: &str) -> Option<&'a str> {
    event["additionalDetails"]
        .as_array()?
        .iter()
        .find(|d| d["key"] == key)
        .and_then(|d| d["value"].as_str())
}
