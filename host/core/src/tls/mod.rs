//! TLS with rustls (ring provider): what Istio's `ServerTLSSettings` (Gateway servers) and
//! `ClientTLSSettings` (DestinationRule) ask for, and the mesh's workload identity.
//!
//! - [`server`]: per-server configs chosen by SNI, client-certificate checks (MUTUAL,
//!   ISTIO_MUTUAL), and what a handshake tells about the peer.
//! - [`client`]: upstream configs (SIMPLE, MUTUAL, ISTIO_MUTUAL) with subjectAltNames checks.
//! - [`ca`]: the built-in CA (`lateen ca init|issue`) that makes SPIFFE workload certificates.
//!
//! Everything here reads files and builds rustls configs; nothing touches a socket.

pub mod ca;
pub mod client;
pub mod server;

/// The ALPN protocol Istio's sidecars add to mesh mTLS, so that the receiving sidecar can
/// tell it from an app's own TLS.
pub const MESH_ALPN: &[u8] = b"istio";

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{RootCertStore, SupportedProtocolVersion};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What went wrong while building a TLS config; each names the file or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{}` holds no PEM certificate", .0.display())]
    NoCertificate(PathBuf),
    #[error("`{}` holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", .0.display())]
    NoKey(PathBuf),
    #[error("`{}`: {msg}", path.display())]
    Invalid { path: PathBuf, msg: String },
    #[error("unknown TLS protocol version `{0}`; expected TLS_AUTO, TLSV1_0, TLSV1_1, TLSV1_2 or TLSV1_3")]
    Version(String),
    #[error("minProtocolVersion {0} is above maxProtocolVersion {1}")]
    VersionRange(String, String),
    #[error("unknown cipher suite `{0}`; rustls offers ECDHE-ECDSA/RSA with AES128-GCM-SHA256, AES256-GCM-SHA384, CHACHA20-POLY1305 and the TLS 1.3 suites")]
    Cipher(String),
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0}")]
    Verifier(String),
    #[error("{0}")]
    Ca(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate of a PEM file (a chain: leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Invalid {
            path: path.to_path_buf(),
            msg: format!("bad PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey(path.to_path_buf()),
        e => TlsError::Invalid {
            path: path.to_path_buf(),
            msg: format!("bad PEM: {e}"),
        },
    })
}

/// A trust store from a PEM bundle of CA certificates.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots.add(c).map_err(|e| TlsError::Invalid {
            path: path.to_path_buf(),
            msg: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// The system's trust roots (or the bundle named by `SSL_CERT_FILE`).
pub fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(TlsError::Verifier(format!(
            "no system CA certificates found ({}); set caCertificates",
            found
                .errors
                .first()
                .map_or_else(|| "empty store".to_string(), ToString::to_string)
        )));
    }
    Ok(roots)
}

/// A certificate chain and its key, checked to belong together.
pub struct KeyPair {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl KeyPair {
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let pair = KeyPair {
            chain: load_certs(cert)?,
            key: load_key(key)?,
        };
        // Refuse a key that does not match its certificate here, with both names, rather
        // than fail every handshake later.
        let signing = provider()
            .key_provider
            .load_private_key(pair.key.clone_key())
            .map_err(|e| TlsError::Invalid {
                path: key.to_path_buf(),
                msg: format!("unusable private key: {e}"),
            })?;
        let ck = rustls::sign::CertifiedKey::new(pair.chain.clone(), signing);
        if let Err(e) = ck.keys_match() {
            return Err(TlsError::Invalid {
                path: key.to_path_buf(),
                msg: format!("does not match the certificate `{}`: {e}", cert.display()),
            });
        }
        Ok(pair)
    }
}

/// The ring provider, with every suite rustls has.
pub fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// A provider limited to `names` (Envoy/OpenSSL cipher names, as Istio's `cipherSuites`
/// takes them); TLS 1.3 suites always stay, since Envoy does not let them be chosen either.
pub fn provider_with_ciphers(names: &[String]) -> Result<CryptoProvider, TlsError> {
    let mut p = provider();
    if names.is_empty() {
        return Ok(p);
    }
    let mut wanted = Vec::new();
    for n in names {
        let suite = match n.as_str() {
            "ECDHE-ECDSA-AES128-GCM-SHA256" => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            "ECDHE-RSA-AES128-GCM-SHA256" => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "ECDHE-ECDSA-AES256-GCM-SHA384" => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            "ECDHE-RSA-AES256-GCM-SHA384" => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            "ECDHE-ECDSA-CHACHA20-POLY1305" => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            "ECDHE-RSA-CHACHA20-POLY1305" => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            "TLS_AES_128_GCM_SHA256"
            | "TLS_AES_256_GCM_SHA384"
            | "TLS_CHACHA20_POLY1305_SHA256" => continue,
            other => return Err(TlsError::Cipher(other.to_string())),
        };
        wanted.push(suite);
    }
    p.cipher_suites.retain(|s| {
        s.version() == &rustls::version::TLS13
            || wanted.contains(&format!("{:?}", s.suite()).as_str())
    });
    Ok(p)
}

/// The protocol versions between Istio's `minProtocolVersion` and `maxProtocolVersion`.
/// rustls speaks TLS 1.2 and 1.3 only, so TLSV1_0 and TLSV1_1 as a minimum mean 1.2.
pub fn versions(
    min: Option<&str>,
    max: Option<&str>,
) -> Result<Vec<&'static SupportedProtocolVersion>, TlsError> {
    fn rank(v: Option<&str>, default: u8) -> Result<u8, TlsError> {
        match v.unwrap_or("TLS_AUTO") {
            "TLS_AUTO" => Ok(default),
            "TLSV1_0" => Ok(10),
            "TLSV1_1" => Ok(11),
            "TLSV1_2" => Ok(12),
            "TLSV1_3" => Ok(13),
            other => Err(TlsError::Version(other.to_string())),
        }
    }
    let (lo, hi) = (rank(min, 12)?, rank(max, 13)?);
    if lo > hi {
        return Err(TlsError::VersionRange(
            min.unwrap_or_default().to_string(),
            max.unwrap_or_default().to_string(),
        ));
    }
    if hi < 12 {
        return Err(TlsError::Version(format!(
            "{} (rustls speaks TLS 1.2 and 1.3 only)",
            max.unwrap_or_default()
        )));
    }
    let mut v = Vec::new();
    if lo <= 12 {
        v.push(&rustls::version::TLS12);
    }
    if hi >= 13 {
        v.push(&rustls::version::TLS13);
    }
    Ok(v)
}

/// What a certificate says about its holder: SPIFFE and other URI SANs, DNS SANs and the
/// subject, as Envoy's `connection.*_peer_certificate` attributes give them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertIdentity {
    pub uri_sans: Vec<String>,
    pub dns_sans: Vec<String>,
    pub subject: String,
}

impl CertIdentity {
    /// Parses a DER certificate; `None` when it is not X.509.
    pub fn of(der: &[u8]) -> Option<Self> {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let mut id = CertIdentity {
            subject: cert.subject().to_string(),
            ..CertIdentity::default()
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::URI(u) => id.uri_sans.push((*u).to_string()),
                    GeneralName::DNSName(d) => id.dns_sans.push((*d).to_string()),
                    _ => {}
                }
            }
        }
        Some(id)
    }

    /// Istio's principal: the SPIFFE id without `spiffe://` (`cluster.local/ns/NS/sa/SA`).
    pub fn principal(&self) -> Option<&str> {
        self.uri_sans
            .iter()
            .find_map(|u| u.strip_prefix("spiffe://"))
    }

    /// Whether any SAN equals one of `expected` (Envoy's exact `match_subject_alt_names`;
    /// a `*.domain` DNS SAN in the certificate covers one label).
    pub fn matches_any(&self, expected: &[String]) -> bool {
        expected.iter().any(|want| {
            self.uri_sans.iter().any(|u| u == want)
                || self.dns_sans.iter().any(|d| dns_matches(d, want))
        })
    }
}

