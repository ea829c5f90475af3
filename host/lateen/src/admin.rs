//! The admin API (Envoy's port 15000 by default, bound to localhost): readiness, config
//! dump, clusters, plugin metrics, and `/quitquitquit` for a graceful stop.

pub mod graph;
mod views;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lateen_proxy::live::Live;
use lateen_wasm::shared::Shared;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// What the admin API reads.
#[derive(Clone)]
pub struct AdminState {
    pub snapshots: Arc<ArcSwap<Live>>,
    pub shared: Arc<Shared>,
    pub ready: Arc<AtomicBool>,
    pub shutdown: watch::Sender<bool>,
    pub reloads: Arc<crate::sources::ReloadStatus>,
    /// The xDS client's state, when a control plane is configured.
    pub xds: Option<Arc<crate::xds::XdsStatus>>,
    /// Where pushed modules are stored (`POST /plugins/NAME`); `None` refuses pushes.
    pub pushed_dir: Option<std::path::PathBuf>,
    /// Bearer token required on mutating endpoints, when set.
    pub token: Option<String>,
    /// The live service graph's history.
    pub graph: Arc<graph::Graph>,
}

/// What a port serves: Envoy/Istio split the read-only surfaces off the admin port so
/// that they can be exposed (Prometheus scrapes 15090, the kubelet probes 15021).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Everything (port 15000, localhost by default).
    Admin,
    /// `/stats/prometheus` and readiness (port 15090).
    Stats,
    /// `/healthz/ready` only (port 15021).
    Health,
}

impl Surface {
    fn serves(self, method: &Method, path: &str) -> bool {
        match self {
            Surface::Admin => true,
            Surface::Stats => {
                method == Method::GET
                    && matches!(path, "/stats/prometheus" | "/healthz/ready" | "/ready")
            }
            Surface::Health => method == Method::GET && path == "/healthz/ready",
        }
    }
}

/// Serves `surface` on `addr` until shutdown. Binds before returning so that a port
/// conflict is reported at start.
pub fn start(
    addr: SocketAddr,
    state: AdminState,
    surface: Surface,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    crate::spawn_runtime_thread(
        format!("lateen-{surface:?}").to_lowercase(),
        move || async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                return;
            };
            let mut stop = state.shutdown.subscribe();
            if surface == Surface::Admin {
                let (graph, shared) = (state.graph.clone(), state.shared.clone());
                tokio::spawn(async move {
                    let mut every = tokio::time::interval(graph::PERIOD);
                    loop {
                        every.tick().await;
                        graph.sample(&shared);
                    }
                });
            }
            loop {
                let (tcp, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                    _ = stop.wait_for(|v| *v) => return,
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let state = state.clone();
                        async move {
                            let is_push = req.method() == Method::POST
                                && req.uri().path().starts_with("/plugins/");
                            let r = if !surface.serves(req.method(), req.uri().path()) {
                                text(
                                    StatusCode::NOT_FOUND,
                                    "text/plain",
                                    "not served on this port\n".into(),
                                )
                            } else if is_push {
                                push(req, &state).await
                            } else {
                                route(req, &state)
                            };
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        },
    )
}

// Mutating endpoints need the bearer token, when one is configured.
fn authorize(req: &Request<Incoming>, s: &AdminState) -> Option<Response<Full<Bytes>>> {
    let want = s.token.as_ref()?;
    let got = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if got == Some(want.as_str()) {
        None
    } else {
        Some(text(
            StatusCode::UNAUTHORIZED,
            "text/plain",
            "missing or wrong bearer token\n".into(),
        ))
    }
}

/// Largest module accepted by a push.
const MAX_PUSH: usize = 256 << 20;

// `POST /plugins/NAME` with the module as the body and its sha256 in `x-sha256`: stored as
// `pushed://NAME`. The file watcher then reloads every config that references it.
async fn push(req: Request<Incoming>, s: &AdminState) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;
    use sha2::{Digest, Sha256};
    if let Some(denied) = authorize(&req, s) {
        return denied;
    }
    let Some(dir) = s.pushed_dir.clone() else {
        return text(
            StatusCode::NOT_IMPLEMENTED,
            "text/plain",
            "pushes need a module cache (--cache-dir)\n".into(),
        );
    };
    let name = req.uri().path().trim_start_matches("/plugins/").to_string();
    let path = match lateen_config::compile::pushed_path(&dir, &name) {
        Ok(p) => p,
        Err(e) => return text(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
    };
    let Some(want) = req
        .headers()
        .get("x-sha256")
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
    else {
        return text(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "x-sha256 header required\n".into(),
        );
    };
    let body = match http_body_util::Limited::new(req.into_body(), MAX_PUSH)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("reading the module: {e}\n"),
            )
        }
    };
    let got = hex::encode(Sha256::digest(&body));
    if got != want {
        return text(
            StatusCode::BAD_REQUEST,
            "text/plain",
            format!("sha256 mismatch: the module has {got}, x-sha256 says {want}\n"),
        );
    }
    if !body.starts_with(b"\0asm") {
        return text(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "not a wasm module\n".into(),
        );
    }
    let tmp = dir.join(format!(".{name}.tmp"));
    let stored = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&tmp, &body))
        .and_then(|()| std::fs::rename(&tmp, &path));
    match stored {
        Ok(()) => {
            tracing::info!("module pushed as pushed://{name} ({got})");
            text(
                StatusCode::OK,
                "application/json",
                serde_json::json!({"name": name, "url": format!("pushed://{name}"), "sha256": got})
                    .to_string(),
            )
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("storing the module: {e}\n"),
        ),
    }
}

