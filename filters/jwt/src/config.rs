//! RequestAuthentication providers and token verification, with Envoy's `jwt_authn`
//! semantics as Istio configures it:
//! - a request without a token passes (only an AuthorizationPolicy can require one);
//! - every token found must verify: its issuer must be a provider's that reads the place
//!   it was found, its signature must check against that provider's JWKS, it must be
//!   within `exp`/`nbf` (60 s of clock skew), and it must carry one of the provider's
//!   audiences when the provider lists any;
//! - any failure is a 401 with Envoy's message.
//!
//! Field names are Istio's (camelCase); the host fills in the JWKS and the fetch cluster.

use crate::jwks::Jwks;
use base64::Engine;
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Envoy's default clock skew for `exp` and `nbf`.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// The filter's configuration: every jwtRule that applies to this workload.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct JwtConfig {
    /// None when absent, as for an empty configuration (which the host checks as `{}`).
    #[serde(default)]
    pub providers: Vec<Provider>,
}

/// One `jwtRules` entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Provider {
    /// `namespace/name#index`, for logs.
    pub name: String,
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    /// The key set as JSON text, when known at config time (`jwks`, or a `file://` URI).
    #[serde(default)]
    pub jwks: Option<String>,
    /// Where to fetch the key set from (`jwksUri` over http(s)).
    #[serde(default)]
    pub remote: Option<Remote>,
    #[serde(default)]
    pub from_headers: Vec<HeaderLocation>,
    #[serde(default)]
    pub from_params: Vec<String>,
    #[serde(default)]
    pub from_cookies: Vec<String>,
    #[serde(default)]
    pub forward_original_token: bool,
    #[serde(default)]
    pub output_payload_to_header: Option<String>,
    #[serde(default)]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
}

/// A JWKS endpoint, resolved by the host to a cluster.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Remote {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout_ms: u64,
    /// How long a fetched set is used before it is fetched again.
    pub cache_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct HeaderLocation {
    pub name: String,
    #[serde(default)]
    pub prefix: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ClaimToHeader {
    pub header: String,
    pub claim: String,
}

/// Why a token was refused; the text is Envoy's, which clients and tests match on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")]
    BadFormat,
    #[error("Jwt header [alg] field is required and must be a supported algorithm")]
    BadAlgorithm,
    #[error("Jwt issuer is not configured")]
    UnknownIssuer,
    #[error("Jwks doesn't have key to match kid or alg from Jwt")]
    NoMatchingKey,
    #[error("Jwt verification fails")]
    BadSignature,
    #[error("Jwt is expired")]
    Expired,
    #[error("Jwt not yet valid")]
    NotYetValid,
    #[error("Audiences in Jwt are not allowed")]
    BadAudience,
    #[error("Jwks remote fetch is failed")]
    JwksFetchFailed,
}

/// Where a token was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Header(String),
    Param(String),
    Cookie(String),
}

/// A token and the providers that read the place it was found at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub token: String,
    pub place: Place,
    pub providers: Vec<usize>,
}

/// What the filter needs of a request to find tokens.
pub trait TokenSource {
    /// A request header by lower-case name.
    fn header(&self, name: &str) -> Option<&str>;
    /// The `:path`, with its query.
    fn path(&self) -> &str {
        self.header(":path").unwrap_or("/")
    }
}

impl TokenSource for [(String, String)] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Provider {
    /// Istio's default when a rule names no place: `Authorization: Bearer` and the
    /// `access_token` query parameter.
    fn places(&self) -> (Vec<HeaderLocation>, Vec<String>) {
        if self.from_headers.is_empty()
            && self.from_params.is_empty()
            && self.from_cookies.is_empty()
        {
            (
                vec![HeaderLocation {
                    name: "authorization".into(),
                    prefix: "Bearer ".into(),
                }],
                vec!["access_token".into()],
            )
        } else {
            (self.from_headers.clone(), self.from_params.clone())
        }
    }
}

fn query_param<'a>(path: &'a str, name: &str) -> Option<&'a str> {
    let (_, query) = path.split_once('?')?;
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

