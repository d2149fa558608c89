//! What a test writes before it starts a daemon: secret files (0600, since `tapd` refuses
//! secret files others may read), ports for listeners that can't take port 0, and the paths of
//! the repository's own fixtures and binaries.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A path inside the repository.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The LDIF demo directory (`etc/tapd/demo-directory.ldif`).
pub fn demo_ldif() -> PathBuf {
    repo_path("etc/tapd/demo-directory.ldif")
}

/// Writes a secret file with mode 0600, replacing what was there.
pub fn write_private(path: &Path, content: &str) {
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A free TCP port on 127.0.0.1 (bound and released; a small race the tests accept). Only for
/// what can't listen on port 0 and report the port (PostgreSQL, slapd, a config written before
/// the daemon that must name its own public URL).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a free loopback port")
}

/// The path of a binary of this package: `built` (`CARGO_BIN_EXE_<name>`), unless
/// `TAPD_TEST_BIN_DIR` names a folder holding copies (for a target dir that other checkouts
/// share and may rebuild while the tests run).
pub fn binary(name: &str, built: &str) -> PathBuf {
    match std::env::var_os("TAPD_TEST_BIN_DIR") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => PathBuf::from(built),
    }
}

/// The `tapd` binary to test.
pub fn tapd_binary() -> PathBuf {
    binary("tapd", env!("CARGO_BIN_EXE_tapd"))
}

/// The `tapctl` binary to test.
pub fn tapctl_binary() -> PathBuf {
    binary("tapctl", env!("CARGO_BIN_EXE_tapctl"))
}

/// Fails the test, naming the missing tool and how to get it.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not installed: run scripts/test.sh as root (it installs the Debian package {package})"
    );
}

/// A `tapd.toml` built table by table, written in the order the tables were first named. A
/// test names what it needs (store, directory, listeners, policy) and adds raw lines for the
/// rest; listeners go on port 0 and the kit reads the chosen ports from the log.
#[derive(Clone, Debug, Default)]
pub struct ConfigFile {
    /// `(header, lines)`: `header` is `store` for `[store]`, `[radius.clients]` for an array
    /// table entry `[[radius.clients]]`.
    tables: Vec<(String, Vec<String>)>,
    /// Raw TOML after the tables (whole tables a test writes itself).
    tail: String,
}

impl ConfigFile {
    /// An empty file.
    pub fn new() -> ConfigFile {
        ConfigFile::default()
    }

    /// Appends raw TOML lines to `[table]` (created at the end when not there yet).
    pub fn lines(mut self, table: &str, text: &str) -> ConfigFile {
        let lines = text.lines().map(str::to_owned);
        match self.tables.iter_mut().find(|(name, _)| name == table) {
            Some((_, existing)) => existing.extend(lines),
            None => self.tables.push((table.to_owned(), lines.collect())),
        }
        self
    }

    /// `key = value` in `[table]`, `value` written as it is (a number, a duration string
    /// already quoted, an array).
    pub fn set(self, table: &str, key: &str, value: impl std::fmt::Display) -> ConfigFile {
        self.lines(table, &format!("{key} = {value}"))
    }

    /// `key = "value"` in `[table]`.
    pub fn string(self, table: &str, key: &str, value: impl std::fmt::Display) -> ConfigFile {
        self.set(table, key, format!("\"{value}\""))
    }

    /// One more entry of the array of tables `[[table]]`.
    pub fn entry(mut self, table: &str, text: &str) -> ConfigFile {
        self.tables.push((
            format!("[{table}]"),
            text.lines().map(str::to_owned).collect(),
        ));
        self
    }

    /// Raw TOML (whole tables, with their headers) after everything else.
    pub fn raw(mut self, text: &str) -> ConfigFile {
        self.tail.push_str(text);
        if !self.tail.ends_with('\n') {
            self.tail.push('\n');
        }
        self
    }

    /// `[store] url`.
    pub fn store(self, url: &str) -> ConfigFile {
        self.string("store", "url", url)
    }

    /// `[directory]` on an LDIF file under `base_dn`.
    pub fn ldif_directory(self, ldif: &Path, base_dn: &str) -> ConfigFile {
        self.string("directory", "url", format!("file:{}", ldif.display()))
            .string("directory", "base_dn", base_dn)
    }

    /// `[admin] socket`, root as the break-glass global administrator, and
    /// `[admin.roles] global_administrator` for `tap-global-admins`.
    pub fn admin(self, socket: &Path) -> ConfigFile {
        self.string("admin", "socket", socket.display())
            .set("admin", "root_is_global_administrator", true)
            .set(
                "admin.roles",
                "global_administrator",
                "[\"tap-global-admins\"]",
            )
    }

    /// `[log]` at `info` on stderr, which the kit reads.
    pub fn log_to_stderr(self) -> ConfigFile {
        self.string("log", "level", "info")
            .string("log", "format", "stderr")
    }

    /// `[metrics] enabled = false`.
    pub fn no_metrics(self) -> ConfigFile {
        self.set("metrics", "enabled", false)
    }

    /// `[metrics]` on 127.0.0.1, port 0.
    pub fn metrics_on_loopback(self) -> ConfigFile {
        self.string("metrics", "listen", "127.0.0.1:0")
    }

    /// `[radius]` on 127.0.0.1, port 0, with `reject_delay` (`"0s"` keeps a suite fast; the
    /// timing tests ask for the delay).
    pub fn radius_on_loopback(self, reject_delay: &str) -> ConfigFile {
        self.set("radius", "listen", "[\"127.0.0.1:0\"]").string(
            "radius",
            "reject_delay",
            reject_delay,
        )
    }

    /// A RADIUS client `name` at `address` whose secret file is `secret_file`.
    pub fn radius_client(self, name: &str, address: &str, secret_file: &Path) -> ConfigFile {
        self.entry(
            "radius.clients",
            &format!(
                "name = \"{name}\"\naddress = \"{address}\"\nsecret_file = \"{}\"",
                secret_file.display()
            ),
        )
    }

    /// `[web]` on 127.0.0.1, port 0, at `public_url`.
    pub fn web_on_loopback(self, public_url: &str) -> ConfigFile {
        self.string("web", "listen", "127.0.0.1:0")
            .string("web", "public_url", public_url)
    }

    /// The file's text.
    pub fn text(&self) -> String {
        let mut text = String::new();
        for (table, lines) in &self.tables {
            text.push_str(&format!("[{table}]\n"));
            for line in lines {
                text.push_str(line);
                text.push('\n');
            }
            text.push('\n');
        }
        text.push_str(&self.tail);
        text
    }

    /// Writes the file (mode 0600: it may name secrets) and returns its path.
    pub fn write(&self, path: &Path) -> PathBuf {
        write_private(path, &self.text());
        path.to_path_buf()
    }
}
