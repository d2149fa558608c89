//! Tests of loading and validating `tapd.toml`: defaults, every key's errors and warnings,
//! secret files, reload. Over 800 lines on purpose: one case per key and rule, no logic of its
//! own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A temp dir with a few secret files, as a config directory.
struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        let dir = Self(tempfile::tempdir().unwrap());
        dir.write("radius.secret", "a-radius-secret-of-some-length\n");
        dir.write("token-a", "token-aaaaaaaaaaaaaaaaaaaaaa\n");
        dir.write("token-b", "token-bbbbbbbbbbbbbbbbbbbbbb\n");
        dir.write("ldap.secret", "bind-password\r\n");
        dir
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn write(&self, name: &str, content: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.0.path().join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn load(&self, toml: &str) -> Result<Loaded, ConfigError> {
        load_from_str(toml, &[], self.path())
    }

    fn load_env(&self, toml: &str, env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        load_from_str(toml, &env, self.path())
    }
}

const MINIMAL: &str = r#"
[directory]
url = "ldaps://ldap.example.org"
base_dn = "dc=example,dc=org"
"#;

fn problems(result: Result<Loaded, ConfigError>) -> Vec<String> {
    match result {
        Ok(loaded) => panic!("expected problems, got {:#?}", loaded.config),
        Err(err) => err.problems,
    }
}

fn has(lines: &[String], prefix: &str, fragment: &str) -> bool {
    lines
        .iter()
        .any(|line| line.starts_with(prefix) && line.contains(fragment))
}

