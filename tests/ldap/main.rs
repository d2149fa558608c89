//! Directory sync and password checks against a real OpenLDAP server.
//!
//! Every test starts its own slapd ([`harness::Slapd`]) over the fixture of [`fixtures`], on a
//! free loopback port, and stops it on drop. slapd and slapadd come from Debian's `slapd`
//! package; `scripts/test.sh` installs it when missing, and a test without them fails saying so.
//!
//! `daemon.rs` drives the real `tapd` and `tapctl` binaries against slapd.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod active_directory;
mod daemon;
mod fixtures;
mod group_refs;
#[path = "../support/mod.rs"]
mod support;
/// slapd and the accounts it knows, from the test kit.
use support::slapd as harness;
mod integrity;
mod names;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ldap3::Mod;
use tapd::clock::SystemClock;
use tapd::config::{DirectoryPreset, LdapTransport, Secret};
use tapd::directory::ldap::{LdapDirectory, LdapSettings};
use tapd::directory::{DirectoryError, DirectorySource, PasswordCheck};
use tapd::model::{
    AuditFilter, ExcludeTarget, IncludeTarget, PolicyState, TapPolicy, TargetType, User,
};
use tapd::policy::{in_scope, AdminRole, RoleMapping};
use tapd::service::{Caller, ServiceSettings, TapService};
use tapd::store::sqlite::SqliteStore;
use tapd::store::Store;
use tapd::sync::plan::DeletionGuard;
use tapd::sync::SyncOptions;
use tapd::tapcode::Hasher;

use fixtures::{group_dn, password_of, user_dn};
use harness::{Slapd, BASE_DN, LIMITED_DN, SERVICE_DN, SERVICE_PASSWORD, SYNC_DN};

/// Settings for the OpenLDAP preset against `slapd`, plain loopback, pages of 200.
fn settings(slapd: &Slapd) -> LdapSettings {
    let preset = DirectoryPreset::OpenLdap;
    LdapSettings {
        url: slapd.url(),
        transport: LdapTransport::Plain,
        bind: Some((SERVICE_DN.to_owned(), Secret::new(SERVICE_PASSWORD))),
        ca_file: None,
        tls_verify: true,
        connect_timeout: Duration::from_secs(2),
        operation_timeout: Duration::from_secs(3),
        base_dn: BASE_DN.to_owned(),
        user_base: format!("ou=people,{BASE_DN}"),
        group_base: format!("ou=groups,{BASE_DN}"),
        user_filter: preset.user_filter().to_owned(),
        group_filter: preset.group_filter().to_owned(),
        page_size: 200,
        bind_pool_size: 2,
        preset,
        attributes: preset.attributes(),
    }
}

/// [`settings`] binding as the account without a size limit, so that incremental syncs use
/// RFC 4533 content sync.
fn content_sync_settings(slapd: &Slapd) -> LdapSettings {
    LdapSettings {
        bind: Some((SYNC_DN.to_owned(), Secret::new(SERVICE_PASSWORD))),
        ..settings(slapd)
    }
}

/// A RADIUS sign-in attempt from the client `vpn`.
fn radius() -> tapd::signin::AttemptContext {
    tapd::signin::AttemptContext {
        channel: tapd::signin::SignInChannel::Radius,
        client: "vpn".to_owned(),
        source: "127.0.0.1:1000".to_owned(),
        details: serde_json::Map::new(),
    }
}

/// A TAP service over a fresh SQLite store and the LDAP directory.
struct Node {
    service: Arc<TapService>,
    directory: Arc<LdapDirectory>,
    _dir: tempfile::TempDir,
}

impl Node {
    /// A node whose `global_administrator` role is the group `tap-admins`, named by cn.
    async fn new(settings: LdapSettings) -> Node {
        let roles = RoleMapping(
            [(
                AdminRole::GlobalAdministrator,
                vec!["tap-admins".to_owned()],
            )]
            .into_iter()
            .collect(),
        );
        Node::with_roles(settings, roles).await
    }

