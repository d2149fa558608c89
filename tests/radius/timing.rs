//! The timing oracle, attacked over real UDP against the real tapd: 200 Access-Requests
//! each for an unknown user, a disabled user (carol) and a known user with a wrong password
//! (`tim`, whose directory hash is a light argon2id, so checking it costs real work but the
//! test's pace does not outrun two busy cores). With
//! `reject_delay` every reject leaves at arrival + delay, so no user answers later than
//! another: the median of the per-round differences of their round trips is under 5 ms;
//! without it the known user answers measurably later.
//!
//! The three requests of a round are sent back to back, in an order that rotates each round,
//! and each user is compared with the others round by round: whatever slows a round down (a
//! busy machine, a late timer) slows all three alike and cancels out, and no user is always
//! the last one sent and answered. A shift between the users survives the pairing.
//!
//! Bounded: 600 requests, paced one round (three requests) every 50 ms, so about 10 s.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::access_request;
use super::harness::{Options, Tapd};

const PER_USER: usize = 200;
const ROUND: Duration = Duration::from_millis(50);
const DELAY: Duration = Duration::from_millis(300);

/// Sends `PER_USER` requests for each user, one socket per user, and returns each user's
/// round-trip times in round order (every request must get an Access-Reject).
fn round_trips(tapd: &Tapd, users: &[&str]) -> Vec<Vec<Duration>> {
    let mut sockets = Vec::new();
    let mut receivers = Vec::new();
    for _ in users {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(tapd.radius).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let socket = Arc::new(socket);
        let received: Arc<Mutex<HashMap<u8, (Instant, u8)>>> = Arc::default();
        let thread = {
            let socket = socket.clone();
            let received = received.clone();
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                for _ in 0..PER_USER {
                    let Ok(len) = socket.recv(&mut buffer) else {
                        return;
                    };
                    assert!(len >= 20);
                    received
                        .lock()
                        .unwrap()
                        .insert(buffer[1], (Instant::now(), buffer[0]));
                }
            })
        };
        sockets.push(socket);
        receivers.push((thread, received));
    }
    let mut sent = vec![Vec::new(); users.len()];
    let start = Instant::now();
    for round in 0..PER_USER {
        let identifier = u8::try_from(round).unwrap();
        // A new guess each time, as an attacker sends: a repeated wrong pair would be
        // answered from the sign-in service's rejection cache without a directory check.
        let password = format!("guess-number-{round}");
        // Rotated each round: the first sent is answered first.
        for turn in 0..users.len() {
            let index = (round + turn) % users.len();
            let user = users[index];
            let mut authenticator = [0u8; 16];
            authenticator[0] = identifier;
            authenticator[1] = u8::try_from(index).unwrap();
            authenticator[2..].copy_from_slice(b"timing-oracle!");
            let packet = access_request(identifier, authenticator, user, &password);
            sent[index].push(Instant::now());
            sockets[index].send(&packet).unwrap();
        }
        let next = start + ROUND * u32::try_from(round + 1).unwrap();
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let mut times = Vec::new();
    for ((thread, received), sent) in receivers.into_iter().zip(sent) {
        thread.join().unwrap();
        let received = received.lock().unwrap();
        assert_eq!(
            received.len(),
            PER_USER,
            "every request gets an answer; metrics:\n{}",
            tapd.scrape()
                .lines()
                .filter(|l| l.starts_with("tapd_radius") && !l.ends_with(" 0"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let user_times: Vec<Duration> = sent
            .iter()
            .enumerate()
            .map(|(round, at)| {
                let (arrived, code) = received[&u8::try_from(round).unwrap()];
                assert_eq!(code, 3, "Access-Reject");
                arrived.duration_since(*at)
            })
            .collect();
        times.push(user_times);
    }
    times
}

/// A directory entry for `tim`, password `tims-password`, hashed with argon2id at 32 MiB and
/// one pass: some 20 ms of work per check here, well above the 5 ms the test tells apart
/// (at 8 MiB the check took 4 to 7 ms, and a reject timed from the end of the check instead
/// of the arrival went unnoticed in some runs) and well below the 300 ms delay.
fn timing_user() -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(32 * 1024, 1, 1, None).unwrap();
    let argon2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"timing-test-salt").unwrap();
    let hash = argon2
        .hash_password(b"tims-password", &salt)
        .unwrap()
        .to_string();
    format!(
        "dn: uid=tim,ou=people,dc=example,dc=org
objectClass: top
objectClass: person
objectClass: organizationalPerson
objectClass: inetOrgPerson
entryUUID: 7c1e5a10-0001-4b6e-9a11-0000000000f1
uid: tim
cn: Tim Ing
sn: Ing
mail: tim@example.org
userPassword: {{ARGON2}}{hash}
"
    )
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// The median over the rounds of `a`'s round trip minus `b`'s in the same round, in
/// microseconds (negative: `a` answered sooner).
fn median_paired_difference(a: &[Duration], b: &[Duration]) -> i128 {
    let micros = |d: &Duration| i128::try_from(d.as_micros()).unwrap();
    let mut differences: Vec<i128> = a
        .iter()
        .zip(b)
        .map(|(a, b)| micros(a) - micros(b))
        .collect();
    differences.sort_unstable();
    differences[differences.len() / 2]
}

#[test]
fn unknown_disabled_and_known_users_are_rejected_after_the_same_time() {
    let tapd = Tapd::start_with(Options {
        radius_reject_delay: "300ms",
        // Keep alice's wrong password a real directory check every time: the throttle
        // would otherwise answer the later attempts without one.
        extra: "[security]\nsign_in_max_failures = 100000\n".into(),
        ldif: timing_user(),
        ..Options::default()
    });
    let users = ["nobody-by-this-name", "carol", "tim"];
    let times = round_trips(&tapd, &users);
    let medians: Vec<Duration> = times.iter().map(|t| median(t)).collect();
    for a in 0..users.len() {
        for b in a + 1..users.len() {
            let difference = median_paired_difference(&times[a], &times[b]);
            assert!(
                difference.abs() < 5_000,
                "{} answered {difference} µs later than {} (median of the rounds); \
                 medians {:?} and {:?}",
                users[a],
                users[b],
                medians[a],
                medians[b]
            );
        }
    }
    for (user, median) in users.iter().zip(&medians) {
        assert!(*median >= DELAY, "{}: median {median:?}", user);
    }
}

#[test]
fn federation_rejections_wait_for_the_reject_delay_and_accepts_do_not() {
    let tapd = Tapd::start_with(Options {
        federation_reject_delay: "600ms",
        ..Options::default()
    });
    let timed = |user: &str, credential: &str| {
        let body = format!(r#"{{"userPrincipalName":"{user}","credential":"{credential}"}}"#);
        let started = Instant::now();
        let result = super::harness::curl(
            tapd.web,
            "POST",
            "/federation/v1/authenticate",
            Some(super::harness::FEDERATION_TOKEN),
            Some(&body),
        );
        (result.status, started.elapsed())
    };
    let (status, unknown) = timed("nobody@example.org", "guess");
    assert_eq!(status, 401);
    assert!(unknown >= Duration::from_millis(600), "{unknown:?}");
    let (status, disabled) = timed("carol@example.org", "carol-demo-pw");
    assert_eq!(status, 401);
    assert!(disabled >= Duration::from_millis(600), "{disabled:?}");
    let (status, accepted) = timed("bob@example.org", "bob-demo-pw");
    assert_eq!(status, 200);
    assert!(accepted < Duration::from_millis(600), "{accepted:?}");
}
