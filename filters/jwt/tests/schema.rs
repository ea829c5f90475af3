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

lateen_harness::schema_tests!(Config);
