//! The subcommands besides the proxy itself: sidecar injection and interception rules, the
//! built-in CA, the filter scaffold, module precompilation, and the admin API's clients.

use super::{CaInitArgs, CaIssueArgs, Common, InjectArgs, IptablesArgs, NewFilterArgs};
use anyhow::{bail, Context, Result};
use lateen_config::compile;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn inject(a: InjectArgs) -> Result<()> {
    let InjectArgs {
        file,
        output,
        image,
        proxy_uid,
        config_map,
        identity_secret,
        drain_time,
    } = a;
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?
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
    let (docs, n) =
        lateen::inject::inject(docs, &opts).with_context(|| format!("{}", file.display()))?;
    let yaml = serde_saphyr::to_string_multiple(&docs).context("writing YAML")?;
    match output {
        Some(o) => std::fs::write(&o, yaml).with_context(|| format!("writing {}", o.display()))?,
        None => print!("{yaml}"),
    }
    eprintln!("injected {n} pod template(s)");
    Ok(())
}

pub fn iptables(a: IptablesArgs) -> Result<()> {
    for cidr in &a.exclude_outbound_ip_ranges {
        if !lateen_authz::config::valid_cidr(cidr) {
            bail!("--exclude-outbound-ip-ranges: `{cidr}` is not a CIDR range");
        }
    }
    let rules = lateen::iptables::rules(&lateen::iptables::Options {
        proxy_uid: a.proxy_uid,
        proxy_gid: a.proxy_gid.unwrap_or(a.proxy_uid),
        outbound_port: a.outbound_port,
        inbound_port: a.inbound_port,
        exclude_inbound_ports: a.exclude_inbound_ports,
        exclude_outbound_ports: a.exclude_outbound_ports,
        exclude_outbound_ip_ranges: a.exclude_outbound_ip_ranges,
        capture_inbound: !a.outbound_only,
    });
    if !a.apply {
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

pub fn ca_init(a: CaInitArgs) -> Result<()> {
    let cert = lateen_core::tls::ca::init(&a.dir, &a.trust_domain, a.ttl)?;
    println!(
        "root CA for trust domain {}: {}",
        a.trust_domain,
        cert.display()
    );
    Ok(())
}

pub fn ca_issue(a: CaIssueArgs) -> Result<()> {
    let w = lateen_core::tls::ca::Workload {
        namespace: a.namespace,
        service_account: a.service_account,
        dns_names: a.dns,
        trust_domain: a.trust_domain,
        ttl: a.ttl,
    };
    let id = lateen_core::tls::ca::issue(&a.ca, &w, &a.out)?;
    println!("{id}: {}", a.out.join("cert-chain.pem").display());
    Ok(())
}

pub fn new_filter(a: NewFilterArgs) -> Result<()> {
    let name = a.name;
    let made = lateen::scaffold::new_filter(&lateen::scaffold::Request {
        name: name.clone(),
        dir: a.dir,
        lateen: a.lateen,
        target_dir: None,
        component: a.component,
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

/// Compiles each module into the cache and instantiates it once, as a worker does at load.
pub fn compile_modules(files: &[PathBuf], common: &Common) -> Result<()> {
    let rt = super::run::runtime(common)?;
    if rt.opts.cache_dir.is_none() {
        bail!("compile needs a module cache (--cache-dir DIR)");
    }
    for f in files {
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
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

pub fn proxy_config(kind: lateen::inspect::Kind, json: bool, admin: SocketAddr) -> Result<()> {
    let v = admin_get(admin, kind.path())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", lateen::inspect::render(kind, &v));
    }
    Ok(())
}

pub fn proxy_status(admin: SocketAddr, json: bool) -> Result<()> {
    let v = admin_get(admin, "/server_info")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", lateen::inspect::render_status(&admin.to_string(), &v));
    }
    Ok(())
}

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

pub fn push(file: &Path, name: &str, admin: SocketAddr, token: Option<String>) -> Result<()> {
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
