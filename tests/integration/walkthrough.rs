//! The README walkthrough, run with the real `tapctl` as root against the real daemon: the
//! policy, creating (code once, Graph-shaped fields), showing (never the code), replacing,
//! refusing a lifetime outside the policy, out-of-scope and future TAPs, one-time rules.

use hyper::{Method, StatusCode};
use serde_json::Value;

use super::harness::{fields, str_field, taps_path, Tapd, Who};

/// The fields DESIGN §3 names for a TAP, besides the code.
const TAP_FIELDS: [&str; 7] = [
    "id",
    "createdDateTime",
    "startDateTime",
    "lifetimeInMinutes",
    "isUsableOnce",
    "isUsable",
    "methodUsabilityReason",
];

/// Runs `tapctl ARGS` as root and returns what it printed, asserting success.
#[track_caller]
fn root(tapd: &Tapd, args: &[&str]) -> String {
    tapd.tapctl(Who::Root, args).ok().to_owned()
}

/// The code `tapctl tap create` prints on the line after its header.
fn printed_code(out: &str) -> String {
    let mut lines = out
        .lines()
        .skip_while(|l| !l.starts_with("Temporary Access Pass for"));
    lines.next();
    lines
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
        .unwrap_or_else(|| panic!("no code printed:\n{out}"))
}

