//! A plugin's instances on one worker ([`VmSlot`]): the current instance, its root
//! contexts ([`RootRef`]), recycling and reloading after a trap, and the wake-ups of
//! paused streams.

use super::*;

/// What ends a stream's pause when another context acted on it.
pub(super) enum Wake {
    Resume,
    Local(LocalResponse),
}

/// One live plugin instance and its bookkeeping. Streams hold it while they run, so an
/// instance being recycled drains: it serves the streams it started and is dropped with
/// the last of them.
pub struct Instance {
    pub(super) vm: RefCell<Vm>,
    pub(super) generation: u64,
    /// Live root contexts by configuration. Chains and streams hold them; the last one
    /// dropped ends the root (on_done, on_delete), as Envoy ends a filter config's root.
    pub(super) roots: RefCell<HashMap<Bytes, Weak<RootRef>>>,
    /// Tick period per root context; the root's tick task reads it before every sleep.
    pub(super) ticks: RefCell<HashMap<u32, Rc<Cell<Duration>>>>,
    /// Paused streams waiting for another context to resume them.
    pub(super) waiters: RefCell<rustc_hash::FxHashMap<u32, oneshot::Sender<Wake>>>,
    /// Wake-ups that arrived before their stream started waiting.
    pub(super) early: RefCell<rustc_hash::FxHashMap<u32, Wake>>,
    /// Streams started on it, for `recycle-after-requests`.
    pub(super) streams: Cell<u64>,
}

impl Instance {
    pub(super) fn broken(&self) -> bool {
        self.vm.borrow().broken().is_some()
    }

    // Whether `root` is a live root context (a root-made http_call answers only to one).
    pub(super) fn has_root(&self, root: u32) -> bool {
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
    pub(super) id: u32,
    pub(super) generation: u64,
    pub(super) config: Bytes,
    pub(super) inst: Weak<Instance>,
    pub(super) plugin: Arc<str>,
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
    pub(super) rt: Arc<Runtime>,
    pub(super) resolver: Arc<dyn ClusterResolver>,
    pub(super) current: RefCell<Option<Rc<Instance>>>,
    pub(super) generation: Cell<u64>,
    /// Set after a failed (re)instantiation, so a crash loop costs at most one attempt per
    /// backoff period.
    pub(super) retry_after: Cell<Option<std::time::Instant>>,
    pub(super) upstream: Weak<Upstream>,
}

pub(super) const RELOAD_BACKOFF: Duration = Duration::from_millis(200);

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
    pub(super) fn instance(&self) -> Result<Rc<Instance>, WasmError> {
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

    pub(super) fn due_for_recycling(&self, inst: &Instance) -> bool {
        let r = &self.spec.recycle;
        r.after_requests.is_some_and(|n| inst.streams.get() >= n)
            || r.memory_bytes.is_some_and(|max| {
                inst.vm
                    .try_borrow_mut()
                    .is_ok_and(|mut vm| vm.memory_bytes() as u64 >= max)
            })
    }

    /// The root context for `config` on `inst`, created on first use.
    pub(super) fn root(
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
    pub(super) fn live_root(&self, config: &Bytes) -> Option<Rc<RootRef>> {
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
    pub(super) fn after_call_with(self: &Rc<Self>, inst: &Rc<Instance>, calls: Vec<PendingCall>) {
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

    pub(super) fn after_call(self: &Rc<Self>, inst: &Rc<Instance>) {
        let calls = inst.vm.borrow_mut().take_pending_calls();
        self.after_call_with(inst, calls);
    }

    /// Sends http_calls a root context made and delivers the answers back to it, on the
    /// instance that made them (it may be draining by then).
    pub(super) fn spawn_root_calls(self: &Rc<Self>, inst: &Rc<Instance>, calls: Vec<PendingCall>) {
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
    pub(super) fn set_ticks(self: &Rc<Self>, inst: &Rc<Instance>, ticks: Vec<(u32, Duration)>) {
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
pub(super) async fn wait_resume(inst: &Instance, ctx: u32, limit: Duration) -> Option<Wake> {
    if let Some(w) = inst.early.borrow_mut().remove(&ctx) {
        return Some(w);
    }
    let (tx, rx) = oneshot::channel();
    inst.waiters.borrow_mut().insert(ctx, tx);
    let r = tokio::time::timeout(limit, rx).await;
    inst.waiters.borrow_mut().remove(&ctx);
    r.ok().and_then(Result::ok)
}
