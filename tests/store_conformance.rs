//! The store conformance suite: what every [`Store`] backend must do, written once against
//! `Arc<dyn Store>` and run on each backend.
//!
//! Each `async fn` below is backend-agnostic. The `conformance!` macro turns every one of them
//! into a `#[tokio::test]` for a backend factory. Backends: SQLite in a temp dir, and
//! PostgreSQL in a throwaway cluster (`tests/support/postgres.rs`, one database per test). The
//! `shared_store!` cases hold only for a store several nodes share (PostgreSQL): they open a
//! second store on the same database as a second node. The `@clocked` cases get a store that
//! reads the time from a [`ManualClock`] they move.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/mod.rs"]
mod support;
use support::postgres as postgres_cluster;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use tapd::clock::{Clock, ManualClock};
use tapd::model::{
    AuditFilter, AuditResult, CeremonyKind, Channel, ExcludeTarget, Group, GroupRef, IncludeTarget,
    MailOutcome, MailState, MethodKind, NewAuditEvent, OutboxMail, PolicyState, RegisteredMethod,
    StoredTap, SyncStatus, TapPolicy, TargetType, Timestamp, User, WebAuthMethod, WebCeremony,
    WebSession,
};
use tapd::store::postgres::{PostgresSettings, PostgresStore};
use tapd::store::seal::{key_id, SealError, Sealer};
use tapd::store::sqlite::{SqliteStore, DEFAULT_BUSY_TIMEOUT};
use tapd::store::{
    LeaseLost, Store, StoreError, SyncFence, SyncLease, SyncLeaseOutcome, SyncPlan, SyncPlanEnd,
    UndeliverableCode,
};

use postgres_cluster::PostgresCluster;

// ---------------------------------------------------------------------------------------------
// Backends

type Reopen = Box<
    dyn Fn(
            Option<Sealer>,
        ) -> Pin<Box<dyn Future<Output = Result<Arc<dyn Store>, StoreError>> + Send>>
        + Send
        + Sync,
>;

/// The key every backend of this suite seals its secrets with.
const KEY: [u8; 32] = [0x42; 32];

fn sealer() -> Sealer {
    Sealer::new(&KEY, None)
}

/// A store under test, how to open the same data again (with a secrets key, or without one),
/// the database as an attacker with a copy of it sees it, and whatever must live as long as it
/// (a temp dir, a database server).
struct Backend {
    store: Arc<dyn Store>,
    reopen: Reopen,
    raw: Raw,
    _guard: Box<dyn std::any::Any + Send + Sync>,
}

/// The database below the store: its bytes and direct SQL.
enum Raw {
    Sqlite(std::path::PathBuf),
    Postgres {
        cluster: Arc<PostgresCluster>,
        url: String,
    },
}

impl Raw {
    /// Everything the database holds, as a backup would: the SQLite file and its log, or a
    /// `pg_dump`.
    fn dump(&self) -> Vec<u8> {
        match self {
            Raw::Sqlite(path) => {
                let mut bytes = std::fs::read(path).unwrap();
                for suffix in ["-wal", "-journal"] {
                    let mut name = path.clone().into_os_string();
                    name.push(suffix);
                    if let Ok(more) = std::fs::read(&name) {
                        bytes.extend(more);
                    }
                }
                bytes
            }
            Raw::Postgres { cluster, url } => cluster.dump(url).into_bytes(),
        }
    }

    /// Runs one statement directly on the database (what someone with write access to it
    /// could do).
    async fn execute(&self, sql: &str) {
        match self {
            Raw::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.busy_timeout(std::time::Duration::from_secs(5))
                    .unwrap();
                conn.execute_batch(sql).unwrap();
            }
            Raw::Postgres { url, .. } => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                let task = tokio::spawn(connection);
                client.batch_execute(sql).await.unwrap();
                drop(client);
                let _ = task.await;
            }
        }
    }

    /// The one text value `sql` selects.
    async fn text(&self, sql: &str) -> String {
        match self {
            Raw::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.query_row(sql, [], |row| row.get(0)).unwrap()
            }
            Raw::Postgres { url, .. } => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                let task = tokio::spawn(connection);
                let value: String = client.query_one(sql, &[]).await.unwrap().get(0);
                drop(client);
                let _ = task.await;
                value
            }
        }
    }
}

/// The time a backend opened on a test's [`ManualClock`] reads until the test moves it.
fn clock_start() -> Timestamp {
    Utc.with_ymd_and_hms(2031, 3, 4, 5, 6, 7).unwrap()
}

/// A SQLite store at `path` reading the time from `clock` (the system clock when `None`).
async fn open_sqlite(
    path: &std::path::Path,
    clock: &Option<Arc<dyn Clock>>,
) -> Result<SqliteStore, StoreError> {
    let store = SqliteStore::open(path, DEFAULT_BUSY_TIMEOUT).await?;
    Ok(match clock {
        Some(clock) => store.with_clock(clock.clone()),
        None => store,
    })
}

/// A PostgreSQL store on `url` reading the time from `clock` (the system clock when `None`).
async fn open_postgres(
    url: &str,
    clock: &Option<Arc<dyn Clock>>,
) -> Result<PostgresStore, StoreError> {
    let store = PostgresStore::open(&PostgresSettings::new(url.to_owned())).await?;
    Ok(match clock {
        Some(clock) => store.with_clock(clock.clone()),
        None => store,
    })
}

/// SQLite in a fresh temp dir, on `clock` when given.
async fn sqlite_backend(clock: Option<Arc<dyn Clock>>) -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state").join("tapd.db");
    let store = open_sqlite(&path, &clock)
        .await
        .unwrap()
        .with_secrets(sealer())
        .await
        .unwrap();
    let raw = Raw::Sqlite(path.clone());
    let reopen: Reopen = Box::new(move |sealer| {
        let path = path.clone();
        let clock = clock.clone();
        Box::pin(async move {
            let store = open_sqlite(&path, &clock).await?;
            let store: Arc<dyn Store> = match sealer {
                Some(sealer) => Arc::new(store.with_secrets(sealer).await?),
                None => Arc::new(store),
            };
            Ok(store)
        })
    });
    Backend {
        store: Arc::new(store),
        reopen,
        raw,
        _guard: Box::new(dir),
    }
}

/// PostgreSQL: a fresh database in the shared test cluster, copied from one the store's
/// migrations ran on once (the migrations themselves are tested on empty databases below); on
/// `clock` when given.
async fn postgres_backend(clock: Option<Arc<dyn Clock>>) -> Backend {
    let cluster = PostgresCluster::shared();
    let url = cluster
        .create_database_from_template(|url| async move {
            let store = PostgresStore::open(&PostgresSettings::new(url))
                .await
                .unwrap();
            drop(store);
        })
        .await;
    let store = open_postgres(&url, &clock)
        .await
        .unwrap()
        .with_secrets(sealer())
        .await
        .unwrap();
    let raw = Raw::Postgres {
        cluster: cluster.clone(),
        url: url.clone(),
    };
    let reopen: Reopen = Box::new(move |sealer| {
        let url = url.clone();
        let clock = clock.clone();
        Box::pin(async move {
            let store = open_postgres(&url, &clock).await?;
            let store: Arc<dyn Store> = match sealer {
                Some(sealer) => Arc::new(store.with_secrets(sealer).await?),
                None => Arc::new(store),
            };
            Ok(store)
        })
    });
    Backend {
        store: Arc::new(store),
        reopen,
        raw,
        _guard: Box::new(cluster),
    }
}

/// One `#[tokio::test]` per suite function for the backend `$factory` builds.
macro_rules! conformance {
    ($backend:ident, $factory:ident) => {
        mod $backend {
            conformance!(@store $factory;
                policy_defaults_then_roundtrip,
                user_lookup_by_id_upn_and_username,
                users_search_and_order,
                groups_and_groups_by_id,
                user_with_group_refs_matches_groups_by_id,
                user_with_group_refs_follows_every_sync,
                append_audits_stores_a_batch_in_order,
                apply_sync_add_change_delete,
                apply_sync_revokes_taps,
                apply_sync_streamed_commits_only_with_its_end,
                replace_tap_returns_old_id,
                delete_tap_only_for_its_owner,
                consume_one_time_tap_exactly_once,
                methods_add_update_delete,
                audit_filters_and_ordering,
                audit_limit_default_and_cap,
                audit_written_by_each_mutating_call,
                sync_status_roundtrip,
                sync_lease_granted_and_renewed,
                sync_lease_stale_token_is_refused,
                sync_lease_lapsed_token_is_refused,
                names_fold_ascii_only,
                a_later_claim_on_a_name_is_quarantined,
                claims_of_one_sync_tie_and_find_nobody,
                nul_characters_are_harmless,
                method_lookup_and_swap_data_once,
                web_sessions_roundtrip_update_delete,
                web_sessions_expired_are_purged_and_follow_their_user,
                web_ceremonies_are_taken_exactly_once,
                audit_retention_prunes_old_events_in_batches,
                outbox_retries_then_fails_and_deletes_the_tap,
                outbox_claim_is_held_until_it_lapses,
                onboarding_rule_grants_one_pass_per_user,
                outbox_a_newer_pass_fails_the_queued_message,
                users_keep_their_manager_and_dates,
                users_dated_between_reads_only_the_window,
            );
            conformance!(@backend $factory;
                outbox_code_is_sealed_until_accepted_then_erased,
                outbox_codes_are_resealed_on_key_rotation,
                outbox_an_unopenable_code_fails_its_message_and_blocks_no_other,
                data_survives_reopen,
                totp_seeds_are_never_stored_in_clear,
                clear_seeds_are_sealed_at_open_once,
                moved_seeds_and_wrong_keys_are_refused,
                audit_chain_links_every_write_and_names_tampering,
                audit_chain_survives_pruning_through_a_signed_checkpoint,
                audit_chain_migration_links_existing_rows,
                onboarding_failures_are_news_once_until_served,
                outbox_an_unreadable_message_fails_and_blocks_no_other,
            );
            conformance!(@clocked $factory;
                conflict_events_without_a_sync_event_take_the_store_clock_time,
            );
        }
    };
    (@store $factory:ident; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let backend = super::$factory(None).await;
                super::$test(backend.store.clone()).await;
            }
        )*
    };
    (@backend $factory:ident; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                super::$test(super::$factory(None).await).await;
            }
        )*
    };
    (@clocked $factory:ident; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let clock = std::sync::Arc::new(tapd::clock::ManualClock::new(super::clock_start()));
                let backend = super::$factory(Some(clock.clone() as std::sync::Arc<dyn tapd::clock::Clock>)).await;
                super::$test(backend.store.clone(), clock).await;
            }
        )*
    };
}

/// The cases for a store that several nodes share.
macro_rules! shared_store {
    ($backend:ident, $factory:ident) => {
        mod $backend {
            conformance!(@backend $factory;
                sync_lease_exclusive_across_nodes,
                sync_lease_one_winner_of_many,
                consume_one_time_tap_exactly_once_across_nodes,
                writes_on_one_node_are_read_on_the_other,
                audit_chain_has_no_gaps_or_forks_across_nodes,
                outbox_each_message_is_claimed_by_one_node,
            );
        }
    };
}

conformance!(sqlite, sqlite_backend);
conformance!(postgres, postgres_backend);
shared_store!(postgres_nodes, postgres_backend);

// ---------------------------------------------------------------------------------------------
// Fixtures

/// The lease a test's sync writes carry: node "sync", granted (or renewed) for a minute.
async fn fence(store: &Arc<dyn Store>) -> SyncFence {
    store
        .try_sync_lease("sync", std::time::Duration::from_secs(60))
        .await
        .unwrap()
        .granted()
        .expect("the sync lease is free")
        .fence()
}

fn t(minutes: i64) -> Timestamp {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap() + Duration::minutes(minutes)
}

fn user(id: &str, username: &str, upn: &str, groups: &[&str]) -> User {
    User {
        id: id.to_owned(),
        dn: format!("uid={username},ou=people,dc=example,dc=org"),
        username: username.to_owned(),
        user_principal_name: upn.to_owned(),
        display_name: format!("{username} display"),
        mail: Some(format!("{username}@mail.example.org")),
        account_enabled: true,
        group_ids: groups.iter().map(|g| (*g).to_owned()).collect(),
        identity_conflict: None,
        manager_dn: None,
        manager_id: None,
        dates: Default::default(),
    }
}

fn group(id: &str, name: &str) -> Group {
    Group {
        id: id.to_owned(),
        dn: format!("cn={name},ou=groups,dc=example,dc=org"),
        display_name: name.to_owned(),
        member_user_ids: Vec::new(),
    }
}

fn event(activity: &str, actor: &str, target: Option<&str>, time: Timestamp) -> NewAuditEvent {
    NewAuditEvent {
        time,
        actor: actor.to_owned(),
        activity: activity.to_owned(),
        target: target.map(str::to_owned),
        result: AuditResult::Success,
        reason_code: None,
        channel: Channel::Admin,
        source_address: Some("uid=0 pid=42".to_owned()),
        details: json!({ "note": activity }),
    }
}

fn tap(id: &str, user_id: &str, once: bool) -> StoredTap {
    StoredTap {
        id: id.to_owned(),
        user_id: user_id.to_owned(),
        code_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$salt${id}"),
        created: t(0),
        start: t(5),
        lifetime_in_minutes: 60,
        is_usable_once: once,
        used_at: None,
        code_length: Some(12),
    }
}

fn method(id: &str, user_id: &str, created: Timestamp) -> RegisteredMethod {
    RegisteredMethod {
        id: id.to_owned(),
        user_id: user_id.to_owned(),
        kind: MethodKind::Fido2,
        display_name: format!("key {id}"),
        created,
        data: format!("{{\"credential\":\"{id}\"}}"),
    }
}

/// Alice (groups g1, g2), Bob (g2), Carol (none); groups g1 "Admins", g2 "Staff".
async fn seed(store: &Arc<dyn Store>) {
    let plan = SyncPlan {
        upsert_users: vec![
            user("u-alice", "alice", "alice@example.org", &["g2", "g1"]),
            user("u-bob", "Bob", "bob.b@example.org", &["g2"]),
            user("u-carol", "carol", "carol@example.org", &[]),
        ],
        upsert_groups: vec![group("g1", "Admins"), group("g2", "staff")],
        ..SyncPlan::default()
    };
    store
        .apply_sync(&fence(store).await, &plan, &[])
        .await
        .unwrap();
}

/// Each group's id and transitive member ids, as `groups()` returns them.
async fn members_by_group(store: &Arc<dyn Store>) -> Vec<(String, Vec<String>)> {
    let groups = store.groups().await.unwrap();
    groups
        .into_iter()
        .map(|g| (g.id, g.member_user_ids))
        .collect()
}

