//! proxy-wasm glue for the JWT filter: finds tokens, fetches key sets it does not have yet
//! (pausing the request meanwhile), verifies, and publishes the claims.

use crate::config::{verify, Found, JwtConfig, JwtError, Place, Verified};
use crate::jwks::Jwks;
use lateen_sdk::claims;
use lateen_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use lateen_sdk::proxy_wasm::types::{Action, ContextType, LogLevel};
use lateen_sdk::proxy_wasm::{self, hostcalls};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(JwtRoot { shared: Rc::new(Shared::default()), calls: HashMap::new() })
    });
}}

/// How often the root context looks for key sets to refresh or retry.
const TICK: Duration = Duration::from_secs(1);

/// A provider's key set and when it was fetched.
struct Cached {
    jwks: Rc<Jwks>,
    at: SystemTime,
}

/// State the root and its streams share (one VM, one thread).
#[derive(Default)]
struct Shared {
    config: JwtConfig,
    sets: RefCell<Vec<Option<Cached>>>,
    /// Providers whose key set a root-context fetch is getting.
    fetching: RefCell<Vec<bool>>,
    /// When the last failed fetch was, per provider (retries wait a tick).
    failed_at: RefCell<Vec<Option<SystemTime>>>,
}

impl Shared {
    /// The provider's key set. A stale one keeps serving while the root context refreshes
    /// it (and when a refresh fails: a JWKS outage must not fail every request); only a
    /// provider without any set makes a request wait for a fetch.
    fn set(&self, i: usize) -> Option<Rc<Jwks>> {
        let sets = self.sets.borrow();
        Some(sets.get(i)?.as_ref()?.jwks.clone())
    }

    fn store(&self, i: usize, body: Option<Vec<u8>>, status: Option<String>, now: SystemTime) {
        let name = &self.config.providers[i].name;
        let parsed = match (status.as_deref(), body) {
            (Some("200"), Some(b)) => Jwks::parse(&b).map_err(|e| e.to_string()),
            (s, _) => Err(format!("status {}", s.unwrap_or("none"))),
        };
        match parsed {
            Ok(jwks) => {
                self.sets.borrow_mut()[i] = Some(Cached {
                    jwks: Rc::new(jwks),
                    at: now,
                });
                self.failed_at.borrow_mut()[i] = None;
            }
            Err(e) => {
                self.failed_at.borrow_mut()[i] = Some(now);
                let _ = hostcalls::log(
                    LogLevel::Warn,
                    &format!("jwt {name}: JWKS fetch failed: {e}"),
                );
            }
        }
    }
}

fn dispatch(shared: &Shared, i: usize) -> Option<u32> {
    let r = shared.config.providers.get(i)?.remote.as_ref()?;
    hostcalls::dispatch_http_call(
        &r.cluster,
        vec![
            (":method", "GET"),
            (":path", &r.path),
            (":authority", &r.authority),
            ("accept", "application/json"),
        ],
        None,
        vec![],
        Duration::from_millis(r.timeout_ms.max(1)),
    )
    .ok()
}

fn response_status() -> Option<String> {
    hostcalls::get_map_value(
        proxy_wasm::types::MapType::HttpCallResponseHeaders,
        ":status",
    )
    .ok()
    .flatten()
}

struct JwtRoot {
    shared: Rc<Shared>,
    /// Outstanding fetches: call token → provider.
    calls: HashMap<u32, usize>,
}

impl JwtRoot {
    fn refresh(&mut self) {
        let now = self.get_current_time();
        for i in 0..self.shared.config.providers.len() {
            let Some(r) = &self.shared.config.providers[i].remote else {
                continue;
            };
            if self.shared.fetching.borrow()[i] {
                continue;
            }
            let due = match &self.shared.sets.borrow()[i] {
                Some(c) => now
                    .duration_since(c.at)
                    .is_ok_and(|age| age >= Duration::from_millis(r.cache_ms)),
                None => true,
            };
            let backing_off = self.shared.failed_at.borrow()[i]
                .is_some_and(|t| now.duration_since(t).is_ok_and(|d| d < TICK));
            if due && !backing_off {
                if let Some(token) = dispatch(&self.shared, i) {
                    self.shared.fetching.borrow_mut()[i] = true;
                    self.calls.insert(token, i);
                }
            }
        }
    }
}

impl Context for JwtRoot {
    fn on_http_call_response(&mut self, token: u32, _: usize, body_size: usize, _: usize) {
        let Some(i) = self.calls.remove(&token) else {
            return;
        };
        self.shared.fetching.borrow_mut()[i] = false;
        let body = self.get_http_call_response_body(0, body_size);
        self.shared
            .store(i, body, response_status(), self.get_current_time());
    }
}

