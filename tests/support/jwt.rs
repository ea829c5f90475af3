//! Token issuers for the JWT tests: an RSA key made by the real `openssl` (RS256), or an
//! ECDSA P-256 key made by rcgen (ES256), each with its public JWKS.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// Signs tokens as one issuer with one key.
pub struct Issuer {
    pub iss: String,
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Issuer {
    /// An RS256 issuer whose 2048-bit key `openssl genrsa` made.
    pub fn rsa(iss: &str, kid: &str) -> Issuer {
        let dir = tempfile::tempdir().expect("tempdir");
        let pem = dir.path().join("key.pem");
        let der = dir.path().join("key.der");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .output()
                .expect("openssl (apt-get install openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["genrsa", "-out", pem.to_str().unwrap(), "2048"]);
        // PKCS#1 DER, which jsonwebtoken's RustCrypto backend reads.
        run(&[
            "rsa",
            "-in",
            pem.to_str().unwrap(),
            "-traditional",
            "-outform",
            "DER",
            "-out",
            der.to_str().unwrap(),
        ]);
        let der = std::fs::read(der).expect("read key");
        Issuer {
            iss: iss.into(),
            kid: kid.into(),
            alg: Algorithm::RS256,
            key: EncodingKey::from_rsa_der(&der),
        }
    }

    /// An ES256 issuer with a fresh P-256 key.
    pub fn ec(iss: &str, kid: &str) -> Issuer {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen");
        Issuer {
            iss: iss.into(),
            kid: kid.into(),
            alg: Algorithm::ES256,
            key: EncodingKey::from_ec_der(&kp.serialize_der()),
        }
    }

    /// This issuer's public key as a JWK.
    pub fn jwk(&self) -> Jwk {
        let mut j = Jwk::from_encoding_key(&self.key, self.alg).expect("public key");
        j.common.key_id = Some(self.kid.clone());
        j
    }

    /// `{"keys": [...]}` with the public keys of `issuers`.
    pub fn jwks(issuers: &[&Issuer]) -> String {
        serde_json::to_string(&JwkSet {
            keys: issuers.iter().map(|i| i.jwk()).collect(),
        })
        .expect("jwks")
    }

    /// A token for `sub` valid for an hour, with `extra` claims merged in (they win).
    pub fn token(&self, sub: &str, extra: Value) -> String {
        let mut claims = serde_json::json!({
            "iss": self.iss, "sub": sub, "iat": now(), "exp": now() + 3600,
        });
        if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, &claims, &self.key).expect("sign")
    }
}
