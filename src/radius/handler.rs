//! The RADIUS request handler: one datagram in, at most one reply out, no socket. It ties
//! the sans-io core (client lookup, [`parse_request`], the RFC 5080 [`ReplyCache`],
//! [`encode_reply`]) to the shared sign-in decision ([`crate::signin`]):
//!
//! - unknown source → dropped silently, counted;
//! - validation failure → dropped silently, counted, logged at a bounded rate;
//! - a retransmission → the cached reply, byte for byte, without processing it again; a
//!   retransmission of a request still in progress → dropped;
//! - Status-Server → Access-Accept (RFC 5997), rate-limited per client;
//! - PAP → the sign-in decision: password → Access-Accept with the reply attributes mapped
//!   from the user's groups; TAP → Access-Reject with the `tap_not_supported_radius`
//!   Reply-Message; anything else → Access-Reject; directory unavailable → no reply (the NAS
//!   fails over) or Access-Reject, as configured, and nothing cached so a retry is
//!   processed again;
//! - CHAP, MS-CHAP, EAP or no credential → Access-Reject saying only PAP is supported;
//! - a client with `second_factor = "totp"`: the password, then the authenticator-app code
//!   ([`crate::signin::second_factor`]): in challenge mode a correct password gets
//!   Access-Challenge (State, Reply-Message, Message-Authenticator, sent at once) and the
//!   request carrying that State is the answer; in append mode the code follows the password.
//!   Both legs are ordinary requests for the reply cache, so each leg's retransmission gets
//!   its cached reply. Counted in `tapd_radius_challenges_total{result}` (`issued`, and the
//!   answers `accepted` / `rejected`).
//!
//! Every answer and every drop is counted in the shared [`Metrics`] registry:
//! `tapd_radius_requests_total{result,reason}` (reason = the sign-in reason code),
//! `tapd_radius_dropped_total{cause}`, `tapd_radius_retransmissions_replayed_total`.
//!
//! The reloadable part ([`RadiusSettings`]: clients, reply attributes, unavailable
//! behaviour) sits behind a lock holding an `Arc`, swapped whole by
//! [`RadiusHandler::update_settings`].
//!
//! May depend on: the RADIUS core (this module's siblings), `signin`, `model`, `metrics`,
//! `config` (only to convert the validated `[radius]` section).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::json;

use super::metrics::{RadiusChallengeResult, RadiusDropCause, RadiusMetrics, RadiusOutcome};
use super::{
    encode_reply, find_client, parse_request, AuthKind, CacheKey, CacheLookup, Decision,
    DropReason, RadiusClient, RadiusError, ReplyAttribute, ReplyCache, ReplyCacheConfig, Request,
    RequestKind, SharedSecret,
};
use crate::config::{self, DirectoryUnavailable, SecondFactorMode, TotpRequirement};
use crate::group_ref::GroupIndex;
use crate::metrics::{Metrics, NoLabels};
use crate::model::GroupRef;
use crate::signin::{
    AttemptContext, RejectReason, SecondFactorOutcome, SignIn, SignInChannel, SignInOutcome,
};

/// The Reply-Message of an Access-Reject for CHAP, MS-CHAP, EAP or a missing credential.
pub const PAP_ONLY_MESSAGE: &str =
    "This RADIUS server supports only PAP (User-Password); CHAP, MS-CHAP and EAP are not supported.";

/// Warnings (malformed packets, unknown sources, directory unavailable) logged per
/// [`LOG_PERIOD`]; the rest are counted only.
const LOG_BURST: u32 = 10;
/// Period of the warning limit.
const LOG_PERIOD: Duration = Duration::from_secs(60);
/// Status-Server requests a client may send in a burst …
const STATUS_SERVER_BURST: f64 = 20.0;
/// … and per second after that (RFC 5997 §3: "SHOULD silently discard Status-Server
/// packets if they determine that a client is sending too many").
const STATUS_SERVER_PER_SECOND: f64 = 5.0;

/// Attributes an Access-Accept carries for members of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyAttributeRule {
    /// Group reference (id, DN or a unique cn; see [`crate::group_ref`]).
    pub group: String,
    /// Class value, if any.
    pub class: Option<Vec<u8>>,
    /// Filter-Id value, if any.
    pub filter_id: Option<String>,
}

