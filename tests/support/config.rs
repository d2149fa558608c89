//! What a test writes before it starts a daemon: secret files (0600, since `tapd` refuses
//! secret files others may read), ports for listeners that can't take port 0, and the paths of
//! the repository's own fixtures and binaries.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A path inside the repository.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The LDIF demo directory (`etc/tapd/demo-directory.ldif`).
pub fn demo_ldif() -> PathBuf {
    repo_path("etc/tapd/demo-directory.ldif")
}

/// Writes a secret file with mode 0600, replacing what was there.
pub fn write_private(path: &Path, content: &str) {
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A free TCP port on 127.0.0.1 (bound and released; a small race the tests accept). Only for
/// what can't listen on port 0 and report the port (PostgreSQL, slapd, a config written before
/// the daemon that must name its own public URL).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a free loopback port")
}

/// The path of a binary of this package: `built` (`CARGO_BIN_EXE_<name>`), unless
/// `TAPD_TEST_BIN_DIR` names a folder holding copies (for a target dir that other checkouts
/// share and may rebuild while the tests run).
pub fn binary(name: &str, built: &str) -> PathBuf {
    match std::env::var_os("TAPD_TEST_BIN_DIR") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => PathBuf::from(built),
    }
}

/// The `tapd` binary to test.
pub fn tapd_binary() -> PathBuf {
    binary("tapd", env!("CARGO_BIN_EXE_tapd"))
}

/// The `tapctl` binary to test.
pub fn tapctl_binary() -> PathBuf {
    binary("tapctl", env!("CARGO_BIN_EXE_tapctl"))
}

/// Fails the test, naming the missing tool and how to get it.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not installed: run scripts/test.sh as root (it installs the Debian package {package})"
    );
}
