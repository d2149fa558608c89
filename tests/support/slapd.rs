//! A throwaway OpenLDAP server for the tests (part of the test kit, used by `tests/ldap`): a fresh temp dir with its own slapd.conf, a
//! CA and server certificate for StartTLS made here, the fixture loaded with `slapadd`, and
//! `slapd` listening on a free loopback port. Dropping it kills slapd and, when a test is
//! failing, prints the end of slapd's log.
//!
//! The database has the syncprov overlay with a session log, so RFC 4533 content sync is
//! offered; only [`SYNC_DN`] may read every entry in one search, as its refresh needs.
//!
//! slapd runs with `-d 256` (connection and operation statistics on stderr, kept in
//! `slapd.log`), so tests can see which binds reached the server.

use std::fs;
use std::io::Read as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ldap3::{Ldap, LdapConnAsync};

use super::config::free_port;

/// Suffix of the test directory.
pub const BASE_DN: &str = "dc=example,dc=org";
/// The administrator slapd knows from its config (not subject to limits or ACLs).
pub const ROOT_DN: &str = "cn=admin,dc=example,dc=org";
/// Its password.
pub const ROOT_PASSWORD: &str = "root-secret";
/// The service account tapd binds as (an ordinary entry: size limits and ACLs apply).
pub const SERVICE_DN: &str = "cn=tapd,ou=services,dc=example,dc=org";
/// Its password.
pub const SERVICE_PASSWORD: &str = "tapd-service-pw";
/// An account whose paged searches stop after 600 entries (`size.prtotal=600`).
pub const LIMITED_DN: &str = "cn=limited,ou=services,dc=example,dc=org";
/// A service account without a size limit, as RFC 4533 content sync needs (its refresh is one
/// unpaged search); password [`SERVICE_PASSWORD`].
pub const SYNC_DN: &str = "cn=tapd-sync,ou=services,dc=example,dc=org";

const SCHEMAS: [&str; 4] = ["core", "cosine", "inetorgperson", "nis"];

/// A running (or stopped) slapd over its own database.
pub struct Slapd {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// PEM of the CA that signed the server certificate.
    pub ca_file: PathBuf,
    /// PEM of a CA that signed nothing this server presents.
    pub untrusted_ca_file: PathBuf,
}

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    panic!(
        "{name} is not installed: run scripts/test.sh (as root it installs slapd and ldap-utils)"
    );
}

fn schema_dir() -> PathBuf {
    for dir in [
        "/etc/ldap/schema",
        "/etc/openldap/schema",
        "/usr/share/openldap/schema",
    ] {
        if Path::new(dir).join("core.schema").exists() {
            return PathBuf::from(dir);
        }
    }
    panic!("the OpenLDAP schema files (core.schema) are missing: run scripts/test.sh");
}

fn module_dir() -> PathBuf {
    for dir in ["/usr/lib/ldap", "/usr/lib/openldap", "/usr/lib64/openldap"] {
        if Path::new(dir).join("back_mdb.la").exists()
            || Path::new(dir).join("back_mdb.so").exists()
        {
            return PathBuf::from(dir);
        }
    }
    panic!("slapd's back_mdb module is missing: run scripts/test.sh");
}

impl Slapd {
    /// Writes config and certificates, loads `ldif` with slapadd and starts slapd.
    pub fn start(ldif: &str) -> Slapd {
        Self::start_sized(ldif, 64 * 1024 * 1024)
    }

    /// Like [`start`](Self::start) with an mdb map of `map_bytes`.
    pub fn start_sized(ldif: &str, map_bytes: u64) -> Slapd {
        Self::start_configured(ldif, map_bytes, None, None)
    }

    /// Like [`start`](Self::start), as a stand-in for Active Directory: AD's attribute types
    /// and classes as a test schema ([`AD_SCHEMA`]) and `root_dse` (LDIF of `dn:` plus
    /// attributes such as `highestCommittedUSN`, `dnsHostName`, `dsServiceName`) added to the
    /// root DSE. slapd maintains neither `uSNChanged` nor `highestCommittedUSN`: a test writes
    /// both ([`set_root_dse`](Self::set_root_dse), then a restart).
    pub fn start_active_directory(ldif: &str, root_dse: &str) -> Slapd {
        Self::start_configured(ldif, 64 * 1024 * 1024, Some(root_dse), None)
    }

    /// Like [`start`](Self::start) with `schema` (slapd.conf `attributetype` / `objectclass`
    /// lines) added after the standard schema.
    pub fn start_with_schema(ldif: &str, schema: &str) -> Slapd {
        Self::start_configured(ldif, 64 * 1024 * 1024, None, Some(schema))
    }

    /// Replaces the Active Directory stand-in's root DSE attributes; slapd reads them when it
    /// (re)starts.
    pub fn set_root_dse(&self, root_dse: &str) {
        fs::write(self.dir.path().join("rootdse.ldif"), root_dse).expect("write rootdse.ldif");
    }