#[test]
fn readme_walkthrough_works_with_tapctl() {
    let tapd = Tapd::start();

    let users = root(&tapd, &["user", "list"]);
    assert!(users.contains("tapit-m1@example.test"), "{users}");
    let erin_like = root(&tapd, &["user", "show", "tapit-out"]);
    assert!(erin_like.contains("tapit-excluded"), "{erin_like}");

    // Disabled by default, as in Entra; enable it for tapit-users except tapit-excluded.
    let policy = root(&tapd, &["policy", "show"]);
    assert_eq!(fields(&policy)["state"], "disabled", "{policy}");
    let policy = root(
        &tapd,
        &[
            "policy",
            "set",
            "--state",
            "enabled",
            "--include-groups",
            "tapit-users",
            "--exclude-groups",
            "tapit-excluded",
        ],
    );
    let shown = fields(&policy);
    assert_eq!(shown["state"], "enabled", "{policy}");
    assert!(shown["includeTargets"].contains("tapit-users"), "{policy}");
    assert!(
        shown["excludeTargets"].contains("tapit-excluded"),
        "{policy}"
    );

    // Create: the code once, then the Graph-shaped fields.
    let out = root(&tapd, &["tap", "create", "tapit-m1"]);
    let code = printed_code(&out);
    assert_eq!(code.chars().count(), 8, "default length is 8: {out}");
    assert!(out.contains("shown only once"), "{out}");
    let created = fields(&out);
    for key in TAP_FIELDS {
        assert!(created.contains_key(key), "{key} missing:\n{out}");
    }
    assert_eq!(created["isUsable"], "true", "{out}");
    assert_eq!(created["methodUsabilityReason"], "EnabledByPolicy", "{out}");
    assert_eq!(created["lifetimeInMinutes"], "60", "{out}");
    let first_id = created["id"].clone();

    // Show: the same TAP, never the code.
    let out = root(&tapd, &["tap", "show", "tapit-m1"]);
    assert_eq!(fields(&out)["id"], first_id, "{out}");
    assert!(!out.contains(&code), "the code is shown again:\n{out}");
    let json: Value =
        serde_json::from_str(&root(&tapd, &["--json", "tap", "show", "tapit-m1"])).expect("JSON");
    let listed = &json["value"];
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{json:#}");
    assert_eq!(listed[0]["id"], first_id.as_str(), "{json:#}");
    assert_eq!(listed[0]["temporaryAccessPass"], Value::Null, "{json:#}");

    // JSON create response: the code and every field DESIGN §3 names.
    let json: Value = serde_json::from_str(&root(
        &tapd,
        &["--json", "tap", "create", "tapit-m2", "--lifetime", "2h"],
    ))
    .expect("JSON");
    assert_eq!(
        json["@odata.type"],
        "#microsoft.graph.temporaryAccessPassAuthenticationMethod"
    );
    assert_eq!(str_field(&json, "temporaryAccessPass").chars().count(), 8);
    for key in TAP_FIELDS {
        assert!(json.get(key).is_some(), "{key} missing in {json:#}");
    }
    assert_eq!(json["lifetimeInMinutes"], 120, "{json:#}");
    assert_eq!(json["isUsableOnce"], false, "{json:#}");
    assert_eq!(json["isUsable"], true, "{json:#}");
    assert_eq!(json["methodUsabilityReason"], "EnabledByPolicy", "{json:#}");
    assert_eq!(json["createdDateTime"], json["startDateTime"], "{json:#}");

    // Creating again replaces: the old id is gone.
    let out = root(&tapd, &["tap", "create", "tapit-m1", "--one-time"]);
    let second = fields(&out);
    assert_ne!(second["id"], first_id, "{out}");
    assert_eq!(second["isUsableOnce"], "true", "{out}");
    let (status, body) = tapd.api(
        Method::GET,
        &format!("{}/{first_id}", taps_path("tapit-m1")),
        None,
    );
    assert_eq!(status, StatusCode::NOT_FOUND, "old TAP still there: {body}");
    let list = tapd.get(&taps_path("tapit-m1"));
    assert_eq!(list["value"].as_array().map(Vec::len), Some(1), "{list:#}");
    assert_eq!(list["value"][0]["id"], second["id"].as_str());

    // A lifetime outside the policy is refused, naming the allowed range; nothing changes.
    tapd.tapctl(
        Who::Root,
        &["tap", "create", "tapit-m1", "--lifetime", "5m"],
    )
    .refused(
        "400",
        "Invalid lifetimeInMinutes 5: the policy allows 60 to 480 minutes.",
    );
    assert_eq!(
        tapd.get(&taps_path("tapit-m1"))["value"][0]["id"],
        second["id"].as_str()
    );

    // Out of the policy's scope: created, but not usable.
    let out = root(&tapd, &["tap", "create", "tapit-out"]);
    let outside = fields(&out);
    assert_eq!(outside["isUsable"], "false", "{out}");
    assert_eq!(
        outside["methodUsabilityReason"], "DisabledByPolicy",
        "{out}"
    );

    // Starting later: not usable yet.
    let out = root(&tapd, &["tap", "create", "tapit-m2", "--start", "+2h"]);
    let later = fields(&out);
    assert_eq!(later["isUsable"], "false", "{out}");
    assert_eq!(later["methodUsabilityReason"], "NotYetValid", "{out}");
    assert_ne!(later["startDateTime"], later["createdDateTime"], "{out}");

    // While the policy demands one-time passes, multi-use ones are refused.
    root(&tapd, &["policy", "set", "--one-time", "true"]);
    tapd.tapctl(Who::Root, &["tap", "create", "tapit-m2", "--multi-use"])
        .refused(
            "400",
            "A multi-use Temporary Access Pass can't be created: the policy requires every \
             pass to be one-time",
        );
    let out = root(&tapd, &["tap", "create", "tapit-m2"]);
    assert_eq!(fields(&out)["isUsableOnce"], "true", "{out}");

    // Delete, and the audit shows what happened.
    root(&tapd, &["tap", "delete", "tapit-m1"]);
    let out = root(&tapd, &["tap", "show", "tapit-m1"]);
    assert!(out.contains("has no Temporary Access Pass"), "{out}");
    let audit = root(&tapd, &["audit"]);
    // Entra's activity names; the TAP detail is the status reason (resultReason).
    assert!(audit.contains("Admin registered security info"), "{audit}");
    assert!(audit.contains("Admin deleted security info"), "{audit}");
    let json = root(&tapd, &["--json", "audit"]);
    assert!(
        json.contains("Admin registered temporary access pass method for user"),
        "{json}"
    );
    assert!(
        json.contains("Admin deleted temporary access pass method for user"),
        "{json}"
    );
    assert!(
        !audit.contains(&code),
        "the audit log shows a code:\n{audit}"
    );
}
