//! A real `tapd` started from the binary cargo built, on a directory the test owns.
//!
//! [`Launch`] names the directory and config file and what "ready" means (the listeners to
//! wait for, the first directory sync); [`Launch::start`] spawns the daemon, keeps every line
//! it writes to stderr, and reads each `listening for X on ADDR` line so the test learns the
//! ports the OS chose. Dropping the [`Tapd`] stops the daemon and, when the test thread is
//! panicking, prints the daemon's log and keeps its files. Like lldap's `LLDAPFixture` and
//! hickory's `TestServer`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::config::tapd_binary;

/// Longest wait for the daemon to come up, log a line or go down.
pub const DAEMON_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines the daemon wrote to stderr, shared with the thread reading them.
#[derive(Default)]
struct DaemonLog {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

/// How to start a [`Tapd`] and when it counts as ready.
pub struct Launch {
    binary: PathBuf,
    /// The daemon's directory; `None` once kept after a failure.
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    config: PathBuf,
    env_clear: bool,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    listeners: Vec<String>,
    first_sync: bool,
    terminate_on_drop: bool,
}

impl Launch {
    /// Starts `tapd --config <dir>/tapd.toml` in `dir`, which the kit removes when done (and
    /// keeps when the test fails).
    pub fn new(dir: tempfile::TempDir) -> Launch {
        Launch {
            binary: tapd_binary(),
            config: dir.path().join("tapd.toml"),
            root: dir.path().to_path_buf(),
            dir: Some(dir),
            env_clear: false,
            env: Vec::new(),
            // A test run under systemd must not make the daemon log to the journal.
            env_remove: vec!["JOURNAL_STREAM".into()],
            listeners: Vec::new(),
            first_sync: false,
            terminate_on_drop: false,
        }
    }

    /// Runs `binary` instead of the `tapd` cargo built (or `TAPD_TEST_BIN_DIR`'s).
    pub fn binary(mut self, binary: PathBuf) -> Launch {
        self.binary = binary;
        self
    }

    /// Names the config file (default `tapd.toml` in the directory).
    pub fn config(mut self, path: PathBuf) -> Launch {
        self.config = path;
        self
    }

    /// Starts the daemon with an empty environment but `PATH`.
    pub fn env_clear(mut self) -> Launch {
        self.env_clear = true;
        self.env
            .push(("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into()));
        self
    }

    /// Sets an environment variable of the daemon.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Launch {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Removes an environment variable from the daemon's environment.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Launch {
        self.env_remove.push(key.into());
        self
    }

    /// Waits for `listening for <name> on ADDR` before the daemon counts as ready.
    pub fn listener(mut self, name: &str) -> Launch {
        self.listeners.push(name.to_owned());
        self
    }

    /// Waits for the first directory sync's summary before the daemon counts as ready.
    pub fn first_sync(mut self) -> Launch {
        self.first_sync = true;
        self
    }

    /// Stops the daemon with SIGTERM (then SIGKILL after a while) when dropped, rather than
    /// killing it at once.
    pub fn terminate_on_drop(mut self) -> Launch {
        self.terminate_on_drop = true;
        self
    }

    /// Spawns the daemon and waits until it is ready.
    pub fn start(self) -> Tapd {
        let mut tapd = Tapd {
            launch: self,
            child: None,
            log: Arc::default(),
            runs: 0,
            run_start: 0,
        };
        tapd.restart();
        tapd
    }
}

/// A running (or stopped) `tapd`.
pub struct Tapd {
    launch: Launch,
    child: Option<Child>,
    log: Arc<DaemonLog>,
    runs: usize,
    run_start: usize,
}

impl Tapd {
    /// The daemon's directory.
    pub fn dir(&self) -> &Path {
        &self.launch.root
    }

    /// The config file.
    pub fn config_path(&self) -> &Path {
        &self.launch.config
    }