fn text(status: StatusCode, ct: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(ct),
    );
    r
}

fn route(req: Request<Incoming>, s: &AdminState) -> Response<Full<Bytes>> {
    let snap = s.snapshots.load_full();
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/ready" | "/healthz/ready") => {
            if s.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "text/plain", "LIVE\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "PRE_INITIALIZING\n".into(),
                )
            }
        }
        (&Method::GET, "/config_dump") => {
            let mut dump = config_dump(&snap);
            dump["lastReloadError"] = match s.reloads.last_error.lock() {
                Ok(e) => serde_json::json!(*e),
                Err(_) => serde_json::Value::Null,
            };
            if let Some(x) = &s.xds {
                dump["xds"] = x.to_json();
            }
            text(
                StatusCode::OK,
                "application/json",
                serde_json::to_string_pretty(&dump).unwrap_or_default(),
            )
        }
        (&Method::GET, "/clusters") if query_has(&req, "format", "json") => {
            json(&views::clusters(&snap))
        }
        (&Method::GET, "/clusters") => text(StatusCode::OK, "text/plain", clusters(&snap)),
        (&Method::GET, "/listeners") => json(&views::listeners(&snap)),
        (&Method::GET, "/routes") => json(&views::routes(&snap)),
        (&Method::GET, "/plugins") => json(&views::plugins(&snap)),
        (&Method::GET, "/server_info") => json(&server_info(s, &snap)),
        (&Method::GET, "/graph.json") => json(
            &s.graph
                .render(&s.shared, snap.workload.as_deref().unwrap_or("lateen")),
        ),
        (&Method::GET, "/ui/graph") => text(
            StatusCode::OK,
            "text/html; charset=utf-8",
            include_str!("admin/graph.html").into(),
        ),
        (&Method::GET, "/stats/prometheus") => text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            prometheus(s, &snap),
        ),
        (&Method::GET, "/stats") => {
            let samples = host_samples(&snap);
            if query_has(&req, "format", "json") {
                let stats: Vec<_> = samples
                    .iter()
                    .map(|x| serde_json::json!({"name": x.envoy, "value": x.value}))
                    .collect();
                json(&serde_json::json!({ "stats": stats }))
            } else {
                let mut out = String::new();
                for x in &samples {
                    let _ = writeln!(out, "{}: {}", x.envoy, x.value);
                }
                text(StatusCode::OK, "text/plain", out)
            }
        }
        (&Method::POST, "/quitquitquit") => {
            if let Some(denied) = authorize(&req, s) {
                return denied;
            }
            let _ = s.shutdown.send(true);
            text(StatusCode::OK, "text/plain", "OK\n".into())
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "admin endpoints: /ready /server_info /config_dump /listeners /routes /clusters[?format=json] /plugins /stats[?format=json] /stats/prometheus /ui/graph /graph.json, POST /plugins/NAME, POST /quitquitquit\n"
                .into(),
        ),
    }
}

// Host stats, with the gauges that are read off the snapshot brought up to date.
fn host_samples(snap: &Live) -> Vec<lateen_core::stats::Sample> {
    for c in snap.clusters.values() {
        c.stats.ejections_active.set(c.ejected_now() as i64);
    }
    lateen_core::stats::store().samples()
}

