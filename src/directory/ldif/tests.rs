#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;

use super::*;
use crate::directory::password::ssha;

fn values(entry: &LdifEntry, name: &str) -> Vec<String> {
    entry
        .values(name)
        .map(|a| String::from_utf8(a.value.clone()).unwrap())
        .collect()
}

// ---- the reader ----

#[test]
fn parses_records_comments_folding_and_base64() {
    let text = "# leading comment\r\n\
                # folded comment\r\n\
                \x20still the comment\r\n\
                version: 1\r\n\
                \r\n\
                dn: uid=alice,ou=peo\r\n\
                \x20ple,dc=example,dc=org\r\n\
                objectClass: inetOrgPerson\r\n\
                cn;lang-en: Alice\r\n\
                # a comment inside the record\r\n\
                description: one long\r\n\
                \x20 line folded\r\n\
                \x20twice\r\n\
                sn:: TGlkZGVsbCDDqQ==\r\n\
                empty:\r\n\
                padded:    value   \r\n\
                1.2.3.4: by oid\r\n\
                \r\n\
                \r\n\
                dn:: Y249Z3LDvHBwZSxkYz1vcmc=\n\
                cn: Gruppe\n";
    let entries = parse(text).unwrap();
    assert_eq!(entries.len(), 2);
    let alice = &entries[0];
    assert_eq!(alice.dn, "uid=alice,ou=people,dc=example,dc=org");
    assert_eq!(alice.line, 6);
    assert_eq!(values(alice, "CN"), ["Alice"]);
    assert_eq!(values(alice, "description"), ["one long line foldedtwice"]);
    assert_eq!(values(alice, "sn"), ["Liddell é"]);
    assert_eq!(values(alice, "empty"), [""]);
    assert_eq!(values(alice, "padded"), ["value"]);
    assert_eq!(values(alice, "1.2.3.4"), ["by oid"]);
    assert_eq!(alice.values("description").next().unwrap().line, 11);
    assert_eq!(entries[1].dn, "cn=grüppe,dc=org");
    assert_eq!(entries[1].line, 20);
}

#[test]
fn base64_keeps_binary_and_spaces() {
    let entries = parse("dn: cn=x\nuserPassword:: IHNwYWNlZCD/\n").unwrap();
    assert_eq!(entries[0].attributes[0].value, b" spaced \xff");
}

#[test]
fn errors_name_the_line() {
    let cases: &[(&str, LdifError)] = &[
        (
            "dn: cn=a\ncn: a\nno colon here\n",
            LdifError::Syntax {
                line: 3,
                message: "expected 'attribute: value'".to_owned(),
            },
        ),
        (
            "dn: cn=a\n\ndn: cn=b\nchangetype: modify\n",
            LdifError::ChangeRecord { line: 4 },
        ),
        (
            "dn: cn=a\ncontrol: 1.2.840.113556.1.4.805 true\n",
            LdifError::ChangeRecord { line: 2 },
        ),
        (
            "dn: cn=a\ncn:: !!!notbase64\n",
            LdifError::Base64 { line: 2 },
        ),
        (
            "dn: cn=a\njpegPhoto:< file:///etc/shadow\n",
            LdifError::UrlValue { line: 2 },
        ),
        (
            " continued\ndn: cn=a\n",
            LdifError::Syntax {
                line: 1,
                message: "continuation line (leading space) with no line to continue".to_owned(),
            },
        ),
        (
            "dn: cn=a\n\ncn: b\n",
            LdifError::Syntax {
                line: 3,
                message: "a record must start with 'dn:', found 'cn:'".to_owned(),
            },
        ),
        (
            "dn: cn=a\nbad_name: x\n",
            LdifError::Syntax {
                line: 2,
                message: "invalid attribute description 'bad_name'".to_owned(),
            },
        ),
        (
            "dn: cn=a\ncn: a\ndn: cn=b\n",
            LdifError::Syntax {
                line: 3,
                message: "second 'dn:' in one record; separate records by a blank line".to_owned(),
            },
        ),
        (
            "version: 2\n\ndn: cn=a\n",
            LdifError::Syntax {
                line: 1,
                message: "only LDIF version 1 is supported".to_owned(),
            },
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(parse(text).unwrap_err(), *expected, "for {text:?}");
    }
    assert!(LdifError::ChangeRecord { line: 7 }
        .to_string()
        .starts_with("line 7: change records"));
}

#[test]
fn empty_and_comment_only_files_have_no_entries() {
    assert!(parse("").unwrap().is_empty());
    assert!(parse("# nothing\n\n\n").unwrap().is_empty());
    assert!(parse("version: 1\n").unwrap().is_empty());
}

// ---- the directory source ----

const SMALL: &str = "\
dn: dc=example,dc=org
objectClass: dcObject
dc: example

dn: uid=alice,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
entryUUID: 11111111-1111-4111-8111-111111111111
uid: alice
cn: Alice Liddell
mail: alice@example.org
userPassword: {PW_ALICE}

dn: uid=bob,ou=people,dc=example,dc=org
objectClass: posixAccount
objectClass: account
nsUniqueId: ABCDEF01-23456789-ABCDEF01-23456789
uid: bob
cn: Bob
displayName: Bob the Builder
userPrincipalName: robert@corp.example.org
nsAccountLock: TRUE
userPassword: {PW_BOB}

dn: uid=carol,ou=people,dc=example,dc=org
objectClass: person
uid: carol
cn: Carol
pwdAccountLockedTime: 000001010000Z

dn: uid=dave,ou=people,dc=example,dc=org
objectClass: organizationalPerson
uid: dave
userPassword: dave-cleartext

dn: cn=nouid,ou=people,dc=example,dc=org
objectClass: person
cn: nouid

dn: cn=team,ou=groups,dc=example,dc=org
objectClass: groupOfUniqueNames
entryUUID: 22222222-2222-4222-8222-222222222222
cn: team
uniqueMember: UID=Alice, OU=People, DC=Example, DC=Org#'0101'B
uniqueMember: cn=posix,ou=groups,dc=example,dc=org

dn: cn=posix,ou=groups,dc=example,dc=org
objectClass: posixGroup
gidNumber: 100
memberUid: dave

dn: cn=ad,ou=groups,dc=elsewhere,dc=net
objectClass: group
member: uid=alice,ou=people,dc=example,dc=org
";

fn small_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dir.ldif");
    let text = SMALL
        .replace("{PW_ALICE}", &ssha("alice-pw", b"salt1234"))
        .replace("{PW_BOB}", &ssha("bob-pw", b"salt5678"));
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn by_name<'a>(contents: &'a DirectoryContents, username: &str) -> &'a User {
    contents
        .users
        .iter()
        .find(|u| u.username == username)
        .unwrap_or_else(|| panic!("no user {username}"))
}

