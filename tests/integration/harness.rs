//! The test harness: a real `tapd` on a throwaway directory, the local accounts the tests act
//! as, and ways to drive the daemon (`tapctl` as any of those accounts, raw HTTP as root).
//!
//! [`Tapd::start`] writes a config (SQLite store, admin socket and a generated LDIF directory,
//! all in a temp dir; no network listener at all) and starts `tapd` through the test kit
//! (`tests/support`), which returns once it logged `listening for admin on PATH` and its first
//! directory sync. Dropping it kills the daemon; when the test is failing, the daemon's log is
//! printed and the temp dir is kept.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::OnceLock;

use hyper::{Method, StatusCode};
use serde_json::Value;
use tapd::admin::client::{AdminClient, ClientError};

use crate::support;
use crate::support::config::ConfigFile;
use crate::support::daemon::Launch;
use crate::support::tapctl::Tapctl;
pub use crate::support::tapctl::{run_bounded, CommandRun, COMMAND_TIMEOUT};

/// The Unix group of every test account; the admin socket is given to it.
pub const GROUP: &str = "tapit";

/// Local accounts the tests act as. Each but `tapit-nobody` has a directory user of the same
/// name (see [`DIRECTORY_USERS`]).
pub const LOCAL_ACCOUNTS: [&str; 7] = [
    "tapit-ga",
    "tapit-pa",
    "tapit-aa",
    "tapit-pol",
    "tapit-rd",
    "tapit-mem",
    "tapit-nobody",
];

/// Directory users of the generated LDIF and the groups each is a direct member of.
pub const DIRECTORY_USERS: &[(&str, &[&str])] = &[
    ("tapit-ga", &["tapit-global-admins"]),
    ("tapit-pa", &["tapit-priv-auth-admins"]),
    ("tapit-aa", &["tapit-auth-admins"]),
    ("tapit-pol", &["tapit-policy-admins"]),
    ("tapit-rd", &["tapit-readers"]),
    ("tapit-mem", &["tapit-users"]),
    ("tapit-m1", &["tapit-users"]),
    ("tapit-m2", &["tapit-users"]),
    ("tapit-out", &["tapit-users", "tapit-excluded"]),
    ("tapit-w0", &["tapit-users"]),
    ("tapit-w1", &["tapit-users"]),
    ("tapit-w2", &["tapit-users"]),
    ("tapit-w3", &["tapit-users"]),
];

/// `[admin.roles]` of the generated config: role → the group granting it.
const ROLE_GROUPS: [(&str, &str); 5] = [
    ("global_administrator", "tapit-global-admins"),
    (
        "privileged_authentication_administrator",
        "tapit-priv-auth-admins",
    ),
    ("authentication_administrator", "tapit-auth-admins"),
    ("authentication_policy_administrator", "tapit-policy-admins"),
    ("global_reader", "tapit-readers"),
];

/// Mail domain of the directory users: `tapit-m1` is `tapit-m1@example.test`.
pub const DOMAIN: &str = "example.test";

const BASE_DN: &str = "dc=example,dc=test";

/// The TAP policy resource.
pub const POLICY_PATH: &str =
    "/v1/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/temporaryAccessPass";

/// The user principal name of directory user `name`.
pub fn upn(name: &str) -> String {
    format!("{name}@{DOMAIN}")
}

/// The admin API path of `user`'s TAPs.
pub fn taps_path(user: &str) -> String {
    format!("/v1/users/{user}/authentication/temporaryAccessPassMethods")
}

/// Who runs a command against the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// uid 0: the break-glass global administrator.
    Root,
    /// One of [`LOCAL_ACCOUNTS`].
    Local(&'static str),
}

/// The test accounts as they exist on this machine.
#[derive(Debug)]
pub struct LocalAccounts {
    /// gid of [`GROUP`].
    pub gid: u32,
    /// uid of each of [`LOCAL_ACCOUNTS`].
    pub uids: BTreeMap<&'static str, u32>,
}

impl LocalAccounts {
    /// The uid of a test account.
    pub fn uid(&self, name: &str) -> u32 {
        *self
            .uids
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not one of the test accounts"))
    }
}

/// Creates (once per test binary, reusing what exists) the group and the local accounts.
/// Panics with a message saying what to do when not root or when a tool is missing.
pub fn local_accounts() -> &'static LocalAccounts {
    static ACCOUNTS: OnceLock<Result<LocalAccounts, String>> = OnceLock::new();
    match ACCOUNTS.get_or_init(create_local_accounts) {
        Ok(accounts) => accounts,
        Err(message) => panic!("{message}"),
    }
}

