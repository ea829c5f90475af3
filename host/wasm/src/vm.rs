//! One plugin instance (a "VM" in proxy-wasm terms), owned by one worker thread. It holds
//! root contexts (one per distinct plugin configuration) and the stream contexts of the
//! requests that worker is serving. Calls are synchronous and bounded by the epoch deadline.

use crate::component::ComponentVm;
use crate::engine::Pre;
use crate::engine::{CompiledModule, Runtime, WasmError};
use crate::state::{
    CallResponse, ClusterResolver, HostState, PendingCall, PluginIdentity, RemoteAction,
    StreamState,
};
use crate::types::Action;
use bytes::Bytes;
use lateen_core::stats::{PluginStats, CPU_SAMPLE_EVERY};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::{Instance, InstancePre, Store, StoreLimitsBuilder, Trap, TypedFunc};

/// A failed callback. The VM is unusable afterwards (its memory may be inconsistent).
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("plugin trapped in {phase}: {message}")]
    Trap {
        phase: &'static str,
        message: String,
    },
    #[error("plugin exceeded its callback deadline in {phase}")]
    Timeout { phase: &'static str },
    #[error("plugin instance is not available: {0}")]
    Broken(String),
}

/// Runs one guest call of either kind of instance with a fresh deadline, counts it and its
/// time, and turns a trap or an overrun into the error that marks the instance broken.
pub(crate) fn guarded<R>(
    store: &mut Store<HostState>,
    deadline: u64,
    stats: &PluginStats,
    broken: &mut Option<String>,
    phase: &'static str,
    f: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<R>,
) -> Result<R, CallError> {
    if let Some(b) = broken {
        return Err(CallError::Broken(b.clone()));
    }
    store.set_epoch_deadline(deadline);
    let r = if stats.callbacks.inc_prev().is_multiple_of(CPU_SAMPLE_EVERY) {
        let started = std::time::Instant::now();
        let r = f(store);
        stats
            .cpu_ns
            .add(started.elapsed().as_nanos() as u64 * CPU_SAMPLE_EVERY);
        r
    } else {
        f(store)
    };
    r.map_err(|e| {
        let err = if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            stats.timeouts.inc();
            CallError::Timeout { phase }
        } else {
            stats.traps.inc();
            CallError::Trap {
                phase,
                message: format!("{e:#}"),
            }
        };
        *broken = Some(err.to_string());
        err
    })
}

type F1 = TypedFunc<i32, ()>;
type F1R = TypedFunc<i32, i32>;
type F2 = TypedFunc<(i32, i32), ()>;
type F2R = TypedFunc<(i32, i32), i32>;
type F3R = TypedFunc<(i32, i32, i32), i32>;
type F5 = TypedFunc<(i32, i32, i32, i32, i32), ()>;

/// Header callbacks: ABI 0.2.x passes end_of_stream, 0.1.0 does not.
enum HeadersFn {
    V2(F3R),
    V1(F2R),
}

struct Exports {
    context_create: F2,
    vm_start: Option<F2R>,
    configure: Option<F2R>,
    tick: Option<F1>,
    request_headers: Option<HeadersFn>,
    request_body: Option<F3R>,
    request_trailers: Option<F2R>,
    response_headers: Option<HeadersFn>,
    response_body: Option<F3R>,
    response_trailers: Option<F2R>,
    http_call_response: Option<F5>,
    done: Option<F1R>,
    log: Option<F1>,
    delete: Option<F1>,
}

impl HeadersFn {
    fn call(&self, s: &mut Store<HostState>, ctx: u32, n: i32, eos: bool) -> wasmtime::Result<i32> {
        match self {
            HeadersFn::V2(f) => f.call(s, (ctx as i32, n, eos as i32)),
            HeadersFn::V1(f) => f.call(s, (ctx as i32, n)),
        }
    }
}

/// A proxy-wasm module instance.
pub struct ModuleVm {
    g: Guest,
    f: Exports,
    next_context: u32,
    /// Stream context → its root, so a stream asking for ticks gets them on its root.
    parents: rustc_hash::FxHashMap<u32, u32>,
}

