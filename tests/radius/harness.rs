//! A real `tapd` on loopback for the RADIUS and federation tests: a temporary directory with
//! a config (SQLite store, the LDIF demo directory, RADIUS, web and metrics on port 0, one
//! RADIUS client and one relying party), the daemon started from the binary cargo built, its
//! listening addresses read from its `listening for … on …` log lines. The kit (`tests/support`) runs
//! the daemon: dropping the fixture kills it and, when the test failed, prints its log.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support;
use crate::support::config::ConfigFile;
pub use crate::support::config::{demo_ldif, require_tool, write_private};
use crate::support::daemon::Launch;
pub use crate::support::metrics::metric;
use crate::support::metrics::scrape;
use crate::support::tapctl::Tapctl;

/// The RADIUS shared secret of the one configured client (127.0.0.1).
pub const RADIUS_SECRET: &str = "radius-test-secret-0123456789";
/// The bearer token of the one relying party.
pub const FEDERATION_TOKEN: &str = "federation-test-token-0123456789";
/// The configured `web.public_url`, quoted in TAP rejections.
pub const PUBLIC_URL: &str = "http://localhost:18080";

/// A running tapd (the kit's daemon) and the addresses it listens on.
pub struct Tapd {
    daemon: support::daemon::Tapd,
    tapctl: Tapctl,
    /// The RADIUS listener.
    pub radius: SocketAddr,
    /// The web listener (serving the federation endpoint).
    pub web: SocketAddr,
    /// The metrics listener.
    pub metrics: SocketAddr,
    /// The federation endpoint's own listener, when the options gave it one.
    pub federation: Option<SocketAddr>,
}

/// What a test changes in the fixture's config.
pub struct Options {
    /// `[radius] reject_delay`; the fixture's default `0` keeps the suite fast.
    pub radius_reject_delay: &'static str,
    /// `[federation] reject_delay`; default `0`.
    pub federation_reject_delay: &'static str,
    /// `[audit] sign_in_flush`; the fixture's default `0` stores each sign-in event before
    /// the answer, so a test reads the audit right after a reply.
    pub sign_in_flush: &'static str,
    /// Extra lines in `[web]`.
    pub web: String,
    /// Extra lines in `[federation]` (e.g. its own `listen`).
    pub federation: String,
    /// Extra lines in `[admin]`.
    pub admin: String,
    /// Extra sections at the end of the file.
    pub extra: String,
    /// Extra entries appended to a copy of the demo directory.
    pub ldif: String,
    /// Extra lines in `[radius]`.
    pub radius: String,
    /// Extra lines in the `test-nas` client's `[[radius.clients]]` entry.
    pub client: String,
    /// Sync from and check passwords against this LDAP server (`ldap://…`, the kit's slapd
    /// loaded with the demo directory) instead of the LDIF file.
    pub ldap_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            radius_reject_delay: "0",
            federation_reject_delay: "0",
            sign_in_flush: "0",
            web: String::new(),
            federation: String::new(),
            admin: String::new(),
            extra: String::new(),
            ldif: String::new(),
            radius: String::new(),
            client: String::new(),
            ldap_url: None,
        }
    }
}

impl Tapd {
    /// Starts tapd and waits until RADIUS, web and admin listen and the first sync is done.
    pub fn start() -> Tapd {
        Tapd::start_with(Options::default())
    }

    /// [`Tapd::start`] with `options` in the config.
    pub fn start_with(options: Options) -> Tapd {
        assert!(
            nix::unistd::getuid().is_root(),
            "these tests administer tapd as root (the break-glass administrator); run them as root, e.g. scripts/test.sh"
        );
        let dir = tempfile::tempdir().unwrap();
        let config = fixture_config(dir.path(), &options);
        let own_federation_listener = options.federation.contains("listen");
        config.write(&dir.path().join("tapd.toml"));
        if options.ldap_url.is_some() {
            write_private(
                &dir.path().join("ldap.secret"),
                crate::support::slapd::ROOT_PASSWORD,
            );
        }

        let mut launch = Launch::new(dir)
            .listener("RADIUS")
            .listener("web")
            .listener("metrics");
        if own_federation_listener {
            launch = launch.listener("federation");
        }
        let daemon = launch.listener("admin").first_sync().start();
        Tapd {
            tapctl: Tapctl::new(daemon.dir().join("state/admin.sock")),
            radius: daemon.addr("RADIUS"),
            web: daemon.addr("web"),
            metrics: daemon.addr("metrics"),
            federation: own_federation_listener.then(|| daemon.addr("federation")),
            daemon,
        }
    }