    async fn with_roles(settings: LdapSettings, roles: RoleMapping) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("tapd.db"), Duration::from_secs(5))
                .await
                .unwrap(),
        );
        let directory = Arc::new(LdapDirectory::new(settings).unwrap());
        let service = Arc::new(TapService::new(
            store,
            directory.clone(),
            Arc::new(SystemClock),
            Hasher::new(1, 8).unwrap(),
            ServiceSettings {
                roles,
                root_is_global_administrator: true,
                group_references: Vec::new(),
                registration_interrupt_groups: Vec::new(),
                mail_delivery: false,
                onboarding_rules: Vec::new(),
                ..ServiceSettings::default()
            },
            SyncOptions {
                interval: Duration::from_secs(300),
                guard: DeletionGuard {
                    max_deletes: 500,
                    max_share_percent: 20,
                },
                node: "ldap-test".to_owned(),
            },
        ));
        Node {
            service,
            directory,
            _dir: dir,
        }
    }

    fn store(&self) -> &Arc<dyn Store> {
        self.service.store()
    }

    async fn sync(&self) -> tapd::model::SyncStatus {
        self.service.syncer().run(false, "test").await.unwrap()
    }

    async fn user(&self, username: &str) -> User {
        self.store()
            .user(username)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{username} is not in the store"))
    }

    async fn user_count(&self) -> usize {
        self.store().users(None).await.unwrap().len()
    }

    /// The sign-in service of RADIUS and federation over this node's store and directory,
    /// asking this node's syncer for incremental syncs.
    fn sign_in(&self) -> tapd::signin::SignIn {
        tapd::signin::SignIn::new(
            self.store().clone(),
            self.directory.clone(),
            Hasher::new(1, 8).unwrap(),
            Arc::new(SystemClock),
            Arc::new(tapd::metrics::Metrics::new()),
            Default::default(),
        )
        .unwrap()
        .with_syncer(self.service.syncer().clone())
    }

    /// The audit events whose activity contains `activity`, newest first.
    async fn audit(&self, activity: &str) -> Vec<tapd::model::AuditEvent> {
        self.store()
            .audit(&tapd::model::AuditFilter {
                activity: Some(activity.to_owned()),
                limit: 1000,
                ..tapd::model::AuditFilter::default()
            })
            .await
            .unwrap()
    }

    async fn root(&self) -> tapd::service::AdminSession {
        self.service
            .admin(Caller {
                uid: 0,
                pid: None,
                local_username: Some("root".to_owned()),
            })
            .await
            .unwrap()
    }
}

fn policy() -> TapPolicy {
    TapPolicy {
        state: PolicyState::Enabled,
        include_targets: vec![IncludeTarget {
            id: "tap-users".to_owned(),
            target_type: TargetType::Group,
            is_registration_required: false,
        }],
        exclude_targets: vec![ExcludeTarget {
            id: "tap-excluded".to_owned(),
            target_type: TargetType::Group,
        }],
        ..TapPolicy::default()
    }
}

async fn scoped(node: &Node, username: &str) -> bool {
    let user = node.user(username).await;
    let groups = node.store().groups_by_id(&user.group_ids).await.unwrap();
    in_scope(&policy(), &user, &groups, &node.service.group_index())
}

/// Whether the policy stored in `node` (not [`policy`]) holds `username` in scope.
async fn scoped_by(node: &Node, username: &str) -> bool {
    let user = node.user(username).await;
    let groups = node.store().groups_by_id(&user.group_ids).await.unwrap();
    let policy = node.store().policy().await.unwrap();
    in_scope(&policy, &user, &groups, &node.service.group_index())
}

async fn group_names(node: &Node, username: &str) -> HashSet<String> {
    let user = node.user(username).await;
    node.store()
        .groups_by_id(&user.group_ids)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.display_name)
        .collect()
}