fn group_named<'a>(contents: &'a DirectoryContents, cn: &str) -> &'a Group {
    contents
        .groups
        .iter()
        .find(|g| g.display_name == cn)
        .unwrap_or_else(|| panic!("no group {cn}"))
}

#[tokio::test]
async fn classifies_entries_and_maps_attributes() {
    let (_dir, path) = small_file();
    let directory = LdifDirectory::open(&path).unwrap();
    let contents = directory.read_all().await.unwrap();
    let names: Vec<&str> = contents.users.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["alice", "bob", "carol", "dave"]);
    assert_eq!(contents.groups.len(), 3);

    let alice = by_name(&contents, "alice");
    assert_eq!(alice.id, "11111111-1111-4111-8111-111111111111");
    assert_eq!(alice.user_principal_name, "alice@example.org");
    assert_eq!(alice.display_name, "Alice Liddell");
    assert_eq!(alice.mail.as_deref(), Some("alice@example.org"));
    assert!(alice.account_enabled);

    let bob = by_name(&contents, "bob");
    assert_eq!(bob.id, "abcdef01-23456789-abcdef01-23456789");
    assert_eq!(bob.user_principal_name, "robert@corp.example.org");
    assert_eq!(bob.display_name, "Bob the Builder");
    assert!(!bob.account_enabled, "nsAccountLock: TRUE disables");

    let carol = by_name(&contents, "carol");
    assert!(!carol.account_enabled, "pwdAccountLockedTime disables");
    assert_eq!(carol.user_principal_name, "carol@example.org");
    assert_eq!(carol.mail, None);
    // No entryUUID / nsUniqueId: UUIDv5 of the normalised DN, stable across reads.
    assert_eq!(
        carol.id,
        uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_X500,
            b"uid=carol,ou=people,dc=example,dc=org"
        )
        .to_string()
    );
    assert_eq!(by_name(&contents, "dave").display_name, "dave");

    let team = group_named(&contents, "team");
    let posix = group_named(&contents, "posix");
    let ad = group_named(&contents, "ad");
    let dave = by_name(&contents, "dave");
    let mut team_members = vec![alice.id.clone(), dave.id.clone()];
    team_members.sort();
    assert_eq!(team.member_user_ids, team_members);
    assert_eq!(posix.member_user_ids, vec![dave.id.clone()]);
    let mut alice_groups = vec![team.id.clone(), ad.id.clone()];
    alice_groups.sort();
    assert_eq!(alice.group_ids, alice_groups);
    let mut dave_groups = vec![team.id.clone(), posix.id.clone()];
    dave_groups.sort();
    assert_eq!(dave.group_ids, dave_groups);
}