#[test]
fn shipped_production_example_validates_without_secret_files() {
    let loaded = load(&repo_root().join("etc/tapd/tapd.toml")).unwrap();
    let config = &loaded.config;
    assert_eq!(
        config.store.url,
        StoreUrl::Sqlite("/var/lib/tapd/tapd.db".into())
    );
    assert_eq!(config.store.busy_timeout, Duration::from_secs(5));
    match &config.directory.source {
        DirectorySource::Ldap { url, transport } => {
            assert_eq!(url.host, "ldap.example.org");
            assert_eq!(url.port, 636);
            assert_eq!(*transport, LdapTransport::Ldaps);
        }
        other => panic!("unexpected source {other:?}"),
    }
    assert_eq!(config.directory.preset, DirectoryPreset::OpenLdap);
    assert_eq!(config.directory.base_dn, "dc=example,dc=org");
    assert_eq!(config.directory.user_base, "dc=example,dc=org");
    assert!(config.directory.bind.is_none());
    assert!(config.directory.tls_verify);
    assert_eq!(config.directory.sync_interval, Duration::from_secs(300));
    assert_eq!(config.directory.attributes.upn, "mail");
    assert_eq!(
        config.directory.deletion_guard,
        DeletionGuard {
            max_deletes: 500,
            max_percent: 20
        }
    );
    assert!(loaded
        .warnings
        .iter()
        .any(|w| w.starts_with("directory.bind_dn:") && w.contains("anonymous")));
    assert_eq!(config.admin.socket, PathBuf::from("/run/tapd/admin.sock"));
    assert!(config.admin.root_is_global_administrator);
    assert_eq!(
        config.admin.roles.global_administrator,
        vec!["cn=tap-admins,ou=groups,dc=example,dc=org".to_owned()]
    );
    assert!(!config.radius.is_enabled());
    assert!(config.radius.clients.is_empty());
    assert_eq!(
        config.web.listen,
        Some("0.0.0.0:8443".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(
        config.web.public_url.as_ref().unwrap().as_str(),
        "https://tap.example.org:8443"
    );
    assert_eq!(
        config.web.tls.as_ref().unwrap().cert_file,
        PathBuf::from("/etc/tapd/tls.crt")
    );
    assert!(config.federation.relying_parties.is_empty());
    assert_eq!(config.log.level, log::LevelFilter::Info);
    assert_eq!(config.log.format, LogFormat::Auto);
    assert_eq!(
        config.metrics.listen,
        Some("127.0.0.1:9812".parse().unwrap())
    );
    assert!(config.security.argon2_max_concurrent >= 1);
}

/// The README's first command: a git checkout gives the demo's secret files mode 0644, which
/// tapd refuses, so the demo makes them private before its first start.
fn make_demo_secrets_private() {
    use std::os::unix::fs::PermissionsExt;
    for file in ["demo-radius.secret", "demo-federation.token"] {
        let path = repo_root().join("etc/tapd").join(file);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

#[test]
fn shipped_demo_config_validates_with_paths_relative_to_its_directory() {
    make_demo_secrets_private();
    let loaded = load(&repo_root().join("etc/tapd/demo.toml")).unwrap();
    let config = &loaded.config;
    let root = repo_root();
    assert_eq!(
        config.store.url,
        StoreUrl::Sqlite(root.join(".tapd-demo/tapd.db"))
    );
    assert_eq!(config.admin.socket, root.join(".tapd-demo/admin.sock"));
    assert_eq!(
        config.directory.source,
        DirectorySource::LdifFile(root.join("etc/tapd/demo-directory.ldif"))
    );
    let roles = &config.admin.roles;
    assert_eq!(roles.global_administrator, ["tap-global-admins"]);
    assert_eq!(
        roles.privileged_authentication_administrator,
        ["tap-privileged-auth-admins"]
    );
    assert_eq!(roles.authentication_administrator, ["tap-auth-admins"]);
    assert_eq!(
        roles.authentication_policy_administrator,
        ["tap-policy-admins"]
    );
    assert_eq!(roles.global_reader, ["tap-readers"]);
    assert_eq!(
        config.radius.listen,
        vec!["127.0.0.1:18120".parse::<SocketAddr>().unwrap()]
    );
    let client = &config.radius.clients[0];
    assert_eq!(client.name, "demo");
    assert_eq!(client.address, IpNetwork::parse("127.0.0.1/32").unwrap());
    assert_eq!(client.secret.expose(), "demo-radius-secret");
    assert!(client.require_message_authenticator);
    assert_eq!(
        config
            .radius
            .client_for("127.0.0.1".parse().unwrap())
            .unwrap()
            .name,
        "demo"
    );
    assert_eq!(config.web.listen, Some("127.0.0.1:8080".parse().unwrap()));
    assert_eq!(
        config.web.public_url.as_ref().unwrap().as_str(),
        "http://localhost:8080"
    );
    assert!(config.web.tls.is_none());
    let party = &config.federation.relying_parties[0];
    assert_eq!(party.name, "demo");
    assert!(party.token.len() >= 16);
    assert_eq!(
        config.metrics.listen,
        Some("127.0.0.1:9812".parse().unwrap())
    );
}

#[test]
fn defaults_fill_every_section() {
    let dir = Dir::new();
    let config = dir.load(MINIMAL).unwrap().config;
    assert_eq!(
        config.store.url,
        StoreUrl::Sqlite("/var/lib/tapd/tapd.db".into())
    );
    assert_eq!(config.admin.socket, PathBuf::from("/run/tapd/admin.sock"));
    assert_eq!(config.admin.socket_group, None);
    assert!(config.admin.roles.is_empty());
    assert_eq!(
        config.radius.directory_unavailable,
        DirectoryUnavailable::Drop
    );
    assert!(config.web.listen.is_none());
    assert_eq!(config.directory.page_size, 500);
    assert_eq!(config.directory.bind_pool_size, 4);
    assert_eq!(config.directory.connect_timeout, Duration::from_secs(5));
    assert_eq!(config.directory.operation_timeout, Duration::from_secs(10));
    assert_eq!(config.directory.user_filter, "(objectClass=inetOrgPerson)");
    assert_eq!(config.log.level, log::LevelFilter::Info);
    assert_eq!(
        config.metrics.listen,
        Some("127.0.0.1:9812".parse().unwrap())
    );
}

#[test]
fn environment_overrides_scalars_lists_and_nested_keys() {
    let dir = Dir::new();
    let loaded = dir
        .load_env(
            MINIMAL,
            &[
                ("TAPD__ADMIN__SOCKET", "/tmp/x.sock"),
                ("TAPD__LOG__LEVEL", "debug"),
                ("TAPD__DIRECTORY__PAGE_SIZE", "200"),
                ("TAPD__DIRECTORY__TLS_VERIFY", "false"),
                ("TAPD__DIRECTORY__SYNC_INTERVAL", "1h30m"),
                ("TAPD__DIRECTORY__ATTRIBUTES__UPN", "userPrincipalName"),
                ("TAPD__ADMIN__SOCKET_GROUP", "0100"),
                ("TAPD__RADIUS__LISTEN", "127.0.0.1:1812, [::1]:1812"),
                ("TAPD__ADMIN__ROLES__GLOBAL_READER", "auditors"),
                ("TAPD__METRICS__ENABLED", "false"),
                ("PATH", "/usr/bin"),
            ],
        )
        .unwrap();
    let config = loaded.config;
    assert_eq!(config.admin.socket, PathBuf::from("/tmp/x.sock"));
    assert_eq!(config.log.level, log::LevelFilter::Debug);
    assert_eq!(config.directory.page_size, 200);
    assert!(!config.directory.tls_verify);
    assert_eq!(config.directory.sync_interval, Duration::from_secs(5400));
    assert_eq!(config.directory.attributes.upn, "userPrincipalName");
    assert_eq!(config.admin.socket_group.as_deref(), Some("0100"));
    assert_eq!(
        config.radius.listen,
        vec![
            "127.0.0.1:1812".parse::<SocketAddr>().unwrap(),
            "[::1]:1812".parse().unwrap()
        ]
    );
    assert_eq!(config.admin.roles.global_reader, ["auditors"]);
    assert_eq!(config.metrics.listen, None);
    assert!(loaded
        .warnings
        .iter()
        .any(|w| w.starts_with("directory.tls_verify:")));
    assert!(!loaded.warnings.iter().any(|w| w.contains("TAPD__")));
}

#[test]
fn environment_beats_the_file_and_empty_list_clears_it() {
    let dir = Dir::new();
    let toml =
        format!("{MINIMAL}\n[radius]\nlisten = [\"127.0.0.1:1812\"]\n[log]\nlevel = \"warn\"\n");
    let config = dir
        .load_env(
            &toml,
            &[("TAPD__LOG__LEVEL", "trace"), ("TAPD__RADIUS__LISTEN", "")],
        )
        .unwrap()
        .config;
    assert_eq!(config.log.level, log::LevelFilter::Trace);
    assert!(config.radius.listen.is_empty());
}

#[test]
fn unknown_environment_variables_are_warnings_not_errors() {
    let dir = Dir::new();
    let loaded = dir
        .load_env(
            MINIMAL,
            &[
                ("TAPD__LOG__LEVLE", "debug"),
                ("TAPD__NOPE", "1"),
                ("TAPD__RADIUS__CLIENTS", "x"),
                ("TAPD__DIRECTORY", "x"),
                ("TAPD_SOCKET", "/tmp/other.sock"),
            ],
        )
        .unwrap();
    let warnings = &loaded.warnings;
    assert!(has(
        warnings,
        "TAPD__LOG__LEVLE:",
        "`log.levle` is not a known config key"
    ));
    assert!(has(warnings, "TAPD__NOPE:", "not a known config key"));
    assert!(has(
        warnings,
        "TAPD__RADIUS__CLIENTS:",
        "only be set in the file"
    ));
    assert!(has(warnings, "TAPD__DIRECTORY:", "section"));
    assert!(!warnings.iter().any(|w| w.contains("TAPD_SOCKET")));
    assert_eq!(loaded.config.log.level, log::LevelFilter::Info);
}

#[test]
fn unknown_keys_in_the_file_are_all_named() {
    let dir = Dir::new();
    let toml = format!(
        r#"{MINIMAL}
[web]
listn = "127.0.0.1:8080"

[admin.roles]
superuser = ["root"]

[[radius.clients]]
name = "a"
address = "10.0.0.1"
secret_file = "radius.secret"

[[radius.clients]]
name = "b"
address = "10.0.0.2"
secrt_file = "radius.secret"

[bogus]
x = 1
"#
    );
    let problems = problems(dir.load(&toml));
    assert!(has(&problems, "web.listn:", "unknown key"), "{problems:?}");
    assert!(has(&problems, "admin.roles.superuser:", "global_reader"));
    assert!(has(
        &problems,
        "radius.clients[1].secrt_file:",
        "unknown key"
    ));
    assert!(has(&problems, "bogus:", "unknown key"));
    // The misspelt key is gone, so the real one is reported missing too.
    assert!(has(&problems, "radius.clients[1].secret_file:", "required"));
    assert_eq!(problems.len(), 5, "{problems:?}");
}

#[test]
fn unknown_keys_do_not_hide_other_problems() {
    let dir = Dir::new();
    let toml = format!(
        r#"{MINIMAL}
[admin]
socket_grup = "tapd"

[radius]
listen = ["127.0.0.1:1812"]

[[radius.clients]]
name = "vpn"
address = "10.0.0.0/33"
secret_file = "missing.secret"
"#
    );
    let problems = problems(dir.load(&toml));
    assert!(
        has(&problems, "admin.socket_grup:", "unknown key"),
        "{problems:?}"
    );
    assert!(
        has(&problems, "radius.clients[0].address:", ""),
        "{problems:?}"
    );
    assert!(
        has(&problems, "radius.clients[0].secret_file:", ""),
        "{problems:?}"
    );
    assert_eq!(problems.len(), 3, "{problems:?}");
}

#[test]
fn every_problem_is_reported_together() {
    let dir = Dir::new();
    let toml = r#"
[store]
url = "mysql://nope"

[directory]
url = "ldap://ldap.example.org"
preset = "novell"
sync_interval = "10s"

[admin]
socket = "relative.sock"

[[radius.clients]]
name = "vpn"
address = "10.0.0.0/8"
secret_file = "radius.secret"

[[radius.clients]]
name = "vpn"
address = "10.0.0.0/33"
secret_file = "missing.secret"

[web]
listen = "0.0.0.0:8080"
public_url = "http://tap.example.org"

[[federation.relying_parties]]
name = "short"
token_file = "short.token"

[log]
level = "loud"
"#;
    dir.write("short.token", "tooshort\n");
    let problems = problems(load_from_str(toml, &[], Path::new("etc/tapd")));
    let expected = [
        ("store.url:", "mysql://nope"),
        ("directory.url:", "clear text"),
        ("directory.base_dn:", "required"),
        ("directory.preset:", "\"novell\" is not a known preset"),
        ("directory.sync_interval:", "below the minimum of 30s"),
        ("admin.socket:", "not an absolute path"),
        (
            "radius.clients[1].name:",
            "already used by radius.clients[0]",
        ),
        (
            "radius.clients[1].address:",
            "\"10.0.0.0/33\" is not an IP address or CIDR",
        ),
        ("radius.clients[1].secret_file:", "missing.secret"),
        ("web.listen:", "not loopback"),
        ("web.public_url:", "uses http"),
        ("log.level:", "\"loud\""),
    ];
    for (key, fragment) in expected {
        assert!(
            has(&problems, key, fragment),
            "no {key} {fragment} in {problems:#?}"
        );
    }

    // With an absolute base the secret files are found and checked too.
    let problems = self::problems(dir.load(toml));
    assert!(has(
        &problems,
        "radius.clients[1].secret_file:",
        "No such file or directory"
    ));
    assert!(has(
        &problems,
        "federation.relying_parties[0].token_file:",
        "at least 16 characters"
    ));
    assert!(!problems.iter().any(|p| p.starts_with("admin.socket:")));

    // Display lists the problems one per line.
    let err = dir.load(toml).unwrap_err();
    assert_eq!(err.to_string().lines().count(), err.problems.len());
}

#[test]
fn secrets_are_read_trimmed_and_never_shown_in_debug() {
    let dir = Dir::new();
    let toml = format!(
        r#"
[directory]
url = "ldap://ldap.example.org"
starttls = true
base_dn = "dc=example,dc=org"
bind_dn = "cn=tapd,dc=example,dc=org"
bind_password_file = "ldap.secret"

[radius]
listen = ["127.0.0.1:0"]

[[radius.clients]]
name = "vpn"
address = "10.0.0.0/8"
secret_file = "radius.secret"

[[federation.relying_parties]]
name = "adfs"
token_file = "{}"

[web]
listen = "127.0.0.1:0"
public_url = "http://localhost:8080"
"#,
        dir.path().join("token-a").display()
    );
    let config = dir.load(&toml).unwrap().config;
    let bind = config.directory.bind.as_ref().unwrap();
    assert_eq!(bind.password.expose(), "bind-password");
    assert_eq!(
        config.radius.clients[0].secret.expose(),
        "a-radius-secret-of-some-length"
    );
    assert!(config.federation.relying_parties[0]
        .token
        .ct_eq(b"token-aaaaaaaaaaaaaaaaaaaaaa"));
    let debug = format!("{config:?}");
    for secret in [
        "bind-password",
        "a-radius-secret-of-some-length",
        "token-aaaaaaaaaaaaaaaaaaaaaa",
    ] {
        assert!(!debug.contains(secret), "{secret} leaked in {debug}");
    }
    assert!(debug.contains("Secret(<redacted>)"));
    assert_eq!(format!("{:?}", Secret::new("x")), "Secret(<redacted>)");
}

#[test]
fn empty_and_duplicate_secrets_and_loose_modes_are_errors() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new();
    dir.write("empty.secret", "\n");
    let open = dir.path().join("open.secret");
    std::fs::write(&open, "an-open-but-long-radius-secret").unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let toml = format!(
        r#"{MINIMAL}
[[radius.clients]]
name = "a"
address = "10.0.0.1"
secret_file = "empty.secret"

[[radius.clients]]
name = "b"
address = "10.0.0.2"
secret_file = "open.secret"
require_message_authenticator = false

[[federation.relying_parties]]
name = "x"
token_file = "token-a"

[[federation.relying_parties]]
name = "y"
token_file = "token-a"
"#
    );
    let problems = problems(dir.load(&toml));
    assert!(has(&problems, "radius.clients[0].secret_file:", "is empty"));
    assert!(has(
        &problems,
        "federation.relying_parties[1].token_file:",
        "same token as federation.relying_parties[0]"
    ));

    let toml = format!(
        r#"{MINIMAL}
[[radius.clients]]
name = "b"
address = "10.0.0.2"
secret_file = "open.secret"
require_message_authenticator = false
"#
    );
    // A world-readable secret is refused (issue 15), with the fix named.
    let problems = self::problems(dir.load(&toml));
    assert!(has(
        &problems,
        "radius.clients[0].secret_file:",
        "every local user"
    ));
    assert!(has(
        &problems,
        "radius.clients[0].secret_file:",
        &format!("chmod 600 {}", open.display())
    ));
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o600)).unwrap();
    let warnings = dir.load(&toml).unwrap().warnings;
    assert!(has(
        &warnings,
        "radius.clients[0].require_message_authenticator:",
        "BlastRADIUS"
    ));
    assert!(has(&warnings, "radius.listen:", "RADIUS is off"));
    // Owned by another non-root user, who could replace it (tested where chown is allowed).
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o600)).unwrap();
    if nix::unistd::geteuid().is_root() {
        let nobody = nix::unistd::Uid::from_raw(65534);
        nix::unistd::chown(&open, Some(nobody), None).unwrap();
        let problems = self::problems(dir.load(&toml));
        assert!(
            has(
                &problems,
                "radius.clients[0].secret_file:",
                "owned by uid 65534"
            ),
            "{problems:#?}"
        );
        nix::unistd::chown(&open, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();
    }
    for (mode, says) in [(0o620, "its group"), (0o602, "every local user")] {
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(mode)).unwrap();
        let problems = self::problems(dir.load(&toml));
        assert!(
            has(&problems, "radius.clients[0].secret_file:", says),
            "{problems:#?}"
        );
    }
}

