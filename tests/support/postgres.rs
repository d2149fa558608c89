//! A throwaway PostgreSQL cluster for tests, from Debian's `postgresql` package: `initdb` into a
//! temp dir, `pg_ctl start` on a free port of 127.0.0.1 (Unix socket in the same temp dir),
//! one database per test, `pg_ctl stop -m immediate` on drop.
//!
//! Part of the test kit (`tests/support`). When the binaries are missing, [`PostgresCluster::start`] panics with a message saying to run `scripts/test.sh`,
//! which installs them. As root, the server runs as the `postgres` account the package creates
//! (initdb refuses root); as anyone else, as that user.
//!
//! A watchdog shell process stops the cluster and removes its files if the test process dies
//! without dropping it (a panic in another thread, `abort`, a static never dropped).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use super::config::free_port;

/// The secrets key every tapd on the store `store_url` shares (`[store] secrets_key_file`):
/// one file per database in the temp dir, created by whichever node starts first.
pub fn shared_secrets_key(store_url: &str) -> PathBuf {
    let database = store_url
        .split('?')
        .next()
        .and_then(|base| base.rsplit('/').next())
        .unwrap_or("tapd");
    std::env::temp_dir().join(format!("tapd-test-{database}.secrets.key"))
}

/// A running (or stopped, between [`PostgresCluster::stop`] and
/// [`PostgresCluster::restart`]) test cluster.
pub struct PostgresCluster {
    root: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    tls: bool,
    watchdog: Mutex<Option<Child>>,
    /// The database [`PostgresCluster::create_database_from_template`] copies, once made.
    template: tokio::sync::Mutex<Option<String>>,
}

static SHARED: Mutex<Option<Arc<PostgresCluster>>> = Mutex::new(None);

/// Where Debian puts the server binaries: the newest `/usr/lib/postgresql/N/bin`.
fn server_bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb) are missing: \
             run scripts/test.sh (as root it installs Debian's postgresql package)"
        ),
    }
}

