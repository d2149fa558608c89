//! The admin API server: routes, request parsing that turns every bad input into a 4xx naming
//! the problem (through the one error-to-HTTP mapping in `admin::error`), and the Unix socket
//! with SO_PEERCRED identities.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

pub use super::error::ApiError;
use super::error::{method_not_allowed, not_found};
use super::graph;
use crate::model::AuditFilter;
use crate::service::{AdminSession, Caller, ServiceError, TapService};
use crate::service::{BulkRow, CreateTapRequest, PolicyPatch};

/// Largest request body accepted (the biggest legitimate one is a policy with many targets).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Largest bulk-issuance body: a list of the longest allowed length.
pub const MAX_BULK_BODY_BYTES: usize = 8 * 1024 * 1024;

const POLICY_PATH: &str =
    "/v1/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/temporaryAccessPass";

/// Errors setting up the socket.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Something that is not a socket is in the way.
    #[error("{0} exists and is not a socket; refusing to remove it")]
    NotASocket(PathBuf),
    /// The socket could not be created or given its permissions.
    #[error("admin socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The configured group does not exist.
    #[error("admin socket group {0:?} does not exist")]
    UnknownGroup(String),
}

/// How the socket file is created.
#[derive(Clone, Debug)]
pub struct SocketOptions {
    /// Path of the socket.
    pub path: PathBuf,
    /// Group to own the socket (mode 0660); `None` keeps the daemon's group.
    pub group: Option<String>,
}

/// Removes a stale socket, binds a new one and sets mode 0660 (and the group).
pub fn bind_socket(options: &SocketOptions) -> Result<UnixListener, SocketError> {
    let path = &options.path;
    let io = |source| SocketError::Io {
        path: path.clone(),
        source,
    };
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() && !parent.exists() {
            std::fs::create_dir_all(parent).map_err(io)?;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(io)?,
        Ok(_) => return Err(SocketError::NotASocket(path.clone())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    if let Some(group) = &options.group {
        let gid = nix::unistd::Group::from_name(group)
            .ok()
            .flatten()
            .ok_or_else(|| SocketError::UnknownGroup(group.clone()))?
            .gid;
        nix::unistd::chown(path, None, Some(gid)).map_err(|e| io(std::io::Error::from(e)))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
    Ok(listener)
}

/// The peer of an admin connection, as SO_PEERCRED reported it when the connection was made.
#[derive(Clone, Debug)]
struct Peer {
    uid: Option<u32>,
    pid: Option<i32>,
    /// The local account name of `uid`, looked up (getpwuid, possibly NSS) on the connection's
    /// first request and reused for the rest of it: the credentials are fixed per connection,
    /// and a keep-alive client then costs no lookup per request.
    local_username: Arc<tokio::sync::OnceCell<Option<String>>>,
}

impl Connected<axum::serve::IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, UnixListener>) -> Self {
        Peer::of(stream.io())
    }
}

impl Peer {
    fn of(stream: &tokio::net::UnixStream) -> Self {
        match stream.peer_cred() {
            Ok(cred) => Peer {
                uid: Some(cred.uid()),
                pid: cred.pid(),
                local_username: Arc::default(),
            },
            Err(e) => {
                log::warn!("admin socket: could not read peer credentials: {e}");
                Peer {
                    uid: None,
                    pid: None,
                    local_username: Arc::default(),
                }
            }
        }
    }
}

/// Longest the admin socket waits for a request's headers (also the keep-alive idle limit).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the admin API on `listener` until `shutdown` fires. Each connection is closed
/// `connection_timeout` after it was accepted, whatever it is doing, and must send each
/// request's headers within [`HEADER_TIMEOUT`] (or `connection_timeout`, if shorter): a
/// local client that stalls can't hold a connection and its task for ever. Written on
/// hyper directly because `axum::serve` has no deadline at all.
pub async fn serve(
    listener: UnixListener,
    service: Arc<TapService>,
    connection_timeout: Duration,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(service);
    let connections = TaskTracker::new();
    let header_timeout = HEADER_TIMEOUT.min(connection_timeout);
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    log::warn!("admin socket: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let peer = Peer::of(&stream);
        let app = app.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let service = app.map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer.clone()));
                request
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            tokio::pin!(connection);
            let deadline = tokio::time::sleep(connection_timeout);
            tokio::pin!(deadline);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        log::debug!("admin socket: connection ended with an error: {e}");
                    }
                }
                _ = &mut deadline => {
                    log::warn!(
                        "admin socket: closed a connection still open after {connection_timeout:?} (admin.connection_timeout)"
                    );
                }
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout_at(deadline.deadline(), connection).await;
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

