//! The federation adapter (AD FS-adapter style, DESIGN §3): an identity provider posts a
//! user's credential and learns whether it is the directory password. A Temporary Access
//! Pass is refused with `tap_not_supported_federation` and its documented message, and is
//! never consumed; the decision itself is [`crate::signin`]'s, shared with RADIUS.
//!
//! - `POST /federation/v1/authenticate`, bearer token per relying party (compared as
//!   SHA-256 digests in constant time), body `{"userPrincipalName", "credential",
//!   "method"?}` (unknown fields refused, at most [`MAX_BODY_BYTES`]):
//!   200 accepted · 403 TAP · 401 anything else · 401 + `WWW-Authenticate` for a missing or
//!   wrong token · 400 malformed body · 413 too large · 503 directory unavailable.
//! - `GET /federation/v1/metadata`: what the endpoint supports (password only; TAP not).
//!
//! A rejection (401 or 403 for a credential) is answered no earlier than `[federation]
//! reject_delay` (default 1 s) after the request arrived, on a tokio timer, so the time to
//! answer does not tell an unknown from a disabled or a known user.
//!
//! Every authenticate request counts once in `tapd_federation_requests_total{result,reason}`
//! (a refused TAP also counts in `tapd_tap_rejections_total`, through `signin`).
//!
//! [`router`] has no fallback so it can be merged into the web site's router; [`serve`]
//! runs it on its own listener (plain HTTP, loopback or behind a TLS proxy) with JSON 404s.
//!
//! May depend on: `signin`, `config` (relying parties), `model`, `metrics`; axum.

pub mod metrics;

pub use metrics::{FederationMetrics, FederationOutcome, FederationRefusal};

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{HttpLimits, RelyingParty};
use crate::http_listener::ClientAddr;
use crate::metrics::Metrics;
use crate::signin::{AttemptContext, RejectReason, SignIn, SignInChannel, SignInOutcome};

/// Path of the authenticate endpoint.
pub const AUTHENTICATE_PATH: &str = "/federation/v1/authenticate";
/// Path of the metadata endpoint.
pub const METADATA_PATH: &str = "/federation/v1/metadata";
/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// The `WWW-Authenticate` challenge for a missing or wrong bearer token.
pub const BEARER_CHALLENGE: &str = "Bearer realm=\"tapd-federation\"";
/// The `method` value that names a Temporary Access Pass.
pub const TAP_METHOD: &str = "temporaryAccessPass";
/// The `method` value that names the directory password (the default).
pub const PASSWORD_METHOD: &str = "password";

/// Errors of the federation listener.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// The HTTP server stopped with an I/O error.
    #[error("federation listener failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A relying party as the endpoint knows it: its name and the digest of its token.
#[derive(Clone)]
struct Party {
    name: String,
    token_digest: [u8; 32],
}

/// What the handlers share; build one with [`FederationState::new`].
pub struct FederationState {
    signin: Arc<SignIn>,
    parties: RwLock<Arc<Vec<Party>>>,
    metrics: Arc<FederationMetrics>,
    /// `[federation] reject_delay`: a rejection (401, 403) leaves no earlier than this long
    /// after its request arrived.
    reject_delay: RwLock<Duration>,
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn parties(relying_parties: &[RelyingParty]) -> Arc<Vec<Party>> {
    Arc::new(
        relying_parties
            .iter()
            .map(|party| Party {
                name: party.name.clone(),
                token_digest: digest(party.token.as_bytes()),
            })
            .collect(),
    )
}

impl FederationState {
    /// State deciding with `signin` for the configured relying parties, counting requests
    /// into `metrics`.
    pub fn new(
        signin: Arc<SignIn>,
        relying_parties: &[RelyingParty],
        metrics: Arc<Metrics>,
    ) -> Self {
        FederationState {
            signin,
            parties: RwLock::new(parties(relying_parties)),
            metrics: metrics.group(),
            reject_delay: RwLock::new(Duration::ZERO),
        }
    }

    /// Sets `[federation] reject_delay` (also on SIGHUP); zero answers rejections at once.
    pub fn set_reject_delay(&self, delay: Duration) {
        *self.reject_delay.write().unwrap_or_else(|e| e.into_inner()) = delay;
    }

    fn reject_delay(&self) -> Duration {
        *self.reject_delay.read().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, outcome: FederationOutcome) {
        self.metrics.requests.inc(outcome);
    }

    /// Replaces the relying parties (SIGHUP).
    pub fn update_relying_parties(&self, relying_parties: &[RelyingParty]) {
        *self.parties.write().unwrap_or_else(|e| e.into_inner()) = parties(relying_parties);
    }