    fn start_configured(
        ldif: &str,
        map_bytes: u64,
        root_dse: Option<&str>,
        schema: Option<&str>,
    ) -> Slapd {
        let slapd = tool("slapd");
        let slapadd = tool("slapadd");
        let dir = tempfile::tempdir().expect("temp dir");
        fs::create_dir(dir.path().join("db")).expect("db dir");
        let (ca_file, untrusted_ca_file) = write_certificates(dir.path());
        let mut conf_text = slapd_conf(dir.path(), map_bytes);
        if let Some(root_dse) = root_dse {
            fs::write(dir.path().join("ad.schema"), AD_SCHEMA).expect("write ad.schema");
            fs::write(dir.path().join("rootdse.ldif"), root_dse).expect("write rootdse.ldif");
            let d = dir.path().display();
            // After the standard schema (it uses `cn` and `member`), before the database.
            conf_text = conf_text.replacen(
                "modulepath ",
                &format!("include {d}/ad.schema\nrootDSE {d}/rootdse.ldif\nmodulepath "),
                1,
            );
        }
        if let Some(schema) = schema {
            fs::write(dir.path().join("extra.schema"), schema).expect("write extra.schema");
            let d = dir.path().display();
            conf_text = conf_text.replacen(
                "modulepath ",
                &format!("include {d}/extra.schema\nmodulepath "),
                1,
            );
        }
        let conf = dir.path().join("slapd.conf");
        fs::write(&conf, conf_text).expect("write slapd.conf");
        let data = dir.path().join("data.ldif");
        fs::write(&data, ldif).expect("write fixture");
        let output = Command::new(slapadd)
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(&data)
            .arg("-q")
            .output()
            .expect("run slapadd");
        assert!(
            output.status.success(),
            "slapadd failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(slapd.exists());
        let mut server = Slapd {
            dir,
            port: free_port(),
            child: None,
            ca_file,
            untrusted_ca_file,
        };
        server.start_again();
        server
    }

    /// `ldap://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// Starts slapd (again) on the same port and database, and waits until it accepts
    /// connections.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "slapd is already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open slapd.log");
        let child = Command::new(tool("slapd"))
            .arg("-f")
            .arg(self.dir.path().join("slapd.conf"))
            .arg("-h")
            .arg(format!("ldap://127.0.0.1:{}/", self.port))
            .arg("-d")
            .arg("256")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn slapd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    panic!("slapd exited at start ({status}):\n{}", self.log_tail());
                }
            }
            assert!(
                Instant::now() < deadline,
                "slapd did not listen on port {} within 20 s:\n{}",
                self.port,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills slapd and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes slapd (SIGSTOP): connections are accepted by the kernel but never answered.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Thaws a paused slapd.
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("slapd is running");
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("slapd.log")
    }

    /// Everything slapd logged so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = fs::File::open(self.log_path()) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// How many simple binds as `dn` slapd has logged (`BIND dn="..." method=128`).
    pub fn binds_as(&self, dn: &str) -> usize {
        let needle = format!("BIND dn=\"{}\" method=128", dn.to_ascii_lowercase());
        self.log()
            .lines()
            .filter(|line| line.to_ascii_lowercase().contains(&needle))
            .count()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// A connection bound as the root DN, for changing the directory under a test.
    pub async fn admin(&self) -> Ldap {
        let (connection, mut ldap) = LdapConnAsync::new(&self.url())
            .await
            .expect("connect as admin");
        ldap3::drive!(connection);
        ldap.simple_bind(ROOT_DN, ROOT_PASSWORD)
            .await
            .expect("admin bind")
            .success()
            .expect("admin bind result");
        ldap
    }
}

/// Adds `values` to `attribute` of the entry `dn` through `admin` (see [`Slapd::admin`]),
/// failing the test if the server refuses.
pub async fn add_values(
    admin: &mut Ldap,
    dn: &str,
    attribute: &str,
    values: impl IntoIterator<Item = String>,
) {
    admin
        .modify(
            dn,
            vec![ldap3::Mod::Add(
                attribute.to_owned(),
                values.into_iter().collect(),
            )],
        )
        .await
        .unwrap_or_else(|e| panic!("modify {dn}: {e}"))
        .success()
        .unwrap_or_else(|e| panic!("modify {dn}: {e}"));
}

impl Drop for Slapd {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_ref() {
            // A paused slapd can't die from SIGKILL any slower, but make it runnable anyway.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .status();
        }
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- end of slapd log ---\n{}", self.log_tail());
        }
    }
}

