//! TLS settings of the resources → the plain settings the `tls` module builds rustls
//! configs from: file paths resolved (relative to the YAML file; `credentialName` from the
//! credentials directory; ISTIO_MUTUAL from the Bootstrap's workload identity), modes
//! checked, and every file read recorded so that the watcher reloads when one changes.

use super::compile::Resources;
use super::resources::{ClientTlsSettings, ServerTlsSettings};
use super::source::{ConfigError, DocInfo};
use lateen_core::tls::client::{client_tls, ClientSettings, UpstreamTls, Verify};
use lateen_core::tls::server::{ServerMode, ServerSettings};
use lateen_core::tls::TlsError;
use rustls::RootCertStore;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The workload's mesh identity: where istio-agent would have written it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cert_chain: PathBuf,
    pub key: PathBuf,
    pub root_cert: PathBuf,
    pub trust_domain: String,
    /// Whether the Bootstrap set it (the defaults may simply not exist here).
    pub configured: bool,
}

/// What TLS settings resolve against, and the files they read.
pub struct TlsContext {
    pub identity: Identity,
    /// `credentialName` secrets: `DIR/NAME/tls.crt`, `tls.key`, `ca.crt`. `None`: beside
    /// the file of the resource that names the secret.
    credentials_dir: Option<PathBuf>,
    files: RefCell<Vec<PathBuf>>,
    /// Upstream configs by settings: the subsets and ports of a service share theirs, so
    /// each distinct one is loaded and built once per config build.
    upstream: RefCell<HashMap<ClientSettings, Arc<UpstreamTls>>>,
    /// The system's trust roots, read at most once per config build.
    system_roots: RefCell<Option<RootCertStore>>,
}

fn dir_of(info: &DocInfo) -> PathBuf {
    info.file
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// A path as written in a resource: absolute, or relative to the resource's file.
fn resolve(info: &DocInfo, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir_of(info).join(p)
    }
}

impl TlsContext {
    pub fn new(res: &Resources) -> Self {
        let b = res.bootstrap.as_ref();
        let id = b.and_then(|b| b.spec.identity.as_ref().map(|i| (b, i)));
        let file = |v: Option<&String>, default: &str| match (id, v) {
            (Some((b, _)), Some(p)) => resolve(&b.info, p),
            _ => PathBuf::from(default),
        };
        let identity = Identity {
            cert_chain: file(
                id.and_then(|(_, i)| i.cert_chain.as_ref()),
                "/etc/certs/cert-chain.pem",
            ),
            key: file(
                id.and_then(|(_, i)| i.private_key.as_ref()),
                "/etc/certs/key.pem",
            ),
            root_cert: file(
                id.and_then(|(_, i)| i.root_cert.as_ref()),
                "/etc/certs/root-cert.pem",
            ),
            trust_domain: id
                .and_then(|(_, i)| i.trust_domain.clone())
                .unwrap_or_else(|| "cluster.local".into()),
            configured: id.is_some(),
        };
        let credentials_dir =
            b.and_then(|b| b.spec.credentials_dir.as_ref().map(|d| resolve(&b.info, d)));
        TlsContext {
            identity,
            credentials_dir,
            files: RefCell::new(Vec::new()),
            upstream: RefCell::default(),
            system_roots: RefCell::default(),
        }
    }