impl RootContext for JwtRoot {
    fn on_configure(&mut self, _: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let config = match lateen_sdk::config::parse_or_default::<JwtConfig>(&bytes) {
            Ok(c) => c,
            Err(e) => {
                let _ = hostcalls::log(LogLevel::Error, &format!("jwt config: {e}"));
                return false;
            }
        };
        let now = self.get_current_time();
        let mut sets = Vec::new();
        for p in &config.providers {
            sets.push(match &p.jwks {
                Some(text) => match Jwks::parse(text.as_bytes()) {
                    Ok(j) => Some(Cached {
                        jwks: Rc::new(j),
                        at: now,
                    }),
                    Err(e) => {
                        let _ =
                            hostcalls::log(LogLevel::Error, &format!("jwt {}: jwks: {e}", p.name));
                        return false;
                    }
                },
                None => None,
            });
        }
        let n = config.providers.len();
        let remote = config.providers.iter().any(|p| p.remote.is_some());
        self.shared = Rc::new(Shared {
            config,
            sets: RefCell::new(sets),
            fetching: RefCell::new(vec![false; n]),
            failed_at: RefCell::new(vec![None; n]),
        });
        self.calls.clear();
        if remote {
            self.refresh();
            self.set_tick_period(TICK);
        }
        true
    }

    fn on_tick(&mut self) {
        self.refresh();
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(JwtStream {
            shared: self.shared.clone(),
            found: Vec::new(),
            next: 0,
            verified: Vec::new(),
            waiting: None,
        }))
    }
}

struct JwtStream {
    shared: Rc<Shared>,
    found: Vec<Found>,
    /// The first token not yet verified.
    next: usize,
    verified: Vec<(usize, Verified)>,
    /// The fetch this stream waits on: call token and provider.
    waiting: Option<(u32, usize)>,
}

enum Step {
    Done,
    Wait,
    Reject(JwtError),
}

impl JwtStream {
    /// Verifies the remaining tokens; stops to fetch a key set it lacks.
    fn run(&mut self) -> Step {
        let now = self.get_current_time();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        while let Some(f) = self.found.get(self.next) {
            let provider = match self.shared.config.provider_for(&f.token, &f.providers) {
                Ok(p) => p,
                Err(e) => return Step::Reject(e),
            };
            let Some(jwks) = self.shared.set(provider) else {
                match dispatch(&self.shared, provider) {
                    Some(token) => {
                        self.waiting = Some((token, provider));
                        return Step::Wait;
                    }
                    None => return Step::Reject(JwtError::JwksFetchFailed),
                }
            };
            match verify(
                &self.shared.config.providers[provider],
                &jwks,
                &f.token,
                secs,
            ) {
                Ok(v) => self.verified.push((provider, v)),
                Err(e) => return Step::Reject(e),
            }
            self.next += 1;
        }
        Step::Done
    }

    /// Publishes what verified and rewrites headers as the providers ask.
    fn publish(&self) {
        if let Some((_, first)) = self.verified.first() {
            let claims_json = first.payload.to_string();
            let _ = hostcalls::set_property(claims::CLAIMS.to_vec(), Some(claims_json.as_bytes()));
            let _ = hostcalls::set_property(
                claims::PRINCIPAL.to_vec(),
                Some(first.principal.as_bytes()),
            );
        }
        for ((i, v), f) in self.verified.iter().zip(&self.found) {
            let p = &self.shared.config.providers[*i];
            if !p.forward_original_token {
                if let Place::Header(name) = &f.place {
                    self.set_http_request_header(name, None);
                }
            }
            if let Some(h) = &p.output_payload_to_header {
                self.set_http_request_header(h, Some(&v.payload_b64));
            }
            for c in &p.output_claim_to_headers {
                let value = crate::config::claim_header_value(&v.payload, &c.claim);
                self.set_http_request_header(&c.header, value.as_deref());
            }
        }
    }

    fn reject(&self, e: &JwtError) {
        let _ = hostcalls::log(LogLevel::Debug, &format!("jwt: 401: {e}"));
        let _ = hostcalls::set_property(
            lateen_sdk::route::RESPONSE_FLAGS.to_vec(),
            Some(b"UAEX".as_slice()),
        );
        let _ = hostcalls::send_http_response(
            401,
            vec![(
                "www-authenticate",
                "Bearer realm=\"jwt\", error=\"invalid_token\"",
            )],
            Some(e.to_string().as_bytes()),
        );
    }

    fn step(&mut self) -> Action {
        match self.run() {
            Step::Done => {
                self.publish();
                Action::Continue
            }
            Step::Wait => Action::Pause,
            Step::Reject(e) => {
                self.reject(&e);
                Action::Pause
            }
        }
    }
}

impl Context for JwtStream {
    fn on_http_call_response(&mut self, token: u32, _: usize, body_size: usize, _: usize) {
        let Some((want, provider)) = self.waiting else {
            return;
        };
        if want != token {
            return;
        }
        self.waiting = None;
        let body = self.get_http_call_response_body(0, body_size);
        self.shared
            .store(provider, body, response_status(), self.get_current_time());
        if self.shared.set(provider).is_none() {
            self.reject(&JwtError::JwksFetchFailed);
            return;
        }
        if let Action::Continue = self.step() {
            self.resume_http_request();
        }
    }
}

impl HttpContext for JwtStream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        if self.shared.config.providers.is_empty() {
            return Action::Continue;
        }
        let headers: Vec<(String, String)> = self
            .get_http_request_headers_bytes()
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_ascii_lowercase(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
        self.found = self.shared.config.find_tokens(headers.as_slice());
        if self.found.is_empty() {
            return Action::Continue;
        }
        self.step()
    }
}