#[tokio::test]
async fn base_dn_limits_entries_and_sets_the_upn_domain() {
    let (_dir, path) = small_file();
    let directory = LdifDirectory::open(&path)
        .unwrap()
        .with_base_dn("ou=People,dc=example,dc=org");
    assert!(directory.describe().contains("base ou=People"));
    let contents = directory.read_all().await.unwrap();
    assert_eq!(contents.users.len(), 4);
    assert!(contents.groups.is_empty());
    assert_eq!(
        by_name(&contents, "carol").user_principal_name,
        "carol@example.org"
    );
}

#[tokio::test]
async fn editing_the_file_is_seen_by_the_next_read() {
    let (_dir, path) = small_file();
    let directory = LdifDirectory::open(&path).unwrap();
    assert_eq!(directory.read_all().await.unwrap().users.len(), 4);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    writeln!(
        file,
        "\ndn: uid=erin,ou=people,dc=example,dc=org\nobjectClass: person\nuid: erin"
    )
    .unwrap();
    drop(file);
    let contents = directory.read_all().await.unwrap();
    assert_eq!(contents.users.len(), 5);
    assert_eq!(
        by_name(&contents, "erin").user_principal_name,
        "erin@example.org"
    );
}

#[tokio::test]
async fn errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.ldif");
    std::fs::write(&path, "dn: cn=a\ncn: a\n\ndn: cn=b\nchangetype: add\n").unwrap();
    let err = LdifDirectory::open(&path).unwrap_err();
    assert!(matches!(err, DirectoryError::Invalid(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&format!("{}", path.display())),
        "{message}"
    );
    assert!(message.contains("line 5"), "{message}");

    std::fs::write(
        &path,
        "dn: uid=a,dc=org\nobjectClass: person\nuid: a\nentryUUID: 11111111-1111-4111-8111-111111111111\n\n\
         dn: uid=b,dc=org\nobjectClass: person\nuid: b\nentryUUID: 11111111-1111-4111-8111-111111111111\n",
    )
    .unwrap();
    let directory = LdifDirectory {
        path: path.clone(),
        base_dn: None,
        dates: Default::default(),
    };
    let message = directory.read_all().await.unwrap_err().to_string();
    assert!(
        message.contains(&format!("{}:6", path.display())),
        "{message}"
    );
    assert!(message.contains("line 1"), "{message}");

    let missing = LdifDirectory::open(dir.path().join("missing.ldif")).unwrap_err();
    assert!(
        matches!(missing, DirectoryError::Unavailable(_)),
        "{missing:?}"
    );
    assert!(missing.to_string().starts_with("directory unavailable"));
}

#[tokio::test]
async fn checks_passwords_locally() {
    let (_dir, path) = small_file();
    let directory = LdifDirectory::open(&path).unwrap();
    let contents = directory.read_all().await.unwrap();
    let alice = by_name(&contents, "alice");
    let check = |user: &User, pw: &str| {
        let directory = directory.clone();
        let user = user.clone();
        let pw = pw.to_owned();
        async move { directory.check_password(&user, &pw).await.unwrap() }
    };
    assert_eq!(check(alice, "alice-pw").await, PasswordCheck::Valid);
    assert_eq!(check(alice, "alice-pw ").await, PasswordCheck::Invalid);
    assert_eq!(check(alice, "").await, PasswordCheck::Invalid);
    assert_eq!(check(alice, "\0\0").await, PasswordCheck::Invalid);
    // Disabled accounts never verify, even with the right password.
    assert_eq!(
        check(by_name(&contents, "bob"), "bob-pw").await,
        PasswordCheck::Invalid
    );
    // Cleartext userPassword is refused.
    assert_eq!(
        check(by_name(&contents, "dave"), "dave-cleartext").await,
        PasswordCheck::Invalid
    );
    // A user no longer in the file.
    let mut gone = alice.clone();
    gone.id = "no-such-id".to_owned();
    assert_eq!(check(&gone, "alice-pw").await, PasswordCheck::Invalid);
}

#[tokio::test]
async fn empty_password_never_touches_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dir.ldif");
    std::fs::write(&path, "dn: uid=a,dc=org\nobjectClass: person\nuid: a\n").unwrap();
    let directory = LdifDirectory::open(&path).unwrap();
    let user = directory.read_all().await.unwrap().users.remove(0);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        directory.check_password(&user, "").await.unwrap(),
        PasswordCheck::Invalid
    );
    assert!(directory.check_password(&user, "x").await.is_err());
}

// ---- the demo directory shipped in etc/tapd ----

fn demo_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/tapd/demo-directory.ldif")
}

