//! Identity integrity against slapd: a password that binds to another entry at a synced
//! user's DN is not that user, and an entry tapd can't decode never stops a sync or deletes
//! the user it belongs to.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ldap3::Mod;
use tapd::model::AuditResult;
use tapd::signin::{RejectReason, SignInOutcome};

use super::fixtures::{self, skeleton, user_dn, Ldif};
use super::harness::Slapd;
use super::{content_sync_settings, radius, settings, Node};

/// alice's entry is renamed and an attacker creates a new entry at her old DN before any
/// sync: the attacker's password binds there, but the entry is not alice, so the sign-in is
/// refused as `bound_identity_mismatch` (audited) and an incremental sync is requested, after
/// which alice signs in with her own password at her new DN.
#[tokio::test]
async fn a_new_entry_at_a_renamed_users_dn_is_not_that_user() {
    let slapd = Slapd::start(&fixtures::directory());
    let node = Node::new(settings(&slapd)).await;
    node.sync().await;
    let alice = node.user("alice").await;
    let signin = node.sign_in();

    let mut admin = slapd.admin().await;
    admin
        .modifydn(&user_dn("alice"), "uid=alice.moved", true, None)
        .await
        .unwrap()
        .success()
        .unwrap();
    admin
        .add(
            &user_dn("alice"),
            vec![
                ("objectClass", HashSet::from(["inetOrgPerson"])),
                ("uid", HashSet::from(["alice"])),
                ("cn", HashSet::from(["Not Alice"])),
                ("sn", HashSet::from(["Attacker"])),
                ("userPassword", HashSet::from(["attacker-pw"])),
            ],
        )
        .await
        .unwrap()
        .success()
        .unwrap();

    let outcome = signin.authenticate(&radius(), "alice", "attacker-pw").await;
    assert_eq!(
        outcome,
        SignInOutcome::Reject {
            reason: RejectReason::BoundIdentityMismatch,
            message: None
        }
    );
    let events = node.audit(tapd::signin::SIGN_IN_ACTIVITY).await;
    assert!(
        events.iter().any(|e| e.event.result == AuditResult::Failure
            && e.event.reason_code.as_deref() == Some("bound_identity_mismatch")),
        "{events:?}"
    );

    // The requested sync moves alice to her new DN.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stored = node.store().user(&alice.id).await.unwrap().unwrap();
        if stored.dn == user_dn("alice.moved") {
            break;
        }
        assert!(Instant::now() < deadline, "no sync moved alice: {stored:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match signin
        .authenticate(&radius(), "alice.moved", "alice-pw")
        .await
    {
        SignInOutcome::Accept { user, .. } => assert_eq!(user.id, alice.id),
        other => panic!("alice's own password was refused: {other:?}"),
    }
}

/// An octet-string login attribute, so that a test can store a name that is not UTF-8 (slapd
/// refuses such a `uid`; other servers hand such values over).
const RAW_LOGIN_SCHEMA: &str = "\
attributetype ( 2.25.229548716532913476958220390143745321.3.1 NAME 'rawLogin' EQUALITY octetStringMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 SINGLE-VALUE )
objectclass ( 2.25.229548716532913476958220390143745321.4.1 NAME 'rawLoginUser' SUP top AUXILIARY MAY rawLogin )
";

const GOOD_USERS: usize = 1_000;

fn raw_login_directory() -> String {
    let mut ldif = Ldif::default();
    skeleton(&mut ldif);
    let mut person = |uid: &str, login: &[u8]| {
        ldif.entry(&user_dn(uid))
            .attr("objectClass", "inetOrgPerson")
            .attr("objectClass", "rawLoginUser")
            .attr("uid", uid)
            .attr("cn", uid)
            .attr("sn", "Test")
            .attr("userPassword", &format!("{uid}-pw"))
            .attr_bytes("rawLogin", login);
    };
    for i in 0..GOOD_USERS {
        let uid = format!("good{i:04}");
        person(&uid, uid.as_bytes());
    }
    person("broken", &[b'b', 0xff, 0xfe, b'x']);
    ldif.finish()
}

fn raw_login(
    mut settings: tapd::directory::ldap::LdapSettings,
) -> tapd::directory::ldap::LdapSettings {
    settings.attributes.username = "rawLogin".to_owned();
    settings
}

/// One entry with a login that is not UTF-8 among 1,000 good ones: every sync succeeds and
/// applies the good ones, the bad one is counted and audited once per run; and a user that was
/// fine and becomes malformed keeps its store row and its TAP through full, content-sync and
/// timestamp incremental syncs.
#[tokio::test]
async fn an_undecodable_entry_is_skipped_and_never_deleted() {
    let slapd = Slapd::start_with_schema(&raw_login_directory(), RAW_LOGIN_SCHEMA);
    let node = Node::new(raw_login(content_sync_settings(&slapd))).await;
    let status = node.sync().await;
    assert_eq!(status.last_result.as_deref(), Some("success"), "{status:?}");
    assert_eq!(node.user_count().await, GOOD_USERS);
    assert_eq!(status.users_added as usize, GOOD_USERS);
    let metrics = node.service.metrics();
    assert_eq!(metrics.sync_entries_skipped.get(tapd::metrics::NoLabels), 1);
    let skipped = node.audit("entry skipped").await;
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(
        skipped[0].event.target.as_deref(),
        Some(user_dn("broken").as_str())
    );

    // good0005 holds a TAP, then its login becomes malformed.
    let victim = node.user("good0005").await;
    node.root()
        .await
        .create_tap("good0005", &Default::default())
        .await
        .unwrap();
    let syncer = node.service.syncer();
    syncer.run_incremental("test").await.unwrap();
    let mut admin = slapd.admin().await;
    admin
        .modify(
            &user_dn("good0005"),
            vec![Mod::Replace(
                b"rawLogin".to_vec(),
                HashSet::from([vec![0xc3, 0x28]]),
            )],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    let still_there = |node: &Node| {
        let victim = victim.clone();
        let store = node.store().clone();
        async move {
            assert_eq!(
                store.user(&victim.id).await.unwrap().as_ref(),
                Some(&victim)
            );
            assert!(store.tap_for_user(&victim.id).await.unwrap().is_some());
        }
    };
    let status = syncer.run_incremental("test").await.unwrap();
    assert_eq!(status.last_result.as_deref(), Some("success"), "{status:?}");
    assert_eq!(status.users_deleted, 0, "{status:?}");
    still_there(&node).await;
    let status = node.sync().await;
    assert_eq!(status.last_result.as_deref(), Some("success"), "{status:?}");
    assert_eq!(status.users_deleted, 0, "{status:?}");
    assert_eq!(node.user_count().await, GOOD_USERS);
    still_there(&node).await;
    assert!(
        !slapd.log().contains("modifyTimestamp>="),
        "content sync was used"
    );

    // Timestamp incremental reads: the size-limited account can't use content sync.
    let timestamps = Node::new(raw_login(settings(&slapd))).await;
    timestamps.sync().await;
    assert_eq!(timestamps.user_count().await, GOOD_USERS - 1);
    let good6 = timestamps.user("good0006").await;
    admin
        .modify(
            &user_dn("good0006"),
            vec![Mod::Replace(
                b"rawLogin".to_vec(),
                HashSet::from([vec![0xc3, 0x28]]),
            )],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    let status = timestamps
        .service
        .syncer()
        .run_incremental("test")
        .await
        .unwrap();
    assert_eq!(status.last_result.as_deref(), Some("success"), "{status:?}");
    assert_eq!(
        timestamps.store().user(&good6.id).await.unwrap(),
        Some(good6)
    );
    assert!(
        slapd.log().contains("modifyTimestamp>="),
        "timestamps were used"
    );
}