async fn audit_all(store: &Arc<dyn Store>) -> Vec<String> {
    store
        .audit(&AuditFilter {
            limit: 1000,
            ..AuditFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event.activity)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The suite

async fn policy_defaults_then_roundtrip(store: Arc<dyn Store>) {
    assert_eq!(store.policy().await.unwrap(), TapPolicy::default());
    let policy = TapPolicy {
        state: PolicyState::Enabled,
        minimum_lifetime_in_minutes: 10,
        maximum_lifetime_in_minutes: 43200,
        default_lifetime_in_minutes: 120,
        default_length: 12,
        is_usable_once: true,
        include_targets: vec![IncludeTarget {
            id: "cn=helpdesk,ou=groups,dc=example,dc=org".to_owned(),
            target_type: TargetType::Group,
            is_registration_required: true,
        }],
        exclude_targets: vec![ExcludeTarget {
            id: "alice".to_owned(),
            target_type: TargetType::User,
        }],
    };
    store
        .put_policy(&policy, &event("Update policy", "root", None, t(1)))
        .await
        .unwrap();
    assert_eq!(store.policy().await.unwrap(), policy);
    let default = TapPolicy::default();
    store
        .put_policy(&default, &event("Reset policy", "root", None, t(2)))
        .await
        .unwrap();
    assert_eq!(store.policy().await.unwrap(), default);
    assert_eq!(audit_all(&store).await, ["Reset policy", "Update policy"]);
}

async fn user_lookup_by_id_upn_and_username(store: Arc<dyn Store>) {
    seed(&store).await;
    let alice = store.user("u-alice").await.unwrap().unwrap();
    assert_eq!(alice.username, "alice");
    // Group ids come back sorted.
    assert_eq!(alice.group_ids, ["g1", "g2"]);
    assert_eq!(
        alice,
        user("u-alice", "alice", "alice@example.org", &["g1", "g2"])
    );

    let by_upn = store.user("ALICE@Example.ORG").await.unwrap().unwrap();
    assert_eq!(by_upn.id, "u-alice");
    let by_username = store.user("bob").await.unwrap().unwrap();
    assert_eq!(by_username.id, "u-bob");
    let by_upn_exact = store.user("bob.b@example.org").await.unwrap().unwrap();
    assert_eq!(by_upn_exact.id, "u-bob");
    assert_eq!(
        store.user("CAROL").await.unwrap().unwrap().group_ids,
        Vec::<String>::new()
    );

    // Ids match exactly, never case-insensitively or by substring.
    assert!(store.user("U-ALICE").await.unwrap().is_none());
    assert!(store.user("ali").await.unwrap().is_none());
    assert!(store.user("nobody").await.unwrap().is_none());

    // The same lookup with the user's groups, as `user` + `groups_by_id` give them.
    for key in ["u-alice", "ALICE@Example.ORG", "bob", "CAROL"] {
        let (found, groups) = store.user_with_groups(key).await.unwrap().unwrap();
        assert_eq!(Some(&found), store.user(key).await.unwrap().as_ref());
        assert_eq!(groups, store.groups_by_id(&found.group_ids).await.unwrap());
    }
    let (_, alice_groups) = store.user_with_groups("alice").await.unwrap().unwrap();
    let ids: Vec<_> = alice_groups.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(ids, ["g1", "g2"]);
    assert!(store.user_with_groups("ali").await.unwrap().is_none());
    assert!(store.user_with_groups("U-ALICE").await.unwrap().is_none());
}

async fn users_search_and_order(store: Arc<dyn Store>) {
    seed(&store).await;
    let names = |users: Vec<User>| users.into_iter().map(|u| u.id).collect::<Vec<_>>();
    // Sorted by username, case-insensitively: alice, Bob, carol.
    assert_eq!(
        names(store.users(None).await.unwrap()),
        ["u-alice", "u-bob", "u-carol"]
    );
    // Username, UPN, display name and mail, case-insensitive substrings.
    assert_eq!(names(store.users(Some("ALI")).await.unwrap()), ["u-alice"]);
    assert_eq!(names(store.users(Some("b.B@")).await.unwrap()), ["u-bob"]);
    assert_eq!(
        names(store.users(Some("CAROL DISP")).await.unwrap()),
        ["u-carol"]
    );
    assert_eq!(
        names(store.users(Some("@mail.example")).await.unwrap()),
        ["u-alice", "u-bob", "u-carol"]
    );
    assert!(store.users(Some("zzz")).await.unwrap().is_empty());
    // LIKE wildcards are literal.
    assert!(store.users(Some("%")).await.unwrap().is_empty());
    assert!(store.users(Some("_")).await.unwrap().is_empty());
    let all = store.users(None).await.unwrap();
    assert_eq!(all[0].group_ids, ["g1", "g2"]);
}

async fn groups_and_groups_by_id(store: Arc<dyn Store>) {
    seed(&store).await;
    let groups = store.groups().await.unwrap();
    let ids: Vec<_> = groups.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(
        ids,
        ["g1", "g2"],
        "sorted by display name, case-insensitively"
    );
    assert_eq!(groups[0].member_user_ids, ["u-alice"]);
    assert_eq!(groups[1].member_user_ids, ["u-alice", "u-bob"]);
    assert_eq!(groups[0].display_name, "Admins");

    let some = store
        .groups_by_id(&["g2".to_owned(), "unknown".to_owned()])
        .await
        .unwrap();
    assert_eq!(some.len(), 1);
    assert_eq!(some[0].id, "g2");
    assert!(store.groups_by_id(&[]).await.unwrap().is_empty());
    assert!(store
        .groups_by_id(&["G1".to_owned()])
        .await
        .unwrap()
        .is_empty());
}

async fn user_with_group_refs_matches_groups_by_id(store: Arc<dyn Store>) {
    seed(&store).await;
    for key in ["u-alice", "ALICE", "alice@example.org", "bob", "carol"] {
        let (user, refs) = store
            .user_with_group_refs(key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{key} not found"));
        assert_eq!(
            Some(&user),
            store.user(key).await.unwrap().as_ref(),
            "{key}"
        );
        let full = store.groups_by_id(&user.group_ids).await.unwrap();
        let expected: Vec<GroupRef> = full.iter().map(GroupRef::from).collect();
        assert_eq!(refs, expected, "{key}: same groups in the same order");
    }
    let (_, alice) = store.user_with_group_refs("alice").await.unwrap().unwrap();
    let names: Vec<_> = alice.iter().map(|g| g.display_name.as_str()).collect();
    assert_eq!(names, ["Admins", "staff"]);
    assert!(store
        .user_with_group_refs("nobody")
        .await
        .unwrap()
        .is_none());
}

/// A backend may answer sign-in reads from memory, but never across a sync: each read after a
/// sync (plain or streamed) sees what it wrote, names that came or went included.
async fn user_with_group_refs_follows_every_sync(store: Arc<dyn Store>) {
    seed(&store).await;
    let refs = |found: Option<(User, Vec<GroupRef>)>| {
        found.map(|(user, refs)| {
            let names: Vec<String> = refs.into_iter().map(|g| g.display_name).collect();
            (user.display_name, user.account_enabled, names)
        })
    };
    // Read twice, so a cached answer is there to go stale.
    for _ in 0..2 {
        assert_eq!(
            refs(store.user_with_group_refs("alice").await.unwrap()),
            Some((
                "alice display".to_owned(),
                true,
                vec!["Admins".to_owned(), "staff".to_owned()]
            ))
        );
        assert!(store.user_with_group_refs("erin").await.unwrap().is_none());
    }

    let mut alice = user("u-alice", "alice", "alice@example.org", &["g2"]);
    alice.display_name = "Alice Liddell".to_owned();
    alice.account_enabled = false;
    let plan = SyncPlan {
        upsert_users: vec![alice, user("u-erin", "erin", "erin@example.org", &["g1"])],
        upsert_groups: vec![group("g2", "Staff (all)")],
        ..SyncPlan::default()
    };
    store
        .apply_sync(&fence(&store).await, &plan, &[])
        .await
        .unwrap();
    assert_eq!(
        refs(store.user_with_group_refs("alice").await.unwrap()),
        Some((
            "Alice Liddell".to_owned(),
            false,
            vec!["Staff (all)".to_owned()]
        ))
    );
    assert_eq!(
        refs(store.user_with_group_refs("erin").await.unwrap()),
        Some(("erin display".to_owned(), true, vec!["Admins".to_owned()]))
    );

    // A streamed sync that deletes erin and renames alice's group.
    let (batches, upserts) = tokio::sync::mpsc::channel(2);
    let (end_tx, end) = tokio::sync::oneshot::channel();
    let feed = async move {
        batches
            .send(vec![user("u-bob", "Bob", "bob.b@example.org", &["g2"])])
            .await
            .unwrap();
        drop(batches);
        let end = SyncPlanEnd {
            plan: SyncPlan {
                delete_user_ids: vec!["u-erin".to_owned()],
                upsert_groups: vec![group("g2", "everyone")],
                ..SyncPlan::default()
            },
            audit: Vec::new(),
        };
        end_tx
            .send(end)
            .unwrap_or_else(|_| panic!("the store stopped listening"));
    };
    let lease = fence(&store).await;
    let (committed, ()) = tokio::join!(store.apply_sync_streamed(&lease, upserts, end), feed);
    assert!(committed.unwrap());
    assert!(store.user_with_group_refs("erin").await.unwrap().is_none());
    assert_eq!(
        refs(store.user_with_group_refs("alice").await.unwrap()),
        Some((
            "Alice Liddell".to_owned(),
            false,
            vec!["everyone".to_owned()]
        ))
    );
}

async fn append_audits_stores_a_batch_in_order(store: Arc<dyn Store>) {
    let e = |name: &str| event(name, "vpn", Some("alice@example.org"), t(1));
    store.append_audits(&[]).await.unwrap();
    store
        .append_audits(&[e("first"), e("second"), e("third")])
        .await
        .unwrap();
    let mut recorded = audit_all(&store).await;
    recorded.reverse();
    assert_eq!(recorded, ["first", "second", "third"]);

    // A NUL in a batch is as harmless as in one event (see nul_characters_are_harmless).
    let mut nul = e("fourth\0");
    nul.actor = "nul\0actor".to_owned();
    store.append_audits(&[nul, e("fifth")]).await.unwrap();
    assert_eq!(audit_all(&store).await.len(), 5);
}

async fn apply_sync_add_change_delete(store: Arc<dyn Store>) {
    seed(&store).await;
    store
        .replace_tap(
            &tap("tap-a", "u-alice", false),
            &event("tap", "root", None, t(1)),
        )
        .await
        .unwrap();
    store
        .add_method(
            &method("m-a", "u-alice", t(1)),
            &event("method", "alice", None, t(1)),
        )
        .await
        .unwrap();
    store
        .replace_tap(
            &tap("tap-b", "u-bob", false),
            &event("tap", "root", None, t(1)),
        )
        .await
        .unwrap();
    store
        .add_method(
            &method("m-b", "u-bob", t(1)),
            &event("method", "bob", None, t(1)),
        )
        .await
        .unwrap();

    // Change: Alice is renamed and leaves g1; her TAP and methods must survive the update.
    let mut renamed = user("u-alice", "alice2", "alice2@example.org", &["g2"]);
    renamed.account_enabled = false;
    renamed.mail = None;
    let plan = SyncPlan {
        upsert_users: vec![
            renamed.clone(),
            user("u-dave", "dave", "dave@example.org", &["g1"]),
        ],
        delete_user_ids: vec!["u-bob".to_owned()],
        upsert_groups: vec![group("g3", "Helpdesk")],
        delete_group_ids: vec!["g2".to_owned()],
        revoke_tap_user_ids: Vec::new(),
    };
    let events = [
        event("Sync added user", "tapd", Some("dave@example.org"), t(2)),
        event("Sync deleted user", "tapd", Some("bob.b@example.org"), t(2)),
    ];
    store
        .apply_sync(&fence(&store).await, &plan, &events)
        .await
        .unwrap();

    assert_eq!(store.user("u-alice").await.unwrap().unwrap(), renamed);
    assert!(
        store.user("alice").await.unwrap().is_none(),
        "old name gone"
    );
    assert_eq!(store.user("ALICE2").await.unwrap().unwrap().id, "u-alice");
    assert_eq!(
        store.tap_for_user("u-alice").await.unwrap().unwrap().id,
        "tap-a"
    );
    assert_eq!(store.methods("u-alice").await.unwrap().len(), 1);
    assert_eq!(store.user("dave").await.unwrap().unwrap().group_ids, ["g1"]);

    // Delete: Bob, his TAP and his methods are gone.
    assert!(store.user("u-bob").await.unwrap().is_none());
    assert!(store.tap_for_user("u-bob").await.unwrap().is_none());
    assert!(store.methods("u-bob").await.unwrap().is_empty());
    let consumed = store
        .consume_one_time_tap("tap-b", t(3), &event("c", "bob", None, t(3)))
        .await
        .unwrap();
    assert!(!consumed, "a deleted user's TAP is gone");

    let groups = members_by_group(&store).await;
    assert_eq!(
        groups,
        [
            ("g1".to_owned(), vec!["u-dave".to_owned()]),
            ("g3".to_owned(), vec![]),
        ]
    );

    let audit = audit_all(&store).await;
    assert!(audit.contains(&"Sync added user".to_owned()));
    assert!(audit.contains(&"Sync deleted user".to_owned()));

    // An empty plan with no events changes nothing.
    store
        .apply_sync(&fence(&store).await, &SyncPlan::default(), &[])
        .await
        .unwrap();
    assert_eq!(store.users(None).await.unwrap().len(), 3);
}

async fn apply_sync_streamed_commits_only_with_its_end(store: Arc<dyn Store>) {
    seed(&store).await;
    let before = store.users(None).await.unwrap();

    // Batches arrive, then the end is dropped (a failed read, a refused plan): nothing changes.
    let (batches, upserts) = tokio::sync::mpsc::channel(2);
    let (end_tx, end) = tokio::sync::oneshot::channel::<SyncPlanEnd>();
    let feed = async move {
        batches
            .send(vec![user("u-erin", "erin", "erin@example.org", &["g1"])])
            .await
            .unwrap();
        drop(batches);
        drop(end_tx);
    };
    let lease = fence(&store).await;
    let (committed, ()) = tokio::join!(store.apply_sync_streamed(&lease, upserts, end), feed);
    assert!(!committed.unwrap());
    assert_eq!(store.users(None).await.unwrap(), before);

    // Batches and an end: one transaction, later upserts of an id win, groups follow users.
    let (batches, upserts) = tokio::sync::mpsc::channel(2);
    let (end_tx, end) = tokio::sync::oneshot::channel();
    let feed = async move {
        batches
            .send(vec![
                user("u-erin", "erin", "erin@example.org", &["g1"]),
                user("u-bob", "Bob", "bob.b@example.org", &["g1", "g2"]),
            ])
            .await
            .unwrap();
        batches
            .send(vec![user("u-frank", "frank", "frank@example.org", &[])])
            .await
            .unwrap();
        drop(batches);
        end_tx
            .send(SyncPlanEnd {
                plan: SyncPlan {
                    upsert_users: vec![user("u-erin", "erin", "erin@example.org", &["g2"])],
                    delete_user_ids: vec!["u-carol".to_owned()],
                    ..SyncPlan::default()
                },
                audit: vec![event("Sync streamed", "tapd", None, t(1))],
            })
            .unwrap();
    };
    let lease = fence(&store).await;
    let (committed, ()) = tokio::join!(store.apply_sync_streamed(&lease, upserts, end), feed);
    assert!(committed.unwrap());
    let users: Vec<(String, Vec<String>)> = store
        .users(None)
        .await
        .unwrap()
        .into_iter()
        .map(|u| (u.id, u.group_ids))
        .collect();
    let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        users,
        [
            ("u-alice".to_owned(), owned(&["g1", "g2"])),
            ("u-bob".to_owned(), owned(&["g1", "g2"])),
            ("u-erin".to_owned(), owned(&["g2"])),
            ("u-frank".to_owned(), owned(&[])),
        ]
    );
    let members = members_by_group(&store).await;
    assert_eq!(
        members,
        [
            ("g1".to_owned(), owned(&["u-alice", "u-bob"])),
            ("g2".to_owned(), owned(&["u-alice", "u-bob", "u-erin"])),
        ]
    );
    assert!(audit_all(&store)
        .await
        .contains(&"Sync streamed".to_owned()));
}

async fn apply_sync_revokes_taps(store: Arc<dyn Store>) {
    seed(&store).await;
    store
        .replace_tap(
            &tap("tap-c", "u-carol", true),
            &event("tap", "root", None, t(1)),
        )
        .await
        .unwrap();
    store
        .add_method(
            &method("m-c", "u-carol", t(1)),
            &event("method", "carol", None, t(1)),
        )
        .await
        .unwrap();
    let mut disabled = user("u-carol", "carol", "carol@example.org", &[]);
    disabled.account_enabled = false;
    let plan = SyncPlan {
        upsert_users: vec![disabled.clone()],
        revoke_tap_user_ids: vec!["u-carol".to_owned(), "u-nobody".to_owned()],
        ..SyncPlan::default()
    };
    store
        .apply_sync(
            &fence(&store).await,
            &plan,
            &[event("Sync revoked TAP", "tapd", Some("carol"), t(2))],
        )
        .await
        .unwrap();
    assert!(store.tap_for_user("u-carol").await.unwrap().is_none());
    assert_eq!(store.user("u-carol").await.unwrap().unwrap(), disabled);
    assert_eq!(
        store.methods("u-carol").await.unwrap().len(),
        1,
        "methods stay"
    );
}

async fn replace_tap_returns_old_id(store: Arc<dyn Store>) {
    seed(&store).await;
    assert!(store.tap_for_user("u-alice").await.unwrap().is_none());
    let first = tap("tap-1", "u-alice", false);
    let replaced = store
        .replace_tap(&first, &event("create 1", "root", Some("alice"), t(1)))
        .await
        .unwrap();
    assert_eq!(replaced, None);
    assert_eq!(store.tap_for_user("u-alice").await.unwrap().unwrap(), first);

    let mut second = tap("tap-2", "u-alice", true);
    second.start = t(-30);
    second.lifetime_in_minutes = 43200;
    second.created = Utc.timestamp_micros(1_740_830_400_123_456).unwrap();
    let replaced = store
        .replace_tap(&second, &event("create 2", "root", Some("alice"), t(2)))
        .await
        .unwrap();
    assert_eq!(replaced.as_deref(), Some("tap-1"));
    assert_eq!(
        store.tap_for_user("u-alice").await.unwrap().unwrap(),
        second
    );
    // The old one is really gone: neither deletable nor consumable.
    assert!(!store
        .delete_tap("u-alice", "tap-1", &event("delete", "root", None, t(3)))
        .await
        .unwrap());
    // Other users' TAPs are untouched.
    let bobs = tap("tap-3", "u-bob", false);
    store
        .replace_tap(&bobs, &event("create 3", "root", Some("bob"), t(3)))
        .await
        .unwrap();
    assert_eq!(
        store.tap_for_user("u-alice").await.unwrap().unwrap(),
        second
    );
    assert_eq!(store.tap_for_user("u-bob").await.unwrap().unwrap(), bobs);
}

async fn delete_tap_only_for_its_owner(store: Arc<dyn Store>) {
    seed(&store).await;
    store
        .replace_tap(
            &tap("tap-a", "u-alice", false),
            &event("create", "root", None, t(1)),
        )
        .await
        .unwrap();
    let before = audit_all(&store).await.len();
    assert!(!store
        .delete_tap("u-bob", "tap-a", &event("delete wrong", "root", None, t(2)))
        .await
        .unwrap());
    assert!(!store
        .delete_tap(
            "u-alice",
            "tap-zzz",
            &event("delete unknown", "root", None, t(2))
        )
        .await
        .unwrap());
    assert!(store.tap_for_user("u-alice").await.unwrap().is_some());
    assert_eq!(
        audit_all(&store).await.len(),
        before,
        "nothing deleted, nothing recorded"
    );
    assert!(store
        .delete_tap(
            "u-alice",
            "tap-a",
            &event("delete right", "root", None, t(3))
        )
        .await
        .unwrap());
    assert!(store.tap_for_user("u-alice").await.unwrap().is_none());
    assert_eq!(audit_all(&store).await[0], "delete right");
}

async fn consume_one_time_tap_exactly_once(store: Arc<dyn Store>) {
    seed(&store).await;
    store
        .replace_tap(
            &tap("once", "u-alice", true),
            &event("create", "root", None, t(1)),
        )
        .await
        .unwrap();
    store
        .replace_tap(
            &tap("multi", "u-bob", false),
            &event("create", "root", None, t(1)),
        )
        .await
        .unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .consume_one_time_tap(
                    "once",
                    t(10) + Duration::seconds(i),
                    &event("Sign-in with TAP", "alice", Some("alice"), t(10)),
                )
                .await
                .unwrap()
        });
    }
    let mut winners = 0;
    while let Some(won) = tasks.join_next().await {
        if won.unwrap() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
    let used = store.tap_for_user("u-alice").await.unwrap().unwrap();
    let used_at = used.used_at.expect("marked used");
    assert!(used_at >= t(10) && used_at < t(11));
    let sign_ins = audit_all(&store)
        .await
        .into_iter()
        .filter(|a| a == "Sign-in with TAP")
        .count();
    assert_eq!(sign_ins, 1, "audit only for the one that succeeded");

    // A multi-use TAP and an unknown id are never "consumed".
    let e = event("Sign-in with TAP", "bob", None, t(10));
    assert!(!store
        .consume_one_time_tap("multi", t(10), &e)
        .await
        .unwrap());
    assert!(store
        .tap_for_user("u-bob")
        .await
        .unwrap()
        .unwrap()
        .used_at
        .is_none());
    assert!(!store.consume_one_time_tap("nope", t(10), &e).await.unwrap());
}