#[test]
fn short_radius_secrets_are_refused() {
    let dir = Dir::new();
    dir.write("short.secret", "fifteen-bytes!!");
    let toml = format!(
        r#"{MINIMAL}
[[radius.clients]]
name = "a"
address = "10.0.0.1"
secret_file = "short.secret"
"#
    );
    let problems = problems(dir.load(&toml));
    assert!(
        has(&problems, "radius.clients[0].secret_file:", "at least 16"),
        "{problems:#?}"
    );
    dir.write("short.secret", "sixteen-bytes!!!");
    dir.load(&toml).unwrap();
}

#[test]
fn directory_bind_settings_must_come_in_pairs() {
    let dir = Dir::new();
    let problems = problems(dir.load(&format!("{MINIMAL}bind_dn = \"cn=x\"\n")));
    assert!(has(&problems, "directory.bind_password_file:", "required"));
    let problems =
        self::problems(dir.load(&format!("{MINIMAL}bind_password_file = \"ldap.secret\"\n")));
    assert!(has(&problems, "directory.bind_dn:", "required"));
    let problems = self::problems(dir.load(&format!(
        "{MINIMAL}bind_dn = \"cn=x\"\nbind_password_file = \"/nonexistent/ldap.secret\"\n"
    )));
    assert!(has(
        &problems,
        "directory.bind_password_file:",
        "cannot read /nonexistent/ldap.secret: No such file or directory"
    ));
}

#[test]
fn directory_urls_and_transports() {
    let dir = Dir::new();
    let load = |url: &str, extra: &str| {
        dir.load(&format!(
            "[directory]\nurl = \"{url}\"\nbase_dn = \"dc=x\"\n{extra}"
        ))
    };
    let source = |result: Result<Loaded, ConfigError>| result.unwrap().config.directory.source;
    assert!(matches!(
        source(load("ldap://ldap.example.org:3389", "starttls = true")),
        DirectorySource::Ldap { url, transport: LdapTransport::StartTls } if url.port == 3389
    ));
    assert!(matches!(
        source(load("ldap://127.0.0.1:1389/", "")),
        DirectorySource::Ldap { url, transport: LdapTransport::Plain } if url.url == "ldap://127.0.0.1:1389"
    ));
    assert!(matches!(
        source(load("ldaps://[::1]", "")),
        DirectorySource::Ldap { url, .. } if url.host == "::1" && url.port == 636
    ));
    assert_eq!(
        source(load("file:///srv/dir.ldif", "")),
        DirectorySource::LdifFile("/srv/dir.ldif".into())
    );
    assert_eq!(
        source(load("file:sub/../dir.ldif", "")),
        DirectorySource::LdifFile(dir.path().join("dir.ldif"))
    );
    let problems = self::problems(load("ldaps://ldap.example.org", "starttls = true"));
    assert!(has(&problems, "directory.starttls:", "ldaps://"));
    let problems = self::problems(load("ldap://h/dc=x", ""));
    assert!(has(&problems, "directory.url:", "base DN"));
    let problems = self::problems(load("http://h", ""));
    assert!(has(&problems, "directory.url:", "not an ldap://"));
    let problems = self::problems(dir.load("[directory]\nbase_dn = \"dc=x\"\n"));
    assert!(has(&problems, "directory.url:", "required"));
}

