//! The secrets key file (`[store] secrets_key_file`): 32 random bytes that seal the
//! authenticator-app secrets in the store (`crate::store::seal`).
//!
//! Created at first start when missing: 32 bytes from the OS CSPRNG written to a temporary
//! file of mode 0600 in the same directory, synced, then linked into place (so a crash never
//! leaves a half-written key, and of two processes creating it at once, both end up with the
//! one that won). A key file of the wrong length, or one that others could read or replace
//! (see `unsafe_secret_file`), is refused with the fix named. A refusal is a [`Cause`]: the
//! message names the file and the fix, and the OS error, when there is one, is its source.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use rand::RngCore;
use zeroize::Zeroizing;

use super::values::unsafe_secret_file;
use crate::logging::Cause;
use crate::store::seal::KEY_BYTES;

/// The key's file name next to a SQLite database when `secrets_key_file` is not set.
pub const DEFAULT_FILE_NAME: &str = "secrets.key";
/// The key's path for a PostgreSQL store when `secrets_key_file` is not set.
pub const DEFAULT_POSTGRES_PATH: &str = "/var/lib/tapd/secrets.key";

/// A secrets key read from its file.
pub type SecretsKey = Zeroizing<[u8; KEY_BYTES]>;

/// Reads an existing key file: exactly 32 bytes, safe ownership and mode.
pub fn read(path: &Path) -> Result<SecretsKey, Cause> {
    if let Some(unsafe_because) = unsafe_secret_file(path) {
        return Err(Cause::new(unsafe_because));
    }
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|err| {
        Cause::with_source(format!("cannot read {}: {err}", path.display()), err)
    })?);
    let mut key = Zeroizing::new([0u8; KEY_BYTES]);
    if bytes.len() != KEY_BYTES {
        return Err(Cause::new(format!(
            "{} holds {} bytes; a secrets key is exactly {KEY_BYTES} random bytes \
             (create one with: head -c {KEY_BYTES} /dev/urandom > FILE; chmod 600 FILE)",
            path.display(),
            bytes.len()
        )));
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

/// Reads the key file, first creating it (and its directory, mode 0700) when missing.
pub fn read_or_create(path: &Path) -> Result<SecretsKey, Cause> {
    if !path.exists() {
        create(path)?;
        log::info!("created the secrets key {}", path.display());
    }
    read(path)
}

fn create(path: &Path) -> Result<(), Cause> {
    let shown = path.display();
    let dir = path
        .parent()
        .ok_or_else(|| Cause::new(format!("{shown} has no parent directory")))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|err| {
            Cause::with_source(format!("cannot create {}: {err}", dir.display()), err)
        })?;
    let mut key = Zeroizing::new([0u8; KEY_BYTES]);
    rand::rngs::OsRng.fill_bytes(&mut *key);
    let staged = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&staged)?;
        file.write_all(&*key)?;
        file.sync_all()
    })();
    if let Err(err) = written {
        let _ = std::fs::remove_file(&staged);
        return Err(Cause::with_source(
            format!("cannot write {}: {err}", staged.display()),
            err,
        ));
    }
    // link() never replaces: a key another process created meanwhile wins and is used.
    let linked = std::fs::hard_link(&staged, path);
    let _ = std::fs::remove_file(&staged);
    match linked {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => {
            return Err(Cause::with_source(
                format!("cannot create {shown}: {err}"),
                err,
            ))
        }
    }
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_missing_key_is_created_private_and_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/secrets.key");
        let key = read_or_create(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), KEY_BYTES as u64);
        let parent = std::fs::metadata(path.parent().unwrap()).unwrap();
        assert_eq!(parent.permissions().mode() & 0o777, 0o700);
        assert_eq!(*read_or_create(&path).unwrap(), *key);
        assert_ne!(*key, [0u8; KEY_BYTES]);
        // No staging file left behind.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn a_short_or_exposed_key_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        std::fs::write(&path, b"too short").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = read(&path).unwrap_err();
        assert!(err.contains("holds 9 bytes"), "{err}");
        std::fs::write(&path, [1u8; KEY_BYTES]).unwrap();
        assert!(read(&path).is_ok());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_or_create(&path).unwrap_err();
        assert!(
            err.contains(&format!("chmod 600 {}", path.display())),
            "{err}"
        );
    }
}
