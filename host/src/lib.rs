//! Lateen: a WebAssembly-first service-mesh proxy.
//!
//! Data flow: `listener` (accept, codec) → `chain` (drives the wasm filters of a stream) →
//! route decision → `cluster` (endpoints, load balancing, upstream pools). `config` turns
//! Istio YAML into an immutable [`lateen_model::Snapshot`], which runs as a [`live::Live`].

pub mod access_log;
pub mod admin;
pub mod backend;
pub mod body;
pub mod chain;
pub mod cluster;
pub mod config;
pub mod connector;
pub mod fetch;
pub mod inject;
pub mod inspect;
pub mod iptables;
pub mod listener;
pub mod live;
pub mod proxy;
pub mod retry;
pub mod rollout;
pub mod scaffold;
pub mod sidecar;
pub mod sources;
pub mod tcp;
pub mod trace;
pub mod upstream;
pub mod watch;
pub mod worker;
pub mod xds;

/// Runs the future `task` makes on a thread of its own, on a single-threaded runtime (the
/// admin API and the xDS client keep off the workers' threads so).
pub fn spawn_runtime_thread<F, Fut>(
    name: String,
    task: F,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(task()),
                Err(e) => tracing::error!("{name}: cannot start its runtime: {e}"),
            }
        })
}
