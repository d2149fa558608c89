//! Logging through the `log` facade: to the systemd journal with structured fields when stderr
//! is connected to it (`JOURNAL_STREAM` names stderr's device and inode), otherwise readable
//! lines on stderr. The level comes from the configuration and can change on reload.
//!
//! May depend on: nothing in this crate.

use std::io::Write;
use std::os::unix::fs::MetadataExt;

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
        let mut line = format!(
            "{:<5} {}: {}",
            record.level(),
            record.target(),
            record.args()
        );
        if record.target() != "tapd::audit" {
            let _ = record.key_values().visit(&mut KvWriter(&mut line));
        }
        line.push('\n');
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}