#[test]
fn directory_preset_and_attribute_overrides() {
    let dir = Dir::new();
    let config = dir
        .load(&format!(
            "{MINIMAL}preset = \"active_directory\"\nuser_base = \"ou=people,dc=example,dc=org\"\n\
             [directory.attributes]\nmail = \"proxyAddresses\"\nid = \"1.2.840.113556.1.4.2\"\n"
        ))
        .unwrap()
        .config;
    let directory = &config.directory;
    assert_eq!(directory.preset, DirectoryPreset::ActiveDirectory);
    assert_eq!(directory.attributes.username, "sAMAccountName");
    assert_eq!(directory.attributes.upn, "userPrincipalName");
    assert_eq!(directory.attributes.mail, "proxyAddresses");
    assert_eq!(directory.attributes.id, "1.2.840.113556.1.4.2");
    assert_eq!(directory.attributes.group_id, "1.2.840.113556.1.4.2");
    assert_eq!(directory.user_base, "ou=people,dc=example,dc=org");
    assert_eq!(directory.group_base, "dc=example,dc=org");
    assert_eq!(directory.group_filter, "(objectClass=group)");

    let problems = problems(dir.load(&format!(
        "{MINIMAL}user_filter = \"objectClass=person\"\npage_size = 0\ndeletion_guard_max_percent = 120\n\
         [directory.attributes]\nusername = \"sam account\"\n"
    )));
    assert!(has(
        &problems,
        "directory.user_filter:",
        "not an LDAP filter"
    ));
    assert!(has(&problems, "directory.page_size:", "at least 1"));
    assert!(has(
        &problems,
        "directory.deletion_guard_max_percent:",
        "120"
    ));
    assert!(has(
        &problems,
        "directory.attributes.username:",
        "\"sam account\""
    ));
}

#[test]
fn wrong_value_types_and_toml_syntax_are_reported() {
    let dir = Dir::new();
    let problems = problems(dir.load(&format!("{MINIMAL}page_size = \"many\"\n")));
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0].starts_with("directory.page_size: invalid type"),
        "{problems:?}"
    );
    let problems = self::problems(dir.load("[directory\nurl = 1"));
    assert_eq!(problems.len(), 1);
    assert!(problems[0].contains("line 1"), "{problems:?}");
}

#[test]
fn web_tls_and_public_url_rules() {
    let dir = Dir::new();
    let web = |body: &str| dir.load(&format!("{MINIMAL}\n[web]\n{body}"));

    // Loopback plain HTTP is fine; so is a declared proxy.
    web("listen = \"127.0.0.1:8080\"\npublic_url = \"http://localhost:8080/\"").unwrap();
    let config = web(
        "listen = \"0.0.0.0:8080\"\npublic_url = \"https://Tap.Example.org\"\nbehind_tls_proxy = true",
    )
    .unwrap()
    .config;
    let url = config.web.public_url.unwrap();
    assert_eq!(url.as_str(), "https://tap.example.org");
    assert_eq!(url.host(), "tap.example.org");
    assert_eq!(url.port(), 443);

    let problems = self::problems(web("listen = \"127.0.0.1:8080\""));
    assert!(has(&problems, "web.public_url:", "required"));
    let problems = self::problems(web(
        "listen = \"0.0.0.0:8443\"\npublic_url = \"https://tap.example.org/tap\"\ntls_cert_file = \"c.pem\"",
    ));
    assert!(has(&problems, "web.public_url:", "origin"));
    assert!(has(&problems, "web.tls_key_file:", "required"));

    let loaded = web(
        "listen = \"0.0.0.0:8443\"\npublic_url = \"https://10.1.2.3:8443\"\ntls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"",
    )
    .unwrap();
    assert!(has(
        &loaded.warnings,
        "web.tls_cert_file:",
        "cannot be read now"
    ));
    assert!(has(&loaded.warnings, "web.public_url:", "IP address"));
    assert_eq!(
        loaded.config.web.tls.unwrap().key_file,
        dir.path().join("k.pem")
    );

    let problems = self::problems(dir.load(&format!(
        "{MINIMAL}\n[web]\nlisten = \"127.0.0.1:9000\"\npublic_url = \"http://localhost:9000\"\n\
         [federation]\nlisten = \"0.0.0.0:9001\"\n[metrics]\nlisten = \"127.0.0.1:9000\"\n"
    )));
    assert!(has(&problems, "federation.listen:", "in clear"));
    assert!(has(&problems, "metrics.listen:", "also used by web.listen"));
}

#[test]
fn admin_socket_and_roles() {
    let dir = Dir::new();
    let long = format!("/run/{}/admin.sock", "x".repeat(120));
    let problems = problems(dir.load(&format!(
        "{MINIMAL}\n[admin]\nsocket = \"{long}\"\nsocket_group = \"bad group\"\n\
         [admin.roles]\nglobal_reader = [\"\"]\n"
    )));
    assert!(has(&problems, "admin.socket:", "at most 107"));
    assert!(has(&problems, "admin.socket_group:", "\"bad group\""));
    assert!(has(&problems, "admin.roles.global_reader[0]:", "empty"));

    let config = dir
        .load(&format!(
            "{MINIMAL}\n[admin]\nsocket = \"run/../admin.sock\"\n"
        ))
        .unwrap()
        .config;
    assert_eq!(config.admin.socket, dir.path().join("admin.sock"));

    let warnings = dir
        .load(&format!(
            "{MINIMAL}\n[admin]\nroot_is_global_administrator = false\n"
        ))
        .unwrap()
        .warnings;
    assert!(has(&warnings, "admin.roles:", "nobody can administer"));
}

#[test]
fn radius_client_lookup_prefers_the_most_specific_network() {
    let dir = Dir::new();
    let config = dir
        .load(&format!(
            r#"{MINIMAL}
[radius]
listen = ["127.0.0.1:0"]
directory_unavailable = "reject"

[[radius.clients]]
name = "wide"
address = "10.0.0.0/8"
secret_file = "radius.secret"

[[radius.clients]]
name = "narrow"
address = "10.1.0.0/16"
secret_file = "radius.secret"

[[radius.clients]]
name = "v6"
address = "2001:db8::/32"
secret_file = "radius.secret"
"#
        ))
        .unwrap()
        .config;
    let radius = &config.radius;
    assert_eq!(radius.directory_unavailable, DirectoryUnavailable::Reject);
    let name = |ip: &str| {
        radius
            .client_for(ip.parse().unwrap())
            .map(|c| c.name.as_str())
    };
    assert_eq!(name("10.1.2.3"), Some("narrow"));
    assert_eq!(name("10.2.0.1"), Some("wide"));
    assert_eq!(name("::ffff:10.1.0.9"), Some("narrow"));
    assert_eq!(name("2001:db8:ffff::1"), Some("v6"));
    assert_eq!(name("11.0.0.1"), None);
    assert_eq!(name("2001:db9::1"), None);
}