/// An instance's store and what guards each call into it. Kept apart from the exports so
/// that a call borrows its function from [`Exports`] while the store is borrowed mutably:
/// cloning a TypedFunc instead clones its FuncType, which costs atomic reference counts in
/// the engine's type registry on every callback.
struct Guest {
    store: Store<HostState>,
    deadline: u64,
    broken: Option<String>,
    stats: Arc<PluginStats>,
    /// Linear memory last added to `stats.memory_bytes`.
    memory_counted: i64,
}

impl Drop for ModuleVm {
    fn drop(&mut self) {
        self.g.stats.instances.dec();
        self.g.stats.memory_bytes.add(-self.g.memory_counted);
    }
}

impl ModuleVm {
    /// Instantiates a compiled module and runs its initializer.
    fn new(
        mut store: Store<HostState>,
        pre: &InstancePre<HostState>,
        deadline: u64,
        stats: Arc<PluginStats>,
    ) -> Result<Self, WasmError> {
        let instance = pre
            .instantiate(&mut store)
            .map_err(|e| WasmError::Instantiate(format!("{e:#}")))?;
        let f = Exports::find(&instance, &mut store)?;
        store.data_mut().memory = instance.get_memory(&mut store, "memory");
        store.data_mut().alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "proxy_on_memory_allocate")
            .or_else(|_| instance.get_typed_func::<i32, i32>(&mut store, "malloc"))
            .ok();
        // Reactor modules export _initialize; command-style ones _start (then main is run).
        let init = instance
            .get_typed_func::<(), ()>(&mut store, "_initialize")
            .or_else(|_| instance.get_typed_func::<(), ()>(&mut store, "_start"));
        if let Ok(init) = init {
            init.call(&mut store, ()).map_err(|e| WasmError::Trap {
                phase: "_initialize",
                message: format!("{e:#}"),
            })?;
        }
        stats.instances.inc();
        let mut g = Guest {
            store,
            deadline,
            broken: None,
            stats,
            memory_counted: 0,
        };
        g.count_memory();
        Ok(ModuleVm {
            g,
            f,
            next_context: 1,
            parents: Default::default(),
        })
    }

    /// The host side of this instance, for embedders that drive a VM directly (the filter
    /// test harness reads captured logs and sets the clock through it).
    pub fn host_state(&mut self) -> &mut HostState {
        self.g.store.data_mut()
    }

    /// Whether a trap made this instance unusable.
    pub fn broken(&self) -> Option<&str> {
        self.g.broken.as_deref()
    }

    /// Creates a root context, starts it and hands it its configuration.
    pub fn create_root(&mut self, configuration: Bytes) -> Result<u32, WasmError> {
        let id = self.alloc_context();
        let to_wasm = |e: CallError| match e {
            CallError::Trap { phase, message } => WasmError::Trap { phase, message },
            other => WasmError::Trap {
                phase: "start",
                message: other.to_string(),
            },
        };
        self.g.store.data_mut().active_context = id;
        let cc = &self.f.context_create;
        self.g
            .call("proxy_on_context_create", |s| cc.call(s, (id as i32, 0)))
            .map_err(to_wasm)?;
        let vm_cfg_len = self.g.store.data().plugin.vm_configuration.len() as i32;
        if let Some(f) = &self.f.vm_start {
            let ok = self
                .g
                .call("proxy_on_vm_start", |s| f.call(s, (id as i32, vm_cfg_len)))
                .map_err(to_wasm)?;
            if ok == 0 {
                return Err(WasmError::StartRejected);
            }
        }
        let len = configuration.len() as i32;
        self.g.store.data_mut().plugin_configuration = configuration;
        if let Some(f) = &self.f.configure {
            let ok = self
                .g
                .call("proxy_on_configure", |s| f.call(s, (id as i32, len)))
                .map_err(to_wasm)?;
            if ok == 0 {
                return Err(WasmError::ConfigureRejected);
            }
        }
        self.g.count_memory();
        Ok(id)
    }

    fn alloc_context(&mut self) -> u32 {
        let id = self.next_context;
        self.next_context = self.next_context.wrapping_add(1).max(1);
        id
    }

    /// Creates a stream context under `root`.
    pub fn create_stream(&mut self, root: u32) -> Result<u32, CallError> {
        let id = self.alloc_context();
        let cc = &self.f.context_create;
        self.g.call("proxy_on_context_create", |s| {
            cc.call(s, (id as i32, root as i32))
        })?;
        self.parents.insert(id, root);
        Ok(id)
    }

    pub fn on_request_headers(
        &mut self,
        ctx: u32,
        st: &mut Box<StreamState>,
        eos: bool,
    ) -> Result<Action, CallError> {
        let Some(f) = &self.f.request_headers else {
            return Ok(Action::Continue);
        };
        let n = st.req_headers.len() as i32;
        self.g
            .with_stream(ctx, st, "on_request_headers", |s| f.call(s, ctx, n, eos))
            .map(Action::from_raw)
    }

    pub fn on_response_headers(
        &mut self,
        ctx: u32,
        st: &mut Box<StreamState>,
        eos: bool,
    ) -> Result<Action, CallError> {
        let Some(f) = &self.f.response_headers else {
            return Ok(Action::Continue);
        };
        let n = st.resp_headers.len() as i32;
        self.g
            .with_stream(ctx, st, "on_response_headers", |s| f.call(s, ctx, n, eos))
            .map(Action::from_raw)
    }

    /// Body callback; `size` is the cumulative buffered size.
    pub fn on_body(
        &mut self,
        ctx: u32,
        st: &mut Box<StreamState>,
        response: bool,
        eos: bool,
    ) -> Result<Action, CallError> {
        let (f, size, phase) = if response {
            (
                &self.f.response_body,
                st.resp_body.len(),
                "on_response_body",
            )
        } else {
            (&self.f.request_body, st.req_body.len(), "on_request_body")
        };
        let Some(f) = f else {
            return Ok(Action::Continue);
        };
        self.g
            .with_stream(ctx, st, phase, |s| {
                f.call(s, (ctx as i32, size as i32, eos as i32))
            })
            .map(Action::from_raw)
    }

    pub fn on_trailers(
        &mut self,
        ctx: u32,
        st: &mut Box<StreamState>,
        response: bool,
    ) -> Result<Action, CallError> {
        let (f, n, phase) = if response {
            (
                &self.f.response_trailers,
                st.resp_trailers.len(),
                "on_response_trailers",
            )
        } else {
            (
                &self.f.request_trailers,
                st.req_trailers.len(),
                "on_request_trailers",
            )
        };
        let Some(f) = f else {
            return Ok(Action::Continue);
        };
        self.g
            .with_stream(ctx, st, phase, |s| f.call(s, (ctx as i32, n as i32)))
            .map(Action::from_raw)
    }

    /// Delivers an http_call answer (`None`: the call failed) to the context that made it.
    pub fn on_http_call_response(
        &mut self,
        ctx: u32,
        token: u32,
        st: &mut Box<StreamState>,
        response: Option<CallResponse>,
    ) -> Result<(), CallError> {
        let Some(f) = &self.f.http_call_response else {
            return Ok(());
        };
        let (nh, nb, nt) = response.as_ref().map_or((0, 0, 0), |r| {
            (r.headers.len(), r.body.len(), r.trailers.len())
        });
        self.g.store.data_mut().call_response = response;
        let r = self.g.with_stream(ctx, st, "on_http_call_response", |s| {
            f.call(
                s,
                (ctx as i32, token as i32, nh as i32, nb as i32, nt as i32),
            )
        });
        self.g.store.data_mut().call_response = None;
        r
    }

    pub fn on_tick(&mut self, root: u32) -> Result<(), CallError> {
        let Some(f) = &self.f.tick else {
            return Ok(());
        };
        let mut st = Box::<StreamState>::default();
        let r = self
            .g
            .with_stream(root, &mut st, "on_tick", |s| f.call(s, root as i32));
        self.g.count_memory();
        r
    }

    /// Ends a stream context: on_done, on_log, on_delete (Envoy's order).
    pub fn finish_stream(&mut self, ctx: u32, st: &mut Box<StreamState>) -> Result<(), CallError> {
        self.parents.remove(&ctx);
        if let Some(f) = &self.f.done {
            self.g
                .with_stream(ctx, st, "on_done", |s| f.call(s, ctx as i32))?;
        }
        if let Some(f) = &self.f.log {
            self.g
                .with_stream(ctx, st, "on_log", |s| f.call(s, ctx as i32))?;
        }
        if let Some(f) = &self.f.delete {
            self.g
                .with_stream(ctx, st, "on_delete", |s| f.call(s, ctx as i32))?;
        }
        self.g.count_memory();
        Ok(())
    }

    /// Ends a root context whose configuration left the config: on_done, then on_delete.
    /// A root that answers on_done with false (not done yet) is deleted all the same: no
    /// stream can reach it any more, and Lateen does not keep roots alive for proxy_done.
    pub fn delete_root(&mut self, root: u32) -> Result<(), CallError> {
        let mut st = Box::<StreamState>::default();
        if let Some(f) = &self.f.done {
            self.g.with_stream(root, &mut st, "on_done", |s| {
                f.call(s, root as i32).map(|_| ())
            })?;
        }
        if let Some(f) = &self.f.delete {
            self.g
                .with_stream(root, &mut st, "on_delete", |s| f.call(s, root as i32))?;
        }
        Ok(())
    }

    /// Tick periods requested since the last look, by root context.
    pub fn take_tick_requests(&mut self) -> Vec<(u32, Duration)> {
        let mut reqs = std::mem::take(&mut self.g.store.data_mut().tick_requests);
        for (ctx, _) in &mut reqs {
            if let Some(root) = self.parents.get(ctx) {
                *ctx = *root;
            }
        }
        reqs
    }

    /// Bytes of linear memory in use.
    pub fn memory_bytes(&mut self) -> usize {
        self.g.memory_bytes()
    }
}

