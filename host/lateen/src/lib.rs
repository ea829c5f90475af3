//! The `lateen` binary's library: the CLI's commands, the config sources (files and the xDS
//! client) and their watch, the admin API, and the tools (inject, iptables, scaffold,
//! inspect). The proxy itself is `lateen-proxy`; the config compiler `lateen-config`.

pub mod admin;
pub mod backend;
pub mod fetch;
pub mod inject;
pub mod inspect;
pub mod iptables;
pub mod scaffold;
pub mod sources;
pub mod watch;
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
