//! Typed plugin configuration.
//!
//! The host hands a plugin its `pluginConfig` as JSON bytes. [`parse`] turns them into the
//! filter's own serde type and, on failure, names the field that was wrong (the generated
//! JSON's line/column would mean nothing to an operator; the field path does), so that
//! `on_configure` can log it and return `false` — the host then keeps the previous config.
//!
//! ```rust
//! #[derive(Debug, serde::Deserialize)]
//! struct Cfg {
//!     routes: Vec<Route>,
//! }
//! #[derive(Debug, serde::Deserialize)]
//! struct Route {
//!     prefix: String,
//! }
//!
//! let cfg: Cfg = lateen_sdk::config::parse(br#"{"routes": [{"prefix": "/a"}]}"#).unwrap();
//! assert_eq!(cfg.routes[0].prefix, "/a");
//!
//! let err = lateen_sdk::config::parse::<Cfg>(br#"{"routes": [{"prefix": "/a"}, {"prefix": 7}]}"#)
//!     .unwrap_err();
//! assert_eq!(err.path, "routes[1].prefix");
//! ```
//!
//! In a filter's root context:
//!
//! ```no_run
//! use lateen_sdk::proxy_wasm::traits::{Context, RootContext};
//! use lateen_sdk::proxy_wasm::types::LogLevel;
//!
//! #[derive(Default, serde::Deserialize)]
//! struct Cfg {
//!     #[serde(default)]
//!     header: String,
//! }
//!
//! struct Root {
//!     cfg: Cfg,
//! }
//!
//! impl Context for Root {}
//!
//! impl RootContext for Root {
//!     fn on_configure(&mut self, _size: usize) -> bool {
//!         let bytes = self.get_plugin_configuration().unwrap_or_default();
//!         match lateen_sdk::config::parse_or_default::<Cfg>(&bytes) {
//!             Ok(cfg) => {
//!                 self.cfg = cfg;
//!                 true
//!             }
//!             Err(e) => {
//!                 let _ = lateen_sdk::proxy_wasm::hostcalls::log(LogLevel::Warn, &e.to_string());
//!                 false // the host keeps the previous configuration
//!             }
//!         }
//!     }
//! }
//! let mut root = Root { cfg: Cfg::default() };
//! assert!(root.on_configure(0));
//! ```

use serde::de::DeserializeOwned;

/// Why a plugin configuration was rejected. Its `Display` is the line to log.
///
/// ```rust
/// let err = lateen_sdk::config::parse::<Vec<u32>>(br#"[1, "x"]"#).unwrap_err();
/// assert_eq!(err.path, "[1]");
/// assert!(err.to_string().starts_with("invalid plugin configuration at `[1]`: "));
/// ```
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

/// Like [`parse`], but an empty (or all-whitespace) configuration yields `T::default()`.
///
/// ```
/// #[derive(serde::Deserialize, Default)]
/// struct Cfg { #[serde(default)] n: u32 }
/// let cfg: Cfg = lateen_sdk::config::parse_or_default(b"").unwrap();
/// assert_eq!(cfg.n, 0);
/// let cfg: Cfg = lateen_sdk::config::parse_or_default(b" \n").unwrap();
/// assert_eq!(cfg.n, 0);
/// let cfg: Cfg = lateen_sdk::config::parse_or_default(br#"{"n": 3}"#).unwrap();
/// assert_eq!(cfg.n, 3);
/// ```
pub fn parse_or_default<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ConfigError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse(bytes)
}

/// The name of the custom section that carries a filter's configuration schema.
///
/// ```rust
/// assert_eq!(lateen_sdk::config::SCHEMA_SECTION, "lateen.config_schema");
/// ```
pub const SCHEMA_SECTION: &str = "lateen.config_schema";

/// Ships a JSON Schema (draft 2020-12, 7 or 4) for the filter's `pluginConfig` inside the
/// `.wasm`, as a custom section named [`SCHEMA_SECTION`]. Lateen checks every
/// configuration against it when the config is loaded, and refuses one that violates it
/// with the file, line and field, so a bad config never reaches `on_configure` or a
/// request. Other proxy-wasm hosts ignore the section.
///
/// The path is relative to the file that calls the macro, as for `include_bytes!`:
///
/// ```ignore
/// lateen_sdk::config_schema!("../schema.json");
/// ```
///
/// A module without the section can have its schema in a file beside it instead:
/// `NAME.schema.json` next to `NAME.wasm`.
#[macro_export]
macro_rules! config_schema {
    ($path:literal) => {
        // `#[used]` keeps the section although nothing reads the static; the section
        // only exists in wasm builds (a native test build has nothing to carry it).
        #[cfg(target_family = "wasm")]
        #[used]
        #[link_section = "lateen.config_schema"]
        static LATEEN_CONFIG_SCHEMA: [u8; include_bytes!($path).len()] = *include_bytes!($path);
    };
}
