//! Upstream TLS: Istio's `ClientTLSSettings` (DestinationRule `trafficPolicy.tls`) as a
//! rustls client config, with its own server-certificate check so that `subjectAltNames`
//! may name SPIFFE URIs as well as DNS names.

use super::{load_roots, provider, CertIdentity, KeyPair, TlsError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;

/// How the upstream's certificate is judged after its chain is verified.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verify {
    /// `insecureSkipVerify`: nothing is checked.
    Skip,
    /// The certificate must be valid for the SNI name (a DNS or IP SAN).
    Name,
    /// One of the certificate's SANs must equal one of these (`subjectAltNames`).
    Sans(Vec<String>),
    /// Any SPIFFE identity of this trust domain (ISTIO_MUTUAL without subjectAltNames).
    TrustDomain(String),
}

/// The files and choices of one cluster's upstream TLS (plain data, from the config).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientSettings {
    /// `None`: the system's roots.
    pub ca: Option<PathBuf>,
    /// A client certificate and key (MUTUAL; ISTIO_MUTUAL's are the workload's).
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The SNI sent, and the name checked by [`Verify::Name`].
    pub sni: String,
    pub verify: Verify,
    /// Offer h2 by ALPN (the cluster speaks HTTP/2).
    pub h2: bool,
    /// Mesh mTLS (ISTIO_MUTUAL): also offer Istio's `istio` ALPN, by which the peer's
    /// sidecar tells mesh traffic from an app's own TLS.
    pub mesh: bool,
}

/// A ready upstream TLS config.
#[derive(Debug)]
pub struct UpstreamTls {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
    /// Changes whenever the settings or the files' contents do, so that a rotated
    /// certificate gets a pool of its own and old connections drain on the old one.
    pub id: u64,
}

/// Builds the config. `system_roots` is asked only when no CA is named and the
/// certificate is verified, so that the system store is read once per config build, not
/// once per cluster.
pub fn client_tls(
    s: &ClientSettings,
    system_roots: impl FnOnce() -> Result<RootCertStore, TlsError>,
) -> Result<UpstreamTls, TlsError> {
    use std::hash::{Hash, Hasher};
    let roots = match &s.ca {
        Some(ca) => load_roots(ca)?,
        None if s.verify == Verify::Skip => RootCertStore::empty(),
        None => system_roots()?,
    };
    // The id covers what was loaded, not only the paths: a rewritten file changes it.
    let mut h = xxhash_rust::xxh64::Xxh64::new(0);
    s.hash(&mut h);
    for ta in &roots.roots {
        ta.subject.as_ref().hash(&mut h);
        ta.subject_public_key_info.as_ref().hash(&mut h);
    }
    let identity = match &s.identity {
        Some((cert, key)) => {
            let pair = KeyPair::load(cert, key)?;
            for c in &pair.chain {
                c.as_ref().hash(&mut h);
            }
            pair.key.secret_der().hash(&mut h);
            Some(pair)
        }
        None => None,
    };
    let provider = Arc::new(provider());
    let verifier = Arc::new(Verifier {
        roots: Arc::new(roots),
        verify: s.verify.clone(),
        algs: provider.signature_verification_algorithms,
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut cfg = match identity {
        Some(pair) => builder.with_client_auth_cert(pair.chain, pair.key)?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = if s.h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    if s.mesh {
        cfg.alpn_protocols.push(crate::tls::MESH_ALPN.to_vec());
    }
    let server_name = ServerName::try_from(s.sni.clone())
        .map_err(|e| TlsError::Verifier(format!("sni `{}`: {e}", s.sni)))?;
    Ok(UpstreamTls {
        config: Arc::new(cfg),
        server_name,
        id: h.finish(),
    })
}

#[derive(Debug)]
struct Verifier {
    roots: Arc<RootCertStore>,
    verify: Verify,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.verify == Verify::Skip {
            return Ok(ServerCertVerified::assertion());
        }
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        let bad_name =
            || rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName);
        match &self.verify {
            Verify::Skip => {}
            Verify::Name => verify_server_name(&cert, server_name)?,
            Verify::Sans(sans) => {
                if !CertIdentity::of(end_entity).is_some_and(|id| id.matches_any(sans)) {
                    return Err(bad_name());
                }
            }
            Verify::TrustDomain(td) => {
                let prefix = format!("spiffe://{td}/");
                let ok = CertIdentity::of(end_entity)
                    .is_some_and(|id| id.uri_sans.iter().any(|u| u.starts_with(&prefix)));
                if !ok {
                    return Err(bad_name());
                }
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ca;
    use std::time::Duration;

    #[test]
    fn the_id_follows_the_files_contents() {
        let dir = std::env::temp_dir().join(format!("lateen-client-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        ca::init(&dir.join("ca"), "cluster.local", Duration::from_secs(3600)).unwrap();
        let w = ca::Workload {
            namespace: "ns".into(),
            service_account: "sa".into(),
            dns_names: Vec::new(),
            trust_domain: None,
            ttl: Duration::from_secs(600),
        };
        let out = dir.join("w");
        ca::issue(&dir.join("ca"), &w, &out).unwrap();
        let s = ClientSettings {
            ca: Some(out.join("root-cert.pem")),
            identity: Some((out.join("cert-chain.pem"), out.join("key.pem"))),
            sni: "svc.test".into(),
            verify: Verify::TrustDomain("cluster.local".into()),
            h2: false,
            mesh: false,
        };
        let no_system = || -> Result<RootCertStore, TlsError> { panic!("a CA is named") };
        let first = client_tls(&s, no_system).unwrap().id;
        assert_eq!(
            client_tls(&s, no_system).unwrap().id,
            first,
            "same files, same id"
        );
        ca::issue(&dir.join("ca"), &w, &out).unwrap();
        assert_ne!(
            client_tls(&s, no_system).unwrap().id,
            first,
            "a re-issued certificate"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