/// `/stats/prometheus`: plugin metrics (Istio's standard ones among them), host stats,
/// canary state and config reloads.
fn prometheus(s: &AdminState, snap: &Live) -> String {
    let mut out = lateen_wasm::metrics::exposition(&s.shared);
    lateen_core::stats::write_prometheus(&host_samples(snap), &mut out);
    let _ = writeln!(
        out,
        "# HELP lateen_canary_rolled_back Whether a plugin's canary was rolled back."
    );
    let _ = writeln!(out, "# TYPE lateen_canary_rolled_back gauge");
    for p in &snap.plugins {
        if let Some(c) = p.canary.as_ref().and_then(|c| snap.rollouts.get(c)) {
            let _ = writeln!(
                out,
                "lateen_canary_rolled_back{{plugin=\"{}\"}} {}",
                p.name,
                u8::from(c.rolled_back.load(Ordering::Relaxed))
            );
        }
    }
    let _ = writeln!(out, "# HELP config_reload_total Config reloads, by result.");
    let _ = writeln!(out, "# TYPE config_reload_total counter");
    for (result, n) in [
        ("success", &s.reloads.success),
        ("failure", &s.reloads.failure),
    ] {
        let _ = writeln!(
            out,
            "config_reload_total{{result=\"{result}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    out
}

/// When the process started, for `/server_info`.
static STARTED: std::sync::LazyLock<std::time::Instant> =
    std::sync::LazyLock::new(std::time::Instant::now);

/// Marks the process start (call once, early).
pub fn mark_start() {
    std::sync::LazyLock::force(&STARTED);
}

// What `lateen proxy-status` reads: state, versions and the last reload's outcome.
fn server_info(s: &AdminState, snap: &Live) -> serde_json::Value {
    let last_error = s.reloads.last_error.lock().ok().and_then(|e| e.clone());
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "state": if s.ready.load(Ordering::Acquire) { "LIVE" } else { "PRE_INITIALIZING" },
        "uptimeSeconds": STARTED.elapsed().as_secs(),
        // Without a Bootstrap workload, the host name (a pod's name in Kubernetes).
        "workload": snap.workload.clone().or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        }),
        "configVersion": snap.version,
        "listeners": snap.listeners.len(),
        "clusters": snap.clusters.len(),
        "plugins": snap.plugins.len() + snap.service_plugins.len(),
        "reloads": {
            "success": s.reloads.success.load(Ordering::Relaxed),
            "failure": s.reloads.failure.load(Ordering::Relaxed),
        },
        "lastReloadError": last_error,
        "xds": s.xds.as_ref().map(|x| x.to_json()),
    })
}

fn json(v: &serde_json::Value) -> Response<Full<Bytes>> {
    text(
        StatusCode::OK,
        "application/json",
        serde_json::to_string_pretty(v).unwrap_or_default(),
    )
}

// Whether the query string has `key=value`.
fn query_has(req: &Request<Incoming>, key: &str, value: &str) -> bool {
    req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|kv| kv.split_once('=') == Some((key, value)))
    })
}

