//! Password checks by LDAP bind, on a small bounded pool of connections kept apart from the
//! sync connection.
//!
//! At most `size` binds run at once per RADIUS thread (each drives its own connections, see
//! [`Driver`]) and `size` for every other caller together; a check that can't get a
//! connection within the operation timeout is answered "directory unavailable" rather than queued without end (a RADIUS client
//! retries, a person sees a clear message). Connections are reused: a later check simply binds
//! again on a connection a previous check used (a bind replaces the connection's identity, and
//! pool connections are used for nothing but binds). A reused connection the server has closed
//! meanwhile is detected and replaced once, transparently.
//!
//! A successful bind is confirmed before it counts: the entry now bound is read once, base
//! scope on the same connection, for its stable id ([`Schema::user_id`], the encoding the sync
//! uses), which must be the id of the user tapd meant. The DN alone proves nothing: after a
//! rename, another entry (with a password its creator knows) can sit at the DN of the last
//! sync. A different id, or an entry that can't be read, is
//! [`PasswordCheck::BoundIdentityMismatch`]. That read is the only extra round trip of an
//! accept; the service account is not involved.
//!
//! Only result code 0 is a valid password. Code 49 (invalidCredentials) is a wrong password;
//! busy, unavailable, timeouts and lost connections are [`DirectoryError::Unavailable`]; every
//! other code (a locked account's `unwillingToPerform`, a server's `constraintViolation`…) is a
//! failed check too, logged with the code.
//!
//! May depend on: `connection`, `schema`, `directory` (trait types), `tokio`.

use std::sync::{Arc, Mutex};

use ldap3::{Ldap, LdapError, Scope};
use tokio::sync::Semaphore;

use super::connection::{describe, describe_result, rc, Connector};
use super::entry::{decode_entry, LdapEntry};
use super::schema::Schema;
use crate::directory::{DirectoryError, PasswordCheck};

/// The bounded pool of bind connections.
#[derive(Debug)]
pub struct BindPool {
    connector: Connector,
    schema: Schema,
    /// Binds allowed at once, per driver: a RADIUS thread waits only for its own binds, so a
    /// bind finishing on one thread never has to wake another.
    permits: Mutex<Vec<(Driver, Arc<Semaphore>)>>,
    /// Idle connections with the runtime thread whose tasks drive them.
    idle: Mutex<Vec<(Driver, Ldap)>>,
    size: usize,
}

/// Where a connection's I/O task runs: a connection opened on a single-threaded runtime (one
/// RADIUS thread) is driven by that thread, so it is reused only there, where a bind doesn't
/// cross threads; connections of a multi-threaded runtime are shared by its callers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Driver {
    Shared,
    Thread(std::thread::ThreadId),
}

impl Driver {
    fn current() -> Driver {
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::CurrentThread) => {
                Driver::Thread(std::thread::current().id())
            }
            _ => Driver::Shared,
        }
    }
}

/// Why one bind attempt did not produce an answer.
enum Attempt {
    /// The server answered.
    Answered(PasswordCheck),
    /// The connection failed before an answer; worth one retry if it was a reused one.
    Transport(LdapError),
}

impl BindPool {
    /// A pool of at most `size` connections (at least one), confirming bound entries' ids as
    /// `schema` reads them.
    pub fn new(connector: Connector, size: usize, schema: Schema) -> Self {
        let size = size.max(1);
        BindPool {
            connector,
            schema,
            permits: Mutex::new(Vec::new()),
            idle: Mutex::new(Vec::with_capacity(size)),
            size,
        }
    }

