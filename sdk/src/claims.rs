//! JWT claims as filters see them. The JWT filter (Istio's `RequestAuthentication`) stores
//! a verified token's payload as JSON in the [`CLAIMS`] property; the router matches
//! `@request.auth.claims.*` headers and the authorization filter `request.auth.claims[...]`
//! keys against it, both through [`values`].

use serde_json::Value;

/// Property holding the verified payload (JSON) of the request's JWT.
pub const CLAIMS: &[&str] = &["request", "auth", "claims"];
/// Property holding the request principal, `iss/sub`.
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
