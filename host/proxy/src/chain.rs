//! Drives one HTTP stream through a listener's wasm filters: request headers, body and
//! trailers in chain order, the response in reverse order, then on_done/on_log/on_delete.
//! Each worker owns its plugin instances ([`VmSlot`]), so no lock is taken to call in.

use crate::upstream::Upstream;
use bytes::Bytes;
use lateen_model::scope::{Choice, RuleAction, Scope};
use lateen_model::{FailStrategy, FilterSpec, PluginSpec};
use lateen_wasm::state::{LocalResponse, PendingCall, RemoteAction};
use lateen_wasm::{Action, ClusterResolver, Runtime, StreamState, Vm, WasmError};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// What ends a stream's pause when another context acted on it.
enum Wake {
    Resume,
    Local(LocalResponse),
}

/// One live plugin instance and its bookkeeping. Streams hold it while they run, so an
/// instance being recycled drains: it serves the streams it started and is dropped with
/// the last of them.
pub struct Instance {
    vm: RefCell<Vm>,
    generation: u64,
    /// Live root contexts by configuration. Chains and streams hold them; the last one
    /// dropped ends the root (on_done, on_delete), as Envoy ends a filter config's root.
    roots: RefCell<HashMap<Bytes, Weak<RootRef>>>,
    /// Tick period per root context; the root's tick task reads it before every sleep.
    ticks: RefCell<HashMap<u32, Rc<Cell<Duration>>>>,
    /// Paused streams waiting for another context to resume them.
    waiters: RefCell<rustc_hash::FxHashMap<u32, oneshot::Sender<Wake>>>,
    /// Wake-ups that arrived before their stream started waiting.
    early: RefCell<rustc_hash::FxHashMap<u32, Wake>>,
    /// Streams started on it, for `recycle-after-requests`.
    streams: Cell<u64>,
}

impl Instance {
    fn broken(&self) -> bool {
        self.vm.borrow().broken().is_some()
    }

    // Whether `root` is a live root context (a root-made http_call answers only to one).
    fn has_root(&self, root: u32) -> bool {
        self.roots
            .borrow()
            .values()
            .any(|r| r.upgrade().is_some_and(|r| r.id == root))
    }
}

/// A root context on one instance. Held by the chain filters whose configuration it runs
/// and by the streams under it; a plugin kept across config changes thus keeps the roots
/// still in use and ends the others once their last stream is done.
pub struct RootRef {
    id: u32,
    generation: u64,
    config: Bytes,
    inst: Weak<Instance>,
    plugin: Arc<str>,
}

impl Drop for RootRef {
    fn drop(&mut self) {
        let Some(inst) = self.inst.upgrade() else {
            return;
        };
        if let Ok(mut roots) = inst.roots.try_borrow_mut() {
            if roots
                .get(&self.config)
                .is_some_and(|w| std::ptr::eq(w.as_ptr(), self))
            {
                roots.remove(&self.config);
            }
        }
        // Its tick task sees the zero period and stops.
        if let Some(cell) = inst.ticks.borrow_mut().remove(&self.id) {
            cell.set(Duration::ZERO);
        }
        if inst.broken() {
            return;
        }
        // Dropped while its VM is mid-call (it cannot be: roots are dropped by chains and
        // streams, never from inside a callback): the root then ends with the instance.
        let Ok(mut vm) = inst.vm.try_borrow_mut() else {
            return;
        };
        match vm.delete_root(self.id) {
            Ok(()) => tracing::debug!(plugin = %self.plugin, root = self.id, "root context ended"),
            Err(e) => {
                tracing::warn!(plugin = %self.plugin, "plugin failed ending a root context: {e}")
            }
        }
    }
}

/// One plugin's instances on one worker: the current one, recreated after a trap and
/// recycled by request count or memory ceiling.
pub struct VmSlot {
    pub spec: Arc<PluginSpec>,
    rt: Arc<Runtime>,
    resolver: Arc<dyn ClusterResolver>,
    current: RefCell<Option<Rc<Instance>>>,
    generation: Cell<u64>,
    /// Set after a failed (re)instantiation, so a crash loop costs at most one attempt per
    /// backoff period.
    retry_after: Cell<Option<std::time::Instant>>,
    upstream: Weak<Upstream>,
}

