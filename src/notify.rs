//! The sd_notify(3) protocol: tells systemd the daemon's state (`READY=1`, `RELOADING=1`,
//! `STOPPING=1`, `WATCHDOG=1`, `STATUS=…`) by sending one datagram per message to the Unix
//! socket named in `$NOTIFY_SOCKET` (a path, or an abstract name written `@name`).
//!
//! Written by hand over `std::os::unix::net::UnixDatagram` rather than with a crate: the
//! protocol is one `sendto` of `KEY=VALUE` lines, and the daemon needs nothing else from
//! libsystemd (no fd store, no credentials). Outside systemd (`NOTIFY_SOCKET` unset) every
//! call is a no-op. The environment is read once and left as it is, so children see it too.
//!
//! May depend on: `clock` (for `MONOTONIC_USEC`).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// Errors sending a notification.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `$NOTIFY_SOCKET` is neither an absolute path nor an `@abstract` name.
    #[error("NOTIFY_SOCKET {0:?} is neither an absolute path nor an @abstract name")]
    BadSocket(OsString),
    /// The datagram could not be sent.
    #[error("sending to NOTIFY_SOCKET {socket}: {source}")]
    Send {
        /// The socket, as named in the environment.
        socket: String,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// One state change or piece of information for systemd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Startup (or a reload) is finished: every listener is bound.
    Ready,
    /// A reload started; `monotonic_usec` is CLOCK_MONOTONIC at that moment, in µs.
    Reloading {
        /// `MONOTONIC_USEC=`, required by systemd ≥ 253 with `RELOADING=1`.
        monotonic_usec: u64,
    },
    /// Shutdown started.
    Stopping,
    /// The watchdog keep-alive.
    Watchdog,
    /// Free-form status shown by `systemctl status` (one line; newlines become spaces).
    Status(String),
}

impl State {
    fn line(&self) -> String {
        match self {
            State::Ready => "READY=1".to_owned(),
            State::Reloading { monotonic_usec } => {
                format!("RELOADING=1\nMONOTONIC_USEC={monotonic_usec}")
            }
            State::Stopping => "STOPPING=1".to_owned(),
            State::Watchdog => "WATCHDOG=1".to_owned(),
            State::Status(text) => format!("STATUS={}", text.replace(['\n', '\r'], " ")),
        }
    }
}

/// Where notifications go.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    /// A socket file.
    Path(PathBuf),
    /// A Linux abstract socket name (without the leading `@`/NUL).
    Abstract(Vec<u8>),
}

/// The daemon's link to systemd. Cheap to clone; every method is a no-op outside systemd.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    target: Option<Result<Target, OsString>>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from this process's
    /// environment (without changing it).
    pub fn from_env() -> Self {
        Self::from_vars(
            std::env::var_os("NOTIFY_SOCKET"),
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        )
    }

    /// Builds a notifier from the given variable values; `own_pid` is compared with
    /// `WATCHDOG_PID` (the watchdog is someone else's when they differ).
    pub fn from_vars(
        notify_socket: Option<OsString>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        own_pid: u32,
    ) -> Self {
        let target = notify_socket
            .filter(|socket| !socket.is_empty())
            .map(|socket| {
                let bytes = socket.as_bytes();
                match bytes.first() {
                    Some(b'/') => Ok(Target::Path(PathBuf::from(&socket))),
                    Some(b'@') => Ok(Target::Abstract(bytes[1..].to_vec())),
                    _ => Err(socket),
                }
            });
        let watchdog_is_ours = match watchdog_pid {
            None => true,
            Some(pid) => pid.trim().parse::<u32>().ok() == Some(own_pid),
        };
        let watchdog = watchdog_usec
            .and_then(|usec| usec.trim().parse::<u64>().ok())
            .filter(|usec| *usec > 0 && watchdog_is_ours && target.is_some())
            .map(Duration::from_micros);
        Notifier { target, watchdog }
    }

    /// Whether systemd is listening (`NOTIFY_SOCKET` set).
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// The watchdog interval systemd expects pings within (`WatchdogSec=`), if any. Ping
    /// every half of it.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends `states` in one datagram. A no-op outside systemd.
    pub fn notify(&self, states: &[State]) -> Result<(), NotifyError> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let target = target
            .as_ref()
            .map_err(|socket| NotifyError::BadSocket(socket.clone()))?;
        let message = states
            .iter()
            .map(State::line)
            .collect::<Vec<_>>()
            .join("\n");
        send(target, message.as_bytes()).map_err(|source| NotifyError::Send {
            socket: describe(target),
            source,
        })
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) -> Result<(), NotifyError> {
        self.notify(&[State::Ready, State::Status(status.to_owned())])
    }

    /// `RELOADING=1` with `MONOTONIC_USEC` read now.
    pub fn reloading(&self) -> Result<(), NotifyError> {
        self.notify(&[
            State::Reloading {
                monotonic_usec: crate::clock::monotonic_usec(),
            },
            State::Status("reloading the configuration".to_owned()),
        ])
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) -> Result<(), NotifyError> {
        self.notify(&[State::Stopping, State::Status("stopping".to_owned())])
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) -> Result<(), NotifyError> {
        self.notify(&[State::Watchdog])
    }

    /// `STATUS=…` alone.
    pub fn status(&self, status: &str) -> Result<(), NotifyError> {
        self.notify(&[State::Status(status.to_owned())])
    }
}

