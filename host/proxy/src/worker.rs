//! Workers: one thread per core, each with its own single-threaded runtime, its own accept
//! sockets (SO_REUSEPORT) and its own plugin instances, as in Envoy.

use crate::chain::{Chain, RootRef, VmSlot};
use crate::http::ConnInfo;
use crate::live::{CurrentResolver, Live};
use crate::upstream::Upstream;
use arc_swap::ArcSwap;
use lateen_model::diff::{service_key, vm_key, with_canaries, ServiceKey, VmKey};
use lateen_model::PluginSpec;
use lateen_wasm::{ClusterResolver, Runtime};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A snapshot as one worker runs it: its chains and plugin instances.
pub struct WorkerSnapshot {
    pub snap: Arc<Live>,
    chains: HashMap<String, Rc<Chain>>,
    empty: Rc<Chain>,
    /// Every plugin's instances, for the next snapshot to keep what did not change.
    slots: Vec<Rc<VmSlot>>,
}

impl WorkerSnapshot {
    /// Instantiates its plugins ahead of the requests (see [`Chain::warm`]).
    pub fn warm(&self) {
        for c in self.chains.values() {
            c.warm();
        }
    }

    pub fn chain(&self, listener: &str) -> Rc<Chain> {
        self.chains
            .get(listener)
            .cloned()
            .unwrap_or_else(|| self.empty.clone())
    }
}

/// Per-worker state shared by its connections.
pub struct WorkerCtx {
    snapshots: Arc<ArcSwap<Live>>,
    current: RefCell<Option<Rc<WorkerSnapshot>>>,
    rt: Arc<Runtime>,
    /// What every plugin instance resolves `http_call` upstreams with.
    resolver: Arc<dyn ClusterResolver>,
    pub upstream: Rc<Upstream>,
    rng: Cell<u64>,
}

impl WorkerCtx {
    /// The worker's view of the current snapshot; built when the snapshot changed. In-flight
    /// requests keep the one they hold. A plugin whose VM is unchanged (same module, VM
    /// settings and failure handling) keeps its instance, and so its state, as Envoy keeps
    /// a VM across listener updates: its root contexts whose configuration is still in use
    /// stay, a new configuration gets a new root, and a root no chain uses any more ends
    /// with its last stream. Other plugins get new instances, made by [`Self::warm`] when the
    /// worker sees the change (or by the first request, if it comes first).
    pub fn snapshot(&self) -> Rc<WorkerSnapshot> {
        let snap = self.snapshots.load();
        if let Some(cur) = &*self.current.borrow() {
            if Arc::ptr_eq(&cur.snap, &snap) {
                return cur.clone();
            }
        }
        let snap = arc_swap::Guard::into_inner(snap);
        // The VMs the diff finds unchanged carry over; the rest are made anew.
        let mut kept: HashMap<VmKey, Rc<VmSlot>> = match &*self.current.borrow() {
            Some(cur) => {
                let diff = lateen_model::diff::diff(&cur.snap.config, &snap.config);
                cur.slots
                    .iter()
                    .map(|s| (vm_key(&s.spec), s.clone()))
                    .filter(|(k, _)| diff.plugins.is_unchanged(k))
                    .collect()
            }
            None => HashMap::new(),
        };
        let mut slots: HashMap<*const PluginSpec, Rc<VmSlot>> = HashMap::new();
        for p in with_canaries(&snap.config) {
            let slot = kept.remove(&vm_key(p)).unwrap_or_else(|| {
                VmSlot::new(
                    p.clone(),
                    self.rt.clone(),
                    self.resolver.clone(),
                    Rc::downgrade(&self.upstream),
                )
            });
            slots.insert(Arc::as_ptr(p), slot);
        }
        // Dropped with the old snapshot: plugins no longer in the config.
        drop(kept);
        let chains = snap
            .listeners
            .iter()
            .map(|l| {
                let chain = Chain::new(&l.filters, &slots, &snap.rollouts).with_path(l.path);
                (l.name.clone(), Rc::new(chain))
            })
            .collect();
        let empty = Rc::new(Chain::new(&[], &slots, &snap.rollouts));
        let ws = Rc::new(WorkerSnapshot {
            snap,
            chains,
            empty,
            slots: slots.into_values().collect(),
        });
        *self.current.borrow_mut() = Some(ws.clone());
        ws
    }

    /// A cheap per-worker random number (load balancing).
    pub fn random(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        x
    }
}

/// A bound listener socket for one worker.
pub struct BoundListener {
    pub name: Arc<str>,
    pub socket: std::net::TcpListener,
}