fn router(service: Arc<TapService>) -> Router {
    Router::new()
        .route(
            POLICY_PATH,
            get(get_policy).patch(patch_policy).delete(reset_policy),
        )
        .route(
            "/v1/users/{user}/authentication/temporaryAccessPassMethods",
            get(list_taps).post(create_tap),
        )
        .route(
            "/v1/users/{user}/authentication/temporaryAccessPassMethods/explain",
            get(explain_tap),
        )
        .route(
            "/v1/users/{user}/authentication/temporaryAccessPassMethods/{id}",
            get(get_tap).delete(delete_tap),
        )
        .route("/v1/users/{user}/authentication/methods", get(list_methods))
        .route(
            "/v1/users/{user}/authentication/methods/{id}",
            axum::routing::delete(delete_method),
        )
        .route("/v1/users", get(list_users))
        .route("/v1/users/{user}", get(get_user))
        .route("/v1/groups", get(list_groups))
        .route("/v1/directory/sync", get(sync_status).post(run_sync))
        .route("/v1/auditLogs", get(audit_logs))
        .route("/v1/auditLogs/verify", get(verify_audit))
        .route(
            "/v1/onboarding/bulk",
            axum::routing::post(bulk_issue).layer(DefaultBodyLimit::max(MAX_BULK_BODY_BYTES)),
        )
        .route("/v1/onboarding/messages", get(onboarding_messages))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(service)
}

type ApiResult<T = Response> = Result<T, ApiError>;

/// Parses a JSON body strictly; an empty body counts as `{}`. Errors name the field.
fn parse_body<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(text)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

/// Resolves the caller into an admin session.
async fn session(service: &Arc<TapService>, peer: &Peer) -> ApiResult<AdminSession> {
    let Some(uid) = peer.uid else {
        return Err(ServiceError::Forbidden("could not identify the caller".into()).into());
    };
    // A failed lookup (NSS error) is not remembered: the next request tries again.
    let local_username = peer
        .local_username
        .get_or_try_init(|| async move {
            tokio::task::spawn_blocking(move || {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .map(|user| user.map(|u| u.name))
            })
            .await
            .map_err(|_| ())?
            .map_err(|_| ())
        })
        .await
        .ok()
        .cloned()
        .flatten();
    Ok(service
        .admin(Caller {
            uid,
            pid: peer.pid,
            local_username,
        })
        .await?)
}

/// The identified caller's admin session, resolved from SO_PEERCRED before the handler runs;
/// a caller that can't be identified or holds no role is refused here (403).
struct Admin(AdminSession);

impl axum::extract::FromRequestParts<Arc<TapService>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        service: &Arc<TapService>,
    ) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<Peer>>()
            .map(|ConnectInfo(peer)| peer.clone())
            .unwrap_or_else(|| Peer {
                uid: None,
                pid: None,
                local_username: Arc::default(),
            });
        Ok(Admin(session(service, &peer).await?))
    }
}

/// The raw request body, with size and read errors turned into JSON API errors.
struct RawBody(Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(RawBody(bytes)),
            Err(e) => Err(e.into()),
        }
    }
}

async fn get_policy(Admin(session): Admin) -> ApiResult {
    Ok(Json(graph::policy(&session.policy().await?)).into_response())
}