fn describe(target: &Target) -> String {
    match target {
        Target::Path(path) => path.display().to_string(),
        Target::Abstract(name) => format!("@{}", String::from_utf8_lossy(name)),
    }
}

fn send(target: &Target, message: &[u8]) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    match target {
        Target::Path(path) => socket.send_to(message, path)?,
        Target::Abstract(name) => {
            #[cfg(target_os = "linux")]
            {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(message, &addr)?
            }
            #[cfg(not(target_os = "linux"))]
            {
                let _ = name;
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "abstract socket names exist only on Linux",
                ));
            }
        }
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        let mut buffer = [0u8; 4096];
        let n = socket.recv(&mut buffer).unwrap();
        String::from_utf8(buffer[..n].to_vec()).unwrap()
    }

    #[test]
    fn outside_systemd_everything_is_a_no_op() {
        let notifier = Notifier::from_vars(None, Some("2000000"), None, 1);
        assert!(!notifier.is_enabled());
        assert_eq!(notifier.watchdog_interval(), None);
        notifier.ready("x").unwrap();
        notifier.watchdog().unwrap();
    }

    #[test]
    fn sends_to_a_socket_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::from_vars(Some(path.into()), None, None, 1);
        notifier.ready("serving\nsecond line").unwrap();
        assert_eq!(receive(&server), "READY=1\nSTATUS=serving second line");
        notifier.reloading().unwrap();
        let reloading = receive(&server);
        let mut lines = reloading.lines();
        assert_eq!(lines.next(), Some("RELOADING=1"));
        let usec = lines
            .next()
            .unwrap()
            .strip_prefix("MONOTONIC_USEC=")
            .unwrap();
        assert!(usec.parse::<u64>().unwrap() > 0);
        notifier.stopping().unwrap();
        assert!(receive(&server).starts_with("STOPPING=1"));
    }

    #[test]
    fn sends_to_an_abstract_name() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("tapd-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let notifier = Notifier::from_vars(Some(format!("@{name}").into()), None, None, 1);
        notifier.watchdog().unwrap();
        assert_eq!(receive(&server), "WATCHDOG=1");
    }

    #[test]
    fn watchdog_interval_needs_a_socket_and_our_pid() {
        let socket = || Some(OsString::from("/run/systemd/notify"));
        let ours = Notifier::from_vars(socket(), Some("30000000"), Some("42"), 42);
        assert_eq!(ours.watchdog_interval(), Some(Duration::from_secs(30)));
        let any_pid = Notifier::from_vars(socket(), Some("30000000"), None, 42);
        assert_eq!(any_pid.watchdog_interval(), Some(Duration::from_secs(30)));
        let theirs = Notifier::from_vars(socket(), Some("30000000"), Some("41"), 42);
        assert_eq!(theirs.watchdog_interval(), None);
        let zero = Notifier::from_vars(socket(), Some("0"), None, 42);
        assert_eq!(zero.watchdog_interval(), None);
        let garbage = Notifier::from_vars(socket(), Some("soon"), None, 42);
        assert_eq!(garbage.watchdog_interval(), None);
    }

    #[test]
    fn a_relative_socket_name_is_refused() {
        let notifier = Notifier::from_vars(Some("relative/sock".into()), None, None, 1);
        assert!(matches!(
            notifier.ready("x"),
            Err(NotifyError::BadSocket(_))
        ));
    }
}
