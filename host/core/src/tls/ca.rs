//! The built-in CA, as Citadel (istiod's CA) would issue for a workload: a self-signed root,
//! and workload certificates whose URI SAN is the SPIFFE id
//! `spiffe://TRUST_DOMAIN/ns/NS/sa/SA`, valid for both server and client auth.
//!
//! Files use Istio's names: the CA keeps `root-cert.pem` and `root-key.pem` (istio's
//! plug-in CA names `ca-cert.pem`/`ca-key.pem` are read as well); a workload gets
//! `cert-chain.pem`, `key.pem` and `root-cert.pem`, what Istio mounts at `/etc/certs`.

use super::{spiffe_id, TlsError};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    Ia5String, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file holding the CA's trust domain, beside its certificate.
const TRUST_DOMAIN_FILE: &str = "trust-domain";

fn err(what: impl std::fmt::Display) -> TlsError {
    TlsError::Ca(what.to_string())
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), TlsError> {
    std::fs::write(path, text).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    #[cfg(not(unix))]
    let _ = private;
    Ok(())
}

fn validity(params: &mut CertificateParams, ttl: Duration) {
    let now = time::OffsetDateTime::now_utc();
    // A minute of slack for clocks that disagree a little, as istiod backdates.
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::seconds(ttl.as_secs().min(i64::MAX as u64) as i64);
    params.serial_number = Some(SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
}

/// `lateen ca init`: a new root CA in `dir` (created if missing). Refuses to overwrite one.
pub fn init(dir: &Path, trust_domain: &str, ttl: Duration) -> Result<PathBuf, TlsError> {
    let cert_path = dir.join("root-cert.pem");
    if cert_path.exists() {
        return Err(err(format!(
            "{} exists already; a new root would orphan every certificate it issued",
            cert_path.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    dn.push(DnType::CommonName, "Lateen root CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, ttl);
    let cert = params.self_signed(&key).map_err(err)?;
    write(&dir.join("root-key.pem"), &key.serialize_pem(), true)?;
    write(&cert_path, &cert.pem(), false)?;
    write(&dir.join(TRUST_DOMAIN_FILE), trust_domain, false)?;
    Ok(cert_path)
}

/// What `lateen ca issue` makes a certificate for.
#[derive(Debug, Clone)]
pub struct Workload {
    pub namespace: String,
    pub service_account: String,
    /// Extra DNS SANs (a gateway's host names).
    pub dns_names: Vec<String>,
    /// Default: the CA's.
    pub trust_domain: Option<String>,
    pub ttl: Duration,
}

fn read_text(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// `lateen ca issue`: a workload certificate signed by the CA in `ca_dir`, written to
/// `out` as `cert-chain.pem`, `key.pem` and `root-cert.pem`. Returns the SPIFFE id.
pub fn issue(ca_dir: &Path, w: &Workload, out: &Path) -> Result<String, TlsError> {
    let (cert_file, key_file) = if ca_dir.join("ca-cert.pem").exists() {
        ("ca-cert.pem", "ca-key.pem")
    } else {
        ("root-cert.pem", "root-key.pem")
    };
    let ca_pem = read_text(&ca_dir.join(cert_file))?;
    let ca_key = KeyPair::from_pem(&read_text(&ca_dir.join(key_file))?)
        .map_err(|e| err(format!("{}: {e}", ca_dir.join(key_file).display())))?;
    // rcgen signs with an issuer rebuilt from the CA's own parameters and key: the same
    // subject and key identifier, so the chain verifies against the file on disk.
    let issuer = CertificateParams::from_ca_cert_pem(&ca_pem)
        .map_err(|e| err(format!("{}: {e}", ca_dir.join(cert_file).display())))?
        .self_signed(&ca_key)
        .map_err(err)?;
    let td = match &w.trust_domain {
        Some(td) => td.clone(),
        None => read_text(&ca_dir.join(TRUST_DOMAIN_FILE))
            .map(|t| t.trim().to_string())
            .unwrap_or_else(|_| "cluster.local".into()),
    };
    for (what, v) in [
        ("namespace", &w.namespace),
        ("service account", &w.service_account),
    ] {
        if v.is_empty() || v.contains('/') {
            return Err(err(format!(
                "{what} `{v}` must be non-empty and without `/`"
            )));
        }
    }
    let id = spiffe_id(&td, &w.namespace, &w.service_account);
    let mut params = CertificateParams::default();
    // Istio's workload certificates have an empty subject; the identity is the URI SAN.
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(
        Ia5String::try_from(id.clone()).map_err(|e| err(format!("{id}: {e}")))?,
    )];
    for d in &w.dns_names {
        params.subject_alt_names.push(SanType::DnsName(
            Ia5String::try_from(d.clone()).map_err(|e| err(format!("dns name {d}: {e}")))?,
        ));
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, w.ttl);
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.signed_by(&key, &issuer, &ca_key).map_err(err)?;
    std::fs::create_dir_all(out).map_err(|source| TlsError::Read {
        path: out.to_path_buf(),
        source,
    })?;
    // Written key first and chain last, so a watcher that sees the chain change finds a
    // matching key already in place.
    write(&out.join("key.pem"), &key.serialize_pem(), true)?;
    write(&out.join("root-cert.pem"), &ca_pem, false)?;
    write(&out.join("cert-chain.pem"), &cert.pem(), false)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{load_certs, load_roots, CertIdentity, KeyPair as Pair};

    #[test]
    fn issued_certificates_chain_to_the_root_and_carry_the_spiffe_id() {
        let dir = std::env::temp_dir().join(format!("lateen-ca-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = dir.join("ca");
        init(&ca, "example.org", Duration::from_secs(3600)).unwrap();
        assert!(
            init(&ca, "example.org", Duration::from_secs(3600)).is_err(),
            "no overwrite"
        );
        let out = dir.join("w");
        let id = issue(
            &ca,
            &Workload {
                namespace: "shop".into(),
                service_account: "cart".into(),
                dns_names: vec!["cart.shop.svc".into()],
                trust_domain: None,
                ttl: Duration::from_secs(600),
            },
            &out,
        )
        .unwrap();
        assert_eq!(id, "spiffe://example.org/ns/shop/sa/cart");
        let chain = load_certs(&out.join("cert-chain.pem")).unwrap();
        let ident = CertIdentity::of(&chain[0]).unwrap();
        assert_eq!(ident.principal(), Some("example.org/ns/shop/sa/cart"));
        assert_eq!(ident.dns_sans, ["cart.shop.svc"]);
        Pair::load(&out.join("cert-chain.pem"), &out.join("key.pem")).unwrap();
        // The leaf verifies against the root the workload got.
        let roots = load_roots(&out.join("root-cert.pem")).unwrap();
        let cert = rustls::server::ParsedCertificate::try_from(&chain[0]).unwrap();
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &roots,
            &[],
            rustls::pki_types::UnixTime::now(),
            crate::tls::provider().signature_verification_algorithms.all,
        )
        .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
