//! Labelled metrics. proxy-wasm metrics carry no labels, so Lateen reads them from the
//! metric name, with the separators of Istio's stats plugin:
//! `FAMILY;.;KEY=.=VALUE;.;KEY=.=VALUE`. Lateen's exporter turns such a name into
//! `FAMILY{KEY="VALUE",...}`; in another host the name is just a long metric name.
//!
//! ```
//! use lateen_sdk::metrics::labelled_name;
//! let name = labelled_name("requests_total", &[("code", "200"), ("route", "api")]);
//! assert_eq!(name, "requests_total;.;code=.=200;.;route=.=api");
//! ```
//!
//! Define and bump it like any proxy-wasm metric:
//!
//! ```no_run
//! use lateen_sdk::{metrics::labelled_name, proxy_wasm::{hostcalls, types::MetricType}};
//! let name = labelled_name("requests_total", &[("code", "200")]);
//! let id = hostcalls::define_metric(MetricType::Counter, &name).unwrap();
//! hostcalls::increment_metric(id, 1).unwrap();
//! ```

/// Separates the segments of a labelled metric name.
///
/// ```rust
/// use lateen_sdk::metrics::{labelled_name, FIELD_SEPARATOR};
/// let name = labelled_name("f", &[("k", "v")]);
/// assert_eq!(name.split(FIELD_SEPARATOR).collect::<Vec<_>>(), ["f", "k=.=v"]);
/// ```
pub const FIELD_SEPARATOR: &str = ";.;";
/// Separates a label's key from its value.
///
/// ```rust
/// use lateen_sdk::metrics::VALUE_SEPARATOR;
/// assert_eq!("code=.=200".split_once(VALUE_SEPARATOR), Some(("code", "200")));
/// ```
pub const VALUE_SEPARATOR: &str = "=.=";

/// The metric name of one family and label set. A field separator inside a value would
/// split it, so it becomes `_`. Keys are used as they are.
///
/// ```rust
/// use lateen_sdk::metrics::labelled_name;
/// assert_eq!(labelled_name("hits", &[("path", "/a;.;b")]), "hits;.;path=.=/a_b");
/// assert_eq!(labelled_name::<&str>("hits", &[]), "hits");
/// ```
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
