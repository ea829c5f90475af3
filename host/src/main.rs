//! The `lateen` command: run the proxy, validate a config, run the demo.

use anyhow::{bail, Context, Result};
use arc_swap::ArcSwap;
use clap::{Args, Parser, Subcommand};
use lateen::admin::{self, AdminState, Surface};
use lateen::config::compile::{self, BuildOptions};
use lateen::live::Live;
use lateen::worker::{self, BoundListener};
use lateen_model::Snapshot;
use lateen_wasm::{Runtime, RuntimeOptions};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

// Per-request allocations (header lists, buffers) dominate user-space time; mimalloc's
// thread-local free lists suit one-runtime-per-worker threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "lateen",
    version,
    about = "WebAssembly-first service-mesh proxy"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the proxy on a config directory (or file) of Istio YAML.
    Run(RunArgs),
    /// Check a config offline (YAML, references, plugins and their on_configure).
    Validate {
        /// Config directory or file.
        config: PathBuf,
        /// Print the compiled snapshot as JSON (the admin API's `/config_dump`, and the
        /// configuration each filter of each listener gets) instead of the summary.
        #[arg(long)]
        dump: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Run the demo: sample backends v1/v2/v3 and the proxy on the embedded sample config.
    Demo {
        /// Serve the demo from this directory (created if missing; demo.yaml is written
        /// into it) instead of a fresh temporary one. The proxy watches it: YAML added
        /// there, such as a WasmPlugin, is loaded with no restart.
        #[arg(long)]
        config_dir: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Create a filter crate to start from: its config type, a test on the filter test
    /// harness, a README and the WasmPlugin that loads it.
    NewFilter {
        /// Crate name: lower-case letters, digits and `-`.
        name: String,
        /// Directory to create it in. Default: `filters/` of the Lateen checkout you are in
        /// (the crate joins its workspace), else the current directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The Lateen checkout to depend on, for a crate outside one. Default: the
        /// checkout this binary was built from.
        #[arg(long)]
        lateen: Option<PathBuf>,
        /// A component-model filter (the typed `lateen:filter` world, built for
        /// wasm32-wasip2) instead of a proxy-wasm module.
        #[arg(long)]
        component: bool,
    },
    /// Precompile plugin modules into the module cache (cranelift, off the request path).
    Compile {
        /// Modules (.wasm).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Push a plugin module to a running proxy; WasmPlugins then use `url: pushed://NAME`.
    Push {
        /// The module (.wasm).
        file: PathBuf,
        /// Name to push it as.
        #[arg(long)]
        name: String,
        /// The proxy's admin address.
        #[arg(long, default_value = "127.0.0.1:15000")]
        admin: SocketAddr,
        /// Bearer token, when the admin API requires one (also $LATEEN_ADMIN_TOKEN).
        #[arg(long)]
        token: Option<String>,
    },
    /// Show a running proxy's listeners, routes, clusters, endpoints or plugins.
    ProxyConfig {
        kind: lateen::inspect::Kind,
        /// Print the admin API's JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The proxy's admin address.
        #[arg(long, default_value = "127.0.0.1:15000")]
        admin: SocketAddr,
    },
    /// Show a running proxy's state and config sync status.
    ProxyStatus {
        /// The proxy's admin address.
        #[arg(long, default_value = "127.0.0.1:15000")]
        admin: SocketAddr,
        /// Print the admin API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The built-in CA: a root, and SPIFFE workload certificates signed by it.
    #[command(subcommand)]
    Ca(CaCmd),
    /// Add the sidecar (init container, proxy container, volumes) to every pod template in
    /// Kubernetes manifests, as `istioctl kube-inject` does; prints the result.
    Inject {
        /// The manifests (multi-document YAML); `-` for standard input.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Write here instead of standard output.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        /// The image with the `lateen` binary.
        #[arg(long, default_value = "lateen:latest")]
        image: String,
        #[arg(long, default_value_t = 1337)]
        proxy_uid: u32,
        /// ConfigMap holding the sidecar's config.
        #[arg(long, default_value = "lateen-sidecar")]
        config_map: String,
        /// Secret holding the workload identity (from `lateen ca issue`).
        #[arg(long, default_value = "lateen-identity")]
        identity_secret: String,
        /// How long the proxy drains on SIGTERM.
        #[arg(long, default_value = "5s")]
        drain_time: String,
    },
    /// Sidecar traffic interception rules, as istio-iptables makes them: printed in
    /// iptables-restore format, or applied with --apply (in the pod's network namespace).
    Iptables {
        /// The uid the proxy runs as; its traffic is not intercepted.
        #[arg(long, default_value_t = 1337)]
        proxy_uid: u32,
        /// The gid the proxy runs as (default: the uid).
        #[arg(long)]
        proxy_gid: Option<u32>,
        #[arg(long, default_value_t = 15001)]
        outbound_port: u16,
        #[arg(long, default_value_t = 15006)]
        inbound_port: u16,
        /// Inbound ports left alone (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "15020,15021,15090")]
        exclude_inbound_ports: Vec<u16>,
        /// Outbound ports left alone (comma-separated).
        #[arg(long, value_delimiter = ',')]
        exclude_outbound_ports: Vec<u16>,
        /// Outbound destinations left alone (comma-separated CIDRs).
        #[arg(long, value_delimiter = ',')]
        exclude_outbound_ip_ranges: Vec<String>,
        /// Intercept outbound traffic only.
        #[arg(long)]
        outbound_only: bool,
        /// Apply the rules with `iptables-restore --noflush` instead of printing them.
        #[arg(long)]
        apply: bool,
    },
    /// Run one sample backend (answers with its name).
    SampleBackend {
        #[arg(long)]
        name: String,
        #[arg(long)]
        listen: SocketAddr,
    },
}

#[derive(Subcommand)]
enum CaCmd {
    /// Create a root CA: DIR/root-cert.pem and DIR/root-key.pem.
    Init {
        /// Where the CA lives (created).
        #[arg(long)]
        dir: PathBuf,
        /// The mesh's trust domain, in every SPIFFE id the CA issues.
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
        /// How long the root is valid.
        #[arg(long, default_value = "10y", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Issue a workload certificate: OUT/cert-chain.pem, key.pem and root-cert.pem.
    Issue {
        /// The CA directory (from `lateen ca init`, or Istio's plug-in CA files).
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        service_account: String,
        /// Extra DNS names (a gateway's hosts); repeatable.
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// Default: the CA's.
        #[arg(long)]
        trust_domain: Option<String>,
        /// Istio's workload certificates live a day by default.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Output directory (created).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args, Clone)]
struct Common {
    /// Directory with the built-in filters (lateen_router.wasm). Default: $LATEEN_FILTERS_DIR,
    /// then `filters/` beside the binary, then the cargo target layout.
    #[arg(long)]
    filters_dir: Option<PathBuf>,
    /// Compiled-module cache directory ("none" disables it).
    #[arg(long)]
    cache_dir: Option<String>,
    /// Log filter (tracing syntax), e.g. `info`, `lateen=debug`.
    #[arg(long, default_value = "info")]
    log_level: String,
}

#[derive(Args, Clone)]
struct RunArgs {
    /// Config directory or file.
    #[arg(long, short)]
    config: PathBuf,
    /// Worker threads (0 = one per core), as Envoy's --concurrency.
    #[arg(long, default_value_t = 0)]
    concurrency: usize,
    /// Admin API address. Anything but loopback requires --admin-token.
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin_address: SocketAddr,
    /// Bearer token for the admin API's mutating endpoints (also $LATEEN_ADMIN_TOKEN).
    #[arg(long)]
    admin_token: Option<String>,
    /// Where Prometheus scrapes `/stats/prometheus` (read-only), or `off`.
    #[arg(long, default_value = "0.0.0.0:15090", value_parser = parse_optional_addr)]
    stats_address: OptionalAddr,
    /// Where probes read `/healthz/ready`, or `off`.
    #[arg(long, default_value = "0.0.0.0:15021", value_parser = parse_optional_addr)]
    health_address: OptionalAddr,
    /// Bind every listener to this address instead of the Gateway's.
    #[arg(long)]
    bind: Option<IpAddr>,
    /// Do not watch the config (and plugin files) for changes.
    #[arg(long)]
    no_watch: bool,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    drain_time: Duration,
    #[command(flatten)]
    common: Common,
}

/// An address, or `off` for a port not served.
#[derive(Debug, Clone, Copy)]
struct OptionalAddr(Option<SocketAddr>);

fn parse_optional_addr(s: &str) -> Result<OptionalAddr, String> {
    if s == "off" {
        return Ok(OptionalAddr(None));
    }
    s.parse()
        .map(|a| OptionalAddr(Some(a)))
        .map_err(|e| format!("`{s}` is not an address (IP:PORT) or `off`: {e}"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    compile::parse_duration_ms(s)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{s}` is not a duration (e.g. 5s, 500ms)"))
}

fn main() {
    let cli = Cli::parse();
    let code = match run_cli(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn init_logs(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn run_cli(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Run(args) => {
            init_logs(&args.common.log_level);
            run(args, None)
        }
        Cmd::Validate {
            config,
            dump,
            common,
        } => {
            init_logs(&common.log_level);
            validate(&config, dump, &common)
        }
        Cmd::Inject {
            file,
            output,
            image,
            proxy_uid,
            config_map,
            identity_secret,
            drain_time,
        } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            if compile::parse_duration_ms(&drain_time).is_none() {
                bail!("--drain-time: `{drain_time}` is not a duration (e.g. 5s)");
            }
            let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
                .with_context(|| format!("{}: not YAML", file.display()))?;
            let docs: Vec<serde_json::Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
            let opts = lateen::inject::Options {
                image,
                proxy_uid,
                config_map,
                identity_secret,
                drain_time,
            };
            let (docs, n) = lateen::inject::inject(docs, &opts)
                .with_context(|| format!("{}", file.display()))?;
            let yaml = serde_saphyr::to_string_multiple(&docs).context("writing YAML")?;
            match output {
                Some(o) => {
                    std::fs::write(&o, yaml).with_context(|| format!("writing {}", o.display()))?
                }
                None => print!("{yaml}"),
            }
            eprintln!("injected {n} pod template(s)");
            Ok(())
        }
        Cmd::Iptables {
            proxy_uid,
            proxy_gid,
            outbound_port,
            inbound_port,
            exclude_inbound_ports,
            exclude_outbound_ports,
            exclude_outbound_ip_ranges,
            outbound_only,
            apply,
        } => {
            for cidr in &exclude_outbound_ip_ranges {
                if !lateen_authz::config::valid_cidr(cidr) {
                    anyhow::bail!("--exclude-outbound-ip-ranges: `{cidr}` is not a CIDR range");
                }
            }
            let rules = lateen::iptables::rules(&lateen::iptables::Options {
                proxy_uid,
                proxy_gid: proxy_gid.unwrap_or(proxy_uid),
                outbound_port,
                inbound_port,
                exclude_inbound_ports,
                exclude_outbound_ports,
                exclude_outbound_ip_ranges,
                capture_inbound: !outbound_only,
            });
            if !apply {
                print!("{rules}");
                return Ok(());
            }
            let mut child = std::process::Command::new("iptables-restore")
                .arg("--noflush")
                .stdin(std::process::Stdio::piped())
                .spawn()
                .context("running iptables-restore (apt-get install iptables)")?;
            if let Some(mut stdin) = child.stdin.take() {
                use std::io::Write as _;
                stdin.write_all(rules.as_bytes())?;
            }
            let status = child.wait()?;
            anyhow::ensure!(status.success(), "iptables-restore failed: {status}");
            Ok(())
        }
        Cmd::Ca(CaCmd::Init {
            dir,
            trust_domain,
            ttl,
        }) => {
            let cert = lateen_core::tls::ca::init(&dir, &trust_domain, ttl)?;
            println!(
                "root CA for trust domain {trust_domain}: {}",
                cert.display()
            );
            Ok(())
        }
        Cmd::Ca(CaCmd::Issue {
            ca,
            namespace,
            service_account,
            dns,
            trust_domain,
            ttl,
            out,
        }) => {
            let w = lateen_core::tls::ca::Workload {
                namespace,
                service_account,
                dns_names: dns,
                trust_domain,
                ttl,
            };
            let id = lateen_core::tls::ca::issue(&ca, &w, &out)?;
            println!("{id}: {}", out.join("cert-chain.pem").display());
            Ok(())
        }
        Cmd::NewFilter {
            name,
            dir,
            lateen,
            component,
        } => {
            let made = lateen::scaffold::new_filter(&lateen::scaffold::Request {
                name: name.clone(),
                dir,
                lateen,
                target_dir: None,
                component,
            })?;
            let p = if made.in_workspace {
                format!(" -p {name}")
            } else {
                String::new()
            };
            let cd = if made.in_workspace {
                String::new()
            } else {
                format!("cd {} && ", made.dir.display())
            };
            println!(
                "Created {dir}\n\nNext:\n  {cd}cargo test{p}        # builds the .wasm and tests it on Lateen's runtime\n  cp {dir}/wasmplugin.yaml CONFIG_DIR/   # load it into a running proxy (lateen demo --config-dir CONFIG_DIR)\n\nThe module is built to {wasm}.",
                dir = made.dir.display(),
                wasm = made.wasm.display(),
            );
            Ok(())
        }
        Cmd::Demo { config_dir, common } => {
            init_logs(&common.log_level);
            demo(config_dir, common)
        }
        Cmd::Compile { files, common } => {
            init_logs(&common.log_level);
            let rt = runtime(&common)?;
            if rt.opts.cache_dir.is_none() {
                bail!("compile needs a module cache (--cache-dir DIR)");
            }
            for f in files {
                let bytes =
                    std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
                let started = std::time::Instant::now();
                let m = rt
                    .compile(&bytes)
                    .with_context(|| format!("compiling {}", f.display()))?;
                let loaded = started.elapsed();
                // One instance, as a worker makes at load: instantiation plus the module's
                // initializer, before any root context.
                let started = std::time::Instant::now();
                let identity = std::sync::Arc::new(lateen_wasm::PluginIdentity {
                    name: f.display().to_string(),
                    root_id: String::new(),
                    vm_id: String::new(),
                    env: Vec::new(),
                    vm_configuration: Default::default(),
                });
                let resolver = lateen_model::names(&Default::default(), Default::default());
                lateen_wasm::Vm::new(&rt, &m, identity, resolver)
                    .with_context(|| format!("instantiating {}", f.display()))?;
                println!(
                    "{}: sha256 {} {} in {:.2} ms, instantiated in {:.3} ms",
                    f.display(),
                    m.sha256,
                    if m.from_cache {
                        "deserialized from the cache"
                    } else {
                        "compiled and cached"
                    },
                    loaded.as_secs_f64() * 1000.0,
                    started.elapsed().as_secs_f64() * 1000.0
                );
            }
            Ok(())
        }
        Cmd::Push {
            file,
            name,
            admin,
            token,
        } => push(
            &file,
            &name,
            admin,
            token.or_else(|| std::env::var("LATEEN_ADMIN_TOKEN").ok()),
        ),
        Cmd::ProxyConfig { kind, json, admin } => {
            let v = admin_get(admin, kind.path())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", lateen::inspect::render(kind, &v));
            }
            Ok(())
        }
        Cmd::ProxyStatus { admin, json } => {
            let v = admin_get(admin, "/server_info")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", lateen::inspect::render_status(&admin.to_string(), &v));
            }
            Ok(())
        }
        Cmd::SampleBackend { name, listen } => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(lateen::backend::serve(name, listen))?;
            Ok(())
        }
    }
}

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
fn fetcher(common: &Common) -> Arc<dyn lateen::config::compile::ModuleSource> {
    let dir = cache_dir(common)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("lateen-{}", std::process::id())))
        .join("fetched");
    Arc::new(lateen::fetch::HttpFetcher { cache_dir: dir })
}

fn pushed_dir(common: &Common) -> Option<PathBuf> {
    cache_dir(common).map(|d| d.join("pushed"))
}

// GETs a JSON view from a running proxy's admin API.
fn admin_get(admin: SocketAddr, path: &str) -> Result<serde_json::Value> {
    use http_body_util::{BodyExt, Empty};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client: hyper_util::client::legacy::Client<_, Empty<bytes::Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let uri: hyper::Uri = format!("http://{admin}{path}").parse()?;
        let resp = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
            .await
            .with_context(|| format!("no answer from the admin API at {admin} in 10 s"))?
            .with_context(|| {
                format!("reaching the admin API at {admin} (is the proxy running? see --admin)")
            })?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!(
                "{admin}{path} answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            );
        }
        serde_json::from_slice(&body).with_context(|| format!("{admin}{path} did not answer JSON"))
    })
}

fn push(file: &Path, name: &str, admin: SocketAddr, token: Option<String>) -> Result<()> {
    use http_body_util::{BodyExt, Full};
    use sha2::{Digest, Sha256};
    let module = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let sha = hex::encode(Sha256::digest(&module));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let mut req =
            hyper::Request::post(format!("http://{admin}/plugins/{name}")).header("x-sha256", &sha);
        if let Some(t) = &token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = client
            .request(req.body(Full::new(bytes::Bytes::from(module)))?)
            .await
            .with_context(|| format!("pushing to {admin}"))?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!(
                "push refused ({status}): {}",
                String::from_utf8_lossy(&body).trim()
            );
        }
        println!(
            "pushed {} as pushed://{name} (sha256 {sha})",
            file.display()
        );
        Ok(())
    })
}

fn runtime(common: &Common) -> Result<Runtime> {
    let cache_dir = cache_dir(common);
    Runtime::new(RuntimeOptions {
        cache_dir,
        ..RuntimeOptions::default()
    })
    .context("starting the wasm runtime")
}

fn built_snapshot(
    res: &lateen::config::compile::Resources,
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

fn report(errors: Vec<lateen::config::ConfigError>) -> anyhow::Error {
    for e in &errors {
        eprintln!("{e}");
    }
    anyhow::anyhow!("configuration has {} error(s)", errors.len())
}

fn validate(config: &Path, dump: bool, common: &Common) -> Result<()> {
    let rt = runtime(common)?;
    let opts = BuildOptions {
        builtin_filters: filters_dir(common),
        bind_override: None,
        remote: Some(fetcher(common)),
        pushed_dir: pushed_dir(common),
    };
    let files = compile::load(config).map_err(report)?;
    let xds = lateen::config::xds::client_config(&files).map_err(|e| report(vec![e]))?;
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

fn run(args: RunArgs, on_ready: Option<Box<dyn FnOnce() + Send>>) -> Result<()> {
    admin::mark_start();
    let rt = Arc::new(runtime(&args.common)?);
    let opts = BuildOptions {
        builtin_filters: filters_dir(&args.common),
        bind_override: args.bind,
        remote: Some(fetcher(&args.common)),
        pushed_dir: pushed_dir(&args.common),
    };
    let admin_token = args
        .admin_token
        .clone()
        .or_else(|| std::env::var("LATEEN_ADMIN_TOKEN").ok());
    if !args.admin_address.ip().is_loopback() && admin_token.is_none() {
        bail!(
            "the admin API on {} would be reachable from the network: pass --admin-token",
            args.admin_address
        );
    }
    // SAFETY: mi_collect only walks mimalloc's own heaps; it is safe on any thread.
    #[allow(
        unsafe_code,
        reason = "an FFI call into the allocator the binary links"
    )]
    lateen::sources::set_trim(|| unsafe { libmimalloc_sys::mi_collect(true) });
    let files = compile::load(&args.config).map_err(report)?;
    let xds_client = lateen::config::xds::client_config(&files).map_err(|e| report(vec![e]))?;
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
    let mut admin = vec![
        admin::start(args.admin_address, admin_state.clone(), Surface::Admin)
            .with_context(|| format!("binding admin API on {}", args.admin_address))?,
    ];
    for (addr, surface) in [
        (args.stats_address.0, Surface::Stats),
        (args.health_address.0, Surface::Health),
    ] {
        if let Some(addr) = addr {
            admin.push(
                admin::start(addr, admin_state.clone(), surface)
                    .with_context(|| format!("binding the {surface:?} port on {addr}"))?,
            );
        }
    }
    // With a control plane, wait for its first complete config (as Envoy's init manager
    // does, with the admin API answering PRE_INITIALIZING meanwhile) so that the listeners
    // it defines are bound at start.
    if let Some((wait, status)) = &xds {
        let initialized = || {
            status
                .initialized
                .load(std::sync::atomic::Ordering::Acquire)
        };
        let deadline = std::time::Instant::now() + *wait;
        while !initialized() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !initialized() {
            tracing::warn!(
                "xDS: no complete configuration within {wait:?}; starting with what there is"
            );
        }
    }
    let snap = snapshots.load_full();
    let workers = if args.concurrency == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        args.concurrency
    };
    // Bind every listener for every worker first, so a port conflict fails the start.
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
    let listening: Vec<String> = snap
        .listeners
        .iter()
        .filter(|l| l.bind)
        .map(|l| l.addr.to_string())
        .collect();
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
    if !args.no_watch {
        let reloader = lateen::watch::Reloader { sources };
        lateen::watch::spawn(reloader, Duration::from_millis(30))
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

const DEMO_CONFIG: &str = include_str!("../../samples/demo/demo.yaml");

fn demo(config_dir: Option<PathBuf>, common: Common) -> Result<()> {
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