impl Guest {
    // Runs one guest call with a fresh deadline; a trap breaks the VM.
    fn call<R>(
        &mut self,
        phase: &'static str,
        f: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        guarded(
            &mut self.store,
            self.deadline,
            &self.stats,
            &mut self.broken,
            phase,
            f,
        )
    }

    // Runs a stream callback with `st` swapped into the store: boxed, so that the swap moves
    // a pointer and not the whole state, twice per callback.
    fn with_stream<R>(
        &mut self,
        ctx: u32,
        st: &mut Box<StreamState>,
        phase: &'static str,
        f: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        std::mem::swap(&mut self.store.data_mut().cur, st);
        let data = self.store.data_mut();
        data.active_context = ctx;
        data.cur_context = ctx;
        let r = self.call(phase, f);
        self.store.data_mut().cur_context = 0;
        std::mem::swap(&mut self.store.data_mut().cur, st);
        r
    }

    // Memory only grows while an instance lives. The gauge is brought up to date when a
    // stream ends and after root callbacks, not after every callback: reading the size
    // costs a store lookup, and a request makes seven callbacks per plugin.
    fn count_memory(&mut self) {
        let now = self.memory_bytes() as i64;
        if now != self.memory_counted {
            self.stats.memory_bytes.add(now - self.memory_counted);
            self.memory_counted = now;
        }
    }