impl PostgresCluster {
    /// The cluster shared by every test of this process: started by the first that asks,
    /// kept until the process ends (a static is never dropped, so the watchdog stops it and
    /// removes its files then). Tests isolate themselves with
    /// [`PostgresCluster::create_database`]. Starting a cluster costs about a second; stopping
    /// it whenever no test happened to hold it meant paying that again and again.
    pub fn shared() -> Arc<PostgresCluster> {
        let mut slot = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cluster) = slot.as_ref() {
            return cluster.clone();
        }
        let cluster = Arc::new(PostgresCluster::start());
        *slot = Some(cluster.clone());
        cluster
    }

    /// A new cluster of one's own (for tests that stop and start the server).
    pub fn start() -> PostgresCluster {
        PostgresCluster::start_inner(false)
    }

    /// A new cluster that also accepts TLS, with a server certificate for `localhost` (not for
    /// 127.0.0.1) signed by [`PostgresCluster::ca_file`]; [`PostgresCluster::other_ca_file`]
    /// is a CA that signed nothing the server shows.
    pub fn start_with_tls() -> PostgresCluster {
        PostgresCluster::start_inner(true)
    }

    /// The CA that signed the server certificate (TLS clusters).
    pub fn ca_file(&self) -> PathBuf {
        self.root.join("tls").join("ca.pem")
    }

    /// A CA unrelated to the server certificate (TLS clusters).
    pub fn other_ca_file(&self) -> PathBuf {
        self.root.join("tls").join("other-ca.pem")
    }

    fn start_inner(tls: bool) -> PostgresCluster {
        let bin = server_bin_dir();
        let as_postgres = nix::unistd::geteuid().is_root();
        let root = tempfile::Builder::new()
            .prefix("tapd-pg-")
            .tempdir()
            .expect("creating a temp dir")
            .keep();
        let owner = as_postgres.then(|| {
            nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .unwrap_or_else(|| {
                    panic!("no `postgres` account: run scripts/test.sh (it installs Debian's postgresql package)")
                })
        });
        if tls {
            make_certificates(&root.join("tls"));
        }
        if let Some(user) = &owner {
            for entry in walk(&root) {
                nix::unistd::chown(&entry, Some(user.uid), Some(user.gid))
                    .expect("handing the temp dir to postgres");
            }
        }
        let mut cluster = PostgresCluster {
            root,
            bin,
            port: 0,
            as_postgres,
            tls,
            watchdog: Mutex::new(None),
            template: tokio::sync::Mutex::new(None),
        };
        cluster.run_checked(
            "initdb",
            &[
                "-D",
                &cluster.data_dir(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                // Not "C": names must fold ASCII-only even where lower() would not.
                "--locale=C.UTF-8",
                "--no-sync",
                "--no-instructions",
            ],
        );
        // A port taken between our probe and the server's bind: try another.
        let mut last_error = String::new();
        for _ in 0..5 {
            cluster.port = free_port();
            match cluster.pg_ctl_start() {
                Ok(()) => {
                    cluster.spawn_watchdog();
                    return cluster;
                }
                Err(e) => last_error = e,
            }
        }
        panic!("PostgreSQL did not start: {last_error}\n{}", cluster.log());
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for database `name` as the superuser (trust authentication, no TLS).
    pub fn url(&self, name: &str) -> String {
        self.url_with(name, "127.0.0.1", "disable")
    }

    /// A URL for database `name` on `host` (`127.0.0.1` or `localhost`) with `sslmode`.
    pub fn url_with(&self, name: &str, host: &str, sslmode: &str) -> String {
        format!(
            "postgres://postgres@{host}:{}/{name}?sslmode={sslmode}",
            self.port
        )
    }

    /// `pg_dump` of the database a URL of [`PostgresCluster::create_database`] names: every
    /// row as the server holds it, as text.
    pub fn dump(&self, url: &str) -> String {
        let out = std::process::Command::new(server_bin_dir().join("pg_dump"))
            .arg("--data-only")
            .arg(url.split('?').next().unwrap_or(url))
            .output()
            .expect("running pg_dump");
        assert!(
            out.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("pg_dump prints UTF-8")
    }

    /// Creates a database with a random name and returns its URL.
    pub async fn create_database(&self) -> String {
        let name = self.create_named(None).await;
        self.url(&name)
    }

    /// Creates a database copied (`CREATE DATABASE … TEMPLATE`) from a template that `prepare`
    /// fills once per cluster, given the template's URL; returns the copy's URL. A copy is a
    /// file copy on the server, much cheaper than running the same setup (the store's
    /// migrations) again for every test. `prepare` must close its connections before it
    /// returns: PostgreSQL copies only a database nobody is connected to (it waits a few
    /// seconds for closing ones).
    pub async fn create_database_from_template<F, Fut>(&self, prepare: F) -> String
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let template = {
            let mut slot = self.template.lock().await;
            match slot.as_ref() {
                Some(name) => name.clone(),
                None => {
                    let name = self.create_named(None).await;
                    prepare(self.url(&name)).await;
                    *slot = Some(name.clone());
                    name
                }
            }
        };
        let name = self.create_named(Some(&template)).await;
        self.url(&name)
    }

    /// Creates a database with a random name (a copy of `template`, if given); returns the name.
    async fn create_named(&self, template: Option<&str>) -> String {
        let name = format!("tapd_{}", uuid::Uuid::new_v4().simple());
        let (client, connection) =
            tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("connecting to the test cluster: {e}\n{}", self.log()));
        let task = tokio::spawn(connection);
        let sql = match template {
            Some(template) => format!("CREATE DATABASE {name} TEMPLATE {template}"),
            None => format!("CREATE DATABASE {name}"),
        };
        client
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}\n{}", self.log()));
        drop(client);
        let _ = task.await;
        name
    }

    /// Stops the server (fast shutdown: connections are closed), keeping its data.
    pub fn stop(&self) {
        self.run_checked(
            "pg_ctl",
            &["-D", &self.data_dir(), "-m", "fast", "-w", "stop"],
        );
    }

    /// Starts the server again on the same port after [`PostgresCluster::stop`].
    pub fn restart(&self) {
        if let Err(e) = self.pg_ctl_start() {
            panic!("PostgreSQL did not start again: {e}\n{}", self.log());
        }
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
    }

    fn data_dir(&self) -> String {
        self.root.join("data").display().to_string()
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let mut options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
             -c max_connections=300 -c shared_buffers=32MB",
            self.port,
            self.root.display()
        );
        if self.tls {
            let tls = self.root.join("tls");
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                tls.join("server.pem").display(),
                tls.join("server.key").display()
            ));
        }
        let log = self.root.join("server.log").display().to_string();
        let output = self
            .command("pg_ctl")
            .args(["-D", &self.data_dir(), "-l", &log, "-w", "-t", "60"])
            .args(["-o", &options, "start"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running pg_ctl: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl start: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// `program` from the server's bin dir, as `postgres` when we are root, run from the
    /// cluster's own dir (the test's working directory may be closed to that account).
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        };
        command.current_dir(&self.root);
        command
    }

    fn run_checked(&self, program: &str, args: &[&str]) {
        let output = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
    }

    /// Stops the cluster and removes its files once this process is gone, however it ends.
    fn spawn_watchdog(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = if self.as_postgres {
            format!(
                "runuser -u postgres -- {} -D {} -m immediate stop",
                pg_ctl.display(),
                self.data_dir()
            )
        } else {
            format!(
                "{} -D {} -m immediate stop",
                pg_ctl.display(),
                self.data_dir()
            )
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {root}",
            pid = std::process::id(),
            root = self.root.display()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        *self.watchdog.lock().unwrap_or_else(|e| e.into_inner()) = child;
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data_dir(), "-m", "immediate", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(mut watchdog) = self
            .watchdog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- PostgreSQL log ---\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Every path under `root`, `root` included.
fn walk(root: &std::path::Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    if root.is_dir() {
        for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
            out.extend(walk(&entry.path()));
        }
    }
    out
}

/// A test CA, a server certificate for `localhost` signed by it, and an unrelated CA, made with
/// the `openssl` command (Debian's postgresql package depends on it).
fn make_certificates(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("running openssl: {e} (run scripts/test.sh, which installs it)")
            });
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for name in ["ca", "other-ca"] {
        let mut args = vec!["req", "-x509", "-days", "2", "-subj"];
        let subject = format!("/CN=tapd test {name}");
        args.push(&subject);
        args.extend(ec);
        let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
        args.extend(["-keyout", &key, "-out", &pem]);
        args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
        args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        openssl(&args);
    }
    let mut args = vec!["req", "-subj", "/CN=localhost"];
    args.extend(ec);
    args.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(&args);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}