#[test]
fn cidr_parsing_edge_cases() {
    let ok = |text: &str| IpNetwork::parse(text).unwrap().to_string();
    assert_eq!(ok("10.0.0.0/8"), "10.0.0.0/8");
    assert_eq!(ok("192.0.2.7"), "192.0.2.7/32");
    assert_eq!(ok("192.0.2.7/32"), "192.0.2.7/32");
    assert_eq!(ok("0.0.0.0/0"), "0.0.0.0/0");
    assert_eq!(ok("::/0"), "::/0");
    assert_eq!(ok("::1"), "::1/128");
    assert_eq!(ok("2001:db8::/32"), "2001:db8::/32");
    assert_eq!(ok("::ffff:10.0.0.0/104"), "::ffff:10.0.0.0/104");

    for bad in [
        "",
        "10.0.0.0/33",
        "::/129",
        "10.0.0.0/",
        "10.0.0.0/-1",
        "10.0.0.0/+8",
        "10.0.0.0/8/8",
        "10.0.0/8",
        "10.0.0.256",
        " 10.0.0.1",
        "10.0.0.1 ",
        "[::1]",
        "fe80::1%eth0",
        "host.example.org",
        "10.0.0.0/0008",
    ] {
        let err = IpNetwork::parse(bad).unwrap_err();
        assert!(
            err.contains("is not an IP address or CIDR"),
            "{bad:?}: {err}"
        );
    }
    let err = IpNetwork::parse("10.0.0.1/8").unwrap_err();
    assert!(err.contains("did you mean \"10.0.0.0/8\""), "{err}");
    assert!(IpNetwork::parse("2001:db8::1/32").is_err());

    let any4 = IpNetwork::parse("0.0.0.0/0").unwrap();
    assert!(any4.contains("203.0.113.9".parse().unwrap()));
    assert!(!any4.contains("2001:db8::1".parse().unwrap()));
    let host = IpNetwork::parse("192.0.2.7").unwrap();
    assert!(host.contains(IpAddr::from([192, 0, 2, 7])));
    assert!(!host.contains(IpAddr::from([192, 0, 2, 8])));
}

#[test]
fn duration_parsing() {
    assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
    assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
    assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
    assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
    for bad in ["", "m", "5 m", "5x", "-5s", "1.5h", "99999999999999999999d"] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
    assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
    assert_eq!(format_duration(Duration::ZERO), "0s");
}

#[test]
fn store_urls() {
    let base = Path::new("/etc/tapd");
    let parse = |text: &str| StoreUrl::parse(text, base).unwrap();
    assert_eq!(
        parse("sqlite:///var/lib/tapd/tapd.db"),
        StoreUrl::Sqlite("/var/lib/tapd/tapd.db".into())
    );
    assert_eq!(
        parse("sqlite:state/tapd.db"),
        StoreUrl::Sqlite("/etc/tapd/state/tapd.db".into())
    );
    assert_eq!(
        parse("sqlite://state/tapd.db"),
        StoreUrl::Sqlite("/etc/tapd/state/tapd.db".into())
    );
    assert_eq!(
        parse("sqlite:../../x/tapd.db"),
        StoreUrl::Sqlite("/x/tapd.db".into())
    );
    assert_eq!(parse("sqlite:/abs.db"), StoreUrl::Sqlite("/abs.db".into()));
    let pg = parse("postgres://tapd:hunter2@db.example.org/tapd");
    assert_eq!(
        pg,
        StoreUrl::Postgres("postgres://tapd:hunter2@db.example.org/tapd".into())
    );
    assert!(!format!("{pg:?}").contains("hunter2"));
    assert!(!pg.to_string().contains("hunter2"));
    assert!(matches!(
        parse("postgresql://db/tapd"),
        StoreUrl::Postgres(_)
    ));
    assert!(StoreUrl::parse("sqlite:", base).is_err());
    assert!(StoreUrl::parse("sqlite:x.db?mode=ro", base).is_err());
    assert!(StoreUrl::parse("mysql://db", base).is_err());
}

#[test]
fn missing_config_file_names_the_path() {
    let err = load(Path::new("/nonexistent/tapd.toml")).unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert!(err.problems[0].contains("/nonexistent/tapd.toml"));
    assert!(err.problems[0].contains("No such file"));
}

#[test]
fn radius_reply_attributes_and_sign_in_throttle() {
    let dir = Dir::new();
    let config = dir
        .load(&format!(
            r#"{MINIMAL}
[[radius.reply_attributes]]
group = "vpn-users"
class = "vpn"
filter_id = "vpn-acl"

[[radius.reply_attributes]]
group = "cn=staff,ou=groups,dc=example,dc=org"
filter_id = "staff"

[security]
sign_in_max_failures = 3
sign_in_failure_window = "2m"
sign_in_cooldown = "30s"
"#
        ))
        .unwrap()
        .config;
    let rules = &config.radius.reply_attributes;
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].group, "vpn-users");
    assert_eq!(rules[0].class.as_deref(), Some("vpn"));
    assert_eq!(rules[0].filter_id.as_deref(), Some("vpn-acl"));
    assert_eq!(rules[1].class, None);
    assert_eq!(config.security.sign_in_max_failures, 3);
    assert_eq!(
        config.security.sign_in_failure_window,
        Duration::from_secs(120)
    );
    assert_eq!(config.security.sign_in_cooldown, Duration::from_secs(30));

    let defaults = dir.load(MINIMAL).unwrap().config.security;
    assert_eq!(defaults.sign_in_max_failures, 5);
    assert_eq!(defaults.sign_in_failure_window, Duration::from_secs(300));
    assert_eq!(defaults.sign_in_cooldown, Duration::from_secs(60));

    let lines = problems(dir.load(&format!(
        r#"{MINIMAL}
[[radius.reply_attributes]]
group = ""

[[radius.reply_attributes]]
group = "g"
class = ""
filter_id = "{long}"

[[radius.reply_attributes]]
group = "g"
vendor = "x"

[security]
sign_in_max_failures = 0
sign_in_cooldown = "0s"
"#,
        long = "f".repeat(254)
    )));
    assert!(has(
        &lines,
        "radius.reply_attributes[2].vendor:",
        "unknown key"
    ));
    let lines = problems(dir.load(&format!(
        r#"{MINIMAL}
[[radius.reply_attributes]]
group = ""

[[radius.reply_attributes]]
group = "g"
class = ""
filter_id = "{long}"

[security]
sign_in_max_failures = 0
sign_in_cooldown = "0s"
"#,
        long = "f".repeat(254)
    )));
    assert!(has(&lines, "radius.reply_attributes[0].group:", "required"));
    assert!(has(
        &lines,
        "radius.reply_attributes[0]:",
        "set class, filter_id"
    ));
    assert!(has(&lines, "radius.reply_attributes[1].class:", "0 bytes"));
    assert!(has(
        &lines,
        "radius.reply_attributes[1].filter_id:",
        "254 bytes"
    ));
    assert!(has(&lines, "security.sign_in_max_failures:", "at least 1"));
    assert!(has(
        &lines,
        "security.sign_in_cooldown:",
        "longer than zero"
    ));
}

#[test]
fn postgres_store_settings() {
    let dir = Dir::new();
    dir.write("pg.secret", "db-password\n");
    let toml = format!(
        r#"
[store]
url = "postgres://tapd@db.example.org/tapd?sslmode=verify-full"
password_file = "pg.secret"
ca_file = "pg-ca.pem"
pool_size = 8
statement_timeout = "3s"
connect_timeout = "2s"
{MINIMAL}"#
    );
    let loaded = dir.load(&toml).unwrap();
    let store = &loaded.config.store;
    assert_eq!(
        store.url,
        StoreUrl::Postgres("postgres://tapd@db.example.org/tapd?sslmode=verify-full".into())
    );
    assert_eq!(store.password.as_ref().unwrap().expose(), "db-password");
    assert_eq!(store.ca_file, Some(dir.path().join("pg-ca.pem")));
    assert_eq!(store.pool_size, 8);
    assert_eq!(store.statement_timeout, Duration::from_secs(3));
    assert_eq!(store.connect_timeout, Duration::from_secs(2));
    // The CA file is read when the store opens; its absence now is only a warning.
    assert!(loaded
        .warnings
        .iter()
        .any(|w| w.starts_with("store.ca_file:")));

    let defaults = dir
        .load(&format!(
            "[store]\nurl = \"postgres://tapd@db/tapd\"\n{MINIMAL}"
        ))
        .unwrap()
        .config
        .store;
    assert_eq!(defaults.pool_size, 16);
    assert_eq!(defaults.statement_timeout, Duration::from_secs(10));
    assert_eq!(defaults.connect_timeout, Duration::from_secs(5));
    assert!(defaults.password.is_none());
}