    /// The relying party presenting `token`. Every party's digest is compared, in constant
    /// time, whatever matches.
    fn party_for(&self, token: &[u8]) -> Option<String> {
        let presented = digest(token);
        let parties = self
            .parties
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut found = None;
        for party in parties.iter() {
            if bool::from(party.token_digest.ct_eq(&presented)) {
                found = Some(party.name.clone());
            }
        }
        found
    }
}

/// The federation routes, without a fallback (so the web site can merge them).
pub fn router(state: Arc<FederationState>) -> Router {
    Router::new()
        .route(AUTHENTICATE_PATH, post(authenticate))
        .route(METADATA_PATH, get(metadata))
        .with_state(state)
}

/// Serves [`router`] on `listener` (plain HTTP) until `shutdown` fires, through the web
/// site's connection loop and its deadlines and caps (`limits`). The caller logs
/// `listening for federation on ADDR` (or `web`).
pub async fn serve(
    listener: TcpListener,
    state: Arc<FederationState>,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> Result<(), FederationError> {
    let app = router(state).fallback(not_found);
    crate::http_listener::serve(listener, None, app, limits, shutdown)
        .await
        .map_err(std::io::Error::other)?;
    Ok(())
}

/// `{"error":{"code","message"}}` with a status, plus optional extra top-level fields.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such path; the federation adapter serves POST /federation/v1/authenticate and GET /federation/v1/metadata",
    )
}

fn unauthorized(presented: bool) -> Response {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "a valid bearer token of a configured relying party is required",
    );
    let challenge = if presented {
        format!("{BEARER_CHALLENGE}, error=\"invalid_token\"")
    } else {
        BEARER_CHALLENGE.to_owned()
    };
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// The bearer token of the `Authorization` header, if there is exactly one.
fn bearer_token(headers: &HeaderMap) -> Option<&[u8]> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let bytes = value.as_bytes();
    let (scheme, token) = bytes.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// The body of `POST /federation/v1/authenticate`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AuthenticateRequest {
    user_principal_name: String,
    credential: String,
    #[serde(default)]
    method: Option<String>,
}

/// `POST /federation/v1/authenticate`: the relying party is known by its token before the
/// body is read ([`Caller`]), the body checked ([`Credentials`]), then the sign-in service
/// decides. A rejection leaves at arrival + `reject_delay` whatever the decision cost (a
/// timer, no thread waits), so unknown, disabled and known users answer alike.
async fn authenticate(
    State(state): State<Arc<FederationState>>,
    caller: Caller,
    Credentials(body): Credentials,
) -> Response {
    let arrived = caller.arrived;
    let outcome = match decide(&state, caller, body).await {
        Ok(outcome) => outcome,
        Err(refused) => return refused,
    };
    state.count(match &outcome {
        SignInOutcome::Accept { .. } => FederationOutcome::Accept,
        SignInOutcome::Reject { reason, .. } => FederationOutcome::Reject(*reason),
        SignInOutcome::Unavailable { reason } => FederationOutcome::Unavailable(*reason),
    });
    if matches!(outcome, SignInOutcome::Reject { .. }) {
        tokio::time::sleep_until((arrived + state.reject_delay()).into()).await;
    }
    outcome_response(outcome)
}

/// The sign-in service's decision on `body` for `caller`: the password method (the default)
/// is checked, a TAP refused with its documented message, any other method is a 400.
async fn decide(
    state: &FederationState,
    caller: Caller,
    body: AuthenticateRequest,
) -> Result<SignInOutcome, Response> {
    let context = AttemptContext {
        channel: SignInChannel::Federation,
        client: caller.party,
        source: caller.source,
        details: serde_json::Map::new(),
    };
    let name = &body.user_principal_name;
    match body.method.as_deref() {
        None | Some(PASSWORD_METHOD) => Ok(state
            .signin
            .authenticate(&context, name, &body.credential)
            .await),
        Some(TAP_METHOD) => Ok(state
            .signin
            .refuse(
                &context,
                name,
                RejectReason::TapNotSupported,
                "Temporary Access Pass",
            )
            .await),
        Some(other) => {
            state.count(FederationOutcome::Reject(RejectReason::UnsupportedMethod));
            Err(error(
                StatusCode::BAD_REQUEST,
                "unsupported_method",
                &format!("method {other:?} is not supported; use \"{PASSWORD_METHOD}\""),
            ))
        }
    }
}

/// The relying party calling (by its bearer token, compared before the body is read), where
/// from and when its request arrived. A missing or unknown token is refused with 401 and a
/// `WWW-Authenticate` challenge, and counted.
struct Caller {
    party: String,
    source: String,
    arrived: Instant,
}

