//! A real SMTP server for the onboarding tests: Debian's `python3-aiosmtpd` on a loopback port,
//! speaking STARTTLS (required before any mail) with a certificate from a CA the test makes,
//! and saving every accepted message as a file the test reads. Recipients can be set to be
//! refused for good (550) or for now (451). It can be stopped and started again on the same
//! port, to show that tapd keeps what it could not deliver. Stopped on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::config::{free_port, require_tool};

/// The server script: handler, STARTTLS context, one file per message.
const SERVER: &str = r#"
import asyncio, os, ssl, sys, time
from aiosmtpd.controller import Controller

port, outdir, cert, key, refuse, defer = sys.argv[1:7]
refuse = set(filter(None, refuse.split(',')))
defer = set(filter(None, defer.split(',')))

class Handler:
    def __init__(self):
        self.count = 0
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in refuse:
            return '550 5.1.1 mailbox unavailable'
        if address in defer:
            return '451 4.3.0 try again later'
        envelope.rcpt_tos.append(address)
        return '250 OK'
    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        name = '%d-%06d' % (time.time_ns(), self.count)
        tmp = os.path.join(outdir, '.' + name)
        with open(tmp, 'wb') as f:
            f.write(('X-Test-Rcpt: %s\r\nX-Test-Tls: %s\r\n' % (','.join(envelope.rcpt_tos), session.ssl is not None)).encode())
            f.write(envelope.original_content or envelope.content)
        os.rename(tmp, os.path.join(outdir, name + '.eml'))
        return '250 Message accepted'

ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
controller = Controller(Handler(), hostname='127.0.0.1', port=int(port), tls_context=ctx,
                        require_starttls=True, ready_timeout=10)
controller.start()
print('listening on %s' % port, flush=True)
try:
    while True:
        time.sleep(3600)
finally:
    controller.stop()
"#;

/// The Python with Debian's packages (`python3-aiosmtpd` installs there).
const PYTHON: &str = "/usr/bin/python3";

/// A running (or stopped) test SMTP server.
pub struct SmtpServer {
    dir: PathBuf,
    port: u16,
    refuse: Vec<String>,
    defer: Vec<String>,
    child: Option<Child>,
}

impl SmtpServer {
    /// Makes the CA and server certificate in `dir` and starts the server on a free port.
    pub fn start(dir: &Path) -> SmtpServer {
        SmtpServer::start_with(dir, &[], &[])
    }

    /// As [`SmtpServer::start`], refusing mail to `refuse` for good and to `defer` for now.
    pub fn start_with(dir: &Path, refuse: &[&str], defer: &[&str]) -> SmtpServer {
        let mut server = SmtpServer::stopped_with(dir, refuse, defer);
        server.resume();
        server
    }

    /// Prepared but not started (a port nothing listens on yet).
    pub fn stopped_with(dir: &Path, refuse: &[&str], defer: &[&str]) -> SmtpServer {
        require_tool("python3", "python3-aiosmtpd");
        assert!(
            Command::new(PYTHON)
                .args(["-c", "import aiosmtpd"])
                .status()
                .is_ok_and(|s| s.success()),
            "aiosmtpd is not installed: run scripts/test.sh as root (it installs the Debian package python3-aiosmtpd)"
        );
        let dir = dir.join("smtp");
        std::fs::create_dir_all(dir.join("mail")).unwrap();
        write_certificates(&dir);
        std::fs::write(dir.join("server.py"), SERVER).unwrap();
        SmtpServer {
            dir,
            port: free_port(),
            refuse: refuse.iter().map(|s| (*s).to_owned()).collect(),
            defer: defer.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
        }
    }

    /// The `[smtp] url` that reaches it.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The CA that signed its certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Starts (again) on its port; returns once it listens.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "the SMTP server is running already");
        let mut child = Command::new(PYTHON)
            .arg(self.dir.join("server.py"))
            .arg(self.port.to_string())
            .arg(self.dir.join("mail"))
            .arg(self.dir.join("server.pem"))
            .arg(self.dir.join("server.key"))
            .arg(self.refuse.join(","))
            .arg(self.defer.join(","))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert!(
            line.starts_with("listening on"),
            "the SMTP server did not start: {line:?}"
        );
        self.child = Some(child);
    }

    /// Stops it (the port stays reserved for [`SmtpServer::resume`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every message accepted so far, oldest first: (recipients, raw text).
    pub fn messages(&self) -> Vec<Mail> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.join("mail"))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|path| Mail::parse(&std::fs::read_to_string(&path).unwrap()))
            .collect()
    }

    /// The envelope recipients of every message accepted so far, sorted.
    pub fn recipients(&self) -> Vec<String> {
        let mut recipients: Vec<String> = self
            .messages()
            .into_iter()
            .flat_map(|m| m.recipients)
            .collect();
        recipients.sort();
        recipients
    }

    /// Waits (bounded) until at least `count` messages arrived.
    pub fn wait_for(&self, count: usize, within: Duration) -> Vec<Mail> {
        let deadline = Instant::now() + within;
        loop {
            let messages = self.messages();
            if messages.len() >= count || Instant::now() > deadline {
                return messages;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One received message.
#[derive(Clone, Debug)]
pub struct Mail {
    /// The envelope recipients.
    pub recipients: Vec<String>,
    /// Whether it arrived over TLS.
    pub over_tls: bool,
    /// The whole message as sent (headers and MIME parts, transfer-encoded).
    pub raw: String,
}

impl Mail {
    fn parse(text: &str) -> Mail {
        let mut lines = text.splitn(3, "\r\n");
        let rcpt = lines
            .next()
            .unwrap_or("")
            .trim_start_matches("X-Test-Rcpt: ");
        let tls = lines
            .next()
            .unwrap_or("")
            .trim_start_matches("X-Test-Tls: ");
        Mail {
            recipients: rcpt.split(',').map(str::to_owned).collect(),
            over_tls: tls == "True",
            raw: lines.next().unwrap_or("").to_owned(),
        }
    }

    /// The text after `label` on the line that holds it (in the plain-text part).
    pub fn value_after(&self, label: &str) -> Option<String> {
        let text = self.decoded();
        text.lines()
            .find_map(|l| l.split_once(label).map(|(_, rest)| rest.trim().to_owned()))
    }

    /// The message with quoted-printable soft breaks and `=XX` escapes undone (good enough
    /// for the ASCII the tests look for).
    pub fn decoded(&self) -> String {
        let joined = self.raw.replace("=\r\n", "").replace("=\n", "");
        let mut out = String::with_capacity(joined.len());
        let bytes = joined.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'=' && i + 2 < bytes.len() {
                if let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16) {
                    out.push(b as char);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i] as char);
            i += 1;
        }
        out
    }
}

/// A CA and a server certificate for 127.0.0.1 and localhost signed by it.
fn write_certificates(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "tapd SMTP test CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server = params.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}