#[test]
fn postgres_transport_to_a_remote_server_must_be_verified() {
    let dir = Dir::new();
    let load =
        |url: &str, extra: &str| dir.load(&format!("[store]\nurl = \"{url}\"\n{extra}\n{MINIMAL}"));
    let problems = problems(load(
        "postgres://tapd@db.example.org/tapd?sslmode=require",
        "",
    ));
    assert!(
        has(&problems, "store.url:", "store.allow_insecure_transport"),
        "{problems:#?}"
    );
    load(
        "postgres://tapd@db.example.org/tapd?sslmode=require",
        "allow_insecure_transport = true",
    )
    .unwrap();
    load("postgres://tapd@db.example.org/tapd", "").unwrap();
    load("postgres://tapd@127.0.0.1/tapd?sslmode=disable", "").unwrap();
}

#[test]
fn postgres_store_problems_and_warnings() {
    let dir = Dir::new();
    dir.write("pg.secret", "db-password\n");
    let bad = format!(
        r#"
[store]
url = "postgres://tapd:inline@db/tapd?sslmode=allow"
pool_size = 0
statement_timeout = "0s"
{MINIMAL}"#
    );
    let found = problems(dir.load(&bad));
    assert!(has(&found, "store.url:", "sslmode=allow"), "{found:#?}");
    assert!(
        !found.iter().any(|p| p.contains("inline")),
        "no password in {found:#?}"
    );
    assert!(has(&found, "store.pool_size:", "at least 1"), "{found:#?}");
    assert!(
        has(&found, "store.statement_timeout:", "longer than zero"),
        "{found:#?}"
    );

    let both = format!(
        "[store]\nurl = \"postgres://tapd:inline@db/tapd\"\npassword_file = \"pg.secret\"\n{MINIMAL}"
    );
    assert!(has(
        &problems(dir.load(&both)),
        "store.password_file:",
        "carries a password too"
    ));
    let inline = dir
        .load(&format!(
            "[store]\nurl = \"postgres://tapd:inline@db/tapd\"\n{MINIMAL}"
        ))
        .unwrap();
    assert!(inline
        .warnings
        .iter()
        .any(|w| w.starts_with("store.url:") && w.contains("password_file")));
    let sqlite = dir
        .load(&format!(
            "[store]\nurl = \"sqlite:///var/lib/tapd/tapd.db\"\npassword_file = \"pg.secret\"\n{MINIMAL}"
        ))
        .unwrap();
    assert!(sqlite
        .warnings
        .iter()
        .any(|w| w.contains("PostgreSQL only")));
}

#[test]
fn incremental_interval_defaults_turns_off_and_has_a_minimum() {
    let dir = Dir::new();
    let config = dir.load(MINIMAL).unwrap().config;
    assert_eq!(
        config.directory.incremental_interval,
        Some(Duration::from_secs(60))
    );
    let off = dir
        .load(&format!("{MINIMAL}incremental_interval = \"0s\"\n"))
        .unwrap()
        .config;
    assert_eq!(off.directory.incremental_interval, None);
    let too_often = problems(dir.load(&format!("{MINIMAL}incremental_interval = \"2s\"\n")));
    assert!(
        has(
            &too_often,
            "directory.incremental_interval:",
            "minimum of 5s"
        ),
        "{too_often:?}"
    );
    let pointless = dir
        .load(&format!(
            "{MINIMAL}incremental_interval = \"10m\"\nsync_interval = \"5m\"\n"
        ))
        .unwrap();
    assert!(pointless
        .warnings
        .iter()
        .any(|w| w.contains("directory.incremental_interval")));
}

#[test]
fn openldap_group_filter_covers_every_group_class() {
    let config = Dir::new().load(MINIMAL).unwrap().config;
    for class in ["groupOfNames", "groupOfUniqueNames", "posixGroup"] {
        assert!(
            config.directory.group_filter.contains(class),
            "{}",
            config.directory.group_filter
        );
    }
}

#[test]
fn listener_hardening_keys_have_their_defaults_and_are_validated() {
    let dir = Dir::new();
    let config = dir.load(MINIMAL).unwrap().config;
    assert_eq!(config.radius.reject_delay, Duration::from_secs(1));
    assert_eq!(config.federation.reject_delay, Duration::from_secs(1));
    assert!(config.web.trusted_proxies.is_empty());
    assert_eq!(config.web.limits, HttpLimits::default());
    assert_eq!(config.admin.connection_timeout, Duration::from_secs(120));

    let config = dir
        .load(&format!(
            "{MINIMAL}\n[radius]\nreject_delay = \"0\"\n[web]\ntrusted_proxies = [\"10.0.0.5\", \"2001:db8::/64\"]\nheader_timeout = \"2s\"\nmax_connections_per_address = 4\n"
        ))
        .unwrap()
        .config;
    assert_eq!(config.radius.reject_delay, Duration::ZERO);
    assert_eq!(config.web.trusted_proxies.len(), 2);
    assert_eq!(config.web.limits.header_timeout, Duration::from_secs(2));
    assert_eq!(config.web.limits.max_connections_per_address, 4);

    let lines = problems(dir.load(&format!(
        "{MINIMAL}\n[radius]\nreject_delay = \"20s\"\n[federation]\nreject_delay = \"soon\"\n[web]\ntrusted_proxies = [\"10.0.0.1/8\", \"proxy.example.org\"]\nbody_timeout = \"0\"\nmax_connections_per_address = 0\n[admin]\nconnection_timeout = \"0\"\n"
    )));
    assert!(has(&lines, "radius.reject_delay", "maximum"), "{lines:#?}");
    assert!(has(&lines, "federation.reject_delay", "soon"), "{lines:#?}");
    assert!(
        has(&lines, "web.trusted_proxies[0]", "host bits"),
        "{lines:#?}"
    );
    assert!(
        has(
            &lines,
            "web.trusted_proxies[1]",
            "not an IP address or CIDR"
        ),
        "{lines:#?}"
    );
    assert!(
        has(&lines, "web.body_timeout", "longer than zero"),
        "{lines:#?}"
    );
    assert!(
        has(&lines, "web.max_connections_per_address", "at least 1"),
        "{lines:#?}"
    );
    assert!(
        has(&lines, "admin.connection_timeout", "longer than zero"),
        "{lines:#?}"
    );

    // A proxy declared without trusted_proxies: X-Forwarded-For is ignored, and tapd says so.
    let loaded = dir
        .load(&format!("{MINIMAL}\n[web]\nbehind_tls_proxy = true\n"))
        .unwrap();
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.starts_with("web.trusted_proxies") && w.contains("ignored")),
        "{:#?}",
        loaded.warnings
    );
}

#[test]
fn audit_retention_defaults_to_400_days_and_can_be_turned_off() {
    let dir = Dir::new();
    let config = dir.load(MINIMAL).unwrap().config;
    assert_eq!(
        config.audit.retention,
        Some(Duration::from_secs(400 * 86_400))
    );
    for off in ["off", "0", "0s"] {
        let config = dir
            .load(&format!("{MINIMAL}\n[audit]\nretention = \"{off}\"\n"))
            .unwrap()
            .config;
        assert_eq!(config.audit.retention, None, "{off}");
    }
    let config = dir
        .load(&format!("{MINIMAL}\n[audit]\nretention = \"90d\"\n"))
        .unwrap()
        .config;
    assert_eq!(
        config.audit.retention,
        Some(Duration::from_secs(90 * 86_400))
    );
    // A bare number is seconds: a typo must not wipe the audit.
    let problems = problems(dir.load(&format!("{MINIMAL}\n[audit]\nretention = \"400\"\n")));
    assert!(
        has(&problems, "audit.retention:", "less than a day"),
        "{problems:#?}"
    );
    let problems =
        self::problems(dir.load(&format!("{MINIMAL}\n[audit]\nretention = \"forever\"\n")));
    assert!(has(&problems, "audit.retention:", "off"), "{problems:#?}");
}