async fn patch_policy(Admin(session): Admin, RawBody(body): RawBody) -> ApiResult {
    let patch: PolicyPatch = parse_body(&body)?;
    session.patch_policy(&patch).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn reset_policy(Admin(session): Admin) -> ApiResult {
    session.reset_policy().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Body of a TAP create request (all optional, Graph names).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateTapBody {
    #[serde(rename = "@odata.type")]
    odata_type: Option<String>,
    start_date_time: Option<String>,
    lifetime_in_minutes: Option<i64>,
    is_usable_once: Option<bool>,
}

impl CreateTapBody {
    fn into_request(self) -> ApiResult<CreateTapRequest> {
        if let Some(t) = &self.odata_type {
            if t != "#microsoft.graph.temporaryAccessPassAuthenticationMethod" {
                return Err(ApiError::bad_request(format!(
                    "@odata.type {t:?} is not #microsoft.graph.temporaryAccessPassAuthenticationMethod"
                )));
            }
        }
        let start = match &self.start_date_time {
            None => None,
            Some(s) => Some(
                chrono::DateTime::parse_from_rfc3339(s)
                    .map_err(|e| {
                        ApiError::bad_request(format!(
                            "startDateTime {s:?} is not an RFC 3339 date-time (e.g. 2026-01-31T09:00:00Z): {e}"
                        ))
                    })?
                    .with_timezone(&chrono::Utc),
            ),
        };
        Ok(CreateTapRequest {
            start,
            lifetime_in_minutes: self.lifetime_in_minutes,
            is_usable_once: self.is_usable_once,
        })
    }
}

async fn create_tap(
    Admin(session): Admin,
    user: Result<UrlPath<String>, PathRejection>,
    RawBody(body): RawBody,
) -> ApiResult {
    let UrlPath(user) = user?;
    let request = parse_body::<CreateTapBody>(&body)?.into_request()?;
    let created = session.create_tap(&user, &request).await?;
    let body = graph::tap(&created.details, Some(created.code.as_str()));
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn list_taps(
    Admin(session): Admin,
    user: Result<UrlPath<String>, PathRejection>,
) -> ApiResult {
    let UrlPath(user) = user?;
    let taps = session.taps(&user).await?;
    Ok(Json(graph::collection(
        "#users/authentication/temporaryAccessPassMethods",
        taps.iter().map(|t| graph::tap(t, None)).collect(),
    ))
    .into_response())
}

async fn explain_tap(
    Admin(session): Admin,
    user: Result<UrlPath<String>, PathRejection>,
) -> ApiResult {
    let UrlPath(user) = user?;
    Ok(Json(graph::explanation(&session.explain_tap(&user).await?)).into_response())
}

async fn get_tap(
    Admin(session): Admin,
    path: Result<UrlPath<(String, String)>, PathRejection>,
) -> ApiResult {
    let UrlPath((user, id)) = path?;
    Ok(Json(graph::tap(&session.tap(&user, &id).await?, None)).into_response())
}

async fn delete_tap(
    Admin(session): Admin,
    path: Result<UrlPath<(String, String)>, PathRejection>,
) -> ApiResult {
    let UrlPath((user, id)) = path?;
    session.delete_tap(&user, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_methods(
    Admin(session): Admin,
    user: Result<UrlPath<String>, PathRejection>,
) -> ApiResult {
    let UrlPath(user) = user?;
    Ok(Json(graph::methods(&session.methods(&user).await?)).into_response())
}

async fn delete_method(
    Admin(session): Admin,
    path: Result<UrlPath<(String, String)>, PathRejection>,
) -> ApiResult {
    let UrlPath((user, id)) = path?;
    session.delete_method(&user, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersQuery {
    search: Option<String>,
}

async fn list_users(
    Admin(session): Admin,
    query: Result<Query<UsersQuery>, QueryRejection>,
) -> ApiResult {
    let Query(query) = query?;
    let search = query.search.as_deref().map(|s| s.trim_matches('"'));
    let users = session.users(search.filter(|s| !s.is_empty())).await?;
    Ok(Json(graph::collection(
        "#users",
        users.iter().map(graph::user).collect(),
    ))
    .into_response())
}

async fn get_user(
    Admin(session): Admin,
    user: Result<UrlPath<String>, PathRejection>,
) -> ApiResult {
    let UrlPath(user) = user?;
    Ok(Json(graph::user_details(&session.user(&user).await?)).into_response())
}

async fn list_groups(Admin(session): Admin) -> ApiResult {
    let groups = session.groups().await?;
    Ok(Json(graph::collection(
        "#groups",
        groups.iter().map(graph::group).collect(),
    ))
    .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SyncBody {
    #[serde(default)]
    allow_deletes: bool,
}

async fn run_sync(Admin(session): Admin, RawBody(body): RawBody) -> ApiResult {
    let request: SyncBody = parse_body(&body)?;
    let status = session.run_sync(request.allow_deletes).await?;
    Ok(Json(graph::sync_status(&status)).into_response())
}

async fn sync_status(Admin(session): Admin) -> ApiResult {
    Ok(Json(graph::sync_status(&session.sync_status().await?)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    since: Option<String>,
    until: Option<String>,
    user: Option<String>,
    activity: Option<String>,
    #[serde(rename = "$top", alias = "top")]
    top: Option<u32>,
}

fn parse_time(name: &str, value: &Option<String>) -> ApiResult<Option<crate::model::Timestamp>> {
    value
        .as_deref()
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|e| {
                    ApiError::bad_request(format!("{name} {s:?} is not an RFC 3339 date-time: {e}"))
                })
        })
        .transpose()
}

async fn audit_logs(
    Admin(session): Admin,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = query?;
    let filter = AuditFilter {
        since: parse_time("since", &q.since)?,
        until: parse_time("until", &q.until)?,
        user: q.user.clone(),
        activity: q.activity.clone(),
        limit: q.top.unwrap_or(100).min(1000),
    };
    let events = session.audit(&filter).await?;
    Ok(Json(graph::collection(
        "#auditLogs/directoryAudits",
        events.iter().map(graph::audit_event).collect(),
    ))
    .into_response())
}

/// `GET /v1/auditLogs/verify[?from=SEQ]`: the audit chain's verification, always 200 with
/// `valid` and, when it is broken, `firstBreak` (the first broken or missing sequence number).
async fn verify_audit(
    Admin(session): Admin,
    query: Result<Query<VerifyQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = query?;
    if let Some(from) = q.from {
        if from < 1 {
            return Err(ApiError::bad_request(format!(
                "from {from} is not a sequence number (they start at 1)"
            )));
        }
    }
    let verification = session.verify_audit_chain(q.from).await?;
    Ok(Json(verification).into_response())
}

/// Query of `GET /v1/auditLogs/verify`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyQuery {
    from: Option<i64>,
}

/// Whether `path` is an existing socket file (used by tests and the daemon's cleanup).
pub fn is_socket(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false)
}

/// JSON value helper for tests.
pub fn error_message(body: &Value) -> Option<&str> {
    body.get("error")?.get("message")?.as_str()
}

/// Body of a bulk issuance.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BulkBody {
    #[serde(default)]
    dry_run: bool,
    rows: Vec<BulkRow>,
}

async fn bulk_issue(Admin(session): Admin, RawBody(body): RawBody) -> ApiResult {
    let BulkBody { dry_run, rows } = parse_body(&body)?;
    let results = session.bulk_issue(rows, dry_run).await?;
    Ok(Json(serde_json::json!({ "dryRun": dry_run, "value": results })).into_response())
}

/// Query of the onboarding status.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessagesQuery {
    #[serde(rename = "$top")]
    top: Option<u32>,
}

async fn onboarding_messages(
    Admin(session): Admin,
    query: Result<Query<MessagesQuery>, QueryRejection>,
) -> ApiResult {
    let Query(query) = query?;
    let mails = session.onboarding_status(query.top.unwrap_or(100)).await?;
    Ok(Json(serde_json::json!({ "value": mails })).into_response())
}
