//! The role matrix of DESIGN §2 over the real socket: `tapctl` runs as different local accounts,
//! the daemon identifies each by SO_PEERCRED, maps it to the directory user of the same name and
//! allows exactly what that user's role allows. Refusals are 403 with the server's message,
//! printed by `tapctl`, and recorded in the audit log.

use serde_json::Value;

use super::harness::{local_accounts, str_field, upn, Tapd, Who};
use crate::support::audit;

const GA: Who = Who::Local("tapit-ga");
const PA: Who = Who::Local("tapit-pa");
const AA: Who = Who::Local("tapit-aa");
const POL: Who = Who::Local("tapit-pol");
const RD: Who = Who::Local("tapit-rd");
const MEM: Who = Who::Local("tapit-mem");
const NOBODY: Who = Who::Local("tapit-nobody");

const CREATE_ACTIVITY: &str = "Admin registered security info";
const NEEDS_TAP_ROLE: &str = "you need one of: global_administrator, \
     privileged_authentication_administrator, authentication_administrator";
const NEEDS_POLICY_ROLE: &str =
    "to change the Temporary Access Pass policy you need one of: global_administrator, \
     authentication_policy_administrator";
const OWN_ACCOUNT: &str = "administrators can't create a Temporary Access Pass for themselves";

/// Creates a TAP for `user` as `who` and returns the create response.
#[track_caller]
fn create(tapd: &Tapd, who: Who, user: &str) -> Value {
    let tap = tapd.tapctl(who, &["--json", "tap", "create", user]).json();
    assert!(
        tap["temporaryAccessPass"]
            .as_str()
            .is_some_and(|c| c.len() >= 8),
        "no code in {tap:#}"
    );
    tap
}

/// The id of `user`'s TAP as root sees it.
fn stored_tap_id(tapd: &Tapd, user: &str) -> Option<String> {
    let list = tapd.get(&super::harness::taps_path(user));
    list["value"][0]["id"].as_str().map(str::to_owned)
}

