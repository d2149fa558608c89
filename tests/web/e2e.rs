//! The end-to-end test of DESIGN §5 in headless Debian Chromium, against the real `tapd`:
//! an administrator creates a one-time TAP with `tapctl` → the user signs in with it →
//! registers a passkey (WebAuthn virtual authenticator) → registers an authenticator app with a
//! code computed from the shown secret → signs out → signs in again with the passkey → the same
//! one-time TAP is refused (audited as `tap_one_time_used`, shown as Entra's "blocked due to
//! User Credential Policy" sentence); the admin API then lists both methods. The browser is driven by `tests/e2e/registration.mjs` (playwright-core); it saves a
//! screenshot of every page under `target/screenshots/`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tapd::policy::SignInFailure;

use crate::harness::{free_port, repo, Tapd};

/// Fails with what to do when a tool the test needs is missing.
fn require(path: &Path, what: &str) {
    assert!(
        path.exists(),
        "{what} is missing ({}): run scripts/test.sh, which installs it",
        path.display()
    );
}

#[test]
fn passkey_and_authenticator_app_registration_in_chromium() {
    let e2e = repo().join("tests/e2e");
    require(Path::new("/usr/bin/chromium"), "Debian's chromium");
    let node = std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("node"))
                .find(|candidate| candidate.exists())
        })
        .unwrap_or_else(|| Path::new("/usr/bin/node").to_path_buf());
    require(&node, "Node.js");
    require(
        &e2e.join("node_modules/playwright-core/package.json"),
        "playwright-core (npm ci in tests/e2e)",
    );

    let port = free_port();
    let base = format!("http://localhost:{port}");
    let tapd = Tapd::start(&format!(
        "[web]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"{base}\"\n\
         registration_interrupt_groups = [\"engineering\"]\n"
    ));
    let alice_tap = tapd.enable_policy_and_create_tap("alice", true);
    let bob = tapd.tapctl_json(&["tap", "create", "bob", "--start", "+2h"]);
    let bob_tap = bob["temporaryAccessPass"].as_str().unwrap().to_owned();
    let bob_start: chrono::DateTime<chrono::Utc> =
        bob["startDateTime"].as_str().unwrap().parse().unwrap();
    let erin = tapd.tapctl_json(&["tap", "create", "erin", "--one-time"]);
    let erin_tap = erin["temporaryAccessPass"].as_str().unwrap().to_owned();

    let screenshots = repo().join("target/screenshots");
    let mut child = Command::new(&node)
        .arg(e2e.join("registration.mjs"))
        .current_dir(&e2e)
        .env("BASE_URL", &base)
        .env("ALICE_TAP", &alice_tap)
        .env("BOB_TAP", &bob_tap)
        .env("ERIN_TAP", &erin_tap)
        .env("SCREENSHOTS", &screenshots)
        .env(
            "BLOCKED_MESSAGE",
            SignInFailure::TapOneTimeUsed.message(&base),
        )
        .env(
            "NOT_YET_VALID_MESSAGE",
            SignInFailure::TapNotYetValid { start: bob_start }.message(&base),
        )
        .env(
            "NOT_FOUND_MESSAGE",
            SignInFailure::TapNotFound.message(&base),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(150);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        status.is_some_and(|s| s.success()),
        "the browser test failed ({status:?}):\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("e2e: done"), "{stdout}");

    // The admin API lists both methods registered in the browser.
    let methods = tapd.tapctl_json(&["methods", "list", "alice"]);
    let types: Vec<&str> = methods["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["@odata.type"].as_str().unwrap())
        .collect();
    assert!(
        types.contains(&"#microsoft.graph.fido2AuthenticationMethod"),
        "{methods}"
    );
    assert!(
        types.contains(&"#microsoft.graph.softwareOathAuthenticationMethod"),
        "{methods}"
    );
    // And the audit has the registrations and the TAP sign-in.
    let audit = tapd
        .tapctl_json(&["audit", "--user", "alice@example.org"])
        .to_string();
    assert!(audit.contains("User registered security info"), "{audit}");
    assert!(audit.contains("Temporary Access Pass"), "{audit}");
    for name in [
        "01-sign-in",
        "02-tap-prompt",
        "04-security-info",
        "12-error-tap-blocked-by-policy",
    ] {
        assert!(screenshots.join(format!("{name}.png")).exists(), "{name}");
    }
}
