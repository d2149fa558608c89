//! A real `tapd` on loopback for the RADIUS and federation tests: a temporary directory with
//! a config (SQLite store, the LDIF demo directory, RADIUS, web and metrics on port 0, one
//! RADIUS client and one relying party), the daemon started from the binary cargo built, its
//! listening addresses read from its `listening for … on …` log lines. Dropping the fixture
//! kills the daemon and, when the test failed, prints its log.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The RADIUS shared secret of the one configured client (127.0.0.1).
pub const RADIUS_SECRET: &str = "radius-test-secret-0123456789";
/// The bearer token of the one relying party.
pub const FEDERATION_TOKEN: &str = "federation-test-token-0123456789";
/// The configured `web.public_url`, quoted in TAP rejections.
pub const PUBLIC_URL: &str = "http://localhost:18080";

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Fails the test, naming the missing tool and how to get it.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not installed: run scripts/test.sh as root (it installs the Debian package {package})"
    );
}

/// A running tapd.
pub struct Tapd {
    child: Child,
    dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
    /// The RADIUS listener.
    pub radius: SocketAddr,
    /// The web listener (serving the federation endpoint).
    pub web: SocketAddr,
    /// The metrics listener.
    pub metrics: SocketAddr,
    /// The federation endpoint's own listener, when the options gave it one.
    pub federation: Option<SocketAddr>,
}

