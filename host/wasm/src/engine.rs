//! Engine, linker and compiled-module cache. Compiling happens off the request path (when a
//! snapshot is built); compiled artifacts are kept on disk by sha256 so a restart or a
//! re-push of the same module only deserializes, and the modules in use are kept in memory
//! so a reload that keeps a binary (a config change) does not even do that.

use crate::abi;
use crate::shared::Shared;
use crate::state::HostState;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module};

/// Tunables of the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Where compiled modules are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Linear-memory cap per VM instance.
    pub memory_limit: usize,
    /// Longest a single callback may run before it is interrupted (epoch deadline).
    pub callback_timeout: Duration,
    /// Instance slots in the pooling allocator (workers × plugins × 2 for swaps).
    pub pool_instances: u32,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            cache_dir: None,
            memory_limit: 64 << 20,
            callback_timeout: Duration::from_millis(500),
            pool_instances: 256,
        }
    }
}

/// Errors loading or running a plugin module.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    #[error("engine: {0}")]
    Engine(String),
    #[error("module does not compile: {0}")]
    Compile(String),
    #[error("module imports `{module}.{name}`, which Lateen does not provide")]
    MissingImport { module: String, name: String },
    #[error("module cannot be instantiated: {0}")]
    Instantiate(String),
    #[error("plugin rejected its configuration (on_configure returned false)")]
    ConfigureRejected,
    #[error("plugin failed to start (on_vm_start returned false)")]
    StartRejected,
    #[error("plugin trapped during {phase}: {message}")]
    Trap {
        phase: &'static str,
        message: String,
    },
}

/// What a plugin binary is, once linked.
pub(crate) enum Pre {
    /// A proxy-wasm core module.
    Module(InstancePre<HostState>),
    /// A `lateen:filter` component.
    Component(wasmtime::component::InstancePre<HostState>),
}

/// A module (or component) compiled for this engine and pre-linked against the host
/// functions.
pub struct CompiledModule {
    pub sha256: String,
    pub(crate) pre: Pre,
    /// Whether it was loaded from the disk cache rather than compiled.
    pub from_cache: bool,
}

/// The process-wide wasm runtime.
pub struct Runtime {
    pub(crate) engine: Engine,
    linker: Linker<HostState>,
    components: wasmtime::component::Linker<HostState>,
    pub opts: RuntimeOptions,
    pub shared: Arc<Shared>,
    pub(crate) epoch_tick: Duration,
    /// Modules some snapshot still holds, by sha256.
    loaded: Mutex<HashMap<String, Weak<CompiledModule>>>,
}

const EPOCH_TICK: Duration = Duration::from_millis(5);