const RELOAD_BACKOFF: Duration = Duration::from_millis(200);

impl VmSlot {
    pub fn new(
        spec: Arc<PluginSpec>,
        rt: Arc<Runtime>,
        resolver: Arc<dyn ClusterResolver>,
        upstream: Weak<Upstream>,
    ) -> Rc<Self> {
        Rc::new(VmSlot {
            spec,
            rt,
            resolver,
            current: RefCell::new(None),
            generation: Cell::new(0),
            retry_after: Cell::new(None),
            upstream,
        })
    }

    /// The instance new streams go to: the current one, or a new one when there is none,
    /// it trapped, or it is due for recycling (the old one then drains).
    fn instance(&self) -> Result<Rc<Instance>, WasmError> {
        if let Some(inst) = &*self.current.borrow() {
            if !inst.broken() && !self.due_for_recycling(inst) {
                return Ok(inst.clone());
            }
        }
        if let Some(t) = self.retry_after.get() {
            if std::time::Instant::now() < t {
                return Err(WasmError::Instantiate(
                    "plugin is backing off after a failure".into(),
                ));
            }
        }
        let recycled = self.current.borrow().as_ref().is_some_and(|i| !i.broken());
        match Vm::new(
            &self.rt,
            &self.spec.module,
            self.spec.identity.clone(),
            self.resolver.clone(),
        ) {
            Ok(vm) => {
                let generation = self.generation.get() + 1;
                self.generation.set(generation);
                self.retry_after.set(None);
                let inst = Rc::new(Instance {
                    vm: RefCell::new(vm),
                    generation,
                    roots: RefCell::default(),
                    ticks: RefCell::default(),
                    waiters: RefCell::default(),
                    early: RefCell::default(),
                    streams: Cell::new(0),
                });
                if recycled {
                    lateen_core::stats::store()
                        .plugin(&self.spec.name)
                        .recycles
                        .inc();
                    tracing::info!(plugin = %self.spec.name, "plugin instance recycled; the old one drains");
                }
                *self.current.borrow_mut() = Some(inst.clone());
                Ok(inst)
            }
            Err(e) => {
                self.retry_after
                    .set(Some(std::time::Instant::now() + RELOAD_BACKOFF));
                Err(e)
            }
        }
    }

    fn due_for_recycling(&self, inst: &Instance) -> bool {
        let r = &self.spec.recycle;
        r.after_requests.is_some_and(|n| inst.streams.get() >= n)
            || r.memory_bytes.is_some_and(|max| {
                inst.vm
                    .try_borrow_mut()
                    .is_ok_and(|mut vm| vm.memory_bytes() as u64 >= max)
            })
    }

    /// The root context for `config` on `inst`, created on first use.
    fn root(
        self: &Rc<Self>,
        inst: &Rc<Instance>,
        config: &Bytes,
    ) -> Result<Rc<RootRef>, WasmError> {
        if let Some(r) = inst.roots.borrow().get(config).and_then(Weak::upgrade) {
            return Ok(r);
        }
        let id = inst.vm.borrow_mut().create_root(config.clone())?;
        let r = Rc::new(RootRef {
            id,
            generation: inst.generation,
            config: config.clone(),
            inst: Rc::downgrade(inst),
            plugin: Arc::from(self.spec.name.as_str()),
        });
        inst.roots
            .borrow_mut()
            .insert(config.clone(), Rc::downgrade(&r));
        self.after_call(inst);
        Ok(r)
    }

    /// The root the current instance runs for `config`, if it has one.
    fn live_root(&self, config: &Bytes) -> Option<Rc<RootRef>> {
        let cur = self.current.borrow();
        let inst = cur.as_ref().filter(|i| !i.broken())?;
        let r = inst.roots.borrow().get(config)?.upgrade();
        r
    }