#[test]
fn policy_privileged_tap_defaults_to_alert_and_names_a_bad_value() {
    use crate::config::PrivilegedTap;
    let dir = Dir::new();
    let config = dir.load(MINIMAL).unwrap().config;
    assert_eq!(config.policy.privileged_tap, PrivilegedTap::Alert);
    for (text, want) in [
        ("allow", PrivilegedTap::Allow),
        ("alert", PrivilegedTap::Alert),
        ("deny", PrivilegedTap::Deny),
    ] {
        let config = dir
            .load(&format!(
                "{MINIMAL}\n[policy]\nprivileged_tap = \"{text}\"\n"
            ))
            .unwrap()
            .config;
        assert_eq!(config.policy.privileged_tap, want);
        assert_eq!(want.as_str(), text);
    }
    let problems = problems(dir.load(&format!("{MINIMAL}\n[policy]\nprivileged_tap = \"warn\"\n")));
    assert!(
        has(
            &problems,
            "policy.privileged_tap:",
            "\"warn\" is not one of allow, alert, deny"
        ),
        "{problems:#?}"
    );
    let problems = self::problems(dir.load(&format!(
        "{MINIMAL}\n[policy]\nprivileged_taps = \"deny\"\n"
    )));
    assert!(
        problems.iter().any(|p| p.contains("privileged_taps")),
        "{problems:#?}"
    );
}

#[test]
fn sign_in_flush_defaults_to_100ms_and_zero_means_before_the_answer() {
    let dir = Dir::new();
    let config = dir.load(MINIMAL).unwrap().config;
    assert_eq!(config.audit.sign_in_flush, Duration::from_millis(100));
    for (text, window) in [("0", Duration::ZERO), ("250ms", Duration::from_millis(250))] {
        let config = dir
            .load(&format!("{MINIMAL}\n[audit]\nsign_in_flush = \"{text}\"\n"))
            .unwrap()
            .config;
        assert_eq!(config.audit.sign_in_flush, window, "{text}");
    }
    for (text, says) in [("1m", "longer than"), ("soon", "not a duration")] {
        let problems =
            problems(dir.load(&format!("{MINIMAL}\n[audit]\nsign_in_flush = \"{text}\"\n")));
        assert!(
            has(&problems, "audit.sign_in_flush:", says),
            "{text}: {problems:#?}"
        );
    }
}

#[test]
fn secrets_key_file_defaults_next_to_the_database_and_a_bad_one_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new();
    let store =
        |extra: &str| format!("[store]\nurl = \"sqlite:state/tapd.db\"\n{extra}\n{MINIMAL}");
    let config = dir.load(&store("")).unwrap().config;
    assert_eq!(
        config.store.secrets_key_file,
        dir.path().join("state/secrets.key")
    );
    // Missing: fine (created at first start); check-config creates nothing.
    assert!(!config.store.secrets_key_file.exists());
    dir.write("short.key", "0123456789");
    let problems = problems(dir.load(&store("secrets_key_file = \"short.key\"")));
    assert!(
        has(&problems, "store.secrets_key_file:", "holds 10 bytes"),
        "{problems:#?}"
    );
    let key = dir.path().join("good.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let problems = self::problems(dir.load(&store("secrets_key_file = \"good.key\"")));
    assert!(
        has(&problems, "store.secrets_key_file:", "chmod 600"),
        "{problems:#?}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir
        .load(&store(
            "secrets_key_file = \"good.key\"\nsecrets_previous_key_file = \"good.key\"",
        ))
        .unwrap()
        .config;
    assert_eq!(config.store.secrets_previous_key_file, Some(key));
}

// ---- [smtp] ----

const WEB: &str = r#"
[web]
listen = "127.0.0.1:0"
public_url = "https://tapd.example.org"
"#;

#[test]
fn smtp_is_off_by_default_and_a_full_section_loads() {
    let dir = Dir::new();
    assert!(dir.load(MINIMAL).unwrap().config.smtp.is_none());
    dir.write("smtp.secret", "mail-password\n");
    dir.write(
        "mail.tmpl",
        "Subject: Zugang für {display_name}\n--- text\nCode: {code}\n--- html\n<p>{code}</p>\n",
    );
    let toml = format!(
        "{MINIMAL}{WEB}[smtp]\nurl = \"smtp://mail.example.org\"\nfrom = \"tapd <tapd@example.org>\"\n\
         username = \"tapd\"\npassword_file = \"smtp.secret\"\ntemplate_file = \"mail.tmpl\"\n\
         time_zone = \"Europe/Berlin\"\n"
    );
    let smtp = dir.load(&toml).unwrap().config.smtp.unwrap();
    assert_eq!(smtp.server.host, "mail.example.org");
    assert_eq!(smtp.server.port, 587);
    assert_eq!(smtp.server.security, SmtpSecurity::StartTlsRequired);
    assert_eq!(
        smtp.credentials.as_ref().unwrap().1.expose(),
        "mail-password"
    );
    assert_eq!(smtp.sign_in_url, "https://tapd.example.org/sign-in");
    assert_eq!(smtp.max_attempts, 8);
    let loopback = format!(
        "{MINIMAL}{WEB}[smtp]\nurl = \"smtp://127.0.0.1:2525\"\nfrom = \"tapd@example.org\"\n"
    );
    let smtp = dir.load(&loopback).unwrap().config.smtp.unwrap();
    assert_eq!(smtp.server.security, SmtpSecurity::StartTlsOpportunistic);
    let tls =
        format!("{MINIMAL}{WEB}[smtp]\nurl = \"smtps://mail.example.org\"\nfrom = \"t@e.org\"\n");
    let smtp = dir.load(&tls).unwrap().config.smtp.unwrap();
    assert_eq!(
        (smtp.server.security, smtp.server.port),
        (SmtpSecurity::Tls, 465)
    );
}

#[test]
fn smtp_problems_are_each_named_by_key() {
    let dir = Dir::new();
    use std::os::unix::fs::PermissionsExt;
    dir.write("open.secret", "pw\n");
    std::fs::set_permissions(
        dir.path().join("open.secret"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    dir.write(
        "bad.tmpl",
        "Subject: x\n--- text\nno code here\n--- html\n{code}\n",
    );
    let toml = format!(
        "{MINIMAL}[smtp]\nurl = \"imap://mail.example.org\"\nfrom = \"not an address\"\n\
         username = \"tapd\"\npassword_file = \"open.secret\"\ntemplate_file = \"bad.tmpl\"\n\
         time_zone = \"Mars/Olympus\"\nmax_attempts = 0\nretry_initial = \"2h\"\n"
    );
    let found = problems(dir.load(&toml));
    for expected in [
        "smtp.url: \"imap://mail.example.org\" is not an smtps:// or smtp:// URL",
        "smtp.from: \"not an address\" is not a mail address",
        "smtp.password_file:",
        "smtp.template_file:",
        "smtp.time_zone: \"Mars/Olympus\" is not a known time zone",
        "smtp.max_attempts: must be at least 1",
        "smtp.retry_max: must not be shorter than smtp.retry_initial",
        "smtp.url: needs web.public_url",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(expected)),
            "missing {expected:?} in {found:#?}"
        );
    }
    let half = format!("{MINIMAL}{WEB}[smtp]\nurl = \"smtps://m.example.org\"\nfrom = \"a@b.org\"\nusername = \"u\"\n");
    assert!(problems(dir.load(&half))
        .iter()
        .any(|p| p == "smtp.password_file: required when smtp.username is set"));
}

