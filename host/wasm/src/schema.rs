//! Plugin configuration schemas. A filter ships a JSON Schema for its `pluginConfig` in
//! the `lateen.config_schema` custom section of its module (`lateen_sdk::config_schema!`),
//! or as `NAME.schema.json` beside `NAME.wasm`. Every configuration is checked against it
//! when the config loads, so a violation is refused with its field and line and never
//! reaches a request.

use jsonschema::paths::LocationSegment;
use serde_json::Value;
use std::path::Path;

/// The custom section's name (`lateen_sdk::config::SCHEMA_SECTION`).
pub const SECTION: &str = "lateen.config_schema";

/// A compiled schema and where it came from.
pub struct ConfigSchema {
    validator: jsonschema::Validator,
    /// `custom section` or the schema file's path, for messages.
    pub source: String,
}

impl std::fmt::Debug for ConfigSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigSchema")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// One violation: the field below the configuration's root (`.routes[0].prefix`, empty
/// for the root) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub message: String,
}

/// The schema of a module: its custom section, else a `.schema.json` file beside
/// `module_path` (a local module). `Ok(None)`: the plugin ships none.
pub fn find(bytes: &[u8], module_path: Option<&Path>) -> Result<Option<ConfigSchema>, String> {
    if let Some(data) = section(bytes) {
        return compile(&data, "the module's lateen.config_schema section").map(Some);
    }
    let Some(path) = module_path.map(|p| p.with_extension("schema.json")) else {
        return Ok(None);
    };
    match std::fs::read(&path) {
        Ok(data) => compile(&data, &path.display().to_string()).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

// The first `lateen.config_schema` custom section, in a module or in any module nested in a
// component.
fn section(bytes: &[u8]) -> Option<Vec<u8>> {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        // A malformed module is reported by the compiler with a better message.
        let Ok(payload) = payload else { return None };
        if let wasmparser::Payload::CustomSection(reader) = payload {
            if reader.name() == SECTION {
                return Some(reader.data().to_vec());
            }
        }
    }
    None
}

fn compile(data: &[u8], source: &str) -> Result<ConfigSchema, String> {
    let value: Value = serde_json::from_slice(data)
        .map_err(|e| format!("config schema in {source} is not JSON: {e}"))?;
    let validator = jsonschema::validator_for(&value)
        .map_err(|e| format!("config schema in {source} is not a valid JSON Schema: {e}"))?;
    Ok(ConfigSchema {
        validator,
        source: source.to_string(),
    })
}

impl ConfigSchema {
    /// The configuration's violations, in document order (empty: valid). An absent
    /// configuration is checked as `{}`, which is what a filter parses.
    pub fn check(&self, config: Option<&Value>) -> Vec<Violation> {
        let empty = Value::Object(Default::default());
        let config = config.unwrap_or(&empty);
        self.validator
            .iter_errors(config)
            .map(|e| violation(&e))
            .collect()
    }
}

// An error as a violation. `anyOf`/`oneOf` (how an optional or tagged field is described)
// says only that no branch fits; the branch that got furthest says what is wrong.
fn violation(e: &jsonschema::ValidationError<'_>) -> Violation {
    use jsonschema::error::ValidationErrorKind as K;
    let branches = match e.kind() {
        K::AnyOf { context } | K::OneOfNotValid { context } => Some(context),
        _ => None,
    };
    let deepest = branches.and_then(|bs| {
        bs.iter().flatten().max_by_key(|b| {
            let depth = b.instance_path().iter().count();
            (depth, !matches!(b.kind(), K::Type { .. }))
        })
    });
    match deepest {
        Some(b)
            if b.instance_path().iter().count() > e.instance_path().iter().count()
                || !matches!(b.kind(), K::Type { .. }) =>
        {
            violation(b)
        }
        _ => Violation {
            field: field_path(e.instance_path().iter()),
            message: e.masked().to_string(),
        },
    }
}

// `/routes/0/prefix` as `.routes[0].prefix`, the way config errors name fields.
fn field_path<'a>(segments: impl Iterator<Item = LocationSegment<'a>>) -> String {
    let mut out = String::new();
    for s in segments {
        match s {
            LocationSegment::Property(p) => {
                out.push('.');
                out.push_str(&p);
            }
            LocationSegment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> ConfigSchema {
        let s = json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["value"],
            "properties": {
                "value": {"type": "string"},
                "routes": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"prefix": {"type": "string", "pattern": "^/"}}
                }}
            }
        });
        compile(s.to_string().as_bytes(), "test").unwrap()
    }

    #[test]
    fn violations_name_the_field() {
        let s = schema();
        assert!(s.check(Some(&json!({"value": "a"}))).is_empty());
        let v = s.check(Some(
            &json!({"value": "a", "routes": [{"prefix": "/"}, {"prefix": "x"}]}),
        ));
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].field, ".routes[1].prefix");
        let v = s.check(Some(&json!({"value": 7})));
        assert_eq!(v[0].field, ".value");
        // An absent config is `{}`: the required field is missing at the root.
        let v = s.check(None);
        assert_eq!(v[0].field, "");
        assert!(v[0].message.contains("value"), "{}", v[0].message);
    }

    #[test]
    fn an_optional_field_names_what_is_wrong_inside_it() {
        // How schemars describes an `Option<Struct>`.
        let s = json!({"type": "object", "properties": {"abort": {"anyOf": [
            {"type": "object", "additionalProperties": false,
             "properties": {"status": {"type": "integer"}}},
            {"type": "null"}
        ]}}});
        let s = compile(s.to_string().as_bytes(), "test").unwrap();
        let v = s.check(Some(&json!({"abort": {"statuss": 503}})));
        assert_eq!(v[0].field, ".abort");
        assert!(v[0].message.contains("statuss"), "{}", v[0].message);
        let v = s.check(Some(&json!({"abort": {"status": "x"}})));
        assert_eq!(v[0].field, ".abort.status");
        assert!(s.check(Some(&json!({"abort": null}))).is_empty());
    }

    #[test]
    fn a_schema_that_is_not_one_is_refused() {
        assert!(compile(b"{not json", "x").is_err());
        assert!(compile(br#"{"type": "nonsense"}"#, "x").is_err());
    }

    #[test]
    fn a_module_carries_its_schema_in_a_custom_section() {
        // A minimal module: the header, then one custom section.
        let schema = br#"{"type":"object"}"#;
        let name = SECTION.as_bytes();
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        module.push(0);
        module.push((1 + name.len() + schema.len()) as u8);
        module.push(name.len() as u8);
        module.extend_from_slice(name);
        module.extend_from_slice(schema);
        let found = find(&module, None).unwrap().expect("schema found");
        assert!(found.check(Some(&json!({}))).is_empty());
        assert!(!found.check(Some(&json!(3))).is_empty());
        assert!(find(b"\0asm\x01\0\0\0", None).unwrap().is_none());
    }
}