    /// Starts a service plugin: its root context, ticks and calls. The root lives as long
    /// as the returned handle.
    pub fn start_service(self: &Rc<Self>, config: &Bytes) -> Result<Rc<RootRef>, WasmError> {
        let inst = self.instance()?;
        self.root(&inst, config)
    }

    /// Acts on what the last callback asked for besides its own stream: tick periods,
    /// root-context http_calls (`calls`, when the caller does not drive them itself) and
    /// actions on other streams.
    fn after_call_with(self: &Rc<Self>, inst: &Rc<Instance>, calls: Vec<PendingCall>) {
        let (ticks, remote) = {
            let mut vm = inst.vm.borrow_mut();
            (vm.take_tick_requests(), vm.take_remote_actions())
        };
        if !ticks.is_empty() {
            self.set_ticks(inst, ticks);
        }
        if !calls.is_empty() {
            self.spawn_root_calls(inst, calls);
        }
        for action in remote {
            let (ctx, wake) = match action {
                RemoteAction::Resume { context, .. } => (context, Wake::Resume),
                RemoteAction::LocalResponse { context, response } => {
                    (context, Wake::Local(response))
                }
            };
            match inst.waiters.borrow_mut().remove(&ctx) {
                Some(tx) => {
                    let _ = tx.send(wake);
                }
                None => {
                    inst.early.borrow_mut().insert(ctx, wake);
                }
            }
        }
    }

    fn after_call(self: &Rc<Self>, inst: &Rc<Instance>) {
        let calls = inst.vm.borrow_mut().take_pending_calls();
        self.after_call_with(inst, calls);
    }

    /// Sends http_calls a root context made and delivers the answers back to it, on the
    /// instance that made them (it may be draining by then).
    fn spawn_root_calls(self: &Rc<Self>, inst: &Rc<Instance>, calls: Vec<PendingCall>) {
        for call in calls {
            let slot = self.clone();
            let inst = inst.clone();
            tokio::task::spawn_local(async move {
                let resp = match slot.upstream.upgrade() {
                    Some(u) => u.http_call(&call).await,
                    None => None,
                };
                // The root may have ended meanwhile (its configuration left the config).
                if inst.broken() || !inst.has_root(call.context_id) {
                    return;
                }
                {
                    let mut st = Box::<StreamState>::default();
                    let mut vm = inst.vm.borrow_mut();
                    if let Err(e) =
                        vm.on_http_call_response(call.context_id, call.token, &mut st, resp)
                    {
                        tracing::warn!(plugin = %slot.spec.name, "on_http_call_response failed: {e}");
                        return;
                    }
                }
                slot.after_call(&inst);
            });
        }
    }

    // Applies tick period changes: one task per root context, which re-reads its period
    // before every sleep; a zero period, a trap or the instance's end stops it.
    fn set_ticks(self: &Rc<Self>, inst: &Rc<Instance>, ticks: Vec<(u32, Duration)>) {
        for (root, period) in ticks {
            if let Some(cell) = inst.ticks.borrow().get(&root) {
                cell.set(period);
                continue;
            }
            if period.is_zero() {
                continue;
            }
            let cell = Rc::new(Cell::new(period));
            inst.ticks.borrow_mut().insert(root, cell.clone());
            let (slot, weak) = (Rc::downgrade(self), Rc::downgrade(inst));
            tokio::task::spawn_local(async move {
                loop {
                    let period = cell.get();
                    if period.is_zero() {
                        if let Some(inst) = weak.upgrade() {
                            inst.ticks.borrow_mut().remove(&root);
                        }
                        return;
                    }
                    tokio::time::sleep(period).await;
                    // Stopped while asleep (the root ended).
                    if cell.get().is_zero() {
                        return;
                    }
                    let (Some(slot), Some(inst)) = (slot.upgrade(), weak.upgrade()) else {
                        return;
                    };
                    if inst.broken() {
                        return;
                    }
                    let ticked = inst.vm.borrow_mut().on_tick(root);
                    if let Err(e) = ticked {
                        tracing::warn!(plugin = %slot.spec.name, "on_tick failed: {e}");
                        return;
                    }
                    slot.after_call(&inst);
                }
            });
        }
    }
}

