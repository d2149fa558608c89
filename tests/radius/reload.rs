//! SIGHUP reload of RADIUS secrets and federation tokens in the real daemon: the new secret
//! works and the old one gets no reply, the pid stays the same, and a broken configuration
//! leaves the running one (old secret included) in force.

use crate::harness::{
    curl, metric, radclient, write_private, Tapd, FEDERATION_TOKEN, RADIUS_SECRET,
};
use crate::pap_attributes;

const NEW_SECRET: &str = "radius-rotated-secret-9876543210";
const NEW_TOKEN: &str = "federation-rotated-token-9876543210";
const UNUSED_SECRET: &str = "radius-never-applied-secret-000000";
const RELOAD_OK: &str = r#"tapd_config_reloads_total{result="success"}"#;
const RELOAD_FAILED: &str = r#"tapd_config_reloads_total{result="failure"}"#;

fn authenticate(tapd: &Tapd, secret: &str) -> Option<String> {
    let result = radclient(
        tapd.radius,
        "auth",
        secret,
        &pap_attributes("bob", "bob-demo-pw"),
    );
    result.reply
}

fn federation_status(tapd: &Tapd, token: &str) -> u16 {
    let body = r#"{"userPrincipalName":"bob@example.org","credential":"bob-demo-pw"}"#;
    curl(
        tapd.web,
        "POST",
        "/federation/v1/authenticate",
        Some(token),
        Some(body),
    )
    .status
}

#[test]
fn sighup_swaps_radius_secrets_and_federation_tokens_and_a_broken_config_changes_nothing() {
    let mut tapd = Tapd::start();
    let pid = tapd.pid();
    assert_eq!(
        authenticate(&tapd, RADIUS_SECRET).as_deref(),
        Some("Access-Accept")
    );

    write_private(&tapd.dir().join("radius.secret"), NEW_SECRET);
    write_private(&tapd.dir().join("federation.token"), NEW_TOKEN);
    tapd.hang_up();
    tapd.wait_for_log(|line| line.contains("configuration reloaded from"));
    assert_eq!(
        authenticate(&tapd, NEW_SECRET).as_deref(),
        Some("Access-Accept")
    );
    assert_eq!(authenticate(&tapd, RADIUS_SECRET), None, "the old secret");
    assert_eq!(federation_status(&tapd, NEW_TOKEN), 200);
    assert_eq!(federation_status(&tapd, FEDERATION_TOKEN), 401);

    // A broken file: refused as a whole, so the secret file changed alongside is not read.
    let config = tapd.dir().join("tapd.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n[radius\nbroken = ")).unwrap();
    write_private(&tapd.dir().join("radius.secret"), UNUSED_SECRET);
    tapd.hang_up();
    tapd.wait_for_log(|line| line.contains("configuration reload refused"));
    assert_eq!(
        authenticate(&tapd, NEW_SECRET).as_deref(),
        Some("Access-Accept")
    );
    assert_eq!(authenticate(&tapd, UNUSED_SECRET), None, "never applied");
    assert_eq!(federation_status(&tapd, NEW_TOKEN), 200);

    assert!(tapd.is_running());
    assert_eq!(tapd.pid(), pid);
    let metrics = tapd.scrape();
    assert_eq!(metric(&metrics, RELOAD_OK), 1.0);
    assert_eq!(metric(&metrics, RELOAD_FAILED), 1.0);
}