    /// Binds as `dn` with `password` and reports the outcome; a successful bind is
    /// [`PasswordCheck::Valid`] only when the entry at `dn` has the stable id `user_id`. The
    /// caller has already refused unusable passwords and empty DNs.
    pub async fn check(
        &self,
        dn: &str,
        user_id: &str,
        password: &str,
    ) -> Result<PasswordCheck, DirectoryError> {
        let wait = self.connector.operation_timeout();
        let permits = self.permits_here();
        let _permit = match tokio::time::timeout(wait, permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) | Err(_) => {
                return Err(DirectoryError::unavailable(format!(
                    "all {} password-check connections to {} stayed busy for {wait:?}",
                    self.size,
                    self.connector.url()
                )))
            }
        };
        if let Some(mut ldap) = self.take_idle() {
            match self.bind(&mut ldap, dn, user_id, password).await {
                Attempt::Answered(outcome) => {
                    self.put_idle(ldap);
                    return Ok(outcome);
                }
                Attempt::Transport(LdapError::Timeout { .. }) => {
                    return Err(DirectoryError::unavailable(format!(
                        "{}: password check timed out after {wait:?}",
                        self.connector.url()
                    )));
                }
                Attempt::Transport(e) => {
                    log::debug!(
                        "pooled LDAP connection failed ({}); retrying on a new one",
                        describe(&e)
                    );
                }
            }
        }
        let mut ldap = self.connector.connect().await?;
        match self.bind(&mut ldap, dn, user_id, password).await {
            Attempt::Answered(outcome) => {
                self.put_idle(ldap);
                Ok(outcome)
            }
            Attempt::Transport(e) => Err(self
                .connector
                .transport_error("checking a password by bind", e)),
        }
    }

    async fn bind(&self, ldap: &mut Ldap, dn: &str, user_id: &str, password: &str) -> Attempt {
        let result = match ldap
            .with_timeout(self.connector.operation_timeout())
            .simple_bind(dn, password)
            .await
        {
            Ok(result) => result,
            Err(e) => return Attempt::Transport(e),
        };
        match result.rc {
            rc::SUCCESS => self.confirm(ldap, dn, user_id).await,
            rc::INVALID_CREDENTIALS => Attempt::Answered(PasswordCheck::Invalid),
            rc::BUSY | rc::UNAVAILABLE | rc::OTHER => {
                Attempt::Transport(LdapError::LdapResult { result })
            }
            _ => {
                log::info!(
                    "password check bind as {dn} failed: {}",
                    describe_result(&result)
                );
                Attempt::Answered(PasswordCheck::Invalid)
            }
        }
    }

    /// After a successful bind as `dn`: whether the entry there is the user `user_id`, read
    /// with the bound identity on the same connection.
    async fn confirm(&self, ldap: &mut Ldap, dn: &str, user_id: &str) -> Attempt {
        let attributes = [self.schema.user_id_attribute().to_owned()];
        let bound_id = match self.read_bound(ldap, dn, &attributes).await {
            Ok(Some(entry)) => self.schema.user_id(&entry),
            Ok(None) => Err(format!("{dn} can't be read after binding to it")),
            Err(e) => return Attempt::Transport(e),
        };
        match bound_id {
            Ok(id) if id == user_id => Attempt::Answered(PasswordCheck::Valid),
            Ok(id) => {
                log::warn!(
                    "password check: the entry at {dn} has {} {id}, not {user_id} as at the last \
                     sync (renamed, and another entry created at its DN?); rejected",
                    self.schema.user_id_attribute()
                );
                Attempt::Answered(PasswordCheck::BoundIdentityMismatch)
            }
            Err(reason) => {
                log::warn!(
                    "password check: the bound entry's {} can't be confirmed ({reason}); rejected",
                    self.schema.user_id_attribute()
                );
                Attempt::Answered(PasswordCheck::BoundIdentityMismatch)
            }
        }
    }

    /// Reads `dn` (base scope) for `attributes`. `Ok(None)` when the server answers without
    /// the entry or refuses the read; `Err` for a lost connection, a timeout or a busy server.
    async fn read_bound(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        attributes: &[String],
    ) -> Result<Option<LdapEntry>, LdapError> {
        let answer = ldap
            .with_timeout(self.connector.operation_timeout())
            .search(dn, Scope::Base, "(objectClass=*)", attributes)
            .await?;
        let (entries, result) = (answer.0, answer.1);
        match result.rc {
            rc::SUCCESS => {}
            rc::BUSY | rc::UNAVAILABLE | rc::OTHER => {
                return Err(LdapError::LdapResult { result });
            }
            _ => {
                log::info!(
                    "reading {dn} after binding to it: {}",
                    describe_result(&result)
                );
                return Ok(None);
            }
        }
        Ok(entries
            .into_iter()
            .find(|e| !e.is_ref() && !e.is_intermediate())
            .and_then(|entry| decode_entry(entry.0).ok()))
    }

    /// The bind permits of the calling runtime thread (or of the shared runtime).
    fn permits_here(&self) -> Arc<Semaphore> {
        let here = Driver::current();
        let mut all = self.permits.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, permits)) = all.iter().find(|(driver, _)| *driver == here) {
            return permits.clone();
        }
        let permits = Arc::new(Semaphore::new(self.size));
        all.push((here, permits.clone()));
        permits
    }

    fn take_idle(&self) -> Option<Ldap> {
        let here = Driver::current();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain_mut(|(_, ldap)| !ldap.is_closed());
        let found = idle.iter().rposition(|(driver, _)| *driver == here)?;
        Some(idle.swap_remove(found).1)
    }

    /// Keeps `ldap` for reuse on this runtime thread; at most `size` idle per thread (each
    /// RADIUS thread keeps its own, so a busy thread never waits for another's connection).
    fn put_idle(&self, ldap: Ldap) {
        let here = Driver::current();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.iter().filter(|(driver, _)| *driver == here).count() < self.size {
            idle.push((here, ldap));
        }
    }

    /// How many connections are open and idle (for tests and metrics).
    pub fn idle_connections(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Drops every idle connection (their I/O tasks end).
    pub fn clear(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}
