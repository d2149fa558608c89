//! The shipped unit: `systemd-analyze verify` accepts it and `systemd-analyze security`
//! scores it 2.0 or lower.

use std::path::Path;
use std::process::Command;

use crate::require_tool;

const UNIT: &str = include_str!("../../packaging/systemd/tapd.service");

/// The unit with `/usr/bin/tapd` replaced by the binary under test, and `MANPATH` holding
/// freshly generated man pages (verify checks `Documentation=man:…`).
fn installable_unit(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let generated = Command::new(env!("CARGO_BIN_EXE_tapd"))
        .arg("generate-docs")
        .arg(dir.join("docs"))
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");
    let unit_dir = dir.join("unit");
    std::fs::create_dir(&unit_dir).unwrap();
    let unit = unit_dir.join("tapd.service");
    std::fs::write(
        &unit,
        UNIT.replace("/usr/bin/tapd", env!("CARGO_BIN_EXE_tapd")),
    )
    .unwrap();
    (unit, dir.join("docs/man"))
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    require_tool("systemd-analyze", "systemd");
    require_tool("man", "man-db");
    let dir = tempfile::tempdir().unwrap();
    let (unit, manpath) = installable_unit(dir.path());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .env("MANPATH", &manpath)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    assert!(
        !stderr.contains("tapd.service:"),
        "systemd-analyze verify complained:\n{stderr}"
    );
}

#[test]
fn systemd_analyze_security_scores_two_or_lower() {
    require_tool("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().unwrap();
    let (unit, _) = installable_unit(dir.path());
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "systemd-analyze security failed (does this systemd support --offline? it needs 250+):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let score: f64 = stdout
        .lines()
        .find_map(|l| l.split("Overall exposure level for tapd.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|score| score.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{stdout}"));
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{stdout}");
}

#[test]
fn the_unit_has_what_the_daemon_relies_on() {
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=tapd",
        "SupplementaryGroups=tapd-admins",
        "StateDirectory=tapd",
        "RuntimeDirectory=tapd",
        "ConfigurationDirectory=tapd",
        "UMask=0077",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    ] {
        assert!(UNIT.lines().any(|l| l == line), "unit lacks {line:?}");
    }
    assert!(UNIT.lines().any(|l| l.starts_with("WatchdogSec=")));
    assert!(!UNIT.lines().any(|l| l.starts_with("PrivateUsers=")));
}
