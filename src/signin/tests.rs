#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::Ordering;

use super::*;
use crate::clock::ManualClock;
use crate::directory::fake::FakeDirectory;
use crate::model::{AuditFilter, Group, StoredTap, Timestamp};
use crate::store::sqlite::SqliteStore;
use crate::store::SyncPlan;

const PUBLIC_URL: &str = "https://tap.example.org";
const TAP_CODE: &str = "Tap+Code9";

fn user(id: &str, name: &str, enabled: bool, groups: &[&str]) -> User {
    User {
        id: id.into(),
        dn: format!("uid={name},ou=people,dc=example,dc=org"),
        username: name.into(),
        user_principal_name: format!("{name}@example.org"),
        display_name: name.into(),
        mail: None,
        account_enabled: enabled,
        group_ids: groups.iter().map(|g| (*g).to_owned()).collect(),
        identity_conflict: None,
        manager_dn: None,
        manager_id: None,
        dates: Default::default(),
    }
}

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

struct Fixture {
    signin: SignIn,
    store: Arc<SqliteStore>,
    directory: Arc<FakeDirectory>,
    clock: Arc<ManualClock>,
}

impl Fixture {
    async fn new() -> Fixture {
        let store = Arc::new(SqliteStore::open_in_memory().await.unwrap());
        let plan = SyncPlan {
            upsert_users: vec![
                user("u-alice", "alice", true, &["g-vpn"]),
                user("u-carol", "carol", false, &[]),
                user("u-bob", "bob", true, &[]),
            ],
            upsert_groups: vec![Group {
                id: "g-vpn".into(),
                dn: "cn=vpn-users,ou=groups,dc=example,dc=org".into(),
                display_name: "vpn-users".into(),
                member_user_ids: vec!["u-alice".into()],
            }],
            ..SyncPlan::default()
        };
        crate::store::apply_sync_leased(&*store, &plan)
            .await
            .unwrap();
        let clock = Arc::new(ManualClock::new(t("2026-11-27T09:00:00Z")));
        let tap = StoredTap {
            id: "tap-alice".into(),
            user_id: "u-alice".into(),
            code_hash: crate::tapcode::hash_blocking(TAP_CODE).unwrap(),
            created: clock.now(),
            start: clock.now(),
            lifetime_in_minutes: 60,
            is_usable_once: true,
            used_at: None,
            code_length: Some(TAP_CODE.len() as u32),
        };
        store
            .replace_tap(&tap, &audit_stub(clock.now()))
            .await
            .unwrap();
        let directory = Arc::new(FakeDirectory::new());
        let signin = SignIn::new(
            store.clone(),
            directory.clone(),
            Hasher::new(1, 8).unwrap(),
            clock.clone(),
            Arc::new(crate::metrics::Metrics::new()),
            SignInSettings {
                public_url: PUBLIC_URL.into(),
                max_failures: 3,
                failure_window: Duration::from_secs(300),
                cooldown: Duration::from_secs(60),
            },
        )
        .unwrap();
        Fixture {
            signin,
            store,
            directory,
            clock,
        }
    }

    fn checks(&self) -> usize {
        self.directory.checks.load(Ordering::SeqCst)
    }

    async fn try_as(&self, channel: SignInChannel, name: &str, credential: &str) -> SignInOutcome {
        let context = AttemptContext {
            channel,
            client: "vpn".into(),
            source: "127.0.0.1:40000".into(),
            details: serde_json::Map::new(),
        };
        self.signin.authenticate(&context, name, credential).await
    }

    async fn radius(&self, name: &str, credential: &str) -> SignInOutcome {
        self.try_as(SignInChannel::Radius, name, credential).await
    }

    async fn sign_in_events(&self) -> Vec<NewAuditEvent> {
        let filter = AuditFilter {
            activity: Some(SIGN_IN_ACTIVITY.into()),
            limit: 100,
            ..AuditFilter::default()
        };
        self.store
            .audit(&filter)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect()
    }
}

fn audit_stub(now: Timestamp) -> NewAuditEvent {
    NewAuditEvent {
        time: now,
        actor: "test".into(),
        activity: "test".into(),
        target: None,
        result: AuditResult::Success,
        reason_code: None,
        channel: Channel::Admin,
        source_address: None,
        details: json!({}),
    }
}

