//! The JWT filter's configuration schema, `schema.json`: generated from `JwtConfig` by
//! schemars, checked in, and embedded in the .wasm (`lateen_sdk::config_schema!` in lib.rs),
//! where the host checks each plugin configuration against it before `on_configure` runs.
//!
//! `cargo test -p lateen-jwt --features schema --test schema`; after changing the config
//! types, rerun it with `LATEEN_UPDATE_SCHEMAS=1` to rewrite `schema.json`.

use lateen_jwt::config::JwtConfig as Config;
use serde_json::{json, Value};

/// Configs the JWT filter takes (from its tests).
fn valid() -> Vec<Value> {
    let jwks = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
    vec![
        json!({"providers": [{"name": "idp", "issuer": "https://idp.example.com", "jwks": jwks}]}),
        json!({"providers": [{"name": "idp", "issuer": "https://idp.example.com", "remote": {
            "cluster": "outbound|443||idp.example.com", "authority": "idp.example.com",
            "path": "/.well-known/jwks.json", "timeoutMs": 1000, "cacheMs": 600000}}]}),
        json!({"providers": [{"name": "default/auth#0", "issuer": "https://idp.example.com",
            "audiences": ["shop"], "jwks": jwks,
            "fromHeaders": [{"name": "x-jwt", "prefix": "Token "}], "fromParams": ["token"],
            "fromCookies": ["session"], "forwardOriginalToken": true,
            "outputPayloadToHeader": "x-jwt-payload",
            "outputClaimToHeaders": [{"header": "x-sub", "claim": "sub"}]}]}),
    ]
}

/// A config the JWT filter refuses: audiences must be a list.
fn invalid() -> Value {
    json!({"providers": [{"name": "idp", "issuer": "https://idp.example.com", "audiences": "shop"}]})
}

fn check() -> lateen_harness::SchemaCheck {
    let generated = serde_json::to_value(schemars::schema_for!(Config)).unwrap();
    lateen_harness::SchemaCheck::new(
        concat!(env!("CARGO_MANIFEST_DIR"), "/schema.json"),
        env!("CARGO_PKG_NAME"),
        generated,
    )
}

/// The filter's own parser; the config it serialises back is what the host sends.
fn parse(config: &Value) -> Result<Value, String> {
    let c: Config =
        lateen_sdk::config::parse(config.to_string().as_bytes()).map_err(|e| e.to_string())?;
    serde_json::to_value(c).map_err(|e| e.to_string())
}

#[test]
fn schema_json_is_generated_from_the_config_types() {
    check().is_generated();
}

#[test]
fn realistic_configs_pass_the_schema() {
    let default = serde_json::to_value(Config::default()).unwrap();
    check().accepts(&valid(), parse, default);
}

#[test]
fn an_invalid_config_fails_the_schema_as_it_fails_the_filter() {
    check().refuses(&invalid(), parse);
}