    /// Every certificate and key file the built configs read.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut f = self.files.borrow().clone();
        f.sort();
        f.dedup();
        f
    }

    /// The upstream config for `s`, built on first use.
    pub fn upstream(&self, s: &ClientSettings) -> Result<Arc<UpstreamTls>, TlsError> {
        if let Some(u) = self.upstream.borrow().get(s) {
            return Ok(u.clone());
        }
        let u = Arc::new(client_tls(s, || self.system_roots())?);
        self.upstream.borrow_mut().insert(s.clone(), u.clone());
        Ok(u)
    }

    fn system_roots(&self) -> Result<RootCertStore, TlsError> {
        if let Some(r) = &*self.system_roots.borrow() {
            return Ok(r.clone());
        }
        let r = lateen_core::tls::system_roots()?;
        *self.system_roots.borrow_mut() = Some(r.clone());
        Ok(r)
    }

    /// A file another part of the config reads (a JWKS), resolved like the TLS files and
    /// watched with them.
    pub fn track(&self, info: &DocInfo, p: &str) -> PathBuf {
        self.read(resolve(info, p))
    }

    fn read(&self, p: PathBuf) -> PathBuf {
        self.files.borrow_mut().push(p.clone());
        p
    }

    fn credential(&self, info: &DocInfo, name: &str, file: &str) -> PathBuf {
        let dir = self
            .credentials_dir
            .clone()
            .unwrap_or_else(|| dir_of(info).join("credentials"));
        self.read(dir.join(name).join(file))
    }

    fn identity_files(
        &self,
        info: &DocInfo,
        at: &str,
    ) -> Result<(PathBuf, PathBuf, PathBuf), ConfigError> {
        let i = &self.identity;
        if !i.configured && !i.cert_chain.exists() {
            return Err(info.error(
                at,
                "ISTIO_MUTUAL uses the workload's mesh identity, and none is configured: set \
                 Bootstrap spec.identity (certChain, privateKey, rootCert), e.g. to files from \
                 `lateen ca issue`",
            ));
        }
        Ok((
            self.read(i.cert_chain.clone()),
            self.read(i.key.clone()),
            self.read(i.root_cert.clone()),
        ))
    }

    /// A Gateway server's `tls`: `Ok(None)` when it terminates nothing (httpsRedirect
    /// only); the mode PASSTHROUGH has no settings to build.
    pub fn server(
        &self,
        t: &ServerTlsSettings,
        info: &DocInfo,
        at: &str,
    ) -> Result<Option<ServerSettings>, ConfigError> {
        let mode = match t.mode.as_deref().unwrap_or("SIMPLE") {
            "SIMPLE" => ServerMode::Simple,
            "MUTUAL" => ServerMode::Mutual,
            "OPTIONAL_MUTUAL" => ServerMode::OptionalMutual,
            "ISTIO_MUTUAL" => ServerMode::IstioMutual,
            "PASSTHROUGH" => ServerMode::Passthrough,
            "AUTO_PASSTHROUGH" => {
                return Err(info.error(
                    &format!("{at}.mode"),
                    "AUTO_PASSTHROUGH routes by Istio's SNI-encoded cluster names for \
                     multi-network east-west gateways, which Lateen does not serve; use PASSTHROUGH \
                     with tls routes",
                ))
            }
            other => {
                return Err(info.error(
                    &format!("{at}.mode"),
                    format!(
                        "unknown TLS mode `{other}`; expected SIMPLE, MUTUAL, OPTIONAL_MUTUAL, \
                         ISTIO_MUTUAL or PASSTHROUGH"
                    ),
                ))
            }
        };
        for (set, field) in [
            (t.ca_crl.is_some(), "caCrl"),
            (!t.tls_certificates.is_empty(), "tlsCertificates"),
            (
                !t.verify_certificate_spki.is_empty(),
                "verifyCertificateSpki",
            ),
            (
                !t.verify_certificate_hash.is_empty(),
                "verifyCertificateHash",
            ),
        ] {
            if set {
                return Err(info.error(
                    &format!("{at}.{field}"),
                    "not supported yet; refused rather than ignored, since it would weaken \
                     what the server checks",
                ));
            }
        }
        let mut s = ServerSettings {
            mode,
            cert: PathBuf::new(),
            key: PathBuf::new(),
            ca: None,
            subject_alt_names: t.subject_alt_names.clone(),
            min_version: t.min_protocol_version.clone(),
            max_version: t.max_protocol_version.clone(),
            cipher_suites: t.cipher_suites.clone(),
        };
        let credential = t.credential_name.as_ref().or(t.credential_names.first());
        match (mode, credential, &t.server_certificate, &t.private_key) {
            (ServerMode::Passthrough, ..) => return Ok(Some(s)),
            (ServerMode::IstioMutual, ..) => {
                let (c, k, r) = self.identity_files(info, &format!("{at}.mode"))?;
                (s.cert, s.key, s.ca) = (c, k, Some(r));
                return Ok(Some(s));
            }
            (_, Some(name), _, _) => {
                s.cert = self.credential(info, name, "tls.crt");
                s.key = self.credential(info, name, "tls.key");
                if mode != ServerMode::Simple {
                    // Istio: the CA is `ca.crt` in the same secret, or the `NAME-cacert` one.
                    let ca = self.credential(info, name, "ca.crt");
                    s.ca = Some(if ca.exists() {
                        ca
                    } else {
                        self.credential(info, &format!("{name}-cacert"), "ca.crt")
                    });
                }
            }
            (_, None, Some(cert), Some(key)) => {
                s.cert = self.read(resolve(info, cert));
                s.key = self.read(resolve(info, key));
            }
            _ => {
                return Err(info.error(
                    at,
                    format!(
                        "{} needs credentialName, or serverCertificate and privateKey",
                        mode.name()
                    ),
                ))
            }
        }
        if let Some(ca) = &t.ca_certificates {
            s.ca = Some(self.read(resolve(info, ca)));
        }
        if matches!(mode, ServerMode::Mutual | ServerMode::OptionalMutual) && s.ca.is_none() {
            return Err(info.error(
                &format!("{at}.caCertificates"),
                format!(
                    "{} needs the CA that client certificates chain to",
                    mode.name()
                ),
            ));
        }
        Ok(Some(s))
    }

    /// A DestinationRule's `tls` for one cluster: `Ok(None)` for DISABLE (or no mode).
    /// `sni` defaults to the service host; `se_sans` are the ServiceEntry's subjectAltNames.
    pub fn client(
        &self,
        t: &ClientTlsSettings,
        host: &str,
        se_sans: &[String],
        h2: bool,
        info: &DocInfo,
        at: &str,
    ) -> Result<Option<ClientSettings>, ConfigError> {
        let mode = t.mode.as_deref().unwrap_or("DISABLE");
        if t.ca_crl.is_some() {
            return Err(info.error(&format!("{at}.caCrl"), "not supported yet"));
        }
        let sans = if t.subject_alt_names.is_empty() {
            se_sans.to_vec()
        } else {
            t.subject_alt_names.clone()
        };
        let sni = t.sni.clone().unwrap_or_else(|| host.to_string());
        let skip = t.insecure_skip_verify == Some(true);
        let mut s = ClientSettings {
            ca: None,
            identity: None,
            sni,
            verify: match (skip, sans.is_empty()) {
                (true, _) => Verify::Skip,
                (false, true) => Verify::Name,
                (false, false) => Verify::Sans(sans),
            },
            h2,
            mesh: false,
        };
        match mode {
            "DISABLE" => return Ok(None),
            "SIMPLE" | "MUTUAL" => {
                if let Some(name) = &t.credential_name {
                    if mode == "MUTUAL" {
                        s.identity = Some((
                            self.credential(info, name, "tls.crt"),
                            self.credential(info, name, "tls.key"),
                        ));
                    }
                    let ca = self.credential(info, name, "ca.crt");
                    if ca.exists() {
                        s.ca = Some(ca);
                    }
                } else if mode == "MUTUAL" {
                    match (&t.client_certificate, &t.private_key) {
                        (Some(c), Some(k)) => {
                            s.identity =
                                Some((self.read(resolve(info, c)), self.read(resolve(info, k))))
                        }
                        _ => {
                            return Err(info.error(
                                at,
                                "MUTUAL needs credentialName, or clientCertificate and privateKey",
                            ))
                        }
                    }
                }
                if let Some(ca) = &t.ca_certificates {
                    s.ca = Some(self.read(resolve(info, ca)));
                }
            }
            "ISTIO_MUTUAL" => {
                let (c, k, r) = self.identity_files(info, &format!("{at}.mode"))?;
                s.mesh = true;
                s.identity = Some((c, k));
                s.ca = Some(r);
                if s.verify == Verify::Name {
                    // Istio checks the peer's SPIFFE identity, never a DNS name, in the mesh.
                    s.verify = Verify::TrustDomain(self.identity.trust_domain.clone());
                }
            }
            other => {
                return Err(info.error(
                    &format!("{at}.mode"),
                    format!(
                    "unknown TLS mode `{other}`; expected DISABLE, SIMPLE, MUTUAL or ISTIO_MUTUAL"
                ),
                ))
            }
        }
        Ok(Some(s))
    }
}
