//! Test harness for the web site: an in-process site (the real router, store, directory and
//! argon2 pool, with a manual clock) driven through `tower::ServiceExt::oneshot` by a small
//! cookie-keeping browser, and a fixture that runs the real `tapd` binary through the test kit
//! (`tests/support`).

pub use crate::support::http::form_encode;
use crate::support::http::CookieJar;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use chrono::TimeZone;
use http_body_util::BodyExt;
use serde_json::Value;
use tapd::clock::{Clock, ManualClock};
use tapd::config::PublicUrl;
use tapd::directory::ldif::LdifDirectory;
use tapd::http_listener::ClientAddr;
use tapd::model::Timestamp;
use tapd::policy::{CreateTapRequest, PolicyPatch};
use tapd::service::{AdminSession, Caller, ServiceSettings, TapService};
use tapd::signin::SelfService;
use tapd::store::sqlite::{SqliteStore, DEFAULT_BUSY_TIMEOUT};
use tapd::sync::SyncOptions;
use tapd::tapcode::Hasher;
use tapd::web::throttle::ThrottleSettings;
use tapd::web::{router, WebSettings, WebState};
use tower::ServiceExt;

use crate::support;
use crate::support::config::ConfigFile;
use crate::support::daemon::Launch;
use crate::support::tapctl::Tapctl;

/// The public URL of in-process sites.
pub const PUBLIC_URL: &str = "http://localhost:8080";

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The demo directory every test site syncs.
pub use crate::support::config::demo_ldif;

/// When every in-process site's clock starts.
pub fn t0() -> Timestamp {
    chrono::Utc.with_ymd_and_hms(2026, 11, 27, 9, 0, 0).unwrap()
}

/// An in-process site.
pub struct Site {
    pub router: Router,
    pub clock: Arc<ManualClock>,
    pub service: Arc<TapService>,
    pub state: WebState,
    _dir: tempfile::TempDir,
}

impl Site {
    /// A site over the demo directory with the TAP policy enabled for `tap-users` (minus
    /// `tap-excluded`) and `engineering` as the registration-interrupt group.
    pub async fn new() -> Site {
        Site::with_trusted_proxies(&[]).await
    }

    /// [`Site::new`] believing `X-Forwarded-For` from `trusted_proxies` (CIDRs).
    pub async fn with_trusted_proxies(trusted_proxies: &[&str]) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(t0()));
        let store = Arc::new(
            SqliteStore::open(&dir.path().join("tapd.db"), DEFAULT_BUSY_TIMEOUT)
                .await
                .unwrap()
                .with_clock(clock.clone()),
        );
        let directory = Arc::new(
            LdifDirectory::open(demo_ldif())
                .unwrap()
                .with_base_dn("dc=example,dc=org"),
        );
        let service = Arc::new(TapService::new(
            store,
            directory.clone(),
            clock.clone(),
            Hasher::new(2, 64).unwrap(),
            ServiceSettings {
                root_is_global_administrator: true,
                ..ServiceSettings::default()
            },
            SyncOptions {
                interval: Duration::from_secs(3600),
                guard: tapd::sync::plan::DeletionGuard::default(),
                node: "web-test".to_owned(),
            },
        ));
        service.syncer().run(false, "test").await.unwrap();
        let settings = WebSettings {
            public_url: PublicUrl::parse(PUBLIC_URL).unwrap(),
            secure_cookies: false,
            trusted_proxies: trusted_proxies
                .iter()
                .map(|cidr| tapd::config::IpNetwork::parse(cidr).unwrap())
                .collect(),
            registration_interrupt_groups: vec!["engineering".to_owned()],
            throttle: ThrottleSettings::default(),
        };
        let state = WebState::new(service.clone(), directory, settings).unwrap();
        let site = Site {
            router: router(state.clone()),
            clock,
            service,
            state,
            _dir: dir,
        };
        let patch = PolicyPatch::from_json(
            br#"{"state":"enabled",
                 "includeTargets":[{"id":"tap-users","targetType":"group"}],
                 "excludeTargets":[{"id":"tap-excluded","targetType":"group"}]}"#,
        )
        .unwrap();
        site.admin().await.patch_policy(&patch).await.unwrap();
        site
    }

    /// The break-glass administrator.
    pub async fn admin(&self) -> AdminSession {
        self.service
            .admin(Caller {
                uid: 0,
                pid: None,
                local_username: None,
            })
            .await
            .unwrap()
    }

    /// Creates a TAP and returns its code.
    pub async fn create_tap(
        &self,
        user: &str,
        one_time: bool,
        start: Option<Timestamp>,
        lifetime_minutes: Option<i64>,
    ) -> String {
        let created = self
            .admin()
            .await
            .create_tap(
                user,
                &CreateTapRequest {
                    start,
                    lifetime_in_minutes: lifetime_minutes,
                    is_usable_once: Some(one_time),
                },
            )
            .await
            .unwrap();
        created.code.to_string()
    }

    /// The site's sign-in service, as its handlers call it.
    pub fn signin(&self) -> &SelfService {
        self.state.signin()
    }

    /// The clock's now.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// A browser with an empty cookie jar, connecting from `127.0.0.1:40000`.
    pub fn browser(&self) -> Browser {
        Browser {
            router: self.router.clone(),
            cookies: CookieJar::default(),
            origin: Some(PUBLIC_URL.to_owned()),
            peer: SocketAddr::from(([127, 0, 0, 1], 40000)),
            csrf: None,
            forwarded_for: None,
        }
    }
}