fn rejected(reason: RejectReason) -> SignInOutcome {
    SignInOutcome::Reject {
        reason,
        message: None,
    }
}

#[tokio::test]
async fn the_directory_password_is_accepted_with_groups_by_username_or_upn() {
    let f = Fixture::new().await;
    for name in ["alice", "ALICE@example.org"] {
        match f.radius(name, "alice-pw").await {
            SignInOutcome::Accept { user, groups } => {
                assert_eq!(user.id, "u-alice");
                assert_eq!(groups.len(), 1);
                assert_eq!(groups[0].display_name, "vpn-users");
            }
            other => panic!("expected accept, got {other:?}"),
        }
    }
    // The store also knows users by id, but a sign-in names them by login or UPN.
    assert_eq!(
        f.radius("u-alice", "alice-pw").await,
        rejected(RejectReason::UserNotFound)
    );
    let events = f.sign_in_events().await;
    assert_eq!(events.len(), 3);
    let accept = &events[2];
    assert_eq!(accept.result, AuditResult::Success);
    assert_eq!(accept.channel, Channel::Radius);
    assert_eq!(accept.target.as_deref(), Some("alice@example.org"));
    assert_eq!(accept.source_address.as_deref(), Some("127.0.0.1:40000"));
    assert_eq!(accept.details["client"], "vpn");
    assert_eq!(events[0].reason_code.as_deref(), Some("user_not_found"));
}

#[tokio::test]
async fn unknown_disabled_and_empty_are_rejected_without_a_directory_call() {
    let f = Fixture::new().await;
    assert_eq!(
        f.radius("nobody", "x").await,
        rejected(RejectReason::UserNotFound)
    );
    assert_eq!(
        f.radius("carol", "carol-pw").await,
        rejected(RejectReason::AccountDisabled)
    );
    assert_eq!(
        f.radius("alice", "").await,
        rejected(RejectReason::EmptyPassword)
    );
    assert_eq!(
        f.radius("alice", "\0\0\0").await,
        rejected(RejectReason::EmptyPassword)
    );
    assert_eq!(f.checks(), 0);
    let codes: Vec<_> = f
        .sign_in_events()
        .await
        .into_iter()
        .map(|e| e.reason_code.unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "empty_password",
            "empty_password",
            "account_disabled",
            "user_not_found"
        ]
    );
}

#[tokio::test]
async fn a_tap_is_rejected_with_the_documented_message_and_not_consumed() {
    let f = Fixture::new().await;
    let expected = SignInOutcome::Reject {
        reason: RejectReason::TapNotSupported,
        message: Some(format!(
            "A Temporary Access Pass can't be used with RADIUS (NPS extension). Use it for web sign-in at {PUBLIC_URL}."
        )),
    };
    assert_eq!(f.radius("alice", TAP_CODE).await, expected);
    assert_eq!(f.checks(), 1);
    let tap = f.store.tap_for_user("u-alice").await.unwrap().unwrap();
    assert_eq!(tap.used_at, None);

    // A retry of the same TAP is answered from the rejection cache: no bind, no argon2.
    assert_eq!(f.radius("alice", TAP_CODE).await, expected);
    assert_eq!(f.checks(), 1);

    let federation = f
        .try_as(SignInChannel::Federation, "alice@example.org", TAP_CODE)
        .await;
    match federation {
        SignInOutcome::Reject {
            reason: RejectReason::TapNotSupported,
            message: Some(message),
        } => assert!(message.contains("federation (AD FS) adapter"), "{message}"),
        other => panic!("{other:?}"),
    }

    let events = f.sign_in_events().await;
    assert_eq!(
        events[0].reason_code.as_deref(),
        Some("tap_not_supported_federation")
    );
    assert_eq!(events[0].channel, Channel::Federation);
    assert_eq!(events[1].details["cached"], true);
    assert_eq!(
        events[2].reason_code.as_deref(),
        Some("tap_not_supported_radius")
    );
    assert_eq!(
        events[2].details["authenticationMethod"],
        "Temporary Access Pass"
    );
    assert_eq!(
        f.store
            .tap_for_user("u-alice")
            .await
            .unwrap()
            .unwrap()
            .used_at,
        None
    );
}