#[tokio::test]
async fn demo_directory_nested_groups_and_passwords() {
    let directory = LdifDirectory::open(demo_path())
        .unwrap()
        .with_base_dn("dc=example,dc=org");
    let contents = directory.read_all().await.unwrap();
    assert_eq!(contents.users.len(), 10);

    let group_id = |cn: &str| group_named(&contents, cn).id.clone();
    let in_group =
        |user: &str, cn: &str| by_name(&contents, user).group_ids.contains(&group_id(cn));

    // tap-users > staff > engineering: erin is only in engineering and still in tap-users.
    assert!(in_group("erin", "engineering"));
    assert!(in_group("erin", "staff"));
    assert!(in_group("erin", "tap-users"));
    for admin in ["gadmin", "padmin", "aadmin", "paladmin", "reader"] {
        assert!(in_group(admin, "staff"), "{admin}");
        assert!(in_group(admin, "tap-users"), "{admin}");
    }
    for member in ["alice", "bob", "carol", "dave"] {
        assert!(in_group(member, "tap-users"), "{member}");
        assert!(!in_group(member, "staff") || member == "bob", "{member}");
    }
    assert!(in_group("gadmin", "tap-global-admins"));
    assert!(in_group("padmin", "tap-privileged-auth-admins"));
    assert!(in_group("aadmin", "tap-auth-admins"));
    assert!(in_group("paladmin", "tap-policy-admins"));
    assert!(in_group("reader", "tap-readers"));
    assert!(in_group("dave", "tap-excluded"));
    assert!(in_group("alice", "vpn-users") && in_group("erin", "vpn-users"));
    assert!(!in_group("bob", "vpn-users"));
    assert_eq!(
        group_named(&contents, "tap-users").member_user_ids.len(),
        10
    );

    assert!(!by_name(&contents, "carol").account_enabled);
    assert_eq!(
        contents.users.iter().filter(|u| u.account_enabled).count(),
        9
    );
    assert_eq!(
        by_name(&contents, "alice").id,
        "7c1e5a10-0001-4b6e-9a11-000000000006"
    );
    assert_eq!(
        by_name(&contents, "alice").user_principal_name,
        "alice@example.org"
    );

    // Every documented demo password verifies (carol's too, checked without the lock).
    let text = std::fs::read_to_string(demo_path()).unwrap();
    let entries = parse(&text).unwrap();
    for user in &contents.users {
        let password = format!("{}-demo-pw", user.username);
        assert!(
            text.contains(&format!("#   {:<10} {password}", user.username)),
            "{} is documented in the header",
            user.username
        );
        let entry = entries.iter().find(|e| e.dn == user.dn).unwrap();
        let stored = &entry.values("userpassword").next().unwrap().value;
        assert!(
            crate::directory::password::verify_user_password(stored, &password).unwrap(),
            "{}",
            user.username
        );
        let expected = if user.account_enabled {
            PasswordCheck::Valid
        } else {
            PasswordCheck::Invalid
        };
        assert_eq!(
            directory.check_password(user, &password).await.unwrap(),
            expected,
            "{}",
            user.username
        );
        assert_eq!(
            directory.check_password(user, "wrong").await.unwrap(),
            PasswordCheck::Invalid
        );
    }
}

#[tokio::test]
async fn reads_the_manager_dn_and_the_configured_dates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dir.ldif");
    std::fs::write(
        &path,
        "dn: uid=boss,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: boss\n\
         entryUUID: 00000000-0000-4000-8000-000000000001\n\n\
         dn: uid=new,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: new\n\
         entryUUID: 00000000-0000-4000-8000-000000000002\n\
         manager: UID=Boss, ou=People,dc=example,dc=org\nemployeeHireDate: 2026-12-09\n\
         startDate: 20261301000000Z\n",
    )
    .unwrap();
    let directory = LdifDirectory::open(&path)
        .unwrap()
        .with_date_attributes(&["employeeHireDate".to_owned(), "startDate".to_owned()]);
    let contents = directory.read_all().await.unwrap();
    let new = by_name(&contents, "new");
    assert_eq!(
        new.manager_dn.as_deref(),
        Some("uid=boss,ou=people,dc=example,dc=org")
    );
    assert_eq!(
        new.manager_id, None,
        "the store resolves managers, not the source"
    );
    assert_eq!(
        new.dates.get("employeehiredate").copied(),
        chrono::NaiveDate::from_ymd_opt(2026, 12, 9)
    );
    // Month 13: not a date, left out.
    assert!(!new.dates.contains_key("startdate"));
    let boss = by_name(&contents, "boss");
    assert_eq!(boss.manager_dn, None);
    assert!(boss.dates.is_empty());
}