    /// Rewrites the config from `options` and reloads it (SIGHUP), waiting for the reload.
    pub fn reconfigure(&mut self, options: &Options) {
        fixture_config(self.dir(), options).write(&self.dir().join("tapd.toml"));
        let from = self.daemon.log_len();
        self.hang_up();
        self.daemon.wait_for_log_from(from, "the reload", |line| {
            line.contains("configuration reloaded from")
        });
    }

    /// The log so far.
    pub fn log(&self) -> Vec<String> {
        self.daemon.log()
    }

    /// Waits until a log line matches, failing after a while (or if tapd exits).
    pub fn wait_for_log(&mut self, matches: impl Fn(&str) -> bool) -> String {
        self.daemon.wait_for_log("the expected line", matches)
    }

    /// The temporary directory holding `tapd.toml`, `radius.secret` and
    /// `federation.token`.
    pub fn dir(&self) -> &Path {
        self.daemon.dir()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// Whether the daemon is still running.
    pub fn is_running(&mut self) -> bool {
        self.daemon.is_running()
    }

    /// Sends SIGTERM and waits until tapd has exited.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.daemon.terminate()
    }

    /// Starts tapd again with the same config and state (after [`Tapd::terminate`]); the
    /// listeners' addresses may change, the admin socket stays.
    pub fn restart(&mut self) {
        self.daemon.restart();
    }

    /// Sends SIGHUP (reload the configuration).
    pub fn hang_up(&self) {
        self.daemon.hang_up();
    }

    /// `GET /metrics`: the Prometheus text body.
    pub fn scrape(&self) -> String {
        scrape(self.metrics)
    }

    /// The admin socket.
    pub fn socket(&self) -> PathBuf {
        self.tapctl.socket().to_path_buf()
    }

    /// Runs `tapctl --json ARGS` as root and returns its JSON output.
    pub fn tapctl(&self, args: &[&str]) -> Value {
        self.tapctl.json(args)
    }

    /// Enables the TAP policy for tap-users and creates a one-time TAP for `user`; returns
    /// the code.
    pub fn create_one_time_tap(&self, user: &str) -> String {
        self.enable_policy();
        self.create_tap(user, &["--one-time"])
    }

    /// Enables the TAP policy for tap-users.
    pub fn enable_policy(&self) {
        self.tapctl(&[
            "policy",
            "set",
            "--state",
            "enabled",
            "--include-groups",
            "tap-users",
        ]);
    }

    /// `tapctl tap create USER OPTIONS…`, which must give a usable TAP; returns its code.
    pub fn create_tap(&self, user: &str, options: &[&str]) -> String {
        let mut args = vec!["tap", "create", user];
        args.extend_from_slice(options);
        let created = self.tapctl(&args);
        assert_eq!(created["isUsable"], true, "{created}");
        created["temporaryAccessPass"].as_str().unwrap().to_owned()
    }

    /// The user's TAP as the admin API shows it.
    pub fn tap_of(&self, user: &str) -> Value {
        let list = self.tapctl(&["tap", "show", user]);
        list["value"][0].clone()
    }

    /// Sign-in audit events about `upn`, newest first.
    /// (With `sign_in_flush` other than `0`, only what its window has stored yet.)
    pub fn sign_ins(&self, upn: &str) -> Vec<Value> {
        let audit = self.tapctl(&["audit", "--activity", "User sign-in", "--user", upn]);
        audit["value"].as_array().cloned().unwrap_or_default()
    }
}