impl FromRequestParts<Arc<FederationState>> for Caller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<FederationState>,
    ) -> Result<Self, Response> {
        let arrived = Instant::now();
        let source = parts
            .extensions
            .get::<ClientAddr>()
            .map(|ClientAddr(addr)| *addr)
            .or_else(|| {
                parts
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|info| info.0)
            })
            .map_or_else(|| "unknown".to_owned(), |addr| addr.to_string());
        let token = bearer_token(&parts.headers);
        match token.and_then(|token| state.party_for(token)) {
            Some(party) => Ok(Caller {
                party,
                source,
                arrived,
            }),
            None => {
                log::warn!(
                    "federation: refused a request from {source}: {} bearer token",
                    if token.is_some() { "unknown" } else { "no" }
                );
                state.count(FederationOutcome::Refused(FederationRefusal::InvalidToken));
                Err(unauthorized(token.is_some()))
            }
        }
    }
}

/// The authenticate body: at most [`MAX_BODY_BYTES`] of JSON naming a user and a credential.
/// Anything else is refused (413 or 400, naming the problem) and counted.
struct Credentials(AuthenticateRequest);

impl FromRequest<Arc<FederationState>> for Credentials {
    type Rejection = Response;

    async fn from_request(
        request: Request,
        state: &Arc<FederationState>,
    ) -> Result<Self, Response> {
        let refuse = |refusal, status, code: &str, message: &str| {
            state.count(FederationOutcome::Refused(refusal));
            error(status, code, message)
        };
        let Ok(body) = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES).await else {
            return Err(refuse(
                FederationRefusal::PayloadTooLarge,
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                &format!("the body must be JSON of at most {MAX_BODY_BYTES} bytes"),
            ));
        };
        let body: AuthenticateRequest = serde_json::from_slice(&body).map_err(|e| {
            refuse(
                FederationRefusal::BadRequest,
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!(
                    "the body must be {{\"userPrincipalName\": \"…\", \"credential\": \"…\", \"method\"?: \"password\"}}: {e}"
                ),
            )
        })?;
        if body.user_principal_name.trim().is_empty() {
            return Err(refuse(
                FederationRefusal::BadRequest,
                StatusCode::BAD_REQUEST,
                "bad_request",
                "userPrincipalName must not be empty",
            ));
        }
        Ok(Credentials(body))
    }
}

fn outcome_response(outcome: SignInOutcome) -> Response {
    match outcome {
        SignInOutcome::Accept { user, groups } => {
            let groups: Vec<Value> = groups
                .iter()
                .map(|g| json!({ "id": g.id, "displayName": g.display_name }))
                .collect();
            (
                StatusCode::OK,
                Json(json!({
                    "result": "accepted",
                    "userId": user.id,
                    "userPrincipalName": user.user_principal_name,
                    "displayName": user.display_name,
                    "groups": groups,
                })),
            )
                .into_response()
        }
        SignInOutcome::Reject {
            reason: RejectReason::TapNotSupported,
            message,
        } => {
            let code = SignInChannel::Federation.tap_failure().code();
            (
                StatusCode::FORBIDDEN,
                Json(json!({
                    "error": { "code": code, "message": message.unwrap_or_default() },
                    "reasonCode": code,
                })),
            )
                .into_response()
        }
        // Unknown user, disabled, throttled, wrong: one answer, the audit has the detail.
        SignInOutcome::Reject { .. } => (
            StatusCode::UNAUTHORIZED,
            Json(json!({
                "error": {
                    "code": "invalid_credentials",
                    "message": "The user name or credential is incorrect.",
                },
                "reasonCode": "invalid_credentials",
            })),
        )
            .into_response(),
        SignInOutcome::Unavailable { reason } => {
            let mut response = error(
                StatusCode::SERVICE_UNAVAILABLE,
                reason.code(),
                "the credential can't be checked right now; try again shortly",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            response
        }
    }
}

async fn metadata(State(state): State<Arc<FederationState>>) -> Response {
    let public_url = state.signin.settings().public_url;
    let tap = SignInChannel::Federation.tap_failure();
    let mut body = json!({
        "service": "tapd federation adapter",
        "version": env!("CARGO_PKG_VERSION"),
        "authenticateEndpoint": AUTHENTICATE_PATH,
        "authentication": "bearer",
        "supportedMethods": [PASSWORD_METHOD],
        "temporaryAccessPassSupported": false,
        "unsupportedMethods": [{
            "method": TAP_METHOD,
            "reasonCode": tap.code(),
            "message": state.signin.tap_message(SignInChannel::Federation),
        }],
    });
    if !public_url.is_empty() {
        body["webSignInUrl"] = json!(public_url);
    }
    let mut response = (StatusCode::OK, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests;
