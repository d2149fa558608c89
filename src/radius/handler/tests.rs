#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::Ordering;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use proptest::prelude::*;

use super::*;
use crate::clock::{Clock, SystemClock};
use crate::directory::fake::FakeDirectory;
use crate::directory::DirectorySource;
use crate::metrics::{LdapBindResult, TapRejection};
use crate::model::{AuditFilter, AuditResult, Channel, NewAuditEvent, StoredTap};
use crate::signin::{SignInSettings, SIGN_IN_ACTIVITY};
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, SyncPlan};
use crate::tapcode::Hasher;

const SECRET: &[u8] = b"handler-test-secret";
const PUBLIC_URL: &str = "http://localhost:8080";
const TAP_CODE: &str = "K7m+Qx2@";

struct Fixture {
    handler: RadiusHandler,
    metrics: Arc<Metrics>,
    directory: Arc<FakeDirectory>,
    store: Arc<SqliteStore>,
}

fn receiver() -> SocketAddr {
    "127.0.0.1:1812".parse().unwrap()
}

fn nas() -> SocketAddr {
    "127.0.0.1:40001".parse().unwrap()
}

fn settings(unavailable: DirectoryUnavailable) -> RadiusSettings {
    RadiusSettings {
        clients: vec![RadiusClient {
            name: "nas".into(),
            network: "127.0.0.0/8".parse().unwrap(),
            secret: SharedSecret::new(SECRET.to_vec()).unwrap(),
            require_message_authenticator: true,
        }],
        directory_unavailable: unavailable,
        reject_delay: Duration::ZERO,
        second_factors: Default::default(),
        challenge_lifetime: Duration::from_secs(120),
        reply_attributes: vec![
            ReplyAttributeRule {
                group: "cn=engineering,ou=groups,dc=example,dc=org".into(),
                class: Some(b"vpn-class".to_vec()),
                filter_id: Some("vpn-acl".into()),
            },
            ReplyAttributeRule {
                group: "nobody-is-here".into(),
                class: Some(b"never".to_vec()),
                filter_id: None,
            },
        ],
    }
}

impl Fixture {
    async fn new(unavailable: DirectoryUnavailable) -> Fixture {
        let directory = Arc::new(FakeDirectory::demo());
        let store = Arc::new(SqliteStore::open_in_memory().await.unwrap());
        let contents = directory.read_all().await.unwrap();
        let plan = SyncPlan {
            upsert_users: contents.users,
            upsert_groups: contents.groups,
            ..SyncPlan::default()
        };
        crate::store::apply_sync_leased(&*store, &plan)
            .await
            .unwrap();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let metrics = Arc::new(Metrics::new());
        let signin = SignIn::new(
            store.clone(),
            directory.clone(),
            Hasher::new(1, 8).unwrap(),
            clock,
            metrics.clone(),
            SignInSettings {
                public_url: PUBLIC_URL.into(),
                ..SignInSettings::default()
            },
        )
        .unwrap();
        let handler = RadiusHandler::new(
            settings(unavailable),
            Arc::new(signin),
            ReplyCacheConfig::default(),
            metrics.clone(),
        );
        Fixture {
            handler,
            metrics,
            directory,
            store,
        }
    }

    async fn give_alice_a_tap(&self) {
        let alice = self.store.user("alice").await.unwrap().unwrap();
        let now = SystemClock.now();
        let tap = StoredTap {
            id: "tap-1".into(),
            user_id: alice.id,
            code_hash: crate::tapcode::hash_blocking(TAP_CODE).unwrap(),
            created: now,
            start: now,
            lifetime_in_minutes: 60,
            is_usable_once: true,
            used_at: None,
            code_length: Some(TAP_CODE.len() as u32),
        };
        let event = NewAuditEvent {
            time: now,
            actor: "test".into(),
            activity: "test".into(),
            target: None,
            result: AuditResult::Success,
            reason_code: None,
            channel: Channel::Admin,
            source_address: None,
            details: serde_json::json!({}),
        };
        self.store.replace_tap(&tap, &event).await.unwrap();
    }