/// Binds `addr` with SO_REUSEPORT so each worker accepts on its own socket.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// What a worker runs with.
pub struct WorkerSetup {
    pub id: usize,
    /// Its own sockets for the listeners bound at start.
    pub listeners: Vec<BoundListener>,
    pub snapshots: Arc<ArcSwap<Live>>,
    /// Told after each snapshot swap.
    pub changed: watch::Receiver<()>,
    pub rt: Arc<Runtime>,
    pub shutdown: watch::Receiver<bool>,
    /// The longest it waits for open connections after `shutdown` turns true.
    pub drain: Duration,
}

/// Runs one worker until `shutdown` turns true, then drains for at most `drain`.
pub fn run_worker(setup: WorkerSetup) -> std::io::Result<()> {
    let WorkerSetup {
        id,
        listeners,
        snapshots,
        changed,
        rt,
        shutdown,
        drain,
    } = setup;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let upstream = Rc::new(Upstream::new(snapshots.clone()));
        let ctx = Rc::new(WorkerCtx {
            resolver: Arc::new(CurrentResolver(snapshots.clone())),
            snapshots,
            current: RefCell::new(None),
            rt,
            upstream,
            rng: Cell::new(0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1).wrapping_mul(0x2545_F491)),
        });
        // Service plugins run once per proxy, on worker 0.
        let services = (id == 0)
            .then(|| tokio::task::spawn_local(run_service_plugins(ctx.clone(), changed.clone())));
        let acceptor = Acceptor {
            ctx: ctx.clone(),
            shutdown: shutdown.clone(),
            conns: Rc::default(),
        };
        let mut open = HashMap::new();
        for l in listeners {
            let addr = l.socket.local_addr()?;
            open.insert((l.name.clone(), addr), acceptor.start(l.name, l.socket)?);
        }
        let open = follow_listeners(id, &acceptor, open, shutdown, changed).await;
        if let Some(t) = services {
            t.abort();
        }
        for (_, (task, _)) in open {
            let _ = task.await;
        }
        acceptor.conns.drain(id, drain).await;
        Ok::<(), std::io::Error>(())
    })
}

/// A service plugin running: its key, its VM and its root context.
type RunningService = (ServiceKey, Rc<VmSlot>, Rc<RootRef>);

/// Runs the snapshot's service plugins; on each swap, those the diff finds unchanged (same
/// name, module and configuration) keep running and the rest are started anew (the old
/// instances stop with their slots).
async fn run_service_plugins(ctx: Rc<WorkerCtx>, mut changed: watch::Receiver<()>) {
    let mut running: Option<(Arc<Live>, Vec<RunningService>)> = None;
    loop {
        let snap = ctx.snapshots.load_full();
        if running.as_ref().is_none_or(|(s, _)| !Arc::ptr_eq(s, &snap)) {
            let (prev, mut old) = match running.take() {
                Some((prev, old)) => (Some(prev), old),
                None => (None, Vec::new()),
            };
            let diff = prev.map(|p| lateen_model::diff::diff(&p.config, &snap.config));
            let mut slots = Vec::new();
            for sp in &snap.service_plugins {
                let key = service_key(sp);
                let unchanged = diff
                    .as_ref()
                    .is_some_and(|d| d.service_plugins.is_unchanged(&key));
                if let Some(i) = old.iter().position(|(k, ..)| unchanged && *k == key) {
                    slots.push(old.swap_remove(i));
                    continue;
                }
                let slot = VmSlot::new(
                    sp.plugin.clone(),
                    ctx.rt.clone(),
                    ctx.resolver.clone(),
                    Rc::downgrade(&ctx.upstream),
                );
                match slot.start_service(&sp.configuration) {
                    Ok(root) => slots.push((key, slot, root)),
                    Err(e) => {
                        tracing::error!(plugin = %sp.plugin.name, "service plugin failed to start: {e}")
                    }
                }
            }
            running = Some((snap, slots));
        }
        if changed.changed().await.is_err() {
            // No source left to change the config: what runs stays.
            std::future::pending::<()>().await;
        }
    }
}

/// The worker's open connections, for the drain.
#[derive(Default)]
struct Connections {
    active: Cell<usize>,
    idle: tokio::sync::Notify,
}

impl Connections {
    fn opened(&self) {
        self.active.set(self.active.get() + 1);
    }

    fn closed(&self) {
        self.active.set(self.active.get() - 1);
        if self.active.get() == 0 {
            self.idle.notify_waiters();
        }
    }

