//! The RADIUS load generator's engine, shared by the `radius_load` example (the command-line
//! tool of `scripts/bench-radius.sh`) and the smoke test in `tests/radius/load.rs`, which
//! includes this file by path so the tool cannot rot.
//!
//! It sends PAP Access-Requests with Message-Authenticator (RFC 2865 §5.2 password hiding,
//! RFC 3579 §3.2 HMAC-MD5) from `concurrency` workers, each with its own UDP socket and one
//! request in flight, cycling through a list of credentials, until a deadline or a request
//! count is reached. Replies are checked (Identifier, Response Authenticator, and the
//! Message-Authenticator when present) before they count. It builds packets itself with
//! RustCrypto `md-5`/`hmac`, independently of tapd's own RADIUS core, and only ever talks to
//! loopback. Depends on tokio, `md-5`, `hmac`, `sha1`, `rand`, `serde` and `thiserror` only.
//!
//! Two-leg mode (`two_leg`, for a client with `second_factor = "totp"` in challenge mode): each
//! credential line also carries the user's authenticator secret (base32); a sign-in is the
//! password, the Access-Challenge, then the RFC 6238 code of the next 30-second step with the
//! challenge's State. A code works once, so each credential is used at most once per run.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use rand::{RngCore, SeedableRng};
use tapd::signin::totp;

const ACCESS_REQUEST: u8 = 1;
const ACCESS_ACCEPT: u8 = 2;
const ACCESS_REJECT: u8 = 3;
const ACCESS_CHALLENGE: u8 = 11;
const STATE: u8 = 24;
const USER_NAME: u8 = 1;
const USER_PASSWORD: u8 = 2;
const NAS_IP_ADDRESS: u8 = 4;
const MESSAGE_AUTHENTICATOR: u8 = 80;

/// Why a load run could not start or a credentials file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The target is not a loopback address; this tool sends nowhere else.
    #[error("target {0} is not a loopback address")]
    NotLoopback(SocketAddr),
    /// No credentials to send.
    #[error("no credentials given")]
    NoCredentials,
    /// A credential's user name or password does not fit a RADIUS attribute (1–253 octets
    /// for the name, 1–128 for the password).
    #[error("credential {0:?}: user name or password of unusable length")]
    BadCredential(String),
    /// A socket could not be opened or connected.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

/// One user name and the password (or TAP) sent for it.
#[derive(Clone, Debug)]
pub struct Credential {
    /// User-Name.
    pub user: String,
    /// The cleartext User-Password.
    pub password: String,
    /// The authenticator-app secret (two-leg mode), decoded from base32.
    pub totp_secret: Option<Vec<u8>>,
}

/// Parses `user password` lines (whitespace between; the password is the rest of the line);
/// blank lines and lines starting with `#` are skipped.
pub fn parse_credentials(text: &str) -> Result<Vec<Credential>, LoadError> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (user, password) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| LoadError::BadCredential(line.to_owned()))?;
        let credential = Credential {
            user: user.to_owned(),
            password: password.trim_start().to_owned(),
            totp_secret: None,
        };
        check_credential(&credential)?;
        out.push(credential);
    }
    Ok(out)
}

fn check_credential(credential: &Credential) -> Result<(), LoadError> {
    let user_ok = (1..=253).contains(&credential.user.len());
    let password_ok = (1..=128).contains(&credential.password.len());
    if user_ok && password_ok {
        Ok(())
    } else {
        Err(LoadError::BadCredential(credential.user.clone()))
    }
}

/// Parses `user password base32-secret` lines for two-leg mode (the password may not
/// contain whitespace here).
pub fn parse_two_leg_credentials(text: &str) -> Result<Vec<Credential>, LoadError> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [user, password, secret] = fields[..] else {
            return Err(LoadError::BadCredential(line.to_owned()));
        };
        let credential = Credential {
            user: user.to_owned(),
            password: password.to_owned(),
            totp_secret: Some(
                totp::base32_decode(secret)
                    .ok_or_else(|| LoadError::BadCredential(line.to_owned()))?,
            ),
        };
        check_credential(&credential)?;
        out.push(credential);
    }
    Ok(out)
}