#[tokio::test]
async fn a_wrong_password_is_rejected_and_repeats_are_not_checked_again() {
    let f = Fixture::new().await;
    assert_eq!(
        f.radius("bob", "old-password").await,
        rejected(RejectReason::InvalidCredentials)
    );
    assert_eq!(
        f.radius("bob", "old-password").await,
        rejected(RejectReason::InvalidCredentials)
    );
    assert_eq!(f.checks(), 1);
    // After the cache entry expires the directory is asked again.
    f.clock.advance(chrono::Duration::seconds(121));
    f.radius("bob", "old-password").await;
    assert_eq!(f.checks(), 2);
}

#[tokio::test]
async fn repeats_of_a_rejected_credential_beyond_the_in_flight_limit_are_shed_unaudited() {
    let f = Fixture::new().await;
    assert_eq!(
        f.radius("bob", "old-password").await,
        rejected(RejectReason::InvalidCredentials)
    );
    let audited = f.sign_in_events().await.len();
    // As if MAX_REPEATS_IN_FLIGHT repeats were being decided right now.
    let busy = f
        .signin
        .repeats
        .clone()
        .try_acquire_many_owned(MAX_REPEATS_IN_FLIGHT as u32)
        .unwrap();
    // The same name (in any case) with the same credential is shed: no decision, no audit.
    for name in ["bob", "BOB"] {
        assert_eq!(
            f.radius(name, "old-password").await,
            SignInOutcome::Unavailable {
                reason: UnavailableReason::Overloaded
            }
        );
    }
    assert_eq!(f.sign_in_events().await.len(), audited);
    // Anything else is decided as usual: another credential, another user.
    assert!(matches!(
        f.radius("bob", "bob-pw").await,
        SignInOutcome::Accept { .. }
    ));
    assert!(matches!(
        f.radius("alice", "old-password").await,
        SignInOutcome::Reject { .. }
    ));
    drop(busy);
    // With room again, the repeat is answered from the rejection cache and audited.
    assert_eq!(
        f.radius("bob", "old-password").await,
        rejected(RejectReason::InvalidCredentials)
    );
    assert_eq!(f.sign_in_events().await.len(), audited + 3);
    assert_eq!(f.checks(), 3, "old-password for bob was checked once");
}

#[tokio::test]
async fn repeated_failures_throttle_the_user_without_binding_until_the_cooldown_ends() {
    let f = Fixture::new().await;
    for attempt in 0..3 {
        assert_eq!(
            f.radius("bob", &format!("wrong-{attempt}")).await,
            rejected(RejectReason::InvalidCredentials)
        );
    }
    assert_eq!(f.checks(), 3);
    // Other users are unaffected. (Asked first: the throttled attempt at 59 s below is folded
    // into the audit event of the first one, one per minute.)
    assert!(matches!(
        f.radius("alice", "alice-pw").await,
        SignInOutcome::Accept { .. }
    ));
    // Throttled: even the right password is refused, and the directory is not asked.
    assert_eq!(
        f.radius("bob", "bob-pw").await,
        rejected(RejectReason::Throttled)
    );
    assert_eq!(f.checks(), 4);
    f.clock.advance(chrono::Duration::seconds(59));
    assert_eq!(
        f.radius("bob", "bob-pw").await,
        rejected(RejectReason::Throttled)
    );
    f.clock.advance(chrono::Duration::seconds(1));
    assert!(matches!(
        f.radius("bob", "bob-pw").await,
        SignInOutcome::Accept { .. }
    ));
    let events = f.sign_in_events().await;
    assert_eq!(events[1].reason_code.as_deref(), Some("throttled"));
}

#[test]
fn failures_outside_the_window_do_not_count() {
    let settings = SignInSettings {
        max_failures: 3,
        ..SignInSettings::default()
    };
    let mut throttle = FailureThrottle::default();
    let start = t("2026-11-27T09:00:00Z");
    let u = ("u".to_owned(), "peer:127.0.0.1".to_owned());
    let u = &u;
    assert!(!throttle.record_failure(u, start, &settings));
    assert!(!throttle.record_failure(u, start + chrono::Duration::seconds(200), &settings));
    // The first failure left the 5-minute window: still only two.
    assert!(!throttle.record_failure(u, start + chrono::Duration::seconds(301), &settings));
    assert!(!throttle.is_blocked(u, start + chrono::Duration::seconds(301)));
    assert!(throttle.record_failure(u, start + chrono::Duration::seconds(302), &settings));
    assert!(throttle.is_blocked(u, start + chrono::Duration::seconds(361)));
    assert!(!throttle.is_blocked(u, start + chrono::Duration::seconds(362)));
}

