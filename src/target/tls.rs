//! Trust for `--ca-cert FILE`: reading the file (at least one PEM certificate, else a usage
//! error naming the file) and the rustls client configuration the HTTP target uses with it.
//!
//! Every certificate in the file is a **pin**: a server presenting exactly that certificate
//! (byte-equal DER) is trusted whatever its names and dates — the certificate of a home server,
//! self-signed, often for a bare IP address, with only a CN, or expired — with one warning when
//! the dates or the name do not fit. A CA certificate in the file (basicConstraints CA:TRUE) is
//! also a trust root with full checks (chain, names, dates, usages). Only the file is trusted
//! then, not the system's roots (as curl's `--cacert`). Anything else is refused, and the error
//! says the server's certificate is not one the file trusts.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Why a `--ca-cert` file cannot be used (a usage error: exit 2, before anything is made).
#[derive(Debug, thiserror::Error)]
pub enum CaCertError {
    #[error("--ca-cert {}: {source}", .path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--ca-cert {}: malformed PEM: {source}", .path.display())]
    NotPem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("--ca-cert {}: no certificate in the file (a private key, or not PEM?); give the server's certificate or its CA's, as PEM (-----BEGIN CERTIFICATE-----)", .path.display())]
    NoCertificate { path: PathBuf },
    #[error("--ca-cert {}: certificate {number} cannot be read: {reason}", .path.display())]
    BadCertificate {
        path: PathBuf,
        /// 1-based, in file order.
        number: usize,
        reason: String,
    },
    #[error("--ca-cert {}: CA certificate {number} is not usable as a trust root: {source}", .path.display())]
    BadRoot {
        path: PathBuf,
        number: usize,
        #[source]
        source: rustls::Error,
    },
}

/// A `--ca-cert` file, read and checked.
#[derive(Clone)]
pub struct CaFile {
    path: PathBuf,
    pins: Vec<Pin>,
    /// The file's CA certificates, as trust roots (empty: pins only).
    roots: Arc<RootCertStore>,
}

impl fmt::Debug for CaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaFile")
            .field("path", &self.path)
            .field("certificates", &self.pins.len())
            .field("roots", &self.roots.len())
            .finish()
    }
}

/// A certificate of the file, trusted when the server presents exactly it.
#[derive(Debug, Clone)]
struct Pin {
    der: CertificateDer<'static>,
    /// Validity, seconds since the epoch, and as the certificate says it (for the warning).
    not_before: (i64, String),
    not_after: (i64, String),
}

impl CaFile {
    /// Read `path`: one or more PEM certificates (other PEM sections, such as a key, are
    /// ignored; a file without any certificate is refused).
    pub fn load(path: &Path) -> Result<CaFile, CaCertError> {
        let path_buf = || path.to_path_buf();
        let pem = std::fs::read(path).map_err(|source| CaCertError::Unreadable {
            path: path_buf(),
            source,
        })?;
        let ders = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| CaCertError::NotPem {
                path: path_buf(),
                source,
            })?;
        if ders.is_empty() {
            return Err(CaCertError::NoCertificate { path: path_buf() });
        }
        let mut pins = Vec::with_capacity(ders.len());
        let mut roots = RootCertStore::empty();
        for (i, der) in ders.into_iter().enumerate() {
            let number = i + 1;
            let (is_ca, not_before, not_after) = {
                let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| {
                    CaCertError::BadCertificate {
                        path: path_buf(),
                        number,
                        reason: e.to_string(),
                    }
                })?;
                let v = cert.validity();
                let time = |t: &x509_parser::time::ASN1Time| (t.timestamp(), t.to_string());
                (cert.is_ca(), time(&v.not_before), time(&v.not_after))
            };
            if is_ca {
                roots
                    .add(der.clone())
                    .map_err(|source| CaCertError::BadRoot {
                        path: path_buf(),
                        number,
                        source,
                    })?;
            }
            pins.push(Pin {
                der,
                not_before,
                not_after,
            });
        }
        Ok(CaFile {
            path: path_buf(),
            pins,
            roots: Arc::new(roots),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The client configuration that trusts what the file says (see the module's doc), with
    /// the crypto provider reqwest would use and HTTP/1.1 as the only ALPN protocol.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, rustls::Error> {
        let provider = CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        let chain = if self.roots.is_empty() {
            None
        } else {
            let verifier =
                WebPkiServerVerifier::builder_with_provider(self.roots.clone(), provider.clone())
                    .build()
                    .map_err(|e| rustls::Error::General(e.to_string()))?;
            Some(verifier)
        };
        let verifier = FileVerifier {
            path: self.path.clone(),
            pins: self.pins.clone(),
            chain,
            provider: provider.clone(),
            warned: AtomicBool::new(false),
        };
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// The words a certificate error's message gets when `--ca-cert` was not given (a message that
/// already names `--ca-cert` says what is wrong with it instead).
pub fn certificate_hint(cause: &str) -> &'static str {
    if cause.to_lowercase().contains("certificate") && !cause.contains("--ca-cert") {
        " (a self-signed server? trust its certificate or its CA with --ca-cert FILE)"
    } else {
        ""
    }
}

/// Why the server's certificate was refused (inside rustls' `InvalidCertificate`).
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("the server's certificate is not the one in --ca-cert {}", .path.display())]
    NotPinned { path: PathBuf },
    /// `cause` is part of the message, not a `source`: the error chain is printed whole.
    #[error("the server's certificate is not the one in --ca-cert {}, nor valid under a CA in it: {cause}", .path.display())]
    NotIssued { path: PathBuf, cause: rustls::Error },
}

