//! Sign-in names are keys, through the real daemon and `tapctl`: a directory user who edits
//! their own `mail` to a colleague's username is quarantined, `tapctl` acts on the colleague
//! under that name, and the conflict shows in `tapctl user show`, `tapctl sync status` and
//! `tapctl audit`.

use super::harness::{upn, Tapd, Who};

#[test]
fn a_mail_edited_to_a_colleagues_username_is_a_visible_quarantine() {
    let tapd = Tapd::start();
    let ldif = tapd.config.with_file_name("directory.ldif");
    let text = std::fs::read_to_string(&ldif).unwrap();
    let attacker = format!("mail: {}\n", upn("tapit-m1"));
    assert!(text.contains(&attacker));
    // tapit-m1 sets their own mail (the openldap preset's UPN) to tapit-mem's username.
    std::fs::write(&ldif, text.replace(&attacker, "mail: TAPIT-MEM\n")).unwrap();
    tapd.tapctl(Who::Root, &["sync", "run"]).ok();

    let shown = tapd.tapctl(Who::Root, &["user", "show", "tapit-m1"]);
    let shown = shown.ok();
    assert!(
        shown.contains("QUARANTINED") && shown.contains("held by tapit-mem"),
        "{shown}"
    );
    // Under the contested name, tapctl finds the user who held it.
    let victim = tapd
        .tapctl(Who::Root, &["--json", "user", "show", "tapit-mem"])
        .json();
    assert_eq!(victim["onPremisesSamAccountName"], "tapit-mem");
    assert!(victim.get("identityConflict").is_none(), "{victim:#}");
    let status = tapd.tapctl(Who::Root, &["sync", "status"]);
    assert!(
        status.ok().contains("identityConflicts") && status.ok().contains("uid=tapit-m1"),
        "{status}"
    );
    tapd.tapctl(Who::Root, &["policy", "set", "--state", "enabled"])
        .ok();
    tapd.tapctl(Who::Root, &["tap", "create", "tapit-m1"])
        .refused("409", "quarantined");
    let audit = tapd.tapctl(Who::Root, &["audit", "--activity", "identity conflict"]);
    assert!(
        audit.ok().contains("Directory sync: identity conflict"),
        "{audit}"
    );
}
