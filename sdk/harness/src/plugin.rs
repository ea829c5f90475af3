//! A plugin running in one VM on Lateen's runtime, as one proxy worker would run it.

use crate::http::{HttpCall, Response};
use crate::stream::{Stream, StreamSlot};
use crate::{HarnessError, LogLevel, LogRecord};
use bytes::Bytes;
use lateen_wasm::state::{CallResponse, PendingCall, RemoteAction};
use lateen_wasm::{ClusterResolver, PluginIdentity, Runtime, RuntimeOptions, StreamState, Vm};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Where the module comes from.
#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// How a plugin is started: what [`Plugin::load`] and [`Plugin::from_bytes`] return.
///
/// ```no_run
/// use lateen_harness::{LogLevel, Plugin};
/// let plugin = Plugin::load("target/wasm32-wasip1/wasm/my_filter.wasm")
///     .name("default/my-filter")
///     .config_json(&serde_json::json!({"header": "x-tag"}))
///     .log_level(LogLevel::Debug)
///     .start()
///     .unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct PluginBuilder {
    source: Source,
    identity: PluginIdentity,
    config: Bytes,
    log_level: LogLevel,
    opts: RuntimeOptions,
    clusters: Option<Vec<String>>,
    check_schema: bool,
}

impl PluginBuilder {
    fn new(source: Source) -> Self {
        PluginBuilder {
            source,
            identity: PluginIdentity {
                name: "harness/plugin".into(),
                ..Default::default()
            },
            config: Bytes::new(),
            log_level: LogLevel::Trace,
            check_schema: true,
            opts: RuntimeOptions {
                cache_dir: None,
                pool_instances: 4,
                ..Default::default()
            },
            clusters: None,
        }
    }

    /// The plugin's name (`plugin_name`, and the name its logs and stats carry). Lateen
    /// names WasmPlugins `namespace/name`.
    ///
    /// ```no_run
    /// # let b = lateen_harness::Plugin::from_bytes(vec![]);
    /// let b = b.name("istio-system/tagger");
    /// ```
    pub fn name(mut self, name: &str) -> Self {
        self.identity.name = name.into();
        self
    }

    /// The root id (`plugin_root_id`, WasmPlugin `pluginName`).
    ///
    /// ```no_run
    /// # let b = lateen_harness::Plugin::from_bytes(vec![]);
    /// let b = b.root_id("tagger_root");
    /// ```
    pub fn root_id(mut self, id: &str) -> Self {
        self.identity.root_id = id.into();
        self
    }

    /// The VM id (`plugin_vm_id`); shared queues are scoped by it.
    ///
    /// ```no_run
    /// # let b = lateen_harness::Plugin::from_bytes(vec![]);
    /// let b = b.vm_id("tagger_vm");
    /// ```
    pub fn vm_id(mut self, id: &str) -> Self {
        self.identity.vm_id = id.into();
        self
    }

    /// The plugin configuration, as raw bytes (`pluginConfig` is passed as JSON).
    ///
    /// ```no_run
    /// # let b = lateen_harness::Plugin::from_bytes(vec![]);
    /// let b = b.config(r#"{"header": "x-tag"}"#);
    /// ```
    pub fn config(mut self, config: impl Into<Bytes>) -> Self {
        self.config = config.into();
        self
    }

    /// The plugin configuration as JSON, as Lateen passes a WasmPlugin's `pluginConfig`.
    ///
    /// ```no_run
    /// # let b = lateen_harness::Plugin::from_bytes(vec![]);
    /// let b = b.config_json(&serde_json::json!({"header": "x-tag"}));
    /// ```
    pub fn config_json(self, config: &serde_json::Value) -> Self {
        self.config(config.to_string())
    }

    /// The VM configuration (`vmConfig`), read in `on_vm_start`.
    ///
    /// ```no_run
    /// # let b = lateen_harness::Plugin::from_bytes(vec![]);
    /// let b = b.vm_config("shared-cache");
    /// ```
    pub fn vm_config(mut self, config: impl Into<Bytes>) -> Self {
        self.identity.vm_configuration = config.into();
        self
    }

