//! The one directory the unit tests use in place of LDAP: either empty with every password
//! `<username>-pw`, or the repository's LDIF demo directory with its own passwords. It counts
//! password checks and can pretend to be down, so tests see when a check reached the
//! directory and what happens when it can't.
//!
//! May depend on: `directory::ldif`, `model`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;

use super::ldif::LdifDirectory;
use super::{DirectoryContents, DirectoryError, DirectorySource, PasswordCheck};
use crate::model::User;

/// A counting test directory (see the module doc).
#[derive(Default)]
pub(crate) struct FakeDirectory {
    /// The demo directory, or `None`: empty contents and `<username>-pw` passwords.
    inner: Option<LdifDirectory>,
    /// Password checks so far, including those refused while down.
    pub(crate) checks: AtomicUsize,
    /// While true, every password check fails as unavailable.
    pub(crate) down: AtomicBool,
}

impl FakeDirectory {
    /// Empty contents; the password of every user is `<username>-pw`.
    pub(crate) fn new() -> FakeDirectory {
        FakeDirectory::default()
    }

    /// The LDIF demo directory (`etc/tapd/demo-directory.ldif`, base `dc=example,dc=org`).
    pub(crate) fn demo() -> FakeDirectory {
        let ldif =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/tapd/demo-directory.ldif");
        FakeDirectory {
            inner: Some(
                LdifDirectory::open(ldif)
                    .unwrap()
                    .with_base_dn("dc=example,dc=org"),
            ),
            ..FakeDirectory::default()
        }
    }
}

#[async_trait]
impl DirectorySource for FakeDirectory {
    async fn read_all(&self) -> Result<DirectoryContents, DirectoryError> {
        match &self.inner {
            Some(inner) => inner.read_all().await,
            None => Ok(DirectoryContents::default()),
        }
    }

    async fn check_password(
        &self,
        user: &User,
        password: &str,
    ) -> Result<PasswordCheck, DirectoryError> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(DirectoryError::Unavailable("test: directory down".into()));
        }
        match &self.inner {
            Some(inner) => inner.check_password(user, password).await,
            None => Ok(if password == format!("{}-pw", user.username) {
                PasswordCheck::Valid
            } else {
                PasswordCheck::Invalid
            }),
        }
    }

    fn describe(&self) -> String {
        match &self.inner {
            Some(inner) => inner.describe(),
            None => "fake".into(),
        }
    }
}