/// The RFC 6238 code of `secret` one step after now (the same code tapd's `signin::totp`
/// checks): fresh even when the current step's code was used (at registration).
fn next_step_code(secret: &[u8]) -> String {
    totp::code_at_step(secret, totp::step_at(chrono::Utc::now()) + 1)
}

/// What to send, where, and for how long.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The RADIUS server (loopback only).
    pub target: SocketAddr,
    /// The shared secret.
    pub secret: Vec<u8>,
    /// Requests in flight at once (one worker and one socket each).
    pub concurrency: usize,
    /// Stop sending after this long.
    pub duration: Duration,
    /// Stop after this many requests in total (whichever comes first).
    pub max_requests: Option<u64>,
    /// How long to wait for a reply before counting a timeout (no retransmission).
    pub timeout: Duration,
    /// Credentials, cycled through; worker `w` starts at offset `w`.
    pub credentials: Vec<Credential>,
    /// Two-leg mode (see the module documentation): every credential once, at most.
    pub two_leg: bool,
    /// Local address to send from (a loopback address; default 127.0.0.1 or ::1), so that a
    /// second RADIUS client entry can be addressed.
    pub source: Option<std::net::IpAddr>,
}

/// The result of a run, printed as JSON.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LoadReport {
    /// Requests sent.
    pub sent: u64,
    /// Access-Accepts received (and verified).
    pub accepts: u64,
    /// Access-Rejects received (and verified).
    pub rejects: u64,
    /// Requests with no reply within the timeout.
    pub timeouts: u64,
    /// Replies that failed verification or had another code.
    pub bad_replies: u64,
    /// Wall-clock seconds from the first send to the last reply or timeout.
    pub elapsed_seconds: f64,
    /// Answered requests (accepts + rejects) per second.
    pub requests_per_second: f64,
    /// Accepts per second.
    pub accepts_per_second: f64,
    /// Latency percentiles of answered requests, in milliseconds.
    pub latency_ms: Percentiles,
    /// The concurrency used.
    pub concurrency: usize,
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Slowest.
    pub max: f64,
}

#[derive(Default)]
struct WorkerTally {
    sent: u64,
    accepts: u64,
    rejects: u64,
    timeouts: u64,
    bad_replies: u64,
    latencies_us: Vec<u64>,
}

impl WorkerTally {
    /// Counts `reply` to the request `identifier` sent at `started`: an accept or a reject
    /// with its latency, or a bad reply (wrong authenticator, other code) without one.
    fn record(
        &mut self,
        reply: &[u8],
        identifier: u8,
        authenticator: &[u8; 16],
        secret: &[u8],
        started: Instant,
    ) {
        let latency = started.elapsed();
        match verify_reply(reply, identifier, authenticator, secret) {
            Some(ACCESS_ACCEPT) => self.accepts += 1,
            Some(ACCESS_REJECT) => self.rejects += 1,
            _ => {
                self.bad_replies += 1;
                return;
            }
        }
        self.latencies_us
            .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }
}

