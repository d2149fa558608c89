//! The fixture directory, written as LDIF for slapadd.
//!
//! - 1,550 bulk users `user0000…user1549` (more than three times slapd's size limit), in 31
//!   bulk groups of 50;
//! - `tap-users` > `staff` > `engineering` > `platform`: `alice` directly in `tap-users`, `erin`
//!   only in `engineering` (two levels below `tap-users`), `deep` only in `platform` (three);
//! - `tap-excluded` holding `dave`; `tap-admins` holding `gadmin` (a role group);
//! - `cycle-a` ⇄ `cycle-b` nested in each other, with `cyclist` in `cycle-b`;
//! - a posixGroup `posix-users` naming `pat` by `memberUid`; a groupOfUniqueNames `unique-users`
//!   holding `una`;
//! - `carol`, disabled by `pwdAccountLockedTime`;
//! - users whose uid and cn contain `*`, `(`, `)`, `\`, `,`, `+`, `#`, `=` and non-ASCII letters.
//!
//! Every user's password is `<uid>-pw`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use tapd::directory::ldap::escape::escape_dn_value;

use super::harness::{BASE_DN, LIMITED_DN, SERVICE_DN, SERVICE_PASSWORD, SYNC_DN};

/// Number of bulk users.
pub const BULK_USERS: usize = 1_550;
/// Users in each bulk group.
pub const BULK_GROUP_SIZE: usize = 50;

/// uids with characters that mean something in filters or DNs.
pub const SPECIAL_UIDS: [&str; 11] = [
    "star*",
    "*",
    ")(uid=*",
    "paren(x)",
    "back\\slash",
    "comma,user",
    "plus+user",
    "#hash",
    "eq=user",
    "jürgen",
    "zoë ünïcode",
];

/// The named users of the fixture (besides bulk and special ones).
pub const NAMED_USERS: [&str; 10] = [
    "alice", "erin", "deep", "dave", "gadmin", "cyclist", "pat", "una", "carol", "bob",
];

/// DN of a user entry.
pub fn user_dn(uid: &str) -> String {
    format!("uid={},ou=people,{BASE_DN}", escape_dn_value(uid))
}

/// DN of a group entry.
pub fn group_dn(cn: &str) -> String {
    format!("cn={},ou=groups,{BASE_DN}", escape_dn_value(cn))
}

/// Password of a fixture user.
pub fn password_of(uid: &str) -> String {
    format!("{uid}-pw")
}

/// An LDIF writer that base64-encodes any value LDIF can't carry as plain text.
#[derive(Default)]
pub struct Ldif(String);

impl Ldif {
    /// Starts a record.
    pub fn entry(&mut self, dn: &str) -> &mut Self {
        if !self.0.is_empty() {
            self.0.push('\n');
        }
        self.attr("dn", dn)
    }

    /// Adds `name: value` (or `name:: base64`).
    pub fn attr(&mut self, name: &str, value: &str) -> &mut Self {
        let safe = value
            .bytes()
            .all(|b| (1..128).contains(&b) && b != b'\n' && b != b'\r')
            && !value.starts_with([' ', ':', '<'])
            && !value.ends_with(' ');
        if safe {
            self.0.push_str(&format!("{name}: {value}\n"));
        } else {
            self.0
                .push_str(&format!("{name}:: {}\n", STANDARD.encode(value.as_bytes())));
        }
        self
    }

    /// Adds `name:: base64` for a binary value.
    pub fn attr_bytes(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.0
            .push_str(&format!("{name}:: {}\n", STANDARD.encode(value)));
        self
    }

    /// The text.
    pub fn finish(self) -> String {
        self.0
    }
}

fn person(ldif: &mut Ldif, uid: &str, cn: &str) {
    ldif.entry(&user_dn(uid))
        .attr("objectClass", "inetOrgPerson")
        .attr("uid", uid)
        .attr("cn", cn)
        .attr("sn", "Test")
        .attr("userPassword", &password_of(uid));
}

fn group_of_names(ldif: &mut Ldif, cn: &str, members: &[String]) {
    ldif.entry(&group_dn(cn))
        .attr("objectClass", "groupOfNames")
        .attr("cn", cn);
    for member in members {
        ldif.attr("member", member);
    }
}

