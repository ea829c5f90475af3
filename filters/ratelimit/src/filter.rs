//! proxy-wasm glue for the rate-limit filter.

use crate::bucket::{take, State, Take};
use crate::config::{
    DescriptorAction, Key, Mode, RateLimitConfig, Rule, TakeRequest, TakeResponse, TokenBucket,
    REDIS_CLUSTER, TAKE_PATH,
};
use lateen_sdk::matcher::{cookie, text_headers, CompiledMatch};
use lateen_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use lateen_sdk::proxy_wasm::types::{Action, ContextType, LogLevel, Status};
use lateen_sdk::proxy_wasm::{self, hostcalls};
use lateen_sdk::rng::Rng;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(RlRoot { rules: Rc::new(Vec::new()), rng: Rc::new(RefCell::new(Rng::new(1))) })
    });
}}

struct Compiled {
    rule: Rule,
    matches: Vec<CompiledMatch>,
}

impl Compiled {
    /// Whether the rule reads request headers (matches, its key, descriptor actions): a
    /// chain of rules that read none, as a plain local rate limit is, skips fetching them.
    fn reads_headers(&self) -> bool {
        !self.matches.is_empty()
            || matches!(self.rule.key, Key::Path | Key::Header(_) | Key::Cookie(_))
            || self
                .rule
                .actions
                .iter()
                .any(|a| matches!(a, DescriptorAction::RequestHeader { .. }))
    }

    fn reads_route(&self) -> bool {
        !self.rule.routes.is_empty() || !self.rule.except_routes.is_empty()
    }
}

struct RlRoot {
    rules: Rc<Vec<Compiled>>,
    rng: Rc<RefCell<Rng>>,
}

impl Context for RlRoot {}

impl RootContext for RlRoot {
    fn on_configure(&mut self, _: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let cfg: RateLimitConfig = match lateen_sdk::config::parse_or_default(&bytes) {
            Ok(c) => c,
            Err(e) => {
                let _ = hostcalls::log(LogLevel::Error, &format!("ratelimit: {e}"));
                return false;
            }
        };
        let mut rules = Vec::new();
        for (i, rule) in cfg.rules.into_iter().enumerate() {
            let mut matches = Vec::new();
            for (m, mr) in rule.matches.iter().enumerate() {
                match CompiledMatch::compile(mr) {
                    Ok(c) => matches.push(c),
                    Err(e) => {
                        let _ = hostcalls::log(
                            LogLevel::Error,
                            &format!("ratelimit: rules[{i}].match[{m}].{e}"),
                        );
                        return false;
                    }
                }
            }
            rules.push(Compiled { rule, matches });
        }
        self.rules = Rc::new(rules);
        *self.rng.borrow_mut() = Rng::from_clock();
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(RlStream {
            rules: self.rules.clone(),
            rng: self.rng.clone(),
            response_headers: Vec::new(),
            headers: Vec::new(),
            route: String::new(),
            pending: None,
        }))
    }
}

struct RlStream {
    rules: Rc<Vec<Compiled>>,
    rng: Rc<RefCell<Rng>>,
    response_headers: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    route: String,
    /// A global take in flight: the rule's index and bucket.
    pending: Option<(usize, TokenBucket)>,
}

/// The most often the filter logs that the global store is unavailable: while Redis is
/// down every global take fails, and one line per request would flood the log.
const UNAVAILABLE_LOG_EVERY_MS: u64 = 10_000;

thread_local! {
    /// `ratelimit.failure_mode_allowed` (Envoy's name), the last log time, and the count
    /// since that log.
    static UNAVAILABLE: RefCell<(Option<u32>, u64, u64)> = const { RefCell::new((None, 0, 0)) };
}

/// The global store did not answer: the request is allowed (fail open, as Envoy's
/// rate-limit filter does unless `failure_mode_deny`), counted, and logged now and then.
fn store_unavailable(rule: &str) {
    UNAVAILABLE.with(|u| {
        let (metric, last_log, since) = &mut *u.borrow_mut();
        if metric.is_none() {
            *metric = hostcalls::define_metric(
                proxy_wasm::types::MetricType::Counter,
                "ratelimit.failure_mode_allowed",
            )
            .ok();
        }
        if let Some(id) = *metric {
            let _ = hostcalls::increment_metric(id, 1);
        }
        *since += 1;
        let now = now_ms();
        if *last_log == 0 || now.saturating_sub(*last_log) >= UNAVAILABLE_LOG_EVERY_MS {
            let _ = hostcalls::log(
                LogLevel::Warn,
                &format!(
                    "ratelimit: global store unavailable (rule {rule}); allowing ({since} request(s) since the last such line)"
                ),
            );
            *last_log = now.max(1);
            *since = 0;
        }
    });
}

fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

// Takes a token from the shared bucket `key`, retrying on concurrent updates (CAS). One
// clock reading serves the retries: they are microseconds apart.
fn take_shared(key: &str, tb: &TokenBucket) -> Take {
    let now = now_ms();
    let mut last = None;
    for _ in 0..16 {
        let (bytes, cas) = hostcalls::get_shared_data(key).unwrap_or((None, None));
        let state = bytes.as_deref().and_then(State::decode);
        let t = take(tb, state, now);
        match hostcalls::set_shared_data(key, Some(&t.next.encode()), cas) {
            Err(Status::CasMismatch) => last = Some(t),
            _ => return t,
        }
    }
    last.unwrap_or_else(|| take(tb, None, now))
}

impl RlStream {
    fn key_value(&self, rule: &Rule, headers: &[(String, String)]) -> Option<String> {
        let h = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        Some(match &rule.key {
            Key::None => String::new(),
            Key::SourceIp => source_ip(self)?,
            Key::Path => h(":path")?.split('?').next().unwrap_or("").to_string(),
            Key::Header(name) => h(&name.to_ascii_lowercase())?.to_string(),
            Key::Cookie(name) => cookie(h("cookie")?, name)?.to_string(),
        })
    }

    // Envoy's descriptor selection: entries from the route's actions; a descriptor whose
    // entries equal them gives its bucket; otherwise the rule's default bucket.
    fn descriptor(
        &self,
        rule: &Rule,
        headers: &[(String, String)],
    ) -> Option<(String, TokenBucket)> {
        if rule.actions.is_empty() {
            return None;
        }
        let mut entries = Vec::new();
        for a in &rule.actions {
            match a {
                DescriptorAction::RequestHeader { header, key } => {
                    let v = headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(header))
                        .map(|(_, v)| v.clone())?;
                    entries.push((key.clone(), v));
                }
                DescriptorAction::RemoteAddress => {
                    entries.push(("remote_address".into(), source_ip(self)?));
                }
                DescriptorAction::Generic { key, value } => {
                    entries.push((key.clone(), value.clone()))
                }
            }
        }
        let d = rule.descriptors.iter().find(|d| d.entries == entries)?;
        let id = entries
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        Some((id, d.token_bucket))
    }

    fn reject(&self, rule: &Rule, t: &Take, tb: &TokenBucket) {
        let _ = hostcalls::set_property(lateen_sdk::route::RESPONSE_FLAGS.to_vec(), Some(b"RL"));
        let mut headers: Vec<(String, String)> =
            vec![("x-envoy-ratelimited".into(), "true".into())];
        headers.extend(rule.response_headers.iter().cloned());
        if rule.rate_limit_headers {
            headers.extend(limit_headers(tb, t));
        }
        let refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.send_http_response(429, refs, Some(b"local_rate_limited"));
    }
}

fn source_ip(ctx: &dyn Context) -> Option<String> {
    let addr = ctx.get_property(vec!["source", "address"])?;
    let addr = String::from_utf8_lossy(&addr).into_owned();
    // `1.2.3.4:5678` or `[::1]:5678`
    Some(match addr.rsplit_once(':') {
        Some((ip, _)) => ip.trim_start_matches('[').trim_end_matches(']').to_string(),
        None => addr,
    })
}

fn limit_headers(tb: &TokenBucket, t: &Take) -> Vec<(String, String)> {
    vec![
        ("x-ratelimit-limit".into(), tb.max_tokens.to_string()),
        ("x-ratelimit-remaining".into(), t.remaining.to_string()),
        (
            "x-ratelimit-reset".into(),
            t.reset_ms.div_ceil(1000).to_string(),
        ),
    ]
}

impl RlStream {
    // Evaluates rules from `from` on. Returns Pause when a global take is in flight or the
    // request was rejected.
    fn evaluate(&mut self, from: usize) -> Action {
        let rules = self.rules.clone();
        let headers = std::mem::take(&mut self.headers);
        let result = self.evaluate_with(&rules, &headers, from);
        self.headers = headers;
        result
    }