#[tokio::test]
async fn an_unreachable_directory_is_unavailable_and_audited() {
    let f = Fixture::new().await;
    f.directory.down.store(true, Ordering::SeqCst);
    assert_eq!(
        f.radius("alice", "alice-pw").await,
        SignInOutcome::Unavailable {
            reason: UnavailableReason::Directory
        }
    );
    // Not cached and not counted: once the directory is back, the password works.
    f.directory.down.store(false, Ordering::SeqCst);
    assert!(matches!(
        f.radius("alice", "alice-pw").await,
        SignInOutcome::Accept { .. }
    ));
    let events = f.sign_in_events().await;
    assert_eq!(
        events[1].reason_code.as_deref(),
        Some("directory_unavailable")
    );
}

#[tokio::test]
async fn refusals_are_audited_with_the_presented_name() {
    let f = Fixture::new().await;
    let context = AttemptContext {
        channel: SignInChannel::Radius,
        client: "wifi".into(),
        source: "127.0.0.2:1645".into(),
        details: serde_json::Map::from_iter([("nasIdentifier".to_owned(), json!("ap-1"))]),
    };
    let outcome = f
        .signin
        .refuse(
            &context,
            "mallory\u{fffd}",
            RejectReason::UnsupportedMethod,
            "chap",
        )
        .await;
    assert_eq!(outcome, rejected(RejectReason::UnsupportedMethod));
    assert_eq!(f.checks(), 0);
    let events = f.sign_in_events().await;
    assert_eq!(events[0].target.as_deref(), Some("mallory\u{fffd}"));
    assert_eq!(events[0].actor, "RADIUS client wifi");
    assert_eq!(events[0].details["nasIdentifier"], "ap-1");
    assert_eq!(events[0].details["authenticationMethod"], "chap");
    assert_eq!(events[0].reason_code.as_deref(), Some("unsupported_method"));
}

impl Fixture {
    async fn at_station(&self, station: &str, name: &str, credential: &str) -> SignInOutcome {
        let context = AttemptContext {
            channel: SignInChannel::Radius,
            client: "vpn".into(),
            source: "127.0.0.1:40000".into(),
            details: serde_json::Map::from_iter([
                ("nasIdentifier".to_owned(), json!("nas-1")),
                ("callingStationId".to_owned(), json!(station)),
            ]),
        };
        self.signin.authenticate(&context, name, credential).await
    }
}

#[tokio::test]
async fn a_locked_station_spares_the_users_own_station() {
    let f = Fixture::new().await;
    for attempt in 0..3 {
        assert_eq!(
            f.at_station("attacker", "bob", &format!("wrong-{attempt}"))
                .await,
            rejected(RejectReason::InvalidCredentials)
        );
    }
    assert_eq!(
        f.at_station("attacker", "bob", "bob-pw").await,
        rejected(RejectReason::Throttled)
    );
    // Bob's own device: his password works while the attacker's station stays locked.
    assert!(matches!(
        f.at_station("bobs-laptop", "bob", "bob-pw").await,
        SignInOutcome::Accept { .. }
    ));
    assert_eq!(
        f.at_station("attacker", "bob", "bob-pw").await,
        rejected(RejectReason::Throttled)
    );
    // Without a Calling-Station-Id the NAS is the source (another key again).
    assert!(matches!(
        f.radius("bob", "bob-pw").await,
        SignInOutcome::Accept { .. }
    ));
}

#[tokio::test]
async fn throttled_attempts_are_audited_once_a_minute_with_a_count() {
    let f = Fixture::new().await;
    for attempt in 0..3 {
        f.at_station("attacker", "bob", &format!("wrong-{attempt}"))
            .await;
    }
    let before = f.sign_in_events().await.len();
    for _ in 0..20 {
        assert_eq!(
            f.at_station("attacker", "bob", "guess").await,
            rejected(RejectReason::Throttled)
        );
    }
    let events = f.sign_in_events().await;
    assert_eq!(
        events.len(),
        before + 1,
        "one event for 20 throttled attempts"
    );
    assert_eq!(events[0].reason_code.as_deref(), Some("throttled"));
    assert_eq!(events[0].details["attempts"], 1);
    // A minute on (the cool-down is 60 s: lock again first), the next event counts the rest.
    f.clock.advance(chrono::Duration::seconds(59));
    f.at_station("attacker", "bob", "guess").await;
    assert_eq!(f.sign_in_events().await.len(), before + 1);
    f.clock.advance(chrono::Duration::seconds(1));
    for attempt in 0..3 {
        f.at_station("attacker", "bob", &format!("again-{attempt}"))
            .await;
    }
    f.at_station("attacker", "bob", "guess").await;
    let events = f.sign_in_events().await;
    assert_eq!(events[0].reason_code.as_deref(), Some("throttled"));
    assert_eq!(events[0].details["attempts"], 21);
}

