//! TLS client pieces shared by the directory (LDAPS / StartTLS) and PostgreSQL connections:
//! which CA certificates to trust, and the explicit "accept any certificate" verifier an
//! operator can opt into (`tls_verify = false`, `sslmode=require` without a CA).
//!
//! May depend on: `logging` (for [`Cause`]).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::logging::Cause;

/// The CA certificates to trust: those in `ca_file` (PEM), or the system's when `None`.
/// `what` names the peer in errors ("directory", "PostgreSQL"); a file that can't be read keeps
/// the reader's error as the source.
pub fn root_store(ca_file: Option<&Path>, what: &str) -> Result<RootCertStore, Cause> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    let message = format!("cannot read the {what} CA file {}: {e}", path.display());
                    Cause::with_source(message, e)
                })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(Cause::new(format!(
                    "the {what} CA file {} holds no usable certificate",
                    path.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for err in &found.errors {
                log::warn!("while loading the system CA certificates: {err}");
            }
            roots.add_parsable_certificates(found.certs);
        }
    }
    Ok(roots)
}

/// Accepts any server certificate but still checks handshake signatures, so the session is
/// bound to the key of the certificate presented. Only for an operator's explicit opt-out.
#[derive(Debug)]
pub struct AcceptAnyCertificate(pub Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
