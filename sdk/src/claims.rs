//! JWT claims as filters see them. The JWT filter (Istio's `RequestAuthentication`) stores
//! a verified token's payload as JSON in the [`CLAIMS`] property; the router matches
//! `@request.auth.claims.*` headers and the authorization filter `request.auth.claims[...]`
//! keys against it, both through [`values`].
//!
//! Only Lateen's JWT filter sets these properties; in a host where it does not run they
//! are absent. [`values`] itself is plain Rust.
//!
//! ```rust
//! use lateen_sdk::claims;
//! let payload: serde_json::Value =
//!     serde_json::from_str(r#"{"iss": "idp", "sub": "alice", "groups": ["dev", "ops"]}"#).unwrap();
//! assert_eq!(claims::values(&payload, &["sub"]), ["alice"]);
//! assert_eq!(claims::values(&payload, &["groups"]), ["dev", "ops"]);
//! ```
//!
//! Inside a filter, read the payload from the stream first:
//!
//! ```no_run
//! use lateen_sdk::{claims, proxy_wasm::hostcalls};
//!
//! /// Whether the request's verified token lists `admin` in its `groups` claim.
//! fn is_admin() -> bool {
//!     let Ok(Some(bytes)) = hostcalls::get_property(claims::CLAIMS.to_vec()) else {
//!         return false; // no verified token
//!     };
//!     let payload: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
//!     claims::values(&payload, &["groups"]).iter().any(|g| g == "admin")
//! }
//! println!("admin: {}", is_admin());
//! ```

use serde_json::Value;

/// Property holding the verified payload (JSON) of the request's JWT.
///
/// ```rust
/// assert_eq!(lateen_sdk::claims::CLAIMS.join("."), "request.auth.claims");
/// ```
pub const CLAIMS: &[&str] = &["request", "auth", "claims"];
/// Property holding the request principal, `iss/sub`.
///
/// ```rust
/// assert_eq!(lateen_sdk::claims::PRINCIPAL.join("."), "request.auth.principal");
/// ```
pub const PRINCIPAL: &[&str] = &["request", "auth", "principal"];

/// The values of the claim at `path` (nested objects are walked one name per element), as
/// Istio compares them: a string is one value, a list of strings is each of its elements,
/// numbers and booleans are their JSON text. Objects and absent claims have no values.
///
/// ```
/// use lateen_sdk::claims::values;
/// let p = serde_json::json!({"groups": ["a", "b"], "org": {"team": "x"}, "n": 3});
/// assert_eq!(values(&p, &["groups"]), ["a", "b"]);
/// assert_eq!(values(&p, &["org", "team"]), ["x"]);
/// assert_eq!(values(&p, &["n"]), ["3"]);
/// assert!(values(&p, &["org"]).is_empty() && values(&p, &["missing"]).is_empty());
/// ```
pub fn values<S: AsRef<str>>(payload: &Value, path: &[S]) -> Vec<String> {
    let mut v = payload;
    for name in path {
        match v.get(name.as_ref()) {
            Some(next) => v = next,
            None => return Vec::new(),
        }
    }
    match v {
        Value::Array(items) => items.iter().filter_map(scalar).collect(),
        other => scalar(other).into_iter().collect(),
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