    fn memory_bytes(&mut self) -> usize {
        match self.store.data().memory {
            Some(m) => m.data_size(&self.store),
            None => 0,
        }
    }
}

impl Exports {
    fn find(i: &Instance, s: &mut Store<HostState>) -> Result<Self, WasmError> {
        let context_create = i
            .get_typed_func::<(i32, i32), ()>(&mut *s, "proxy_on_context_create")
            .map_err(|_| {
                WasmError::Instantiate(
                    "not a proxy-wasm module: no proxy_on_context_create export".into(),
                )
            })?;
        let headers = |s: &mut Store<HostState>, name: &str| {
            i.get_typed_func::<(i32, i32, i32), i32>(&mut *s, name)
                .map(HeadersFn::V2)
                .or_else(|_| {
                    i.get_typed_func::<(i32, i32), i32>(&mut *s, name)
                        .map(HeadersFn::V1)
                })
                .ok()
        };
        Ok(Exports {
            context_create,
            vm_start: i.get_typed_func(&mut *s, "proxy_on_vm_start").ok(),
            configure: i.get_typed_func(&mut *s, "proxy_on_configure").ok(),
            tick: i.get_typed_func(&mut *s, "proxy_on_tick").ok(),
            request_headers: headers(s, "proxy_on_request_headers"),
            request_body: i.get_typed_func(&mut *s, "proxy_on_request_body").ok(),
            request_trailers: i.get_typed_func(&mut *s, "proxy_on_request_trailers").ok(),
            response_headers: headers(s, "proxy_on_response_headers"),
            response_body: i.get_typed_func(&mut *s, "proxy_on_response_body").ok(),
            response_trailers: i.get_typed_func(&mut *s, "proxy_on_response_trailers").ok(),
            http_call_response: i
                .get_typed_func(&mut *s, "proxy_on_http_call_response")
                .ok(),
            done: i.get_typed_func(&mut *s, "proxy_on_done").ok(),
            log: i.get_typed_func(&mut *s, "proxy_on_log").ok(),
            delete: i.get_typed_func(&mut *s, "proxy_on_delete").ok(),
        })
    }
}

