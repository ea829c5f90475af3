//! A JSON Web Key Set, parsed once per fetch. Keys this filter cannot use (an unknown key
//! type, a malformed modulus) are skipped one by one, as Envoy does, so one odd key in a
//! provider's set does not disable the others.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::DecodingKey;

/// One usable key.
pub struct Key {
    pub kid: Option<String>,
    pub key: DecodingKey,
}

/// The usable keys of a set.
#[derive(Default)]
pub struct Jwks {
    pub keys: Vec<Key>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self.keys.iter().map(|k| k.kid.as_deref()).collect();
        f.debug_struct("Jwks").field("kids", &kids).finish()
    }
}

/// Why a key set could not be used at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("JWKS is not JSON: {0}")]
    NotJson(String),
    #[error("JWKS has no `keys` list")]
    NoKeys,
    #[error("JWKS has no usable key ({0})")]
    NoUsableKey(String),
}

impl Jwks {
    /// Parses `{"keys": [...]}`; fails only when no key at all is usable.
    pub fn parse(text: &[u8]) -> Result<Jwks, JwksError> {
        let v: serde_json::Value =
            serde_json::from_slice(text).map_err(|e| JwksError::NotJson(e.to_string()))?;
        let list = v
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or(JwksError::NoKeys)?;
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (i, raw) in list.iter().enumerate() {
            let parsed = serde_json::from_value::<Jwk>(raw.clone())
                .map_err(|e| e.to_string())
                .and_then(|jwk| {
                    DecodingKey::from_jwk(&jwk)
                        .map(|key| Key {
                            kid: jwk.common.key_id.clone(),
                            key,
                        })
                        .map_err(|e| e.to_string())
                });
            match parsed {
                Ok(k) => keys.push(k),
                Err(e) => skipped.push(format!("keys[{i}]: {e}")),
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey(if skipped.is_empty() {
                "the list is empty".into()
            } else {
                skipped.join("; ")
            }));
        }
        Ok(Jwks { keys })
    }

    /// The keys to try for a token: those with its `kid` when it names one, else all.
    pub fn candidates<'a>(&'a self, kid: Option<&'a str>) -> impl Iterator<Item = &'a Key> {
        self.keys
            .iter()
            .filter(move |k| kid.is_none() || k.kid.as_deref() == kid)
    }
}
