//! Downstream TLS: a Gateway port's servers, each with its own rustls config, chosen by
//! the client's SNI; client certificates for MUTUAL and ISTIO_MUTUAL; and what a finished
//! handshake says about the peer.

use super::{load_roots, provider_with_ciphers, versions, CertIdentity, KeyPair, TlsError};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{Acceptor, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;

/// Istio's `ServerTLSSettings.TLSmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerMode {
    Simple,
    Mutual,
    /// A client certificate is checked when offered, and not required.
    OptionalMutual,
    /// Mutual TLS with the proxy's own workload certificate and the mesh's roots.
    IstioMutual,
    /// Not terminated: the connection is forwarded by SNI.
    Passthrough,
}

impl ServerMode {
    pub fn name(self) -> &'static str {
        match self {
            ServerMode::Simple => "SIMPLE",
            ServerMode::Mutual => "MUTUAL",
            ServerMode::OptionalMutual => "OPTIONAL_MUTUAL",
            ServerMode::IstioMutual => "ISTIO_MUTUAL",
            ServerMode::Passthrough => "PASSTHROUGH",
        }
    }
}

/// The files and choices of one terminating server (plain data, from the config).
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub mode: ServerMode,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Roots that client certificates must chain to (MUTUAL, ISTIO_MUTUAL).
    pub ca: Option<PathBuf>,
    /// A client certificate must carry one of these SANs, when any are given.
    pub subject_alt_names: Vec<String>,
    pub min_version: Option<String>,
    pub max_version: Option<String>,
    pub cipher_suites: Vec<String>,
}

/// Builds the rustls config of one server. ALPN offers h2 and http/1.1, as Envoy's HTTPS
/// listeners do.
pub fn server_config(s: &ServerSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(provider_with_ciphers(&s.cipher_suites)?);
    let vs = versions(s.min_version.as_deref(), s.max_version.as_deref())?;
    let pair = KeyPair::load(&s.cert, &s.key)?;
    let builder =
        ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(&vs)?;
    let builder = match (s.mode, &s.ca) {
        (ServerMode::Simple | ServerMode::Passthrough, _) => builder.with_no_client_auth(),
        (_, None) => {
            return Err(TlsError::Verifier(format!(
                "{} needs caCertificates to check client certificates",
                s.mode.name()
            )))
        }
        (mode, Some(ca)) => {
            let roots = Arc::new(load_roots(ca)?);
            let mut b = WebPkiClientVerifier::builder_with_provider(roots, provider);
            if mode == ServerMode::OptionalMutual {
                b = b.allow_unauthenticated();
            }
            let inner = b.build().map_err(|e| TlsError::Verifier(e.to_string()))?;
            let verifier: Arc<dyn ClientCertVerifier> = if s.subject_alt_names.is_empty() {
                inner
            } else {
                Arc::new(SanClientVerifier {
                    inner,
                    sans: s.subject_alt_names.clone(),
                })
            };
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder.with_single_cert(pair.chain, pair.key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The webpki client verifier, plus Istio's `subjectAltNames` on the client certificate.
#[derive(Debug)]
struct SanClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    sans: Vec<String>,
}

impl ClientCertVerifier for SanClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        match CertIdentity::of(end_entity) {
            Some(id) if id.matches_any(&self.sans) => Ok(ok),
            _ => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            )),
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A terminating or passthrough server of a TLS port.
pub struct TlsServer {
    /// SNI names it serves (`*` and `*.domain` allowed; a `ns/` prefix already removed).
    pub hosts: Vec<String>,
    pub mode: ServerMode,
    /// `None` for PASSTHROUGH.
    pub config: Option<Arc<ServerConfig>>,
}

/// The TLS side of one listener.
#[derive(Default)]
pub struct ListenerTls {
    pub servers: Vec<TlsServer>,
}

impl ListenerTls {
    /// The server for a ClientHello's SNI: an exact host, then the longest matching
    /// wildcard, then `*`. Without SNI, the `*` server or else the first one, as Envoy's
    /// default filter chain.
    pub fn select(&self, sni: Option<&str>) -> Option<&TlsServer> {
        let Some(sni) = sni else {
            return self
                .servers
                .iter()
                .find(|s| s.hosts.iter().any(|h| h == "*"))
                .or(self.servers.first());
        };
        let mut best: Option<(usize, &TlsServer)> = None;
        for s in &self.servers {
            for h in &s.hosts {
                if let Some(score) = host_match(h, sni) {
                    if best.is_none_or(|(b, _)| score > b) {
                        best = Some((score, s));
                    }
                }
            }
        }
        best.map(|(_, s)| s)
    }

    /// Whether some server forwards without terminating, so the ClientHello must be read
    /// without consuming it.
    pub fn has_passthrough(&self) -> bool {
        self.servers
            .iter()
            .any(|s| s.mode == ServerMode::Passthrough)
    }
}

/// How well host pattern `pattern` matches `name`: higher is more specific; `None` for no
/// match. Exact beats any wildcard; a longer wildcard suffix beats a shorter one.
pub fn host_match(pattern: &str, name: &str) -> Option<usize> {
    if pattern == "*" {
        return Some(0);
    }
    if pattern.eq_ignore_ascii_case(name) {
        return Some(usize::MAX);
    }
    let suffix = pattern.strip_prefix('*')?;
    (name.len() > suffix.len()
        && name
            .get(name.len() - suffix.len()..)
            .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix)))
    .then_some(suffix.len())
}