/// A DNS SAN against a wanted name; the SAN may be a one-label wildcard.
fn dns_matches(san: &str, want: &str) -> bool {
    if san.eq_ignore_ascii_case(want) {
        return true;
    }
    match (san.strip_prefix("*."), want.split_once('.')) {
        (Some(suffix), Some((label, rest))) => {
            !label.is_empty() && suffix.eq_ignore_ascii_case(rest)
        }
        _ => false,
    }
}

/// The SPIFFE id of a workload: `spiffe://TRUST_DOMAIN/ns/NS/sa/SA`.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// Shared by both sides: a config's chain of trust, as an `Arc` for the verifiers.
pub type Roots = Arc<RootCertStore>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_follow_istio_names() {
        let names = |v: Vec<&SupportedProtocolVersion>| {
            v.iter()
                .map(|v| format!("{:?}", v.version))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(versions(None, None).unwrap()), ["TLSv1_2", "TLSv1_3"]);
        assert_eq!(names(versions(Some("TLSV1_3"), None).unwrap()), ["TLSv1_3"]);
        assert_eq!(names(versions(None, Some("TLSV1_2")).unwrap()), ["TLSv1_2"]);
        assert_eq!(
            names(versions(Some("TLSV1_0"), None).unwrap()),
            ["TLSv1_2", "TLSv1_3"]
        );
        assert!(matches!(
            versions(Some("TLSV1_3"), Some("TLSV1_2")),
            Err(TlsError::VersionRange(..))
        ));
        assert!(matches!(
            versions(Some("TLS1.3"), None),
            Err(TlsError::Version(_))
        ));
        assert!(versions(None, Some("TLSV1_1")).is_err());
    }

    #[test]
    fn ciphers_by_envoy_name() {
        let p = provider_with_ciphers(&["ECDHE-RSA-AES256-GCM-SHA384".into()]).unwrap();
        let tls12: Vec<_> = p
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS12)
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert_eq!(tls12, ["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"]);
        assert!(matches!(
            provider_with_ciphers(&["RC4-MD5".into()]),
            Err(TlsError::Cipher(c)) if c == "RC4-MD5"
        ));
    }

    #[test]
    fn san_matching() {
        let id = CertIdentity {
            uri_sans: vec!["spiffe://cluster.local/ns/a/sa/b".into()],
            dns_sans: vec!["*.example.com".into(), "api.test".into()],
            subject: String::new(),
        };
        assert_eq!(id.principal(), Some("cluster.local/ns/a/sa/b"));
        assert!(id.matches_any(&["spiffe://cluster.local/ns/a/sa/b".into()]));
        assert!(id.matches_any(&["foo.example.com".into()]));
        assert!(id.matches_any(&["API.test".into()]));
        assert!(!id.matches_any(&["a.b.example.com".into()]));
        assert!(!id.matches_any(&["example.com".into()]));
        assert!(!id.matches_any(&["spiffe://cluster.local/ns/a/sa/c".into()]));
    }
}