#[tokio::test]
async fn bad_names_are_refused_before_any_lookup_throttle_or_audit() {
    let f = Fixture::new().await;
    let long = "a".repeat(MAX_NAME_BYTES + 1);
    let names = [
        long.as_str(),
        "bob\n",
        "bob\u{7f}",
        "bob\u{85}",
        "\u{1b}[31mbob",
    ];
    for name in names {
        for channel in [SignInChannel::Radius, SignInChannel::Federation] {
            assert_eq!(
                f.try_as(channel, name, "wrong").await,
                rejected(RejectReason::NameInvalid),
                "{name:?}"
            );
        }
        let context = AttemptContext {
            channel: SignInChannel::Radius,
            client: "vpn".into(),
            source: "127.0.0.1:1".into(),
            details: serde_json::Map::new(),
        };
        assert_eq!(
            f.signin
                .refuse(&context, name, RejectReason::UnsupportedMethod, "chap")
                .await,
            rejected(RejectReason::NameInvalid)
        );
    }
    assert_eq!(f.checks(), 0);
    assert!(f.sign_in_events().await.is_empty());
    assert_eq!(f.signin.throttle_entries(), 0);
    // 256 bytes is still a name.
    let longest = "b".repeat(MAX_NAME_BYTES);
    assert_eq!(
        f.radius(&longest, "x").await,
        rejected(RejectReason::UserNotFound)
    );
    assert_eq!(check_sign_in_name("bob"), Ok(()));
}

#[test]
fn the_throttle_stays_bounded_under_rotating_sources() {
    let settings = SignInSettings {
        max_failures: 1,
        ..SignInSettings::default()
    };
    let mut throttle = FailureThrottle::default();
    let now = t("2026-11-27T09:00:00Z");
    for i in 0..(REJECTION_CACHE_ENTRIES + 5_000) {
        let key = ("u-bob".to_owned(), format!("station:{i}"));
        throttle.record_failure(&key, now, &settings);
    }
    assert!(
        throttle.len() <= REJECTION_CACHE_ENTRIES,
        "{}",
        throttle.len()
    );
}

#[test]
fn the_audit_aggregator_counts_and_stays_bounded() {
    let aggregator = AuditAggregator::default();
    let now = t("2026-11-27T09:00:00Z");
    assert_eq!(aggregator.note("k", now), Some(1));
    for _ in 0..9 {
        assert_eq!(
            aggregator.note("k", now + chrono::Duration::seconds(30)),
            None
        );
    }
    assert_eq!(
        aggregator.note("k", now + chrono::Duration::seconds(60)),
        Some(10)
    );
    for i in 0..(AGGREGATOR_ENTRIES + 100) {
        aggregator.note(&format!("k{i}"), now);
    }
    assert!(aggregator.len() <= AGGREGATOR_ENTRIES);
}

#[test]
fn only_a_credential_shaped_like_a_tap_code_could_be_the_tap() {
    use super::could_be_tap;
    assert!(could_be_tap("K7m+Qx2@", Some(8)));
    assert!(!could_be_tap("K7m+Qx2@9", Some(8)), "another length");
    assert!(
        !could_be_tap("K7m+Qx20", Some(8)),
        "0 is not in the alphabet"
    );
    assert!(!could_be_tap("K7m+Qx2 ", Some(8)), "nor is a space");
    // A TAP from before lengths were recorded: any length a policy allows.
    assert!(could_be_tap("K7m+Qx2@9", None));
    assert!(could_be_tap(&"a".repeat(48), None));
    assert!(!could_be_tap("K7m+Qx2", None));
    assert!(!could_be_tap(&"a".repeat(49), None));
}