impl JwtConfig {
    /// Every distinct token in the places the providers read, in provider order.
    pub fn find_tokens<R: TokenSource + ?Sized>(&self, req: &R) -> Vec<Found> {
        let mut found: Vec<Found> = Vec::new();
        let mut add = |token: &str, place: Place, provider: usize| {
            let token = token.trim();
            if token.is_empty() {
                return;
            }
            match found
                .iter_mut()
                .find(|f| f.token == token && f.place == place)
            {
                Some(f) if !f.providers.contains(&provider) => f.providers.push(provider),
                Some(_) => {}
                None => found.push(Found {
                    token: token.to_string(),
                    place,
                    providers: vec![provider],
                }),
            }
        };
        for (i, p) in self.providers.iter().enumerate() {
            let (headers, params) = p.places();
            for h in &headers {
                let name = h.name.to_ascii_lowercase();
                let Some(v) = req.header(&name) else { continue };
                // Envoy compares the `Bearer ` prefix without regard to case.
                let rest = if h.prefix.is_empty() {
                    Some(v)
                } else if v.len() >= h.prefix.len()
                    && v.is_char_boundary(h.prefix.len())
                    && v[..h.prefix.len()].eq_ignore_ascii_case(&h.prefix)
                {
                    Some(&v[h.prefix.len()..])
                } else {
                    None
                };
                if let Some(t) = rest {
                    add(t, Place::Header(name), i);
                }
            }
            for name in &params {
                if let Some(t) = query_param(req.path(), name) {
                    add(t, Place::Param(name.clone()), i);
                }
            }
            if let Some(c) = req.header("cookie") {
                for name in &p.from_cookies {
                    if let Some(t) = cookie(c, name) {
                        add(t, Place::Cookie(name.clone()), i);
                    }
                }
            }
        }
        found
    }

    /// The provider among `candidates` whose issuer signed `token` (read without checking
    /// the signature: only to pick the key set).
    pub fn provider_for(&self, token: &str, candidates: &[usize]) -> Result<usize, JwtError> {
        let payload = Unverified::parse(token)?.payload;
        let iss = payload.get("iss").and_then(Value::as_str).unwrap_or("");
        candidates
            .iter()
            .copied()
            .find(|&i| self.providers.get(i).is_some_and(|p| p.issuer == iss))
            .ok_or(JwtError::UnknownIssuer)
    }
}

/// A token split and decoded, not yet trusted.
pub struct Unverified {
    pub payload: Value,
    /// The payload segment as it appeared (base64url), for `outputPayloadToHeader`.
    pub payload_b64: String,
}

impl Unverified {
    pub fn parse(token: &str) -> Result<Unverified, JwtError> {
        let mut parts = token.split('.');
        let (Some(_), Some(payload), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::BadFormat);
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|_| JwtError::BadFormat)?;
        let payload: Value = serde_json::from_slice(&bytes).map_err(|_| JwtError::BadFormat)?;
        if !payload.is_object() {
            return Err(JwtError::BadFormat);
        }
        Ok(Unverified {
            payload,
            payload_b64: parts_payload(token).to_string(),
        })
    }
}

fn parts_payload(token: &str) -> &str {
    token.split('.').nth(1).unwrap_or("")
}

/// A token that verified.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub payload: Value,
    pub payload_b64: String,
    /// `iss/sub`, Istio's request principal.
    pub principal: String,
}

fn time_claim(payload: &Value, name: &str) -> Option<u64> {
    payload
        .get(name)
        .and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f.max(0.0) as u64)))
}

/// Checks `token` against a provider and its key set at `now` (seconds since the epoch).
pub fn verify(
    provider: &Provider,
    jwks: &Jwks,
    token: &str,
    now: u64,
) -> Result<Verified, JwtError> {
    let unverified = Unverified::parse(token)?;
    let header = jsonwebtoken::decode_header(token).map_err(|_| {
        // Tell an unsupported `alg` (`none`, say) apart from a malformed header.
        let alg = token
            .split('.')
            .next()
            .and_then(|h| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(h)
                    .ok()
            })
            .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
            .map(|h| h.get("alg").cloned());
        match alg {
            Some(_) => JwtError::BadAlgorithm,
            None => JwtError::BadFormat,
        }
    })?;
    let mut validation = Validation::new(header.alg);
    // Time, issuer and audience are checked below with the host's clock and Istio's rules.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation.algorithms = vec![header.alg];
    let mut tried = false;
    let mut verified = false;
    for key in jwks.candidates(header.kid.as_deref()) {
        tried = true;
        if alg_fits(header.alg, key.key.family())
            && jsonwebtoken::decode::<Value>(token, &key.key, &validation).is_ok()
        {
            verified = true;
            break;
        }
    }
    if !tried {
        return Err(JwtError::NoMatchingKey);
    }
    if !verified {
        return Err(JwtError::BadSignature);
    }
    let payload = unverified.payload;
    if payload.get("iss").and_then(Value::as_str) != Some(provider.issuer.as_str()) {
        return Err(JwtError::UnknownIssuer);
    }
    if let Some(exp) = time_claim(&payload, "exp") {
        if now > exp.saturating_add(CLOCK_SKEW_SECS) {
            return Err(JwtError::Expired);
        }
    }
    if let Some(nbf) = time_claim(&payload, "nbf") {
        if now.saturating_add(CLOCK_SKEW_SECS) < nbf {
            return Err(JwtError::NotYetValid);
        }
    }
    if !provider.audiences.is_empty() {
        let auds = lateen_sdk::claims::values(&payload, &["aud"]);
        if !auds.iter().any(|a| provider.audiences.contains(a)) {
            return Err(JwtError::BadAudience);
        }
    }
    let sub = payload.get("sub").and_then(Value::as_str).unwrap_or("");
    Ok(Verified {
        principal: format!("{}/{sub}", provider.issuer),
        payload,
        payload_b64: unverified.payload_b64,
    })
}