/// The snapshot as JSON (listeners, chains, clusters, plugins).
pub fn config_dump(snap: &Live) -> serde_json::Value {
    let listeners: Vec<_> = snap
        .listeners
        .iter()
        .map(|l| {
            serde_json::json!({
                "name": l.name,
                "address": l.addr.to_string(),
                "filters": l.filters.iter().map(|f| f.plugin.name.clone()).collect::<Vec<_>>(),
                "tls": l.tls.as_ref().map(|t| t.servers.iter().map(|s| serde_json::json!({
                    "hosts": s.hosts, "mode": s.mode.name(),
                })).collect::<Vec<_>>()),
                "sniRoutes": l.sni_routes.iter().map(|r| serde_json::json!({
                    "name": r.name, "sniHosts": r.sni_hosts, "destinations": r.destinations,
                })).collect::<Vec<_>>(),
                "httpsRedirect": l.https_redirect,
                "tcp": l.tcp,
                "bound": l.bind,
                "capture": l.capture.as_ref().map(|c| match c {
                    lateen_model::Capture::Outbound(m) => serde_json::json!({
                        "kind": "outbound",
                        "services": m.services.iter().map(|s| serde_json::json!({
                            "host": s.host, "port": s.port, "addresses": s.addresses,
                            "target": match &s.target {
                                lateen_model::sidecar::Target::Http(l) => format!("http {l}"),
                                lateen_model::sidecar::Target::Tcp(c) => format!("tcp {c}"),
                            },
                        })).collect::<Vec<_>>(),
                    }),
                    lateen_model::Capture::Inbound(p) => serde_json::json!({
                        "kind": "inbound",
                        "mtls": p.mode.name(),
                        "portLevelMtls": p.ports.iter().map(|(k, v)| (k.to_string(), v.name())).collect::<std::collections::BTreeMap<_, _>>(),
                        "identity": p.tls.is_some(),
                    }),
                }),
                "tcpRoutes": l.tcp_routes.iter().map(|r| serde_json::json!({
                    "name": r.name, "destinationSubnets": r.destination_subnets,
                    "destinations": r.destinations,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut clusters: Vec<_> = snap
        .clusters
        .values()
        .map(|c| {
            serde_json::json!({
                "name": c.name,
                "lb": format!("{:?}", c.lb),
                "protocol": format!("{:?}", c.protocol),
                "connectTimeoutMs": c.conn.connect_timeout_ms,
                "idleTimeoutMs": c.conn.idle_timeout_ms,
                "maxRequests": c.max_requests,
                "maxRequestsPerConnection": c.conn.max_requests_per_connection,
                "maxConnections": c.conn.max_connections,
                "outlierDetection": c.outlier.is_some(),
                "consistentHash": c.hash.as_ref().map(|h| format!("{:?}", h.key)),
                "tls": c.tls.as_ref().map(|t| serde_json::json!({
                    "sni": format!("{:?}", t.server_name),
                    "alpn": t.config.alpn_protocols.iter()
                        .map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>(),
                    "clientCertificate": t.config.client_auth_cert_resolver.has_certs(),
                })),
                "endpoints": c.endpoints.iter().map(|e| serde_json::json!({
                    "address": e.authority, "labels": e.labels, "weight": e.weight,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    clusters.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let plugins: Vec<_> = snap
        .plugins
        .iter()
        .map(|p| {
            serde_json::json!({
                "name": p.name,
                "url": p.url,
                "sha256": p.module.sha256,
                "phase": format!("{:?}", p.phase),
                "priority": p.priority,
                "failStrategy": views::fail(p),
                "canary": p.canary.as_ref().and_then(|c| snap.rollouts.get(c)).map(|r| serde_json::json!({
                    "url": r.canary.spec.url,
                    "sha256": r.canary.spec.module.sha256,
                    "percent": r.canary.percent,
                    "windowMs": r.window_ms(),
                    "state": if r.rolled_back.load(Ordering::Relaxed) { "rolled_back" } else { "active" },
                    "requests": r.requests.load(Ordering::Relaxed),
                    "traps": r.traps.load(Ordering::Relaxed),
                    "5xx": r.five_xx.load(Ordering::Relaxed),
                })),
            })
        })
        .collect();
    let services: Vec<_> = snap
        .service_plugins
        .iter()
        .map(|f| serde_json::json!({"name": f.plugin.name, "url": f.plugin.url, "sha256": f.plugin.module.sha256}))
        .collect();
    serde_json::json!({
        "version": snap.version,
        "listeners": listeners,
        "clusters": clusters,
        "plugins": plugins,
        "servicePlugins": services,
        "telemetry": {
            "accessLog": snap.telemetry.access_log.as_ref().map(|a| a.path.display().to_string()),
            "tracing": snap.telemetry.tracing.as_ref().map(|t| serde_json::json!({
                "endpoint": t.endpoint,
                "sampling": t.sampling,
            })),
        },
        "warnings": snap.warnings,
        // Resources the last change refused: each keeps its last good version.
        "refused": snap.refused.iter().map(|e| serde_json::json!({
            "resource": e.resource,
            "error": e.to_string(),
        })).collect::<Vec<_>>(),
    })
}

/// What `lateen validate --dump` prints: `/config_dump`, and each listener's filters with
/// the configuration their root contexts get (JSON where it is JSON, else the string).
pub fn offline_dump(snap: &Live) -> serde_json::Value {
    let configuration = |b: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(b)
            .unwrap_or_else(|_| String::from_utf8_lossy(b).into_owned().into())
    };
    let filters: Vec<_> = snap
        .listeners
        .iter()
        .map(|l| {
            serde_json::json!({
                "listener": l.name,
                "filters": l.filters.iter().map(|f| serde_json::json!({
                    "name": f.plugin.name,
                    "configuration": configuration(&f.configuration),
                    "scoped": f.scope.is_some(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let services: Vec<_> = snap
        .service_plugins
        .iter()
        .map(|f| serde_json::json!({"name": f.plugin.name, "configuration": configuration(&f.configuration)}))
        .collect();
    serde_json::json!({
        "configDump": config_dump(snap),
        "filterConfigs": filters,
        "servicePluginConfigs": services,
    })
}

fn clusters(snap: &Live) -> String {
    let mut names: Vec<_> = snap.clusters.keys().collect();
    names.sort();
    let mut out = String::new();
    for n in names {
        let c = &snap.clusters[n];
        for e in &c.endpoints {
            let _ = writeln!(
                out,
                "{n}::{}::rq_active::{}",
                e.authority,
                e.active.load(Ordering::Relaxed)
            );
        }
    }
    out
}
