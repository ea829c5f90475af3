//! The `lateen` command: its arguments, and which function each subcommand runs (`run`:
//! the proxy, validate, the demo; `tools`: the rest).

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use lateen_config::compile;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

// Per-request allocations (header lists, buffers) dominate user-space time; mimalloc's
// thread-local free lists suit one-runtime-per-worker threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod run;
mod tools;

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
    NewFilter(NewFilterArgs),
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
    Inject(InjectArgs),
    /// Sidecar traffic interception rules, as istio-iptables makes them: printed in
    /// iptables-restore format, or applied with --apply (in the pod's network namespace).
    Iptables(IptablesArgs),
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
    Init(CaInitArgs),
    /// Issue a workload certificate: OUT/cert-chain.pem, key.pem and root-cert.pem.
    Issue(CaIssueArgs),
}

#[derive(Args, Clone)]
pub struct Common {
    /// Directory with the built-in filters (lateen_router.wasm). Default: $LATEEN_FILTERS_DIR,
    /// then `filters/` beside the binary, then the cargo target layout.
    #[arg(long)]
    pub filters_dir: Option<PathBuf>,
    /// Compiled-module cache directory ("none" disables it).
    #[arg(long)]
    pub cache_dir: Option<String>,
    /// Log filter (tracing syntax), e.g. `info`, `lateen=debug`.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

#[derive(Args, Clone)]
pub struct RunArgs {
    /// Config directory or file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Worker threads (0 = one per core), as Envoy's --concurrency.
    #[arg(long, default_value_t = 0)]
    pub concurrency: usize,
    /// Admin API address. Anything but loopback requires --admin-token.
    #[arg(long, default_value = "127.0.0.1:15000")]
    pub admin_address: SocketAddr,
    /// Bearer token for the admin API's mutating endpoints (also $LATEEN_ADMIN_TOKEN).
    #[arg(long)]
    pub admin_token: Option<String>,
    /// Where Prometheus scrapes `/stats/prometheus` (read-only), or `off`.
    #[arg(long, default_value = "0.0.0.0:15090", value_parser = parse_optional_addr)]
    pub stats_address: OptionalAddr,
    /// Where probes read `/healthz/ready`, or `off`.
    #[arg(long, default_value = "0.0.0.0:15021", value_parser = parse_optional_addr)]
    pub health_address: OptionalAddr,
    /// Bind every listener to this address instead of the Gateway's.
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// Do not watch the config (and plugin files) for changes.
    #[arg(long)]
    pub no_watch: bool,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain_time: Duration,
    #[command(flatten)]
    pub common: Common,
}

/// An address, or `off` for a port not served.
#[derive(Debug, Clone, Copy)]
pub struct OptionalAddr(pub Option<SocketAddr>);

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

#[derive(Args)]
pub struct NewFilterArgs {
    /// Crate name: lower-case letters, digits and `-`.
    pub name: String,
    /// Directory to create it in. Default: `filters/` of the Lateen checkout you are in
    /// (the crate joins its workspace), else the current directory.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The Lateen checkout to depend on, for a crate outside one. Default: the
    /// checkout this binary was built from.
    #[arg(long)]
    pub lateen: Option<PathBuf>,
    /// A component-model filter (the typed `lateen:filter` world, built for
    /// wasm32-wasip2) instead of a proxy-wasm module.
    #[arg(long)]
    pub component: bool,
}

#[derive(Args)]
pub struct InjectArgs {
    /// The manifests (multi-document YAML); `-` for standard input.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// Write here instead of standard output.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// The image with the `lateen` binary.
    #[arg(long, default_value = "lateen:latest")]
    pub image: String,
    #[arg(long, default_value_t = 1337)]
    pub proxy_uid: u32,
    /// ConfigMap holding the sidecar's config.
    #[arg(long, default_value = "lateen-sidecar")]
    pub config_map: String,
    /// Secret holding the workload identity (from `lateen ca issue`).
    #[arg(long, default_value = "lateen-identity")]
    pub identity_secret: String,
    /// How long the proxy drains on SIGTERM.
    #[arg(long, default_value = "5s")]
    pub drain_time: String,
}

#[derive(Args)]
pub struct IptablesArgs {
    /// The uid the proxy runs as; its traffic is not intercepted.
    #[arg(long, default_value_t = 1337)]
    pub proxy_uid: u32,
    /// The gid the proxy runs as (default: the uid).
    #[arg(long)]
    pub proxy_gid: Option<u32>,
    #[arg(long, default_value_t = 15001)]
    pub outbound_port: u16,
    #[arg(long, default_value_t = 15006)]
    pub inbound_port: u16,
    /// Inbound ports left alone (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "15020,15021,15090")]
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound ports left alone (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destinations left alone (comma-separated CIDRs).
    #[arg(long, value_delimiter = ',')]
    pub exclude_outbound_ip_ranges: Vec<String>,
    /// Intercept outbound traffic only.
    #[arg(long)]
    pub outbound_only: bool,
    /// Apply the rules with `iptables-restore --noflush` instead of printing them.
    #[arg(long)]
    pub apply: bool,
}

#[derive(Args)]
pub struct CaIssueArgs {
    /// The CA directory (from `lateen ca init`, or Istio's plug-in CA files).
    #[arg(long)]
    pub ca: PathBuf,
    #[arg(long)]
    pub namespace: String,
    #[arg(long)]
    pub service_account: String,
    /// Extra DNS names (a gateway's hosts); repeatable.
    #[arg(long = "dns")]
    pub dns: Vec<String>,
    /// Default: the CA's.
    #[arg(long)]
    pub trust_domain: Option<String>,
    /// Istio's workload certificates live a day by default.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Output directory (created).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct CaInitArgs {
    /// Where the CA lives (created).
    #[arg(long)]
    pub dir: PathBuf,
    /// The mesh's trust domain, in every SPIFFE id the CA issues.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// How long the root is valid.
    #[arg(long, default_value = "10y", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}

fn run_cli(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Run(args) => {
            init_logs(&args.common.log_level);
            run::run(args, None)
        }
        Cmd::Validate {
            config,
            dump,
            common,
        } => {
            init_logs(&common.log_level);
            run::validate(&config, dump, &common)
        }
        Cmd::Demo { config_dir, common } => {
            init_logs(&common.log_level);
            run::demo(config_dir, common)
        }
        Cmd::Compile { files, common } => {
            init_logs(&common.log_level);
            tools::compile_modules(&files, &common)
        }
        Cmd::Inject(a) => tools::inject(a),
        Cmd::Iptables(a) => tools::iptables(a),
        Cmd::Ca(CaCmd::Init(a)) => tools::ca_init(a),
        Cmd::Ca(CaCmd::Issue(a)) => tools::ca_issue(a),
        Cmd::NewFilter(a) => tools::new_filter(a),
        Cmd::Push {
            file,
            name,
            admin,
            token,
        } => tools::push(
            &file,
            &name,
            admin,
            token.or_else(|| std::env::var("LATEEN_ADMIN_TOKEN").ok()),
        ),
        Cmd::ProxyConfig { kind, json, admin } => tools::proxy_config(kind, json, admin),
        Cmd::ProxyStatus { admin, json } => tools::proxy_status(admin, json),
        Cmd::SampleBackend { name, listen } => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(lateen::backend::serve(name, listen))?;
            Ok(())
        }
    }
}
