//! Group references against a real slapd: a group whose cn is the text of an admin group's DN,
//! or that shares a role group's cn, confers nothing; every sync audits an ambiguous cn; role
//! and scope changes are audited with the group path they hold through.

use ldap3::Mod;
use serde_json::json;
use tapd::model::AuditResult;
use tapd::policy::{AdminRole, PolicyPatch, RoleMapping};
use tapd::service::Caller;

use super::fixtures::{group_dn, user_dn};
use super::harness::{Slapd, BASE_DN};
use super::{settings, Node};

/// An OU under the group base where a user with self-service rights could create groups.
fn self_service_ou() -> String {
    format!("ou=self-service,ou=groups,{BASE_DN}")
}

async fn add_self_service_group(admin: &mut ldap3::Ldap, cn: &str, members: &[String]) -> String {
    let ou = self_service_ou();
    // The OU may exist already.
    let _ = admin
        .add(
            &ou,
            vec![
                ("objectClass", ["organizationalUnit"].into()),
                ("ou", ["self-service"].into()),
            ],
        )
        .await;
    let dn = format!(
        "cn={},{ou}",
        tapd::directory::ldap::escape::escape_dn_value(cn)
    );
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    admin
        .add(
            &dn,
            vec![
                ("objectClass", ["groupOfNames"].into()),
                ("cn", [cn].into()),
                ("member", members.into_iter().collect()),
            ],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    dn
}

fn roles(entries: &[(AdminRole, &str)]) -> RoleMapping {
    let mut mapping = RoleMapping::default();
    for (role, reference) in entries {
        mapping
            .0
            .entry(*role)
            .or_default()
            .push((*reference).to_owned());
    }
    mapping
}

fn caller(name: &str) -> Caller {
    Caller {
        uid: 4242,
        pid: None,
        local_username: Some(name.to_owned()),
    }
}

/// The roles `username` holds, as the admin API sees them.
async fn roles_of(node: &Node, username: &str) -> Vec<AdminRole> {
    let user = node.user(username).await;
    let (_, roles) = node.service.roles_of(&user).await.unwrap();
    roles.into_iter().collect()
}

async fn enable_policy_by_dn(node: &Node) {
    let patch: PolicyPatch = serde_json::from_value(json!({
        "state": "enabled",
        "includeTargets": [{"id": group_dn("tap-users"), "targetType": "group"}],
        "excludeTargets": [{"id": group_dn("tap-excluded"), "targetType": "group"}],
    }))
    .unwrap();
    node.root().await.patch_policy(&patch).await.unwrap();
}

#[tokio::test]
async fn a_group_named_after_an_admin_groups_dn_confers_no_role_and_no_scope() {
    let slapd = Slapd::start(&super::fixtures::directory());
    let admins_dn = group_dn("tap-admins");
    let node = Node::with_roles(
        settings(&slapd),
        roles(&[(AdminRole::GlobalAdministrator, &admins_dn)]),
    )
    .await;
    enable_policy_by_dn(&node).await;
    let mut admin = slapd.admin().await;
    // user0001 is in no TAP group; the spoofs' cns are the DNs of the admin and scope groups.
    add_self_service_group(&mut admin, &admins_dn, &[user_dn("user0001")]).await;
    add_self_service_group(&mut admin, &group_dn("tap-users"), &[user_dn("user0001")]).await;
    let status = node.sync().await;
    assert_eq!(status.last_result.as_deref(), Some("success"), "{status:?}");

    let spoofed = node.user("user0001").await;
    assert_eq!(spoofed.group_ids.len(), 3, "the spoof groups were synced");
    assert!(roles_of(&node, "user0001").await.is_empty());
    assert!(node.service.admin(caller("user0001")).await.is_err());
    assert!(!super::scoped_by(&node, "user0001").await);
    // The real group's member keeps the role, a real tap-users member the scope.
    assert_eq!(
        roles_of(&node, "gadmin").await,
        vec![AdminRole::GlobalAdministrator]
    );
    assert!(node.service.admin(caller("gadmin")).await.is_ok());
    assert!(super::scoped_by(&node, "alice").await);
}

#[tokio::test]
async fn a_second_group_with_a_role_groups_cn_makes_the_cn_name_nothing() {
    let slapd = Slapd::start(&super::fixtures::directory());
    let node = Node::with_roles(
        settings(&slapd),
        roles(&[
            (AdminRole::GlobalAdministrator, "tap-admins"),
            (AdminRole::GlobalReader, &group_dn("tap-admins")),
        ]),
    )
    .await;
    node.sync().await;
    assert_eq!(
        roles_of(&node, "gadmin").await,
        vec![AdminRole::GlobalAdministrator, AdminRole::GlobalReader]
    );
    assert!(node.audit("ambiguous group reference").await.is_empty());

    let mut admin = slapd.admin().await;
    let twin = add_self_service_group(&mut admin, "TAP-Admins", &[user_dn("alice")]).await;
    let status = node.sync().await;
    assert_eq!(status.last_result.as_deref(), Some("success"), "{status:?}");

    // Nobody holds the role through the cn; the DN still names the real group.
    assert!(roles_of(&node, "alice").await.is_empty());
    assert!(node.service.admin(caller("alice")).await.is_err());
    assert_eq!(
        roles_of(&node, "gadmin").await,
        vec![AdminRole::GlobalReader]
    );
    // Audited once for this sync, naming the reference and both groups.
    let ambiguous = node.audit("ambiguous group reference").await;
    assert_eq!(ambiguous.len(), 1, "{ambiguous:?}");
    let event = &ambiguous[0].event;
    assert_eq!(event.result, AuditResult::Failure);
    assert_eq!(
        event.details["place"],
        json!("admin.roles.global_administrator")
    );
    assert_eq!(event.details["reference"], json!("tap-admins"));
    let dns = event.details["groupDns"].as_array().unwrap();
    assert_eq!(dns.len(), 2, "{dns:?}");
    assert!(dns.contains(&json!(group_dn("tap-admins"))));
    assert!(dns.contains(&json!(twin)));
    // gadmin's loss of the role through the cn is audited too.
    let revoked = node.audit("admin role revoked").await;
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(
        revoked[0].event.target.as_deref(),
        Some("gadmin@example.org")
    );
    assert_eq!(
        revoked[0].event.details["role"],
        json!("global_administrator")
    );
    // Every sync that finds the ambiguity audits it again.
    node.sync().await;
    assert_eq!(node.audit("ambiguous group reference").await.len(), 2);
}

/// The changes audited for `upn` under `activity`, as (role, path).
async fn audited(node: &Node, activity: &str, upn: &str) -> Vec<(String, String)> {
    node.audit(activity)
        .await
        .into_iter()
        .filter(|e| e.event.target.as_deref() == Some(upn))
        .map(|e| {
            (
                e.event.details["role"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                e.event.details["path"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn role_and_scope_changes_are_audited_with_their_group_path() {
    let slapd = Slapd::start(&super::fixtures::directory());
    let node = Node::with_roles(
        settings(&slapd),
        roles(&[(AdminRole::GlobalAdministrator, &group_dn("tap-admins"))]),
    )
    .await;
    enable_policy_by_dn(&node).await;
    node.sync().await;
    let upn = "user0001@example.org";
    assert!(audited(&node, "admin role granted", upn).await.is_empty());

    // user0001 joins tap-admins through a nested group.
    let mut admin = slapd.admin().await;
    admin
        .add(
            &group_dn("admin-helpers"),
            vec![
                ("objectClass", ["groupOfNames"].into()),
                ("cn", ["admin-helpers"].into()),
                ("member", [user_dn("user0001").as_str()].into()),
            ],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    admin
        .modify(
            &group_dn("tap-admins"),
            vec![Mod::Add(
                "member",
                [group_dn("admin-helpers").as_str()].into(),
            )],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    node.sync().await;
    assert_eq!(
        audited(&node, "admin role granted", upn).await,
        vec![(
            "global_administrator".to_owned(),
            "user0001 → admin-helpers → tap-admins".to_owned()
        )]
    );
    // Nobody else's access changed.
    assert_eq!(
        node.audit("admin role granted").await.len(),
        2,
        "gadmin at the first sync, user0001 now"
    );

    // Out again.
    admin
        .modify(
            &group_dn("tap-admins"),
            vec![Mod::Delete(
                "member",
                [group_dn("admin-helpers").as_str()].into(),
            )],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    node.sync().await;
    assert_eq!(
        audited(&node, "admin role revoked", upn).await,
        vec![(
            "global_administrator".to_owned(),
            "user0001 → admin-helpers → tap-admins".to_owned()
        )]
    );
    assert!(roles_of(&node, "user0001").await.is_empty());

    // erin (engineering, inside staff, inside tap-users) into the exclude group and back.
    let erin = "erin@example.org";
    admin
        .modify(
            &group_dn("tap-excluded"),
            vec![Mod::Add("member", [user_dn("erin").as_str()].into())],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    node.sync().await;
    let left = audited(&node, "moved out of TAP scope", erin).await;
    assert_eq!(
        left,
        vec![(
            "TAP scope".to_owned(),
            "erin → engineering → staff → tap-users".to_owned()
        )]
    );
    let out = node.audit("moved out of TAP scope").await;
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].event.details["reason"], json!("excluded"));
    admin
        .modify(
            &group_dn("tap-excluded"),
            vec![Mod::Delete("member", [user_dn("erin").as_str()].into())],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    node.sync().await;
    assert_eq!(
        audited(&node, "moved into TAP scope", erin).await,
        vec![(
            "TAP scope".to_owned(),
            "erin → engineering → staff → tap-users".to_owned()
        )]
    );
}