/// Waits until another context resumes (or answers) stream `ctx` of `inst`.
async fn wait_resume(inst: &Instance, ctx: u32, limit: Duration) -> Option<Wake> {
    if let Some(w) = inst.early.borrow_mut().remove(&ctx) {
        return Some(w);
    }
    let (tx, rx) = oneshot::channel();
    inst.waiters.borrow_mut().insert(ctx, tx);
    let r = tokio::time::timeout(limit, rx).await;
    inst.waiters.borrow_mut().remove(&ctx);
    r.ok().and_then(Result::ok)
}

/// One filter of a chain on one worker.
struct ChainFilter {
    slot: Rc<VmSlot>,
    /// The configuration when no `matchRules` entry applies; `None`: the plugin is off then
    /// (`defaultConfigDisable`).
    default: Option<Bytes>,
    /// Root context for `default` (on the instance generation it names), so the
    /// per-request path does not hash the configuration.
    root: RootCache,
    /// A canary version in progressive rollout: its instances and root.
    canary: Option<CanaryFilter>,
    /// `matchRules`, and the root context of each rule's configuration.
    scope: Option<Arc<Scope>>,
    rule_roots: Vec<RootCache>,
}

/// A filter's root context, which also keeps it alive while the chain is in use.
type RootCache = RefCell<Option<Rc<RootRef>>>;

struct CanaryFilter {
    rollout: Arc<crate::rollout::Rollout>,
    slot: Rc<VmSlot>,
    root: RootCache,
    rule_roots: Vec<RootCache>,
}

/// A listener's filter chain on one worker.
pub struct Chain {
    filters: Vec<ChainFilter>,
    /// How the listener normalizes request paths before the filters see them.
    pub path: lateen_core::path::PathNormalization,
}

impl Chain {
    /// The chain of `specs` over this worker's VM `slots`; canary versions count their
    /// streams in `rollouts`.
    pub fn new(
        specs: &[FilterSpec],
        slots: &HashMap<*const PluginSpec, Rc<VmSlot>>,
        rollouts: &crate::rollout::Rollouts,
    ) -> Self {
        Chain {
            filters: specs
                .iter()
                .filter_map(|f| {
                    let default = match &f.scope {
                        Some(sc) => sc.default.clone(),
                        None => Some(f.configuration.clone()),
                    };
                    // Each cache starts with the root a kept instance already runs for its
                    // configuration: the new chain takes it over before the old lets go.
                    let default_cache =
                        |s: &VmSlot| RefCell::new(default.as_ref().and_then(|c| s.live_root(c)));
                    let canary = f.plugin.canary.as_ref().and_then(|c| {
                        let rollout = rollouts.get(c)?;
                        slots.get(&Arc::as_ptr(&c.spec)).map(|s| CanaryFilter {
                            rollout: rollout.clone(),
                            slot: s.clone(),
                            root: default_cache(s),
                            rule_roots: rule_caches(f, s),
                        })
                    });
                    let s = slots.get(&Arc::as_ptr(&f.plugin))?;
                    Some(ChainFilter {
                        slot: s.clone(),
                        root: default_cache(s),
                        default: default.clone(),
                        canary,
                        rule_roots: rule_caches(f, s),
                        scope: f.scope.clone(),
                    })
                })
                .collect(),
            path: Default::default(),
        }
    }