fn system_tool(name: &str) -> Result<PathBuf, String> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.exists())
        .ok_or_else(|| {
            format!(
                "{name} is missing: install the Debian package `passwd` \
                 (run `sudo scripts/test.sh`, which installs what the tests need)"
            )
        })
}

fn run_tool(tool: &str, args: &[&str]) -> Result<(), String> {
    let path = system_tool(tool)?;
    let output = Command::new(&path)
        .args(args)
        .output()
        .map_err(|e| format!("can't run {}: {e}", path.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{tool} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn create_local_accounts() -> Result<LocalAccounts, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "the integration tests must run as root: they create local accounts \
                    (tapit-*) and run tapctl as each of them against a real tapd; \
                    run `sudo scripts/test.sh`"
                .into(),
        );
    }
    let group_lookup = || {
        nix::unistd::Group::from_name(GROUP)
            .map_err(|e| format!("can't look up group {GROUP}: {e}"))
    };
    let group = match group_lookup()? {
        Some(group) => group,
        None => {
            run_tool("groupadd", &["--system", GROUP])?;
            group_lookup()?.ok_or_else(|| format!("groupadd did not create {GROUP}"))?
        }
    };
    let mut uids = BTreeMap::new();
    for name in LOCAL_ACCOUNTS {
        let lookup =
            || nix::unistd::User::from_name(name).map_err(|e| format!("can't look up {name}: {e}"));
        let user = match lookup()? {
            Some(user) => {
                if user.gid != group.gid && !group.mem.iter().any(|m| m == name) {
                    run_tool("usermod", &["--append", "--groups", GROUP, name])?;
                }
                user
            }
            None => {
                run_tool(
                    "useradd",
                    &[
                        "--system",
                        "--no-create-home",
                        "--shell",
                        "/usr/sbin/nologin",
                        "--gid",
                        GROUP,
                        name,
                    ],
                )?;
                lookup()?.ok_or_else(|| format!("useradd did not create {name}"))?
            }
        };
        uids.insert(name, user.uid.as_raw());
    }
    Ok(LocalAccounts {
        gid: group.gid.as_raw(),
        uids,
    })
}

/// The generated test directory.
fn directory_ldif() -> String {
    let mut ldif = format!(
        "version: 1\n\n\
         dn: {BASE_DN}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\n\
         o: tapd integration tests\ndc: example\n\n\
         dn: ou=people,{BASE_DN}\nobjectClass: top\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=groups,{BASE_DN}\nobjectClass: top\nobjectClass: organizationalUnit\nou: groups\n\n"
    );
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (index, (name, member_of)) in DIRECTORY_USERS.iter().enumerate() {
        ldif.push_str(&format!(
            "dn: uid={name},ou=people,{BASE_DN}\n\
             objectClass: top\nobjectClass: person\nobjectClass: organizationalPerson\n\
             objectClass: inetOrgPerson\n\
             entryUUID: 5e1f0000-0000-4000-8000-{:012}\n\
             uid: {name}\ncn: {name}\nsn: Test\ndisplayName: Test user {name}\n\
             mail: {}\n\n",
            index + 1,
            upn(name)
        ));
        for group in *member_of {
            groups.entry(group).or_default().push(name);
        }
    }
    for (index, (group, members)) in groups.iter().enumerate() {
        ldif.push_str(&format!(
            "dn: cn={group},ou=groups,{BASE_DN}\nobjectClass: top\nobjectClass: groupOfNames\n\
             entryUUID: 5e1f0000-0000-4000-9000-{:012}\ncn: {group}\n",
            index + 1
        ));
        for member in members {
            ldif.push_str(&format!("member: uid={member},ou=people,{BASE_DN}\n"));
        }
        ldif.push('\n');
    }
    ldif
}

/// The config: admin socket only, no network listener.
fn config(root: &Path) -> ConfigFile {
    let mut config = ConfigFile::new()
        .store(&format!("sqlite://{}/tapd.db", root.display()))
        .ldif_directory(&root.join("directory.ldif"), BASE_DN)
        .string("directory", "preset", "openldap")
        .string("directory", "sync_interval", "1h")
        .string("admin", "socket", root.join("admin.sock").display())
        .string("admin", "socket_group", GROUP)
        .set("admin", "root_is_global_administrator", true);
    for (role, group) in ROLE_GROUPS {
        config = config.set("admin.roles", role, format!("[\"{group}\"]"));
    }
    config.log_to_stderr().no_metrics()
}

/// A running (or stopped) `tapd` on its own temp directory.
pub struct Tapd {
    daemon: support::daemon::Tapd,
    /// The admin socket.
    pub socket: PathBuf,
    /// The config file.
    pub config: PathBuf,
    tapctl: Tapctl,
}

impl Tapd {
    /// Creates the test accounts, writes config and directory, starts the daemon and waits
    /// until it serves the admin socket with the directory synced.
    pub fn start() -> Tapd {
        Tapd::start_with(|config| config)
    }