    /// Adds a WASI environment variable (WasmPlugin `vmConfig.env`).
    ///
    /// ```no_run
    /// # let b = lateen_harness::Plugin::from_bytes(vec![]);
    /// let b = b.env("REGION", "eu-west-1");
    /// ```
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.identity.env.push((name.into(), value.into()));
        self
    }

    /// The lowest level the plugin logs at, and what `proxy_get_log_level` tells it
    /// (default: trace, so every line can be asserted).
    ///
    /// ```no_run
    /// # let b = lateen_harness::Plugin::from_bytes(vec![]);
    /// let b = b.log_level(lateen_harness::LogLevel::Info);
    /// ```
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.log_level = level;
        self
    }

    /// Skips the config schema check, to test what `on_configure` itself refuses. By
    /// default a config that violates the module's schema (`lateen_sdk::config_schema!`)
    /// fails [`start`](Self::start) with [`HarnessError::Schema`], as the proxy refuses it.
    ///
    /// ```no_run
    /// # let b = lateen_harness::Plugin::from_bytes(vec![]);
    /// let b = b.skip_schema();
    /// ```
    pub fn skip_schema(mut self) -> Self {
        self.check_schema = false;
        self
    }

    /// The linear-memory cap (default 64 MiB, as in the proxy).
    ///
    /// ```no_run
    /// # let b = lateen_harness::Plugin::from_bytes(vec![]);
    /// let b = b.memory_limit(16 << 20);
    /// ```
    pub fn memory_limit(mut self, bytes: usize) -> Self {
        self.opts.memory_limit = bytes;
        self
    }

    /// The longest one callback may run (default 500 ms, as in the proxy).
    ///
    /// ```no_run
    /// # let b = lateen_harness::Plugin::from_bytes(vec![]);
    /// let b = b.callback_timeout(std::time::Duration::from_millis(50));
    /// ```
    pub fn callback_timeout(mut self, timeout: Duration) -> Self {
        self.opts.callback_timeout = timeout;
        self
    }

    /// The upstreams `proxy_http_call` may name; a call to any other fails with
    /// `BadArgument`, as a call to an unknown cluster does in the proxy. By default every
    /// name is accepted.
    ///
    /// ```no_run
    /// # let b = lateen_harness::Plugin::from_bytes(vec![]);
    /// let b = b.clusters(["outbound|80||auth.example.com"]);
    /// ```
    pub fn clusters<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.clusters = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Compiles the module (or loads it from the compile cache beside it), instantiates it
    /// and configures its root context, as the proxy does when a plugin is loaded.
    ///
    /// Fails if the module does not compile or link, or if `on_vm_start` or
    /// `on_configure` rejects the configuration.
    ///
    /// ```no_run
    /// let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// ```
    pub fn start(self) -> Result<Plugin, HarnessError> {
        let (bytes, cache_dir) = match &self.source {
            Source::File(path) => {
                let bytes = std::fs::read(path).map_err(|source| HarnessError::Read {
                    path: path.clone(),
                    source,
                })?;
                (bytes, path.parent().map(|d| d.join("lateen-harness-cache")))
            }
            Source::Bytes(b) => (b.clone(), None),
        };
        let rt = Runtime::new(RuntimeOptions {
            cache_dir,
            ..self.opts
        })?;
        let module = rt.compile(&bytes)?;
        if self.check_schema {
            let path = match &self.source {
                Source::File(p) => Some(p.as_path()),
                Source::Bytes(_) => None,
            };
            check_schema(&bytes, path, &self.config)?;
        }
        let resolver = Arc::new(Clusters(self.clusters));
        let name = self.identity.name.clone();
        let mut vm = Vm::new(&rt, &module, Arc::new(self.identity), resolver)?;
        let host = vm.host_state();
        host.log_capture = Some(Vec::new());
        host.log_level = self.log_level as i32;
        let mut inner = Inner {
            name,
            rt,
            vm,
            root: 0,
            tick_period: None,
            calls: Vec::new(),
            streams: HashMap::new(),
        };
        let root = inner.vm.create_root(self.config);
        inner.collect();
        inner.root = match root {
            Ok(root) => root,
            Err(source) => {
                let logs = take_logs(&mut inner.vm);
                return Err(HarnessError::Load { source, logs });
            }
        };
        Ok(Plugin {
            inner: Rc::new(RefCell::new(inner)),
        })
    }
}

struct Clusters(Option<Vec<String>>);

impl ClusterResolver for Clusters {
    fn resolve(&self, upstream: &str) -> Option<String> {
        match &self.0 {
            None => Some(upstream.to_string()),
            Some(known) => known.iter().find(|c| *c == upstream).cloned(),
        }
    }
}

pub(crate) struct Inner {
    name: String,
    rt: Runtime,
    pub(crate) vm: Vm,
    pub(crate) root: u32,
    tick_period: Option<Duration>,
    calls: Vec<PendingCall>,
    /// Live streams, so actions a callback aims at another stream reach it.
    streams: HashMap<u32, Weak<StreamSlot>>,
}