    /// The chain, for a listener that normalizes paths so.
    pub fn with_path(mut self, path: lateen_core::path::PathNormalization) -> Self {
        self.path = path;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Makes its filters' instances and default root contexts now, when the config
    /// changed, so that the first request after a start or a change does not pay for
    /// instantiation and `on_configure`. A failure is left for the request path, which
    /// handles it by the plugin's failStrategy.
    pub fn warm(&self) {
        for f in &self.filters {
            let Some(config) = &f.default else { continue };
            let Ok(inst) = f.slot.instance() else {
                continue;
            };
            let current = f
                .root
                .borrow()
                .as_ref()
                .is_some_and(|r| r.generation == inst.generation);
            if current {
                continue;
            }
            match f.slot.root(&inst, config) {
                Ok(r) => *f.root.borrow_mut() = Some(r),
                Err(e) => tracing::debug!(plugin = %f.slot.spec.name, "not warmed: {e}"),
            }
        }
    }
}

// One root cache per `matchRules` entry, taken over as the default's is.
fn rule_caches(f: &FilterSpec, slot: &VmSlot) -> Vec<RootCache> {
    f.scope.as_ref().map_or_else(Vec::new, |sc| {
        sc.rules
            .iter()
            .map(|r| match &r.action {
                RuleAction::Config(c) => RefCell::new(slot.live_root(c)),
                _ => RefCell::new(None),
            })
            .collect()
    })
}

/// What the chain decided for a phase.
pub enum Verdict {
    Continue,
    /// A plugin answered locally.
    Respond(LocalResponse),
    /// Body: a filter is buffering; do not forward yet.
    Buffer,
}

#[derive(Clone)]
enum Ctx {
    NotCreated,
    /// A stream context on the instance it was created on (which may be draining since),
    /// and the root it runs under, kept until the stream is done.
    Live {
        id: u32,
        inst: Rc<Instance>,
        root: Rc<RootRef>,
    },
    /// The plugin failed open for this stream: skip it.
    Skipped,
}

#[derive(Clone, Copy)]
enum Phase {
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
}

impl Phase {
    fn response(self) -> bool {
        matches!(
            self,
            Phase::ResponseHeaders | Phase::ResponseBody | Phase::ResponseTrailers
        )
    }
}

/// Longest a plugin may keep a stream paused waiting on nothing the host knows about.
const PAUSE_LIMIT: Duration = Duration::from_secs(30);

/// One request's passage through the chain.
pub struct HttpStream {
    chain: Rc<Chain>,
    ctxs: Vec<Ctx>,
    pub state: Box<StreamState>,
    /// A local reply a plugin sent while the request body streamed upstream.
    pub early_reply: Option<LocalResponse>,
    upstream: Rc<Upstream>,
    /// Filters served by their canary version for this stream (bit i = filter i).
    canary: u64,
    /// Canary filters that failed during this stream.
    canary_failed: u64,
    /// Where the stream is logged when it ends.
    pub access_log: Option<Arc<crate::access_log::AccessLog>>,
    /// This proxy's span for the stream, ended when the stream ends.
    pub trace: Option<(Arc<crate::trace::Tracer>, crate::trace::SpanStart)>,
}

impl HttpStream {
    /// `random` samples canary versions for this stream.
    pub fn new(chain: Rc<Chain>, state: StreamState, upstream: Rc<Upstream>, random: u64) -> Self {
        let n = chain.filters.len();
        let mut canary = 0u64;
        for (i, f) in chain.filters.iter().enumerate().take(64) {
            if let Some(c) = &f.canary {
                if c.rollout.pick(random.rotate_left(i as u32 * 7)) {
                    canary |= 1 << i;
                }
            }
        }
        HttpStream {
            chain,
            ctxs: vec![Ctx::NotCreated; n],
            state: Box::new(state),
            early_reply: None,
            upstream,
            canary,
            canary_failed: 0,
            access_log: None,
            trace: None,
        }
    }

    fn uses_canary(&self, i: usize) -> bool {
        i < 64 && self.canary & (1 << i) != 0
    }

    // The instances, root cache and rule root caches serving filter i for this stream.
    fn slot_of(&self, i: usize) -> (&Rc<VmSlot>, &RootCache, &[RootCache]) {
        let f = &self.chain.filters[i];
        match (&f.canary, self.uses_canary(i)) {
            (Some(c), true) => (&c.slot, &c.root, &c.rule_roots),
            _ => (&f.slot, &f.root, &f.rule_roots),
        }
    }

    pub async fn request_headers(&mut self, eos: bool) -> Verdict {
        self.run(Phase::RequestHeaders, eos).await
    }

