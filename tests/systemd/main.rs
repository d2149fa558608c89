//! Integration tests of tapd as a systemd service, against the real `tapd` binary: the
//! sd_notify sequence through a test `NOTIFY_SOCKET`, SIGHUP reloads (good and broken),
//! the metrics endpoints, and the shipped unit checked by `systemd-analyze`.
//!
//! The harness ([`Tapd`]) starts the daemon on a private config in a temp dir (SQLite store,
//! the demo LDIF directory, admin socket in the temp dir, metrics on 127.0.0.1:0), reads the
//! real addresses back from its `listening for …` lines, and on drop kills it and, if the
//! test failed, prints everything it logged.
//!
//! The RADIUS side of reload and metrics lives with the RADIUS tests: the "change a RADIUS
//! client's secret file, SIGHUP, radclient succeeds with the new secret and gets no reply
//! with the old one, pid unchanged; a broken config keeps the old one" test (plus federation
//! tokens) is `tests/radius/reload.rs`, and the RADIUS/federation counters of `/metrics` are
//! checked in `tests/radius/metrics.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod metrics;
mod notify;
mod unit;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upper bound for anything the daemon is waited for (start, a notification, a log line).
pub const WAIT: Duration = Duration::from_secs(30);

/// The demo directory shipped in the repository.
pub fn demo_ldif() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/tapd/demo-directory.ldif")
}

/// A running `tapd` with its own temp dir.
pub struct Tapd {
    pub dir: tempfile::TempDir,
    pub child: Child,
    pub config: PathBuf,
    pub admin_socket: PathBuf,
    pub metrics: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Tapd {
    /// The config every test starts from.
    pub fn config_text(dir: &Path) -> String {
        format!(
            r#"[store]
url = "sqlite:{dir}/tapd.db"

[directory]
url = "file:{ldif}"
base_dn = "dc=example,dc=org"
sync_interval = "30s"

[admin]
socket = "{dir}/admin.sock"
root_is_global_administrator = true

[admin.roles]
global_administrator = ["tap-global-admins"]

[log]
level = "info"
format = "stderr"

[metrics]
listen = "127.0.0.1:0"
"#,
            dir = dir.display(),
            ldif = demo_ldif().display()
        )
    }

    /// Starts tapd with `env` added to its environment and waits for its listeners.
    pub fn start(env: &[(&str, String)]) -> Tapd {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, env)
    }

    /// Like [`Tapd::start`], in a dir the caller prepared (e.g. holding a notify socket).
    pub fn start_in(dir: tempfile::TempDir, env: &[(&str, String)]) -> Tapd {
        let config = dir.path().join("tapd.toml");
        std::fs::write(&config, Self::config_text(dir.path())).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_tapd"));
        command
            .arg("--config")
            .arg(&config)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
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
            admin_socket: dir.path().join("admin.sock"),
            dir,
            child,
            config,
            metrics: "0.0.0.0:0".parse().unwrap(),
            log,
        };
        let line = tapd.wait_for_log("listening for metrics on ");
        tapd.metrics = line
            .rsplit(' ')
            .next()
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        tapd.wait_for_log("listening for admin on ");
        tapd
    }

    /// Everything logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits (bounded) for a log line containing `needle` and returns it.
    pub fn wait_for_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = self.log().into_iter().find(|l| l.contains(needle)) {
                return line;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("tapd exited ({status}) before logging {needle:?}");
            }
            assert!(Instant::now() < deadline, "tapd never logged {needle:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// Waits (bounded) for the daemon to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "tapd did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// One HTTP/1.1 request on the admin socket; returns the status code.
    pub fn admin_status(&self, path: &str) -> u16 {
        let mut stream = UnixStream::connect(&self.admin_socket).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        status_code(&response)
    }

    /// GET on the metrics listener; returns status and body.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(self.metrics).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.metrics
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        (status_code(&response), body)
    }

    /// Runs the real `tapctl` against this daemon.
    pub fn tapctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_tapctl"))
            .arg("--socket")
            .arg(&self.admin_socket)
            .args(args)
            .env_remove("TAPD_SOCKET")
            .output()
            .unwrap()
    }
}

fn status_code(response: &str) -> u16 {
    response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

impl Drop for Tapd {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- tapd log ----");
            for line in self.log() {
                eprintln!("{line}");
            }
            eprintln!("---- end of tapd log ----");
        }
    }
}

/// A stand-in for systemd's notify socket: a datagram socket in a temp dir.
pub struct NotifyListener {
    socket: UnixDatagram,
    pub path: PathBuf,
    pub received: Vec<String>,
}

impl NotifyListener {
    /// Binds `dir/notify.sock`.
    pub fn bind(dir: &Path) -> NotifyListener {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        NotifyListener {
            socket,
            path,
            received: Vec::new(),
        }
    }

    /// The next message (bounded wait).
    pub fn next_message(&mut self) -> String {
        let deadline = Instant::now() + WAIT;
        let mut buffer = vec![0u8; 4096];
        let n = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no notification within {WAIT:?}; got {:?}",
                self.received
            );
            self.socket.set_read_timeout(Some(left)).unwrap();
            match self.socket.recv(&mut buffer) {
                Ok(n) => break n,
                // A signal interrupted the wait (EINTR, seen now and then); wait again.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!(
                    "no notification within {WAIT:?} ({e}); got {:?}",
                    self.received
                ),
            }
        };
        let message = String::from_utf8(buffer[..n].to_vec()).unwrap();
        self.received.push(message.clone());
        message
    }

    /// Skips messages until one has a line equal to `line`; returns that message.
    pub fn wait_for(&mut self, line: &str) -> String {
        loop {
            let message = self.next_message();
            if message.lines().any(|l| l == line) {
                return message;
            }
        }
    }
}

/// `name{labels} value` from a Prometheus text body.
pub fn metric(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("series {series} missing from\n{body}"))
        .trim()
        .parse()
        .unwrap()
}

/// Fails with the standard message when a tool the tests need is missing.
pub fn require_tool(tool: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is missing (Debian package {package}); run scripts/test.sh, which installs it"
    );
}
