//! The `sqlite3` command-line shell on a daemon's database: what someone with a shell on the
//! host can do to the file behind tapd's back (read it, alter a row), for the tests that attack
//! the store from below.

use std::path::Path;
use std::process::Command;

use super::config::require_tool;

/// Runs `sql` on the SQLite database `db` with the `sqlite3` shell (waiting up to 5 s for a
/// lock) and returns its output, trimmed; fails the test with sqlite3's message if it fails.
pub fn sqlite3(db: &Path, sql: &str) -> String {
    require_tool("sqlite3", "sqlite3");
    let output = Command::new("sqlite3")
        .args(["-cmd", ".timeout 5000"])
        .arg(db)
        .arg(sql)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "sqlite3 {sql:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