#[tokio::test]
async fn full_sync_pages_through_every_user_and_resolves_groups() {
    let slapd = Slapd::start(&fixtures::directory());
    let node = Node::new(settings(&slapd)).await;
    let status = node.sync().await;
    assert_eq!(status.last_result.as_deref(), Some("success"), "{status:?}");
    assert_eq!(status.users_seen as usize, fixtures::user_count());
    assert_eq!(status.groups_seen as usize, fixtures::group_count());
    assert_eq!(node.user_count().await, fixtures::user_count());

    // Scope through nesting: erin is two levels below tap-users, deep three.
    assert!(scoped(&node, "alice").await);
    assert!(scoped(&node, "erin").await);
    assert!(scoped(&node, "deep").await);
    assert!(!scoped(&node, "dave").await, "excluded group");
    assert!(!scoped(&node, "user0001").await, "not included");
    assert_eq!(
        group_names(&node, "deep").await,
        ["platform", "engineering", "staff", "tap-users"]
            .map(str::to_owned)
            .into()
    );
    // A cycle terminates and both groups hold the member.
    assert_eq!(
        group_names(&node, "cyclist").await,
        ["cycle-a", "cycle-b"].map(str::to_owned).into()
    );
    // posixGroup memberUid and groupOfUniqueNames uniqueMember.
    assert!(group_names(&node, "pat").await.contains("posix-users"));
    assert!(group_names(&node, "una").await.contains("unique-users"));
    assert_eq!(group_names(&node, "user0149").await.len(), 1);

    // Disabled account; stable ids are slapd's entryUUIDs; UPNs.
    let carol = node.user("carol").await;
    assert!(!carol.account_enabled);
    assert!(!scoped(&node, "carol").await);
    let alice = node.user("alice").await;
    assert!(alice.account_enabled);
    assert_eq!(alice.id.len(), 36, "{}", alice.id);
    assert_eq!(alice.id, alice.id.to_ascii_lowercase());
    assert_eq!(alice.user_principal_name, "alice@example.org");
    assert_eq!(
        node.user("bob").await.user_principal_name,
        "bob.builder@example.net"
    );

    // Special characters: each user exactly once, under its own name, in its group even where
    // the member value was written with hex escapes.
    let users = node.store().users(None).await.unwrap();
    for uid in fixtures::SPECIAL_UIDS {
        let matching: Vec<&User> = users.iter().filter(|u| u.username == uid).collect();
        assert_eq!(matching.len(), 1, "{uid:?}");
        assert!(matching[0].display_name.contains(uid), "{:?}", matching[0]);
        let groups = node
            .store()
            .groups_by_id(&matching[0].group_ids)
            .await
            .unwrap();
        assert!(
            groups.iter().any(|g| g.display_name == "special-users"),
            "{uid:?} lost its group"
        );
    }
    // A second sync with nothing changed changes nothing.
    let again = node.sync().await;
    assert_eq!(
        (again.users_added, again.users_updated, again.users_deleted),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn role_group_members_get_their_role() {
    let slapd = Slapd::start(&fixtures::directory());
    let node = Node::new(settings(&slapd)).await;
    node.sync().await;
    let caller = |name: &str| Caller {
        uid: 4242,
        pid: None,
        local_username: Some(name.to_owned()),
    };
    let session = node.service.admin(caller("gadmin")).await.unwrap();
    let details = session.user("gadmin").await.unwrap();
    assert!(details.roles.contains(&AdminRole::GlobalAdministrator));
    assert!(node.service.admin(caller("alice")).await.is_err());
    let erin = session.user("erin").await.unwrap();
    let names: HashSet<String> = erin.groups.iter().map(|g| g.display_name.clone()).collect();
    assert_eq!(
        names,
        ["engineering", "staff", "tap-users"]
            .map(str::to_owned)
            .into()
    );
}

/// `dave` (whose id was `dave_id`) is gone, his TAP too, with one audited revocation.
async fn dave_was_deleted_and_his_tap_revoked(node: &Node, dave_id: &str) {
    assert!(node.store().user("dave").await.unwrap().is_none());
    assert!(node.store().tap_for_user(dave_id).await.unwrap().is_none());
    let revoked = node
        .store()
        .audit(&AuditFilter {
            activity: Some("revoked: account deleted".to_owned()),
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(revoked[0].event.target.as_deref(), Some("dave@example.org"));
}

#[tokio::test]
async fn a_rename_keeps_the_tap_and_a_delete_revokes_it() {
    let slapd = Slapd::start(&fixtures::directory());
    let node = Node::new(settings(&slapd)).await;
    node.sync().await;
    let root = node.root().await;
    let request = Default::default();
    let alice_tap = root.create_tap("alice", &request).await.unwrap();
    let dave_tap = root.create_tap("dave", &request).await.unwrap();
    let alice_id = node.user("alice").await.id;

    let mut admin = slapd.admin().await;
    admin
        .modifydn(&user_dn("alice"), "uid=alicia", true, None)
        .await
        .unwrap()
        .success()
        .unwrap();
    admin
        .modify(
            &group_dn("tap-users"),
            vec![
                Mod::Delete("member", [user_dn("alice").as_str()].into()),
                Mod::Add("member", [user_dn("alicia").as_str()].into()),
            ],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    admin
        .delete(&user_dn("dave"))
        .await
        .unwrap()
        .success()
        .unwrap();
    let status = node.sync().await;
    assert_eq!(status.last_result.as_deref(), Some("success"), "{status:?}");
    assert_eq!(status.users_deleted, 1);

    let alicia = node.user("alicia").await;
    assert_eq!(alicia.id, alice_id, "the stable id survives the rename");
    assert_eq!(alicia.dn, user_dn("alicia"));
    assert!(node.store().user("alice").await.unwrap().is_none());
    let tap = node.store().tap_for_user(&alice_id).await.unwrap().unwrap();
    assert_eq!(tap.id, alice_tap.details.tap.id);
    assert!(scoped(&node, "alicia").await);

    dave_was_deleted_and_his_tap_revoked(&node, &dave_tap.details.tap.user_id).await;
}

/// Deletes the first 30 % of the store's users from slapd; returns (users before, deleted).
async fn delete_thirty_percent(node: &Node, slapd: &Slapd) -> (usize, usize) {
    let before = node.user_count().await;
    let doomed = before * 30 / 100;
    let mut admin = slapd.admin().await;
    for i in 0..doomed {
        admin
            .delete(&user_dn(&format!("user{i:04}")))
            .await
            .unwrap()
            .success()
            .unwrap();
    }
    (before, doomed)
}

/// `status` is a sync the guard refused: nothing deleted, the refusal audited; a sync with
/// `--allow-deletes` then deletes them.
async fn refused_until_confirmed(
    node: &Node,
    status: tapd::model::SyncStatus,
    (before, doomed): (usize, usize),
) {
    assert_eq!(
        status.last_result.as_deref(),
        Some("deletionsRefused"),
        "{status:?}"
    );
    assert_eq!(status.deletions_refused as usize, doomed);
    assert_eq!(node.user_count().await, before, "nothing deleted");
    let refused = node
        .store()
        .audit(&AuditFilter {
            activity: Some("too many deletions".to_owned()),
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(refused.len(), 1);

    let confirmed = node.service.syncer().run(true, "test").await.unwrap();
    assert_eq!(confirmed.last_result.as_deref(), Some("success"));
    assert_eq!(confirmed.users_deleted as usize, doomed);
    assert_eq!(node.user_count().await, before - doomed);
}

#[tokio::test]
async fn deleting_thirty_percent_trips_the_guard_until_confirmed() {
    let slapd = Slapd::start(&fixtures::directory());
    let node = Node::new(settings(&slapd)).await;
    node.sync().await;
    let deletions = delete_thirty_percent(&node, &slapd).await;
    let status = node.sync().await;
    refused_until_confirmed(&node, status, deletions).await;
}

#[tokio::test]
async fn an_unreachable_or_hung_directory_leaves_the_store_untouched() {
    let mut slapd = Slapd::start(&fixtures::directory());
    let mut quick = settings(&slapd);
    quick.operation_timeout = Duration::from_secs(1);
    quick.connect_timeout = Duration::from_secs(1);
    let node = Node::new(quick).await;
    node.sync().await;
    let users = node.store().users(None).await.unwrap();

    slapd.stop();
    let down = node.sync().await;
    assert_eq!(down.last_result.as_deref(), Some("failed"));
    let error = down.last_error.clone().unwrap();
    assert!(error.contains("directory unavailable"), "{error}");
    assert!(error.contains(&slapd.url()), "{error}");
    assert_eq!(node.store().users(None).await.unwrap(), users);
    assert_eq!(
        node.store().sync_status().await.unwrap().last_error,
        Some(error)
    );

    // Hung mid-conversation: TCP connects, nothing answers; the timeout ends the sync.
    slapd.start_again();
    slapd.pause();
    let hung = node.sync().await;
    slapd.resume();
    assert_eq!(hung.last_result.as_deref(), Some("failed"), "{hung:?}");
    assert!(
        hung.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("timed out"),
        "{hung:?}"
    );
    assert_eq!(node.store().users(None).await.unwrap(), users);

    let back = node.sync().await;
    assert_eq!(back.last_result.as_deref(), Some("success"), "{back:?}");
    assert_eq!(back.last_error, None);
}

#[tokio::test]
async fn a_size_limit_in_the_middle_of_paging_is_incomplete() {
    let slapd = Slapd::start(&fixtures::directory());
    let mut limited = settings(&slapd);
    limited.bind = Some((LIMITED_DN.to_owned(), Secret::new(SERVICE_PASSWORD)));
    let directory = LdapDirectory::new(limited).unwrap();
    match directory.read_all().await {
        Err(DirectoryError::Incomplete(message)) => {
            assert!(message.contains("sizeLimitExceeded"), "{message}")
        }
        other => panic!("expected Incomplete, got {other:?}"),
    }
    // And a wrong service password is "unavailable", never an empty directory.
    let mut wrong = settings(&slapd);
    wrong.bind = Some((SERVICE_DN.to_owned(), Secret::new("nope")));
    let directory = LdapDirectory::new(wrong).unwrap();
    match directory.read_all().await {
        Err(DirectoryError::Unavailable(message)) => {
            assert!(message.contains("invalidCredentials"), "{message}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn password_checks_bind_as_the_user() {
    let mut slapd = Slapd::start(&fixtures::directory());
    let node = Node::new(settings(&slapd)).await;
    node.sync().await;
    let directory = &node.directory;
    let alice = node.user("alice").await;
    assert_eq!(
        directory.check_password(&alice, "alice-pw").await.unwrap(),
        PasswordCheck::Valid
    );
    assert_eq!(
        directory.check_password(&alice, "wrong").await.unwrap(),
        PasswordCheck::Invalid
    );
    // Special characters in the DN bind fine; another user's password does not.
    for uid in fixtures::SPECIAL_UIDS {
        let user = node.user(uid).await;
        assert_eq!(
            directory
                .check_password(&user, &password_of(uid))
                .await
                .unwrap(),
            PasswordCheck::Valid,
            "{uid:?}"
        );
    }
    let star = node.user("*").await;
    for attempt in ["*", "alice-pw", ")(uid=*", "star*-pw"] {
        assert_eq!(
            directory.check_password(&star, attempt).await.unwrap(),
            PasswordCheck::Invalid,
            "{attempt:?}"
        );
    }
    // Reuse: the pool did not grow past its size.
    assert!(directory.bind_pool().idle_connections() <= 2);

    // Empty and NUL passwords never reach the server.
    let binds_before = slapd.binds_as(&alice.dn);
    for unusable in ["", "\0", "\0\0\0"] {
        assert_eq!(
            directory.check_password(&alice, unusable).await.unwrap(),
            PasswordCheck::Invalid
        );
    }
    assert_eq!(slapd.binds_as(&alice.dn), binds_before);
    // A disabled account is refused without a bind too.
    let carol = node.user("carol").await;
    assert_eq!(
        directory.check_password(&carol, "carol-pw").await.unwrap(),
        PasswordCheck::Invalid
    );
    assert_eq!(slapd.binds_as(&carol.dn), 0);

    // Server down: "directory unavailable", and empty passwords still never try.
    slapd.stop();
    let error = directory
        .check_password(&alice, "alice-pw")
        .await
        .unwrap_err();
    assert!(matches!(error, DirectoryError::Unavailable(_)), "{error}");
    assert!(error.to_string().starts_with("directory unavailable"));
    assert_eq!(
        directory.check_password(&alice, "").await.unwrap(),
        PasswordCheck::Invalid
    );
    // Back up: the pool's dead connections are replaced transparently.
    slapd.start_again();
    assert_eq!(
        directory.check_password(&alice, "alice-pw").await.unwrap(),
        PasswordCheck::Valid
    );
}

#[tokio::test]
async fn injection_strings_never_widen_a_search() {
    let slapd = Slapd::start(&fixtures::directory());
    // The user filter is configuration, but an incremental read splices in a value; and a
    // user named `*` or `)(uid=*` is just a user.
    let node = Node::new(settings(&slapd)).await;
    node.sync().await;
    let users = node.store().users(None).await.unwrap();
    assert_eq!(users.iter().filter(|u| u.username == "*").count(), 1);
    assert_eq!(users.iter().filter(|u| u.username == ")(uid=*").count(), 1);

    // A forged user object whose DN is a filter-looking string binds as nobody.
    let mut forged = node.user("alice").await;
    for dn in [
        "uid=*,ou=people,dc=example,dc=org".to_owned(),
        format!("{},ou=people,dc=example,dc=org", "uid=alice)(uid=*"),
    ] {
        forged.dn = dn.clone();
        let outcome = node.directory.check_password(&forged, "alice-pw").await;
        assert!(
            matches!(outcome, Ok(PasswordCheck::Invalid)),
            "{dn}: {outcome:?}"
        );
    }
    // Searching by an escaped value finds exactly the one entry.
    let mut admin = slapd.admin().await;
    for uid in ["*", ")(uid=*", "star*", "back\\slash"] {
        let filter = format!(
            "(uid={})",
            tapd::directory::ldap::escape::escape_filter_value(uid)
        );
        let (entries, _) = admin
            .search(BASE_DN, ldap3::Scope::Subtree, &filter, vec!["uid"])
            .await
            .unwrap()
            .success()
            .unwrap();
        assert_eq!(entries.len(), 1, "{filter}");
    }
}

#[tokio::test]
async fn starttls_verifies_the_server_certificate() {
    let slapd = Slapd::start(&fixtures::directory());
    let mut trusted = settings(&slapd);
    trusted.transport = LdapTransport::StartTls;
    trusted.ca_file = Some(slapd.ca_file.clone());
    let directory = LdapDirectory::new(trusted.clone()).unwrap();
    let contents = directory.read_all().await.unwrap();
    assert_eq!(contents.users.len(), fixtures::user_count());
    let alice = contents
        .users
        .iter()
        .find(|u| u.username == "alice")
        .unwrap();
    assert_eq!(
        directory.check_password(alice, "alice-pw").await.unwrap(),
        PasswordCheck::Valid
    );

    let mut untrusted = trusted.clone();
    untrusted.ca_file = Some(slapd.untrusted_ca_file.clone());
    let directory = LdapDirectory::new(untrusted).unwrap();
    match directory.read_all().await {
        Err(DirectoryError::Unavailable(message)) => {
            assert!(message.to_lowercase().contains("certificate"), "{message}")
        }
        other => panic!("expected a certificate failure, got {other:?}"),
    }
    let error = directory
        .check_password(alice, "alice-pw")
        .await
        .unwrap_err();
    assert!(matches!(error, DirectoryError::Unavailable(_)));

    // The system roots don't know the harness CA either.
    let mut system_roots = trusted;
    system_roots.ca_file = None;
    let directory = LdapDirectory::new(system_roots).unwrap();
    assert!(directory.read_all().await.is_err());
}

/// Two changes the incremental tests make: `user0007`'s cn, and `erin` into `tap-excluded`.
async fn rename_user0007_and_exclude_erin(admin: &mut ldap3::Ldap) {
    admin
        .modify(
            &user_dn("user0007"),
            vec![Mod::Replace("cn", ["Renamed Display"].into())],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    admin
        .modify(
            &group_dn("tap-excluded"),
            vec![Mod::Add("member", [user_dn("erin").as_str()].into())],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
}

/// The store holds both changes of [`rename_user0007_and_exclude_erin`].
async fn assert_renamed_and_excluded(node: &Node) {
    assert_eq!(node.user("user0007").await.display_name, "Renamed Display");
    assert!(!scoped(node, "erin").await, "erin is now excluded");
}

/// Without content sync (here: the service account's size limit of 500 rules out the unpaged
/// refresh, so tapd falls back to `modifyTimestamp`), deletions wait for the next full sync.
#[tokio::test]
async fn incremental_sync_applies_changes_and_leaves_deletions_to_full_syncs() {
    let slapd = Slapd::start(&fixtures::directory());
    let node = Node::new(settings(&slapd)).await;
    node.sync().await;
    let mut admin = slapd.admin().await;
    rename_user0007_and_exclude_erin(&mut admin).await;
    admin
        .delete(&user_dn("user0009"))
        .await
        .unwrap()
        .success()
        .unwrap();

    let status = node.service.syncer().run_incremental("test").await.unwrap();
    assert_eq!(status.last_result.as_deref(), Some("success"), "{status:?}");
    assert_renamed_and_excluded(&node).await;
    assert!(
        node.store().user("user0009").await.unwrap().is_some(),
        "an incremental sync does not see deletions"
    );
    let full = node.sync().await;
    assert_eq!(full.users_deleted, 1);
    assert!(node.store().user("user0009").await.unwrap().is_none());
}

/// RFC 4533 content sync (slapd's syncprov) between full syncs: changes, additions and
/// deletions (listed from slapd's session log: a delete phase) reach the store without a full
/// sync, a deleted user's TAP is revoked with an audit entry, and the cookie outlives a slapd
/// restart.
#[tokio::test]
async fn content_sync_applies_changes_and_deletions_between_full_syncs() {
    let mut slapd = Slapd::start(&fixtures::directory());
    let node = Node::new(content_sync_settings(&slapd)).await;
    node.sync().await;
    let syncer = node.service.syncer();
    // The first refresh has no cookie: every entry once, and nothing differs.
    let first = syncer.run_incremental("test").await.unwrap();
    assert_eq!(first.last_result.as_deref(), Some("success"), "{first:?}");
    assert_eq!(
        (first.users_added, first.users_updated, first.users_deleted),
        (0, 0, 0)
    );

    let dave_tap = node
        .root()
        .await
        .create_tap("dave", &Default::default())
        .await
        .unwrap();
    let bulk_member = node.user("user0050").await;
    assert!(group_names(&node, "user0050").await.contains("bulk01"));
    let mut admin = slapd.admin().await;
    rename_user0007_and_exclude_erin(&mut admin).await;
    admin
        .add(
            &user_dn("newcomer"),
            vec![
                ("objectClass", ["inetOrgPerson"].into()),
                ("uid", ["newcomer"].into()),
                ("cn", ["New Comer"].into()),
                ("sn", ["Test"].into()),
            ],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    for dn in [user_dn("dave"), group_dn("bulk01")] {
        admin.delete(&dn).await.unwrap().success().unwrap();
    }

    let status = syncer.run_incremental("test").await.unwrap();
    assert_eq!(status.last_result.as_deref(), Some("success"), "{status:?}");
    assert_eq!(status.users_added, 1, "{status:?}");
    assert_eq!(status.users_deleted, 1, "{status:?}");
    assert_renamed_and_excluded(&node).await;
    assert_eq!(node.user("newcomer").await.dn, user_dn("newcomer"));
    dave_was_deleted_and_his_tap_revoked(&node, &dave_tap.details.tap.user_id).await;
    let groups = node.store().groups().await.unwrap();
    assert!(!groups.iter().any(|g| g.display_name == "bulk01"));
    assert_eq!(node.user("user0050").await.id, bulk_member.id);
    assert!(!group_names(&node, "user0050").await.contains("bulk01"));

    // Nothing changed since: nothing to do.
    let quiet = syncer.run_incremental("test").await.unwrap();
    assert_eq!(
        (quiet.users_added, quiet.users_updated, quiet.users_deleted),
        (0, 0, 0),
        "{quiet:?}"
    );

    // The cookie outlives a slapd restart.
    slapd.stop();
    slapd.start_again();
    let mut admin = slapd.admin().await;
    admin
        .delete(&user_dn("user0010"))
        .await
        .unwrap()
        .success()
        .unwrap();
    let after_restart = syncer.run_incremental("test").await.unwrap();
    assert_eq!(
        after_restart.last_result.as_deref(),
        Some("success"),
        "{after_restart:?}"
    );
    assert_eq!(after_restart.users_deleted, 1, "{after_restart:?}");
    assert!(node.store().user("user0010").await.unwrap().is_none());
    assert!(
        !slapd.log().contains("modifyTimestamp>="),
        "every incremental read used content sync"
    );
}

/// Deletions found by content sync meet the same deletion guard as a full sync's. The 471
/// deletions overflow slapd's session log of 100 operations, so this refresh is a present
/// phase: slapd lists the entries still there, and every other one is gone.
#[tokio::test]
async fn content_sync_deletions_trip_the_guard_until_confirmed() {
    let slapd = Slapd::start(&fixtures::directory());
    let node = Node::new(content_sync_settings(&slapd)).await;
    node.sync().await;
    let syncer = node.service.syncer();
    syncer.run_incremental("test").await.unwrap();
    let deletions = delete_thirty_percent(&node, &slapd).await;
    let status = syncer.run_incremental("test").await.unwrap();
    refused_until_confirmed(&node, status, deletions).await;
}