impl Inner {
    /// Gathers what the last callback asked for: http_calls, tick periods and actions on
    /// other streams.
    pub(crate) fn collect(&mut self) {
        self.calls.extend(self.vm.take_pending_calls());
        for (ctx, period) in self.vm.take_tick_requests() {
            if ctx == self.root {
                self.tick_period = (!period.is_zero()).then_some(period);
            }
        }
        for action in self.vm.take_remote_actions() {
            let ctx = match &action {
                RemoteAction::Resume { context, .. } => *context,
                RemoteAction::LocalResponse { context, .. } => *context,
            };
            let Some(slot) = self.streams.get(&ctx).and_then(Weak::upgrade) else {
                continue;
            };
            // Busy only while that stream is being finished: nothing left to deliver to.
            let Ok(mut st) = slot.try_borrow_mut() else {
                continue;
            };
            match action {
                RemoteAction::Resume { response, .. } => {
                    if response {
                        st.resume_response = true;
                    } else {
                        st.resume_request = true;
                    }
                }
                RemoteAction::LocalResponse { response, .. } => st.local_response = Some(response),
            }
        }
    }

    pub(crate) fn register(&mut self, ctx: u32, slot: &Rc<StreamSlot>) {
        self.streams.retain(|_, s| s.strong_count() > 0);
        self.streams.insert(ctx, Rc::downgrade(slot));
    }

    pub(crate) fn calls_of(&self, ctx: Option<u32>) -> Vec<HttpCall> {
        self.calls
            .iter()
            .filter(|c| ctx.is_none_or(|ctx| c.context_id == ctx))
            .map(|c| HttpCall {
                token: c.token,
                context_id: c.context_id,
                cluster: c.cluster.clone(),
                headers: text_pairs(&c.headers),
                body: c.body.clone(),
                timeout: c.timeout,
            })
            .collect()
    }
}

fn records(vm: &mut Vm) -> Vec<LogRecord> {
    vm.host_state()
        .log_capture
        .iter()
        .flatten()
        .map(|(level, message)| LogRecord {
            level: LogLevel::from_raw(*level),
            message: message.clone(),
        })
        .collect()
}

fn take_logs(vm: &mut Vm) -> Vec<LogRecord> {
    let logs = records(vm);
    vm.host_state().log_capture = Some(Vec::new());
    logs
}

pub(crate) fn text_pairs(list: &[(String, Bytes)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

pub(crate) fn byte_pairs(list: Vec<(String, String)>) -> Vec<(String, Bytes)> {
    list.into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), Bytes::from(v)))
        .collect()
}

/// A running plugin: one VM with its configured root context, as one proxy worker holds
/// it. Make streams with [`Plugin::stream`]; answer http_calls, fire ticks, move the clock,
/// and read metrics, logs and shared data here.
///
/// ```no_run
/// use lateen_harness::{Action, Plugin, Request};
/// let plugin = Plugin::load("filter.wasm").start().unwrap();
/// let mut s = plugin.stream();
/// assert_eq!(s.send_request(Request::get("/")).unwrap(), Action::Continue);
/// ```
pub struct Plugin {
    pub(crate) inner: Rc<RefCell<Inner>>,
}

/// The value of one plugin metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricValue {
    /// A counter's or a gauge's value.
    Value(i64),
    /// A histogram's sample count and sum.
    Histogram { count: u64, sum: u64 },
}

impl Plugin {
    /// A plugin from a built `.wasm` file. Compiled modules are cached in
    /// `lateen-harness-cache/` beside it, so later tests only deserialize.
    ///
    /// ```no_run
    /// let wasm = lateen_harness::build_filter(env!("CARGO_MANIFEST_DIR")).unwrap();
    /// let plugin = lateen_harness::Plugin::load(wasm).start().unwrap();
    /// ```
    pub fn load(path: impl Into<PathBuf>) -> PluginBuilder {
        PluginBuilder::new(Source::File(path.into()))
    }

    /// A plugin from module bytes (compiled every time: no cache).
    ///
    /// ```no_run
    /// let bytes = std::fs::read("filter.wasm").unwrap();
    /// let plugin = lateen_harness::Plugin::from_bytes(bytes).start().unwrap();
    /// ```
    pub fn from_bytes(bytes: Vec<u8>) -> PluginBuilder {
        PluginBuilder::new(Source::Bytes(bytes))
    }

    /// Creates a stream context (`proxy_on_context_create`) for one request.
    ///
    /// Panics if the plugin already trapped: a trapped instance is unusable.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// let mut s = plugin.stream();
    /// ```
    pub fn stream(&self) -> Stream {
        self.try_stream().expect("create a stream context")
    }