#[test]
fn each_role_may_do_what_the_matrix_allows_and_gets_403_otherwise() {
    let tapd = Tapd::start();
    let accounts = local_accounts();

    // root, the break-glass global administrator, does everything.
    tapd.tapctl(Who::Root, &["policy", "set", "--state", "enabled"])
        .ok();
    create(&tapd, Who::Root, "tapit-m1");
    create(&tapd, Who::Root, "tapit-ga");
    tapd.tapctl(Who::Root, &["tap", "delete", "tapit-ga"]).ok();
    tapd.tapctl(Who::Root, &["sync", "run"]).ok();
    tapd.tapctl(Who::Root, &["audit"]).ok();
    tapd.tapctl(Who::Root, &["user", "list"]).ok();

    // global administrator: TAPs of members and admins, the policy; never their own TAP.
    let by_ga = create(&tapd, GA, "tapit-m1");
    assert_eq!(
        stored_tap_id(&tapd, "tapit-m1").as_deref(),
        Some(str_field(&by_ga, "id"))
    );
    create(&tapd, GA, "tapit-pa");
    let policy = tapd
        .tapctl(GA, &["--json", "policy", "set", "--length", "10"])
        .json();
    assert_eq!(policy["defaultLength"], 10, "{policy:#}");
    tapd.tapctl(GA, &["audit"]).ok();
    tapd.tapctl(GA, &["tap", "create", "tapit-ga"])
        .forbidden(OWN_ACCOUNT);
    assert_eq!(stored_tap_id(&tapd, "tapit-ga"), None);

    // privileged authentication administrator: TAPs of admins and members, not the policy.
    create(&tapd, PA, "tapit-aa");
    create(&tapd, PA, "tapit-m2");
    tapd.tapctl(PA, &["tap", "delete", "tapit-aa"]).ok();
    assert_eq!(stored_tap_id(&tapd, "tapit-aa"), None);
    tapd.tapctl(PA, &["tap", "create", "tapit-pa"])
        .forbidden(OWN_ACCOUNT);
    tapd.tapctl(PA, &["policy", "set", "--state", "disabled"])
        .forbidden(NEEDS_POLICY_ROLE);

    // authentication administrator: TAPs of members only.
    let by_aa = create(&tapd, AA, "tapit-m1");
    let code_by_aa = str_field(&by_aa, "temporaryAccessPass").to_owned();
    assert_eq!(str_field(&by_aa, "temporaryAccessPass").len(), 10);
    tapd.tapctl(AA, &["tap", "create", "tapit-rd"]).forbidden(
        "an authentication administrator can manage Temporary Access Passes of members only",
    );
    assert_eq!(stored_tap_id(&tapd, "tapit-rd"), None);
    tapd.tapctl(AA, &["tap", "create", "tapit-aa"])
        .forbidden(OWN_ACCOUNT);
    tapd.tapctl(AA, &["policy", "show"]).forbidden(
        "to read the Temporary Access Pass policy you need one of: global_administrator, \
         authentication_policy_administrator, global_reader",
    );

    // authentication policy administrator: the policy, no TAPs.
    let policy = tapd
        .tapctl(
            POL,
            &["--json", "policy", "set", "--default-lifetime", "90"],
        )
        .json();
    assert_eq!(policy["defaultLifetimeInMinutes"], 90, "{policy:#}");
    assert_eq!(
        tapd.get(super::harness::POLICY_PATH)["defaultLifetimeInMinutes"],
        90
    );
    tapd.tapctl(POL, &["policy", "show"]).ok();
    tapd.tapctl(POL, &["tap", "create", "tapit-m1"])
        .forbidden(NEEDS_TAP_ROLE);
    assert_eq!(
        stored_tap_id(&tapd, "tapit-m1").as_deref(),
        Some(str_field(&by_aa, "id"))
    );

    // global reader: reads TAP details (never a code), the policy and the audit; no writes.
    let shown = tapd
        .tapctl(RD, &["--json", "tap", "show", "tapit-m1"])
        .json();
    assert_eq!(shown["value"][0]["id"], by_aa["id"], "{shown:#}");
    assert_eq!(shown["value"][0]["temporaryAccessPass"], Value::Null);
    let table = tapd.tapctl(RD, &["tap", "show", "tapit-m1"]);
    assert!(table.ok().contains(str_field(&by_aa, "id")), "{table}");
    assert!(!table.stdout.contains(&code_by_aa), "{table}");
    tapd.tapctl(RD, &["policy", "show"]).ok();
    tapd.tapctl(RD, &["audit"]).ok();
    // The audit chain's verification is a read of the audit: readers may, others may not.
    assert!(tapd
        .tapctl(RD, &["audit", "verify"])
        .ok()
        .contains("audit chain verified"));
    tapd.tapctl(POL, &["audit", "verify"])
        .forbidden("to read the audit log you need one of: global_administrator, global_reader");
    tapd.tapctl(RD, &["tap", "create", "tapit-m1"])
        .forbidden(NEEDS_TAP_ROLE);
    tapd.tapctl(RD, &["tap", "delete", "tapit-m1"])
        .forbidden("to delete a Temporary Access Pass you need one of");
    tapd.tapctl(RD, &["policy", "set", "--state", "disabled"])
        .forbidden(NEEDS_POLICY_ROLE);
    assert_eq!(
        stored_tap_id(&tapd, "tapit-m1").as_deref(),
        Some(str_field(&by_aa, "id"))
    );
    assert_eq!(tapd.get(super::harness::POLICY_PATH)["state"], "enabled");

    // Nobody manages their own TAP over the socket, whatever their role.
    for (who, name) in [(POL, "tapit-pol"), (RD, "tapit-rd")] {
        tapd.tapctl(who, &["tap", "create", name]).forbidden(
            "to create a Temporary Access Pass you need one of: global_administrator, \
             privileged_authentication_administrator",
        );
        assert_eq!(stored_tap_id(&tapd, name), None);
    }

    // A directory user without any role, and a local account with no directory user.
    tapd.tapctl(MEM, &["tap", "show", "tapit-m1"])
        .forbidden(&format!(
            "{} holds no tapd administrator role",
            upn("tapit-mem")
        ));
    tapd.tapctl(NOBODY, &["policy", "show"]).forbidden(
        "local account tapit-nobody is not mapped to a directory user and may not use the admin API",
    );

    // Every refusal is in the audit log, with the caller's uid as its source.
    let audit = tapd.audit();
    let refused = |actor: &str, activity: &str, target: Option<&str>, uid: u32| {
        let found = audit.iter().any(|e| {
            e["result"] == "failure"
                && e["reasonCode"] == "forbidden"
                && e["channel"] == "admin"
                && audit::initiator(e) == Some(actor)
                && e["activityDisplayName"] == activity
                && target.is_none_or(|t| audit::target(e) == Some(t))
                && e["sourceAddress"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(&format!("uid={uid} ")))
        });
        assert!(
            found,
            "no audited refusal of {actor} / {activity} / {target:?} from uid {uid}:\n{:#}",
            Value::Array(audit.clone())
        );
    };
    let uid = |name| accounts.uid(name);
    let ga = upn("tapit-ga");
    refused(&ga, CREATE_ACTIVITY, Some(&ga), uid("tapit-ga"));
    refused(
        &upn("tapit-pa"),
        "Update authentication methods policy",
        None,
        uid("tapit-pa"),
    );
    refused(
        &upn("tapit-aa"),
        CREATE_ACTIVITY,
        Some(&upn("tapit-rd")),
        uid("tapit-aa"),
    );
    refused(
        &upn("tapit-pol"),
        CREATE_ACTIVITY,
        Some(&upn("tapit-m1")),
        uid("tapit-pol"),
    );
    refused(
        &upn("tapit-rd"),
        "Admin deleted security info",
        Some(&upn("tapit-m1")),
        uid("tapit-rd"),
    );
    refused(
        &upn("tapit-mem"),
        "Admin API access",
        None,
        uid("tapit-mem"),
    );
    refused(
        "tapit-nobody",
        "Admin API access",
        None,
        uid("tapit-nobody"),
    );

    // Successful changes name the acting directory user and their uid.
    let created_by_aa = audit.iter().any(|e| {
        e["result"] == "success"
            && audit::initiator(e) == Some(upn("tapit-aa").as_str())
            && audit::detail(e, "TemporaryAccessPass.Id") == by_aa["id"].as_str()
            && e["resultReason"] == "Admin registered temporary access pass method for user"
            && e["category"] == "UserManagement"
            && e["loggedByService"] == "Authentication Methods"
            && e["sourceAddress"]
                .as_str()
                .is_some_and(|s| s.starts_with(&format!("uid={} ", uid("tapit-aa"))))
    });
    assert!(created_by_aa, "the TAP created by tapit-aa is not audited");

    // The operator sees each role refusal in tapd's own log, at info, with the 403 it got.
    let log = tapd.log_text();
    let logged_refusal = |message: &str| {
        log.lines().any(|line| {
            line.starts_with("INFO ")
                && line.contains("tapd::admin::error: admin API refused (403 Forbidden): ")
                && line.contains(message)
        })
    };
    assert!(logged_refusal(NEEDS_POLICY_ROLE), "{log}");
    assert!(
        logged_refusal(&format!(
            "{} holds no tapd administrator role",
            upn("tapit-mem")
        )),
        "{log}"
    );
}