impl Runtime {
    pub fn new(opts: RuntimeOptions) -> Result<Self, WasmError> {
        let engine = match Engine::new(&Self::config(&opts, true)) {
            Ok(e) => e,
            Err(e) => {
                // The pooling allocator needs a large virtual reservation; some sandboxes
                // refuse it. On-demand allocation works everywhere.
                tracing::warn!("pooling allocator unavailable ({e}); using on-demand allocation");
                Engine::new(&Self::config(&opts, false))
                    .map_err(|e| WasmError::Engine(e.to_string()))?
            }
        };
        let mut linker = Linker::new(&engine);
        abi::define(&mut linker).map_err(|e| WasmError::Engine(e.to_string()))?;
        let mut components = wasmtime::component::Linker::new(&engine);
        crate::component::define(&mut components).map_err(|e| WasmError::Engine(e.to_string()))?;
        // Epoch interruption bounds every callback; one thread bumps the epoch for all.
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("lateen-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(EPOCH_TICK);
                match ticker.upgrade() {
                    Some(e) => e.increment_epoch(),
                    None => return,
                }
            })
            .map_err(|e| WasmError::Engine(e.to_string()))?;
        Ok(Runtime {
            engine,
            linker,
            components,
            opts,
            shared: Arc::new(Shared::default()),
            epoch_tick: EPOCH_TICK,
            loaded: Mutex::default(),
        })
    }

    fn config(opts: &RuntimeOptions, pooling: bool) -> Config {
        let mut c = Config::new();
        c.epoch_interruption(true);
        c.cranelift_opt_level(wasmtime::OptLevel::Speed);
        if pooling {
            let mut p = wasmtime::PoolingAllocationConfig::new();
            p.total_core_instances(opts.pool_instances)
                .total_memories(opts.pool_instances)
                .total_tables(opts.pool_instances)
                .max_memory_size(opts.memory_limit);
            c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
        }
        c
    }

    /// Epoch ticks a callback may run.
    pub(crate) fn deadline_ticks(&self) -> u64 {
        (self.opts.callback_timeout.as_millis() / self.epoch_tick.as_millis()).max(1) as u64
    }

    /// A compiled, linked module for `bytes`: the one a live snapshot already holds when the
    /// binary is the same (a reload that changes only configuration then costs a digest),
    /// otherwise [`Runtime::compile`]d. Off the request path.
    pub fn load(&self, bytes: &[u8]) -> Result<Arc<CompiledModule>, WasmError> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = loaded.get(&sha256).and_then(Weak::upgrade) {
            return Ok(m);
        }
        let m = Arc::new(self.compile_digested(bytes, sha256.clone())?);
        loaded.retain(|_, w| w.strong_count() > 0);
        loaded.insert(sha256, Arc::downgrade(&m));
        Ok(m)
    }

    /// Compiles (or loads from the cache) a proxy-wasm module or a `lateen:filter`
    /// component. Slow: call it off the request path.
    pub fn compile(&self, bytes: &[u8]) -> Result<CompiledModule, WasmError> {
        self.compile_digested(bytes, hex::encode(Sha256::digest(bytes)))
    }

    #[allow(
        unsafe_code,
        reason = "deserializing our own cached artifact; see `cached`"
    )]
    fn compile_digested(&self, bytes: &[u8], sha256: String) -> Result<CompiledModule, WasmError> {
        if is_component(bytes) {
            return self.compile_component(bytes, sha256);
        }
        let (module, from_cache) = self.cached(
            &sha256,
            "cwasm",
            // SAFETY: see `cached`.
            |p| unsafe { Module::deserialize_file(&self.engine, p) },
            || Module::new(&self.engine, bytes),
            Module::serialize,
        )?;
        let pre = Pre::Module(self.link(&module)?);
        Ok(CompiledModule {
            sha256,
            pre,
            from_cache,
        })
    }

    fn cache_path(&self, sha256: &str, ext: &str) -> Option<PathBuf> {
        self.opts.cache_dir.as_ref().map(|d| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            self.engine.precompile_compatibility_hash().hash(&mut h);
            d.join(format!("{sha256}-{:016x}.{ext}", h.finish()))
        })
    }

    /// A compiled artifact from the disk cache, or compiled now and cached; and whether it
    /// came from the cache. `deserialize` is only given files in the cache directory, which
    /// holds only what this engine configuration serialized (the file name carries the
    /// engine's compatibility hash); wasmtime still checks the header and rejects a
    /// mismatch, in which case the artifact is compiled again.
    fn cached<T>(
        &self,
        sha256: &str,
        ext: &str,
        deserialize: impl FnOnce(&std::path::Path) -> wasmtime::Result<T>,
        compile: impl FnOnce() -> wasmtime::Result<T>,
        serialize: impl FnOnce(&T) -> wasmtime::Result<Vec<u8>>,
    ) -> Result<(T, bool), WasmError> {
        let cache_path = self.cache_path(sha256, ext);
        if let Some(p) = cache_path.as_ref().filter(|p| p.exists()) {
            match deserialize(p) {
                Ok(t) => return Ok((t, true)),
                Err(e) => tracing::warn!("ignoring cached artifact {}: {e}", p.display()),
            }
        }
        let t = compile().map_err(|e| WasmError::Compile(format!("{e:#}")))?;
        if let Some(p) = &cache_path {
            let written = serialize(&t)
                .map_err(std::io::Error::other)
                .and_then(|b| write_bytes(p, &b));
            if let Err(e) = written {
                tracing::warn!("cannot cache compiled artifact at {}: {e}", p.display());
            }
        }
        Ok((t, false))
    }

    #[allow(
        unsafe_code,
        reason = "deserializing our own cached artifact; see `cached`"
    )]
    fn compile_component(&self, bytes: &[u8], sha256: String) -> Result<CompiledModule, WasmError> {
        use wasmtime::component::Component;
        let (component, from_cache) = self.cached(
            &sha256,
            "cwasmc",
            // SAFETY: see `cached`.
            |p| unsafe { Component::deserialize_file(&self.engine, p) },
            || Component::new(&self.engine, bytes),
            Component::serialize,
        )?;
        // WASI that a wasip2 guest's std needs to start (random seeds for HashMap, clocks,
        // its environment) is served; the rest (stdio, files, sockets) traps if called.
        let mut linker = self.components.clone();
        for (name, _) in component.component_type().imports(&self.engine) {
            crate::component::define_wasi(&mut linker, name)
                .map_err(|e| WasmError::Instantiate(format!("{name}: {e:#}")))?;
            if name.starts_with("lateen:filter/") && !name.starts_with("lateen:filter/types") {
                let known = [
                    "log",
                    "metrics",
                    "properties",
                    "route-decision",
                    "shared-store",
                ];
                let iface = name.trim_start_matches("lateen:filter/");
                let iface = iface.split('@').next().unwrap_or(iface);
                if !known.contains(&iface) {
                    return Err(WasmError::MissingImport {
                        module: name.to_string(),
                        name: String::new(),
                    });
                }
            }
        }
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(|e| WasmError::Instantiate(e.to_string()))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| WasmError::Instantiate(format!("{e:#}")))?;
        Ok(CompiledModule {
            sha256,
            pre: Pre::Component(pre),
            from_cache,
        })
    }

    fn link(&self, module: &Module) -> Result<InstancePre<HostState>, WasmError> {
        match self.linker.instantiate_pre(module) {
            Ok(pre) => Ok(pre),
            Err(first) => {
                // A proxy-wasm import we lack is an error (the plugin would misbehave); a
                // WASI function beyond our subset only traps if the plugin ever calls it.
                let mut linker = self.linker.clone();
                for import in module.imports() {
                    if import.module() == "env" && !ENV_FUNCTIONS.contains(&import.name()) {
                        return Err(WasmError::MissingImport {
                            module: import.module().into(),
                            name: import.name().into(),
                        });
                    }
                }
                linker
                    .define_unknown_imports_as_traps(module)
                    .map_err(|e| WasmError::Instantiate(e.to_string()))?;
                linker
                    .instantiate_pre(module)
                    .map_err(|e| WasmError::Instantiate(format!("{first}; {e}")))
            }
        }
    }
}