async fn methods_add_update_delete(store: Arc<dyn Store>) {
    seed(&store).await;
    assert!(store.methods("u-alice").await.unwrap().is_empty());
    let newer = method("m-2", "u-alice", t(20));
    let mut older = method("m-1", "u-alice", t(10));
    older.kind = MethodKind::SoftwareOath;
    older.display_name = "Authenticator app".to_owned();
    store
        .add_method(&newer, &event("add 2", "alice", None, t(20)))
        .await
        .unwrap();
    store
        .add_method(&older, &event("add 1", "alice", None, t(21)))
        .await
        .unwrap();
    store
        .add_method(
            &method("m-3", "u-bob", t(5)),
            &event("add 3", "bob", None, t(22)),
        )
        .await
        .unwrap();
    assert_eq!(
        store.methods("u-alice").await.unwrap(),
        [older.clone(), newer.clone()],
        "oldest first"
    );

    assert!(store
        .update_method_data("m-2", "{\"signCount\":7}")
        .await
        .unwrap());
    assert!(!store.update_method_data("m-404", "x").await.unwrap());
    let methods = store.methods("u-alice").await.unwrap();
    assert_eq!(methods[1].data, "{\"signCount\":7}");

    assert!(!store
        .delete_method("u-bob", "m-1", &event("del wrong", "bob", None, t(30)))
        .await
        .unwrap());
    assert!(store
        .delete_method("u-alice", "m-1", &event("del right", "alice", None, t(31)))
        .await
        .unwrap());
    assert!(!store
        .delete_method("u-alice", "m-1", &event("del again", "alice", None, t(32)))
        .await
        .unwrap());
    let left: Vec<_> = store
        .methods("u-alice")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(left, ["m-2"]);
    assert_eq!(store.methods("u-bob").await.unwrap().len(), 1);
}

async fn audit_filters_and_ordering(store: Arc<dyn Store>) {
    let before_epoch = DateTime::from_timestamp(-86_400, 0).unwrap();
    let mut failed = event(
        "User signed in with Temporary Access Pass",
        "alice@example.org",
        Some("alice@example.org"),
        t(30),
    );
    failed.result = AuditResult::Failure;
    failed.reason_code = Some("tap_expired".to_owned());
    failed.channel = Channel::Web;
    failed.source_address = None;
    failed.details = json!({ "tapId": "t-1", "nested": { "n": [1, 2] } });
    let events = vec![
        event(
            "Admin registered temporary access pass method for user",
            "root (uid 0)",
            Some("Alice@Example.org"),
            t(10),
        ),
        failed.clone(),
        event("Update policy", "root (uid 0)", None, t(20)),
        event(
            "Admin deleted temporary access pass method for user",
            "helpdesk@example.org",
            Some("bob@example.org"),
            t(20),
        ),
        event("Ancient", "tapd", None, before_epoch),
    ];
    // Inserted out of time order, in separate calls.
    for e in &events {
        store.append_audit(e).await.unwrap();
    }
    let all = store.audit(&AuditFilter::default()).await.unwrap();
    let activities: Vec<_> = all.iter().map(|e| e.event.activity.as_str()).collect();
    assert_eq!(
        activities,
        [
            "User signed in with Temporary Access Pass",
            // Same time: the later insert first.
            "Admin deleted temporary access pass method for user",
            "Update policy",
            "Admin registered temporary access pass method for user",
            "Ancient",
        ]
    );
    // Every field survives, and ids increase with insertion.
    assert_eq!(all[0].event, failed);
    assert!(all[1].id > all[2].id);
    assert!(all[0].id > all[3].id);

    let query = |filter: AuditFilter| {
        let store = store.clone();
        async move {
            store
                .audit(&filter)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.event.activity)
                .collect::<Vec<_>>()
        }
    };
    // since is inclusive, until exclusive.
    assert_eq!(
        query(AuditFilter {
            since: Some(t(20)),
            until: Some(t(30)),
            ..AuditFilter::default()
        })
        .await,
        [
            "Admin deleted temporary access pass method for user",
            "Update policy"
        ]
    );
    assert_eq!(
        query(AuditFilter {
            until: Some(t(10)),
            ..AuditFilter::default()
        })
        .await,
        ["Ancient"]
    );
    // user matches the actor or the target, case-insensitively, but whole values only.
    assert_eq!(
        query(AuditFilter {
            user: Some("ALICE@example.ORG".to_owned()),
            ..AuditFilter::default()
        })
        .await,
        [
            "User signed in with Temporary Access Pass",
            "Admin registered temporary access pass method for user",
        ]
    );
    assert_eq!(
        query(AuditFilter {
            user: Some("Helpdesk@Example.org".to_owned()),
            ..AuditFilter::default()
        })
        .await,
        ["Admin deleted temporary access pass method for user"]
    );
    assert!(query(AuditFilter {
        user: Some("alice".to_owned()),
        ..AuditFilter::default()
    })
    .await
    .is_empty());
    // activity is a case-insensitive substring.
    assert_eq!(
        query(AuditFilter {
            activity: Some("TEMPORARY ACCESS PASS METHOD".to_owned()),
            ..AuditFilter::default()
        })
        .await,
        [
            "Admin deleted temporary access pass method for user",
            "Admin registered temporary access pass method for user",
        ]
    );
    assert!(query(AuditFilter {
        activity: Some("%".to_owned()),
        ..AuditFilter::default()
    })
    .await
    .is_empty());
    // Filters combine; limit keeps the newest.
    assert_eq!(
        query(AuditFilter {
            since: Some(t(0)),
            activity: Some("pass".to_owned()),
            user: Some("root (UID 0)".to_owned()),
            ..AuditFilter::default()
        })
        .await,
        ["Admin registered temporary access pass method for user"]
    );
    assert_eq!(
        query(AuditFilter {
            limit: 2,
            ..AuditFilter::default()
        })
        .await,
        [
            "User signed in with Temporary Access Pass",
            "Admin deleted temporary access pass method for user",
        ]
    );
}

