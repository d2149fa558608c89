//! The `active_directory` preset against an Active Directory stand-in: slapd with AD's
//! attribute types ([`super::harness::AD_SCHEMA`]) and a root DSE naming a domain controller. It
//! checks what slapd can stand in for: entries keyed by the binary `objectGUID`,
//! `sAMAccountName` and `userPrincipalName`, `userAccountControl`'s ACCOUNTDISABLE bit, nested
//! `member` groups, and incremental syncs by `uSNChanged`, which are only valid on the domain
//! controller (and the restore of its database) the last read came from. slapd maintains no
//! USNs, so the tests write `uSNChanged` and `highestCommittedUSN` as a DC would.
//!
//! Not covered: ranged `member;range=` values and LDAP_MATCHING_RULE_IN_CHAIN, which slapd
//! does not implement.

use ldap3::Mod;
use tapd::config::DirectoryPreset;
use tapd::directory::ldap::entry::format_object_guid;
use tapd::directory::ldap::LdapSettings;

use super::fixtures::{group_dn, skeleton, user_dn, Ldif};
use super::harness::Slapd;
use super::{group_names, scoped, Node};

const NTDS_SETTINGS: &str = "cn=NTDS Settings,ou=services,dc=example,dc=org";

fn guid(n: u8) -> [u8; 16] {
    let mut guid = [0x5a; 16];
    guid[0] = n;
    guid[15] = n;
    guid
}

fn root_dse(usn: u64, host: &str) -> String {
    format!(
        "dn:\nhighestCommittedUSN: {usn}\ndnsHostName: {host}\ndsServiceName: {NTDS_SETTINGS}\n"
    )
}

/// Three users (`carol` disabled), `tap-users` holding `alice` and the group `staff`, which
/// holds `dave`; `tap-excluded` holding `carol`. Every entry at uSNChanged 100 or below.
fn directory() -> String {
    let mut ldif = Ldif::default();
    skeleton(&mut ldif);
    ldif.entry(NTDS_SETTINGS)
        .attr("objectClass", "nTDSDSA")
        .attr("cn", "NTDS Settings")
        .attr_bytes("invocationId", &guid(200));
    for (n, name, control) in [(1, "alice", "512"), (2, "dave", "512"), (3, "carol", "514")] {
        ldif.entry(&user_dn(name))
            .attr("objectClass", "inetOrgPerson")
            .attr("objectClass", "user")
            .attr("objectCategory", "person")
            .attr("uid", name)
            .attr("cn", name)
            .attr("sn", "Test")
            .attr("displayName", &format!("{name} (AD)"))
            .attr("sAMAccountName", name)
            .attr("userPrincipalName", &format!("{name}@corp.example.org"))
            .attr("userAccountControl", control)
            .attr_bytes("objectGUID", &guid(n))
            .attr("uSNChanged", &format!("{}", 90 + u64::from(n)))
            .attr("userPassword", &format!("{name}-pw"));
    }
    for (n, cn, members) in [
        (11, "tap-users", vec![user_dn("alice"), group_dn("staff")]),
        (12, "staff", vec![user_dn("dave")]),
        (13, "tap-excluded", vec![user_dn("carol")]),
    ] {
        ldif.entry(&group_dn(cn))
            .attr("objectClass", "group")
            .attr("cn", cn)
            .attr_bytes("objectGUID", &guid(n))
            .attr("uSNChanged", "95");
        for member in &members {
            ldif.attr("member", member);
        }
    }
    ldif.finish()
}

fn settings(slapd: &Slapd) -> LdapSettings {
    let preset = DirectoryPreset::ActiveDirectory;
    LdapSettings {
        user_filter: preset.user_filter().to_owned(),
        group_filter: preset.group_filter().to_owned(),
        preset,
        attributes: preset.attributes(),
        ..super::settings(slapd)
    }
}

/// What a domain controller does on a change: the entry gets the next USN, and so does the
/// root DSE (read by slapd at its next start).
async fn change_display_name(slapd: &mut Slapd, uid: &str, name: &str, usn: u64, host: &str) {
    let mut admin = slapd.admin().await;
    admin
        .modify(
            &user_dn(uid),
            vec![
                Mod::Replace("displayName", [name].into()),
                Mod::Replace("uSNChanged", [usn.to_string().as_str()].into()),
            ],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    drop(admin);
    slapd.set_root_dse(&root_dse(usn.max(101), host));
    slapd.stop();
    slapd.start_again();
}

#[tokio::test]
async fn active_directory_preset_keys_by_object_guid_and_syncs_by_usn_on_one_dc() {
    let mut slapd = Slapd::start_active_directory(&directory(), &root_dse(100, "dc1.corp"));
    let node = Node::new(settings(&slapd)).await;
    let status = node.sync().await;
    assert_eq!(status.last_result.as_deref(), Some("success"), "{status:?}");
    assert_eq!(status.users_seen, 3, "{status:?}");

    let alice = node.user("alice").await;
    assert_eq!(Some(alice.id.clone()), format_object_guid(&guid(1)));
    assert_eq!(alice.user_principal_name, "alice@corp.example.org");
    assert_eq!(alice.display_name, "alice (AD)");
    assert!(alice.account_enabled);
    assert!(!node.user("carol").await.account_enabled, "ACCOUNTDISABLE");
    assert!(group_names(&node, "dave").await.contains("tap-users"));
    assert!(scoped(&node, "dave").await, "nested under tap-users");

    // A change the DC numbered after the last read: the incremental sync reads it.
    let syncer = node.service.syncer();
    change_display_name(&mut slapd, "alice", "Alice A.", 101, "dc1.corp").await;
    let status = syncer.run_incremental("test").await.unwrap();
    assert_eq!(status.users_updated, 1, "{status:?}");
    assert_eq!(node.user("alice").await.display_name, "Alice A.");

    // A change numbered below the last read is not asked for on the same DC...
    change_display_name(&mut slapd, "dave", "Dave D.", 50, "dc1.corp").await;
    let status = syncer.run_incremental("test").await.unwrap();
    assert_eq!(status.users_updated, 0, "{status:?}");
    assert_eq!(node.user("dave").await.display_name, "dave (AD)");

    // ...but after the DC was restored from a backup (a new invocationId) its USNs can't be
    // compared with the last read, and a full sync runs instead.
    let mut admin = slapd.admin().await;
    admin
        .modify(
            NTDS_SETTINGS,
            vec![Mod::Replace(&b"invocationId"[..], [&guid(201)[..]].into())],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    drop(admin);
    let status = syncer.run_incremental("test").await.unwrap();
    assert_eq!(status.last_result.as_deref(), Some("success"), "{status:?}");
    assert_eq!(node.user("dave").await.display_name, "Dave D.");

    // Another domain controller answering (after a fail-over) means a full sync too.
    change_display_name(&mut slapd, "carol", "Carol C.", 60, "dc2.corp").await;
    let status = syncer.run_incremental("test").await.unwrap();
    assert_eq!(status.last_result.as_deref(), Some("success"), "{status:?}");
    assert_eq!(node.user("carol").await.display_name, "Carol C.");
    assert!(
        slapd.log().contains("uSNChanged>=102"),
        "the incremental reads asked for USNs after the last read"
    );
}
