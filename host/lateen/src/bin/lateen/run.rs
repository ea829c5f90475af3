//! Running the proxy (`lateen run`, and `lateen demo` around it) and checking a config
//! offline (`lateen validate`), with what both need: the wasm runtime, the module sources,
//! the first snapshot.

use super::{Common, OptionalAddr, RunArgs};
use anyhow::{bail, Context, Result};
use arc_swap::ArcSwap;
use lateen::admin::{self, AdminState, Surface};
use lateen_config::compile::{self, BuildOptions};
use lateen_model::Snapshot;
use lateen_proxy::live::Live;
use lateen_proxy::worker::{self, BoundListener};
use lateen_wasm::{Runtime, RuntimeOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

fn filters_dir(common: &Common) -> PathBuf {
    if let Some(d) = &common.filters_dir {
        return d.clone();
    }
    if let Some(d) = std::env::var_os("LATEEN_FILTERS_DIR") {
        return d.into();
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let candidates = [
        exe_dir.join("filters"),
        exe_dir.join("../wasm32-wasip1/wasm"),
        exe_dir.join("../../wasm32-wasip1/wasm"),
    ];
    candidates
        .iter()
        .find(|d| d.join("lateen_router.wasm").exists())
        .cloned()
        .unwrap_or_else(|| candidates[0].clone())
}

fn cache_dir(common: &Common) -> Option<PathBuf> {
    match common.cache_dir.as_deref() {
        Some("none") => None,
        Some(d) => Some(PathBuf::from(d)),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| d.join("lateen/modules")),
    }
}

// Remote plugin modules are kept beside the compiled ones (or in a temporary directory).
fn fetcher(common: &Common) -> Arc<dyn lateen_config::compile::ModuleSource> {
    let dir = cache_dir(common)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("lateen-{}", std::process::id())))
        .join("fetched");
    Arc::new(lateen::fetch::HttpFetcher { cache_dir: dir })
}

fn pushed_dir(common: &Common) -> Option<PathBuf> {
    cache_dir(common).map(|d| d.join("pushed"))
}

// GETs a JSON view from a running proxy's admin API.
pub fn runtime(common: &Common) -> Result<Runtime> {
    let cache_dir = cache_dir(common);
    Runtime::new(RuntimeOptions {
        cache_dir,
        ..RuntimeOptions::default()
    })
    .context("starting the wasm runtime")
}

fn built_snapshot(
    res: &lateen_config::compile::Resources,
    rt: &Runtime,
    opts: &BuildOptions,
    version: u64,
) -> Result<Snapshot> {
    let snap = compile::build(res, rt, opts, version, None).map_err(report)?;
    for w in &snap.warnings {
        tracing::warn!("{w}");
    }
    for e in &snap.rule_errors {
        tracing::error!("rule refused (its requests follow the failStrategy): {e}");
    }
    Ok(snap)
}

fn report(errors: Vec<lateen_config::ConfigError>) -> anyhow::Error {
    for e in &errors {
        eprintln!("{e}");
    }
    anyhow::anyhow!("configuration has {} error(s)", errors.len())
}

pub fn validate(config: &Path, dump: bool, common: &Common) -> Result<()> {
    let rt = runtime(common)?;
    let opts = BuildOptions {
        builtin_filters: filters_dir(common),
        bind_override: None,
        remote: Some(fetcher(common)),
        pushed_dir: pushed_dir(common),
    };
    let files = compile::load(config).map_err(report)?;
    let xds = lateen_config::xds::client_config(&files).map_err(|e| report(vec![e]))?;
    let snap = built_snapshot(&files, &rt, &opts, 1)?;
    for w in &snap.warnings {
        println!("warning: {w}");
    }
    if let Some(x) = &xds {
        println!(
            "xds: {} as node {} (listeners, routes, clusters and filters from there are \
             checked when pushed)",
            x.address, x.node_id
        );
    }
    // A proxy keeps serving a refused rule's last good configuration; validate fails on it.
    if !snap.rule_errors.is_empty() {
        return Err(report(snap.rule_errors.clone()));
    }
    if dump {
        println!(
            "{}",
            serde_json::to_string_pretty(&admin::offline_dump(&Live::offline(snap)))?
        );
        return Ok(());
    }
    println!(
        "{}: ok ({} listener(s), {} cluster(s), {} plugin(s))",
        config.display(),
        snap.listeners.len(),
        snap.clusters.len(),
        snap.plugins.len()
    );
    Ok(())
}

