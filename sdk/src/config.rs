//! Typed plugin configuration.
//!
//! The host hands a plugin its `pluginConfig` as JSON bytes. [`parse`] turns them into the
//! filter's own serde type and, on failure, names the field that was wrong (the generated
//! JSON's line/column would mean nothing to an operator; the field path does), so that
//! `on_configure` can log it and return `false` — the host then keeps the previous config.

use serde::de::DeserializeOwned;

/// Why a plugin configuration was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Path of the offending field (`routes[2].match[0].uri`); `.` for the root.
    pub path: String,
    /// What was wrong there.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid plugin configuration at `{}`: {}",
            self.path, self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// Parses a plugin configuration into the filter's own type.
///
/// ```
/// #[derive(Debug, serde::Deserialize)]
/// struct Cfg { header: String }
/// let cfg: Cfg = lateen_sdk::config::parse(br#"{"header":"x-a"}"#).unwrap();
/// assert_eq!(cfg.header, "x-a");
/// let err = lateen_sdk::config::parse::<Cfg>(br#"{"header":1}"#).unwrap_err();
/// assert_eq!(err.path, "header");
/// ```
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| ConfigError {
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

/// Like [`parse`], but an empty configuration yields `T::default()`.
///
/// ```
/// #[derive(serde::Deserialize, Default)]
/// struct Cfg { #[serde(default)] n: u32 }
/// let cfg: Cfg = lateen_sdk::config::parse_or_default(b"").unwrap();
/// assert_eq!(cfg.n, 0);
/// ```
pub fn parse_or_default<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ConfigError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse(bytes)
}
