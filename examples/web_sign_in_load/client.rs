//! A browser-like client of the web registration site on one keep-alive HTTP/1.1 connection:
//! keeps the cookies it is given, sends the `Host` and `Origin` of the site's public URL, and
//! signs in with a TAP the way the sign-in form does. Shared by the `web_sign_in_load` example
//! (the driver of `scripts/bench-multi-node.sh`) and `benches/web_sign_in.rs`, which includes
//! this file by path.

use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What can go wrong talking to the site.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// One browser on one connection.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    cookies: Vec<(String, String)>,
    host: String,
    origin: String,
}

impl Client {
    /// Connects to `addr` and loads `/` (which sets the CSRF cookie). `public_url` is the
    /// site's public URL (`http://localhost:8080`): its host and origin go in every request.
    pub async fn connect(addr: SocketAddr, public_url: &str) -> Result<Client, Error> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(connection);
        let origin = public_url.trim_end_matches('/').to_owned();
        let host = origin
            .split_once("://")
            .map_or(origin.as_str(), |(_, rest)| rest)
            .to_owned();
        let mut client = Client {
            sender,
            cookies: Vec::new(),
            host,
            origin,
        };
        let (status, body) = client.send("GET", "/", None).await?;
        if status != 200 {
            return Err(format!("GET / answered {status}: {body}").into());
        }
        Ok(client)
    }

    /// The value of cookie `name`, when the site set it.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sends a request; returns the status and the body (the `Location` for a redirect).
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        form: Option<String>,
    ) -> Result<(u16, String), Error> {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("origin", &self.origin);
        if !cookie.is_empty() {
            builder = builder.header("cookie", cookie);
        }
        let body = match form {
            Some(form) => {
                builder = builder.header("content-type", "application/x-www-form-urlencoded");
                Full::new(Bytes::from(form))
            }
            None => Full::default(),
        };
        self.sender.ready().await?;
        let response = self.sender.send_request(builder.body(body)?).await?;
        let status = response.status().as_u16();
        for value in response.headers().get_all("set-cookie") {
            let text = value.to_str()?;
            let (name, rest) = text
                .split_once('=')
                .ok_or_else(|| format!("odd Set-Cookie {text:?}"))?;
            let value = rest.split(';').next().unwrap_or_default().to_owned();
            self.cookies.retain(|(n, _)| n != name);
            self.cookies.push((name.to_owned(), value));
        }
        let location = response
            .headers()
            .get("location")
            .map(|l| l.to_str().map(str::to_owned))
            .transpose()?;
        let body = response.into_body().collect().await?.to_bytes();
        Ok(match location {
            Some(location) => (status, location),
            None => (status, String::from_utf8_lossy(&body).into_owned()),
        })
    }

    /// One TAP sign-in as a browser that is not signed in yet; true when it led to the
    /// Security info page.
    pub async fn sign_in(&mut self, user: &str, code: &str) -> Result<bool, Error> {
        self.cookies.retain(|(n, _)| n != "tapd-session");
        let csrf = self
            .cookie("tapd-csrf")
            .ok_or("the site set no CSRF cookie")?
            .to_owned();
        let form = format!(
            "csrf={csrf}&username={}&code={}",
            encode(user),
            encode(code)
        );
        let (status, location) = self.send("POST", "/sign-in/tap", Some(form)).await?;
        Ok(status == 303 && location == "/security-info")
    }
}

/// Percent-encodes a form value.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