/// Runs the load and reports. Every worker stops at the deadline or when the shared request
/// budget is spent; a request in flight at the deadline still waits for its reply.
pub async fn run(config: LoadConfig) -> Result<LoadReport, LoadError> {
    if !config.target.ip().is_loopback() {
        return Err(LoadError::NotLoopback(config.target));
    }
    if config.credentials.is_empty() {
        return Err(LoadError::NoCredentials);
    }
    for credential in &config.credentials {
        check_credential(credential)?;
    }
    let concurrency = config.concurrency.max(1);
    let config = Arc::new(config);
    let mut budget = config.max_requests.unwrap_or(u64::MAX);
    if config.two_leg {
        budget = budget.min(config.credentials.len() as u64);
        if config.credentials.iter().any(|c| c.totp_secret.is_none()) {
            return Err(LoadError::BadCredential(
                "a two-leg credential without a secret".into(),
            ));
        }
    }
    let budget = Arc::new(AtomicU64::new(budget));
    let bind: SocketAddr = match config.source {
        Some(source) if source.is_loopback() => SocketAddr::new(source, 0),
        Some(source) => return Err(LoadError::NotLoopback(SocketAddr::new(source, 0))),
        None if config.target.is_ipv4() => SocketAddr::from(([127, 0, 0, 1], 0)),
        None => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0)),
    };
    let mut sockets = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let socket = tokio::net::UdpSocket::bind(bind).await?;
        socket.connect(config.target).await?;
        sockets.push(socket);
    }
    let start = Instant::now();
    let deadline = start + config.duration;
    let mut workers = tokio::task::JoinSet::new();
    let taken = Arc::new(AtomicU64::new(0));
    for (index, socket) in sockets.into_iter().enumerate() {
        let config = config.clone();
        let budget = budget.clone();
        if config.two_leg {
            workers.spawn(two_leg_worker(
                socket,
                config,
                budget,
                taken.clone(),
                deadline,
            ));
        } else {
            workers.spawn(worker(index, socket, config, budget, deadline));
        }
    }
    let mut total = WorkerTally::default();
    while let Some(joined) = workers.join_next().await {
        let tally = joined.map_err(|e| LoadError::Io(std::io::Error::other(e)))??;
        total.sent += tally.sent;
        total.accepts += tally.accepts;
        total.rejects += tally.rejects;
        total.timeouts += tally.timeouts;
        total.bad_replies += tally.bad_replies;
        total.latencies_us.extend(tally.latencies_us);
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    total.latencies_us.sort_unstable();
    Ok(LoadReport {
        sent: total.sent,
        accepts: total.accepts,
        rejects: total.rejects,
        timeouts: total.timeouts,
        bad_replies: total.bad_replies,
        elapsed_seconds: round3(elapsed),
        requests_per_second: round3((total.accepts + total.rejects) as f64 / elapsed),
        accepts_per_second: round3(total.accepts as f64 / elapsed),
        latency_ms: percentiles(&total.latencies_us),
        concurrency,
    })
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn percentiles(sorted_us: &[u64]) -> Percentiles {
    if sorted_us.is_empty() {
        return Percentiles::default();
    }
    let at = |q: f64| {
        let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
        sorted_us.get(rank - 1).copied().unwrap_or(0) as f64 / 1000.0
    };
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
        p99_9: at(0.999),
        max: sorted_us.last().copied().unwrap_or(0) as f64 / 1000.0,
    }
}

async fn worker(
    index: usize,
    socket: tokio::net::UdpSocket,
    config: Arc<LoadConfig>,
    budget: Arc<AtomicU64>,
    deadline: Instant,
) -> Result<WorkerTally, LoadError> {
    let mut tally = WorkerTally::default();
    let mut next = index % config.credentials.len();
    let mut identifier = (index % 256) as u8;
    let mut buf = vec![0u8; 4096];
    let mut rng = rand::rngs::StdRng::from_entropy();
    while Instant::now() < deadline {
        if budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(1)
            })
            .is_err()
        {
            break;
        }
        let Some(credential) = config.credentials.get(next) else {
            break;
        };
        next = (next + config.concurrency.max(1)) % config.credentials.len();
        identifier = identifier.wrapping_add(1);
        let mut authenticator = [0u8; 16];
        rng.fill_bytes(&mut authenticator);
        let packet = access_request(identifier, authenticator, credential, &config.secret);
        let started = Instant::now();
        tally.sent += 1;
        let Some(len) = exchange(&socket, &packet, identifier, config.timeout, &mut buf).await?
        else {
            tally.timeouts += 1;
            continue;
        };
        let reply = buf.get(..len).unwrap_or_default();
        tally.record(reply, identifier, &authenticator, &config.secret, started);
    }
    Ok(tally)
}