    pub async fn request_body(&mut self, eos: bool) -> Verdict {
        self.run(Phase::RequestBody, eos).await
    }

    pub async fn request_trailers(&mut self) -> Verdict {
        self.run(Phase::RequestTrailers, true).await
    }

    pub async fn response_headers(&mut self, eos: bool) -> Verdict {
        self.run(Phase::ResponseHeaders, eos).await
    }

    pub async fn response_body(&mut self, eos: bool) -> Verdict {
        self.run(Phase::ResponseBody, eos).await
    }

    pub async fn response_trailers(&mut self) -> Verdict {
        self.run(Phase::ResponseTrailers, true).await
    }

    fn fail(&mut self, i: usize, err: &dyn std::fmt::Display) -> Option<Verdict> {
        if self.uses_canary(i) {
            self.canary_failed |= 1 << i;
        }
        let spec = &self.slot_of(i).0.spec;
        tracing::warn!(plugin = %spec.name, "plugin failed: {err}");
        match spec.fail {
            FailStrategy::Open => {
                self.ctxs[i] = Ctx::Skipped;
                None
            }
            FailStrategy::Close => {
                self.ctxs[i] = Ctx::Skipped;
                Some(Verdict::Respond(LocalResponse {
                    status: 503,
                    details: "wasm_fail_stream".into(),
                    body: Bytes::from_static(b"plugin failed"),
                    headers: Vec::new(),
                    grpc_status: -1,
                }))
            }
        }
    }

    // The configuration filter i runs with for this stream and its root cache: the default,
    // or the first matching `matchRules` entry. `Ok(None)`: the plugin is off here.
    fn config_of(&mut self, i: usize) -> Result<Option<(Bytes, Option<usize>)>, String> {
        let f = &self.chain.filters[i];
        let Some(scope) = f.scope.clone() else {
            return Ok(f.default.clone().map(|c| (c, None)));
        };
        match scope.choose_for(&mut self.state) {
            Choice::Default => Ok(self.chain.filters[i].default.clone().map(|c| (c, None))),
            Choice::Rule(r) => match &scope.rules[r].action {
                RuleAction::Config(c) => Ok(Some((c.clone(), Some(r)))),
                RuleAction::Disable => Ok(None),
                RuleAction::Failed(e) => Err(format!("{}: {e}", scope.rules[r].label)),
            },
        }
    }

    // The context of filter i for this stream and its instance, created on first use.
    fn context(&mut self, i: usize) -> Result<Option<(u32, Rc<Instance>)>, String> {
        let rule = match self.ctxs[i] {
            Ctx::NotCreated => match self.config_of(i)? {
                Some(c) => Some(c),
                None => {
                    self.ctxs[i] = Ctx::Skipped;
                    return Ok(None);
                }
            },
            _ => None,
        };
        let (slot, default_root, rule_roots) = self.slot_of(i);
        match &self.ctxs[i] {
            Ctx::Skipped => Ok(None),
            // A trapped instance refuses the call, which fails the plugin for the stream.
            Ctx::Live { id, inst, .. } => Ok(Some((*id, inst.clone()))),
            Ctx::NotCreated => {
                let inst = slot.instance().map_err(|e| e.to_string())?;
                let (config, rule) = rule.ok_or("no configuration")?;
                let cell = match rule {
                    None => default_root,
                    Some(r) => rule_roots.get(r).ok_or("no root cache for the rule")?,
                };
                let cached = cell
                    .borrow()
                    .as_ref()
                    .filter(|r| r.generation == inst.generation)
                    .cloned();
                let root = match cached {
                    Some(r) => r,
                    None => {
                        let r = slot.root(&inst, &config).map_err(|e| e.to_string())?;
                        // Replacing a root of an older instance drops the chain's hold on
                        // it; its streams still hold it.
                        *cell.borrow_mut() = Some(r.clone());
                        r
                    }
                };
                let id = inst
                    .vm
                    .borrow_mut()
                    .create_stream(root.id)
                    .map_err(|e| e.to_string())?;
                inst.streams.set(inst.streams.get() + 1);
                self.ctxs[i] = Ctx::Live {
                    id,
                    inst: inst.clone(),
                    root,
                };
                Ok(Some((id, inst)))
            }
        }
    }