/// The reloadable RADIUS settings.
#[derive(Clone, Debug)]
pub struct RadiusSettings {
    /// Known clients.
    pub clients: Vec<RadiusClient>,
    /// What a request gets while the directory is unavailable.
    pub directory_unavailable: DirectoryUnavailable,
    /// Group → reply attribute rules, in configuration order.
    pub reply_attributes: Vec<ReplyAttributeRule>,
    /// Every Access-Reject leaves no earlier than this long after its request arrived
    /// (`[radius] reject_delay`); zero: at once.
    pub reject_delay: Duration,
    /// Clients (by name) with `second_factor = "totp"`, and how they ask for the code.
    pub second_factors: HashMap<String, TotpRequirement>,
    /// How long an Access-Challenge's State is valid (`[radius] challenge_lifetime`).
    pub challenge_lifetime: Duration,
}

impl RadiusSettings {
    /// Converts the validated `[radius]` section.
    pub fn from_config(radius: &config::RadiusConfig) -> Result<Self, RadiusError> {
        let clients = radius
            .clients
            .iter()
            .map(|client| {
                let network = ipnet::IpNet::new(client.address.addr(), client.address.prefix_len())
                    .map_err(|_| RadiusError::BadClientNetwork(client.address.to_string()))?;
                Ok(RadiusClient {
                    name: client.name.clone(),
                    network,
                    secret: SharedSecret::new(client.secret.as_bytes().to_vec())?,
                    require_message_authenticator: client.require_message_authenticator,
                })
            })
            .collect::<Result<Vec<_>, RadiusError>>()?;
        let reply_attributes = radius
            .reply_attributes
            .iter()
            .map(|rule| ReplyAttributeRule {
                group: rule.group.clone(),
                class: rule.class.as_ref().map(|c| c.as_bytes().to_vec()),
                filter_id: rule.filter_id.clone(),
            })
            .collect();
        let second_factors = radius
            .clients
            .iter()
            .filter_map(|client| {
                client
                    .second_factor
                    .clone()
                    .map(|requirement| (client.name.clone(), requirement))
            })
            .collect();
        Ok(RadiusSettings {
            clients,
            directory_unavailable: radius.directory_unavailable,
            reply_attributes,
            reject_delay: radius.reject_delay,
            second_factors,
            challenge_lifetime: radius.challenge_lifetime,
        })
    }

    /// The reply attributes for a user in `groups`, in rule order; `index` knows every synced
    /// group.
    pub fn attributes_for(&self, groups: &[GroupRef], index: &GroupIndex) -> Vec<ReplyAttribute> {
        let mut attributes = Vec::new();
        for rule in &self.reply_attributes {
            let reference = index.resolve(&rule.group);
            if !groups.iter().any(|g| reference.names(index, &g.id, &g.dn)) {
                continue;
            }
            if let Some(class) = &rule.class {
                attributes.push(ReplyAttribute::Class(class.clone()));
            }
            if let Some(filter_id) = &rule.filter_id {
                attributes.push(ReplyAttribute::FilterId(filter_id.clone()));
            }
        }
        attributes
    }
}

/// Lets `burst` events through per `period`, then counts what it held back.
#[derive(Debug)]
struct LogLimiter {
    period_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// Whether to log now; when a new period begins, also how many were suppressed in the
    /// previous one.
    fn allow(&mut self, now: Instant) -> (bool, u64) {
        let mut suppressed_before = 0;
        let expired = self
            .period_start
            .is_none_or(|start| now.duration_since(start) >= LOG_PERIOD);
        if expired {
            suppressed_before = self.suppressed;
            self.period_start = Some(now);
            self.logged = 0;
            self.suppressed = 0;
        }
        if self.logged < LOG_BURST {
            self.logged += 1;
            (true, suppressed_before)
        } else {
            self.suppressed += 1;
            (false, suppressed_before)
        }
    }
}

/// A token bucket per client name for Status-Server.
#[derive(Debug, Default)]
struct StatusServerLimiter {
    buckets: HashMap<String, (f64, Instant)>,
}

