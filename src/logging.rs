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

/// Installs the logger once; later calls only change the level.
pub fn init(level: LevelFilter) -> Sink {
    let sink = if stderr_is_journal() {
        match systemd_journal_logger::JournalLog::new() {
            Ok(journal) => {
                let journal = journal.with_syslog_identifier("tapd".to_owned());
                if log::set_boxed_logger(Box::new(journal)).is_ok() {
                    Sink::Journal
                } else {
                    Sink::Stderr
                }
            }
            Err(_) => {
                let _ = log::set_boxed_logger(Box::new(StderrLog));
                Sink::Stderr
            }
        }
    } else {
        let _ = log::set_boxed_logger(Box::new(StderrLog));
        Sink::Stderr
    };
    log::set_max_level(level);
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