async fn audit_limit_default_and_cap(store: Arc<dyn Store>) {
    // 1,100 events in one transaction (apply_sync with an empty plan).
    let events: Vec<_> = (0..1100)
        .map(|i| {
            event(
                &format!("event {i:04}"),
                "tapd",
                None,
                t(0) + Duration::seconds(i),
            )
        })
        .collect();
    store
        .apply_sync(&fence(&store).await, &SyncPlan::default(), &events)
        .await
        .unwrap();
    let default = store.audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(default.len(), 100);
    assert_eq!(default[0].event.activity, "event 1099");
    assert_eq!(default[99].event.activity, "event 1000");
    let capped = store
        .audit(&AuditFilter {
            limit: 5000,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(capped.len(), 1000);
    assert_eq!(capped[999].event.activity, "event 0100");
    let exact = store
        .audit(&AuditFilter {
            limit: 1000,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(exact.len(), 1000);
}

async fn audit_written_by_each_mutating_call(store: Arc<dyn Store>) {
    seed(&store).await;
    let e = |name: &str| event(name, "root", Some("alice@example.org"), t(1));
    store
        .put_policy(&TapPolicy::default(), &e("put_policy"))
        .await
        .unwrap();
    store
        .apply_sync(
            &fence(&store).await,
            &SyncPlan::default(),
            &[e("apply_sync 1"), e("apply_sync 2")],
        )
        .await
        .unwrap();
    store
        .replace_tap(&tap("x", "u-alice", true), &e("replace_tap"))
        .await
        .unwrap();
    store
        .consume_one_time_tap("x", t(6), &e("consume_one_time_tap"))
        .await
        .unwrap();
    store
        .delete_tap("u-alice", "x", &e("delete_tap"))
        .await
        .unwrap();
    store
        .add_method(&method("m", "u-alice", t(1)), &e("add_method"))
        .await
        .unwrap();
    store.update_method_data("m", "new").await.unwrap();
    store
        .delete_method("u-alice", "m", &e("delete_method"))
        .await
        .unwrap();
    store
        .put_sync_status(&fence(&store).await, &SyncStatus::default(), &[])
        .await
        .unwrap();
    store.append_audit(&e("append_audit")).await.unwrap();

    let mut recorded = audit_all(&store).await;
    recorded.reverse();
    assert_eq!(
        recorded,
        [
            "put_policy",
            "apply_sync 1",
            "apply_sync 2",
            "replace_tap",
            "consume_one_time_tap",
            "delete_tap",
            "add_method",
            "delete_method",
            "append_audit",
        ]
    );
}

async fn sync_status_roundtrip(store: Arc<dyn Store>) {
    assert_eq!(store.sync_status().await.unwrap(), SyncStatus::default());
    let status = SyncStatus {
        last_run_started: Some(t(0)),
        last_run_finished: Some(t(1)),
        last_run_duration_ms: Some(60_000),
        last_result: Some("deletionsRefused".to_owned()),
        last_success: Some(t(-60)),
        last_error: Some("would delete 40% of users".to_owned()),
        users_seen: 1200,
        groups_seen: 40,
        users_added: 3,
        users_updated: 2,
        users_deleted: 0,
        deletions_refused: 480,
        next_run: Some(t(5)),
        node: Some("tap1.example.org/4242/9f3c2a".to_owned()),
        initiated_by: Some("tapd".to_owned()),
        identity_conflicts: Vec::new(),
    };
    store
        .put_sync_status(&fence(&store).await, &status, &[])
        .await
        .unwrap();
    assert_eq!(store.sync_status().await.unwrap(), status);
    let later = SyncStatus {
        last_result: Some("success".to_owned()),
        ..SyncStatus::default()
    };
    store
        .put_sync_status(&fence(&store).await, &later, &[])
        .await
        .unwrap();
    assert_eq!(store.sync_status().await.unwrap(), later);
}

async fn data_survives_reopen(backend: Backend) {
    let Backend {
        store,
        reopen,
        _guard,
        ..
    } = backend;
    seed(&store).await;
    let policy = TapPolicy {
        state: PolicyState::Enabled,
        ..TapPolicy::default()
    };
    store
        .put_policy(&policy, &event("policy", "root", None, t(1)))
        .await
        .unwrap();
    let the_tap = tap("tap-a", "u-alice", true);
    store
        .replace_tap(&the_tap, &event("tap", "root", None, t(2)))
        .await
        .unwrap();
    store
        .consume_one_time_tap("tap-a", t(7), &event("used", "alice", None, t(7)))
        .await
        .unwrap();
    let the_method = method("m-a", "u-alice", t(8));
    store
        .add_method(&the_method, &event("method", "alice", None, t(8)))
        .await
        .unwrap();
    let status = SyncStatus {
        users_seen: 3,
        ..SyncStatus::default()
    };
    store
        .put_sync_status(&fence(&store).await, &status, &[])
        .await
        .unwrap();
    let users = store.users(None).await.unwrap();
    drop(store);

    let store = reopen(Some(sealer())).await.unwrap();
    assert_eq!(store.policy().await.unwrap(), policy);
    assert_eq!(store.users(None).await.unwrap(), users);
    let stored = store.tap_for_user("u-alice").await.unwrap().unwrap();
    assert_eq!(stored.used_at, Some(t(7)));
    assert_eq!(stored.code_hash, the_tap.code_hash);
    assert_eq!(store.methods("u-alice").await.unwrap(), [the_method]);
    assert_eq!(store.sync_status().await.unwrap(), status);
    assert_eq!(audit_all(&store).await, ["method", "used", "tap", "policy"]);
    assert_eq!(store.groups().await.unwrap().len(), 2);
}

/// The lease's expiry is the database's clock plus the ttl: within the test's run of it.
fn assert_expires_in(lease: &SyncLease, ttl: std::time::Duration, before: Timestamp) {
    let ttl = Duration::from_std(ttl).unwrap();
    assert!(
        lease.expires >= before + ttl - Duration::seconds(5)
            && lease.expires <= Utc::now() + ttl + Duration::seconds(5),
        "{lease:?} does not expire {ttl} from now"
    );
}

async fn sync_lease_granted_and_renewed(store: Arc<dyn Store>) {
    let ttl = std::time::Duration::from_secs(60);
    let before = Utc::now();
    let first = store
        .try_sync_lease("node-a", ttl)
        .await
        .unwrap()
        .granted()
        .expect("granted");
    assert_eq!(first.holder, "node-a");
    assert_expires_in(&first, ttl, before);
    // The holder asks again or renews under its token: the expiry moves on, the epoch stays.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let again = store
        .try_sync_lease("node-a", ttl)
        .await
        .unwrap()
        .granted()
        .expect("granted");
    assert_eq!(again.epoch, first.epoch);
    assert!(again.expires > first.expires, "{again:?} after {first:?}");
    let renewed = store.renew_sync_lease(&first.fence(), ttl).await.unwrap();
    assert_eq!(renewed.epoch, first.epoch);
    assert!(renewed.expires >= again.expires);
    store.release_sync_lease(&first.fence()).await.unwrap();
    // Releasing what one doesn't hold is harmless.
    store.release_sync_lease(&first.fence()).await.unwrap();
    // Released: no renewal, and the next grant, to the same node, raises the epoch.
    assert!(matches!(
        store.renew_sync_lease(&first.fence(), ttl).await,
        Err(StoreError::LeaseLost(_))
    ));
    let next = store
        .try_sync_lease("node-a", ttl)
        .await
        .unwrap()
        .granted()
        .expect("granted");
    assert_eq!(next.epoch, first.epoch + 1);
}

/// What a sync's fenced writes would change, to show that a refused one changed nothing.
async fn fenced_writes_refused(store: &Arc<dyn Store>, stale: &SyncFence, expected: &LeaseLost) {
    let users_before = store.users(None).await.unwrap();
    let status_before = store.sync_status().await.unwrap();
    let audit_before = audit_all(store).await;
    let plan = SyncPlan {
        upsert_users: vec![user("u-late", "late", "late@example.org", &[])],
        delete_user_ids: vec!["u-alice".to_owned()],
        ..SyncPlan::default()
    };
    let late = [event("Directory sync applied changes", "tapd", None, t(9))];
    let refused = |result: Result<(), StoreError>, what: &str| match result {
        Err(StoreError::LeaseLost(lost)) => assert_eq!(&lost, expected, "{what}"),
        other => panic!("{what}: expected LeaseLost, got {other:?}"),
    };
    refused(store.apply_sync(stale, &plan, &late).await, "apply_sync");
    let (upserts_tx, upserts) = tokio::sync::mpsc::channel(4);
    let (end_tx, end) = tokio::sync::oneshot::channel();
    let feed = async {
        upserts_tx
            .send(vec![user(
                "u-streamed",
                "streamed",
                "streamed@example.org",
                &[],
            )])
            .await
            .unwrap();
        drop(upserts_tx);
        end_tx
            .send(SyncPlanEnd {
                plan: plan.clone(),
                audit: late.to_vec(),
            })
            .unwrap();
    };
    let (streamed, ()) = tokio::join!(store.apply_sync_streamed(stale, upserts, end), feed);
    refused(streamed.map(|_| ()), "apply_sync_streamed");
    let status = SyncStatus {
        node: Some("late".to_owned()),
        ..SyncStatus::default()
    };
    refused(
        store.put_sync_status(stale, &status, &late).await,
        "put_sync_status",
    );
    assert!(matches!(
        store
            .renew_sync_lease(stale, std::time::Duration::from_secs(60))
            .await,
        Err(StoreError::LeaseLost(_))
    ));
    // Nothing of any of them is visible.
    assert_eq!(store.users(None).await.unwrap(), users_before);
    assert_eq!(store.sync_status().await.unwrap(), status_before);
    assert_eq!(audit_all(store).await, audit_before);
}

/// A lease that lapsed and went to another node: the first holder's writes, under its old
/// fencing token, are refused and change nothing; the new holder's go through.
async fn sync_lease_stale_token_is_refused(store: Arc<dyn Store>) {
    seed(&store).await;
    store
        .release_sync_lease(&fence(&store).await)
        .await
        .unwrap();
    let ttl = std::time::Duration::from_millis(300);
    let a = store
        .try_sync_lease("node-a", ttl)
        .await
        .unwrap()
        .granted()
        .expect("granted");
    tokio::time::sleep(ttl + std::time::Duration::from_millis(200)).await;
    let b = store
        .try_sync_lease("node-b", std::time::Duration::from_secs(60))
        .await
        .unwrap()
        .granted()
        .expect("A's lease lapsed");
    assert!(b.epoch > a.epoch, "{b:?} after {a:?}");
    let expected = LeaseLost {
        token: a.epoch,
        current: b.epoch,
        holder: Some("node-b".to_owned()),
        lapsed: false,
    };
    assert_eq!(
        expected.to_string(),
        format!(
            "sync lease lost (fencing token {}, current {} held by node node-b)",
            a.epoch, b.epoch
        )
    );
    fenced_writes_refused(&store, &a.fence(), &expected).await;
    // A can't release B's lease either; B still writes.
    store.release_sync_lease(&a.fence()).await.unwrap();
    store
        .apply_sync(
            &b.fence(),
            &SyncPlan {
                upsert_users: vec![user("u-b", "bee", "bee@example.org", &[])],
                ..SyncPlan::default()
            },
            &[],
        )
        .await
        .unwrap();
    assert!(store.user("bee").await.unwrap().is_some());
}

/// A lease that lapsed without anyone taking it over still fences its holder's writes off:
/// between the lapse and the write another node could have synced.
async fn sync_lease_lapsed_token_is_refused(store: Arc<dyn Store>) {
    seed(&store).await;
    store
        .release_sync_lease(&fence(&store).await)
        .await
        .unwrap();
    let ttl = std::time::Duration::from_millis(300);
    let a = store
        .try_sync_lease("node-a", ttl)
        .await
        .unwrap()
        .granted()
        .expect("granted");
    tokio::time::sleep(ttl + std::time::Duration::from_millis(200)).await;
    let expected = LeaseLost {
        token: a.epoch,
        current: a.epoch,
        holder: Some("node-a".to_owned()),
        lapsed: true,
    };
    fenced_writes_refused(&store, &a.fence(), &expected).await;
    // Asking again gives a new token, under which writes go through.
    let again = store
        .try_sync_lease("node-a", ttl)
        .await
        .unwrap()
        .granted()
        .expect("granted");
    assert_eq!(again.epoch, a.epoch + 1);
    store
        .put_sync_status(&again.fence(), &SyncStatus::default(), &[])
        .await
        .unwrap();
}

async fn apply(store: &Arc<dyn Store>, plan: SyncPlan) {
    store
        .apply_sync(&fence(store).await, &plan, &[])
        .await
        .unwrap();
}

/// Applies a sync that upserts `users` and changes nothing else.
async fn upsert(store: &Arc<dyn Store>, users: Vec<User>) {
    let plan = SyncPlan {
        upsert_users: users,
        ..SyncPlan::default()
    };
    apply(store, plan).await;
}

/// The identity-conflict events in the audit (the store's order), with their times.
async fn conflict_events(store: &Arc<dyn Store>) -> Vec<(String, Timestamp)> {
    store
        .audit(&AuditFilter {
            activity: Some("identity conflict".to_owned()),
            ..AuditFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.event.activity, e.event.time))
        .collect()
}

async fn conflict_audit(store: &Arc<dyn Store>) -> Vec<String> {
    let events = conflict_events(store).await;
    events.into_iter().map(|(activity, _)| activity).collect()
}

/// A user who later claims another's username as its UPN is quarantined; the holder keeps the
/// name; a deletion of the holder releases the claimant.
async fn a_later_claim_on_a_name_is_quarantined(store: Arc<dyn Store>) {
    apply(
        &store,
        SyncPlan {
            upsert_users: vec![user("u-alice", "alice", "alice@example.org", &[])],
            ..SyncPlan::default()
        },
    )
    .await;
    apply(
        &store,
        SyncPlan {
            upsert_users: vec![user("u-mal", "mallory", "ALICE", &[])],
            ..SyncPlan::default()
        },
    )
    .await;
    assert_eq!(store.user("Alice").await.unwrap().unwrap().id, "u-alice");
    let found = store.user_with_group_refs("alice").await.unwrap().unwrap();
    assert_eq!(found.0.id, "u-alice");
    assert!(found.0.identity_conflict.is_none());
    let mallory = store.user("mallory").await.unwrap().unwrap();
    let conflict = mallory.identity_conflict.expect("quarantined");
    assert_eq!(conflict.names[0].name, "alice");
    assert_eq!(conflict.names[0].attribute, "userPrincipalName");
    assert_eq!(
        conflict.names[0].held_by.as_ref().map(|h| h.id.as_str()),
        Some("u-alice")
    );
    let quarantined: Vec<String> = store
        .quarantined_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(quarantined, ["u-mal"]);
    assert_eq!(
        conflict_audit(&store).await,
        ["Directory sync: identity conflict"]
    );
    // An unrelated sync neither re-audits nor releases.
    apply(
        &store,
        SyncPlan {
            upsert_users: vec![user("u-other", "other", "other@example.org", &[])],
            ..SyncPlan::default()
        },
    )
    .await;
    assert_eq!(conflict_audit(&store).await.len(), 1);
    apply(
        &store,
        SyncPlan {
            delete_user_ids: vec!["u-alice".to_owned()],
            ..SyncPlan::default()
        },
    )
    .await;
    let mallory = store.user("alice").await.unwrap().unwrap();
    assert_eq!(mallory.id, "u-mal");
    assert!(mallory.identity_conflict.is_none());
    assert!(store.quarantined_users().await.unwrap().is_empty());
    assert_eq!(
        conflict_audit(&store).await[0],
        "Directory sync: identity conflict resolved"
    );
}

/// The identity-conflict events a sync's write records by itself (the caller brought no sync
/// event to take their time from) carry the store clock's time, not the system's.
async fn conflict_events_without_a_sync_event_take_the_store_clock_time(
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
) {
    let quarantined_at = clock.now();
    let bob = user("u-bob", "bob", "bob@example.org", &[]);
    let alice = user("u-alice", "alice", "alice@example.org", &[]);
    upsert(&store, vec![alice, bob.clone()]).await;
    // Bob takes Alice's name as his userPrincipalName: quarantined, audited by the store.
    upsert(&store, vec![user("u-bob", "bob", "ALICE", &[])]).await;
    let released_at = quarantined_at + Duration::hours(3);
    clock.set(released_at);
    upsert(&store, vec![bob]).await;

    let mut stamped = conflict_events(&store).await;
    stamped.sort_by_key(|(_, time)| *time);
    assert_eq!(
        stamped,
        [
            (
                tapd::store::identity::activity::IDENTITY_CONFLICT.to_owned(),
                quarantined_at
            ),
            (
                tapd::store::identity::activity::IDENTITY_CONFLICT_RESOLVED.to_owned(),
                released_at
            ),
        ]
    );
}

/// Two users that claim one name in the same sync: the name finds nobody, both are quarantined.
async fn claims_of_one_sync_tie_and_find_nobody(store: Arc<dyn Store>) {
    apply(
        &store,
        SyncPlan {
            upsert_users: vec![
                user("u-1", "bob", "bob@example.org", &[]),
                user("u-2", "robert", "BOB", &[]),
            ],
            ..SyncPlan::default()
        },
    )
    .await;
    assert!(store.user("bob").await.unwrap().is_none());
    assert!(store.user_with_group_refs("bob").await.unwrap().is_none());
    assert_eq!(store.quarantined_users().await.unwrap().len(), 2);
    // Ids still find each of them.
    assert_eq!(store.user("u-2").await.unwrap().unwrap().username, "robert");
}

async fn names_fold_ascii_only(store: Arc<dyn Store>) {
    let plan = SyncPlan {
        upsert_users: vec![
            user("u-elodie", "Élodie", "Élodie@Example.org", &["g-É"]),
            user("u-zoe", "zoë", "zoe@example.org", &[]),
        ],
        upsert_groups: vec![group("g-É", "Équipe"), group("g-a", "alpha")],
        ..SyncPlan::default()
    };
    store
        .apply_sync(&fence(&store).await, &plan, &[])
        .await
        .unwrap();
    // ASCII letters fold; other letters compare exactly (as SQLite's lower()).
    assert_eq!(
        store.user("Élodie@EXAMPLE.ORG").await.unwrap().unwrap().id,
        "u-elodie"
    );
    assert!(store.user("élodie").await.unwrap().is_none());
    assert!(store.user("ZOË").await.unwrap().is_none());
    assert_eq!(store.user("ZOë").await.unwrap().unwrap().id, "u-zoe");
    let found: Vec<_> = store
        .users(Some("ÉLO"))
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(found, ["u-elodie"]);
    assert!(store.users(Some("éLO")).await.unwrap().is_empty());
    // Byte order after ASCII folding: "zoë" < "É…" (0x7a < 0xc3), "alpha" < "Équipe".
    let order: Vec<_> = store
        .users(None)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(order, ["u-zoe", "u-elodie"]);
    let groups: Vec<_> = store
        .groups()
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.id)
        .collect();
    assert_eq!(groups, ["g-a", "g-É"]);
    assert_eq!(
        store.groups_by_id(&["g-É".to_owned()]).await.unwrap()[0].member_user_ids,
        ["u-elodie"]
    );
    store
        .append_audit(&event("Équipe changed", "Élodie@Example.org", None, t(1)))
        .await
        .unwrap();
    let by_user = store
        .audit(&AuditFilter {
            user: Some("élodie@example.org".to_owned()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert!(by_user.is_empty());
    let by_activity = store
        .audit(&AuditFilter {
            activity: Some("ÉQUIPE CH".to_owned()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_activity.len(), 1);
}

/// A NUL in input (a percent-decoded `%00`, a RADIUS attribute) is never an error: lookups find
/// nothing, writes are stored (PostgreSQL keeps U+FFFD in its place), filters still match.
async fn nul_characters_are_harmless(store: Arc<dyn Store>) {
    seed(&store).await;
    assert!(store.user("alice\0").await.unwrap().is_none());
    assert!(store
        .user_with_group_refs("alice\0")
        .await
        .unwrap()
        .is_none());
    assert!(store.users(Some("\0")).await.unwrap().is_empty());
    assert!(store.tap_for_user("u-alice\0").await.unwrap().is_none());
    assert!(store.methods("\0").await.unwrap().is_empty());
    assert!(store
        .groups_by_id(&["g1\0".to_owned()])
        .await
        .unwrap()
        .is_empty());
    let mut nul = event(
        "Sign-in\0 attempt",
        "mallory\0@example.org",
        Some("x\0"),
        t(1),
    );
    nul.details = json!({ "userName": "a\0b" });
    store.append_audit(&nul).await.unwrap();
    let found = store
        .audit(&AuditFilter {
            user: Some("MALLORY\0@example.org".to_owned()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    // JSON keeps the NUL escaped, so details come back exactly.
    assert_eq!(found[0].event.details, json!({ "userName": "a\0b" }));
    assert!(!store
        .delete_tap("u-alice", "t\0", &event("d", "root", None, t(2)))
        .await
        .unwrap());
    assert!(!store
        .consume_one_time_tap("t\0", t(2), &event("c", "root", None, t(2)))
        .await
        .unwrap());
}

async fn sync_lease_exclusive_across_nodes(backend: Backend) {
    let node_a = backend.store.clone();
    let node_b = (backend.reopen)(Some(sealer())).await.unwrap();
    let ttl = std::time::Duration::from_millis(1500);
    let granted = node_a
        .try_sync_lease("node-a", ttl)
        .await
        .unwrap()
        .granted()
        .expect("granted");
    // Held by A: B is refused and told by whom and until when.
    let refused = node_b.try_sync_lease("node-b", ttl).await.unwrap();
    assert_eq!(refused, SyncLeaseOutcome::HeldElsewhere(granted.clone()));
    // B can't release A's lease (B's token is not A's).
    let forged = SyncFence {
        holder: "node-b".to_owned(),
        epoch: granted.epoch,
    };
    node_b.release_sync_lease(&forged).await.unwrap();
    assert!(matches!(
        node_b.try_sync_lease("node-b", ttl).await.unwrap(),
        SyncLeaseOutcome::HeldElsewhere(_)
    ));
    // A died without releasing: once its lease lapses (the database's clock) B takes over,
    // under a new epoch, and A is now the one refused.
    tokio::time::sleep(ttl + std::time::Duration::from_millis(300)).await;
    let taken = node_b
        .try_sync_lease("node-b", ttl)
        .await
        .unwrap()
        .granted()
        .expect("A's lease lapsed");
    assert_eq!(taken.epoch, granted.epoch + 1);
    assert!(matches!(
        node_a.try_sync_lease("node-a", ttl).await.unwrap(),
        SyncLeaseOutcome::HeldElsewhere(SyncLease { holder, .. }) if holder == "node-b"
    ));
    // Released: the next one to ask gets it at once.
    node_b.release_sync_lease(&taken.fence()).await.unwrap();
    let next = node_a
        .try_sync_lease("node-a", ttl)
        .await
        .unwrap()
        .granted()
        .expect("released");
    assert_eq!(next.epoch, taken.epoch + 1);
}

async fn sync_lease_one_winner_of_many(backend: Backend) {
    let stores = [
        backend.store.clone(),
        (backend.reopen)(Some(sealer())).await.unwrap(),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let store = stores[i % 2].clone();
        tasks.spawn(async move {
            store
                .try_sync_lease(&format!("node-{i}"), std::time::Duration::from_secs(60))
                .await
                .unwrap()
        });
    }
    let mut holders = std::collections::BTreeSet::new();
    let mut granted = 0;
    while let Some(outcome) = tasks.join_next().await {
        match outcome.unwrap() {
            SyncLeaseOutcome::Granted(lease) => {
                granted += 1;
                holders.insert(lease.holder);
            }
            SyncLeaseOutcome::HeldElsewhere(lease) => {
                holders.insert(lease.holder);
            }
        }
    }
    assert_eq!(granted, 1);
    assert_eq!(
        holders.len(),
        1,
        "every refusal names the one winner: {holders:?}"
    );
}

async fn consume_one_time_tap_exactly_once_across_nodes(backend: Backend) {
    let stores = [
        backend.store.clone(),
        (backend.reopen)(Some(sealer())).await.unwrap(),
    ];
    seed(&stores[0]).await;
    stores[1]
        .replace_tap(
            &tap("once", "u-alice", true),
            &event("create", "root", None, t(1)),
        )
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let store = stores[i % 2].clone();
        tasks.spawn(async move {
            store
                .consume_one_time_tap(
                    "once",
                    t(10),
                    &event("Sign-in with TAP", "alice", Some("alice"), t(10)),
                )
                .await
                .unwrap()
        });
    }
    let mut winners = 0;
    while let Some(won) = tasks.join_next().await {
        winners += usize::from(won.unwrap());
    }
    assert_eq!(winners, 1);
    for store in &stores {
        let sign_ins = audit_all(store)
            .await
            .into_iter()
            .filter(|a| a == "Sign-in with TAP")
            .count();
        assert_eq!(sign_ins, 1);
    }
}

async fn writes_on_one_node_are_read_on_the_other(backend: Backend) {
    let node_a = backend.store.clone();
    let node_b = (backend.reopen)(Some(sealer())).await.unwrap();
    seed(&node_a).await;
    let the_tap = tap("tap-a", "u-alice", false);
    node_a
        .replace_tap(&the_tap, &event("tap", "root", None, t(1)))
        .await
        .unwrap();
    assert_eq!(node_b.tap_for_user("u-alice").await.unwrap(), Some(the_tap));
    // Two nodes replacing one user's TAP at once: both succeed, one TAP is left.
    let (tap_x, tap_y) = (tap("tap-x", "u-bob", false), tap("tap-y", "u-bob", false));
    let (event_x, event_y) = (
        event("x", "root", None, t(2)),
        event("y", "root", None, t(2)),
    );
    let (a, b) = tokio::join!(
        node_a.replace_tap(&tap_x, &event_x),
        node_b.replace_tap(&tap_y, &event_y),
    );
    a.unwrap();
    b.unwrap();
    let left = node_a.tap_for_user("u-bob").await.unwrap().unwrap();
    assert!(left.id == "tap-x" || left.id == "tap-y");
    assert_eq!(node_b.tap_for_user("u-bob").await.unwrap().unwrap(), left);
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL only: migrations

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_nodes_migrate_one_at_a_time() {
    let cluster = PostgresCluster::shared();
    let url = cluster.create_database().await;
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let url = url.clone();
        opening.spawn(async move { PostgresStore::open(&PostgresSettings::new(url)).await });
    }
    while let Some(opened) = opening.join_next().await {
        opened.unwrap().unwrap();
    }
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT version, name FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    let applied: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        applied,
        [
            (1, "0001_initial".to_owned()),
            (2, "0002_web_sessions".to_owned()),
            (3, "0003_sync_lease_epoch".to_owned()),
            (4, "0004_identity_claims".to_owned()),
            (5, "0005_audit_chain".to_owned()),
            (6, "0006_outbox".to_owned()),
            (7, "0007_tap_code_length".to_owned()),
            (8, "0008_user_manager".to_owned()),
            (9, "0009_onboarding_failures".to_owned()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_a_newer_or_foreign_schema() {
    let cluster = PostgresCluster::shared();
    let url = cluster.create_database().await;
    PostgresStore::open(&PostgresSettings::new(url.clone()))
        .await
        .unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("INSERT INTO schema_migrations (version, name) VALUES (10, '0010_future')")
        .await
        .unwrap();
    match PostgresStore::open(&PostgresSettings::new(url.clone())).await {
        Err(StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!((found, supported), (10, 9));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }

    let foreign = cluster.create_database().await;
    let (client, connection) = tokio_postgres::connect(&foreign, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, \
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()); \
             INSERT INTO schema_migrations (version, name) VALUES (1, 'create_widgets')",
        )
        .await
        .unwrap();
    match PostgresStore::open(&PostgresSettings::new(foreign)).await {
        Err(StoreError::Corrupt(message)) => assert!(message.contains("not a tapd database")),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

async fn method_lookup_and_swap_data_once(store: Arc<dyn Store>) {
    seed(&store).await;
    let m = method("m-1", "u-alice", t(1));
    store
        .add_method(&m, &event("add", "alice", None, t(1)))
        .await
        .unwrap();
    assert_eq!(store.method("m-1").await.unwrap(), Some(m.clone()));
    assert_eq!(store.method("m-404").await.unwrap(), None);

    // Of many concurrent swaps from the same expected value, exactly one wins.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (store, expected) = (store.clone(), m.data.clone());
        tasks.spawn(async move {
            store
                .swap_method_data("m-1", &expected, &format!("{{\"step\":{i}}}"))
                .await
                .unwrap()
        });
    }
    let mut winners = 0;
    while let Some(won) = tasks.join_next().await {
        winners += usize::from(won.unwrap());
    }
    assert_eq!(winners, 1);
    let now = store.method("m-1").await.unwrap().unwrap().data;
    assert!(now.starts_with("{\"step\":"), "{now}");
    assert!(!store.swap_method_data("m-404", "x", "y").await.unwrap());
}

fn web_session(id_hash: &str, user_id: &str, expires: Timestamp) -> WebSession {
    WebSession {
        id_hash: id_hash.to_owned(),
        user_id: user_id.to_owned(),
        created: t(0),
        expires,
        auth_method: WebAuthMethod::TemporaryAccessPass,
        tap_id: Some("tap-1".to_owned()),
        tap_expires: Some(t(60)),
        registration_deadline: Some(t(10)),
        interrupt_mode: false,
        csrf_token: format!("csrf-{id_hash}"),
    }
}

fn ceremony(id: &str, session: Option<&str>, expires: Timestamp) -> WebCeremony {
    WebCeremony {
        id: id.to_owned(),
        kind: CeremonyKind::PasskeyRegistration,
        session_id_hash: session.map(str::to_owned),
        state: format!("{{\"challenge\":\"{id}\"}}"),
        created: t(0),
        expires,
    }
}

async fn web_sessions_roundtrip_update_delete(store: Arc<dyn Store>) {
    seed(&store).await;
    let mut s = web_session("h1", "u-alice", t(60));
    store
        .create_web_session(&s, Some(&event("User sign-in", "alice", None, t(0))), t(0))
        .await
        .unwrap();
    assert_eq!(
        audit_all(&store).await,
        ["User sign-in"],
        "the sign-in's audit goes with it"
    );
    assert_eq!(store.web_session("h1").await.unwrap(), Some(s.clone()));
    assert_eq!(store.web_session("h2").await.unwrap(), None);

    s.auth_method = WebAuthMethod::PasswordAndSecondFactor;
    s.tap_id = None;
    s.tap_expires = None;
    s.registration_deadline = None;
    s.interrupt_mode = true;
    s.expires = t(30);
    assert!(store.update_web_session(&s).await.unwrap());
    assert_eq!(store.web_session("h1").await.unwrap(), Some(s.clone()));
    assert!(!store
        .update_web_session(&web_session("h-404", "u-alice", t(1)))
        .await
        .unwrap());

    store
        .put_web_ceremony(&ceremony("c1", Some("h1"), t(5)), t(0))
        .await
        .unwrap();
    assert!(store.delete_web_session("h1").await.unwrap());
    assert!(!store.delete_web_session("h1").await.unwrap());
    assert_eq!(store.web_session("h1").await.unwrap(), None);
    assert_eq!(
        store.take_web_ceremony("c1").await.unwrap(),
        None,
        "a session's ceremonies go with it"
    );
}

async fn web_sessions_expired_are_purged_and_follow_their_user(store: Arc<dyn Store>) {
    seed(&store).await;
    store
        .create_web_session(&web_session("old", "u-alice", t(10)), None, t(0))
        .await
        .unwrap();
    store
        .create_web_session(&web_session("bob", "u-bob", t(100)), None, t(0))
        .await
        .unwrap();
    // Creating a session at t(10) purges the one that expired exactly then, not the live one.
    store
        .create_web_session(&web_session("new", "u-alice", t(100)), None, t(10))
        .await
        .unwrap();
    assert_eq!(store.web_session("old").await.unwrap(), None);
    assert!(store.web_session("new").await.unwrap().is_some());

    // A user deleted by a sync takes their sessions along.
    let plan = SyncPlan {
        delete_user_ids: vec!["u-bob".to_owned()],
        ..SyncPlan::default()
    };
    store
        .apply_sync(&fence(&store).await, &plan, &[])
        .await
        .unwrap();
    assert_eq!(store.web_session("bob").await.unwrap(), None);
    assert!(store.web_session("new").await.unwrap().is_some());
}

async fn web_ceremonies_are_taken_exactly_once(store: Arc<dyn Store>) {
    seed(&store).await;
    store
        .create_web_session(&web_session("h1", "u-alice", t(60)), None, t(0))
        .await
        .unwrap();
    let c = ceremony("c1", Some("h1"), t(5));
    store.put_web_ceremony(&c, t(0)).await.unwrap();
    let mut sign_in = ceremony("c2", None, t(5));
    sign_in.kind = CeremonyKind::DiscoverableAuthentication;
    store.put_web_ceremony(&sign_in, t(0)).await.unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let store = store.clone();
        tasks.spawn(async move { store.take_web_ceremony("c1").await.unwrap() });
    }
    let mut taken = Vec::new();
    while let Some(got) = tasks.join_next().await {
        taken.extend(got.unwrap());
    }
    assert_eq!(taken, [c]);

    // Putting another ceremony at t(5) purges the one expired exactly then.
    store
        .put_web_ceremony(&ceremony("c3", None, t(20)), t(5))
        .await
        .unwrap();
    assert_eq!(store.take_web_ceremony("c2").await.unwrap(), None);
    assert_eq!(
        store.take_web_ceremony("c3").await.unwrap().map(|c| c.id),
        Some("c3".to_owned())
    );
}

// ---------------------------------------------------------------------------------------------
// Secrets at rest (issue 15): authenticator-app seeds are sealed in every row and every copy.

/// A fresh random authenticator seed: its bytes and its base32 (as the app and the store's
/// JSON carry it).
fn random_seed() -> (Vec<u8>, String) {
    let bytes: Vec<u8> = uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .chain(uuid::Uuid::new_v4().as_bytes())
        .copied()
        .take(20)
        .collect();
    let base32 = tapd::web::totp::base32_encode(&bytes);
    (bytes, base32)
}

fn totp_method(id: &str, user_id: &str, base32: &str) -> RegisteredMethod {
    RegisteredMethod {
        id: id.to_owned(),
        user_id: user_id.to_owned(),
        kind: MethodKind::SoftwareOath,
        display_name: "Authenticator app".to_owned(),
        created: t(1),
        data: json!({ "secret": base32, "lastUsedStep": null }).to_string(),
    }
}

fn totp_ceremony(id: &str, base32: &str) -> WebCeremony {
    WebCeremony {
        id: id.to_owned(),
        kind: CeremonyKind::TotpEnrolment,
        session_id_hash: None,
        state: json!({ "secret": base32 }).to_string(),
        created: t(0),
        expires: t(100_000),
    }
}

/// Whether `needle` occurs in `haystack`, in any of the spellings a dump could show it in
/// (raw bytes, base32 either case, hex as PostgreSQL prints bytea).
fn leaks(haystack: &[u8], bytes: &[u8], base32: &str) -> Option<String> {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let spellings = [
        bytes.to_vec(),
        base32.as_bytes().to_vec(),
        base32.to_lowercase().into_bytes(),
        hex.into_bytes(),
    ];
    spellings
        .iter()
        .find(|needle| {
            haystack
                .windows(needle.len())
                .any(|w| w == needle.as_slice())
        })
        .map(|needle| String::from_utf8_lossy(needle).into_owned())
}

async fn totp_seeds_are_never_stored_in_clear(backend: Backend) {
    let store = backend.store.clone();
    seed(&store).await;
    let (bytes, base32) = random_seed();
    let method = totp_method("m-totp", "u-alice", &base32);
    store
        .add_method(&method, &event("add", "alice", None, t(1)))
        .await
        .unwrap();
    // The enrolment ceremony holds the seed before it is confirmed: sealed too.
    let (pending_bytes, pending) = random_seed();
    store
        .put_web_ceremony(&totp_ceremony("c-totp", &pending), t(0))
        .await
        .unwrap();
    // A code accepted: the data is swapped (compare by content, not by sealed bytes).
    let used = json!({ "secret": base32, "lastUsedStep": 42 }).to_string();
    assert!(!store
        .swap_method_data("m-totp", "{\"secret\":\"wrong\"}", &used)
        .await
        .unwrap());
    assert!(store
        .swap_method_data("m-totp", &method.data, &used)
        .await
        .unwrap());
    assert!(!store
        .swap_method_data("m-totp", &method.data, &used)
        .await
        .unwrap());
    assert!(store.update_method_data("m-totp", &used).await.unwrap());
    // Read back in clear through the store.
    let read = store.method("m-totp").await.unwrap().unwrap();
    assert_eq!(read.data, used);
    assert_eq!(store.methods("u-alice").await.unwrap(), [read]);

    // A copy of the database holds neither seed in any spelling.
    let dump = backend.raw.dump();
    assert!(!dump.is_empty());
    assert_eq!(
        leaks(&dump, &bytes, &base32),
        None,
        "the seed is in the store in clear"
    );
    assert_eq!(
        leaks(&dump, &pending_bytes, &pending),
        None,
        "the pending seed is in the store in clear"
    );
    let stored = backend
        .raw
        .text("SELECT data FROM methods WHERE id = 'm-totp'")
        .await;
    assert!(stored.starts_with("sealed:v1:"), "{stored}");

    let taken = store.take_web_ceremony("c-totp").await.unwrap().unwrap();
    assert_eq!(taken.state, totp_ceremony("c-totp", &pending).state);
    // A passkey's public data is not a secret and stays readable.
    store
        .add_method(
            &method_fido("m-key", "u-alice"),
            &event("add", "alice", None, t(2)),
        )
        .await
        .unwrap();
    let stored = backend
        .raw
        .text("SELECT data FROM methods WHERE id = 'm-key'")
        .await;
    assert_eq!(stored, method_fido("m-key", "u-alice").data);
}

fn method_fido(id: &str, user_id: &str) -> RegisteredMethod {
    method(id, user_id, t(2))
}

async fn clear_seeds_are_sealed_at_open_once(backend: Backend) {
    let Backend {
        store,
        reopen,
        raw,
        _guard,
    } = backend;
    seed(&store).await;
    drop(store);
    // A store written before tapd sealed seeds: opened without a key, rows stay in clear.
    let (bytes, base32) = random_seed();
    let method = totp_method("m-old", "u-bob", &base32);
    let (pending_bytes, pending) = random_seed();
    {
        let old = reopen(None).await.unwrap();
        old.add_method(&method, &event("add", "bob", None, t(1)))
            .await
            .unwrap();
        old.put_web_ceremony(&totp_ceremony("c-old", &pending), t(0))
            .await
            .unwrap();
    }
    assert!(
        leaks(&raw.dump(), &bytes, &base32).is_some(),
        "the old row should be in clear before the migration"
    );

    let store = reopen(Some(sealer())).await.unwrap();
    let sealed = raw
        .text("SELECT data FROM methods WHERE id = 'm-old'")
        .await;
    assert!(sealed.starts_with("sealed:v1:"), "{sealed}");
    let state = raw
        .text("SELECT state FROM web_ceremonies WHERE id = 'c-old'")
        .await;
    assert!(state.starts_with("sealed:v1:"), "{state}");
    assert_eq!(
        store.methods("u-bob").await.unwrap(),
        std::slice::from_ref(&method)
    );
    drop(store);
    let dump = raw.dump();
    assert_eq!(
        leaks(&dump, &bytes, &base32),
        None,
        "migrated seed left in clear"
    );
    assert_eq!(leaks(&dump, &pending_bytes, &pending), None);

    // Idempotent: a second open changes nothing.
    let store = reopen(Some(sealer())).await.unwrap();
    assert_eq!(
        raw.text("SELECT data FROM methods WHERE id = 'm-old'")
            .await,
        sealed
    );
    assert_eq!(store.methods("u-bob").await.unwrap(), [method]);
    let taken = store.take_web_ceremony("c-old").await.unwrap().unwrap();
    assert_eq!(taken.state, totp_ceremony("c-old", &pending).state);
}

async fn moved_seeds_and_wrong_keys_are_refused(backend: Backend) {
    let Backend {
        store,
        reopen,
        raw,
        _guard,
    } = backend;
    seed(&store).await;
    let (_, alice_seed) = random_seed();
    let (_, bob_seed) = random_seed();
    store
        .add_method(
            &totp_method("m-alice", "u-alice", &alice_seed),
            &event("add", "alice", None, t(1)),
        )
        .await
        .unwrap();
    store
        .add_method(
            &totp_method("m-bob", "u-bob", &bob_seed),
            &event("add", "bob", None, t(1)),
        )
        .await
        .unwrap();
    // Someone with write access to the database copies alice's sealed seed into bob's row,
    // to sign in as bob with alice's authenticator: the row binding refuses it.
    let bob_sealed = raw
        .text("SELECT data FROM methods WHERE id = 'm-bob'")
        .await;
    raw.execute(
        "UPDATE methods SET data = (SELECT data FROM methods WHERE id = 'm-alice') \
         WHERE id = 'm-bob'",
    )
    .await;
    let err = store.methods("u-bob").await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    assert!(err.to_string().contains("does not authenticate"), "{err}");
    assert!(store.method("m-bob").await.is_err());
    assert_eq!(store.methods("u-alice").await.unwrap().len(), 1);
    raw.execute(&format!(
        "UPDATE methods SET data = '{bob_sealed}' WHERE id = 'm-bob'"
    ))
    .await;
    assert_eq!(
        store.method("m-bob").await.unwrap().unwrap().data,
        totp_method("m-bob", "u-bob", &bob_seed).data
    );
    drop(store);

    // The wrong key: a clear error at open naming the key, not garbage later.
    let other = [0x17; 32];
    let err = match reopen(Some(Sealer::new(&other, None))).await {
        Ok(_) => panic!("a store sealed under another key opened"),
        Err(err) => err.to_string(),
    };
    assert!(err.contains("store.secrets_key_file"), "{err}");
    assert!(err.contains(&tapd::store::seal::key_id(&KEY)), "{err}");
    // Nothing was changed by the refused open.
    assert_eq!(
        raw.text("SELECT data FROM methods WHERE id = 'm-bob'")
            .await,
        bob_sealed
    );

    // Rotation: the new key with the old one as previous reseals every row, after which the
    // new key alone opens them.
    let rotating = reopen(Some(Sealer::new(&other, Some(&KEY)))).await.unwrap();
    drop(rotating);
    let resealed = raw
        .text("SELECT data FROM methods WHERE id = 'm-bob'")
        .await;
    assert!(
        resealed.starts_with(&format!("sealed:v1:{}:", tapd::store::seal::key_id(&other))),
        "{resealed}"
    );
    let store = reopen(Some(Sealer::new(&other, None))).await.unwrap();
    assert_eq!(
        store.method("m-alice").await.unwrap().unwrap().data,
        totp_method("m-alice", "u-alice", &alice_seed).data
    );
}

// ---------------------------------------------------------------------------------------------
// Audit retention (issue 15): old events go, in small batches; newer ones stay.

async fn audit_retention_prunes_old_events_in_batches(store: Arc<dyn Store>) {
    use tapd::clock::{Clock, ManualClock};
    use tapd::store::retention::prune_once;
    let old: Vec<NewAuditEvent> = (0..25)
        .map(|m| event(&format!("old {m}"), "root", None, t(m)))
        .collect();
    store.append_audits(&old).await.unwrap();
    let recent: Vec<NewAuditEvent> = (0..3)
        .map(|m| event(&format!("recent {m}"), "root", None, t(1000 + m)))
        .collect();
    store.append_audits(&recent).await.unwrap();

    // One batch: at most `limit` of the oldest events before the cut.
    assert_eq!(store.prune_audit(t(5), 3).await.unwrap(), 3);
    let left = audit_all(&store).await;
    assert_eq!(left.len(), 25);
    assert!(!left
        .iter()
        .any(|a| a == "old 0" || a == "old 1" || a == "old 2"));
    assert!(left.contains(&"old 3".to_owned()));
    // Nothing before the cut is left to delete: an event exactly at the cut stays.
    assert_eq!(store.prune_audit(t(3), 10).await.unwrap(), 0);

    // The retention task's pass, by a manual clock: 50 minutes of retention at t(1000) keeps
    // exactly the recent events, deleting the rest 10 at a time.
    let clock = ManualClock::new(t(1000));
    let token = tokio_util::sync::CancellationToken::new();
    let retention = std::time::Duration::from_secs(50 * 60);
    let deleted = prune_once(
        &*store,
        clock.now(),
        retention,
        10,
        std::time::Duration::from_millis(1),
        &token,
    )
    .await
    .unwrap();
    assert_eq!(deleted, 22);
    assert_eq!(
        audit_all(&store).await,
        ["recent 2", "recent 1", "recent 0"]
    );
    assert_eq!(
        prune_once(
            &*store,
            clock.now(),
            retention,
            10,
            std::time::Duration::ZERO,
            &token
        )
        .await
        .unwrap(),
        0
    );
    // Time passes: the recent events age out too.
    clock.advance(Duration::minutes(52));
    assert_eq!(
        prune_once(
            &*store,
            clock.now(),
            retention,
            10,
            std::time::Duration::ZERO,
            &token
        )
        .await
        .unwrap(),
        2
    );
    assert_eq!(audit_all(&store).await, ["recent 2"]);
}

// ---------------------------------------------------------------------------------------------
// The tamper-evident audit chain: every write path links its events; a change, a deletion or a
// forged retention checkpoint is named by sequence number.

async fn verified(store: &Arc<dyn Store>) -> tapd::store::chain::Verification {
    tapd::store::chain::verify(&**store, None).await.unwrap()
}

/// Sets `forged` (an SQL assignment) on audit row `seq`: verification must name `seq`; then
/// sets `original` back: the chain must verify whole again.
async fn forged_then_restored(
    backend: &Backend,
    store: &Arc<dyn Store>,
    seq: i64,
    forged: &str,
    original: &str,
) {
    backend
        .raw
        .execute(&format!("UPDATE audit SET {forged} WHERE seq = {seq}"))
        .await;
    assert_eq!(broken_at(&verified(store).await), seq, "after {forged}");
    backend
        .raw
        .execute(&format!("UPDATE audit SET {original} WHERE seq = {seq}"))
        .await;
    assert!(verified(store).await.valid, "after {original}");
}

fn broken_at(v: &tapd::store::chain::Verification) -> i64 {
    assert!(!v.valid, "the chain should be broken: {v:?}");
    v.first_break.as_ref().expect("a break").sequence
}

async fn audit_chain_links_every_write_and_names_tampering(backend: Backend) {
    let store = backend.store.clone();
    seed(&store).await;
    let before = verified(&store).await;
    assert!(before.valid, "{before:?}");
    let base = before.head.seq;
    // Every kind of audited write: alone, batched, with a state change, conditional.
    store
        .append_audit(&event("refused", "root", None, t(1)))
        .await
        .unwrap();
    let mut nul = event("with\0nul", "ro\0ot", Some("\0"), t(2));
    nul.details = json!({ "unicode": "é✓", "nul": "a\0b" });
    store
        .append_audits(&[event("batch 1", "root", None, t(2)), nul])
        .await
        .unwrap();
    store
        .put_policy(&TapPolicy::default(), &event("policy", "root", None, t(3)))
        .await
        .unwrap();
    store
        .replace_tap(
            &tap("tap-1", "u-alice", false),
            &event("create", "root", None, t(4)),
        )
        .await
        .unwrap();
    assert!(store
        .delete_tap("u-alice", "tap-1", &event("delete", "root", None, t(5)))
        .await
        .unwrap());
    // A refused conditional change writes no event (and so takes no number).
    assert!(!store
        .delete_tap(
            "u-alice",
            "tap-1",
            &event("delete again", "root", None, t(6))
        )
        .await
        .unwrap());
    let v = verified(&store).await;
    assert!(v.valid, "{v:?}");
    assert_eq!(v.head.seq, base + 6);
    assert_eq!(v.checked as i64, base + 6);
    // Starting past the head is not a pass.
    let beyond = tapd::store::chain::verify(&*store, Some(base + 9))
        .await
        .unwrap();
    assert_eq!(broken_at(&beyond), base + 9);

    // An edited row is named by its own sequence number.
    let target = base + 2;
    forged_then_restored(
        &backend,
        &store,
        target,
        "actor = 'mallory'",
        "actor = 'root'",
    )
    .await;
    // A changed predecessor hash too.
    forged_then_restored(
        &backend,
        &store,
        base + 4,
        "details = '{\"note\":\"x\"}'",
        "details = '{\"note\":\"policy\"}'",
    )
    .await;
    // The last row is checked against the head.
    forged_then_restored(
        &backend,
        &store,
        base + 6,
        "result = 'failure'",
        "result = 'success'",
    )
    .await;
    // A deleted row is named as missing; --from past it checks only what follows.
    backend
        .raw
        .execute(&format!("DELETE FROM audit WHERE seq = {}", base + 3))
        .await;
    let v = verified(&store).await;
    assert_eq!(broken_at(&v), base + 3);
    assert!(v.first_break.unwrap().problem.contains("missing"));
    let from = tapd::store::chain::verify(&*store, Some(base + 4))
        .await
        .unwrap();
    assert!(from.valid, "{from:?}");
    // Deleting the last row is caught against the head.
    backend
        .raw
        .execute(&format!("DELETE FROM audit WHERE seq = {}", base + 6))
        .await;
    assert_eq!(broken_at(&verified(&store).await), base + 3);
    let tail = tapd::store::chain::verify(&*store, Some(base + 4))
        .await
        .unwrap();
    assert_eq!(broken_at(&tail), base + 6);
}

async fn audit_chain_survives_pruning_through_a_signed_checkpoint(backend: Backend) {
    let store = backend.store.clone();
    let events: Vec<NewAuditEvent> = (0..10)
        .map(|m| event(&format!("e{m}"), "root", None, t(m)))
        .collect();
    store.append_audits(&events).await.unwrap();
    assert_eq!(store.prune_audit(t(3), 100).await.unwrap(), 3);
    assert_eq!(store.prune_audit(t(5), 1).await.unwrap(), 1);
    let v = verified(&store).await;
    assert!(v.valid, "{v:?}");
    assert_eq!(v.from, 5);
    assert_eq!(v.checked, 6);
    let cp = v.checkpoint.clone().expect("a checkpoint");
    assert_eq!((cp.sequence, cp.pruned, cp.signature_valid), (4, 4, true));
    // Asking for a pruned sequence number says so.
    let pruned = tapd::store::chain::verify(&*store, Some(2)).await.unwrap();
    assert_eq!(broken_at(&pruned), 2);

    // Without the secrets key the checkpoint can't be trusted.
    let keyless = (backend.reopen)(None).await.unwrap();
    assert!(!verified(&keyless).await.valid);
    drop(keyless);

    // Hiding more events behind a forged checkpoint: delete event 5 and move the checkpoint
    // onto it, with its true hash (taken from event 6) but without the key.
    let hash = backend
        .raw
        .text("SELECT prev_hash FROM audit WHERE seq = 6")
        .await;
    backend
        .raw
        .execute(&format!(
            "DELETE FROM audit WHERE seq = 5; UPDATE audit_chain SET checkpoint_seq = 5, \
             checkpoint_hash = '{hash}', checkpoint_count = 5"
        ))
        .await;
    let v = verified(&store).await;
    assert_eq!(broken_at(&v), 6);
    assert!(v.first_break.unwrap().problem.contains("forged"));
    assert!(!v.checkpoint.unwrap().signature_valid);

    // Pruning refuses to build on the forged checkpoint (its hash is right), instead of
    // laundering it with a new signature.
    assert!(store.prune_audit(t(8), 100).await.is_err());
}

async fn audit_chain_migration_links_existing_rows(backend: Backend) {
    let Backend {
        store,
        reopen,
        raw,
        _guard,
    } = backend;
    store
        .append_audits(&[
            event("old 1", "root", None, t(1)),
            event("old 2", "root", Some("alice"), t(2)),
            event("old 3", "root", None, t(3)),
        ])
        .await
        .unwrap();
    apply(
        &store,
        SyncPlan {
            upsert_users: vec![user("u-old", "old", "old@example.org", &[])],
            ..SyncPlan::default()
        },
    )
    .await;
    drop(store);
    // Back to the schema before the chain, with the events as an older tapd left them.
    match &raw {
        Raw::Sqlite(_) => {
            raw.execute(
                "DROP INDEX audit_seq; ALTER TABLE audit DROP COLUMN seq; \
                 ALTER TABLE audit DROP COLUMN prev_hash; DROP TABLE audit_chain; \
                 DROP TABLE onboarding_grants; DROP TABLE outbox; \
                 DROP TABLE onboarding_failures; \
                 ALTER TABLE taps DROP COLUMN code_length; ALTER TABLE users DROP COLUMN dates; \
                 ALTER TABLE users DROP COLUMN manager_id; \
                 ALTER TABLE users DROP COLUMN manager_dn; PRAGMA user_version = 5;",
            )
            .await
        }
        Raw::Postgres { .. } => {
            raw.execute(
                "ALTER TABLE audit DROP COLUMN seq, DROP COLUMN prev_hash; \
                 DROP TABLE audit_chain; DROP TABLE onboarding_grants; DROP TABLE outbox; \
                 DROP TABLE onboarding_failures; ALTER TABLE taps DROP COLUMN code_length; \
                 ALTER TABLE users DROP COLUMN dates, DROP COLUMN manager_id, \
                 DROP COLUMN manager_dn; \
                 DELETE FROM schema_migrations WHERE version >= 5;",
            )
            .await
        }
    }
    let store = reopen(Some(sealer())).await.unwrap();
    // A user written before the manager columns reads back without manager or dates.
    assert_eq!(
        store.user("u-old").await.unwrap().unwrap(),
        user("u-old", "old", "old@example.org", &[])
    );
    let v = verified(&store).await;
    assert!(v.valid, "{v:?}");
    assert_eq!((v.head.seq, v.checked), (3, 3));
    store
        .append_audit(&event("new", "root", None, t(4)))
        .await
        .unwrap();
    assert!(verified(&store).await.valid);
    assert_eq!(
        raw.text("SELECT activity FROM audit WHERE seq = 2").await,
        "old 2"
    );
}

async fn audit_chain_has_no_gaps_or_forks_across_nodes(backend: Backend) {
    let stores = [
        backend.store.clone(),
        (backend.reopen)(Some(sealer())).await.unwrap(),
    ];
    seed(&stores[0]).await;
    let base = verified(&stores[0]).await.head.seq;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..60 {
        let store = stores[i % 2].clone();
        tasks.spawn(async move {
            match i % 3 {
                0 => store
                    .append_audit(&event(&format!("one {i}"), "root", None, t(1)))
                    .await
                    .unwrap(),
                1 => store
                    .append_audits(&[
                        event(&format!("batch {i}a"), "root", None, t(1)),
                        event(&format!("batch {i}b"), "root", None, t(1)),
                    ])
                    .await
                    .unwrap(),
                _ => {
                    store
                        .replace_tap(
                            &tap(&format!("tap-{i}"), "u-alice", false),
                            &event(&format!("create {i}"), "root", None, t(1)),
                        )
                        .await
                        .unwrap();
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    for store in &stores {
        let v = verified(store).await;
        assert!(v.valid, "{v:?}");
        assert_eq!(v.head.seq, base + 80);
    }
}

// ---------------------------------------------------------------------------------------------
// The onboarding outbox

fn mail(id: &str, tap: &StoredTap) -> OutboxMail {
    OutboxMail {
        id: id.to_owned(),
        tap_id: tap.id.clone(),
        user_id: tap.user_id.clone(),
        user_principal_name: format!("{}@example.org", tap.user_id),
        display_name: format!("{} display", tap.user_id),
        recipient: "manager@example.org".to_owned(),
        tap_start: tap.start,
        tap_expires: tap.expires(),
        one_time: tap.is_usable_once,
        origin: "bulk by root".to_owned(),
        created: t(0),
        state: MailState::Queued,
        attempts: 0,
        next_attempt: t(0),
        last_error: None,
        finished: None,
    }
}

async fn queue(store: &Arc<dyn Store>, mail_id: &str, tap_id: &str, user_id: &str, code: &str) {
    let tap = tap(tap_id, user_id, true);
    assert!(store
        .issue_tap_by_mail(
            &tap,
            &mail(mail_id, &tap),
            code,
            None,
            &event(
                "Admin registered security info",
                "root",
                Some(user_id),
                t(0)
            ),
        )
        .await
        .unwrap());
}

async fn mail_state(store: &Arc<dyn Store>, id: &str) -> OutboxMail {
    store
        .mails(100)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.id == id)
        .expect("the message is listed")
}

const LEASE: std::time::Duration = std::time::Duration::from_secs(60);

/// `claim_mail` at `now` for node `node` and [`LEASE`], of a message whose code must open.
async fn claim(store: &Arc<dyn Store>, node: &str, now: Timestamp) -> Option<(OutboxMail, String)> {
    let claimed = store.claim_mail(node, now, LEASE).await.unwrap();
    claimed.map(|(mail, code)| {
        let code = code.unwrap_or_else(|e| panic!("the code of {} does not open: {e}", mail.id));
        (mail, code.to_string())
    })
}

/// `claim_mail` at `now` for node-a, of a message whose code must not open: the message and
/// why it can't be delivered.
async fn claim_undeliverable(
    store: &Arc<dyn Store>,
    now: Timestamp,
) -> (OutboxMail, UndeliverableCode) {
    let (mail, code) = store
        .claim_mail("node-a", now, LEASE)
        .await
        .unwrap()
        .expect("a due message");
    let why = code.map(|_| ()).expect_err("the code opened");
    (mail, why)
}

/// node-a records message `id` as failed at `at`.
async fn fail_mail(store: &Arc<dyn Store>, id: &str, at: Timestamp) {
    let failed = MailOutcome::Failed {
        error: "the sealed code can't be opened".to_owned(),
    };
    let recorded = store
        .finish_mail(
            id,
            "node-a",
            at,
            &failed,
            &event("Mail failed", "tapd", None, at),
        )
        .await
        .unwrap();
    assert!(recorded, "node-a no longer held {id}");
}

async fn outbox_code_is_sealed_until_accepted_then_erased(backend: Backend) {
    let store = backend.store.clone();
    seed(&store).await;
    let code = "QZXWVUTSRQ7";
    queue(&store, "m1", "tap-1", "u-alice", code).await;
    assert_eq!(
        store.tap_for_user("u-alice").await.unwrap().unwrap().id,
        "tap-1"
    );
    let dump = backend.raw.dump();
    assert!(
        !dump.windows(code.len()).any(|w| w == code.as_bytes()),
        "the code is in the store in clear"
    );
    let sealed = backend
        .raw
        .text("SELECT sealed_code FROM outbox WHERE id = 'm1'")
        .await;
    assert!(sealed.starts_with("sealed:v1:"), "{sealed}");
    // The sealed code is bound to its row: copied into another message it does not open.
    queue(&store, "m2", "tap-2", "u-bob", "OTHERCODE22").await;
    backend
        .raw
        .execute(&format!(
            "UPDATE outbox SET sealed_code = '{sealed}' WHERE id = 'm2'"
        ))
        .await;

    let (claimed, opened) = claim(&store, "node-a", t(1)).await.unwrap();
    assert_eq!((claimed.id.as_str(), opened.as_str()), ("m1", code));
    // Claimed (so no poll takes it again) with the reason it can never be delivered.
    let (moved, why) = claim_undeliverable(&store, t(1)).await;
    assert_eq!(moved.id, "m2");
    assert_eq!(why, UndeliverableCode::Unopenable(SealError::Tampered));
    assert!(store
        .finish_mail(
            "m1",
            "node-a",
            t(2),
            &MailOutcome::Accepted,
            &event("Mail accepted", "tapd", None, t(2))
        )
        .await
        .unwrap());
    let sent = mail_state(&store, "m1").await;
    assert_eq!(
        (sent.state, sent.attempts, sent.finished),
        (MailState::Sent, 1, Some(t(2)))
    );
    let erased = backend
        .raw
        .text("SELECT coalesce(sealed_code, 'erased') FROM outbox WHERE id = 'm1'")
        .await;
    assert_eq!(erased, "erased", "the code outlived its delivery");
    // Finished once: a second report changes nothing.
    assert!(!store
        .finish_mail(
            "m1",
            "node-a",
            t(3),
            &MailOutcome::Accepted,
            &event("again", "tapd", None, t(3))
        )
        .await
        .unwrap());
    assert!(!audit_all(&store).await.contains(&"again".to_owned()));
}

async fn outbox_retries_then_fails_and_deletes_the_tap(store: Arc<dyn Store>) {
    seed(&store).await;
    queue(&store, "m1", "tap-1", "u-alice", "CODE1111111").await;
    let (claimed, _) = store
        .claim_mail("node-a", t(1), LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, "m1");
    let retry = MailOutcome::Retry {
        next_attempt: t(10),
        error: "421 try later".to_owned(),
    };
    assert!(store
        .finish_mail(
            "m1",
            "node-a",
            t(1),
            &retry,
            &event("Mail retried", "tapd", None, t(1))
        )
        .await
        .unwrap());
    let queued = mail_state(&store, "m1").await;
    assert_eq!(queued.state, MailState::Queued);
    assert_eq!(queued.attempts, 1);
    assert_eq!(queued.last_error.as_deref(), Some("421 try later"));
    // Not before its next attempt.
    assert!(store
        .claim_mail("node-a", t(9), LEASE)
        .await
        .unwrap()
        .is_none());
    let (again, code) = claim(&store, "node-a", t(10)).await.unwrap();
    assert_eq!((again.id.as_str(), code.as_str()), ("m1", "CODE1111111"));
    let failed = MailOutcome::Failed {
        error: "550 no such mailbox".to_owned(),
    };
    assert!(store
        .finish_mail(
            "m1",
            "node-a",
            t(11),
            &failed,
            &event("Mail failed", "tapd", None, t(11))
        )
        .await
        .unwrap());
    let gone = mail_state(&store, "m1").await;
    assert_eq!(gone.state, MailState::Failed);
    assert_eq!(gone.attempts, 2);
    assert_eq!(gone.last_error.as_deref(), Some("550 no such mailbox"));
    assert_eq!(
        store.tap_for_user("u-alice").await.unwrap(),
        None,
        "an undelivered pass must not stay usable"
    );
    assert!(store
        .claim_mail("node-a", t(20), LEASE)
        .await
        .unwrap()
        .is_none());
    let activities = audit_all(&store).await;
    assert!(activities.contains(&"Mail retried".to_owned()));
    assert!(activities.contains(&"Mail failed".to_owned()));
}

async fn outbox_claim_is_held_until_it_lapses(store: Arc<dyn Store>) {
    seed(&store).await;
    queue(&store, "m1", "tap-1", "u-alice", "CODE1111111").await;
    let short = std::time::Duration::from_millis(1500);
    let (claimed, _) = store
        .claim_mail("node-a", Utc::now(), short)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, "m1");
    assert!(store
        .claim_mail("node-b", Utc::now(), short)
        .await
        .unwrap()
        .is_none());
    // Another node can't finish a message it does not hold.
    assert!(!store
        .finish_mail(
            "m1",
            "node-b",
            Utc::now(),
            &MailOutcome::Accepted,
            &event("stolen", "tapd", None, t(1))
        )
        .await
        .unwrap());
    // Node A died: once its claim lapses node B takes the message over, and A's late report
    // is refused.
    tokio::time::sleep(short + std::time::Duration::from_millis(500)).await;
    let (taken, _) = store
        .claim_mail("node-b", Utc::now(), LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(taken.id, "m1");
    assert!(!store
        .finish_mail(
            "m1",
            "node-a",
            Utc::now(),
            &MailOutcome::Accepted,
            &event("late", "tapd", None, t(1))
        )
        .await
        .unwrap());
    assert!(store
        .finish_mail(
            "m1",
            "node-b",
            Utc::now(),
            &MailOutcome::Accepted,
            &event("Mail accepted", "tapd", None, t(1))
        )
        .await
        .unwrap());
    let activities = audit_all(&store).await;
    assert!(!activities.contains(&"stolen".to_owned()));
    assert!(!activities.contains(&"late".to_owned()));
}

async fn onboarding_rule_grants_one_pass_per_user(store: Arc<dyn Store>) {
    seed(&store).await;
    let first = tap("tap-1", "u-alice", true);
    let audit = event(
        "Admin registered security info",
        "tapd",
        Some("alice"),
        t(0),
    );
    assert!(store
        .issue_tap_by_mail(
            &first,
            &mail("m1", &first),
            "CODE1111111",
            Some("new-hires"),
            &audit
        )
        .await
        .unwrap());
    let second = tap("tap-2", "u-alice", true);
    assert!(!store
        .issue_tap_by_mail(
            &second,
            &mail("m2", &second),
            "CODE2222222",
            Some("new-hires"),
            &audit
        )
        .await
        .unwrap());
    assert_eq!(
        store.tap_for_user("u-alice").await.unwrap().unwrap().id,
        "tap-1"
    );
    assert_eq!(store.mails(10).await.unwrap().len(), 1);
    // Another rule, or another user, is a grant of its own.
    let other = tap("tap-3", "u-bob", true);
    assert!(store
        .issue_tap_by_mail(
            &other,
            &mail("m3", &other),
            "CODE3333333",
            Some("new-hires"),
            &audit
        )
        .await
        .unwrap());
    let ids = [
        "u-alice".to_owned(),
        "u-bob".to_owned(),
        "u-carol".to_owned(),
    ];
    let mut granted = store.onboarding_granted("new-hires", &ids).await.unwrap();
    granted.sort();
    assert_eq!(granted, ["u-alice", "u-bob"]);
    assert!(store
        .onboarding_granted("contractors", &ids)
        .await
        .unwrap()
        .is_empty());
}

async fn outbox_a_newer_pass_fails_the_queued_message(store: Arc<dyn Store>) {
    seed(&store).await;
    queue(&store, "m1", "tap-1", "u-alice", "CODE1111111").await;
    queue(&store, "m2", "tap-2", "u-alice", "CODE2222222").await;
    let old = mail_state(&store, "m1").await;
    assert_eq!(old.state, MailState::Failed);
    assert_eq!(old.last_error.as_deref(), Some("replaced by a newer pass"));
    let (claimed, code) = claim(&store, "node-a", t(1)).await.unwrap();
    assert_eq!((claimed.id.as_str(), code.as_str()), ("m2", "CODE2222222"));
    assert!(store
        .claim_mail("node-a", t(1), LEASE)
        .await
        .unwrap()
        .is_none());
}

async fn outbox_each_message_is_claimed_by_one_node(backend: Backend) {
    let stores = [
        backend.store.clone(),
        (backend.reopen)(Some(sealer())).await.unwrap(),
    ];
    let users: Vec<User> = (0..30)
        .map(|i| {
            user(
                &format!("u-{i}"),
                &format!("user{i}"),
                &format!("user{i}@example.org"),
                &[],
            )
        })
        .collect();
    let plan = SyncPlan {
        upsert_users: users,
        ..SyncPlan::default()
    };
    stores[0]
        .apply_sync(&fence(&stores[0]).await, &plan, &[])
        .await
        .unwrap();
    for i in 0..30 {
        queue(
            &stores[i % 2],
            &format!("m{i}"),
            &format!("tap-{i}"),
            &format!("u-{i}"),
            &format!("CODE{i:07}"),
        )
        .await;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let store = stores[worker % 2].clone();
        tasks.spawn(async move {
            let node = format!("node-{worker}");
            let mut mine = Vec::new();
            while let Some((mail, _)) = store.claim_mail(&node, t(1), LEASE).await.unwrap() {
                assert!(store
                    .finish_mail(
                        &mail.id,
                        &node,
                        t(1),
                        &MailOutcome::Accepted,
                        &event("Mail accepted", "tapd", None, t(1))
                    )
                    .await
                    .unwrap());
                mine.push(mail.id);
            }
            mine
        });
    }
    let mut all = Vec::new();
    while let Some(mine) = tasks.join_next().await {
        all.extend(mine.unwrap());
    }
    all.sort();
    let unique: std::collections::BTreeSet<_> = all.iter().cloned().collect();
    assert_eq!(all.len(), 30, "each message claimed once: {all:?}");
    assert_eq!(unique.len(), 30);
}

async fn outbox_codes_are_resealed_on_key_rotation(backend: Backend) {
    let Backend {
        store,
        reopen,
        raw,
        _guard,
    } = backend;
    seed(&store).await;
    queue(&store, "m1", "tap-1", "u-alice", "ROTATED1234").await;
    drop(store);
    let old_sealed = raw
        .text("SELECT sealed_code FROM outbox WHERE id = 'm1'")
        .await;
    // Rotation: a new current key, the old one as previous; the queued code is sealed again.
    let new_key = [0x17; 32];
    let rotated = reopen(Some(Sealer::new(&new_key, Some(&KEY))))
        .await
        .unwrap();
    drop(rotated);
    let new_sealed = raw
        .text("SELECT sealed_code FROM outbox WHERE id = 'm1'")
        .await;
    assert_ne!(new_sealed, old_sealed, "the queued code was not resealed");
    // The previous key retired: the message still opens and goes out.
    let store = reopen(Some(Sealer::new(&new_key, None))).await.unwrap();
    let (mail, code) = claim(&store, "node-a", t(1)).await.unwrap();
    assert_eq!((mail.id.as_str(), code.as_str()), ("m1", "ROTATED1234"));
}

async fn outbox_an_unopenable_code_fails_its_message_and_blocks_no_other(backend: Backend) {
    let Backend {
        store,
        reopen,
        raw,
        _guard,
    } = backend;
    seed(&store).await;
    queue(&store, "m1", "tap-1", "u-alice", "ALICECODE11").await;
    queue(&store, "m2", "tap-2", "u-bob", "BOBCODE2222").await;
    // Someone with write access to the database alters alice's sealed code.
    let sealed = raw
        .text("SELECT sealed_code FROM outbox WHERE id = 'm1'")
        .await;
    let mut altered = sealed.into_bytes();
    let at = altered.len() - 10;
    altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    raw.execute(&format!(
        "UPDATE outbox SET sealed_code = '{altered}' WHERE id = 'm1'"
    ))
    .await;

    // The message is claimed with the reason it can never be delivered …
    let (first, why) = claim_undeliverable(&store, t(1)).await;
    assert_eq!(first.id, "m1");
    assert_eq!(why, UndeliverableCode::Unopenable(SealError::Tampered));
    // … and the claim stands: the queue goes on with the next message, not the same one.
    let (second, code) = claim(&store, "node-a", t(1)).await.unwrap();
    assert_eq!((second.id.as_str(), code.as_str()), ("m2", "BOBCODE2222"));
    assert!(store
        .claim_mail("node-a", t(1), LEASE)
        .await
        .unwrap()
        .is_none());
    let accepted = event("Mail accepted", "tapd", None, t(2));
    assert!(store
        .finish_mail("m2", "node-a", t(2), &MailOutcome::Accepted, &accepted)
        .await
        .unwrap());
    fail_mail(&store, "m1", t(2)).await;
    assert_eq!(store.tap_for_user("u-alice").await.unwrap(), None);
    assert_eq!(
        store.tap_for_user("u-bob").await.unwrap().unwrap().id,
        "tap-2"
    );

    // A value that is not sealed at all is not sealed at the next open (it would go out as
    // the code): it stays as written and its message can't be delivered.
    queue(&store, "m3", "tap-3", "u-carol", "CAROLCODE33").await;
    raw.execute("UPDATE outbox SET sealed_code = 'CHOSEN12345' WHERE id = 'm3'")
        .await;
    drop(store);
    let store = reopen(Some(sealer())).await.unwrap();
    assert_eq!(
        raw.text("SELECT sealed_code FROM outbox WHERE id = 'm3'")
            .await,
        "CHOSEN12345"
    );
    let (third, why) = claim_undeliverable(&store, t(3)).await;
    assert_eq!(third.id, "m3");
    assert_eq!(why, UndeliverableCode::Unopenable(SealError::Malformed));
    fail_mail(&store, "m3", t(3)).await;
    assert_eq!(store.tap_for_user("u-carol").await.unwrap(), None);

    // A queued code sealed under a key the store is opened without is not failed: the key
    // file is wrong, not the message. The open is refused, naming the message and the key.
    queue(&store, "m4", "tap-4", "u-carol", "CAROLCODE44").await;
    drop(store);
    let other = [0x55; 32];
    let refused = match reopen(Some(Sealer::new(&other, None))).await {
        Ok(_) => panic!("a store holding a code sealed under another key was opened"),
        Err(e) => e.to_string(),
    };
    for part in ["outbox message m4", &key_id(&KEY), &key_id(&other)] {
        assert!(refused.contains(part), "{part:?} not in {refused}");
    }
    let store = reopen(Some(sealer())).await.unwrap();
    let (fourth, code) = claim(&store, "node-a", t(4)).await.unwrap();
    assert_eq!((fourth.id.as_str(), code.as_str()), ("m4", "CAROLCODE44"));
}

/// A user's manager DN and dates are stored as the directory gave them; the manager's id is
/// the store's own (set after a sync's resolution), kept while the manager DN stays, cleared
/// when it changes.
async fn users_keep_their_manager_and_dates(store: Arc<dyn Store>) {
    let boss = user("u-boss", "boss", "boss@example.org", &[]);
    let mut new = user("u-new", "new", "new@example.org", &[]);
    new.manager_dn = Some("uid=boss,ou=people,dc=example,dc=org".to_owned());
    let hired = chrono::NaiveDate::from_ymd_opt(2026, 12, 9).unwrap();
    new.dates.insert("employeehiredate".to_owned(), hired);
    apply(
        &store,
        SyncPlan {
            upsert_users: vec![boss.clone(), new.clone()],
            ..SyncPlan::default()
        },
    )
    .await;
    let stored = store.user("u-new").await.unwrap().unwrap();
    assert_eq!(stored, new);
    assert!(stored.same_directory_entry(&new));
    let links = store.manager_links().await.unwrap();
    assert_eq!(links.len(), 2);
    let link = links.iter().find(|l| l.id == "u-new").unwrap();
    assert_eq!(link.manager_dn, new.manager_dn);
    assert_eq!(link.manager_id, None);
    assert_eq!(link.dn, new.dn);
    assert_eq!(link.user_principal_name, "new@example.org");

    store
        .set_manager_ids(&[
            ("u-new".to_owned(), Some("u-boss".to_owned())),
            ("u-gone".to_owned(), Some("u-boss".to_owned())),
        ])
        .await
        .unwrap();
    let read = store.user("new").await.unwrap().unwrap();
    assert_eq!(read.manager_id.as_deref(), Some("u-boss"));
    assert_eq!(read.dates.get("employeehiredate"), Some(&hired));
    let (with_refs, _) = store.user_with_group_refs("u-new").await.unwrap().unwrap();
    assert_eq!(with_refs.manager_id.as_deref(), Some("u-boss"));
    let listed = store.users(Some("new@")).await.unwrap();
    assert_eq!(listed[0].manager_id.as_deref(), Some("u-boss"));
    assert!(store.user("u-gone").await.unwrap().is_none());

    // The same manager again: the resolved id stays. Another one: it is cleared until the
    // next resolution, so no code goes to the former manager meanwhile.
    let mut renamed = new.clone();
    renamed.display_name = "New display".to_owned();
    apply(
        &store,
        SyncPlan {
            upsert_users: vec![renamed.clone()],
            ..SyncPlan::default()
        },
    )
    .await;
    let read = store.user("u-new").await.unwrap().unwrap();
    assert_eq!(read.manager_id.as_deref(), Some("u-boss"));
    let mut moved = renamed.clone();
    moved.manager_dn = Some("uid=other,ou=people,dc=example,dc=org".to_owned());
    moved.dates.clear();
    apply(
        &store,
        SyncPlan {
            upsert_users: vec![moved.clone()],
            ..SyncPlan::default()
        },
    )
    .await;
    let read = store.user("u-new").await.unwrap().unwrap();
    assert_eq!(read, moved);
    assert_eq!(read.manager_id, None);
    store
        .set_manager_ids(&[("u-new".to_owned(), None)])
        .await
        .unwrap();
    assert_eq!(store.user("u-new").await.unwrap().unwrap().manager_id, None);
}

/// A date rule reads only the users whose date is in its window: both bounds included, other
/// attributes and users without dates left out, and dates whose stored text does not sort as
/// they do (years past 9999 or before 0) decided by the date, not by the text.
async fn users_dated_between_reads_only_the_window(store: Arc<dyn Store>) {
    let d = |y, m, day| chrono::NaiveDate::from_ymd_opt(y, m, day).unwrap();
    let dated = |id: &str, attribute: &str, date| {
        let mut u = user(id, id, &format!("{id}@example.org"), &[]);
        u.dates.insert(attribute.to_owned(), date);
        u
    };
    let hire = "employeehiredate";
    apply(
        &store,
        SyncPlan {
            upsert_users: vec![
                dated("u-before", hire, d(2026, 12, 5)),
                dated("u-from", hire, d(2026, 12, 6)),
                dated("u-inside", hire, d(2026, 12, 8)),
                dated("u-to", hire, d(2026, 12, 11)),
                dated("u-after", hire, d(2026, 12, 12)),
                dated("u-other", "startdate", d(2026, 12, 8)),
                dated("u-far", hire, d(10000, 1, 1)),
                dated("u-bc", hire, d(-1, 1, 1)),
                user("u-none", "none", "none@example.org", &[]),
            ],
            ..SyncPlan::default()
        },
    )
    .await;
    let between = |attribute: &'static str, from: chrono::NaiveDate, to: chrono::NaiveDate| {
        let store = store.clone();
        async move {
            store
                .users_dated_between(attribute, from, to)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        between(hire, d(2026, 12, 6), d(2026, 12, 11)).await,
        ["u-from", "u-inside", "u-to"]
    );
    assert_eq!(
        between("startdate", d(2026, 12, 6), d(2026, 12, 11)).await,
        ["u-other"]
    );
    assert!(between(hire, d(2027, 1, 1), d(2027, 12, 31))
        .await
        .is_empty());
    assert_eq!(
        between(hire, d(2026, 12, 8), d(2026, 12, 8)).await,
        ["u-inside"]
    );
    // Windows whose bounds leave the four-digit years: the text no longer sorts as the dates.
    assert_eq!(
        between(hire, d(9999, 12, 1), d(10000, 1, 1)).await,
        ["u-far"]
    );
    assert_eq!(
        between(hire, d(-1, 1, 1), d(2026, 12, 5)).await,
        ["u-bc", "u-before"]
    );
    assert!(between(hire, d(10000, 1, 2), d(10001, 1, 1))
        .await
        .is_empty());
}

/// A rule's failure for a user is audited when it is news: the first time, and when the
/// reason changes; not again for the same reason, also not after a reopen (a restart). Serving
/// the user clears it, so a later failure is news again. Each answer of news writes its audit
/// event in the same transaction; no news writes none.
async fn onboarding_failures_are_news_once_until_served(backend: Backend) {
    let Backend {
        store,
        reopen,
        _guard,
        ..
    } = backend;
    seed(&store).await;
    let failed = |n| {
        event(
            "Rule failed",
            "tapd (onboarding rule r)",
            Some("alice"),
            t(n),
        )
    };
    let note = |store: &Arc<dyn Store>,
                rule: &'static str,
                user: &'static str,
                reason: &'static str,
                n: i64| {
        let store = store.clone();
        async move {
            store
                .note_onboarding_failure(rule, user, reason, &failed(n))
                .await
                .unwrap()
        }
    };
    let no_manager = "onboarding_no_recipient: no manager";
    let disabled = "onboarding_no_recipient: their manager boss is disabled";
    assert!(note(&store, "r", "u-alice", no_manager, 1).await);
    assert!(!note(&store, "r", "u-alice", no_manager, 2).await);
    assert!(note(&store, "other", "u-alice", no_manager, 3).await);
    assert!(note(&store, "r", "u-bob", no_manager, 4).await);
    let failures =
        |activities: Vec<String>| activities.iter().filter(|a| *a == "Rule failed").count();
    assert_eq!(failures(audit_all(&store).await), 3);

    // A restart: the same failure is no news; a changed one is, and so is its change back.
    drop(store);
    let store = reopen(Some(sealer())).await.unwrap();
    assert!(!note(&store, "r", "u-alice", no_manager, 5).await);
    assert!(note(&store, "r", "u-alice", disabled, 6).await);
    assert!(!note(&store, "r", "u-alice", disabled, 7).await);
    assert!(note(&store, "r", "u-alice", no_manager, 8).await);
    assert_eq!(failures(audit_all(&store).await), 5);

    // The rule serves alice: her failure is over; failing again later is news.
    let pass = tap("tap-1", "u-alice", true);
    assert!(store
        .issue_tap_by_mail(
            &pass,
            &mail("m1", &pass),
            "CODE1111111",
            Some("r"),
            &event(
                "Admin registered security info",
                "tapd",
                Some("alice"),
                t(9)
            ),
        )
        .await
        .unwrap());
    assert!(note(&store, "r", "u-alice", no_manager, 10).await);
    // Other rules and users keep theirs.
    assert!(!note(&store, "other", "u-alice", no_manager, 11).await);
    assert!(!note(&store, "r", "u-bob", no_manager, 12).await);
    assert_eq!(failures(audit_all(&store).await), 6);
}

/// A queued message the store can't read (a timestamp it never writes: text in SQLite's
/// integer column, `infinity` in PostgreSQL's; a state it never writes) is claimed with what can be read of it and the
/// reason, failed (its TAP deleted), and listed with the damage; the intact message in the
/// same queue goes out. A damaged next attempt does not keep its message waiting forever.
async fn outbox_an_unreadable_message_fails_and_blocks_no_other(backend: Backend) {
    let Backend {
        store, raw, _guard, ..
    } = backend;
    seed(&store).await;
    queue(&store, "m1", "tap-1", "u-alice", "ALICECODE11").await;
    queue(&store, "m2", "tap-2", "u-bob", "BOBCODE2222").await;
    queue(&store, "m3", "tap-3", "u-carol", "CAROLCODE33").await;
    let dave = user("u-dave", "dave", "dave@example.org", &[]);
    apply(
        &store,
        SyncPlan {
            upsert_users: vec![dave],
            ..SyncPlan::default()
        },
    )
    .await;
    queue(&store, "m4", "tap-4", "u-dave", "DAVECODE444").await;
    // A state tapd never writes needs the schema's checks off.
    match &raw {
        Raw::Sqlite(_) => {
            raw.execute(
                "UPDATE outbox SET tap_start = 'soon' WHERE id = 'm1'; \
                 UPDATE outbox SET next_attempt = 'later' WHERE id = 'm3'; \
                 PRAGMA ignore_check_constraints = ON; \
                 UPDATE outbox SET state = 'sending' WHERE id = 'm4';",
            )
            .await
        }
        Raw::Postgres { .. } => {
            raw.execute(
                "UPDATE outbox SET tap_start = 'infinity' WHERE id = 'm1'; \
                 UPDATE outbox SET next_attempt = '-infinity' WHERE id = 'm3'; \
                 ALTER TABLE outbox DROP CONSTRAINT outbox_state_check, \
                 DROP CONSTRAINT outbox_check; \
                 UPDATE outbox SET state = 'sending' WHERE id = 'm4';",
            )
            .await
        }
    }
    // The listing reads despite the damage.
    let listed = store.mails(10).await.unwrap();
    assert_eq!(listed.len(), 4, "{listed:#?}");

    let mut unreadable = Vec::new();
    let mut delivered = Vec::new();
    for _ in 0..4 {
        let (mail, code) = store
            .claim_mail("node-a", t(1), LEASE)
            .await
            .unwrap()
            .expect("a due message");
        match code {
            Ok(code) => delivered.push((mail.id, code.to_string())),
            Err(why) => {
                assert!(
                    matches!(why, UndeliverableCode::Unreadable(_)),
                    "{}: {why:?}",
                    mail.id
                );
                let error = why.to_string();
                assert!(error.contains(tapd::store::UNREADABLE), "{error}");
                let failed = MailOutcome::Failed {
                    error: error.clone(),
                };
                assert!(store
                    .finish_mail(
                        &mail.id,
                        "node-a",
                        t(2),
                        &failed,
                        &event("Mail failed", "tapd", None, t(2))
                    )
                    .await
                    .unwrap());
                unreadable.push((mail.id, mail.user_id, error));
            }
        }
    }
    assert!(store
        .claim_mail("node-a", t(1), LEASE)
        .await
        .unwrap()
        .is_none());
    unreadable.sort();
    let ids: Vec<_> = unreadable
        .iter()
        .map(|(id, user, _)| (id.as_str(), user.as_str()))
        .collect();
    assert_eq!(
        ids,
        [("m1", "u-alice"), ("m3", "u-carol"), ("m4", "u-dave")]
    );
    assert!(
        unreadable[2].2.contains("unknown outbox state"),
        "{unreadable:?}"
    );
    assert_eq!(delivered, [("m2".to_owned(), "BOBCODE2222".to_owned())]);
    assert_eq!(store.tap_for_user("u-alice").await.unwrap(), None);
    assert_eq!(store.tap_for_user("u-carol").await.unwrap(), None);
    assert_eq!(store.tap_for_user("u-dave").await.unwrap(), None);
    assert_eq!(
        store.tap_for_user("u-bob").await.unwrap().unwrap().id,
        "tap-2"
    );
    for (id, _, error) in &unreadable {
        let listed = mail_state(&store, id).await;
        assert_eq!(listed.state, MailState::Failed, "{listed:#?}");
        assert_eq!(listed.last_error.as_deref(), Some(error.as_str()));
    }
    let activities = audit_all(&store).await;
    assert_eq!(
        activities.iter().filter(|a| *a == "Mail failed").count(),
        3,
        "{activities:?}"
    );
}