/// Active Directory's attribute types and classes that tapd's `active_directory` preset
/// reads, under a private OID arc (a UUID-based `2.25` OID; AD's own OIDs are not needed).
/// `objectCategory` is plain text here (a DN in AD, where `(objectCategory=person)` matches
/// by AD's shorthand).
pub const AD_SCHEMA: &str = "\
attributetype ( 2.25.229548716532913476958220390143745321.1.1 NAME 'objectGUID' EQUALITY octetStringMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 SINGLE-VALUE )
attributetype ( 2.25.229548716532913476958220390143745321.1.2 NAME 'sAMAccountName' EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 2.25.229548716532913476958220390143745321.1.3 NAME 'userPrincipalName' EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 2.25.229548716532913476958220390143745321.1.4 NAME 'userAccountControl' EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 2.25.229548716532913476958220390143745321.1.5 NAME 'uSNChanged' EQUALITY integerMatch ORDERING integerOrderingMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 2.25.229548716532913476958220390143745321.1.6 NAME 'objectCategory' EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 2.25.229548716532913476958220390143745321.1.7 NAME 'highestCommittedUSN' EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 2.25.229548716532913476958220390143745321.1.8 NAME 'dnsHostName' EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 2.25.229548716532913476958220390143745321.1.9 NAME 'dsServiceName' EQUALITY distinguishedNameMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.12 SINGLE-VALUE )
attributetype ( 2.25.229548716532913476958220390143745321.1.10 NAME 'invocationId' EQUALITY octetStringMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 SINGLE-VALUE )
objectclass ( 2.25.229548716532913476958220390143745321.2.1 NAME 'user' SUP top AUXILIARY MAY ( objectGUID $ sAMAccountName $ userPrincipalName $ userAccountControl $ uSNChanged $ objectCategory ) )
objectclass ( 2.25.229548716532913476958220390143745321.2.2 NAME 'group' SUP top STRUCTURAL MUST cn MAY ( member $ objectGUID $ uSNChanged $ sAMAccountName ) )
objectclass ( 2.25.229548716532913476958220390143745321.2.3 NAME 'nTDSDSA' SUP top STRUCTURAL MUST cn MAY invocationId )
";

/// A hire date such as Entra's `employeeHireDate` (GeneralizedTime), which OpenLDAP's schema
/// lacks, for onboarding rules that match on a date: the attribute and an auxiliary class
/// `tapdHire` that allows it, for [`Slapd::start_with_schema`].
pub const HIRE_DATE_SCHEMA: &str = "\
attributetype ( 2.25.229548716532913476958220390143745321.3.1 NAME 'employeeHireDate' EQUALITY generalizedTimeMatch ORDERING generalizedTimeOrderingMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.24 SINGLE-VALUE )
objectclass ( 2.25.229548716532913476958220390143745321.4.1 NAME 'tapdHire' SUP top AUXILIARY MAY employeeHireDate )
";

fn slapd_conf(dir: &Path, map_bytes: u64) -> String {
    let schema_dir = schema_dir();
    let mut conf = String::new();
    for schema in SCHEMAS {
        conf.push_str(&format!(
            "include {}\n",
            schema_dir.join(format!("{schema}.schema")).display()
        ));
    }
    let d = dir.display();
    conf.push_str(&format!(
        "modulepath {modules}
moduleload back_mdb
# Defines pwdAccountLockedTime (the disabled fixture account); no policy is enforced.
moduleload ppolicy
# RFC 4533 content sync for incremental syncs.
moduleload syncprov
pidfile {d}/slapd.pid
argsfile {d}/slapd.args
# Paging is exercised: no single answer holds more than 500 entries.
sizelimit size.soft=500 size.hard=500 size.prtotal=unlimited
TLSCACertificateFile {d}/ca.pem
TLSCertificateFile {d}/server.pem
TLSCertificateKeyFile {d}/server.key
database mdb
maxsize {map_bytes}
suffix \"{BASE_DN}\"
rootdn \"{ROOT_DN}\"
rootpw {ROOT_PASSWORD}
directory {d}/db
overlay ppolicy
overlay syncprov
# A session log of only 100 operations: a few changes are refreshed with a delete phase, a
# mass deletion overflows it into a present phase.
syncprov-checkpoint 100 10
syncprov-sessionlog 100
limits dn.exact=\"{LIMITED_DN}\" size.soft=500 size.hard=500 size.prtotal=600
limits dn.exact=\"{SYNC_DN}\" size=unlimited
index objectClass eq
index uid eq
index entryUUID eq
index entryCSN eq
access to attrs=userPassword by self read by anonymous auth by * none
access to * by * read
",
        modules = module_dir().display(),
    ));
    conf
}

/// A CA, a server certificate for 127.0.0.1 and localhost signed by it, and an unrelated CA.
fn write_certificates(dir: &Path) -> (PathBuf, PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("self-signed CA")
    };
    let trusted = ca("tapd test CA");
    let untrusted = ca("some other CA");
    let server_key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server = params
        .signed_by(&server_key, &trusted)
        .expect("server certificate");
    let ca_file = dir.join("ca.pem");
    let untrusted_ca_file = dir.join("untrusted-ca.pem");
    fs::write(&ca_file, trusted.pem()).expect("write ca.pem");
    fs::write(&untrusted_ca_file, untrusted.pem()).expect("write untrusted-ca.pem");
    fs::write(dir.join("server.pem"), server.pem()).expect("write server.pem");
    fs::write(dir.join("server.key"), server_key.serialize_pem()).expect("write server.key");
    (ca_file, untrusted_ca_file)
}