    fn evaluate_with(
        &mut self,
        rules: &[Compiled],
        headers: &[(String, String)],
        from: usize,
    ) -> Action {
        for (i, c) in rules.iter().enumerate().skip(from) {
            let rule = &c.rule;
            if !rule.routes.is_empty() && !rule.routes.contains(&self.route)
                || rule.except_routes.contains(&self.route)
            {
                continue;
            }
            if !c.matches.is_empty() && !c.matches.iter().any(|m| m.matches(headers)) {
                continue;
            }
            if !self.rng.borrow_mut().chance(rule.enabled_percent) {
                continue;
            }
            let (bucket, tb) = match self.descriptor(rule, headers) {
                Some((id, tb)) => (format!("lateen.rl.{}.d.{id}", rule.name), tb),
                None => {
                    let Some(v) = self.key_value(rule, headers) else {
                        continue;
                    };
                    (format!("lateen.rl.{}.k.{v}", rule.name), rule.token_bucket)
                }
            };
            if rule.mode == Mode::Global {
                let body = serde_json::to_vec(&TakeRequest {
                    key: bucket,
                    max_tokens: tb.max_tokens,
                    tokens_per_fill: tb.tokens_per_fill,
                    fill_interval_ms: tb.fill_interval_ms,
                })
                .unwrap_or_default();
                let call = self.dispatch_http_call(
                    REDIS_CLUSTER,
                    vec![
                        (":method", "POST"),
                        (":path", TAKE_PATH),
                        (":authority", REDIS_CLUSTER),
                    ],
                    Some(&body),
                    vec![],
                    std::time::Duration::from_millis(500),
                );
                match call {
                    Ok(_) => {
                        self.pending = Some((i, tb));
                        return Action::Pause;
                    }
                    Err(e) => {
                        // No Redis configured or reachable: fail open, loudly.
                        let _ = hostcalls::log(
                            LogLevel::Warn,
                            &format!("ratelimit: global rule {} skipped: {e:?}", rule.name),
                        );
                        continue;
                    }
                }
            }
            let t = take_shared(&bucket, &tb);
            if self.verdict(rule, &t, &tb) {
                return Action::Pause;
            }
        }
        Action::Continue
    }

    // Applies a take's result; true if the request was rejected.
    fn verdict(&mut self, rule: &Rule, t: &Take, tb: &TokenBucket) -> bool {
        if !t.allowed {
            if self.rng.borrow_mut().chance(rule.enforced_percent) {
                self.reject(rule, t, tb);
                return true;
            }
            return false;
        }
        if rule.rate_limit_headers {
            self.response_headers = limit_headers(tb, t);
        }
        false
    }
}

impl Context for RlStream {
    fn on_http_call_response(&mut self, _: u32, _: usize, body_size: usize, _: usize) {
        let Some((i, tb)) = self.pending.take() else {
            return;
        };
        let rules = self.rules.clone();
        let rule = &rules[i].rule;
        let ok = self.get_http_call_response_header(":status").as_deref() == Some("200");
        let answer: Option<TakeResponse> = if ok {
            self.get_http_call_response_body(0, body_size)
                .and_then(|b| serde_json::from_slice(&b).ok())
        } else {
            None
        };
        match answer {
            Some(a) => {
                let t = Take {
                    allowed: a.allowed,
                    remaining: a.remaining,
                    reset_ms: a.reset_ms,
                    next: State {
                        tokens: a.remaining,
                        last_fill_ms: 0,
                    },
                };
                if self.verdict(rule, &t, &tb) {
                    return;
                }
            }
            None => store_unavailable(&rule.name),
        }
        if self.evaluate(i + 1) == Action::Continue {
            self.resume_http_request();
        }
    }
}

impl HttpContext for RlStream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        if self.rules.is_empty() {
            return Action::Continue;
        }
        // Each is a host call and, for the headers, an allocation per name and value.
        if self.rules.iter().any(Compiled::reads_headers) {
            self.headers = text_headers(self.get_http_request_headers_bytes());
        }
        if self.rules.iter().any(Compiled::reads_route) {
            self.route = self
                .get_property(lateen_sdk::route::ROUTE_NAME.to_vec())
                .map(|r| String::from_utf8_lossy(&r).into_owned())
                .unwrap_or_default();
        }
        self.evaluate(0)
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        for (k, v) in std::mem::take(&mut self.response_headers) {
            self.set_http_response_header(&k, Some(&v));
        }
        Action::Continue
    }
}
