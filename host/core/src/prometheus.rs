//! Prometheus text-format helpers shared by the proxy's own stats and the plugins' metrics.
//!
//! proxy-wasm metrics carry no labels, so labels travel in the metric name
//! ([`lateen_sdk::metrics`]): `NAME;.;KEY=.=VALUE;.;KEY=.=VALUE`. Segments split by
//! `;.;` that hold `=.=` are labels; the one that does not is the family name (it may come
//! first or last, as in Envoy's tag-extracted names). A name without separators is a family
//! without labels.

use lateen_sdk::metrics::{FIELD_SEPARATOR, VALUE_SEPARATOR};

/// A metric name split into its family and labels.
#[derive(Debug, PartialEq, Eq)]
pub struct Series {
    pub family: String,
    pub labels: Vec<(String, String)>,
}

/// Splits a plugin metric name by the convention above.
pub fn parse_name(name: &str) -> Series {
    let mut family = String::new();
    let mut labels = Vec::new();
    for seg in name.split(FIELD_SEPARATOR).filter(|s| !s.is_empty()) {
        match seg.split_once(VALUE_SEPARATOR) {
            Some((k, v)) => labels.push((sanitize(k), v.to_string())),
            None if family.is_empty() => family = sanitize(seg),
            // A second bare segment belongs to the name (Envoy joins stat parts with '.').
            None => {
                family.push('_');
                family.push_str(&sanitize(seg));
            }
        }
    }
    if family.is_empty() {
        family = "unnamed".into();
    }
    Series { family, labels }
}

/// A Prometheus metric or label name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A label value with `\`, `"` and newlines escaped.
pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}