/// A response, body read.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> Option<&str> {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The value of the first `name="csrf" value="…"` field, or the csrf meta tag.
    pub fn csrf(&self) -> Option<String> {
        attribute_after(&self.body, r#"name="csrf-token" content=""#)
            .or_else(|| attribute_after(&self.body, r#"name="csrf" value=""#))
    }

    /// `true` when the page has a form posting to `action`.
    pub fn has_form(&self, action: &str) -> bool {
        self.body.contains(&format!(r#"action="{action}""#))
    }
}

fn attribute_after(body: &str, marker: &str) -> Option<String> {
    let start = body.find(marker)? + marker.len();
    let end = body[start..].find('"')?;
    Some(body[start..start + end].to_owned())
}

/// A cookie-keeping client of an in-process router.
#[derive(Clone)]
pub struct Browser {
    router: Router,
    pub cookies: CookieJar,
    /// The `Origin` header sent with POSTs (`None`: none sent).
    pub origin: Option<String>,
    pub peer: SocketAddr,
    /// The CSRF token of the last page that had one.
    pub csrf: Option<String>,
    /// An `X-Forwarded-For` header sent with every request.
    pub forwarded_for: Option<String>,
}

impl Browser {
    async fn send(&mut self, mut request: Request<Body>) -> Page {
        if let Some(cookie) = self.cookies.header() {
            request
                .headers_mut()
                .insert(header::COOKIE, cookie.parse().unwrap());
        }
        request.extensions_mut().insert(ClientAddr(self.peer));
        if let Some(forwarded) = &self.forwarded_for {
            request
                .headers_mut()
                .insert("x-forwarded-for", forwarded.parse().unwrap());
        }
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        self.cookies.store(&headers);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let page = Page {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        if let Some(csrf) = page.csrf().filter(|c| !c.is_empty()) {
            self.csrf = Some(csrf);
        }
        page
    }

    pub async fn get(&mut self, path: &str) -> Page {
        self.send(Request::get(path).body(Body::empty()).unwrap())
            .await
    }

    /// POSTs a form as it is (no CSRF token added).
    pub async fn post_raw(&mut self, path: &str, pairs: &[(&str, &str)]) -> Page {
        let mut builder =
            Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(origin) = &self.origin {
            builder = builder.header(header::ORIGIN, origin);
        }
        self.send(builder.body(Body::from(form_encode(pairs))).unwrap())
            .await
    }

    /// POSTs a form with the CSRF token of the last page.
    pub async fn post(&mut self, path: &str, pairs: &[(&str, &str)]) -> Page {
        let csrf = self
            .csrf
            .clone()
            .expect("a page with a CSRF token was loaded first");
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(pairs);
        self.post_raw(path, &all).await
    }

    /// POSTs JSON with the CSRF header of the last page.
    pub async fn post_json(&mut self, path: &str, body: &Value) -> Page {
        let mut builder = Request::post(path).header(header::CONTENT_TYPE, "application/json");
        if let Some(csrf) = &self.csrf {
            builder = builder.header("x-csrf-token", csrf);
        }
        if let Some(origin) = &self.origin {
            builder = builder.header(header::ORIGIN, origin);
        }
        self.send(builder.body(Body::from(body.to_string())).unwrap())
            .await
    }

    /// Loads the sign-in page, gives the name and returns the prompt.
    pub async fn identify(&mut self, name: &str) -> Page {
        let start = self.get("/").await;
        assert_eq!(start.status, StatusCode::OK, "{}", start.body);
        self.post("/sign-in", &[("username", name)]).await
    }

    /// Signs in with a TAP from scratch.
    pub async fn sign_in_with_tap(&mut self, name: &str, code: &str) -> Page {
        let prompt = self.identify(name).await;
        assert!(prompt.has_form("/sign-in/tap"), "{}", prompt.body);
        self.post("/sign-in/tap", &[("username", name), ("code", code)])
            .await
    }

    /// Follows a redirect with a GET.
    pub async fn follow(&mut self, page: &Page) -> Page {
        let location = page
            .location()
            .unwrap_or_else(|| panic!("not a redirect: {} {}", page.status, page.body))
            .to_owned();
        self.get(&location).await
    }
}

/// Decodes the HTML entities maud writes, for comparing messages.
pub fn unescape(html: &str) -> String {
    html.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

// ---------------------------------------------------------------------------------------------
// The real daemon

pub use crate::support::config::free_port;

/// A running `tapd` (the kit's daemon); stopped (and its log printed on failure) when dropped.
pub struct Tapd {
    daemon: support::daemon::Tapd,
    tapctl: Tapctl,
    pub web_addr: SocketAddr,
    pub socket: PathBuf,
}

impl Tapd {
    /// Starts `tapd` with a config whose `[web]` section is `web_section` (may name
    /// `{dir}` for the temp dir) and waits for `listening for web on ADDR`, the admin socket
    /// and the first directory sync.
    pub fn start(web_section: &str) -> Tapd {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let web = web_section.replace("{dir}", &dir.path().display().to_string());
        ConfigFile::new()
            .store(&format!("sqlite:{}", dir.path().join("tapd.db").display()))
            .ldif_directory(&demo_ldif(), "dc=example,dc=org")
            .string("directory", "preset", "openldap")
            .string("directory", "sync_interval", "30s")
            .admin(&socket)
            .log_to_stderr()
            .no_metrics()
            .raw(&web)
            .write(&dir.path().join("tapd.toml"));
        let daemon = Launch::new(dir)
            .listener("web")
            .listener("admin")
            .first_sync()
            .terminate_on_drop()
            .start();
        Tapd {
            web_addr: daemon.addr("web"),
            tapctl: Tapctl::new(&socket),
            socket,
            daemon,
        }
    }

    /// Runs `tapctl ARGS…` against this daemon and returns stdout; panics on failure.
    pub fn tapctl(&self, args: &[&str]) -> String {
        self.tapctl.ok(args)
    }

    /// `tapctl --json …` parsed.
    pub fn tapctl_json(&self, args: &[&str]) -> Value {
        self.tapctl.json(args)
    }

    /// Enables the policy for `tap-users` and creates a TAP; returns its code.
    pub fn enable_policy_and_create_tap(&self, user: &str, one_time: bool) -> String {
        self.tapctl(&[
            "policy",
            "set",
            "--state",
            "enabled",
            "--include-groups",
            "tap-users",
        ]);
        let once = if one_time {
            "--one-time"
        } else {
            "--multi-use"
        };
        let created = self.tapctl_json(&["tap", "create", user, once]);
        created["temporaryAccessPass"].as_str().unwrap().to_owned()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// The daemon's directory (config, `tapd.db`, `secrets.key`, admin socket).
    pub fn dir(&self) -> &std::path::Path {
        self.daemon.dir()
    }
}