pub fn run(args: RunArgs, on_ready: Option<Box<dyn FnOnce() + Send>>) -> Result<()> {
    admin::mark_start();
    let rt = Arc::new(runtime(&args.common)?);
    let opts = BuildOptions {
        builtin_filters: filters_dir(&args.common),
        bind_override: args.bind,
        remote: Some(fetcher(&args.common)),
        pushed_dir: pushed_dir(&args.common),
    };
    let admin_token = admin_token(&args)?;
    // SAFETY: mi_collect only walks mimalloc's own heaps; it is safe on any thread.
    #[allow(
        unsafe_code,
        reason = "an FFI call into the allocator the binary links"
    )]
    lateen::sources::set_trim(|| unsafe { libmimalloc_sys::mi_collect(true) });
    let files = compile::load(&args.config).map_err(report)?;
    let xds_client = lateen_config::xds::client_config(&files).map_err(|e| report(vec![e]))?;
    let snap = built_snapshot(&files, &rt, &opts, 1)?;
    let (live, _) =
        Live::install(snap, None).map_err(|e| anyhow::anyhow!("{}: {e}", args.config.display()))?;
    let snapshots = Arc::new(ArcSwap::from_pointee(live));
    let reloads = Arc::new(lateen::sources::ReloadStatus::default());
    let sources = Arc::new(lateen::sources::Sources::new(
        args.config.clone(),
        snapshots.clone(),
        rt.clone(),
        opts.clone(),
        reloads.clone(),
        files,
    ));
    // The xDS client starts now; the listeners are bound once its first config is in.
    let xds = match xds_client {
        Some(cfg) => {
            let wait = cfg.initial_fetch_timeout;
            let status =
                lateen::xds::spawn(sources.clone(), cfg).context("starting the xDS client")?;
            Some((wait, status))
        }
        None => None,
    };
    let (shutdown, _) = tokio::sync::watch::channel(false);
    let ready = Arc::new(AtomicBool::new(false));
    let admin_state = AdminState {
        snapshots: snapshots.clone(),
        shared: rt.shared.clone(),
        ready: ready.clone(),
        shutdown: shutdown.clone(),
        reloads: reloads.clone(),
        xds: xds.as_ref().map(|(_, status)| status.clone()),
        pushed_dir: opts.pushed_dir.clone(),
        token: admin_token,
        graph: Default::default(),
    };
    let admin = start_admin(&args, &admin_state)?;
    if let Some((wait, status)) = &xds {
        wait_for_control_plane(status, *wait);
    }
    let workers = if args.concurrency == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        args.concurrency
    };
    let (per_worker, listening) = bind_listeners(&snapshots.load_full(), workers)?;
    let handles = spawn_workers(per_worker, &args, &snapshots, &sources, &rt, &shutdown)?;
    if !args.no_watch {
        let reloader = lateen::watch::Reloader { sources };
        // Long enough to fold one save's events (an editor's write and rename, kubelet's
        // ..data swap: microseconds apart) into one reload; short, as it adds to every
        // change's latency. A write caught half done fails to parse and keeps the last
        // good config; its final event reloads again.
        lateen::watch::spawn(reloader, Duration::from_millis(10))
            .with_context(|| format!("watching {}", args.config.display()))?;
    }
    ready.store(true, std::sync::atomic::Ordering::Release);
    tracing::info!(
        "lateen ready: {workers} worker(s), listeners [{}], admin http://{}",
        listening.join(", "),
        args.admin_address
    );
    if let Some(f) = on_ready {
        f();
    }
    wait_for_signal(shutdown.clone())?;
    tracing::info!("shutting down: draining for at most {:?}", args.drain_time);
    let _ = shutdown.send(true);
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("worker ended with error: {e}"),
            Err(_) => bail!("a worker thread panicked"),
        }
    }
    for a in admin {
        let _ = a.join();
    }
    tracing::info!("stopped");
    Ok(())
}

/// The admin token (`--admin-token` or `LATEEN_ADMIN_TOKEN`), required when the admin
/// API listens beyond loopback.
fn admin_token(args: &RunArgs) -> Result<Option<String>> {
    let token = args
        .admin_token
        .clone()
        .or_else(|| std::env::var("LATEEN_ADMIN_TOKEN").ok());
    if !args.admin_address.ip().is_loopback() && token.is_none() {
        bail!(
            "the admin API on {} would be reachable from the network: pass --admin-token",
            args.admin_address
        );
    }
    Ok(token)
}

/// One thread per worker, each with its share of the bound listeners.
fn spawn_workers(
    per_worker: Vec<Vec<BoundListener>>,
    args: &RunArgs,
    snapshots: &Arc<ArcSwap<Live>>,
    sources: &Arc<lateen::sources::Sources>,
    rt: &Arc<Runtime>,
    shutdown: &tokio::sync::watch::Sender<bool>,
) -> Result<Vec<std::thread::JoinHandle<std::io::Result<()>>>> {
    let mut handles = Vec::new();
    for (id, listeners) in per_worker.into_iter().enumerate() {
        let w = worker::WorkerSetup {
            id,
            listeners,
            snapshots: snapshots.clone(),
            changed: sources.subscribe(),
            rt: rt.clone(),
            shutdown: shutdown.subscribe(),
            drain: args.drain_time,
        };
        handles.push(
            std::thread::Builder::new()
                .name(format!("lateen-worker-{id}"))
                .spawn(move || worker::run_worker(w))?,
        );
    }
    Ok(handles)
}

