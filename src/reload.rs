//! Configuration reload (SIGHUP) without closing sockets or dropping requests in flight.
//!
//! The running configuration lives in a `tokio::sync::watch` channel of `Arc<Config>`:
//! components that can follow a new configuration per request (RADIUS clients and secrets,
//! federation tokens) keep a [`watch::Receiver`] from [`Reloader::subscribe`] and read
//! `receiver.borrow().clone()` at the start of each request, so a request in flight finishes
//! with the configuration it started with. Components that must do fallible work first (parse
//! new TLS certificates, rebuild a role mapping) register a [`Reloadable`]: on reload every
//! part *prepares* the new configuration, and only when all of them succeeded are the
//! prepared changes committed and the new configuration published. A single failure refuses
//! the whole reload and the old configuration keeps running, untouched.
//!
//! Listening addresses, the store, the admin socket, the directory source and the log
//! destination are fixed at start: a reload that changes them applies everything else and
//! warns that those keys need a restart.
//!
//! May depend on: `config`.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::config::Config;

/// A commit step returned by [`Reloadable::prepare`]: applies the prepared change. Must not
/// fail (everything that can fail belongs in `prepare`).
pub type Commit = Box<dyn FnOnce() + Send>;

/// Something that follows configuration reloads.
pub trait Reloadable: Send + Sync {
    /// Short name for logs (`"RADIUS clients"`, `"web TLS certificate"`).
    fn name(&self) -> &str;

    /// Checks `next` and prepares everything needed to switch to it (read and parse files,
    /// build tables) without changing what is running; returns the step that switches.
    fn prepare(&self, next: &Arc<Config>) -> Result<Commit, String>;
}

/// A [`Reloadable`] made of a name and a closure.
pub struct ReloadFn<F> {
    name: String,
    prepare: F,
}

impl<F> Reloadable for ReloadFn<F>
where
    F: Fn(&Arc<Config>) -> Result<Commit, String> + Send + Sync,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn prepare(&self, next: &Arc<Config>) -> Result<Commit, String> {
        (self.prepare)(next)
    }
}

/// Wraps a closure as a [`Reloadable`].
pub fn reloadable<F>(name: &str, prepare: F) -> ReloadFn<F>
where
    F: Fn(&Arc<Config>) -> Result<Commit, String> + Send + Sync,
{
    ReloadFn {
        name: name.to_owned(),
        prepare,
    }
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// One or more parts could not prepare the new configuration.
    #[error("{}", .failures.join("; "))]
    Refused {
        /// `part: problem`, one per failing part.
        failures: Vec<String>,
    },
}

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Parts that applied the new configuration.
    pub applied: Vec<String>,
    /// Changed keys that only take effect after a restart.
    pub restart_required: Vec<&'static str>,
}

/// Holds the running configuration and the parts that follow it.
pub struct Reloader {
    current: watch::Sender<Arc<Config>>,
    parts: Mutex<Vec<Box<dyn Reloadable>>>,
}

impl Reloader {
    /// Starts with `config` in force.
    pub fn new(config: Arc<Config>) -> Self {
        Reloader {
            current: watch::Sender::new(config),
            parts: Mutex::new(Vec::new()),
        }
    }

    /// The configuration in force now.
    pub fn current(&self) -> Arc<Config> {
        self.current.borrow().clone()
    }

    /// A receiver that always holds the configuration in force.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.current.subscribe()
    }

    /// Adds a part that follows reloads.
    pub fn register(&self, part: impl Reloadable + 'static) {
        self.parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(part));
    }

    /// Switches to `next` if every part can prepare it; otherwise changes nothing.
    pub fn reload(&self, next: Config) -> Result<Reloaded, ReloadError> {
        let next = Arc::new(next);
        let parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        let mut commits = Vec::with_capacity(parts.len());
        let mut failures = Vec::new();
        for part in parts.iter() {
            match part.prepare(&next) {
                Ok(commit) => commits.push((part.name().to_owned(), commit)),
                Err(problem) => failures.push(format!("{}: {problem}", part.name())),
            }
        }
        if !failures.is_empty() {
            return Err(ReloadError::Refused { failures });
        }
        let restart_required = restart_required(&self.current(), &next);
        let mut applied = Vec::with_capacity(commits.len());
        for (name, commit) in commits {
            commit();
            applied.push(name);
        }
        self.current.send_replace(next);
        Ok(Reloaded {
            applied,
            restart_required,
        })
    }
}

