//! Filters written as WebAssembly components against `lateen:filter` (wit/filter.wit).
//! They run in the same chain as proxy-wasm modules, on the same store data
//! ([`HostState`]), so properties, the route decision, metrics and logs are shared with the
//! proxy-wasm ABI's implementation. A [`ComponentVm`] is driven through [`super::Vm`].

use crate::engine::WasmError;
use crate::shared::MetricKind;
use crate::state::{HeaderList, HostState, LocalResponse, StoreTakeError, StreamState};
use crate::types::Action;
use crate::vm::CallError;
use bytes::Bytes;
use lateen_core::stats::PluginStats;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use wasmtime::component::{HasSelf, InstancePre, Linker, Resource, ResourceAny};
use wasmtime::Store;

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "filter",
    with: {
        "lateen:filter/types.headers": HeaderMapRef,
        "lateen:filter/types.body": BodyRef,
    },
});

use self::exports::lateen::filter::handler;
use self::lateen::filter::{log, metrics, properties, route_decision, shared_store, types};

/// Which header map of the current stream a `headers` handle is.
pub struct HeaderMapRef;
/// Which body of the current stream a `body` handle is.
pub struct BodyRef;

const REQUEST_HEADERS: u32 = 0;
const RESPONSE_HEADERS: u32 = 1;
const REQUEST_BODY: u32 = 0;
const RESPONSE_BODY: u32 = 1;

fn map_of(s: &mut HostState, rep: u32) -> &mut HeaderList {
    if rep == RESPONSE_HEADERS {
        &mut s.cur.resp_headers
    } else {
        &mut s.cur.req_headers
    }
}

fn text(v: &Bytes) -> String {
    String::from_utf8_lossy(v).into_owned()
}

/// Registers the world's imports. WASI imports a `wasm32-wasip2` guest carries (std's
/// panic output, environment) trap if called: a filter has no files, sockets or stdio.
pub(crate) fn define(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    Filter::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

/// `wasi:clocks/wall-clock`'s `datetime`.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lower)]
#[component(record)]
struct Datetime {
    seconds: u64,
    nanoseconds: u32,
}

/// Serves the WASI interface `name` (an import of a component, with its version) where it
/// is one std needs; other WASI imports are left to trap.
pub(crate) fn define_wasi(linker: &mut Linker<HostState>, name: &str) -> wasmtime::Result<()> {
    let iface = name.split('@').next().unwrap_or(name);
    match iface {
        "wasi:random/insecure-seed" => {
            linker
                .instance(name)?
                .func_wrap("insecure-seed", |_, (): ()| {
                    Ok(((rand::random::<u64>(), rand::random::<u64>()),))
                })?;
        }
        "wasi:random/random" | "wasi:random/insecure" => {
            let (int, bytes) = if iface.ends_with("insecure") {
                ("get-insecure-random-u64", "get-insecure-random-bytes")
            } else {
                ("get-random-u64", "get-random-bytes")
            };
            let mut i = linker.instance(name)?;
            i.func_wrap(int, |_, (): ()| Ok((rand::random::<u64>(),)))?;
            i.func_wrap(bytes, |_, (len,): (u64,)| {
                let len = len.min(1 << 20) as usize;
                Ok(((0..len).map(|_| rand::random::<u8>()).collect::<Vec<u8>>(),))
            })?;
        }
        "wasi:clocks/wall-clock" => {
            let mut i = linker.instance(name)?;
            i.func_wrap(
                "now",
                |c: wasmtime::StoreContextMut<'_, HostState>, (): ()| {
                    let now = std::time::SystemTime::now() + c.data().clock_offset;
                    let d = now
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default();
                    Ok((Datetime {
                        seconds: d.as_secs(),
                        nanoseconds: d.subsec_nanos(),
                    },))
                },
            )?;
            i.func_wrap("resolution", |_, (): ()| {
                Ok((Datetime {
                    seconds: 0,
                    nanoseconds: 1,
                },))
            })?;
        }
        "wasi:clocks/monotonic-clock" => {
            // Only `now` and `resolution`: the subscribe functions need pollables.
            static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
            let mut i = linker.instance(name)?;
            i.func_wrap("now", |_, (): ()| {
                let start = START.get_or_init(std::time::Instant::now);
                Ok((start.elapsed().as_nanos() as u64,))
            })?;
            i.func_wrap("resolution", |_, (): ()| Ok((1u64,)))?;
        }
        "wasi:cli/environment" => {
            let mut i = linker.instance(name)?;
            i.func_wrap(
                "get-environment",
                |c: wasmtime::StoreContextMut<'_, HostState>, (): ()| {
                    Ok((c.data().plugin.env.clone(),))
                },
            )?;
            i.func_wrap("get-arguments", |_, (): ()| Ok((Vec::<String>::new(),)))?;
            i.func_wrap("initial-cwd", |_, (): ()| Ok((None::<String>,)))?;
        }
        _ => {}
    }
    Ok(())
}