/// Reads the SNI of a ClientHello from the bytes peeked so far. `Ok(None)`: more bytes are
/// needed; `Ok(Some(sni))`: the hello is complete (`sni` may be absent); `Err`: not TLS.
pub fn peek_sni(buf: &[u8]) -> Result<Option<Option<String>>, String> {
    Ok(peek_hello(buf)?.map(|h| h.sni))
}

/// What a ClientHello asks for, read before any handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub sni: Option<String>,
    pub alpn: Vec<Vec<u8>>,
}

impl Hello {
    /// Whether the client marked the connection as mesh mTLS (Istio's `istio` ALPN).
    pub fn is_mesh(&self) -> bool {
        self.alpn.iter().any(|p| p == crate::tls::MESH_ALPN)
    }
}

/// Parses a ClientHello from the bytes received so far: `Ok(None)` when more are needed;
/// an error when they are not TLS.
pub fn peek_hello(buf: &[u8]) -> Result<Option<Hello>, String> {
    let mut acc = Acceptor::default();
    let mut cur = std::io::Cursor::new(buf);
    while (cur.position() as usize) < buf.len() {
        match acc.read_tls(&mut cur) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    match acc.accept() {
        Ok(None) => Ok(None),
        Ok(Some(accepted)) => {
            let hello = accepted.client_hello();
            Ok(Some(Hello {
                sni: hello.server_name().map(str::to_string),
                alpn: hello
                    .alpn()
                    .map(|a| a.map(<[u8]>::to_vec).collect())
                    .unwrap_or_default(),
            }))
        }
        Err((e, _)) => Err(e.to_string()),
    }
}

/// What a finished handshake says, for properties, headers and the access log.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    pub sni: Option<String>,
    /// `TLSv1.2` or `TLSv1.3`, as Envoy's `connection.tls_version`.
    pub version: &'static str,
    pub h2: bool,
    /// The client certificate's identity, when one was presented and verified.
    pub peer: Option<CertIdentity>,
    /// The hex SHA-256 of the client certificate (Envoy's `%DOWNSTREAM_PEER_FINGERPRINT_256%`).
    pub peer_fingerprint: Option<String>,
    /// The verified client certificate as the `x-forwarded-client-cert` element Istio's
    /// gateways send (`Hash`, `Subject`, `URI`, `DNS`; not the PEM `Cert`), made once per
    /// connection.
    pub client_cert_details: Option<bytes::Bytes>,
}

