//! `tapctl`, the real binary, against a test daemon's admin socket: as root or as another local
//! account, parsed as JSON or kept as text, every run bounded in time.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::config::tapctl_binary;

/// Longest a single `tapctl` run may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// `tapctl --socket SOCKET …`.
#[derive(Clone, Debug)]
pub struct Tapctl {
    binary: PathBuf,
    socket: PathBuf,
    env_clear: bool,
    current_dir: Option<PathBuf>,
}

impl Tapctl {
    /// The `tapctl` cargo built (or `TAPD_TEST_BIN_DIR`'s), talking to `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Tapctl {
        Tapctl {
            binary: tapctl_binary(),
            socket: socket.into(),
            env_clear: false,
            current_dir: None,
        }
    }

    /// Runs `binary` (e.g. a copy other accounts may execute) instead.
    pub fn binary(mut self, binary: impl Into<PathBuf>) -> Tapctl {
        self.binary = binary.into();
        self
    }

    /// Runs with an empty environment but `PATH`, in `dir`.
    pub fn isolated(mut self, dir: &Path) -> Tapctl {
        self.env_clear = true;
        self.current_dir = Some(dir.to_path_buf());
        self
    }

    /// The admin socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The command line, ready for more arguments.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command.arg("--socket").arg(&self.socket).args(args);
        if self.env_clear {
            command.env_clear().env("PATH", "/usr/bin:/bin");
        } else {
            command.env_remove("TAPD_SOCKET");
        }
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        command
    }

    /// Runs `tapctl ARGS…` and returns what it did, whatever it did.
    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs `tapctl ARGS…` and returns stdout; fails the test when it fails.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.output(args);
        assert!(
            output.status.success(),
            "tapctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// `tapctl --json ARGS…` parsed (`Null` when it printed no JSON); fails the test when it
    /// fails.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap_or(Value::Null)
    }

    /// Runs `tapctl ARGS…` as `uid`/`gid` (all within [`COMMAND_TIMEOUT`]); `who` names them
    /// in messages. Setting the uid from root makes std drop every supplementary group first
    /// (setgroups(0)), so the child holds exactly that uid and gid.
    pub fn run_as(&self, who: &str, ids: Option<(u32, u32)>, args: &[&str]) -> CommandRun {
        let mut command = self.command(args);
        if let Some((uid, gid)) = ids {
            command.uid(uid).gid(gid);
        }
        run_bounded(
            &mut command,
            format!("tapctl {} (as {who})", args.join(" ")),
        )
    }
}

/// What a finished command printed and how it ended.
#[derive(Debug)]
pub struct CommandRun {
    /// What ran, for messages.
    pub what: String,
    /// How it ended.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CommandRun {
    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Asserts exit 0 and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code(), Some(0), "{} failed:\n{self}", self.what);
        &self.stdout
    }

    /// Asserts exit 0 and parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        let stdout = self.ok();
        serde_json::from_str(stdout)
            .unwrap_or_else(|e| panic!("{} did not print JSON ({e}):\n{self}", self.what))
    }

    /// Asserts that the daemon refused with 403 and that the server's message was printed.
    #[track_caller]
    pub fn forbidden(&self, message: &str) {
        self.refused("403", message);
    }

    /// Asserts exit 1 with `status` (e.g. "403") and `message` on stderr.
    #[track_caller]
    pub fn refused(&self, status: &str, message: &str) {
        assert_eq!(self.code(), Some(1), "{} should fail:\n{self}", self.what);
        assert!(
            self.stderr.contains(status) && self.stderr.contains(message),
            "{}: expected {status} with {message:?} on stderr:\n{self}",
            self.what
        );
        assert!(
            self.stdout.trim().is_empty(),
            "{} printed on stdout although refused:\n{self}",
            self.what
        );
    }
}

impl std::fmt::Display for CommandRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "  {}\n  status: {}\n  stdout:\n{}\n  stderr:\n{}",
            self.what, self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `command` to completion within [`COMMAND_TIMEOUT`] (killing it and failing past that).
pub fn run_bounded(command: &mut Command, what: String) -> CommandRun {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("can't start {what}: {e}"));
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    CommandRun {
        what,
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}
