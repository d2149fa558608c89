//! Password checks by LDAP bind, on a small bounded pool of connections kept apart from the
//! sync connection.
//!
//! At most `size` binds run at once; a check that can't get a connection within the operation
//! timeout is answered "directory unavailable" rather than queued without end (a RADIUS client
//! retries, a person sees a clear message). Connections are reused: a later check simply binds
//! again on a connection a previous check used (a bind replaces the connection's identity, and
//! pool connections are used for nothing but binds). A reused connection the server has closed
//! meanwhile is detected and replaced once, transparently.
//!
//! Only result code 0 is a valid password. Code 49 (invalidCredentials) is a wrong password;
//! busy, unavailable, timeouts and lost connections are [`DirectoryError::Unavailable`]; every
//! other code (a locked account's `unwillingToPerform`, a server's `constraintViolation`…) is a
//! failed check too, logged with the code.
//!
//! May depend on: `connection`, `directory` (trait types), `tokio`.

use std::sync::Mutex;

use ldap3::{Ldap, LdapError};
use tokio::sync::Semaphore;

use super::connection::{describe, describe_result, rc, Connector};
use crate::directory::{DirectoryError, PasswordCheck};

/// The bounded pool of bind connections.
#[derive(Debug)]
pub struct BindPool {
    connector: Connector,
    permits: Semaphore,
    idle: Mutex<Vec<Ldap>>,
    size: usize,
}

/// Why one bind attempt did not produce an answer.
enum Attempt {
    /// The server answered.
    Answered(PasswordCheck),
    /// The connection failed before an answer; worth one retry if it was a reused one.
    Transport(LdapError),
}

impl BindPool {
    /// A pool of at most `size` connections (at least one).
    pub fn new(connector: Connector, size: usize) -> Self {
        let size = size.max(1);
        BindPool {
            connector,
            permits: Semaphore::new(size),
            idle: Mutex::new(Vec::with_capacity(size)),
            size,
        }
    }

    /// Binds as `dn` with `password` and reports the outcome. The caller has already refused
    /// unusable passwords and empty DNs.
    pub async fn check(&self, dn: &str, password: &str) -> Result<PasswordCheck, DirectoryError> {
        let wait = self.connector.operation_timeout();
        let _permit = match tokio::time::timeout(wait, self.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) | Err(_) => {
                return Err(DirectoryError::Unavailable(format!(
                    "all {} password-check connections to {} stayed busy for {wait:?}",
                    self.size,
                    self.connector.url()
                )))
            }
        };
        if let Some(mut ldap) = self.take_idle() {
            match self.bind(&mut ldap, dn, password).await {
                Attempt::Answered(outcome) => {
                    self.put_idle(ldap);
                    return Ok(outcome);
                }
                Attempt::Transport(LdapError::Timeout { .. }) => {
                    return Err(DirectoryError::Unavailable(format!(
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
        match self.bind(&mut ldap, dn, password).await {
            Attempt::Answered(outcome) => {
                self.put_idle(ldap);
                Ok(outcome)
            }
            Attempt::Transport(e) => Err(self
                .connector
                .transport_error("checking a password by bind", &e)),
        }
    }

    async fn bind(&self, ldap: &mut Ldap, dn: &str, password: &str) -> Attempt {
        let result = match ldap
            .with_timeout(self.connector.operation_timeout())
            .simple_bind(dn, password)
            .await
        {
            Ok(result) => result,
            Err(e) => return Attempt::Transport(e),
        };
        match result.rc {
            rc::SUCCESS => Attempt::Answered(PasswordCheck::Valid),
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

    fn take_idle(&self) -> Option<Ldap> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(mut ldap) = idle.pop() {
            if !ldap.is_closed() {
                return Some(ldap);
            }
        }
        None
    }

    fn put_idle(&self, ldap: Ldap) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.size {
            idle.push(ldap);
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
