//! Sign-in names are keys, against slapd: a user who edits their own `mail` (the openldap
//! preset's userPrincipalName) to another user's username or UPN is quarantined, never
//! mistaken for that user; the user who held the name keeps signing in with their own
//! password; the conflict is visible in the store, the sync status and the audit, and lifts
//! when the directory is fixed.

use std::collections::HashSet;

use ldap3::Mod;
use tapd::model::AuditResult;
use tapd::service::ServiceError;
use tapd::signin::{RejectReason, SignIn, SignInOutcome};

use super::fixtures::{self, password_of, user_dn};
use super::harness::Slapd;
use super::{radius, settings, Node};

async fn set_mail(slapd: &Slapd, uid: &str, mail: &str) {
    slapd
        .admin()
        .await
        .modify(
            &user_dn(uid),
            vec![Mod::Replace("mail", HashSet::from([mail]))],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
}

async fn conflict_events(node: &Node, activity: &str) -> Vec<tapd::model::AuditEvent> {
    let mut events = node.audit(activity).await;
    events.retain(|e| e.event.activity == activity);
    events
}

/// Asserts the whole attack picture for `name`, a name alice holds and dave (the attacker,
/// with his own password) now claims through his `mail`.
async fn attack_fails(node: &Node, signin: &SignIn, name: &str, alice_id: &str, dave_id: &str) {
    // The attacker's password under the victim's name: no accept.
    let outcome = signin
        .authenticate(&radius(), name, &password_of("dave"))
        .await;
    assert!(
        !matches!(outcome, SignInOutcome::Accept { .. }),
        "{name} with dave's password: {outcome:?}"
    );
    // The victim's own password under the contested name: accepted as the victim.
    match signin
        .authenticate(&radius(), name, &password_of("alice"))
        .await
    {
        SignInOutcome::Accept { user, .. } => assert_eq!(user.id, alice_id),
        other => panic!("alice's own password under {name:?} was refused: {other:?}"),
    }
    // The attacker is quarantined: not even his own name and password sign in.
    assert_eq!(
        signin
            .authenticate(&radius(), "dave", &password_of("dave"))
            .await,
        SignInOutcome::Reject {
            reason: RejectReason::IdentityConflict,
            message: None
        }
    );
    // Admin lookups by the contested name act on the victim; the attacker gets no TAP.
    assert_eq!(node.user(name).await.id, alice_id);
    let dave = node.store().user(dave_id).await.unwrap().unwrap();
    let conflict = dave.identity_conflict.expect("dave is quarantined");
    assert_eq!(conflict.names[0].held_by.as_ref().unwrap().id, alice_id);
    let root = node.root().await;
    match root.create_tap("dave", &Default::default()).await {
        Err(ServiceError::Conflict(message)) => {
            assert!(message.contains("quarantined"), "{message}")
        }
        other => panic!("a TAP for the quarantined user: {other:?}"),
    }
    let status = root.sync_status().await.unwrap();
    assert_eq!(status.identity_conflicts.len(), 1, "{status:?}");
    assert!(status.identity_conflicts[0].contains(&user_dn("dave")));
}

#[tokio::test]
async fn a_user_who_takes_another_users_name_through_mail_is_quarantined() {
    let slapd = Slapd::start(&fixtures::directory());
    let node = Node::new(settings(&slapd)).await;
    node.sync().await;
    let alice = node.user("alice").await;
    let dave = node.user("dave").await;
    let signin = node.sign_in();

    // dave sets his mail (his UPN) to alice's username, in another case.
    set_mail(&slapd, "dave", "ALICE").await;
    node.sync().await;
    attack_fails(&node, &signin, "alice", &alice.id, &dave.id).await;
    let events = conflict_events(&node, "Directory sync: identity conflict").await;
    assert_eq!(events.len(), 1, "audited once: {events:?}");
    let details = events[0].event.details.to_string();
    assert!(details.contains(&user_dn("dave")) && details.contains(&user_dn("alice")));
    assert_eq!(events[0].event.result, AuditResult::Failure);
    // Another sync changes nothing and audits nothing again.
    node.sync().await;
    assert_eq!(
        conflict_events(&node, "Directory sync: identity conflict")
            .await
            .len(),
        1
    );
    assert_eq!(
        node.service.metrics().identity_conflicts.get(),
        1.0,
        "tapd_identity_conflicts"
    );

    // Then to alice's userPrincipalName.
    set_mail(&slapd, "dave", &alice.user_principal_name).await;
    node.service.syncer().run_incremental("test").await.unwrap();
    attack_fails(
        &node,
        &signin,
        &alice.user_principal_name,
        &alice.id,
        &dave.id,
    )
    .await;

    // The directory is fixed: dave is released, audited, and signs in as himself.
    set_mail(&slapd, "dave", "dave@example.org").await;
    node.sync().await;
    assert!(node.user("dave").await.identity_conflict.is_none());
    assert_eq!(
        conflict_events(&node, "Directory sync: identity conflict resolved")
            .await
            .len(),
        1
    );
    match signin
        .authenticate(&radius(), "dave", &password_of("dave"))
        .await
    {
        SignInOutcome::Accept { user, .. } => assert_eq!(user.id, dave.id),
        other => panic!("dave after the fix: {other:?}"),
    }
}