    async fn run(&mut self, phase: Phase, eos: bool) -> Verdict {
        let n = self.chain.filters.len();
        let order: Box<dyn Iterator<Item = usize>> = if phase.response() {
            Box::new((0..n).rev())
        } else {
            Box::new(0..n)
        };
        for i in order {
            let (ctx, inst) = match self.context(i) {
                Ok(Some(c)) => c,
                Ok(None) => continue,
                Err(e) => match self.fail(i, &e) {
                    Some(v) => return v,
                    None => continue,
                },
            };
            let slot = self.slot_of(i).0.clone();
            let result = {
                let mut vm = inst.vm.borrow_mut();
                let st = &mut self.state;
                let r = match phase {
                    Phase::RequestHeaders => vm.on_request_headers(ctx, st, eos),
                    Phase::ResponseHeaders => vm.on_response_headers(ctx, st, eos),
                    Phase::RequestBody => vm.on_body(ctx, st, false, eos),
                    Phase::ResponseBody => vm.on_body(ctx, st, true, eos),
                    Phase::RequestTrailers => vm.on_trailers(ctx, st, false),
                    Phase::ResponseTrailers => vm.on_trailers(ctx, st, true),
                };
                r.map(|a| (a, vm.take_pending_calls()))
            };
            let (mut action, calls) = match result {
                Ok(r) => r,
                Err(e) => match self.fail(i, &e) {
                    Some(v) => return v,
                    None => continue,
                },
            };
            slot.after_call_with(&inst, Vec::new());
            if let Some(lr) = self.state.local_response.take() {
                return Verdict::Respond(lr);
            }
            if action == Action::Pause || !calls.is_empty() {
                match self.drive_calls(i, &inst, calls, phase, action).await {
                    Ok(a) => action = a,
                    Err(v) => return v,
                }
            }
            if action == Action::Pause {
                // Body pauses buffer until the end of the stream.
                if matches!(phase, Phase::RequestBody | Phase::ResponseBody) && !eos {
                    return Verdict::Buffer;
                }
                // Otherwise another context (a tick, a call answer) resumes the stream.
                match wait_resume(&inst, ctx, PAUSE_LIMIT).await {
                    Some(Wake::Resume) => {}
                    Some(Wake::Local(lr)) => return Verdict::Respond(lr),
                    None => {
                        let e = format!("stream paused for more than {PAUSE_LIMIT:?}");
                        if let Some(v) = self.fail(i, &e) {
                            return v;
                        }
                    }
                }
            }
        }
        Verdict::Continue
    }

    // Runs the http_calls a callback issued (concurrently), delivers each answer, and reports
    // whether the plugin resumed the stream. Err carries a verdict that ends the stream.
    async fn drive_calls(
        &mut self,
        i: usize,
        inst: &Rc<Instance>,
        mut calls: Vec<PendingCall>,
        phase: Phase,
        mut action: Action,
    ) -> Result<Action, Verdict> {
        let slot = self.slot_of(i).0.clone();
        let resumed = |st: &mut StreamState| {
            if phase.response() {
                std::mem::take(&mut st.resume_response)
            } else {
                std::mem::take(&mut st.resume_request)
            }
        };
        let deadline = tokio::time::Instant::now() + PAUSE_LIMIT;
        while !calls.is_empty() {
            let up = self.upstream.clone();
            let futs: Vec<_> = calls
                .iter()
                .map(|c| {
                    let up = up.clone();
                    async move { up.http_call(c).await }
                })
                .collect();
            let answers =
                match tokio::time::timeout_at(deadline, futures_util::future::join_all(futs)).await
                {
                    Ok(a) => a,
                    Err(_) => (0..calls.len()).map(|_| None).collect(),
                };
            let mut next = Vec::new();
            for (call, resp) in calls.drain(..).zip(answers) {
                let r = {
                    let mut vm = inst.vm.borrow_mut();
                    let r = vm.on_http_call_response(
                        call.context_id,
                        call.token,
                        &mut self.state,
                        resp,
                    );
                    r.map(|()| vm.take_pending_calls())
                };
                slot.after_call_with(inst, Vec::new());
                match r {
                    Ok(more) => next.extend(more),
                    Err(e) => {
                        return match self.fail(i, &e) {
                            Some(v) => Err(v),
                            None => Ok(Action::Continue),
                        }
                    }
                }
                if let Some(lr) = self.state.local_response.take() {
                    return Err(Verdict::Respond(lr));
                }
                if resumed(&mut self.state) {
                    action = Action::Continue;
                }
            }
            calls = next;
        }
        Ok(action)
    }

