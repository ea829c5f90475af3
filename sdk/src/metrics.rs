//! Labelled metrics. proxy-wasm metrics carry no labels, so Lateen reads them from the
//! metric name, with the separators of Istio's stats plugin:
//! `FAMILY;.;KEY=.=VALUE;.;KEY=.=VALUE`. Lateen's exporter turns such a name into
//! `FAMILY{KEY="VALUE",...}`; in another host the name is just a long metric name.
//!
//! ```
//! use lateen_sdk::metrics::labelled_name;
//! let name = labelled_name("requests_total", &[("code", "200"), ("route", "api")]);
//! assert_eq!(name, "requests_total;.;code=.=200;.;route=.=api");
//! // Define it with proxy_wasm::hostcalls::define_metric(MetricType::Counter, &name).
//! ```

/// Separates the segments of a labelled metric name.
pub const FIELD_SEPARATOR: &str = ";.;";
/// Separates a label's key from its value.
pub const VALUE_SEPARATOR: &str = "=.=";

/// The metric name of one family and label set. A field separator inside a value would
/// split it, so it becomes `_`.
pub fn labelled_name<V: AsRef<str>>(family: &str, labels: &[(&str, V)]) -> String {
    let mut out = String::with_capacity(family.len() + labels.len() * 32);
    out.push_str(family);
    for (k, v) in labels {
        out.push_str(FIELD_SEPARATOR);
        out.push_str(k);
        out.push_str(VALUE_SEPARATOR);
        let v = v.as_ref();
        if v.contains(FIELD_SEPARATOR) {
            out.push_str(&v.replace(FIELD_SEPARATOR, "_"));
        } else {
            out.push_str(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::labelled_name;

    #[test]
    fn separators_inside_values_are_replaced() {
        let n = labelled_name("f", &[("a", "1"), ("b", "x;.;y")]);
        assert_eq!(n, "f;.;a=.=1;.;b=.=x_y");
        assert_eq!(labelled_name::<&str>("plain", &[]), "plain");
    }
}
