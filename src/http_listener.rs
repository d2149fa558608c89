//! The HTTP listener loop of every TCP listener (web, federation, metrics): accepts TCP connections on an already-bound socket, wraps them in TLS
//! (rustls, HTTP/1.1) when the site has a certificate, and serves the router with hyper until
//! shutdown, letting in-flight requests finish. Each request carries its peer address as a
//! [`ClientAddr`] extension.
//!
//! It lives outside `web` so that the federation and metrics front ends can use it without
//! importing the web front end. Every TCP listener of tapd gets the same deadlines and caps ([`HttpLimits`], from `[web]`):
//!
//! - a TLS handshake must finish within [`HANDSHAKE_TIMEOUT`];
//! - a request's headers within `header_timeout` (hyper's `header_read_timeout`, whose
//!   timer also runs while a keep-alive connection waits for its next request, so it is
//!   the keep-alive idle limit too);
//! - its body within `body_timeout` of the headers (a body wrapper, [`DeadlineBody`]:
//!   hyper has no body deadline and tower-http's `RequestBodyTimeoutLayer` is not among
//!   our dependencies; it is a few lines);
//! - the whole request, headers to response, within `request_timeout` (else 408 and the
//!   connection is closed);
//! - at most [`MAX_CONNECTIONS`] connections at once (accepting waits for a free slot) and
//!   at most `max_connections_per_address` from one source address (an IPv6 source
//!   counts by its /64); a connection beyond that is closed at once.
//!
//! May depend on: hyper, hyper-util, tokio-rustls, axum's `Router`, `config::TlsFiles`,
//! `config::HttpLimits`.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::{HttpLimits, TlsFiles};

/// Longest a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// The peer address of the connection a request came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// The site's certificate or key could not be read or used.
#[derive(Debug, thiserror::Error)]
#[error("TLS certificate or key: {0}")]
pub struct TlsError(String);

/// Reads the PEM certificate chain and private key and builds a TLS 1.2/1.3 server
/// configuration offering HTTP/1.1.
pub fn load_tls(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_file_iter(&files.cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("{}: {e}", files.cert_file.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{}: no certificate found",
            files.cert_file.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .map_err(|e| TlsError(format!("{}: {e}", files.key_file.display())))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError(format!("certificate and key don't fit together: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The source an address counts as: IPv4 (and IPv4-mapped IPv6) as is, any other IPv6
/// address collapsed to its /64, the smallest block one subscriber usually gets. The
/// per-address connection cap and the sign-in throttles count by it.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

/// Open connections per source address (IPv6: per /64), capped.
struct PerAddress {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in [`PerAddress`]; gives it back when dropped.
struct AddressSlot {
    table: Arc<PerAddress>,
    key: IpAddr,
}

impl PerAddress {
    fn try_acquire(table: &Arc<PerAddress>, ip: IpAddr) -> Option<AddressSlot> {
        let key = source_key(ip);
        let mut open = table.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key).or_insert(0);
        if *count >= table.limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            table: table.clone(),
            key,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The error a request body yields once its deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(Duration);

/// A request body that fails with [`BodyTimeout`] when it is not complete by its deadline,
/// however slowly its bytes trickle in.
pub struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyTimeout(this.timeout).into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// 408, and the connection closes: the request did not finish within `request_timeout`.
fn request_timed_out() -> Response {
    let mut response = (
        StatusCode::REQUEST_TIMEOUT,
        "The request took too long and was cancelled.\n",
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Serves `router` on `listener` (over TLS when `tls` is given) within `limits` until
/// `shutdown` is cancelled, then lets open connections finish their current request.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = tls.map(TlsAcceptor::from);
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_address = Arc::new(PerAddress {
        limit: limits.max_connections_per_address.max(1),
        open: Mutex::new(HashMap::new()),
    });
    let mut refused_logged: Option<std::time::Instant> = None;
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: wait a little instead of spinning.
                    log::warn!("web: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(address_slot) = PerAddress::try_acquire(&per_address, peer.ip()) else {
            // Over the per-address cap: close at once (dropping the stream).
            let now = std::time::Instant::now();
            if refused_logged.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(60)) {
                refused_logged = Some(now);
                log::warn!(
                    "closed a connection from {}: it already holds {} (the per-address limit, web.max_connections_per_address)",
                    peer.ip(),
                    per_address.limit
                );
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let acceptor = acceptor.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let _address_slot = address_slot;
            let body_timeout = limits.body_timeout;
            let request_timeout = limits.request_timeout;
            let service = router
                .map_request(move |request: Request<Incoming>| {
                    let (mut parts, body) = request.into_parts();
                    parts.extensions.insert(ClientAddr(peer));
                    parts.extensions.insert(ConnectInfo(peer));
                    Request::from_parts(parts, Body::new(DeadlineBody::new(body, body_timeout)))
                })
                .map_future(move |response| async move {
                    match tokio::time::timeout(request_timeout, response).await {
                        Ok(response) => response,
                        Err(_) => Ok(request_timed_out()),
                    }
                });
            let service = TowerToHyperService::new(service);
            let header_timeout = limits.header_timeout;
            match acceptor {
                None => drive(TokioIo::new(stream), service, header_timeout, shutdown).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            drive(TokioIo::new(tls), service, header_timeout, shutdown).await
                        }
                        Ok(Err(e)) => log::debug!("web: TLS handshake with {peer} failed: {e}"),
                        Err(_) => log::debug!("web: TLS handshake with {peer} timed out"),
                    }
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Runs one HTTP/1.1 connection until it closes or shutdown asks it to finish.
async fn drive<I, S>(
    io: TokioIo<I>,
    service: TowerToHyperService<S>,
    header_timeout: Duration,
    shutdown: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = axum::response::Response>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                log::debug!("web: connection ended with an error: {e}");
            }
        }
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