    /// Records a local reply's outcome, with the flags a filter set (`lateen.response_flags`)
    /// and the details it gave (`proxy_send_local_response`).
    pub fn set_local_outcome(&mut self, lr: &LocalResponse) {
        let flags = self
            .state
            .props
            .get("lateen.response_flags")
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .unwrap_or_else(|| "-".into());
        self.set_outcome(lr.status, &flags);
        if !lr.details.is_empty() {
            self.state.response_code_details = lr.details.clone();
        }
    }

    /// Records how the stream ended, for `response.*` properties in on_log and the access
    /// log: `-` flags mean the upstream answered.
    pub fn set_outcome(&mut self, code: u16, flags: &str) {
        self.state.response_code = Some(code);
        if !flags.is_empty() {
            self.state.response_flags = flags.to_string();
        }
        self.state.response_code_details = match flags {
            "-" | "" => "via_upstream",
            f => lateen_model::access_log::details_for_flags(f),
        }
        .to_string();
    }
}

/// The log phase runs when the stream ends, however it ended (a response, a local reply
/// from any filter, a fault abort, a rate limit, an upstream failure, a client reset or a
/// dropped connection): dropping the stream is the one thing every ending shares.
impl Drop for HttpStream {
    fn drop(&mut self) {
        self.log_phase();
    }
}

impl HttpStream {
    /// The log phase: every filter of the chain sees the end of the stream (`on_done`,
    /// `on_log`, `on_delete`), as Envoy calls each filter's log callback for every stream.
    /// A filter the stream never reached (a filter before it answered locally) gets its
    /// context now, so that a metrics filter counts fault aborts, rate limits, denials and
    /// plugin replies. Then the access log and the trace span.
    fn log_phase(&mut self) {
        for i in 0..self.ctxs.len() {
            if matches!(self.ctxs[i], Ctx::NotCreated) {
                if let Err(e) = self.context(i) {
                    let name = &self.slot_of(i).0.spec.name;
                    tracing::debug!(plugin = %name, "no context for the log phase: {e}");
                }
            }
        }
        for (i, f) in self.chain.filters.iter().enumerate() {
            if let (Some(c), true) = (&f.canary, self.uses_canary(i)) {
                c.rollout
                    .record(self.canary_failed & (1 << i) != 0, self.state.response_code);
            }
        }
        for i in 0..self.ctxs.len() {
            // The root outlives the borrow of the VM below, so it ends after the stream.
            let Ctx::Live {
                id,
                inst,
                root: _root,
            } = std::mem::replace(&mut self.ctxs[i], Ctx::Skipped)
            else {
                continue;
            };
            inst.waiters.borrow_mut().remove(&id);
            inst.early.borrow_mut().remove(&id);
            if inst.broken() {
                continue;
            }
            let Ok(mut vm) = inst.vm.try_borrow_mut() else {
                continue;
            };
            if let Err(e) = vm.finish_stream(id, &mut self.state) {
                let name = &self.slot_of(i).0.spec.name;
                tracing::warn!(plugin = %name, "plugin failed at end of stream: {e}");
            }
        }
        if let Some(log) = &self.access_log {
            log.record(&self.state);
        }
        if let Some((tracer, span)) = &self.trace {
            tracer.finish(span, &self.state);
        }
    }
}