/// Every `env` function [`abi::define`] provides, so a missing import can be named.
const ENV_FUNCTIONS: &[&str] = &[
    "proxy_log",
    "proxy_get_log_level",
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_buffer_bytes",
    "proxy_get_buffer_status",
    "proxy_set_buffer_bytes",
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_value",
    "proxy_get_header_map_size",
    "proxy_remove_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_add_header_map_value",
    "proxy_get_property",
    "proxy_set_property",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_continue_stream",
    "proxy_continue_request",
    "proxy_continue_response",
    "proxy_clear_route_cache",
    "proxy_close_stream",
    "proxy_send_local_response",
    "proxy_http_call",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
    "proxy_get_status",
    "proxy_set_effective_context",
    "proxy_call_foreign_function",
    "proxy_done",
    "proxy_define_metric",
    "proxy_get_metric",
    "proxy_record_metric",
    "proxy_increment_metric",
];

/// Whether `bytes` are a component rather than a core module (the binary format's layer
/// field, after the magic and a version).
fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [1, 0]
}

fn write_bytes(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Write then rename, so a concurrent reader never sees half a file.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid module: the magic and the version.
    const EMPTY: &[u8] = b"\0asm\x01\0\0\0";

    #[test]
    fn a_live_module_is_reused_and_a_dropped_one_is_not_kept() {
        let rt = Runtime::new(RuntimeOptions::default()).expect("runtime");
        let a = rt.load(EMPTY).expect("load");
        let b = rt.load(EMPTY).expect("load again");
        assert!(Arc::ptr_eq(&a, &b), "the same binary while one is live");
        let weak = Arc::downgrade(&a);
        drop((a, b));
        assert!(
            weak.upgrade().is_none(),
            "the runtime holds no strong reference"
        );
        let c = rt.load(EMPTY).expect("load after drop");
        assert_eq!(c.sha256, hex::encode(Sha256::digest(EMPTY)));
    }
}
