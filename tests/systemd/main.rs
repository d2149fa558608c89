//! Integration tests of tapd as a systemd service, against the real `tapd` binary: the
//! sd_notify sequence through a test `NOTIFY_SOCKET`, SIGHUP reloads (good and broken),
//! the metrics endpoints, and the shipped unit checked by `systemd-analyze`.
//!
//! The harness ([`Tapd`]) writes a private config in a temp dir (SQLite store, the demo LDIF
//! directory, admin socket in the temp dir, metrics on 127.0.0.1:0) and starts the daemon
//! through the test kit (`tests/support`), which reads the real addresses back from its
//! `listening for …` lines and on drop kills it and, if the test failed, prints its log.
//!
//! The RADIUS side of reload and metrics lives with the RADIUS tests: the "change a RADIUS
//! client's secret file, SIGHUP, radclient succeeds with the new secret and gets no reply
//! with the old one, pid unchanged; a broken config keeps the old one" test (plus federation
//! tokens) is `tests/radius/reload.rs`, and the RADIUS/federation counters of `/metrics` are
//! checked in `tests/radius/metrics.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit_chain;
mod metrics;
mod notify;
mod unit;

#[path = "../support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

pub use support::config::{demo_ldif, require_tool, ConfigFile};
use support::daemon::Launch;
pub use support::metrics::metric;
use support::metrics::{http_get, status_code};
use support::tapctl::Tapctl;

/// Upper bound for anything the daemon is waited for (start, a notification, a log line).
pub const WAIT: Duration = Duration::from_secs(30);

/// A running `tapd` (the kit's daemon) with its own temp dir.
pub struct Tapd {
    daemon: support::daemon::Tapd,
    tapctl: Tapctl,
    pub config: PathBuf,
    pub admin_socket: PathBuf,
    pub metrics: SocketAddr,
}

impl Tapd {
    /// The config every test starts from.
    pub fn config_text(dir: &Path) -> String {
        ConfigFile::new()
            .store(&format!("sqlite:{}/tapd.db", dir.display()))
            .ldif_directory(&demo_ldif(), "dc=example,dc=org")
            .string("directory", "sync_interval", "30s")
            .admin(&dir.join("admin.sock"))
            .log_to_stderr()
            .metrics_on_loopback()
            .text()
    }

    /// Starts tapd with `env` added to its environment and waits for its listeners.
    pub fn start(env: &[(&str, String)]) -> Tapd {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, env)
    }

    /// Like [`Tapd::start`], in a dir the caller prepared (e.g. holding a notify socket).
    pub fn start_in(dir: tempfile::TempDir, env: &[(&str, String)]) -> Tapd {
        let text = Self::config_text(dir.path());
        Self::start_with_config(dir, &text, env)
    }

    /// Like [`Tapd::start_in`], with the config text given (built from [`Tapd::config_text`]'s
    /// pieces; the admin socket and metrics listener must stay as there).
    pub fn start_with_config(dir: tempfile::TempDir, text: &str, env: &[(&str, String)]) -> Tapd {
        let config = dir.path().join("tapd.toml");
        std::fs::write(&config, text).unwrap();
        let admin_socket = dir.path().join("admin.sock");
        let mut launch = Launch::new(dir)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID");
        for (key, value) in env {
            launch = launch.env(key, value);
        }
        let daemon = launch.listener("metrics").listener("admin").start();
        Tapd {
            metrics: daemon.addr("metrics"),
            tapctl: Tapctl::new(&admin_socket),
            admin_socket,
            config,
            daemon,
        }
    }

    /// The daemon's temp dir.
    pub fn dir(&self) -> &Path {
        self.daemon.dir()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// Everything logged so far.
    pub fn log(&self) -> Vec<String> {
        self.daemon.log()
    }

    /// Waits (bounded) for a log line containing `needle` and returns it.
    pub fn wait_for_log(&mut self, needle: &str) -> String {
        self.daemon.wait_for_log(needle, |l| l.contains(needle))
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        self.daemon.signal(signal);
    }

    /// Waits (bounded) for the daemon to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.daemon.wait_exit()
    }

    /// Starts the daemon again with the same config and dir (after it exited).
    pub fn restart(&mut self) {
        self.daemon.restart();
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.daemon.is_running()
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
        http_get(self.metrics, path)
    }

    /// Runs the real `tapctl` against this daemon.
    pub fn tapctl(&self, args: &[&str]) -> std::process::Output {
        self.tapctl.output(args)
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