#[derive(Debug)]
struct FileVerifier {
    path: PathBuf,
    pins: Vec<Pin>,
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
    /// The warning about a pinned certificate's dates or name is given once.
    warned: AtomicBool,
}

impl FileVerifier {
    /// A pinned certificate is trusted as it is; say once what a full check would refuse.
    fn warn_once(&self, pin: &Pin, name: &ServerName<'_>, now: UnixTime) {
        if self.warned.load(Ordering::Relaxed) {
            return;
        }
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let mut doubts = Vec::new();
        if now < pin.not_before.0 {
            doubts.push(format!("is not valid before {}", pin.not_before.1));
        }
        if now > pin.not_after.0 {
            doubts.push(format!("expired on {}", pin.not_after.1));
        }
        let name_error = rustls::server::ParsedCertificate::try_from(&pin.der)
            .and_then(|cert| rustls::client::verify_server_name(&cert, name));
        if let Err(e) = name_error {
            doubts.push(format!("is not issued for {} ({e})", name.to_str()));
        }
        if doubts.is_empty() || self.warned.swap(true, Ordering::Relaxed) {
            return;
        }
        tracing::warn!(
            "--ca-cert {}: the server's certificate {}; trusted anyway because it is the one in the file",
            self.path.display(),
            doubts.join(", and ")
        );
    }
}

/// As `Error::Other`: rustls prints an `InvalidCertificate(Other(…))` with `Debug`.
fn refused(why: Refused) -> rustls::Error {
    rustls::Error::Other(OtherError(Arc::new(why)))
}

/// Whether a certificate says basicConstraints CA:TRUE (unreadable: no).
fn is_ca(der: &CertificateDer<'_>) -> bool {
    x509_parser::parse_x509_certificate(der).is_ok_and(|(_, cert)| cert.is_ca())
}

impl ServerCertVerifier for FileVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(pin) = self.pins.iter().find(|p| p.der == *end_entity) {
            self.warn_once(pin, server_name, now);
            return Ok(ServerCertVerified::assertion());
        }
        let path = self.path.clone();
        match &self.chain {
            // A CA certificate presented as the server's own is trusted only as a pin (a full
            // check refuses it as `CaUsedAsEndEntity`, which says nothing useful).
            Some(chain) if !is_ca(end_entity) => chain
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map_err(|cause| refused(Refused::NotIssued { path, cause })),
            _ => Err(refused(Refused::NotPinned { path })),
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(ca: bool) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        if ca {
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    fn load(text: &str) -> Result<CaFile, CaCertError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, text).unwrap();
        CaFile::load(&path)
    }

    #[test]
    fn every_certificate_is_a_pin_and_only_ca_certificates_are_roots() {
        let (leaf, key) = cert(false);
        let (ca, _) = cert(true);
        // A key beside the certificates (a combined PEM) is passed over.
        let f = load(&format!("{key}{leaf}{ca}")).unwrap();
        assert_eq!((f.pins.len(), f.roots.len()), (2, 1));
        let f = load(&leaf).unwrap();
        assert_eq!((f.pins.len(), f.roots.len()), (1, 0));
    }

    #[test]
    fn a_file_without_a_readable_certificate_is_refused() {
        let (_, key) = cert(false);
        for text in [key.as_str(), "", "not PEM at all\n"] {
            assert!(
                matches!(load(text), Err(CaCertError::NoCertificate { .. })),
                "{text:?}"
            );
        }
        let broken = "-----BEGIN CERTIFICATE-----\nMIIB!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            load(broken),
            Err(CaCertError::NotPem { .. } | CaCertError::BadCertificate { .. })
        ));
        let not_x509 = "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            load(not_x509),
            Err(CaCertError::BadCertificate { number: 1, .. })
        ));
        let missing = std::path::Path::new("/nonexistent/ca.pem");
        assert!(matches!(
            CaFile::load(missing),
            Err(CaCertError::Unreadable { .. })
        ));
    }
}