    /// Creates a stream context, or says why the plugin cannot.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// let s = plugin.try_stream().unwrap();
    /// ```
    pub fn try_stream(&self) -> Result<Stream, HarnessError> {
        let mut inner = self.inner.borrow_mut();
        let root = inner.root;
        let ctx = inner.vm.create_stream(root);
        inner.collect();
        let ctx = ctx?;
        let slot = Rc::new(RefCell::new(Box::<StreamState>::default()));
        inner.register(ctx, &slot);
        Ok(Stream::new(self.inner.clone(), ctx, slot))
    }

    /// http_calls made by any context and not answered yet.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// assert!(plugin.http_calls().is_empty());
    /// ```
    pub fn http_calls(&self) -> Vec<HttpCall> {
        self.inner.borrow().calls_of(None)
    }

    /// Answers an http_call (`proxy_on_http_call_response` on the context that made it);
    /// `None` answers it as failed (no response, as on a timeout or a reset).
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// let call = plugin.http_calls().remove(0);
    /// plugin
    ///     .answer_http_call(call.token, Some(lateen_harness::Response::new(200).body("ok")))
    ///     .unwrap();
    /// ```
    pub fn answer_http_call(
        &self,
        token: u32,
        answer: Option<Response>,
    ) -> Result<(), HarnessError> {
        let mut inner = self.inner.borrow_mut();
        let i = inner
            .calls
            .iter()
            .position(|c| c.token == token)
            .ok_or(HarnessError::NoSuchCall(token))?;
        let call = inner.calls.remove(i);
        let response = answer.map(|r| {
            let (headers, body, trailers) = r.into_parts();
            CallResponse {
                headers: byte_pairs(headers),
                body: body.unwrap_or_default(),
                trailers: byte_pairs(trailers),
            }
        });
        let slot = inner.streams.get(&call.context_id).and_then(Weak::upgrade);
        let r = match &slot {
            Some(slot) => {
                let mut st = slot.borrow_mut();
                inner
                    .vm
                    .on_http_call_response(call.context_id, token, &mut st, response)
            }
            None => {
                let mut st = Box::<StreamState>::default();
                inner
                    .vm
                    .on_http_call_response(call.context_id, token, &mut st, response)
            }
        };
        inner.collect();
        Ok(r?)
    }

    /// The tick period the root context asked for (`proxy_set_tick_period_milliseconds`).
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// assert_eq!(plugin.tick_period(), None);
    /// ```
    pub fn tick_period(&self) -> Option<Duration> {
        self.inner.borrow().tick_period
    }

    /// Runs `proxy_on_tick` once, if the root context asked for ticks; returns whether it
    /// ran. Streams the tick resumes or answers see it at once.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// plugin.advance_clock(std::time::Duration::from_secs(1));
    /// plugin.tick().unwrap();
    /// ```
    pub fn tick(&self) -> Result<bool, HarnessError> {
        let mut inner = self.inner.borrow_mut();
        if inner.tick_period.is_none() {
            return Ok(false);
        }
        let root = inner.root;
        let r = inner.vm.on_tick(root);
        inner.collect();
        r?;
        Ok(true)
    }

    /// Moves the clock the plugin reads (`proxy_get_current_time_nanoseconds`) forward, so
    /// delays and token buckets can be tested without sleeping.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// plugin.advance_clock(std::time::Duration::from_millis(250));
    /// ```
    pub fn advance_clock(&self, by: Duration) {
        self.inner.borrow_mut().vm.host_state().clock_offset += by;
    }