/// The admin API, and the stats and health ports when they are on.
fn start_admin(args: &RunArgs, state: &AdminState) -> Result<Vec<std::thread::JoinHandle<()>>> {
    let mut admin = vec![
        admin::start(args.admin_address, state.clone(), Surface::Admin)
            .with_context(|| format!("binding admin API on {}", args.admin_address))?,
    ];
    for (addr, surface) in [
        (args.stats_address.0, Surface::Stats),
        (args.health_address.0, Surface::Health),
    ] {
        if let Some(addr) = addr {
            admin.push(
                admin::start(addr, state.clone(), surface)
                    .with_context(|| format!("binding the {surface:?} port on {addr}"))?,
            );
        }
    }
    Ok(admin)
}

/// With a control plane, waits for its first complete config (as Envoy's init manager
/// does, with the admin API answering PRE_INITIALIZING meanwhile) so that the listeners it
/// defines are bound at start.
fn wait_for_control_plane(status: &lateen::xds::XdsStatus, wait: Duration) {
    let initialized = || {
        status
            .initialized
            .load(std::sync::atomic::Ordering::Acquire)
    };
    let deadline = std::time::Instant::now() + wait;
    while !initialized() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if !initialized() {
        tracing::warn!(
            "xDS: no complete configuration within {wait:?}; starting with what there is"
        );
    }
}

/// Binds every listener for every worker first, so that a port conflict fails the start;
/// with the addresses bound, for the ready line.
fn bind_listeners(snap: &Live, workers: usize) -> Result<(Vec<Vec<BoundListener>>, Vec<String>)> {
    let mut per_worker: Vec<Vec<BoundListener>> = (0..workers).map(|_| Vec::new()).collect();
    for l in snap.listeners.iter().filter(|l| l.bind) {
        for w in per_worker.iter_mut() {
            let socket = worker::bind(l.addr)
                .with_context(|| format!("binding listener {} on {}", l.name, l.addr))?;
            w.push(BoundListener {
                name: l.name.clone().into(),
                socket,
            });
        }
    }
    let listening = snap
        .listeners
        .iter()
        .filter(|l| l.bind)
        .map(|l| l.addr.to_string())
        .collect();
    Ok((per_worker, listening))
}

// Blocks until SIGTERM/SIGINT, or until shutdown was requested through the admin API.
fn wait_for_signal(shutdown: tokio::sync::watch::Sender<bool>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut rx = shutdown.subscribe();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = rx.wait_for(|v| *v) => {}
        }
        Ok::<(), anyhow::Error>(())
    })
}

const DEMO_CONFIG: &str = include_str!("../../../../../samples/demo/demo.yaml");

pub fn demo(config_dir: Option<PathBuf>, common: Common) -> Result<()> {
    // A directory the user named is theirs: it stays, with what they added to it.
    let keep = config_dir.is_some();
    let dir = config_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("lateen-demo-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("demo.yaml"), DEMO_CONFIG)
        .with_context(|| format!("writing {}", dir.join("demo.yaml").display()))?;
    let shown = dir.display().to_string();
    let backends = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    for (i, name) in ["v1", "v2", "v3"].iter().enumerate() {
        let addr: SocketAddr = ([127, 0, 0, 1], 9081 + i as u16).into();
        backends.spawn(async move {
            if let Err(e) = lateen::backend::serve(name.to_string(), addr).await {
                tracing::error!("sample backend {name} on {addr}: {e}");
            }
        });
    }
    let args = RunArgs {
        config: dir.clone(),
        no_watch: false,
        admin_token: None,
        concurrency: 0,
        admin_address: "127.0.0.1:15000".parse()?,
        stats_address: OptionalAddr(Some("127.0.0.1:15090".parse()?)),
        health_address: OptionalAddr(Some("127.0.0.1:15021".parse()?)),
        bind: None,
        drain_time: Duration::from_secs(2),
        common,
    };
    let r = run(
        args,
        Some(Box::new(move || {
            println!(
                r#"
Lateen demo is running: gateway on http://127.0.0.1:8080, backends v1/v2/v3 on :9081-9083.
Try:
  # the 90/7/3 canary split (count which backend answered):
  for i in $(seq 100); do curl -s -o /dev/null -D - http://127.0.0.1:8080/ | grep -i x-backend; done | sort | uniq -c
  # testers (cookie user=tester) always get v3:
  curl -s --cookie user=tester http://127.0.0.1:8080/
  # mobile clients get v2:
  curl -s -A 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1' http://127.0.0.1:8080/
  # the running config:
  curl -s http://127.0.0.1:15000/config_dump
Config directory (watched: YAML added here is loaded with no restart): {shown}
Ctrl-C stops it."#
            );
        })),
    );
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    backends.shutdown_background();
    r
}
