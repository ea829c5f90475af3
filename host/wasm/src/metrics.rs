//! The Prometheus text exposition of plugin metrics.
//!
//! proxy-wasm metrics carry no labels, so labels travel in the metric name
//! ([`lateen_sdk::metrics`]): `NAME;.;KEY=.=VALUE;.;KEY=.=VALUE`. Segments split by
//! `;.;` that hold `=.=` are labels; the one that does not is the family name (it may come
//! first or last, as in Envoy's tag-extracted names). Series of one family are written
//! under a single `# TYPE` line. A name without separators is a family without labels.

use crate::shared::{Metric, MetricKind, Shared, HISTOGRAM_BOUNDS};
use lateen_core::prometheus::{escape, parse_name, Series};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// `{k="v",...}` with `extra` appended (for `le`), or nothing without labels.
fn label_set(labels: &[(String, String)], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn bound(b: f64) -> String {
    if b.fract() == 0.0 {
        format!("{b:.0}")
    } else {
        b.to_string()
    }
}

/// HELP text: Istio's for its standard metrics, else where the metric comes from.
fn help(family: &str) -> &'static str {
    match family {
        "istio_requests_total" => "Requests handled, by Istio's standard labels.",
        "istio_request_duration_milliseconds" => "Request duration in milliseconds.",
        "istio_request_bytes" => "Request sizes in bytes (headers and body).",
        "istio_response_bytes" => "Response sizes in bytes (headers and body).",
        _ => "Defined by a plugin.",
    }
}

/// The type of a family and its series.
type Family = (MetricKind, Vec<(Series, Arc<Metric>)>);

/// Plugin-defined metrics in the Prometheus text format, one block per family.
pub fn exposition(shared: &Shared) -> String {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for m in shared.all_metrics() {
        let s = parse_name(&m.name);
        let entry = families
            .entry(s.family.clone())
            .or_insert_with(|| (m.kind, Vec::new()));
        // One family has one type; a plugin defining the same family with another type
        // would make the exposition invalid, so those series are left out.
        if entry.0 == m.kind {
            entry.1.push((s, m));
        }
    }
    let mut out = String::new();
    for (family, (kind, series)) in families {
        let t = match kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        };
        let _ = writeln!(out, "# HELP {family} {}", help(&family));
        let _ = writeln!(out, "# TYPE {family} {t}");
        for (s, m) in series {
            match kind {
                MetricKind::Counter | MetricKind::Gauge => {
                    let _ = writeln!(
                        out,
                        "{family}{} {}",
                        label_set(&s.labels, None),
                        m.value.load(Ordering::Relaxed)
                    );
                }
                MetricKind::Histogram => {
                    let mut cum = 0;
                    for (i, b) in m.buckets.iter().enumerate() {
                        cum += b.load(Ordering::Relaxed);
                        let le = HISTOGRAM_BOUNDS
                            .get(i)
                            .map_or_else(|| "+Inf".to_string(), |v| bound(*v));
                        let _ = writeln!(
                            out,
                            "{family}_bucket{} {cum}",
                            label_set(&s.labels, Some(("le", &le)))
                        );
                    }
                    let l = label_set(&s.labels, None);
                    let _ = writeln!(out, "{family}_sum{l} {}", m.sum.load(Ordering::Relaxed));
                    let _ = writeln!(out, "{family}_count{l} {}", m.count.load(Ordering::Relaxed));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_labels_before_or_after_the_family() {
        // What the SDK writes, the exporter reads.
        let name = lateen_sdk::metrics::labelled_name(
            "istio_requests_total",
            &[("reporter", "source"), ("response_code", "200")],
        );
        assert_eq!(
            name,
            "istio_requests_total;.;reporter=.=source;.;response_code=.=200"
        );
        let s = parse_name(&name);
        assert_eq!(s.family, "istio_requests_total");
        assert_eq!(
            s.labels,
            vec![
                ("reporter".into(), "source".into()),
                ("response_code".into(), "200".into())
            ]
        );
        let s = parse_name("reporter=.=source;.;istio_requests_total");
        assert_eq!(s.family, "istio_requests_total");
        assert_eq!(s.labels.len(), 1);
        assert_eq!(parse_name("my.counter").family, "my_counter");
        assert_eq!(parse_name("9lives").family, "_9lives");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn families_share_one_type_line() {
        let shared = Shared::default();
        let (_, a) = shared
            .define_metric(MetricKind::Counter, "req;.;code=.=200")
            .unwrap();
        let (_, b) = shared
            .define_metric(MetricKind::Counter, "req;.;code=.=503")
            .unwrap();
        let (_, h) = shared
            .define_metric(MetricKind::Histogram, "lat;.;code=.=200")
            .unwrap();
        a.value.fetch_add(3, Ordering::Relaxed);
        b.value.fetch_add(1, Ordering::Relaxed);
        h.record(0);
        h.record(7);
        let out = exposition(&shared);
        assert_eq!(out.matches("# TYPE req counter").count(), 1, "{out}");
        assert!(out.contains("req{code=\"200\"} 3\n"), "{out}");
        assert!(out.contains("req{code=\"503\"} 1\n"), "{out}");
        assert!(
            out.contains("lat_bucket{code=\"200\",le=\"0.5\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("lat_bucket{code=\"200\",le=\"5\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("lat_bucket{code=\"200\",le=\"10\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("lat_bucket{code=\"200\",le=\"+Inf\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("lat_sum{code=\"200\"} 7\n"), "{out}");
    }
}
