//! The real `tapd` binary serving the site over HTTPS (rustls): the listening line names the
//! bound address, cookies are `__Host-` and `Secure`, HSTS is sent, a TAP sign-in works over
//! TLS and plain HTTP on the TLS port gets no page.

use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::harness::{form_encode, Tapd};
use crate::support::http::{send, Answer};

async fn https(tapd: &Tapd, roots: &RootCertStore, request: Request<Full<Bytes>>) -> Answer {
    let config = ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots.clone())
    .with_no_client_auth();
    let tcp = TcpStream::connect(tapd.web_addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    send(tls, request).await
}

fn cookies(headers: &hyper::HeaderMap) -> Vec<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tapd_serves_the_site_over_https_with_host_cookies() {
    let certs = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_file = certs.path().join("tls.crt");
    let key_file = certs.path().join("tls.key");
    std::fs::write(&cert_file, generated.cert.pem()).unwrap();
    std::fs::write(&key_file, generated.signing_key.serialize_pem()).unwrap();
    // tapd refuses a private key others can read.
    std::fs::set_permissions(
        &key_file,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .unwrap();
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(generated.cert.der().to_vec()))
        .unwrap();

    let tapd = Tapd::start(&format!(
        "[web]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://localhost:8443\"\n\
         tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        cert_file.display(),
        key_file.display()
    ));
    assert_ne!(tapd.web_addr.port(), 0, "the log names the bound port");
    let code = tapd.enable_policy_and_create_tap("alice", true);

    let first = https(
        &tapd,
        &roots,
        Request::get("/")
            .header("host", "localhost:8443")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(
        first.headers["strict-transport-security"],
        "max-age=31536000"
    );
    let csrf_cookie = cookies(&first.headers)
        .into_iter()
        .find(|c| c.starts_with("__Host-tapd-csrf="))
        .expect("a __Host- CSRF cookie");
    assert!(csrf_cookie.contains("; Secure") && csrf_cookie.contains("HttpOnly"));
    assert!(csrf_cookie.contains("SameSite=Strict") && csrf_cookie.contains("Path=/"));
    let token = csrf_cookie["__Host-tapd-csrf=".len()..]
        .split(';')
        .next()
        .unwrap()
        .to_owned();

    let form = form_encode(&[("csrf", &token), ("username", "alice"), ("code", &code)]);
    let signed_in = https(
        &tapd,
        &roots,
        Request::post("/sign-in/tap")
            .header("host", "localhost:8443")
            .header("origin", "https://localhost:8443")
            .header("cookie", format!("__Host-tapd-csrf={token}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .unwrap(),
    )
    .await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let session = cookies(&signed_in.headers)
        .into_iter()
        .find(|c| c.starts_with("__Host-tapd-session="))
        .expect("a __Host- session cookie");
    assert!(
        session.contains("; Path=/; HttpOnly; SameSite=Strict; Secure; Max-Age="),
        "{session}"
    );

    // Plain HTTP on the TLS port gets no page.
    let mut plain = TcpStream::connect(tapd.web_addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        plain.read_to_end(&mut answer),
    )
    .await;
    assert!(!String::from_utf8_lossy(&answer).contains("Sign in"));

    // The sign-in is in the audit log, with the method Entra names.
    let audit = tapd.tapctl_json(&["audit"]);
    let text = audit.to_string();
    assert!(text.contains("Temporary Access Pass"), "{text}");
}