    async fn send(&self, packet: &[u8]) -> Option<Vec<u8>> {
        self.handler
            .handle(receiver(), nas(), packet, Instant::now())
            .await
    }

    fn checks(&self) -> usize {
        self.directory.checks.load(Ordering::SeqCst)
    }
}

// ---- an independent little packet builder (not the code under test) ----

fn attr(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![kind, (value.len() + 2) as u8];
    out.extend_from_slice(value);
    out
}

fn hide_password(password: &[u8], authenticator: &[u8; 16]) -> Vec<u8> {
    let mut padded = password.to_vec();
    padded.resize(password.len().div_ceil(16).max(1) * 16, 0);
    let mut previous = authenticator.to_vec();
    let mut hidden = Vec::new();
    for block in padded.chunks(16) {
        let pad = Md5::new()
            .chain_update(SECRET)
            .chain_update(&previous)
            .finalize();
        let cipher: Vec<u8> = block.iter().zip(pad.iter()).map(|(a, b)| a ^ b).collect();
        hidden.extend_from_slice(&cipher);
        previous = cipher;
    }
    hidden
}

fn hmac_md5(data: &[u8]) -> [u8; 16] {
    let mut mac = Hmac::<Md5>::new_from_slice(SECRET).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// A request with Message-Authenticator (first), signed with [`SECRET`].
fn request(code: u8, id: u8, authenticator: [u8; 16], attributes: &[Vec<u8>]) -> Vec<u8> {
    let mut packet = vec![code, id, 0, 0];
    packet.extend_from_slice(&authenticator);
    packet.extend(attr(80, &[0; 16]));
    for attribute in attributes {
        packet.extend_from_slice(attribute);
    }
    let len = packet.len() as u16;
    packet[2..4].copy_from_slice(&len.to_be_bytes());
    let ma = hmac_md5(&packet);
    packet[22..38].copy_from_slice(&ma);
    packet
}

fn pap(id: u8, user: &str, password: &str) -> Vec<u8> {
    let authenticator = [id.wrapping_mul(7).wrapping_add(1); 16];
    request(
        1,
        id,
        authenticator,
        &[
            attr(1, user.as_bytes()),
            attr(2, &hide_password(password.as_bytes(), &authenticator)),
            attr(32, b"test-nas"),
        ],
    )
}

/// Checks the reply's Response Authenticator and Message-Authenticator (which must come
/// first) against `request`, returning (code, attributes after MA).
fn open_reply(reply: &[u8], request: &[u8]) -> (u8, Vec<(u8, Vec<u8>)>) {
    assert_eq!(
        usize::from(u16::from_be_bytes([reply[2], reply[3]])),
        reply.len()
    );
    assert_eq!(reply[1], request[1], "identifier echoed");
    let mut signed = reply.to_vec();
    signed[4..20].copy_from_slice(&request[4..20]);
    let expected: [u8; 16] = Md5::new()
        .chain_update(&signed)
        .chain_update(SECRET)
        .finalize()
        .into();
    assert_eq!(&reply[4..20], &expected, "response authenticator");
    assert_eq!(&reply[20..22], &[80, 18], "Message-Authenticator first");
    let mut zeroed = signed.clone();
    zeroed[22..38].fill(0);
    assert_eq!(
        &reply[22..38],
        &hmac_md5(&zeroed),
        "Message-Authenticator value"
    );
    let mut attributes = Vec::new();
    let mut rest = &reply[38..];
    while !rest.is_empty() {
        let len = usize::from(rest[1]);
        attributes.push((rest[0], rest[2..len].to_vec()));
        rest = &rest[len..];
    }
    (reply[0], attributes)
}

fn reply_message(attributes: &[(u8, Vec<u8>)]) -> String {
    let bytes: Vec<u8> = attributes
        .iter()
        .filter(|(kind, _)| *kind == 18)
        .flat_map(|(_, value)| value.clone())
        .collect();
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn the_password_is_accepted_with_group_reply_attributes() {
    let f = Fixture::new(DirectoryUnavailable::Drop).await;
    let packet = pap(1, "bob", "bob-demo-pw");
    let reply = f.send(&packet).await.expect("a reply");
    let (code, attributes) = open_reply(&reply, &packet);
    assert_eq!(code, 2);
    assert_eq!(
        attributes,
        vec![(25, b"vpn-class".to_vec()), (11, b"vpn-acl".to_vec())]
    );
    // A user outside engineering gets no attributes.
    let packet = pap(2, "alice", "alice-demo-pw");
    let (code, attributes) = open_reply(&f.send(&packet).await.unwrap(), &packet);
    assert_eq!((code, attributes), (2, vec![]));
    assert_eq!(f.handler.metrics().requests.get(RadiusOutcome::Accept), 2);
    let ok = LdapBindResult::Success;
    assert_eq!(f.metrics.ldap_bind_duration.count(ok), 2);
}

#[tokio::test]
async fn a_tap_is_rejected_with_the_documented_reply_message() {
    let f = Fixture::new(DirectoryUnavailable::Drop).await;
    f.give_alice_a_tap().await;
    let packet = pap(3, "alice@example.org", TAP_CODE);
    let (code, attributes) = open_reply(&f.send(&packet).await.unwrap(), &packet);
    assert_eq!(code, 3);
    assert_eq!(
        reply_message(&attributes),
        format!("A Temporary Access Pass can't be used with RADIUS (NPS extension). Use it for web sign-in at {PUBLIC_URL}.")
    );
    let alice = f.store.user("alice").await.unwrap().unwrap();
    assert_eq!(
        f.store
            .tap_for_user(&alice.id)
            .await
            .unwrap()
            .unwrap()
            .used_at,
        None
    );
    let tap_rejected = RadiusOutcome::Reject(RejectReason::TapNotSupported);
    assert_eq!(f.handler.metrics().requests.get(tap_rejected), 1);
    assert_eq!(f.metrics.tap_rejections.get(TapRejection::Radius), 1);
    assert_eq!(f.metrics.tap_rejections.get(TapRejection::Federation), 0);

    // A wrong password: a bare reject.
    let packet = pap(4, "alice", "not-it");
    let (code, attributes) = open_reply(&f.send(&packet).await.unwrap(), &packet);
    assert_eq!((code, attributes), (3, vec![]));
    let invalid = RadiusOutcome::Reject(RejectReason::InvalidCredentials);
    assert_eq!(f.handler.metrics().requests.get(invalid), 1);
    let invalid = LdapBindResult::InvalidCredentials;
    assert_eq!(f.metrics.ldap_bind_duration.count(invalid), 2);
    // An unknown user: no directory check.
    let packet = pap(5, "nobody", "whatever");
    let (code, _) = open_reply(&f.send(&packet).await.unwrap(), &packet);
    assert_eq!(code, 3);
    let not_found = RadiusOutcome::Reject(RejectReason::UserNotFound);
    assert_eq!(f.handler.metrics().requests.get(not_found), 1);
    assert_eq!(f.metrics.ldap_bind_duration.count(invalid), 2);
}

#[tokio::test]
async fn a_retransmission_gets_the_identical_reply_without_a_second_check() {
    let f = Fixture::new(DirectoryUnavailable::Drop).await;
    let packet = pap(5, "bob", "bob-demo-pw");
    let first = f.send(&packet).await.unwrap();
    let second = f.send(&packet).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(f.checks(), 1);
    assert_eq!(f.handler.metrics().replayed.get(NoLabels), 1);
    assert_eq!(f.handler.metrics().requests.get(RadiusOutcome::Accept), 1);
    let events = f
        .store
        .audit(&AuditFilter {
            activity: Some(SIGN_IN_ACTIVITY.into()),
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.details["nasIdentifier"], "test-nas");
    assert_eq!(events[0].event.actor, "RADIUS client nas");
}

#[tokio::test]
async fn a_reject_is_held_for_the_reject_delay_and_its_retransmission_is_not_answered_early() {
    let f = Fixture::new(DirectoryUnavailable::Drop).await;
    let delay = Duration::from_millis(300);
    f.handler.update_settings(RadiusSettings {
        reject_delay: delay,
        ..settings(DirectoryUnavailable::Drop)
    });
    let wrong = pap(21, "bob", "not-bobs-password");
    let arrived = Instant::now();
    let pending = f
        .handler
        .prepare(receiver(), nas(), &wrong, arrived)
        .await
        .unwrap();
    assert_eq!(pending.not_before(), Some(arrived + delay));
    // The NAS retransmits while the reject is held: no second, early reject.
    assert!(f
        .handler
        .prepare(receiver(), nas(), &wrong, Instant::now())
        .await
        .is_none());
    assert_eq!(
        f.handler
            .metrics()
            .dropped
            .get(RadiusDropCause::DuplicateInFlight),
        1
    );
    let sent = f.handler.release(pending);
    assert_eq!(open_reply(&sent, &wrong).0, 3);
    // Once it left, a retransmission gets the same bytes from the cache.
    let replay = f
        .handler
        .prepare(receiver(), nas(), &wrong, Instant::now())
        .await
        .unwrap();
    assert_eq!(replay.not_before(), None);
    assert_eq!(f.handler.release(replay), sent);
    assert_eq!(f.checks(), 1);

    // An accept is never held.
    let right = pap(22, "bob", "bob-demo-pw");
    let accept = f
        .handler
        .prepare(receiver(), nas(), &right, Instant::now())
        .await
        .unwrap();
    assert_eq!(accept.not_before(), None);

    // handle() waits the delay out on a timer.
    let started = Instant::now();
    let reply = f.send(&pap(23, "nobody-at-all", "x")).await.unwrap();
    assert_eq!(reply[0], 3);
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_zero_length_proxy_state_is_dropped_at_parse_time_and_counted() {
    let f = Fixture::new(DirectoryUnavailable::Drop).await;
    let authenticator = [9; 16];
    let with_states = |states: &[&[u8]]| {
        let mut attributes = vec![
            attr(1, b"bob"),
            attr(2, &hide_password(b"bob-demo-pw", &authenticator)),
        ];
        attributes.extend(states.iter().map(|state| attr(33, state)));
        request(1, 31, authenticator, &attributes)
    };
    assert!(f.send(&with_states(&[b"ok", b""])).await.is_none());
    assert_eq!(
        f.handler
            .metrics()
            .dropped
            .get(RadiusDropCause::Invalid(DropReason::EmptyProxyState)),
        1
    );
    // More Proxy-State than a reply could echo.
    let big = [7u8; 250];
    let too_many: Vec<&[u8]> = (0..9).map(|_| &big[..]).collect();
    assert!(f.send(&with_states(&too_many)).await.is_none());
    assert_eq!(
        f.handler
            .metrics()
            .dropped
            .get(RadiusDropCause::Invalid(DropReason::ProxyStateTooLarge)),
        1
    );
    assert_eq!(f.checks(), 0);
    // Non-empty Proxy-States that fit are echoed.
    let fine = with_states(&[b"one", b"two"]);
    let reply = f.send(&fine).await.unwrap();
    let (code, attributes) = open_reply(&reply, &fine);
    assert_eq!(code, 2);
    let echoed: Vec<&Vec<u8>> = attributes
        .iter()
        .filter(|(kind, _)| *kind == 33)
        .map(|(_, value)| value)
        .collect();
    assert_eq!(echoed, [&b"one".to_vec(), &b"two".to_vec()]);
}

#[tokio::test]
async fn chap_and_missing_credentials_get_the_pap_only_message() {
    let f = Fixture::new(DirectoryUnavailable::Drop).await;
    let chap = request(1, 6, [6; 16], &[attr(1, b"alice"), attr(3, &[1; 17])]);
    let (code, attributes) = open_reply(&f.send(&chap).await.unwrap(), &chap);
    assert_eq!(code, 3);
    assert_eq!(reply_message(&attributes), PAP_ONLY_MESSAGE);
    let bare = request(1, 7, [7; 16], &[attr(1, b"alice")]);
    let (code, attributes) = open_reply(&f.send(&bare).await.unwrap(), &bare);
    assert_eq!(code, 3);
    assert_eq!(reply_message(&attributes), PAP_ONLY_MESSAGE);
    assert_eq!(f.checks(), 0);
    let unsupported = RadiusOutcome::Reject(RejectReason::UnsupportedMethod);
    assert_eq!(f.handler.metrics().requests.get(unsupported), 2);
}

#[tokio::test]
async fn status_server_is_answered_with_a_bare_accept() {
    let f = Fixture::new(DirectoryUnavailable::Drop).await;
    let packet = request(12, 8, [8; 16], &[]);
    let (code, attributes) = open_reply(&f.send(&packet).await.unwrap(), &packet);
    assert_eq!((code, attributes), (2, vec![]));
    let status_server = RadiusOutcome::StatusServer;
    assert_eq!(f.handler.metrics().requests.get(status_server), 1);
}

#[tokio::test]
async fn unknown_sources_bad_signatures_and_missing_ma_get_no_reply() {
    let f = Fixture::new(DirectoryUnavailable::Drop).await;
    let packet = pap(9, "alice", "alice-demo-pw");
    let stranger: SocketAddr = "[::1]:5000".parse().unwrap();
    assert_eq!(
        f.handler
            .handle(receiver(), stranger, &packet, Instant::now())
            .await,
        None
    );
    let mut tampered = packet.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert_eq!(f.send(&tampered).await, None);
    // The same PAP request without Message-Authenticator.
    let authenticator = [10; 16];
    let mut bare = vec![1, 10, 0, 0];
    bare.extend_from_slice(&authenticator);
    bare.extend(attr(1, b"alice"));
    bare.extend(attr(2, &hide_password(b"alice-demo-pw", &authenticator)));
    let len = bare.len() as u16;
    bare[2..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(f.send(&bare).await, None);
    let dropped = |cause| f.handler.metrics().dropped.get(cause);
    assert_eq!(dropped(RadiusDropCause::UnknownClient), 1);
    let bad_ma = DropReason::BadMessageAuthenticator;
    assert_eq!(dropped(RadiusDropCause::Invalid(bad_ma)), 1);
    let missing_ma = DropReason::MissingMessageAuthenticator;
    assert_eq!(dropped(RadiusDropCause::Invalid(missing_ma)), 1);
    assert_eq!(f.handler.metrics().requests.get(RadiusOutcome::Accept), 0);
    assert_eq!(f.checks(), 0);
}

#[tokio::test]
async fn an_unavailable_directory_means_no_reply_and_a_retry_is_processed_again() {
    let f = Fixture::new(DirectoryUnavailable::Drop).await;
    f.directory.down.store(true, Ordering::SeqCst);
    let packet = pap(11, "alice", "alice-demo-pw");
    assert_eq!(f.send(&packet).await, None);
    let drop_cause = RadiusDropCause::DirectoryUnavailable;
    assert_eq!(f.handler.metrics().dropped.get(drop_cause), 1);
    let error = LdapBindResult::Error;
    assert_eq!(f.metrics.ldap_bind_duration.count(error), 1);
    f.directory.down.store(false, Ordering::SeqCst);
    let (code, _) = open_reply(&f.send(&packet).await.unwrap(), &packet);
    assert_eq!(code, 2);
    assert_eq!(f.checks(), 2);

    let f = Fixture::new(DirectoryUnavailable::Reject).await;
    f.directory.down.store(true, Ordering::SeqCst);
    let (code, attributes) = open_reply(&f.send(&packet).await.unwrap(), &packet);
    assert_eq!((code, attributes), (3, vec![]));
    let rejected = RadiusOutcome::Unavailable(crate::signin::UnavailableReason::Directory);
    assert_eq!(f.handler.metrics().requests.get(rejected), 1);
}

#[test]
fn status_server_is_rate_limited_per_client() {
    let mut limiter = StatusServerLimiter::default();
    let start = Instant::now();
    let allowed = (0..100).filter(|_| limiter.allow("a", start)).count();
    assert_eq!(allowed, STATUS_SERVER_BURST as usize);
    assert!(limiter.allow("b", start));
    assert!(limiter.allow("a", start + Duration::from_secs(1)));
}

#[test]
fn malformed_packet_logging_is_bounded() {
    let mut limiter = LogLimiter {
        period_start: None,
        logged: 0,
        suppressed: 0,
    };
    let start = Instant::now();
    let logged = (0..50).filter(|_| limiter.allow(start).0).count();
    assert_eq!(logged, LOG_BURST as usize);
    assert_eq!(limiter.allow(start + LOG_PERIOD), (true, 40));
}

/// Random datagrams and mutations of a valid request never panic the handler, and a reply
/// only ever answers a request that verified. One fixture for all cases (building one costs
/// an argon2 hash).
#[test]
fn random_and_mutated_datagrams_never_panic() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let f = runtime.block_on(Fixture::new(DirectoryUnavailable::Drop));
    let strategy = (
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::collection::vec((0usize..80, any::<u8>()), 1..4),
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(512));
    runner
        .run(&strategy, |(random, flips)| {
            runtime.block_on(async {
                let _ = f.send(&random).await;
                let mut mutated = pap(12, "nobody-here", "x");
                for (index, value) in flips {
                    if let Some(byte) = mutated.get_mut(index) {
                        *byte ^= value;
                    }
                }
                if let Some(reply) = f.send(&mutated).await {
                    let (code, _) = open_reply(&reply, &mutated);
                    prop_assert!(code == 2 || code == 3);
                }
                Ok(())
            })
        })
        .unwrap();
}

#[test]
fn reply_rules_match_groups_by_id_dn_or_unique_cn_only() {
    let rules = RadiusSettings {
        reply_attributes: vec![
            ReplyAttributeRule {
                group: "cn=vpn-admins,ou=groups,dc=example,dc=org".into(),
                class: Some(b"admin".to_vec()),
                filter_id: None,
            },
            ReplyAttributeRule {
                group: "staff".into(),
                class: None,
                filter_id: Some("staff-acl".into()),
            },
        ],
        ..settings(DirectoryUnavailable::Drop)
    };
    let group = |id: &str, dn: &str, cn: &str| GroupRef {
        id: id.into(),
        dn: dn.into(),
        display_name: cn.into(),
    };
    let admins = group(
        "g-1",
        "cn=vpn-admins,ou=groups,dc=example,dc=org",
        "vpn-admins",
    );
    // Created under another OU, named with the admin group's DN as its cn.
    let spoof = group(
        "g-2",
        "cn=cn\\=vpn-admins\\,ou\\=groups\\,dc\\=example\\,dc\\=org,ou=people,dc=example,dc=org",
        "cn=vpn-admins,ou=groups,dc=example,dc=org",
    );
    let staff = group("g-3", "cn=staff,ou=groups,dc=example,dc=org", "staff");
    let twin = group("g-4", "cn=staff,ou=people,dc=example,dc=org", "STAFF");
    let index = GroupIndex::new(
        [&admins, &spoof, &staff]
            .iter()
            .map(|g| (g.id.as_str(), g.dn.as_str(), g.display_name.as_str())),
    );
    assert_eq!(
        rules.attributes_for(std::slice::from_ref(&admins), &index),
        vec![ReplyAttribute::Class(b"admin".to_vec())]
    );
    assert_eq!(
        rules.attributes_for(std::slice::from_ref(&spoof), &index),
        vec![]
    );
    assert_eq!(
        rules.attributes_for(std::slice::from_ref(&staff), &index),
        vec![ReplyAttribute::FilterId("staff-acl".into())]
    );
    // A second "staff" group: the cn names neither.
    let index = GroupIndex::new(
        [&admins, &spoof, &staff, &twin]
            .iter()
            .map(|g| (g.id.as_str(), g.dn.as_str(), g.display_name.as_str())),
    );
    assert_eq!(rules.attributes_for(&[staff, twin], &index), vec![]);
}