/// The fixture's config in `dir` with `options` (a copy of the demo directory with
/// `options.ldif` is written there when needed).
fn fixture_config(dir: &Path, options: &Options) -> ConfigFile {
    let mut ldif = demo_ldif();
    if !options.ldif.is_empty() {
        let mut contents = std::fs::read_to_string(&ldif).unwrap();
        contents.push('\n');
        contents.push_str(&options.ldif);
        ldif = dir.join("directory.ldif");
        std::fs::write(&ldif, contents).unwrap();
    }
    write_private(&dir.join("radius.secret"), RADIUS_SECRET);
    write_private(&dir.join("federation.token"), FEDERATION_TOKEN);
    let config = ConfigFile::new().store("sqlite:state/tapd.db");
    let config = match &options.ldap_url {
        None => config.ldif_directory(&ldif, "dc=example,dc=org"),
        Some(url) => config
            .string("directory", "url", url)
            .string("directory", "preset", "openldap")
            .string("directory", "base_dn", crate::support::slapd::BASE_DN)
            .string("directory", "bind_dn", crate::support::slapd::ROOT_DN)
            .string("directory", "bind_password_file", "ldap.secret")
            .string("directory", "connect_timeout", "2s")
            .string("directory", "operation_timeout", "2s")
            .string("directory", "sync_interval", "1h")
            .string("directory", "incremental_interval", "0s"),
    };
    let client = format!(
        "name = \"test-nas\"\naddress = \"127.0.0.1\"\nsecret_file = \"radius.secret\"\n{}",
        options.client
    );
    config
        .string("admin", "socket", "state/admin.sock")
        .lines("admin", &options.admin)
        .radius_on_loopback(options.radius_reject_delay)
        .lines("radius", &options.radius)
        .entry("radius.clients", &client)
        .entry(
            "radius.reply_attributes",
            "group = \"engineering\"\nclass = \"eng-class\"\nfilter_id = \"eng-acl\"",
        )
        .web_on_loopback(PUBLIC_URL)
        .lines("web", &options.web)
        .string(
            "federation",
            "reject_delay",
            options.federation_reject_delay,
        )
        .lines("federation", &options.federation)
        .string("audit", "sign_in_flush", options.sign_in_flush)
        .entry(
            "federation.relying_parties",
            "name = \"test-idp\"\ntoken_file = \"federation.token\"",
        )
        .log_to_stderr()
        .metrics_on_loopback()
        .raw(&options.extra)
}

/// What `radclient` saw.
#[derive(Debug)]
pub struct RadclientResult {
    /// `Access-Accept`, `Access-Reject`, `Access-Challenge`, or `None` when no reply came.
    pub reply: Option<String>,
    /// Its whole output, for assertions on attributes and for failure messages.
    pub output: String,
}

impl RadclientResult {
    /// The Reply-Message text (several attributes joined), if any.
    pub fn reply_message(&self) -> Option<String> {
        let parts: Vec<String> = self
            .output
            .lines()
            .filter_map(|line| line.trim().strip_prefix("Reply-Message = "))
            .map(|value| value.trim_matches('"').replace("\\'", "'"))
            .collect();
        (!parts.is_empty()).then(|| parts.concat())
    }

    /// The value of the received attribute `name` as radclient prints it (`0x…` for octets).
    pub fn attribute(&self, name: &str) -> Option<String> {
        let received = self.output.split("Received ").nth(1)?;
        received.lines().find_map(|line| {
            line.trim()
                .strip_prefix(&format!("{name} = "))
                .map(|value| value.trim_matches('"').to_owned())
        })
    }
}

/// Sends one request with FreeRADIUS's `radclient` (`command` is `auth` or `status`) and
/// reports the reply. Waits at most about two seconds when no reply comes.
pub fn radclient(
    server: SocketAddr,
    command: &str,
    secret: &str,
    attributes: &str,
) -> RadclientResult {
    require_tool("radclient", "freeradius-utils");
    let mut child = Command::new("radclient")
        .args(["-x", "-r", "1", "-t", "1"])
        .arg(server.to_string())
        .arg(command)
        .arg(secret)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(attributes.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let reply = ["Access-Accept", "Access-Reject", "Access-Challenge"]
        .into_iter()
        .find(|code| text.contains(&format!("Received {code}")))
        .map(str::to_owned);
    RadclientResult {
        reply,
        output: text,
    }
}

/// What `curl` saw.
#[derive(Debug)]
pub struct CurlResult {
    /// HTTP status.
    pub status: u16,
    /// Response headers, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// The body as JSON (`Null` when it is not JSON).
    pub json: Value,
}

impl CurlResult {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Calls the web listener with `curl`: `method` `path`, optional bearer token and body.
pub fn curl(
    server: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> CurlResult {
    require_tool("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    let headers_file = dir.path().join("headers");
    let mut command = Command::new("curl");
    command
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            "10",
            "--noproxy",
            "*",
        ])
        .args(["--request", method])
        .arg("--dump-header")
        .arg(&headers_file)
        .arg(format!("http://{server}{path}"));
    if let Some(token) = token {
        command.args(["--header", &format!("Authorization: Bearer {token}")]);
    }
    if let Some(body) = body {
        command
            .args(["--header", "Content-Type: application/json"])
            .args(["--data-binary", body]);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let raw_headers = std::fs::read_to_string(&headers_file).unwrap();
    let mut lines = raw_headers.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    CurlResult {
        status,
        headers,
        json: serde_json::from_slice(&output.stdout).unwrap_or(Value::Null),
    }
}
