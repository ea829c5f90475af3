//! Checks a filter's checked-in config schema (`schema.json`, shipped in the module with
//! `lateen_sdk::config_schema!`): that it is what the config types generate, that the
//! configs the filter takes pass it, and that it refuses what the filter refuses.
//!
//! ```no_run
//! use lateen_harness::SchemaCheck;
//! use serde_json::{json, Value};
//!
//! // In a filter: serde_json::to_value(schemars::schema_for!(Config)).
//! let generated = json!({"type": "object", "properties": {"header": {"type": "string"}}});
//! let check = SchemaCheck::new(
//!     concat!(env!("CARGO_MANIFEST_DIR"), "/schema.json"),
//!     env!("CARGO_PKG_NAME"),
//!     generated,
//! );
//! // In a filter: lateen_sdk::config::parse::<Config>, serialised back.
//! let parse = |v: &Value| -> Result<Value, String> {
//!     match v.get("header") {
//!         Some(h) if !h.is_string() => Err("header: expected a string".into()),
//!         _ => Ok(v.clone()),
//!     }
//! };
//! check.is_generated();
//! check.accepts(&[json!({"header": "x-a"})], parse, json!({}));
//! check.refuses(&json!({"header": 7}), parse);
//! ```

use serde_json::{json, Value};

/// The environment variable that makes [`SchemaCheck::is_generated`] rewrite the file.
pub const UPDATE_VAR: &str = "LATEEN_UPDATE_SCHEMAS";

/// One filter's schema file and the schema its config types generate now.
pub struct SchemaCheck {
    path: String,
    package: String,
    generated: String,
}

impl SchemaCheck {
    pub fn new(path: &str, package: &str, generated: Value) -> Self {
        let generated = serde_json::to_string_pretty(&generated).unwrap_or_default() + "\n";
        SchemaCheck {
            path: path.into(),
            package: package.into(),
            generated,
        }
    }

    fn updating() -> bool {
        std::env::var(UPDATE_VAR).as_deref() == Ok("1")
    }

    fn rerun(&self) -> String {
        format!(
            "rerun with {UPDATE_VAR}=1 to rewrite it: \
             {UPDATE_VAR}=1 cargo test -p {} --features schema --test schema",
            self.package
        )
    }

    /// Panics unless the file holds the generated schema; with `LATEEN_UPDATE_SCHEMAS=1`
    /// it writes it instead.
    pub fn is_generated(&self) {
        if Self::updating() {
            if let Err(e) = std::fs::write(&self.path, &self.generated) {
                panic!("{}: {e}", self.path);
            }
            return;
        }
        // Compared as JSON values: key order depends on serde_json's features.
        let as_value = |t: &str| serde_json::from_str::<Value>(t).ok();
        let checked_in = std::fs::read_to_string(&self.path).unwrap_or_default();
        assert!(
            as_value(&checked_in).is_some() && as_value(&checked_in) == as_value(&self.generated),
            "{} is not what the config types generate; {}",
            self.path,
            self.rerun()
        );
    }

    // The checked-in schema (while updating, the one being written), as the host compiles it.
    fn validator(&self) -> jsonschema::Validator {
        let text = if Self::updating() {
            self.generated.clone()
        } else {
            std::fs::read_to_string(&self.path)
                .unwrap_or_else(|e| panic!("{}: {e}; {}", self.path, self.rerun()))
        };
        let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
        jsonschema::validator_for(&schema).expect("the schema is a JSON Schema")
    }

    fn errors(v: &jsonschema::Validator, config: &Value) -> Vec<String> {
        v.iter_errors(config)
            .map(|e| format!("at `{}`: {e}", e.instance_path()))
            .collect()
    }

    /// Panics unless every config passes the schema, the filter's `parse` takes it, and
    /// what it parses to (what the host serialises) passes too; `{}` (an absent config)
    /// and `default` must pass as well.
    pub fn accepts(
        &self,
        configs: &[Value],
        parse: impl Fn(&Value) -> Result<Value, String>,
        default: Value,
    ) {
        let v = self.validator();
        for config in configs {
            assert_eq!(Self::errors(&v, config), Vec::<String>::new(), "{config:#}");
            let parsed = parse(config).unwrap_or_else(|e| panic!("{e}: {config:#}"));
            assert_eq!(
                Self::errors(&v, &parsed),
                Vec::<String>::new(),
                "{parsed:#}"
            );
        }
        let empty = json!({});
        assert_eq!(Self::errors(&v, &empty), Vec::<String>::new());
        parse(&empty).expect("`{}` is the default configuration");
        assert_eq!(
            Self::errors(&v, &default),
            Vec::<String>::new(),
            "{default:#}"
        );
    }

    /// Panics unless both the schema and the filter's `parse` refuse `config`.
    pub fn refuses(&self, config: &Value, parse: impl Fn(&Value) -> Result<Value, String>) {
        assert!(
            !self.validator().is_valid(config),
            "the schema accepts {config:#}"
        );
        assert!(parse(config).is_err(), "the filter accepts {config:#}");
    }
}

/// The three schema tests of a filter crate whose config type is `$config` (it derives
/// `schemars::JsonSchema`, `serde::Serialize`, `serde::Deserialize` and `Default`). The
/// calling file defines `fn valid() -> Vec<serde_json::Value>`, configs the filter takes,
/// and `fn invalid() -> serde_json::Value`, one it refuses; the crate depends on
/// `schemars`, `lateen-sdk` and `serde_json`.
///
/// ```ignore
/// use lateen_fault::config::FaultConfig;
/// fn valid() -> Vec<serde_json::Value> { vec![serde_json::json!({"routes": {}})] }
/// fn invalid() -> serde_json::Value { serde_json::json!({"routez": {}}) }
/// lateen_harness::schema_tests!(FaultConfig);
/// ```
#[macro_export]
macro_rules! schema_tests {
    ($config:ty) => {
        fn check() -> $crate::SchemaCheck {
            let generated = serde_json::to_value(schemars::schema_for!($config)).unwrap();
            $crate::SchemaCheck::new(
                concat!(env!("CARGO_MANIFEST_DIR"), "/schema.json"),
                env!("CARGO_PKG_NAME"),
                generated,
            )
        }

        /// The filter's own parser; the config it serialises back is what the host sends.
        fn parse(config: &serde_json::Value) -> Result<serde_json::Value, String> {
            let c: $config = lateen_sdk::config::parse(config.to_string().as_bytes())
                .map_err(|e| e.to_string())?;
            serde_json::to_value(c).map_err(|e| e.to_string())
        }

        #[test]
        fn schema_json_is_generated_from_the_config_types() {
            check().is_generated();
        }

        #[test]
        fn realistic_configs_pass_the_schema() {
            let default = serde_json::to_value(<$config>::default()).unwrap();
            check().accepts(&valid(), parse, default);
        }

        #[test]
        fn an_invalid_config_fails_the_schema_as_it_fails_the_filter() {
            check().refuses(&invalid(), parse);
        }
    };
}