/// Sends `packet` and waits for the reply to `identifier` (late replies to earlier requests
/// are skipped); `None` on timeout.
async fn exchange(
    socket: &tokio::net::UdpSocket,
    packet: &[u8],
    identifier: u8,
    timeout: Duration,
    buf: &mut [u8],
) -> Result<Option<usize>, LoadError> {
    let sent_at = Instant::now();
    socket.send(packet).await?;
    loop {
        let remaining = timeout.saturating_sub(sent_at.elapsed());
        match tokio::time::timeout(remaining, socket.recv(buf)).await {
            Err(_) => return Ok(None),
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(len)) if len >= 2 && buf.get(1) != Some(&identifier) => continue,
            Ok(Ok(len)) => return Ok(Some(len)),
        }
    }
}

/// Two-leg sign-ins: password → Access-Challenge → code with State → Access-Accept. `sent`
/// counts sign-ins begun, `accepts` sign-ins completed; latency is of both legs.
async fn two_leg_worker(
    socket: tokio::net::UdpSocket,
    config: Arc<LoadConfig>,
    budget: Arc<AtomicU64>,
    taken: Arc<AtomicU64>,
    deadline: Instant,
) -> Result<WorkerTally, LoadError> {
    let mut tally = WorkerTally::default();
    let mut identifier = 0u8;
    let mut buf = vec![0u8; 4096];
    let mut rng = rand::rngs::StdRng::from_entropy();
    while Instant::now() < deadline {
        if budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(1)
            })
            .is_err()
        {
            break;
        }
        let index = taken.fetch_add(1, Ordering::Relaxed) as usize;
        let Some(credential) = config.credentials.get(index % config.credentials.len()) else {
            break;
        };
        let started = Instant::now();
        tally.sent += 1;
        identifier = identifier.wrapping_add(1);
        let mut authenticator = [0u8; 16];
        rng.fill_bytes(&mut authenticator);
        let packet = access_request(identifier, authenticator, credential, &config.secret);
        let Some(len) = exchange(&socket, &packet, identifier, config.timeout, &mut buf).await?
        else {
            tally.timeouts += 1;
            continue;
        };
        let reply = buf.get(..len).unwrap_or_default();
        match verify_reply(reply, identifier, &authenticator, &config.secret) {
            Some(ACCESS_CHALLENGE) => {}
            Some(ACCESS_REJECT) => {
                tally.rejects += 1;
                continue;
            }
            _ => {
                tally.bad_replies += 1;
                continue;
            }
        }
        let Some(state) = attribute(reply, STATE) else {
            tally.bad_replies += 1;
            continue;
        };
        let answer = Credential {
            user: credential.user.clone(),
            password: next_step_code(credential.totp_secret.as_deref().unwrap_or_default()),
            totp_secret: None,
        };
        identifier = identifier.wrapping_add(1);
        rng.fill_bytes(&mut authenticator);
        let packet =
            access_request_with_state(identifier, authenticator, &answer, &config.secret, &state);
        let Some(len) = exchange(&socket, &packet, identifier, config.timeout, &mut buf).await?
        else {
            tally.timeouts += 1;
            continue;
        };
        let reply = buf.get(..len).unwrap_or_default();
        tally.record(reply, identifier, &authenticator, &config.secret, started);
    }
    Ok(tally)
}

/// The value of the first attribute `kind` of a (verified) reply.
fn attribute(reply: &[u8], kind: u8) -> Option<Vec<u8>> {
    let mut offset = 20;
    while offset + 2 <= reply.len() {
        let len = usize::from(reply[offset + 1]);
        if len < 2 || offset + len > reply.len() {
            return None;
        }
        if reply[offset] == kind {
            return Some(reply[offset + 2..offset + len].to_vec());
        }
        offset += len;
    }
    None
}

fn push_attribute(packet: &mut Vec<u8>, kind: u8, value: &[u8]) {
    packet.push(kind);
    packet.push((value.len() + 2) as u8);
    packet.extend_from_slice(value);
}