#[test]
fn onboarding_rules_load_and_their_problems_are_named() {
    let dir = Dir::new();
    let smtp = "[smtp]\nurl = \"smtps://mail.example.org\"\nfrom = \"tapd@example.org\"\n";
    let rule = "[[onboarding.rules]]\nname = \"new-hires\"\ngroup = \"new-hires\"\n\
                recipient = \"it@example.org\"\nlifetime = \"8h\"\nstart_time = \"08:00\"\n\
                time_zone = \"Europe/Berlin\"\none_time = true\n";
    let config = dir
        .load(&format!("{MINIMAL}{WEB}{smtp}{rule}"))
        .unwrap()
        .config;
    let loaded = &config.onboarding_rules[0];
    assert_eq!(loaded.lifetime_in_minutes, Some(480));
    assert_eq!(loaded.start_time, Some((8, 0)));
    assert_eq!(loaded.one_time, Some(true));
    assert!(!loaded.include_admins);
    // Without [smtp], twice the same name, bad values: each named.
    let bad = "[[onboarding.rules]]\nname = \"a\"\ngroup = \"g\"\nrecipient = \"nobody\"\n\
               start_time = \"8 am\"\ntime_zone = \"Nowhere/Land\"\n\
               [[onboarding.rules]]\nname = \"a\"\ngroup = \"\"\nrecipient = \"\"\n";
    let found = problems(dir.load(&format!("{MINIMAL}{WEB}{bad}")));
    for expected in [
        "onboarding.rules[0].name: a rule mails each pass",
        "onboarding.rules[0].recipient: \"nobody\" is neither \"manager\" nor a mail address",
        "onboarding.rules[0].start_time: \"8 am\" is not a time of day",
        "onboarding.rules[0].time_zone: \"Nowhere/Land\" is not a known time zone",
        "onboarding.rules[1].name: \"a\" is used by another rule",
        "onboarding.rules[1].group: must not be empty",
        "onboarding.rules[1].recipient: \"\" is neither \"manager\" nor a mail address",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(expected)),
            "missing {expected:?} in {found:#?}"
        );
    }
}

#[test]
fn onboarding_rules_mail_the_manager_by_default_and_may_match_by_date() {
    use crate::config::{DateTrigger, RuleRecipient};
    let dir = Dir::new();
    let smtp = "[smtp]\nurl = \"smtps://mail.example.org\"\nfrom = \"tapd@example.org\"\n";
    let rules = "[[onboarding.rules]]\nname = \"hires\"\ndate_attribute = \"employeeHireDate\"\n\
                 days_before = 5\nstart_time = \"08:00\"\n\
                 [[onboarding.rules]]\nname = \"staff\"\ngroup = \"staff\"\n\
                 date_attribute = \"EMPLOYEEHIREDATE\"\nrecipient = \"manager\"\n\
                 [[onboarding.rules]]\nname = \"desk\"\ngroup = \"g\"\nrecipient = \"it@example.org\"\n";
    let config = dir
        .load(&format!("{MINIMAL}{WEB}{smtp}{rules}"))
        .unwrap()
        .config;
    let [hires, staff, desk] = &config.onboarding_rules[..] else {
        panic!("three rules expected");
    };
    assert_eq!(hires.recipient, RuleRecipient::Manager);
    assert_eq!(hires.group, None);
    assert_eq!(
        hires.date,
        Some(DateTrigger {
            attribute: "employeehiredate".to_owned(),
            days_before: 5
        })
    );
    assert_eq!(staff.recipient, RuleRecipient::Manager);
    assert_eq!(staff.group.as_deref(), Some("staff"));
    assert_eq!(
        desk.recipient,
        RuleRecipient::Mailbox("it@example.org".to_owned())
    );
    assert_eq!(desk.date, None);
    // The directory reads each date attribute once.
    assert_eq!(config.directory.attributes.dates, ["employeehiredate"]);

    let bad = "[[onboarding.rules]]\nname = \"none\"\n\
               [[onboarding.rules]]\nname = \"odd\"\ndate_attribute = \"hire date\"\n\
               days_before = 400\n\
               [[onboarding.rules]]\nname = \"stray\"\ngroup = \"g\"\ndays_before = 3\n";
    let found = problems(dir.load(&format!("{MINIMAL}{WEB}{smtp}{bad}")));
    for expected in [
        "onboarding.rules[0].group: a rule needs a group, a date_attribute, or both",
        "onboarding.rules[1].date_attribute: \"hire date\" is not an LDAP attribute name",
        "onboarding.rules[1].days_before: at most 365",
        "onboarding.rules[2].days_before: only applies with date_attribute",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(expected)),
            "missing {expected:?} in {found:#?}"
        );
    }
}

/// `[[radius.clients]]` with a TOTP second factor in append mode, `extra` lines added to the
/// client, and `radius` lines added to `[radius]`.
fn totp_client(radius: &str, extra: &str) -> String {
    format!(
        r#"{MINIMAL}
[radius]
listen = ["127.0.0.1:0"]
{radius}

[[radius.clients]]
name = "vpn"
address = "10.0.0.0/8"
secret_file = "radius.secret"
second_factor = "totp"
second_factor_mode = "append"
{extra}
"#
    )
}

#[test]
fn second_factor_separator_defaults_to_a_comma_and_a_bad_one_is_named() {
    let dir = Dir::new();
    let config = dir.load(&totp_client("", "")).unwrap().config;
    assert_eq!(
        config.radius.clients[0].second_factor,
        Some(TotpRequirement {
            without_app: WithoutSecondFactor::Reject,
            mode: SecondFactorMode::Append {
                separator: ",".to_owned()
            },
        })
    );
    // One to four characters, none of them a digit, whitespace or a control character.
    for good in ["#", "::", "||||", "é"] {
        let extra = format!("second_factor_separator = \"{good}\"");
        let config = dir.load(&totp_client("", &extra)).unwrap().config;
        assert_eq!(
            config.radius.clients[0]
                .second_factor
                .as_ref()
                .unwrap()
                .mode,
            SecondFactorMode::Append {
                separator: good.to_owned()
            }
        );
    }
    for (bad, problem) in [
        ("", "must be 1 to 4 characters"),
        (",,,,,", "must be 1 to 4 characters"),
        ("1", "must not contain a digit"),
        (",9", "must not contain a digit"),
        (" ", "whitespace"),
        ("a b", "whitespace"),
        ("\\t", "whitespace"),
        ("\\u0007", "control character"),
    ] {
        let extra = format!("second_factor_separator = \"{bad}\"");
        let lines = problems(dir.load(&totp_client("", &extra)));
        assert!(
            has(
                &lines,
                "radius.clients[0].second_factor_separator:",
                problem
            ),
            "{bad:?}: {lines:#?}"
        );
    }
}

#[test]
fn challenge_lifetime_defaults_to_120s_and_must_lie_between_1s_and_120s() {
    let dir = Dir::new();
    let config = dir.load(&totp_client("", "")).unwrap().config;
    assert_eq!(config.radius.challenge_lifetime, Duration::from_secs(120));
    for (good, expected) in [("1s", 1), ("120s", 120), ("2m", 120), ("90", 90)] {
        let radius = format!("challenge_lifetime = \"{good}\"");
        let config = dir.load(&totp_client(&radius, "")).unwrap().config;
        assert_eq!(
            config.radius.challenge_lifetime,
            Duration::from_secs(expected),
            "{good}"
        );
    }
    for (bad, problem) in [
        ("0s", "must be longer than zero"),
        ("0", "must be longer than zero"),
        ("121s", "longer than the maximum of 120s"),
        ("2m1s", "longer than the maximum of 120s"),
        ("999ms", "shorter than the minimum of 1s"),
        ("2x", "is not a duration"),
        ("", "is not a duration"),
        ("-5s", "is not a duration"),
    ] {
        let radius = format!("challenge_lifetime = \"{bad}\"");
        let lines = problems(dir.load(&totp_client(&radius, "")));
        assert!(
            has(&lines, "radius.challenge_lifetime:", problem),
            "{bad:?}: {lines:#?}"
        );
    }
}