impl TlsInfo {
    pub fn of(conn: &rustls::ServerConnection) -> Self {
        use sha2::Digest;
        let leaf = conn.peer_certificates().and_then(|c| c.first());
        let mut info = TlsInfo {
            sni: conn.server_name().map(str::to_string),
            version: match conn.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                _ => "",
            },
            h2: conn.alpn_protocol() == Some(b"h2"),
            peer: leaf.and_then(|c| CertIdentity::of(c)),
            peer_fingerprint: leaf.map(|c| hex::encode(sha2::Sha256::digest(c.as_ref()))),
            client_cert_details: None,
        };
        info.client_cert_details = info.cert_details().map(bytes::Bytes::from);
        info
    }

    fn cert_details(&self) -> Option<String> {
        let peer = self.peer.as_ref()?;
        let mut s = String::new();
        if let Some(h) = &self.peer_fingerprint {
            s.push_str(&format!("Hash={h};"));
        }
        s.push_str(&format!(
            "Subject=\"{}\"",
            peer.subject.replace('\\', "\\\\").replace('"', "\\\"")
        ));
        for u in &peer.uri_sans {
            s.push_str(&format!(";URI={u}"));
        }
        for d in &peer.dns_sans {
            s.push_str(&format!(";DNS={d}"));
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(hosts: &[&str], mode: ServerMode) -> TlsServer {
        TlsServer {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            mode,
            config: None,
        }
    }

    #[test]
    fn sni_picks_the_most_specific_server() {
        let l = ListenerTls {
            servers: vec![
                server(&["*"], ServerMode::Simple),
                server(&["*.example.com"], ServerMode::Mutual),
                server(&["api.example.com"], ServerMode::Passthrough),
                server(&["*.b.example.com"], ServerMode::IstioMutual),
            ],
        };
        let mode = |sni: Option<&str>| l.select(sni).map(|s| s.mode);
        assert_eq!(mode(Some("api.example.com")), Some(ServerMode::Passthrough));
        assert_eq!(mode(Some("API.example.com")), Some(ServerMode::Passthrough));
        assert_eq!(mode(Some("www.example.com")), Some(ServerMode::Mutual));
        assert_eq!(mode(Some("x.b.example.com")), Some(ServerMode::IstioMutual));
        assert_eq!(mode(Some("other.test")), Some(ServerMode::Simple));
        assert_eq!(mode(None), Some(ServerMode::Simple));
        assert!(l.has_passthrough());
        let only = ListenerTls {
            servers: vec![server(&["a.test"], ServerMode::Simple)],
        };
        assert!(only.select(Some("b.test")).is_none());
        assert!(only.select(None).is_some(), "no SNI: the first server");
        assert_eq!(host_match("*.example.com", "example.com"), None);
    }

    #[test]
    fn a_client_hello_is_read_without_a_handshake() {
        // A real ClientHello from a rustls client for `svc.test`.
        let mut cfg =
            rustls::ClientConfig::builder_with_provider(Arc::new(super::super::provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec(), crate::tls::MESH_ALPN.to_vec()];
        let name = rustls::pki_types::ServerName::try_from("svc.test").unwrap();
        let mut c = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
        let mut hello = Vec::new();
        c.write_tls(&mut hello).unwrap();
        assert_eq!(peek_sni(&hello).unwrap(), Some(Some("svc.test".into())));
        assert_eq!(
            peek_sni(&hello[..20]).unwrap(),
            None,
            "partial: wait for more"
        );
        assert!(peek_sni(b"GET / HTTP/1.1\r\n\r\n").is_err());
        let h = peek_hello(&hello).unwrap().unwrap();
        assert!(h.is_mesh());
        assert_eq!(h.alpn[0], b"http/1.1");
    }
}