    /// Starts the daemon again with the same config (after [`Tapd::kill9`],
    /// [`Tapd::terminate`] or [`Tapd::wait_exit`]) and waits until it is ready.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "tapd is still running");
        self.runs += 1;
        self.run_start = {
            let mut lines = self.log.lines.lock().unwrap();
            lines.push(format!("==== tapd run {} ====", self.runs));
            lines.len()
        };
        let mut command = Command::new(&self.launch.binary);
        command.arg("--config").arg(&self.launch.config);
        if self.launch.env_clear {
            command.env_clear();
        }
        for key in &self.launch.env_remove {
            command.env_remove(key);
        }
        command
            .envs(self.launch.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start tapd");
        let stderr = child.stderr.take().expect("tapd stderr");
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log.lines.lock().unwrap().push(line);
                log.changed.notify_all();
            }
            log.lines
                .lock()
                .unwrap()
                .push("==== tapd stderr closed ====".into());
            log.changed.notify_all();
        });
        self.child = Some(child);
        for name in self.launch.listeners.clone() {
            self.wait_listening(&name);
        }
        if self.launch.first_sync {
            // The first sync's summary ("directory sync from …: 13 users, 7 groups; …").
            self.wait_for_log("the first directory sync", |line| {
                line.contains("directory sync from ") && line.contains(" users, ")
            });
        }
    }

    /// The index of the first log line of the current run.
    pub fn run_start(&self) -> usize {
        self.run_start
    }

    /// How many log lines there are so far (all runs).
    pub fn log_len(&self) -> usize {
        self.log.lines.lock().unwrap().len()
    }

    /// Waits until a line of the current run matches `found` and returns it; fails with the
    /// log if the daemon exits or [`DAEMON_TIMEOUT`] passes.
    pub fn wait_for_log(&mut self, what: &str, found: impl Fn(&str) -> bool) -> String {
        self.wait_for_log_from(self.run_start, what, found)
    }

    /// Like [`Tapd::wait_for_log`] from line `from` on (see [`Tapd::log_len`]).
    pub fn wait_for_log_from(
        &mut self,
        from: usize,
        what: &str,
        found: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + DAEMON_TIMEOUT;
        let mut lines = self.log.lines.lock().unwrap();
        loop {
            if let Some(line) = lines.iter().skip(from).find(|line| found(line)) {
                return line.clone();
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                // Let the reader thread take the last lines.
                drop(lines);
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "tapd exited ({status}) before logging {what:?}:\n{}",
                    self.log_text()
                );
            }
            let now = Instant::now();
            if now > deadline {
                panic!(
                    "tapd did not log {what:?} within {DAEMON_TIMEOUT:?}:\n{}",
                    lines.join("\n")
                );
            }
            let wait = (deadline - now).min(Duration::from_millis(50));
            lines = self.log.changed.wait_timeout(lines, wait).unwrap().0;
        }
    }

    /// Waits for `listening for <name> on ADDR` in the current run and returns `ADDR` as
    /// logged (a socket address, or the admin socket's path).
    pub fn wait_listening(&mut self, name: &str) -> String {
        let prefix = format!("listening for {name} on ");
        let line = self.wait_for_log(&prefix.clone(), |line| line.contains(&prefix));
        line.split(&prefix).nth(1).unwrap().trim().to_owned()
    }

    /// Every `listening for X on ADDR` of the current run: X → ADDR as logged.
    pub fn listeners(&self) -> BTreeMap<String, String> {
        let lines = self.log.lines.lock().unwrap();
        lines
            .iter()
            .skip(self.run_start)
            .filter_map(|line| {
                let (_, rest) = line.split_once("listening for ")?;
                let (name, address) = rest.split_once(" on ")?;
                Some((name.to_owned(), address.trim().to_owned()))
            })
            .collect()
    }

    /// The address the daemon logged for listener `name` in the current run.
    #[track_caller]
    pub fn addr(&self, name: &str) -> SocketAddr {
        let listeners = self.listeners();
        let address = listeners
            .get(name)
            .unwrap_or_else(|| panic!("tapd logged no `listening for {name}`: {listeners:?}"));
        address
            .parse()
            .unwrap_or_else(|e| panic!("listening for {name} on {address:?}: {e}"))
    }

    /// The log so far (all runs).
    pub fn log(&self) -> Vec<String> {
        self.log.lines.lock().unwrap().clone()
    }

    /// The log so far (all runs) as one text.
    pub fn log_text(&self) -> String {
        self.log.lines.lock().unwrap().join("\n")
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("tapd is not running").id()
    }

    /// Whether the daemon is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().unwrap().is_none())
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid()).unwrap());
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// Sends SIGHUP (reload the configuration).
    pub fn hang_up(&self) {
        self.signal(Signal::SIGHUP);
    }

    /// `kill -9`: no cleanup at all, as in a crash or power cut of the process.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("tapd is not running");
        child.kill().expect("SIGKILL tapd");
        let status = child.wait().expect("wait for tapd");
        assert_eq!(
            status.signal(),
            Some(9),
            "tapd ended by {status}, not SIGKILL"
        );
    }

    /// Waits (bounded) for the daemon to exit on its own or after a signal; returns how it
    /// ended.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DAEMON_TIMEOUT;
        let child = self.child.as_mut().expect("tapd is not running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                panic!("tapd did not exit within {DAEMON_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM and waits (bounded) for the daemon to exit; returns how it ended.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait_exit()
    }
}

impl Drop for Tapd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.launch.terminate_on_drop {
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ =
                        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
                }
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let kept = self
                .launch
                .dir
                .take()
                .map_or_else(|| self.launch.root.clone(), tempfile::TempDir::keep);
            eprintln!(
                "==== tapd log (files kept in {}) ====\n{}\n==== end of tapd log ====",
                kept.display(),
                self.log_text()
            );
        }
    }
}