/// Writes a secret file (mode 0600), replacing what was there.
pub fn write_private(path: &Path, content: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// What a test changes in the fixture's config.
pub struct Options {
    /// `[radius] reject_delay`; the fixture's default `0` keeps the suite fast.
    pub radius_reject_delay: &'static str,
    /// `[federation] reject_delay`; default `0`.
    pub federation_reject_delay: &'static str,
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
}

impl Default for Options {
    fn default() -> Self {
        Options {
            radius_reject_delay: "0",
            federation_reject_delay: "0",
            web: String::new(),
            federation: String::new(),
            admin: String::new(),
            extra: String::new(),
            ldif: String::new(),
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
        let mut ldif = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/tapd/demo-directory.ldif");
        if !options.ldif.is_empty() {
            let mut contents = std::fs::read_to_string(&ldif).unwrap();
            contents.push('\n');
            contents.push_str(&options.ldif);
            ldif = dir.path().join("directory.ldif");
            std::fs::write(&ldif, contents).unwrap();
        }
        write_private(&dir.path().join("radius.secret"), RADIUS_SECRET);
        write_private(&dir.path().join("federation.token"), FEDERATION_TOKEN);
        let config = format!(
            r#"
[store]
url = "sqlite:state/tapd.db"

[directory]
url = "file:{ldif}"
base_dn = "dc=example,dc=org"

[admin]
socket = "state/admin.sock"
{admin}

[radius]
listen = ["127.0.0.1:0"]
reject_delay = "{radius_reject_delay}"

[[radius.clients]]
name = "test-nas"
address = "127.0.0.1"
secret_file = "radius.secret"

[[radius.reply_attributes]]
group = "engineering"
class = "eng-class"
filter_id = "eng-acl"

[web]
listen = "127.0.0.1:0"
public_url = "{PUBLIC_URL}"
{web}

[federation]
reject_delay = "{federation_reject_delay}"
{federation}

[[federation.relying_parties]]
name = "test-idp"
token_file = "federation.token"

[log]
level = "info"
format = "stderr"

[metrics]
listen = "127.0.0.1:0"

{extra}
"#,
            ldif = ldif.display(),
            radius_reject_delay = options.radius_reject_delay,
            federation_reject_delay = options.federation_reject_delay,
            web = options.web,
            federation = options.federation,
            admin = options.admin,
            extra = options.extra,
        );
        let own_federation_listener = options.federation.contains("listen");
        let config_path = dir.path().join("tapd.toml");
        std::fs::write(&config_path, config).unwrap();

        let mut child = Command::new(env!("CARGO_BIN_EXE_tapd"))
            .arg("--config")
            .arg(&config_path)
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tapd");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push(line);
                }
            });
        }
        let mut tapd = Tapd {
            child,
            dir,
            log,
            radius: "0.0.0.0:0".parse().unwrap(),
            web: "0.0.0.0:0".parse().unwrap(),
            metrics: "0.0.0.0:0".parse().unwrap(),
            federation: None,
        };
        tapd.radius = tapd.listening("RADIUS");
        tapd.web = tapd.listening("web");
        tapd.metrics = tapd.listening("metrics");
        if own_federation_listener {
            tapd.federation = Some(tapd.listening("federation"));
        }
        tapd.listening("admin");
        tapd.wait_for_log(|line| line.contains("directory sync from") && line.contains(" users, "));
        tapd
    }

    /// The log so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until a log line matches, failing after a while (or if tapd exits).
    pub fn wait_for_log(&mut self, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(line) = self.log().into_iter().find(|line| matches(line)) {
                return line;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!("tapd exited with {status}:\n{}", self.log().join("\n"));
            }
            assert!(
                Instant::now() < deadline,
                "tapd did not log the expected line in time:\n{}",
                self.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn listening(&mut self, what: &str) -> SocketAddr {
        let prefix = format!("listening for {what} on ");
        let line = self.wait_for_log(|line| line.contains(&prefix));
        let address = line.split(&prefix).nth(1).unwrap().trim();
        address
            .parse()
            .unwrap_or_else(|_| "0.0.0.0:0".parse().unwrap())
    }

    /// The temporary directory holding `tapd.toml`, `radius.secret` and
    /// `federation.token`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the daemon is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends SIGHUP (reload the configuration).
    pub fn hang_up(&self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    }

    /// `GET /metrics`: the Prometheus text body.
    pub fn scrape(&self) -> String {
        let mut stream = TcpStream::connect(self.metrics).unwrap();
        stream.set_read_timeout(Some(START_TIMEOUT)).unwrap();
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.metrics
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default()
    }

    /// The admin socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("state/admin.sock")
    }

    /// Runs `tapctl --json ARGS` as root and returns its JSON output.
    pub fn tapctl(&self, args: &[&str]) -> Value {
        let output = Command::new(env!("CARGO_BIN_EXE_tapctl"))
            .arg("--socket")
            .arg(self.socket())
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "tapctl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
    }

    /// Enables the TAP policy for tap-users and creates a one-time TAP for `user`; returns
    /// the code.
    pub fn create_one_time_tap(&self, user: &str) -> String {
        self.tapctl(&[
            "policy",
            "set",
            "--state",
            "enabled",
            "--include-groups",
            "tap-users",
        ]);
        let created = self.tapctl(&["tap", "create", user, "--one-time"]);
        assert_eq!(created["isUsable"], true, "{created}");
        created["temporaryAccessPass"].as_str().unwrap().to_owned()
    }

    /// The user's TAP as the admin API shows it.
    pub fn tap_of(&self, user: &str) -> Value {
        let list = self.tapctl(&["tap", "show", user]);
        list["value"][0].clone()
    }

    /// Sign-in audit events about `upn`, newest first.
    pub fn sign_ins(&self, upn: &str) -> Vec<Value> {
        let audit = self.tapctl(&["audit", "--activity", "User sign-in", "--user", upn]);
        audit["value"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Tapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "---- tapd log ----");
            for line in self.log() {
                let _ = writeln!(stderr, "{line}");
            }
            let _ = writeln!(stderr, "---- end of tapd log ----");
        }
    }
}

/// The value of one series (`name{labels}` exactly as exported) in a scraped body.
pub fn metric(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("series {series} missing from\n{body}"))
        .trim()
        .parse()
        .unwrap()
}

/// What `radclient` saw.
#[derive(Debug)]
pub struct RadclientResult {
    /// `Access-Accept`, `Access-Reject`, or `None` when no reply came.
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
    let reply = ["Access-Accept", "Access-Reject"]
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