impl types::Host for HostState {}

impl types::HostHeaders for HostState {
    fn get(&mut self, h: Resource<HeaderMapRef>, name: String) -> Option<String> {
        let name = name.to_ascii_lowercase();
        map_of(self, h.rep())
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| text(v))
    }

    fn get_all(&mut self, h: Resource<HeaderMapRef>, name: String) -> Vec<String> {
        let name = name.to_ascii_lowercase();
        map_of(self, h.rep())
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| text(v))
            .collect()
    }

    fn set(&mut self, h: Resource<HeaderMapRef>, name: String, value: String) {
        let name = name.to_ascii_lowercase();
        let map = map_of(self, h.rep());
        match map.iter().position(|(k, _)| *k == name) {
            Some(i) => {
                map[i].1 = Bytes::from(value);
                let mut j = i + 1;
                while j < map.len() {
                    if map[j].0 == name {
                        map.remove(j);
                    } else {
                        j += 1;
                    }
                }
            }
            None => map.push((name, Bytes::from(value))),
        }
    }

    fn add(&mut self, h: Resource<HeaderMapRef>, name: String, value: String) {
        map_of(self, h.rep()).push((name.to_ascii_lowercase(), Bytes::from(value)));
    }

    fn remove(&mut self, h: Resource<HeaderMapRef>, name: String) {
        let name = name.to_ascii_lowercase();
        map_of(self, h.rep()).retain(|(k, _)| *k != name);
    }

    fn entries(&mut self, h: Resource<HeaderMapRef>) -> Vec<(String, String)> {
        map_of(self, h.rep())
            .iter()
            .map(|(k, v)| (k.clone(), text(v)))
            .collect()
    }

    // Handles are borrows of the host's maps: nothing to free.
    fn drop(&mut self, _: Resource<HeaderMapRef>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl types::HostBody for HostState {
    fn size(&mut self, b: Resource<BodyRef>) -> u64 {
        self.body(b.rep()).len() as u64
    }

    fn read(&mut self, b: Resource<BodyRef>, offset: u64, len: u64) -> Vec<u8> {
        let body = self.body(b.rep());
        let start = (offset as usize).min(body.len());
        let end = start.saturating_add(len as usize).min(body.len());
        body[start..end].to_vec()
    }

    fn replace(&mut self, b: Resource<BodyRef>, data: Vec<u8>) {
        if b.rep() == RESPONSE_BODY {
            self.cur.resp_body = data;
        } else {
            self.cur.req_body = data;
        }
    }

    fn drop(&mut self, _: Resource<BodyRef>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl HostState {
    fn body(&self, rep: u32) -> &[u8] {
        if rep == RESPONSE_BODY {
            &self.cur.resp_body
        } else {
            &self.cur.req_body
        }
    }
}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        let level = level as i32;
        if level < self.log_level {
            return;
        }
        match &mut self.log_capture {
            Some(kept) => kept.push((level, message)),
            None => crate::abi::plugin_log(&self.plugin.name, level, &message),
        }
    }

    fn enabled(&mut self, level: log::Level) -> bool {
        level as i32 >= self.log_level
    }
}

impl metrics::Host for HostState {
    fn define(
        &mut self,
        kind: metrics::Kind,
        family: String,
        labels: Vec<(String, String)>,
    ) -> Result<u32, String> {
        let kind = match kind {
            metrics::Kind::Counter => MetricKind::Counter,
            metrics::Kind::Gauge => MetricKind::Gauge,
            metrics::Kind::Histogram => MetricKind::Histogram,
        };
        let name = lateen_sdk::metrics::labelled_name(&family, &labels_ref(&labels));
        self.shared
            .define_metric(kind, &name)
            .map(|(id, _)| id)
            .ok_or_else(|| "the proxy's metric budget is spent".to_string())
    }

    fn increment(&mut self, id: u32, delta: i64) {
        if let Some(m) = crate::abi::metric(self, id) {
            if m.kind != MetricKind::Histogram {
                m.value.fetch_add(delta, Ordering::Relaxed);
            }
        }
    }

    fn record(&mut self, id: u32, value: u64) {
        if let Some(m) = crate::abi::metric(self, id) {
            m.record(value);
        }
    }
}

fn labels_ref(labels: &[(String, String)]) -> Vec<(&str, &str)> {
    labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

impl properties::Host for HostState {
    fn get(&mut self, path: String) -> Option<Vec<u8>> {
        crate::abi::property(self, &path).map(|b| b.to_vec())
    }

    fn set(&mut self, path: String, value: Vec<u8>) {
        self.cur.props.insert(path, Bytes::from(value));
    }
}

impl route_decision::Host for HostState {
    fn get_decision(&mut self) -> Option<route_decision::Decision> {
        let p = &self.cur.props;
        // The SDK's decoding, as the host's route phase reads it.
        let d = lateen_sdk::route::Decision::from_properties(|path| {
            p.get(lateen_sdk::route::dotted(path).as_ref())
        })
        .ok()??;
        Some(route_decision::Decision {
            cluster: d.cluster,
            route_name: d.route_name,
            route_id: d.route_id,
            timeout_ms: d.timeout_ms,
        })
    }

    fn set_decision(&mut self, d: route_decision::Decision) {
        let d = lateen_sdk::route::Decision {
            cluster: d.cluster,
            route_name: d.route_name,
            timeout_ms: d.timeout_ms,
            route_id: d.route_id,
            ..Default::default()
        };
        for (path, value) in d.properties() {
            let name = lateen_sdk::route::dotted(path).into_owned();
            self.cur.props.insert(name, Bytes::from(value));
        }
        // A component's decision replaces the route id too, even with none.
        if d.route_id.is_empty() {
            let id = lateen_sdk::route::dotted(lateen_sdk::route::ROUTE_ID).into_owned();
            self.cur.props.insert(id, Bytes::new());
        }
    }
}

impl shared_store::Host for HostState {
    fn take(
        &mut self,
        req: shared_store::TakeRequest,
    ) -> Result<shared_store::TakeResponse, shared_store::StoreError> {
        self.clusters
            .shared_store_take(&lateen_sdk::store::TakeRequest {
                key: req.key,
                max_tokens: req.max_tokens,
                tokens_per_fill: req.tokens_per_fill,
                fill_interval_ms: req.fill_interval_ms,
            })
            .map(|t| shared_store::TakeResponse {
                allowed: t.allowed,
                remaining: t.remaining,
                reset_ms: t.reset_ms,
            })
            .map_err(|e| match e {
                StoreTakeError::NotConfigured => shared_store::StoreError::NotConfigured,
                StoreTakeError::Unavailable(why) => shared_store::StoreError::Unavailable(why),
            })
    }
}

/// A component instance on one worker: its `filter` resources (one per configuration,
/// keyed by the root id the chain knows them by) and the `exchange` of each live stream.
pub struct ComponentVm {
    store: Store<HostState>,
    bindings: Filter,
    roots: rustc_hash::FxHashMap<u32, ResourceAny>,
    streams: rustc_hash::FxHashMap<u32, ResourceAny>,
    next_context: u32,
    deadline: u64,
    broken: Option<String>,
    stats: Arc<PluginStats>,
}

impl Drop for ComponentVm {
    fn drop(&mut self) {
        self.stats.instances.dec();
    }
}

impl ComponentVm {
    pub(crate) fn new(
        mut store: Store<HostState>,
        pre: &InstancePre<HostState>,
        deadline: u64,
        stats: Arc<PluginStats>,
    ) -> Result<Self, WasmError> {
        let bindings = FilterPre::new(pre.clone())
            .and_then(|p| p.instantiate(&mut store))
            .map_err(|e| WasmError::Instantiate(format!("{e:#}")))?;
        stats.instances.inc();
        Ok(ComponentVm {
            store,
            bindings,
            roots: Default::default(),
            streams: Default::default(),
            next_context: 1,
            deadline,
            broken: None,
            stats,
        })
    }

    pub fn host_state(&mut self) -> &mut HostState {
        self.store.data_mut()
    }

    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    fn alloc_context(&mut self) -> u32 {
        let id = self.next_context;
        self.next_context = self.next_context.wrapping_add(1).max(1);
        id
    }

    // One guest call with a fresh deadline; a trap breaks the instance.
    fn call<R>(
        &mut self,
        phase: &'static str,
        f: impl FnOnce(&mut Store<HostState>, &handler::Guest) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let handler = self.bindings.lateen_filter_handler();
        crate::vm::guarded(
            &mut self.store,
            self.deadline,
            &self.stats,
            &mut self.broken,
            phase,
            |s| f(s, handler),
        )
    }

    /// `filter.create(config)`: a refusal is logged (so `lateen validate` and the harness
    /// show why) and rejects the configuration.
    pub fn create_root(&mut self, configuration: Bytes) -> Result<u32, WasmError> {
        let config = String::from_utf8_lossy(&configuration).into_owned();
        let created = self
            .call("filter.create", |s, h| h.filter().call_create(s, &config))
            .map_err(|e| WasmError::Trap {
                phase: "filter.create",
                message: e.to_string(),
            })?;
        match created {
            Ok(filter) => {
                let id = self.alloc_context();
                self.roots.insert(id, filter);
                Ok(id)
            }
            Err(message) => {
                log::Host::log(self.store.data_mut(), log::Level::Error, message);
                Err(WasmError::ConfigureRejected)
            }
        }
    }

    pub fn create_stream(&mut self, root: u32) -> Result<u32, CallError> {
        let Some(filter) = self.roots.get(&root).copied() else {
            return Err(CallError::Broken(format!("no filter for root {root}")));
        };
        let exchange = self.call("filter.exchange", |s, h| {
            h.filter().call_exchange(s, filter)
        })?;
        let id = self.alloc_context();
        self.streams.insert(id, exchange);
        Ok(id)
    }

    // Runs an exchange callback with `st` swapped into the store.
    fn with_stream(
        &mut self,
        ctx: u32,
        st: &mut Box<StreamState>,
        phase: &'static str,
        f: impl FnOnce(
            &mut Store<HostState>,
            &handler::Guest,
            ResourceAny,
        ) -> wasmtime::Result<types::Action>,
    ) -> Result<Action, CallError> {
        let Some(exchange) = self.streams.get(&ctx).copied() else {
            return Ok(Action::Continue);
        };
        std::mem::swap(&mut self.store.data_mut().cur, st);
        let r = self.call(phase, |s, h| f(s, h, exchange));
        std::mem::swap(&mut self.store.data_mut().cur, st);
        Ok(match r? {
            types::Action::Continue => Action::Continue,
            types::Action::Buffer => Action::Pause,
            types::Action::Respond(lr) => {
                st.local_response = Some(LocalResponse {
                    status: lr.status,
                    details: lr.details,
                    body: Bytes::from(lr.body),
                    headers: lr
                        .headers
                        .into_iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), Bytes::from(v)))
                        .collect(),
                    grpc_status: -1,
                });
                Action::Pause
            }
        })
    }

    pub fn on_headers(
        &mut self,
        ctx: u32,
        st: &mut Box<StreamState>,
        response: bool,
        eos: bool,
    ) -> Result<Action, CallError> {
        let r = if response {
            self.with_stream(ctx, st, "on-response-headers", |s, h, x| {
                let map = Resource::new_borrow(RESPONSE_HEADERS);
                h.exchange().call_on_response_headers(s, x, map, eos)
            })
        } else {
            self.with_stream(ctx, st, "on-request-headers", |s, h, x| {
                let map = Resource::new_borrow(REQUEST_HEADERS);
                h.exchange().call_on_request_headers(s, x, map, eos)
            })
        };
        // `buffer` means something only for bodies.
        r.map(|a| match a {
            Action::Pause if st.local_response.is_none() => Action::Continue,
            a => a,
        })
    }

    pub fn on_body(
        &mut self,
        ctx: u32,
        st: &mut Box<StreamState>,
        response: bool,
        eos: bool,
    ) -> Result<Action, CallError> {
        if response {
            self.with_stream(ctx, st, "on-response-body", |s, h, x| {
                let body = Resource::new_borrow(RESPONSE_BODY);
                h.exchange().call_on_response_body(s, x, body, eos)
            })
        } else {
            self.with_stream(ctx, st, "on-request-body", |s, h, x| {
                let body = Resource::new_borrow(REQUEST_BODY);
                h.exchange().call_on_request_body(s, x, body, eos)
            })
        }
    }

    /// `on-done`, then the exchange is dropped.
    pub fn finish_stream(&mut self, ctx: u32, st: &mut Box<StreamState>) -> Result<(), CallError> {
        let Some(exchange) = self.streams.remove(&ctx) else {
            return Ok(());
        };
        std::mem::swap(&mut self.store.data_mut().cur, st);
        let r = self.call("on-done", |s, h| {
            h.exchange().call_on_done(&mut *s, exchange)?;
            exchange.resource_drop(s)
        });
        std::mem::swap(&mut self.store.data_mut().cur, st);
        r
    }

    /// Drops the `filter` resource of a root whose configuration left the config.
    pub fn delete_root(&mut self, root: u32) -> Result<(), CallError> {
        let Some(filter) = self.roots.remove(&root) else {
            return Ok(());
        };
        self.call("filter.drop", |s, _| filter.resource_drop(s))
    }

    /// Bytes of linear memory in use, as the limiter last allowed it.
    pub fn memory_bytes(&mut self) -> usize {
        self.store.data().component_memory
    }
}
