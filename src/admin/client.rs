//! A small client for the admin API over the Unix socket, used by `tapctl`, tests and
//! benchmarks. One HTTP/1.1 connection per [`AdminClient`], reused across requests.

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

use crate::logging::Cause;

/// Errors talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("can't connect to the tapd admin socket {path}: {source} (is tapd running? set --socket or TAPD_SOCKET)")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The HTTP exchange failed; the hyper, HTTP or JSON error is the source.
    #[error("admin API request failed: {0}")]
    Http(#[source] Cause),
    /// The daemon answered with an error.
    #[error("{message} ({status}, {code})")]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// Graph-style error code.
        code: String,
        /// The daemon's message.
        message: String,
    },
}

impl ClientError {
    /// [`ClientError::Http`] with `error`'s text as its message and `error` as its source.
    fn http(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        ClientError::Http(Cause::with_source(error.to_string(), error))
    }
}

/// A connection to the admin socket.
pub struct AdminClient {
    sender: SendRequest<Full<Bytes>>,
}

impl AdminClient {
    /// Connects to the socket at `path`.
    pub async fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Connect {
                path: path.to_owned(),
                source,
            })?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(ClientError::http)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                log::debug!("admin connection closed: {e}");
            }
        });
        Ok(AdminClient { sender })
    }

    /// Sends a request and returns status and parsed JSON body (`Null` when empty).
    pub async fn raw(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Value), ClientError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "tapd");
        if body.is_some() {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(ClientError::http)?;
        self.sender.ready().await.map_err(ClientError::http)?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(ClientError::http)?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(ClientError::http)?
            .to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| {
                let message = format!("daemon sent a body that is not JSON ({e})");
                ClientError::Http(Cause::with_source(message, e))
            })?
        };
        Ok((status, value))
    }

    /// Sends a request; a non-2xx answer becomes [`ClientError::Api`] with the daemon's message.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let body = body.map(|b| b.to_string().into_bytes());
        let (status, value) = self.raw(method, path, body).await?;
        if status.is_success() {
            return Ok(value);
        }
        let code = value
            .pointer("/error/code")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned();
        let message = value
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("the daemon gave no message")
            .to_owned();
        Err(ClientError::Api {
            status,
            code,
            message,
        })
    }
}

/// Percent-encodes one URL path segment (a user key may hold `@`, spaces, `/`…).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes a query value.
pub fn query_value(s: &str) -> String {
    segment(s)
}