/// A running plugin instance: a proxy-wasm module or a `lateen:filter` component, driven
/// the same way by the chain (a component has no ticks, http_calls or trailers).
pub struct Vm(Kind);

// One per plugin per worker, made once and never moved on the request path: the size
// difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Kind {
    Module(ModuleVm),
    Component(ComponentVm),
}

impl Vm {
    /// Instantiates a compiled plugin and runs its initializer.
    pub fn new(
        rt: &Runtime,
        module: &CompiledModule,
        plugin: Arc<PluginIdentity>,
        clusters: Arc<dyn ClusterResolver>,
    ) -> Result<Self, WasmError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(rt.opts.memory_limit)
            .instances(64)
            .build();
        let stats = lateen_core::stats::store().plugin(&plugin.name);
        let state = HostState::new(plugin, rt.shared.clone(), clusters, limits);
        let mut store = Store::new(&rt.engine, state);
        store.limiter(|s| s);
        store.epoch_deadline_trap();
        let deadline = rt.deadline_ticks();
        store.set_epoch_deadline(deadline);
        Ok(Vm(match &module.pre {
            Pre::Module(pre) => Kind::Module(ModuleVm::new(store, pre, deadline, stats)?),
            Pre::Component(pre) => Kind::Component(ComponentVm::new(store, pre, deadline, stats)?),
        }))
    }

    /// Whether this is a component (a `lateen:filter` world) rather than a module.
    pub fn is_component(&self) -> bool {
        matches!(self.0, Kind::Component(_))
    }

    /// The host side of this instance, for embedders that drive a VM directly (the filter
    /// test harness reads captured logs and sets the clock through it).
    pub fn host_state(&mut self) -> &mut HostState {
        match &mut self.0 {
            Kind::Module(m) => m.host_state(),
            Kind::Component(c) => c.host_state(),
        }
    }

    /// Whether a trap made this instance unusable.
    pub fn broken(&self) -> Option<&str> {
        match &self.0 {
            Kind::Module(m) => m.broken(),
            Kind::Component(c) => c.broken(),
        }
    }

    /// Creates a root context (a component's `filter`) for a configuration.
    pub fn create_root(&mut self, configuration: Bytes) -> Result<u32, WasmError> {
        match &mut self.0 {
            Kind::Module(m) => m.create_root(configuration),
            Kind::Component(c) => c.create_root(configuration),
        }
    }

    /// Creates a stream context (a component's `exchange`) under `root`.
    pub fn create_stream(&mut self, root: u32) -> Result<u32, CallError> {
        match &mut self.0 {
            Kind::Module(m) => m.create_stream(root),
            Kind::Component(c) => c.create_stream(root),
        }
    }

    pub fn on_request_headers(
        &mut self,
        ctx: u32,
        st: &mut Box<StreamState>,
        eos: bool,
    ) -> Result<Action, CallError> {
        match &mut self.0 {
            Kind::Module(m) => m.on_request_headers(ctx, st, eos),
            Kind::Component(c) => c.on_headers(ctx, st, false, eos),
        }
    }

    pub fn on_response_headers(
        &mut self,
        ctx: u32,
        st: &mut Box<StreamState>,
        eos: bool,
    ) -> Result<Action, CallError> {
        match &mut self.0 {
            Kind::Module(m) => m.on_response_headers(ctx, st, eos),
            Kind::Component(c) => c.on_headers(ctx, st, true, eos),
        }
    }

    /// Body callback; `size` is the cumulative buffered size.
    pub fn on_body(
        &mut self,
        ctx: u32,
        st: &mut Box<StreamState>,
        response: bool,
        eos: bool,
    ) -> Result<Action, CallError> {
        match &mut self.0 {
            Kind::Module(m) => m.on_body(ctx, st, response, eos),
            Kind::Component(c) => c.on_body(ctx, st, response, eos),
        }
    }

    pub fn on_trailers(
        &mut self,
        ctx: u32,
        st: &mut Box<StreamState>,
        response: bool,
    ) -> Result<Action, CallError> {
        match &mut self.0 {
            Kind::Module(m) => m.on_trailers(ctx, st, response),
            Kind::Component(_) => Ok(Action::Continue),
        }
    }

    /// Delivers an http_call answer (`None`: the call failed) to the context that made it.
    pub fn on_http_call_response(
        &mut self,
        ctx: u32,
        token: u32,
        st: &mut Box<StreamState>,
        response: Option<CallResponse>,
    ) -> Result<(), CallError> {
        match &mut self.0 {
            Kind::Module(m) => m.on_http_call_response(ctx, token, st, response),
            Kind::Component(_) => Ok(()),
        }
    }

    pub fn on_tick(&mut self, root: u32) -> Result<(), CallError> {
        match &mut self.0 {
            Kind::Module(m) => m.on_tick(root),
            Kind::Component(_) => Ok(()),
        }
    }

    /// Ends a stream context: on_done, on_log, on_delete (Envoy's order).
    pub fn finish_stream(&mut self, ctx: u32, st: &mut Box<StreamState>) -> Result<(), CallError> {
        match &mut self.0 {
            Kind::Module(m) => m.finish_stream(ctx, st),
            Kind::Component(c) => c.finish_stream(ctx, st),
        }
    }

    /// Ends a root context (a component's `filter`) whose configuration left the config.
    pub fn delete_root(&mut self, root: u32) -> Result<(), CallError> {
        match &mut self.0 {
            Kind::Module(m) => m.delete_root(root),
            Kind::Component(c) => c.delete_root(root),
        }
    }

    /// http_calls issued since the last look.
    pub fn take_pending_calls(&mut self) -> Vec<PendingCall> {
        std::mem::take(&mut self.host_state().pending_calls)
    }

    /// Tick periods requested since the last look, by root context.
    pub fn take_tick_requests(&mut self) -> Vec<(u32, Duration)> {
        match &mut self.0 {
            Kind::Module(m) => m.take_tick_requests(),
            Kind::Component(_) => Vec::new(),
        }
    }

    /// Actions callbacks aimed at other streams since the last look.
    pub fn take_remote_actions(&mut self) -> Vec<RemoteAction> {
        std::mem::take(&mut self.host_state().remote)
    }

    /// Bytes of linear memory in use.
    pub fn memory_bytes(&mut self) -> usize {
        match &mut self.0 {
            Kind::Module(m) => m.memory_bytes(),
            Kind::Component(c) => c.memory_bytes(),
        }
    }
}