/// Keys that differ between `old` and `new` but are only read at start.
pub fn restart_required(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |changed: bool, key: &'static str| {
        if changed {
            keys.push(key);
        }
    };
    check(old.store.url != new.store.url, "store.url");
    check(
        old.store.busy_timeout != new.store.busy_timeout,
        "store.busy_timeout",
    );
    check(
        old.directory.source != new.directory.source,
        "directory.url",
    );
    check(
        old.directory.base_dn != new.directory.base_dn,
        "directory.base_dn",
    );
    check(
        old.directory.sync_interval != new.directory.sync_interval,
        "directory.sync_interval",
    );
    check(
        old.directory.deletion_guard != new.directory.deletion_guard,
        "directory.deletion_guard_*",
    );
    // The directory source reads the date attributes it was built with.
    check(
        old.directory.attributes.dates != new.directory.attributes.dates,
        "onboarding.rules.date_attribute",
    );
    check(old.admin.socket != new.admin.socket, "admin.socket");
    check(
        old.admin.socket_group != new.admin.socket_group,
        "admin.socket_group",
    );
    check(old.radius.listen != new.radius.listen, "radius.listen");
    check(old.web.listen != new.web.listen, "web.listen");
    check(
        old.federation.listen != new.federation.listen,
        "federation.listen",
    );
    check(old.metrics.listen != new.metrics.listen, "metrics.listen");
    check(old.log.format != new.log.format, "log.format");
    check(
        old.security.argon2_max_concurrent != new.security.argon2_max_concurrent,
        "security.argon2_max_concurrent",
    );
    // The mail worker is built once at start; messages queued meanwhile wait for it.
    let smtp = |c: &Config| {
        c.smtp.as_ref().map(|s| {
            (
                s.server.clone(),
                s.from.clone(),
                s.ca_file.clone(),
                s.credentials.as_ref().map(|(user, _)| user.clone()),
                s.template.clone(),
                s.time_zone.iana_name().map(str::to_owned),
                (s.max_attempts, s.retry_initial, s.retry_max, s.timeout),
                s.sign_in_url.clone(),
            )
        })
    };
    check(smtp(old) != smtp(new), "smtp");
    check(
        old.audit.sign_in_flush != new.audit.sign_in_flush,
        "audit.sign_in_flush",
    );
    keys
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[store]\nurl = \"sqlite:/tmp/x.db\"\n[directory]\nurl = \"file:/tmp/d.ldif\"\n{extra}"
        );
        crate::config::load_from_str(&text, &[], Path::new("/"))
            .unwrap()
            .config
    }

    #[test]
    fn an_smtp_change_needs_a_restart_and_onboarding_rules_do_not() {
        let web = "[web]\npublic_url = \"https://tapd.example.org\"\n";
        let smtp = |host: &str| {
            format!("{web}[smtp]\nurl = \"smtps://{host}\"\nfrom = \"tapd@example.org\"\n")
        };
        let rule =
            "[[onboarding.rules]]\nname = \"n\"\ngroup = \"g\"\nrecipient = \"r@example.org\"\n";
        let old = config(&smtp("mail.example.org"));
        assert!(restart_required(&old, &config(&smtp("mail.example.org"))).is_empty());
        assert_eq!(
            restart_required(&old, &config(&smtp("other.example.org"))),
            vec!["smtp"]
        );
        assert_eq!(restart_required(&old, &config(web)), vec!["smtp"]);
        let with_rule = format!("{}{rule}", smtp("mail.example.org"));
        assert!(restart_required(&old, &config(&with_rule)).is_empty());
        // A new date attribute is read by the directory source, which is built at start.
        let dated = format!("{with_rule}date_attribute = \"employeeHireDate\"\n");
        assert_eq!(
            restart_required(&old, &config(&dated)),
            vec!["onboarding.rules.date_attribute"]
        );
    }

    #[test]
    fn a_failing_part_refuses_the_whole_reload() {
        let reloader = Reloader::new(Arc::new(config("[log]\nlevel = \"info\"\n")));
        let applied = Arc::new(AtomicUsize::new(0));
        let counter = applied.clone();
        reloader.register(reloadable("counter", move |_| {
            let counter = counter.clone();
            Ok(Box::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            }))
        }));
        reloader.register(reloadable("picky", |next| {
            if next.log.level == log::LevelFilter::Debug {
                Err("no debug here".to_owned())
            } else {
                Ok(Box::new(|| {}))
            }
        }));
        let mut receiver = reloader.subscribe();

        let refused = reloader
            .reload(config("[log]\nlevel = \"debug\"\n"))
            .unwrap_err();
        assert_eq!(refused.to_string(), "picky: no debug here");
        assert_eq!(applied.load(Ordering::SeqCst), 0);
        assert_eq!(reloader.current().log.level, log::LevelFilter::Info);
        assert!(!receiver.has_changed().unwrap());

        let done = reloader
            .reload(config(
                "[log]\nlevel = \"warn\"\n[metrics]\nlisten = \"127.0.0.1:1\"\n",
            ))
            .unwrap();
        assert_eq!(done.applied, vec!["counter", "picky"]);
        assert_eq!(done.restart_required, vec!["metrics.listen"]);
        assert_eq!(applied.load(Ordering::SeqCst), 1);
        assert!(receiver.has_changed().unwrap());
        assert_eq!(
            receiver.borrow_and_update().log.level,
            log::LevelFilter::Warn
        );
    }
}
