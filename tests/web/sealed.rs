//! The store never holds an authenticator-app seed in clear (issue 15), end to end: a user
//! registers an authenticator app on the real `tapd`'s web page over HTTP, then the SQLite
//! file and its write-ahead log, read as raw bytes (what a backup or a stolen disk holds), are
//! searched for the seed in every spelling. The daemon created its secrets key, mode 0600.

use std::os::unix::fs::PermissionsExt;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, StatusCode};

use crate::harness::{form_encode, Page, Tapd, PUBLIC_URL};
use crate::support::http::{http, CookieJar};

/// A minimal browser over plain HTTP to the daemon: a cookie jar and the last CSRF token.
struct Client<'a> {
    tapd: &'a Tapd,
    origin: String,
    cookies: CookieJar,
    csrf: Option<String>,
}

impl Client<'_> {
    async fn send(&mut self, method: &str, path: &str, form: Option<&[(&str, &str)]>) -> Page {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.origin.trim_start_matches("http://"));
        if let Some(cookie) = self.cookies.header() {
            builder = builder.header("cookie", cookie);
        }
        let body = match form {
            Some(pairs) => {
                let csrf = self.csrf.clone().expect("a page with a CSRF token first");
                let mut all = vec![("csrf", csrf.as_str())];
                all.extend_from_slice(pairs);
                builder = builder
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("origin", &self.origin);
                form_encode(&all)
            }
            None => String::new(),
        };
        let request = builder.body(Full::new(Bytes::from(body))).unwrap();
        let answer = http(self.tapd.web_addr, request).await;
        self.cookies.store(&answer.headers);
        let page = Page {
            status: StatusCode::from_u16(answer.status).unwrap(),
            headers: answer.headers,
            body: answer.body,
        };
        if let Some(csrf) = page.csrf().filter(|c| !c.is_empty()) {
            self.csrf = Some(csrf);
        }
        page
    }

    async fn get(&mut self, path: &str) -> Page {
        self.send("GET", path, None).await
    }

    async fn post(&mut self, path: &str, pairs: &[(&str, &str)]) -> Page {
        self.send("POST", path, Some(pairs)).await
    }
}

fn between<'b>(body: &'b str, before: &str, after: &str) -> &'b str {
    let start = body
        .find(before)
        .unwrap_or_else(|| panic!("{before:?} not in {body}"))
        + before.len();
    let end = body[start..].find(after).unwrap() + start;
    &body[start..end]
}

/// Where `needle`'s spellings occur in `haystack`, if anywhere.
fn leaks(haystack: &[u8], bytes: &[u8], base32: &str) -> Option<String> {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    [
        bytes.to_vec(),
        base32.as_bytes().to_vec(),
        base32.to_lowercase().into_bytes(),
        hex.into_bytes(),
    ]
    .into_iter()
    .find(|needle| {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_slice())
    })
    .map(|needle| String::from_utf8_lossy(&needle).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticator_app_registered_on_the_daemon_is_sealed_on_disk() {
    // The site listens on a port the OS picks; requests name the public origin.
    let origin = PUBLIC_URL.to_owned();
    let tapd = Tapd::start(&format!(
        "[web]\nlisten = \"127.0.0.1:0\"\npublic_url = \"{origin}\"\n"
    ));
    let tap = tapd.enable_policy_and_create_tap("alice", false);
    let mut client = Client {
        tapd: &tapd,
        origin,
        cookies: CookieJar::default(),
        csrf: None,
    };
    client.get("/").await;
    let prompt = client.post("/sign-in", &[("username", "alice")]).await;
    assert!(prompt.has_form("/sign-in/tap"), "{}", prompt.body);
    let signed_in = client
        .post("/sign-in/tap", &[("username", "alice"), ("code", &tap)])
        .await;
    let next = signed_in
        .location()
        .unwrap_or_else(|| panic!("{} {}", signed_in.status, signed_in.body))
        .to_owned();
    client.get(&next).await;
    let page = client.post("/security-info/authenticator-app", &[]).await;
    assert!(page.status.is_success(), "{} {}", page.status, page.body);
    let base32 = between(&page.body, "<code id=\"totp-secret\">", "</code>").to_owned();
    let ceremony = between(&page.body, "name=\"ceremony\" value=\"", "\"").to_owned();
    let seed = tapd::web::totp::base32_decode(&base32).unwrap();
    let code = tapd::web::totp::code_at_step(&seed, tapd::web::totp::step_at(chrono::Utc::now()));
    let added = client
        .post(
            "/security-info/authenticator-app/confirm",
            &[("ceremony", &ceremony), ("code", &code)],
        )
        .await;
    assert_eq!(
        added.location(),
        Some("/security-info?added=app"),
        "{} {}",
        added.status,
        added.body
    );
    let methods = tapd.tapctl_json(&["methods", "list", "alice"]);
    assert!(
        methods.to_string().contains("softwareOath"),
        "the app was not registered: {methods}"
    );

    // The store, as raw bytes: the database file and its log.
    let mut raw = Vec::new();
    for name in ["tapd.db", "tapd.db-wal"] {
        if let Ok(bytes) = std::fs::read(tapd.dir().join(name)) {
            raw.extend(bytes);
        }
    }
    assert!(raw.len() > 4096);
    assert_eq!(
        leaks(&raw, &seed, &base32),
        None,
        "the authenticator seed is in the store in clear"
    );
    let key = std::fs::metadata(tapd.dir().join("secrets.key")).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    assert_eq!(key.len(), 32);
}
