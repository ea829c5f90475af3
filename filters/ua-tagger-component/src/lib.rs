//! A sample filter written as a WebAssembly component (`lateen:filter`): it sets a request
//! header (`x-device` unless the config names another) to the client's device class from
//! its `user-agent` (`mobile`, `desktop`, `bot` or `other`), and counts requests by class in
//! `ua_tagger_requests_total{device=...}`. The same filter as proxy-wasm is what
//! `lateen new-filter` makes, which the benchmark compares it with.

use lateen_component::{
    export_filter, metrics, Action, Guest, GuestExchange, GuestFilter, Headers,
};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

struct Tagger;

/// One configuration: the header to set, and the counter id per device class.
struct Config {
    header: Rc<str>,
    counters: Rc<RefCell<BTreeMap<&'static str, u32>>>,
}

struct Exchange {
    header: Rc<str>,
    counters: Rc<RefCell<BTreeMap<&'static str, u32>>>,
}

impl Guest for Tagger {
    type Filter = Config;
    type Exchange = Exchange;
}

/// `{"header": "x-client"}`; empty means the default.
fn header_of(config: &str) -> Result<String, String> {
    if config.trim().is_empty() {
        return Ok("x-device".into());
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        header: Option<String>,
    }
    let raw: Raw = serde_json::from_str(config).map_err(|e| format!("ua-tagger config: {e}"))?;
    Ok(raw.header.unwrap_or_else(|| "x-device".into()))
}

impl GuestFilter for Config {
    fn create(config: String) -> Result<lateen_component::Filter, String> {
        let header = header_of(&config)?;
        Ok(lateen_component::Filter::new(Config {
            header: header.into(),
            counters: Rc::default(),
        }))
    }

    fn exchange(&self) -> lateen_component::Exchange {
        lateen_component::Exchange::new(Exchange {
            header: self.header.clone(),
            counters: self.counters.clone(),
        })
    }
}

impl GuestExchange for Exchange {
    fn on_request_headers(&self, headers: &Headers, _: bool) -> Action {
        let ua = headers.get("user-agent").unwrap_or_default();
        let device = lateen_sdk::useragent::classify(&ua).device;
        headers.set(&self.header, device);
        let mut counters = self.counters.borrow_mut();
        let id = match counters.get(device) {
            Some(id) => Some(*id),
            None => metrics::define(
                metrics::Kind::Counter,
                "ua_tagger_requests_total",
                &[("device".to_string(), device.to_string())],
            )
            .ok()
            .inspect(|id| {
                counters.insert(device, *id);
            }),
        };
        if let Some(id) = id {
            metrics::increment(id, 1);
        }
        Action::Continue
    }
}

export_filter!(Tagger);
