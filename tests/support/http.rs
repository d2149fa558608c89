//! One HTTP/1.1 request on a fresh connection, read whole: over plain TCP ([`http`]) or any
//! stream the test has opened itself, such as a TLS session ([`send`]); a form body as a browser
//! posts it ([`form_encode`]) and the cookies it keeps ([`CookieJar`]).

use std::collections::HashMap;
use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// What the server answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Answer {
    /// The value a `Set-Cookie` header gives `name`.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| c.strip_prefix(&format!("{name}=")))
            .and_then(|rest| rest.split(';').next())
            .map(str::to_owned)
    }
}

/// Sends `request` over `stream` (already connected, and wrapped in TLS where needed).
pub async fn send<S>(stream: S, request: Request<Full<Bytes>>) -> Answer
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// One plain-HTTP request to `addr` on a fresh connection.
pub async fn http(addr: SocketAddr, request: Request<Full<Bytes>>) -> Answer {
    send(TcpStream::connect(addr).await.unwrap(), request).await
}

/// `application/x-www-form-urlencoded` body of `pairs` (every byte but RFC 3986's unreserved
/// ones percent-encoded), as a browser posts a form.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The cookies a browser keeps for one site: each `Set-Cookie` of an answer stores its value
/// (one with `Max-Age=0` removes it), and every request sends them back in one `Cookie`
/// header. Read it as the map it holds (`jar.contains_key("tapd-session")`).
#[derive(Clone, Debug, Default)]
pub struct CookieJar(HashMap<String, String>);

impl CookieJar {
    /// Keeps what the `Set-Cookie` headers of an answer set.
    pub fn store(&mut self, headers: &hyper::HeaderMap) {
        for value in headers.get_all(hyper::header::SET_COOKIE) {
            let text = value.to_str().unwrap();
            let (pair, attributes) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attributes.contains("Max-Age=0") {
                self.0.remove(name);
            } else {
                self.0.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    /// The `Cookie` header a request carries; `None` while the jar is empty.
    pub fn header(&self) -> Option<String> {
        if self.0.is_empty() {
            return None;
        }
        let pairs: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Some(pairs.join("; "))
    }
}

impl std::ops::Deref for CookieJar {
    type Target = HashMap<String, String>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}
