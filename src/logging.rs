//! Logging through the `log` facade: to the systemd journal with structured fields when stderr
//! is connected to it (`JOURNAL_STREAM` names stderr's device and inode), otherwise readable
//! lines on stderr. The level comes from the configuration and can change on reload.
//!
//! Errors are logged with their whole source chain: [`ErrorChain`] prints an error and every
//! cause beneath it, and [`Cause`] lets an error variant keep its message and the underlying
//! error together.
//!
//! May depend on: nothing in this crate.

use std::error::Error;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use log::{LevelFilter, Log, Metadata, Record};

/// Where log lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sink {
    /// The systemd journal (native protocol, with fields).
    Journal,
    /// Plain lines on stderr.
    Stderr,
}

/// True when stderr is the journal stream systemd set up for this service.
pub fn stderr_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(meta.dev()) && ino.parse::<u64>().ok() == Some(meta.ino())
}

/// Where `[log] format` asks log lines to go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// The journal when stderr is connected to it (`JOURNAL_STREAM`), else stderr.
    Auto,
    /// The journal, falling back to stderr (with a warning) when it can't be reached.
    Journal,
    /// Plain lines on stderr.
    Stderr,
}

/// Installs the logger once (sending to `destination`, at `level`) and returns where lines
/// actually go; later calls only change the level.
pub fn init(level: LevelFilter, destination: Destination) -> Sink {
    let want_journal = match destination {
        Destination::Auto => stderr_is_journal(),
        Destination::Journal => true,
        Destination::Stderr => false,
    };
    let mut journal_error = None;
    let sink = if want_journal {
        match systemd_journal_logger::JournalLog::new() {
            Ok(journal) => {
                let journal = journal.with_syslog_identifier("tapd".to_owned());
                if log::set_boxed_logger(Box::new(journal)).is_ok() {
                    Sink::Journal
                } else {
                    Sink::Stderr
                }
            }
            Err(e) => {
                journal_error = Some(e);
                let _ = log::set_boxed_logger(Box::new(StderrLog));
                Sink::Stderr
            }
        }
    } else {
        let _ = log::set_boxed_logger(Box::new(StderrLog));
        Sink::Stderr
    };
    log::set_max_level(level);
    if let (Destination::Journal, Some(e)) = (destination, journal_error) {
        log::warn!(
            "log.format = \"journal\" but the journal can't be reached ({e}); logging to stderr"
        );
    }
    sink
}

/// Changes the level (on reload).
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

/// Readable stderr lines: `LEVEL target: message key=value…`.
struct StderrLog;

thread_local! {
    /// The line being written by this thread, kept between lines.
    static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// A buffer grown beyond this by an unusually long line is given back.
const MAX_KEPT_LINE: usize = 64 * 1024;

/// Formats `record` into `line` (cleared first) and writes it to stderr in one call.
fn write_line(line: &mut String, record: &Record) {
    use std::fmt::Write as _;
    line.clear();
    let _ = write!(
        line,
        "{:<5} {}: {}",
        record.level(),
        record.target(),
        record.args()
    );
    if record.target() != "tapd::audit" {
        let _ = record.key_values().visit(&mut KvWriter(line));
    }
    line.push('\n');
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

struct KvWriter<'a>(&'a mut String);

impl<'kvs> log::kv::VisitSource<'kvs> for KvWriter<'_> {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        use std::fmt::Write as _;
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}

impl Log for StderrLog {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // Each thread formats into its own reused buffer: a line per sign-in decision costs
        // no allocation once the buffer has grown to the longest line.
        LINE.with(|buffer| match buffer.try_borrow_mut() {
            Ok(mut line) => {
                write_line(&mut line, record);
                if line.capacity() > MAX_KEPT_LINE {
                    *line = String::new();
                }
            }
            // Logging from inside a Display of this very line: a line of its own.
            Err(_) => write_line(&mut String::new(), record),
        });
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Displays an error followed by each of its sources ("error connecting to server: Connection
/// refused (os error 111)"). A cause whose text the line already shows is not repeated, so an
/// error that writes its cause into its own message prints it once; the causes beneath it still
/// follow. Use it wherever an error is logged: `log::warn!("…: {}", ErrorChain(&err))`.
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.0.to_string();
        let mut source = self.0.source();
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        f.write_str(&text)
    }
}

/// What went wrong, in words, with the error that caused it kept as its [`Error::source`].
///
/// For error variants whose message is established text (tests and clients read it) but whose
/// cause must not be lost: `Display` is the message alone, exactly as given; [`ErrorChain`]
/// adds the causes the message does not already show. Cheap to clone (the cause is shared).
#[derive(Clone, Debug)]
pub struct Cause {
    message: String,
    source: Option<Arc<dyn Error + Send + Sync>>,
}

impl Cause {
    /// A message with no underlying error (the condition was detected here).
    pub fn new(message: impl Into<String>) -> Self {
        Cause {
            message: message.into(),
            source: None,
        }
    }

    /// A message caused by `source`, which is kept for the log's chain.
    pub fn with_source(
        message: impl Into<String>,
        source: impl Into<Box<dyn Error + Send + Sync>>,
    ) -> Self {
        Cause {
            message: message.into(),
            source: Some(Arc::from(source.into())),
        }
    }

    /// The message alone.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::ops::Deref for Cause {
    type Target = str;

    fn deref(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for Cause {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

impl From<String> for Cause {
    fn from(message: String) -> Self {
        Cause::new(message)
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Self {
        Cause::new(message)
    }
}

#[cfg(test)]
mod error_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("store unavailable: {0}")]
        Unavailable(#[source] Cause),
    }

    #[test]
    fn cause_keeps_its_message_and_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = Outer::Unavailable(Cause::with_source("PostgreSQL can't be reached", io));
        assert_eq!(
            err.to_string(),
            "store unavailable: PostgreSQL can't be reached"
        );
        let cause = err.source().unwrap();
        assert_eq!(cause.to_string(), "PostgreSQL can't be reached");
        assert_eq!(cause.source().unwrap().to_string(), "refused");
        assert_eq!(
            ErrorChain(&err).to_string(),
            "store unavailable: PostgreSQL can't be reached: refused"
        );
    }

    #[test]
    fn anyhow_context_over_a_kept_cause_prints_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let err = Outer::Unavailable(Cause::with_source(format!("creating /x: {io}"), io));
        let err = anyhow::Error::new(err).context("opening the store");
        assert_eq!(
            ErrorChain(&*err).to_string(),
            "opening the store: store unavailable: creating /x: denied"
        );
    }

    #[test]
    fn chain_does_not_repeat_a_cause_the_message_shows() {
        let io = std::io::Error::other("disk full");
        let err = Outer::Unavailable(Cause::with_source(format!("writing: {io}"), io));
        assert_eq!(
            ErrorChain(&err).to_string(),
            "store unavailable: writing: disk full"
        );
    }
}