fn alg_fits(alg: Algorithm, family: jsonwebtoken::AlgorithmFamily) -> bool {
    family.algorithms().contains(&alg)
}

/// The value `outputClaimToHeaders` writes for a claim: strings as they are, lists joined
/// by commas, numbers and booleans as JSON text; `None` when the claim is absent or an
/// object (Envoy writes nothing then).
pub fn claim_header_value(payload: &Value, claim: &str) -> Option<String> {
    let path: Vec<&str> = claim.split('.').collect();
    let values = lateen_sdk::claims::values(payload, &path);
    (!values.is_empty()).then(|| values.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;

    struct Signer {
        key: EncodingKey,
        alg: Algorithm,
        kid: Option<String>,
    }

    impl Signer {
        fn es256(kid: &str) -> Signer {
            let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            Signer {
                key: EncodingKey::from_ec_der(&kp.serialize_der()),
                alg: Algorithm::ES256,
                kid: Some(kid.into()),
            }
        }

        fn hs256(secret: &[u8]) -> Signer {
            Signer {
                key: EncodingKey::from_secret(secret).unwrap(),
                alg: Algorithm::HS256,
                kid: None,
            }
        }

        fn jwk(&self) -> Jwk {
            let mut j = Jwk::from_encoding_key(&self.key, self.alg).unwrap();
            j.common.key_id = self.kid.clone();
            j
        }

        fn sign(&self, claims: Value) -> String {
            let mut h = Header::new(self.alg);
            h.kid = self.kid.clone();
            encode(&h, &claims, &self.key).unwrap()
        }
    }

    fn jwks(signers: &[&Signer]) -> Jwks {
        let set = JwkSet {
            keys: signers.iter().map(|s| s.jwk()).collect(),
        };
        Jwks::parse(serde_json::to_string(&set).unwrap().as_bytes()).unwrap()
    }

    fn provider(issuer: &str) -> Provider {
        Provider {
            name: "t".into(),
            issuer: issuer.into(),
            ..Default::default()
        }
    }

    fn claims(extra: Value) -> Value {
        let mut c = json!({"iss": "https://issuer.test", "sub": "alice", "exp": NOW + 600});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    }

    #[test]
    fn a_good_token_verifies_and_names_its_principal() {
        let s = Signer::es256("k1");
        let set = jwks(&[&s]);
        let token = s.sign(claims(json!({"groups": ["dev"]})));
        let v = verify(&provider("https://issuer.test"), &set, &token, NOW).unwrap();
        assert_eq!(v.principal, "https://issuer.test/alice");
        assert_eq!(v.payload["groups"], json!(["dev"]));
        assert_eq!(v.payload_b64, token.split('.').nth(1).unwrap());
    }

    #[test]
    fn tampering_expiry_audience_and_keys_are_refused() {
        let s = Signer::es256("k1");
        let other = Signer::es256("k1");
        let set = jwks(&[&s]);
        let p = provider("https://issuer.test");
        // Signed by another key with the same kid.
        let forged = other.sign(claims(json!({})));
        assert_eq!(verify(&p, &set, &forged, NOW), Err(JwtError::BadSignature));
        // A payload swapped under a valid signature.
        let good = s.sign(claims(json!({})));
        let evil = s.sign(claims(json!({"sub": "root"})));
        let mut parts: Vec<&str> = good.split('.').collect();
        parts[1] = evil.split('.').nth(1).unwrap();
        assert_eq!(
            verify(&p, &set, &parts.join("."), NOW),
            Err(JwtError::BadSignature)
        );
        // Expired beyond the 60 s skew, but not within it.
        let old = s.sign(claims(json!({"exp": NOW - 61})));
        assert_eq!(verify(&p, &set, &old, NOW), Err(JwtError::Expired));
        let just = s.sign(claims(json!({"exp": NOW - 59})));
        assert!(verify(&p, &set, &just, NOW).is_ok());
        let early = s.sign(claims(json!({"nbf": NOW + 120})));
        assert_eq!(verify(&p, &set, &early, NOW), Err(JwtError::NotYetValid));
        // An unknown kid.
        let stranger = Signer::es256("k2").sign(claims(json!({})));
        assert_eq!(
            verify(&p, &set, &stranger, NOW),
            Err(JwtError::NoMatchingKey)
        );
        // Audiences: one of the provider's must be present.
        let mut pa = p.clone();
        pa.audiences = vec!["shop".into()];
        assert_eq!(verify(&pa, &set, &good, NOW), Err(JwtError::BadAudience));
        let aud = s.sign(claims(json!({"aud": ["x", "shop"]})));
        assert!(verify(&pa, &set, &aud, NOW).is_ok());
        // Not a JWT at all.
        assert_eq!(verify(&p, &set, "abc.def", NOW), Err(JwtError::BadFormat));
    }

    #[test]
    fn an_hmac_token_cannot_use_a_public_key_as_its_secret() {
        // The classic confusion attack: HS256 signed with the bytes of a public key.
        let s = Signer::es256("k1");
        let set = jwks(&[&s]);
        let forger = Signer {
            kid: Some("k1".into()),
            ..Signer::hs256(b"whatever the attacker knows")
        };
        let t = forger.sign(claims(json!({})));
        assert_eq!(
            verify(&provider("https://issuer.test"), &set, &t, NOW),
            Err(JwtError::BadSignature)
        );
        // And `alg: none` is not an algorithm.
        let none = format!(
            "{}.{}.",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims(json!({})).to_string())
        );
        assert_eq!(
            verify(&provider("https://issuer.test"), &set, &none, NOW),
            Err(JwtError::BadAlgorithm)
        );
    }

    #[test]
    fn tokens_are_found_where_each_provider_looks() {
        let mut custom = provider("b");
        custom.from_headers = vec![HeaderLocation {
            name: "X-Jwt".into(),
            prefix: String::new(),
        }];
        custom.from_cookies = vec!["session".into()];
        let cfg = JwtConfig {
            providers: vec![provider("a"), custom],
        };
        let req: Vec<(String, String)> = [
            ("authorization", "bearer t1"),
            (":path", "/x?y=1&access_token=t2"),
            ("x-jwt", "t3"),
            ("cookie", "a=b; session=t4"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let found = cfg.find_tokens(req.as_slice());
        let got: Vec<(&str, &Place, &[usize])> = found
            .iter()
            .map(|f| (f.token.as_str(), &f.place, f.providers.as_slice()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("t1", &Place::Header("authorization".into()), &[0][..]),
                ("t2", &Place::Param("access_token".into()), &[0][..]),
                ("t3", &Place::Header("x-jwt".into()), &[1][..]),
                ("t4", &Place::Cookie("session".into()), &[1][..]),
            ]
        );
        // A token's issuer picks the provider among those that read its place.
        let s = Signer::hs256(b"k");
        let t = s.sign(json!({"iss": "b"}));
        assert_eq!(cfg.provider_for(&t, &[0, 1]), Ok(1));
        assert_eq!(cfg.provider_for(&t, &[0]), Err(JwtError::UnknownIssuer));
    }

    #[test]
    fn a_key_set_skips_keys_it_cannot_use() {
        let s = Signer::es256("good");
        let text = json!({"keys": [
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            {"kty": "weird", "kid": "w"},
            serde_json::to_value(s.jwk()).unwrap(),
        ]})
        .to_string();
        let set = Jwks::parse(text.as_bytes()).unwrap();
        assert_eq!(set.keys.len(), 1);
        assert!(verify(
            &provider("https://issuer.test"),
            &set,
            &s.sign(claims(json!({}))),
            NOW
        )
        .is_ok());
        assert!(matches!(
            Jwks::parse(br#"{"keys": []}"#),
            Err(crate::jwks::JwksError::NoUsableKey(_))
        ));
        assert_eq!(
            Jwks::parse(b"{}").unwrap_err(),
            crate::jwks::JwksError::NoKeys
        );
    }

    #[test]
    fn claims_become_header_values() {
        let p = json!({"groups": ["a", "b"], "org": {"id": 7}, "ok": true});
        assert_eq!(claim_header_value(&p, "groups").as_deref(), Some("a,b"));
        assert_eq!(claim_header_value(&p, "org.id").as_deref(), Some("7"));
        assert_eq!(claim_header_value(&p, "ok").as_deref(), Some("true"));
        assert_eq!(claim_header_value(&p, "org"), None);
    }
}