    /// [`Tapd::start`] with more configuration (`extra` gets the generated file).
    pub fn start_with(extra: impl FnOnce(ConfigFile) -> ConfigFile) -> Tapd {
        local_accounts();
        // Other local accounts must reach the socket and run the copied tapctl: use a temp
        // dir whose ancestors everyone may traverse, and open it up (0755).
        let dir = tempfile::Builder::new()
            .prefix("tapd-it-")
            .tempdir_in(traversable_temp_dir())
            .expect("temp dir");
        let root = dir.path().to_path_buf();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(root.join("directory.ldif"), directory_ldif()).unwrap();
        let config = extra(config(&root)).write(&root.join("tapd.toml"));
        let tapctl = root.join("tapctl");
        std::fs::copy(env!("CARGO_BIN_EXE_tapctl"), &tapctl).unwrap();
        std::fs::set_permissions(&tapctl, std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = root.join("admin.sock");
        Tapd {
            daemon: Launch::new(dir)
                .env_clear()
                .listener("admin")
                .first_sync()
                .start(),
            tapctl: Tapctl::new(&socket).binary(tapctl).isolated(&root),
            socket,
            config,
        }
    }

    /// Starts the daemon again on the same directory (after [`Tapd::kill9`] or
    /// [`Tapd::terminate`]) and waits until it is ready.
    pub fn restart(&mut self) {
        self.daemon.restart();
    }

    /// The daemon's directory (readable by every test account).
    pub fn root(&self) -> &Path {
        self.daemon.dir()
    }

    /// Everything the daemon logged so far (all runs).
    pub fn log_text(&self) -> String {
        self.daemon.log_text()
    }

    /// `kill -9`: no cleanup at all, as in a crash or power cut of the process.
    pub fn kill9(&mut self) {
        self.daemon.kill9();
    }

    /// Sends SIGTERM and waits (bounded) for the daemon to exit; returns how it ended.
    pub fn terminate(&mut self) -> ExitStatus {
        self.daemon.terminate()
    }

    /// Runs the copied `tapctl` as `who` with `args` (the socket is passed for it).
    pub fn tapctl(&self, who: Who, args: &[&str]) -> CommandRun {
        match who {
            Who::Root => self.tapctl.run_as("root", None, args),
            Who::Local(name) => {
                let accounts = local_accounts();
                self.tapctl
                    .run_as(name, Some((accounts.uid(name), accounts.gid)), args)
            }
        }
    }

    /// One HTTP request on the admin socket as root (a fresh connection each time).
    pub fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Value), ClientError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let socket = self.socket.clone();
        let path = path.to_owned();
        runtime.block_on(async move {
            tokio::time::timeout(COMMAND_TIMEOUT, async {
                let mut client = AdminClient::connect(&socket).await?;
                client.raw(method, &path, body).await
            })
            .await
            .unwrap_or_else(|_| panic!("admin API call did not finish within {COMMAND_TIMEOUT:?}"))
        })
    }

    /// Like [`Tapd::raw`] with a JSON body; a transport failure fails the test.
    #[track_caller]
    pub fn api(&self, method: Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let body = body.map(|b| b.to_string().into_bytes());
        let what = format!("{method} {path}");
        self.raw(method, path, body)
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// GET as root, asserting 200.
    #[track_caller]
    pub fn get(&self, path: &str) -> Value {
        let (status, body) = self.api(Method::GET, path, None);
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// The daemon's SQLite store file.
    pub fn db_path(&self) -> PathBuf {
        self.daemon.dir().join("tapd.db")
    }

    /// Audit events (newest first), up to 1000.
    pub fn audit(&self) -> Vec<Value> {
        let body = self.get("/v1/auditLogs?$top=1000");
        body["value"].as_array().cloned().unwrap_or_default()
    }
}

/// A temp dir every local account may traverse: `$TMPDIR` when that is so, else `/tmp`.
fn traversable_temp_dir() -> PathBuf {
    let candidate = std::env::temp_dir();
    let everyone_may_enter = candidate.ancestors().all(|dir| {
        std::fs::metadata(dir)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    });
    if everyone_may_enter {
        candidate
    } else {
        PathBuf::from("/tmp")
    }
}

/// Reads a string field of a JSON object, failing with the object when absent.
#[track_caller]
pub fn str_field<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {value:#}"))
}

/// Parses the `key   value` lines `tapctl` prints for one object.
pub fn fields(table: &str) -> BTreeMap<String, String> {
    table
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(char::is_whitespace)?;
            (!key.is_empty()).then(|| (key.to_owned(), value.trim().to_owned()))
        })
        .collect()
}