impl StatusServerLimiter {
    fn allow(&mut self, client: &str, now: Instant) -> bool {
        let (tokens, last) = self
            .buckets
            .entry(client.to_owned())
            .or_insert((STATUS_SERVER_BURST, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * STATUS_SERVER_PER_SECOND;
        *tokens = (*tokens + refill).min(STATUS_SERVER_BURST);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What a request gets: a reply decision with the `tapd_radius_requests_total` series it
/// counts in (`None`: an Access-Challenge, counted in `tapd_radius_challenges_total`), or no
/// reply and why.
type Answer = Result<(Decision, Option<RadiusOutcome>), RadiusDropCause>;

/// A reply decided but not sent yet: an Access-Reject is held until `not_before`
/// (`reject_delay` after the request arrived). While it is held its request stays "in
/// flight" in the reply cache, so a retransmission is dropped rather than answered early;
/// [`RadiusHandler::release`] files it in the cache as it leaves.
#[derive(Debug)]
pub struct PendingReply {
    /// The reply's bytes.
    bytes: Vec<u8>,
    /// Cache entry to complete when the reply leaves (`None`: a replay from the cache).
    key: Option<CacheKey>,
    /// Earliest time the reply may leave; `None`: at once.
    not_before: Option<Instant>,
}

impl PendingReply {
    /// When the reply may leave (`None`: now).
    pub fn not_before(&self) -> Option<Instant> {
        self.not_before
    }
}

/// The handler; see the module documentation. Share it in an `Arc`.
pub struct RadiusHandler {
    settings: RwLock<Arc<RadiusSettings>>,
    signin: Arc<SignIn>,
    cache: Mutex<ReplyCache>,
    metrics: Arc<RadiusMetrics>,
    log_limiter: Mutex<LogLimiter>,
    status_server: Mutex<StatusServerLimiter>,
}

impl RadiusHandler {
    /// A handler over `settings`, deciding with `signin`, counting into `metrics`.
    pub fn new(
        settings: RadiusSettings,
        signin: Arc<SignIn>,
        cache: ReplyCacheConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        for client in settings.clients.iter() {
            warn_about_client(client);
        }
        RadiusHandler {
            settings: RwLock::new(Arc::new(settings)),
            signin,
            cache: Mutex::new(ReplyCache::new(cache)),
            metrics: metrics.group(),
            log_limiter: Mutex::new(LogLimiter {
                period_start: None,
                logged: 0,
                suppressed: 0,
            }),
            status_server: Mutex::new(StatusServerLimiter::default()),
        }
    }

    /// Replaces clients, reply attributes and the unavailable behaviour (SIGHUP).
    pub fn update_settings(&self, settings: RadiusSettings) {
        for client in settings.clients.iter() {
            warn_about_client(client);
        }
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(settings);
    }

    /// The registry this handler counts into (the socket loop counts there too).
    pub fn metrics(&self) -> &Arc<RadiusMetrics> {
        &self.metrics
    }

    fn settings(&self) -> Arc<RadiusSettings> {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether a client covers `source` (the socket loop drops the rest before spawning
    /// any work; they are counted and logged at a bounded rate here).
    pub fn admits(&self, source: IpAddr, now: Instant) -> bool {
        let known = find_client(&self.settings().clients, source).is_some();
        if !known {
            self.unknown_client(source, now);
        }
        known
    }

    fn unknown_client(&self, source: IpAddr, now: Instant) {
        self.metrics.dropped.inc(RadiusDropCause::UnknownClient);
        self.log_limited(now, || {
            format!(
                "RADIUS: ignoring a packet from {source}: no [[radius.clients]] entry covers it"
            )
        });
    }

    /// Logs a warning unless too many were logged lately (malformed packets, unknown
    /// sources and an unavailable directory can all be driven by a flood).
    fn log_limited(&self, now: Instant, message: impl FnOnce() -> String) {
        let (allowed, suppressed) = self
            .log_limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow(now);
        if suppressed > 0 {
            log::warn!("RADIUS: {suppressed} more warnings of the last minute were not logged");
        }
        if allowed {
            log::warn!("{}", message());
        }
    }

    /// Handles one datagram that arrived on `receiver` from `source` at `now`; returns the
    /// reply to send, if any, after holding an Access-Reject for `reject_delay` (a tokio
    /// timer: no thread waits).
    pub async fn handle(
        &self,
        receiver: SocketAddr,
        source: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Option<Vec<u8>> {
        let pending = self.prepare(receiver, source, datagram, now).await?;
        if let Some(not_before) = pending.not_before {
            tokio::time::sleep_until(not_before.into()).await;
        }
        Some(self.release(pending))
    }

    /// Files a held reply in the reply cache (retransmissions get it from now on) and
    /// returns its bytes, to be sent at once.
    pub fn release(&self, pending: PendingReply) -> Vec<u8> {
        if let Some(key) = pending.key {
            self.cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .complete(&key, pending.bytes.clone(), Instant::now());
        }
        pending.bytes
    }

    /// Gives up on a held reply without sending it (too many held at once): the request
    /// leaves the reply cache, so the NAS's retransmission is decided anew.
    pub fn abandon(&self, pending: PendingReply) {
        if let Some(key) = pending.key {
            self.cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .abandon(&key);
        }
    }

    /// Decides one datagram that arrived on `receiver` from `source` at `now`, without
    /// waiting out the reject delay: the reply to send (when [`PendingReply::not_before`]
    /// says so, then through [`RadiusHandler::release`]), if any. The socket loop holds its
    /// concurrency permit only for this part.
    pub async fn prepare(
        &self,
        receiver: SocketAddr,
        source: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Option<PendingReply> {
        let settings = self.settings();
        let Some(client) = find_client(&settings.clients, source.ip()) else {
            self.unknown_client(source.ip(), now);
            return None;
        };
        let request = match parse_request(datagram, client) {
            Ok(request) => request,
            Err(reason) => {
                self.metrics.dropped.inc(RadiusDropCause::Invalid(reason));
                self.log_drop(client, source, reason, now);
                return None;
            }
        };
        let key = CacheKey::new(receiver, source, &request);
        let lookup = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(&key, now);
        match lookup {
            CacheLookup::Replay(reply) => {
                self.metrics.replayed.inc(NoLabels);
                return Some(PendingReply {
                    bytes: reply,
                    key: None,
                    not_before: None,
                });
            }
            CacheLookup::InFlight => {
                self.metrics.dropped.inc(RadiusDropCause::DuplicateInFlight);
                return None;
            }
            CacheLookup::Miss => {}
        }

        let decision = match request.code {
            RequestKind::StatusServer => self.status_server(client, now),
            RequestKind::AccessRequest => {
                self.access_request(&settings, client, source, &request, now)
                    .await
            }
        };
        let (decision, outcome) = match decision {
            Ok(answer) => answer,
            Err(cause) => {
                self.metrics.dropped.inc(cause);
                self.cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .abandon(&key);
                return None;
            }
        };
        match encode_reply(&request, &decision, &client.secret) {
            Ok(reply) => {
                if let Some(outcome) = outcome {
                    self.metrics.requests.inc(outcome);
                }
                // Rejects leave at arrival + reject_delay whatever the decision cost, so
                // an unknown, a disabled and a known user answer at the same time.
                let not_before = match decision {
                    Decision::Reject { .. } if !settings.reject_delay.is_zero() => {
                        Some(now + settings.reject_delay)
                    }
                    _ => None,
                };
                Some(PendingReply {
                    bytes: reply,
                    key: Some(key),
                    not_before,
                })
            }
            Err(e) => {
                self.metrics.dropped.inc(RadiusDropCause::EncodeFailed);
                log::error!(
                    "RADIUS: could not encode the reply to {source} (client {}): {e}",
                    client.name
                );
                self.cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .abandon(&key);
                None
            }
        }
    }

    fn status_server(&self, client: &RadiusClient, now: Instant) -> Answer {
        let allowed = self
            .status_server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow(&client.name, now);
        if !allowed {
            return Err(RadiusDropCause::StatusServerRateLimited);
        }
        // encode_reply ignores the decision for Status-Server: a bare Access-Accept.
        let decision = Decision::Accept {
            attributes: Vec::new(),
        };
        Ok((decision, Some(RadiusOutcome::StatusServer)))
    }

    async fn access_request(
        &self,
        settings: &RadiusSettings,
        client: &RadiusClient,
        source: SocketAddr,
        request: &Request,
        now: Instant,
    ) -> Answer {
        let context = attempt_context(client, source, request);
        let username = request.user_name.as_deref().unwrap_or_default();
        let second_factor = settings.second_factors.get(&client.name);
        let station = request.calling_station_id.as_deref();
        let mut challenge_answer = false;
        let outcome = match &request.auth {
            AuthKind::Pap(password) => match (std::str::from_utf8(password), second_factor) {
                (Ok(password), None) => {
                    self.signin.authenticate(&context, username, password).await
                }
                (Ok(answer), Some(requirement))
                    if requirement.mode == SecondFactorMode::Challenge
                        && request.state.is_some() =>
                {
                    challenge_answer = true;
                    let state = request.state.as_deref().unwrap_or_default();
                    self.signin
                        .answer_challenge(&context, username, state, answer, station)
                        .await
                }
                (Ok(password), Some(requirement)) => {
                    let outcome = self
                        .signin
                        .sign_in_with_second_factor(
                            &context,
                            username,
                            password,
                            requirement,
                            station,
                            settings.challenge_lifetime,
                        )
                        .await;
                    match outcome {
                        SecondFactorOutcome::Decided(outcome) => outcome,
                        SecondFactorOutcome::Challenge { state, message } => {
                            self.metrics.challenges.inc(RadiusChallengeResult::Issued);
                            let decision = Decision::Challenge {
                                state,
                                reply_message: message,
                            };
                            return Ok((decision, None));
                        }
                    }
                }
                (Err(_), _) => {
                    self.signin
                        .refuse(
                            &context,
                            username,
                            RejectReason::InvalidCredentials,
                            "Password",
                        )
                        .await
                }
            },
            AuthKind::Unsupported(method) => {
                self.signin
                    .refuse(&context, username, RejectReason::UnsupportedMethod, method)
                    .await
            }
            AuthKind::None => {
                self.signin
                    .refuse(&context, username, RejectReason::UnsupportedMethod, "none")
                    .await
            }
        };
        if challenge_answer && !matches!(outcome, SignInOutcome::Unavailable { .. }) {
            let result = match outcome {
                SignInOutcome::Accept { .. } => RadiusChallengeResult::Accepted,
                _ => RadiusChallengeResult::Rejected,
            };
            self.metrics.challenges.inc(result);
        }
        match outcome {
            SignInOutcome::Accept { groups, .. } => {
                let decision = Decision::Accept {
                    attributes: settings.attributes_for(&groups, &self.signin.group_index()),
                };
                Ok((decision, Some(RadiusOutcome::Accept)))
            }
            SignInOutcome::Reject { reason, message } => {
                let reply_message = match reason {
                    RejectReason::TapNotSupported | RejectReason::SecondFactorMissing => message,
                    RejectReason::UnsupportedMethod => Some(PAP_ONLY_MESSAGE.to_owned()),
                    _ => None,
                };
                let decision = Decision::Reject { reply_message };
                Ok((decision, Some(RadiusOutcome::Reject(reason))))
            }
            SignInOutcome::Unavailable { reason } => match settings.directory_unavailable {
                DirectoryUnavailable::Drop => {
                    self.log_limited(now, || {
                        format!(
                            "RADIUS: no reply to {source} (client {}): {}; the NAS may retry or fail over",
                            client.name,
                            reason.code()
                        )
                    });
                    Err(RadiusDropCause::unavailable(reason))
                }
                DirectoryUnavailable::Reject => {
                    self.log_limited(now, || {
                        format!(
                            "RADIUS: rejecting the request from {source} (client {}): {}",
                            client.name,
                            reason.code()
                        )
                    });
                    let decision = Decision::Reject {
                        reply_message: None,
                    };
                    Ok((decision, Some(RadiusOutcome::Unavailable(reason))))
                }
            },
        }
    }

    fn log_drop(
        &self,
        client: &RadiusClient,
        source: SocketAddr,
        reason: DropReason,
        now: Instant,
    ) {
        self.log_limited(now, || {
            format!(
                "RADIUS: dropped a packet from {source} (client {}): {reason} [{}]",
                client.name,
                reason.as_str()
            )
        });
    }
}

fn attempt_context(client: &RadiusClient, source: SocketAddr, request: &Request) -> AttemptContext {
    let mut details = serde_json::Map::new();
    if let Some(nas) = &request.nas_identifier {
        details.insert("nasIdentifier".into(), json!(nas));
    }
    if let Some(ip) = request.nas_ip {
        details.insert("nasIpAddress".into(), json!(ip.to_string()));
    }
    if let Some(station) = &request.calling_station_id {
        details.insert("callingStationId".into(), json!(station));
    }
    AttemptContext {
        channel: SignInChannel::Radius,
        client: client.name.clone(),
        source: source.to_string(),
        details,
    }
}

fn warn_about_client(client: &RadiusClient) {
    if !client.require_message_authenticator {
        log::warn!(
            "RADIUS client {} ({}) may omit Message-Authenticator: UPGRADE IT, the network is exposed to BlastRADIUS (CVE-2024-3596); its requests with Proxy-State but no Message-Authenticator are still dropped",
            client.name,
            client.network
        );
    }
}

#[cfg(test)]
mod tests;