/// The base entries, service accounts and organisational units.
pub fn skeleton(ldif: &mut Ldif) {
    ldif.entry(BASE_DN)
        .attr("objectClass", "dcObject")
        .attr("objectClass", "organization")
        .attr("o", "Example")
        .attr("dc", "example");
    for ou in ["people", "groups", "services"] {
        ldif.entry(&format!("ou={ou},{BASE_DN}"))
            .attr("objectClass", "organizationalUnit")
            .attr("ou", ou);
    }
    for dn in [SERVICE_DN, LIMITED_DN, SYNC_DN] {
        let cn = dn
            .trim_start_matches("cn=")
            .split(',')
            .next()
            .unwrap_or_default();
        ldif.entry(dn)
            .attr("objectClass", "organizationalRole")
            .attr("objectClass", "simpleSecurityObject")
            .attr("cn", cn)
            .attr("userPassword", SERVICE_PASSWORD);
    }
}

/// The whole test fixture.
pub fn directory() -> String {
    let mut ldif = Ldif::default();
    skeleton(&mut ldif);
    for i in 0..BULK_USERS {
        person(&mut ldif, &format!("user{i:04}"), &format!("Bulk User {i}"));
    }
    for uid in NAMED_USERS {
        person(&mut ldif, uid, &format!("{} Example", uid.to_uppercase()));
        match uid {
            "carol" => {
                ldif.attr("pwdAccountLockedTime", "000001010000Z");
            }
            "bob" => {
                ldif.attr("mail", "bob.builder@example.net");
            }
            _ => {}
        }
    }
    for uid in SPECIAL_UIDS {
        person(&mut ldif, uid, &format!("Special {uid} (cn*, \\ + # = ü)"));
    }

    group_of_names(
        &mut ldif,
        "tap-users",
        &[user_dn("alice"), group_dn("staff")],
    );
    group_of_names(&mut ldif, "staff", &[group_dn("engineering")]);
    group_of_names(
        &mut ldif,
        "engineering",
        &[user_dn("erin"), group_dn("platform")],
    );
    group_of_names(&mut ldif, "platform", &[user_dn("deep")]);
    group_of_names(&mut ldif, "tap-excluded", &[user_dn("dave")]);
    group_of_names(&mut ldif, "tap-admins", &[user_dn("gadmin")]);
    group_of_names(&mut ldif, "cycle-a", &[group_dn("cycle-b")]);
    group_of_names(
        &mut ldif,
        "cycle-b",
        &[group_dn("cycle-a"), user_dn("cyclist")],
    );
    // Members written with hex escapes and odd spacing: DNs must still match.
    group_of_names(
        &mut ldif,
        "special-users",
        &SPECIAL_UIDS
            .iter()
            .map(|uid| user_dn(uid))
            .chain(["UID=comma\\2Cuser, OU=People, DC=Example, DC=Org".to_owned()])
            .collect::<Vec<_>>(),
    );
    ldif.entry(&group_dn("posix-users"))
        .attr("objectClass", "posixGroup")
        .attr("cn", "posix-users")
        .attr("gidNumber", "5000")
        .attr("memberUid", "pat");
    ldif.entry(&group_dn("unique-users"))
        .attr("objectClass", "groupOfUniqueNames")
        .attr("cn", "unique-users")
        .attr("uniqueMember", &user_dn("una"));
    for g in 0..BULK_USERS / BULK_GROUP_SIZE {
        let members: Vec<String> = (g * BULK_GROUP_SIZE..(g + 1) * BULK_GROUP_SIZE)
            .map(|i| user_dn(&format!("user{i:04}")))
            .collect();
        group_of_names(&mut ldif, &format!("bulk{g:02}"), &members);
    }
    ldif.finish()
}

/// Number of groups in [`directory`].
pub fn group_count() -> usize {
    11 + BULK_USERS / BULK_GROUP_SIZE
}

/// Number of users in [`directory`].
pub fn user_count() -> usize {
    BULK_USERS + NAMED_USERS.len() + SPECIAL_UIDS.len()
}