    /// A metric the plugin defined, by its full name (`proxy_define_metric`).
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// use lateen_harness::MetricValue;
    /// assert_eq!(plugin.metric("tagger_requests_total"), Some(MetricValue::Value(1)));
    /// ```
    pub fn metric(&self, name: &str) -> Option<MetricValue> {
        self.metrics()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// A counter's or gauge's value, by full name; `None` if it is not defined or is a
    /// histogram.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// assert_eq!(plugin.counter("tagger_requests_total"), Some(1));
    /// ```
    pub fn counter(&self, name: &str) -> Option<i64> {
        match self.metric(name)? {
            MetricValue::Value(v) => Some(v),
            MetricValue::Histogram { .. } => None,
        }
    }

    /// Every metric the plugin defined, sorted by name.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// for (name, value) in plugin.metrics() {
    ///     println!("{name} {value:?}");
    /// }
    /// ```
    pub fn metrics(&self) -> Vec<(String, MetricValue)> {
        let inner = self.inner.borrow();
        let mut all: Vec<_> = inner
            .rt
            .shared
            .all_metrics()
            .iter()
            .map(|m| {
                let v = match m.kind {
                    lateen_wasm::shared::MetricKind::Histogram => MetricValue::Histogram {
                        count: m.count.load(Ordering::Relaxed),
                        sum: m.sum.load(Ordering::Relaxed),
                    },
                    _ => MetricValue::Value(m.value.load(Ordering::Relaxed)),
                };
                (m.name.clone(), v)
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The series of one labelled metric family (names made with
    /// `lateen_sdk::metrics::labelled_name`, as Lateen's Prometheus exporter reads them):
    /// each series' labels and value.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// use lateen_harness::MetricValue;
    /// let series = plugin.labelled_metrics("tagger_requests_total");
    /// let (labels, value) = &series[0];
    /// assert_eq!(labels["client"], "cli");
    /// assert_eq!(*value, MetricValue::Value(1));
    /// ```
    pub fn labelled_metrics(&self, family: &str) -> Vec<(BTreeMap<String, String>, MetricValue)> {
        use lateen_sdk::metrics::{FIELD_SEPARATOR, VALUE_SEPARATOR};
        self.metrics()
            .into_iter()
            .filter_map(|(name, value)| {
                let mut fields = name.split(FIELD_SEPARATOR);
                if fields.next() != Some(family) {
                    return None;
                }
                let labels = fields
                    .filter_map(|f| f.split_once(VALUE_SEPARATOR))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                Some((labels, value))
            })
            .collect()
    }

    /// Everything the plugin logged so far, oldest first.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// assert!(plugin.logs().iter().all(|l| l.level < lateen_harness::LogLevel::Error));
    /// ```
    pub fn logs(&self) -> Vec<LogRecord> {
        records(&mut self.inner.borrow_mut().vm)
    }

    /// Whether some log line contains `text`.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// assert!(plugin.logged("configured"));
    /// ```
    pub fn logged(&self, text: &str) -> bool {
        self.logs().iter().any(|l| l.message.contains(text))
    }

    /// A shared-data value (`proxy_get_shared_data`) and its CAS.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// let (value, _cas) = plugin.shared_data("counter").unwrap();
    /// ```
    pub fn shared_data(&self, key: &str) -> Option<(Bytes, u32)> {
        self.inner.borrow().rt.shared.get(key)
    }

    /// Callbacks run so far by every plugin with this one's name, and the time spent in
    /// them (guest code and the host calls it made), as the proxy's
    /// `lateen_wasm_callbacks_total` and `lateen_wasm_cpu_seconds_total` count them.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// let (callbacks, time) = plugin.callback_time();
    /// println!("{:?} per callback", time / callbacks.max(1) as u32);
    /// ```
    pub fn callback_time(&self) -> (u64, Duration) {
        let stats = lateen_core::stats::store().plugin(&self.inner.borrow().name);
        (
            stats.callbacks.get(),
            Duration::from_nanos(stats.cpu_ns.get()),
        )
    }

    /// Bytes of linear memory the instance holds.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// assert!(plugin.memory_bytes() < 16 << 20);
    /// ```
    pub fn memory_bytes(&self) -> usize {
        self.inner.borrow_mut().vm.memory_bytes()
    }

    /// Why the instance is unusable, once a callback trapped or ran past its deadline.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// assert!(plugin.broken().is_none());
    /// ```
    pub fn broken(&self) -> Option<String> {
        self.inner.borrow().vm.broken().map(str::to_string)
    }
}

// The proxy's load-time check: the config against the schema the module ships.
fn check_schema(
    bytes: &[u8],
    path: Option<&std::path::Path>,
    config: &Bytes,
) -> Result<(), HarnessError> {
    let schema =
        lateen_wasm::schema::find(bytes, path).map_err(|message| HarnessError::Schema {
            field: String::new(),
            message,
        })?;
    let Some(schema) = schema else {
        return Ok(());
    };
    let value = if config.is_empty() {
        None
    } else {
        Some(
            serde_json::from_slice::<serde_json::Value>(config).map_err(|e| {
                HarnessError::Schema {
                    field: String::new(),
                    message: format!("the configuration is not JSON: {e}"),
                }
            })?,
        )
    };
    match schema.check(value.as_ref()).into_iter().next() {
        None => Ok(()),
        Some(v) => Err(HarnessError::Schema {
            field: v.field,
            message: v.message,
        }),
    }
}