/// RFC 2865 §5.2: the password padded to 16-octet blocks, each XORed with
/// MD5(secret + previous block), the first with the Request Authenticator.
fn hide_password(password: &[u8], secret: &[u8], authenticator: &[u8; 16]) -> Vec<u8> {
    let padded_len = password.len().div_ceil(16).max(1) * 16;
    let mut out = password.to_vec();
    out.resize(padded_len, 0);
    let mut previous: [u8; 16] = *authenticator;
    for block in out.chunks_mut(16) {
        let mut md5 = Md5::new();
        md5.update(secret);
        md5.update(previous);
        let key = md5.finalize();
        for (byte, k) in block.iter_mut().zip(key.iter()) {
            *byte ^= k;
        }
        let mut next = [0u8; 16];
        next.copy_from_slice(block);
        previous = next;
    }
    out
}

fn hmac_md5(secret: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let mut out = [0u8; 16];
    if let Ok(mut mac) = Hmac::<Md5>::new_from_slice(secret) {
        for part in parts {
            mac.update(part);
        }
        out.copy_from_slice(&mac.finalize().into_bytes());
    }
    out
}

/// An Access-Request: User-Name, User-Password, NAS-IP-Address 127.0.0.1 and a
/// Message-Authenticator (first attribute, as BlastRADIUS mitigations recommend).
pub fn access_request(
    identifier: u8,
    authenticator: [u8; 16],
    credential: &Credential,
    secret: &[u8],
) -> Vec<u8> {
    access_request_with_state(identifier, authenticator, credential, secret, &[])
}

/// [`access_request`] with a State attribute (the answer to an Access-Challenge); an empty
/// `state` adds none.
pub fn access_request_with_state(
    identifier: u8,
    authenticator: [u8; 16],
    credential: &Credential,
    secret: &[u8],
    state: &[u8],
) -> Vec<u8> {
    let mut packet = Vec::with_capacity(128);
    packet.extend_from_slice(&[ACCESS_REQUEST, identifier, 0, 0]);
    packet.extend_from_slice(&authenticator);
    let ma_offset = packet.len() + 2;
    push_attribute(&mut packet, MESSAGE_AUTHENTICATOR, &[0u8; 16]);
    push_attribute(&mut packet, USER_NAME, credential.user.as_bytes());
    let hidden = hide_password(credential.password.as_bytes(), secret, &authenticator);
    push_attribute(&mut packet, USER_PASSWORD, &hidden);
    push_attribute(&mut packet, NAS_IP_ADDRESS, &[127, 0, 0, 1]);
    if !state.is_empty() {
        push_attribute(&mut packet, STATE, state);
    }
    let len = packet.len() as u16;
    packet[2..4].copy_from_slice(&len.to_be_bytes());
    let ma = hmac_md5(secret, &[&packet]);
    packet[ma_offset..ma_offset + 16].copy_from_slice(&ma);
    packet
}

/// The reply's code if it answers `identifier`, its Response Authenticator verifies
/// (RFC 2865 §3) and its Message-Authenticator, when present, verifies (RFC 3579 §3.2).
pub fn verify_reply(
    reply: &[u8],
    identifier: u8,
    request_authenticator: &[u8; 16],
    secret: &[u8],
) -> Option<u8> {
    let header = reply.get(..20)?;
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if length < 20 || length > reply.len() || header[1] != identifier {
        return None;
    }
    let reply = reply.get(..length)?;
    let attributes = reply.get(20..)?;
    let mut md5 = Md5::new();
    md5.update(reply.get(..4)?);
    md5.update(request_authenticator);
    md5.update(attributes);
    md5.update(secret);
    if md5.finalize().as_slice() != reply.get(4..20)? {
        return None;
    }
    let mut offset = 20;
    while offset + 2 <= length {
        let kind = reply[offset];
        let len = usize::from(reply[offset + 1]);
        if len < 2 || offset + len > length {
            return None;
        }
        if kind == MESSAGE_AUTHENTICATOR {
            if len != 18 {
                return None;
            }
            let mut copy = reply.to_vec();
            copy[4..20].copy_from_slice(request_authenticator);
            copy[offset + 2..offset + 18].fill(0);
            if hmac_md5(secret, &[&copy]) != reply[offset + 2..offset + 18] {
                return None;
            }
        }
        offset += len;
    }
    Some(header[0])
}