    /// Waits at most `limit` for the open connections to finish their current request.
    async fn drain(&self, worker: usize, limit: Duration) {
        let drained = async {
            loop {
                // Created before the check, so a notify in between is not lost.
                let notified = self.idle.notified();
                if self.active.get() == 0 {
                    break;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(limit, drained).await.is_err() {
            tracing::warn!(
                worker,
                "drain time over with {} connections open",
                self.active.get()
            );
        }
    }
}

/// An accept task and the switch that closes it (when its listener leaves the config).
type Accepting = (tokio::task::JoinHandle<()>, watch::Sender<bool>);

/// Starts the accept loops of a worker's listeners.
struct Acceptor {
    ctx: Rc<WorkerCtx>,
    shutdown: watch::Receiver<bool>,
    conns: Rc<Connections>,
}

impl Acceptor {
    /// Accepts on `socket` until shutdown or until the returned switch is thrown; each
    /// connection is served on a task of its own.
    fn start(&self, name: Arc<str>, socket: std::net::TcpListener) -> std::io::Result<Accepting> {
        let listener = tokio::net::TcpListener::from_std(socket)?;
        let (ctx, conns, mut stop) = (self.ctx.clone(), self.conns.clone(), self.shutdown.clone());
        let (removed, mut gone) = watch::channel(false);
        let lstats = lateen_core::stats::store().listener(&name);
        let task = tokio::task::spawn_local(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    r = listener.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                    _ = stop.changed() => return,
                    _ = gone.changed() => return,
                };
                // Past the global cap, closed at once (Envoy's overload action).
                let Some(slot) = crate::overload::admit() else {
                    lstats.global_cx_overflow.inc();
                    drop(tcp);
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let conn = ConnInfo {
                    peer,
                    local: tcp.local_addr().unwrap_or(peer),
                    listener: name.clone(),
                    protocol: "HTTP/1.1",
                    stats: lstats.clone(),
                    tls: None,
                    framing: None,
                };
                lstats.cx_total.inc();
                let open = lstats.cx_active.track();
                let (ctx, stop, conns) = (ctx.clone(), stop.clone(), conns.clone());
                conns.opened();
                tokio::task::spawn_local(async move {
                    if let Err(e) = crate::listener::serve(tcp, conn, ctx, stop).await {
                        tracing::debug!("connection from {peer}: {e}");
                    }
                    drop(open);
                    drop(slot);
                    conns.closed();
                });
            }
        });
        Ok((task, removed))
    }
}

/// Follows the config until shutdown: a change (an LDS push, a Gateway edit) may add or
/// remove listeners; the worker binds the added ones on its own socket and closes the
/// removed ones, whose open connections finish as they would on a drain. It reconciles
/// what it has open with the snapshot's bound listeners (the diff's listener keys), so a
/// bind that failed is tried again at the next change. Returns what is open at shutdown.
async fn follow_listeners(
    id: usize,
    acceptor: &Acceptor,
    mut open: HashMap<(Arc<str>, SocketAddr), Accepting>,
    mut stop: watch::Receiver<bool>,
    mut changed: watch::Receiver<()>,
) -> HashMap<(Arc<str>, SocketAddr), Accepting> {
    // The first round compares with what was bound at start, since the snapshot may have
    // changed since (an xDS push during the start).
    changed.mark_changed();
    let mut seen: Option<Arc<Live>> = None;
    let mut sources = true;
    loop {
        tokio::select! {
            r = changed.changed(), if sources => sources = r.is_ok(),
            _ = stop.wait_for(|v| *v) => return open,
        }
        let snap = acceptor.ctx.snapshots.load_full();
        if seen.as_ref().is_some_and(|s| Arc::ptr_eq(s, &snap)) {
            continue;
        }
        acceptor.ctx.snapshot().warm();
        let want: std::collections::HashSet<(Arc<str>, SocketAddr)> =
            lateen_model::diff::bound_listeners(&snap.config)
                .map(|(name, addr)| (Arc::from(name.as_str()), addr))
                .collect();
        seen = Some(snap);
        open.retain(|k, (_, removed)| {
            let keep = want.contains(k);
            if !keep {
                tracing::info!(worker = id, "listener {} on {} removed", k.0, k.1);
                let _ = removed.send(true);
            }
            keep
        });
        for (name, addr) in want {
            if open.contains_key(&(name.clone(), addr)) {
                continue;
            }
            match bind(addr).and_then(|s| acceptor.start(name.clone(), s)) {
                Ok(t) => {
                    tracing::info!(worker = id, "listener {name} on {addr} added");
                    open.insert((name, addr), t);
                }
                Err(e) => {
                    tracing::error!(worker = id, "cannot open listener {name} on {addr}: {e}")
                }
            }
        }
    }
}
