//! One request through a plugin: the callbacks a test runs and what the plugin did.

use crate::http::{HttpCall, Request, Response};
use crate::plugin::{byte_pairs, text_pairs, Inner};
use crate::{Action, HarnessError};
use bytes::Bytes;
use lateen_wasm::state::{LocalResponse, StreamInfo};
use lateen_wasm::{CallError, StreamState, Vm};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::SystemTime;

pub(crate) type StreamSlot = RefCell<Box<StreamState>>;

/// A stream context: one request and its response. Run the callbacks in the order a
/// proxy would, then look at what the plugin changed or asked for. Dropping a stream that
/// was not [`finish`](Stream::finish)ed finishes it.
///
/// ```no_run
/// use lateen_harness::{Action, Plugin, Request, Response};
/// let plugin = Plugin::load("filter.wasm").start().unwrap();
/// let mut s = plugin.stream();
/// assert_eq!(s.send_request(Request::get("/").header("user-agent", "curl/8")).unwrap(), Action::Continue);
/// assert_eq!(s.request_header("x-tag").as_deref(), Some("cli"));
/// s.send_response(Response::new(200)).unwrap();
/// s.finish().unwrap();
/// ```
pub struct Stream {
    plugin: Rc<RefCell<Inner>>,
    ctx: u32,
    slot: Rc<StreamSlot>,
    finished: bool,
}

/// Header pairs as the host keeps them (lower-case names).
fn owned(pairs: &[(&str, &str)]) -> Vec<(String, Bytes)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), Bytes::from(v.to_string())))
        .collect()
}

fn header(list: &[(String, Bytes)], name: &str) -> Option<String> {
    let name = name.to_ascii_lowercase();
    list.iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

impl Stream {
    pub(crate) fn new(plugin: Rc<RefCell<Inner>>, ctx: u32, slot: Rc<StreamSlot>) -> Self {
        slot.borrow_mut().info = Some(Arc::new(StreamInfo {
            request_id: format!("harness-{ctx}"),
            source: SocketAddr::from(([127, 0, 0, 1], 50000)),
            destination: SocketAddr::from(([127, 0, 0, 1], 8080)),
            protocol: "HTTP/1.1",
            start: SystemTime::now(),
            listener: "harness".into(),
            tls: None,
        }));
        Stream {
            plugin,
            ctx,
            slot,
            finished: false,
        }
    }

    // One callback with this stream's state, then what it asked of others.
    fn run<R>(
        &mut self,
        f: impl FnOnce(&mut Vm, u32, &mut Box<StreamState>) -> Result<R, CallError>,
    ) -> Result<R, HarnessError> {
        let mut inner = self.plugin.borrow_mut();
        let r = {
            let mut st = self.slot.borrow_mut();
            f(&mut inner.vm, self.ctx, &mut st)
        };
        inner.collect();
        Ok(r?)
    }

    /// The stream's context id.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// assert!(plugin.stream().context_id() > 1);
    /// ```
    pub fn context_id(&self) -> u32 {
        self.ctx
    }

    /// Sets the downstream peer address (`source.address`; default `127.0.0.1:50000`).
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// let mut s = plugin.stream();
    /// s.set_source("10.0.0.7:41000".parse().unwrap());
    /// ```
    pub fn set_source(&mut self, addr: SocketAddr) {
        let mut st = self.slot.borrow_mut();
        if let Some(info) = st.info.as_mut() {
            Arc::make_mut(info).source = addr;
        }
    }

    /// Sets a property the plugin can read (`proxy_get_property`), by dotted path: for
    /// example the route decision a router made, or `request.auth.claims`.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// let mut s = plugin.stream();
    /// s.set_property("lateen.route.id", "default/reviews#0");
    /// ```
    pub fn set_property(&mut self, path: &str, value: impl Into<Bytes>) {
        self.slot
            .borrow_mut()
            .props
            .insert(path.to_string(), value.into());
    }

    /// Runs `on_request_headers`. Names are lower-cased.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// let mut s = plugin.stream();
    /// s.request_headers(&[(":method", "GET"), (":path", "/"), (":authority", "a")], true).unwrap();
    /// ```
    pub fn request_headers(
        &mut self,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Action, HarnessError> {
        self.slot.borrow_mut().req_headers = owned(headers);
        self.run(|vm, ctx, st| vm.on_request_headers(ctx, st, end_of_stream))
    }

    /// Appends a chunk to the buffered request body and runs `on_request_body`.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// # let mut s = plugin.stream();
    /// s.request_body(b"{\"a\":1}", true).unwrap();
    /// ```
    pub fn request_body(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Action, HarnessError> {
        {
            let mut st = self.slot.borrow_mut();
            st.req_body.extend_from_slice(chunk);
            st.req_body_bytes += chunk.len() as u64;
        }
        self.run(|vm, ctx, st| vm.on_body(ctx, st, false, end_of_stream))
    }

    /// Runs `on_request_trailers`.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// # let mut s = plugin.stream();
    /// s.request_trailers(&[("x-checksum", "abc")]).unwrap();
    /// ```
    pub fn request_trailers(&mut self, trailers: &[(&str, &str)]) -> Result<Action, HarnessError> {
        self.slot.borrow_mut().req_trailers = owned(trailers);
        self.run(|vm, ctx, st| vm.on_trailers(ctx, st, false))
    }

    /// Runs the request through `on_request_headers`, then `on_request_body` and
    /// `on_request_trailers` when it has them, stopping at the first callback that does not
    /// continue (or that sends a local response). Returns the last callback's action.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// # let mut s = plugin.stream();
    /// let action = s.send_request(lateen_harness::Request::post("/orders", "{}")).unwrap();
    /// ```
    pub fn send_request(&mut self, request: Request) -> Result<Action, HarnessError> {
        let (headers, body, trailers) = request.into_parts();
        let eos = body.is_none() && trailers.is_empty();
        self.slot.borrow_mut().req_headers = byte_pairs(headers);
        let mut action = self.run(|vm, ctx, st| vm.on_request_headers(ctx, st, eos))?;
        if let Some(body) = body {
            if self.proceeds(action) {
                let eos = trailers.is_empty();
                action = self.request_body(&body, eos)?;
            }
        }
        if !trailers.is_empty() && self.proceeds(action) {
            self.slot.borrow_mut().req_trailers = byte_pairs(trailers);
            action = self.run(|vm, ctx, st| vm.on_trailers(ctx, st, false))?;
        }
        Ok(action)
    }

    fn proceeds(&self, action: Action) -> bool {
        action == Action::Continue && self.slot.borrow().local_response.is_none()
    }

    /// Runs `on_response_headers`; `:status` also sets `response.code`.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// # let mut s = plugin.stream();
    /// s.response_headers(&[(":status", "200")], true).unwrap();
    /// ```
    pub fn response_headers(
        &mut self,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Action, HarnessError> {
        self.set_response_headers(owned(headers));
        self.run(|vm, ctx, st| vm.on_response_headers(ctx, st, end_of_stream))
    }

    fn set_response_headers(&mut self, list: Vec<(String, Bytes)>) {
        let mut st = self.slot.borrow_mut();
        st.response_code = header(&list, ":status").and_then(|s| s.parse().ok());
        st.resp_headers = list;
    }

    /// Appends a chunk to the buffered response body and runs `on_response_body`.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// # let mut s = plugin.stream();
    /// s.response_body(b"hello", true).unwrap();
    /// ```
    pub fn response_body(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Action, HarnessError> {
        {
            let mut st = self.slot.borrow_mut();
            st.resp_body.extend_from_slice(chunk);
            st.resp_body_bytes += chunk.len() as u64;
        }
        self.run(|vm, ctx, st| vm.on_body(ctx, st, true, end_of_stream))
    }

    /// Runs `on_response_trailers`.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// # let mut s = plugin.stream();
    /// s.response_trailers(&[("grpc-status", "0")]).unwrap();
    /// ```
    pub fn response_trailers(&mut self, trailers: &[(&str, &str)]) -> Result<Action, HarnessError> {
        self.slot.borrow_mut().resp_trailers = owned(trailers);
        self.run(|vm, ctx, st| vm.on_trailers(ctx, st, true))
    }

    /// Runs the response through `on_response_headers`, then body and trailers when it has
    /// them, stopping at the first callback that does not continue.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// # let mut s = plugin.stream();
    /// s.send_response(lateen_harness::Response::new(200).body("ok")).unwrap();
    /// ```
    pub fn send_response(&mut self, response: Response) -> Result<Action, HarnessError> {
        let (headers, body, trailers) = response.into_parts();
        let eos = body.is_none() && trailers.is_empty();
        self.set_response_headers(byte_pairs(headers));
        let mut action = self.run(|vm, ctx, st| vm.on_response_headers(ctx, st, eos))?;
        if let Some(body) = body {
            if action == Action::Continue {
                action = self.response_body(&body, trailers.is_empty())?;
            }
        }
        if !trailers.is_empty() && action == Action::Continue {
            self.slot.borrow_mut().resp_trailers = byte_pairs(trailers);
            action = self.run(|vm, ctx, st| vm.on_trailers(ctx, st, true))?;
        }
        Ok(action)
    }

    /// Ends the stream: `on_done`, `on_log` and `on_delete`, in Envoy's order. Metrics and
    /// access-log style work happens here.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// # let mut s = plugin.stream();
    /// s.finish().unwrap();
    /// ```
    pub fn finish(&mut self) -> Result<(), HarnessError> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        self.run(|vm, ctx, st| vm.finish_stream(ctx, st))
    }

    /// The first value of a request header, as the plugin left it.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// # let s = plugin.stream();
    /// assert_eq!(s.request_header("x-tag").as_deref(), Some("mobile"));
    /// ```
    pub fn request_header(&self, name: &str) -> Option<String> {
        header(&self.slot.borrow().req_headers, name)
    }

    /// Every request header, in order, as the plugin left them.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// # let s = plugin.stream();
    /// assert!(s.request_headers_now().iter().all(|(k, _)| k != "authorization"));
    /// ```
    pub fn request_headers_now(&self) -> Vec<(String, String)> {
        text_pairs(&self.slot.borrow().req_headers)
    }

    /// The first value of a response header, as the plugin left it.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// # let s = plugin.stream();
    /// assert_eq!(s.response_header("server").as_deref(), Some("lateen"));
    /// ```
    pub fn response_header(&self, name: &str) -> Option<String> {
        header(&self.slot.borrow().resp_headers, name)
    }

    /// Every response header, in order, as the plugin left them.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// # let s = plugin.stream();
    /// assert!(!s.response_headers_now().is_empty());
    /// ```
    pub fn response_headers_now(&self) -> Vec<(String, String)> {
        text_pairs(&self.slot.borrow().resp_headers)
    }

    /// The buffered request body, as the plugin left it.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// # let s = plugin.stream();
    /// assert_eq!(s.request_body_now(), b"redacted");
    /// ```
    pub fn request_body_now(&self) -> Vec<u8> {
        self.slot.borrow().req_body.clone()
    }

    /// The buffered response body, as the plugin left it.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// # let s = plugin.stream();
    /// assert!(s.response_body_now().is_empty());
    /// ```
    pub fn response_body_now(&self) -> Vec<u8> {
        self.slot.borrow().resp_body.clone()
    }

    /// The local response the plugin sent (`proxy_send_local_response`), from one of this
    /// stream's callbacks or from another context on its behalf (a tick).
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// # let s = plugin.stream();
    /// let reply = s.local_response().unwrap();
    /// assert_eq!(reply.status, 429);
    /// ```
    pub fn local_response(&self) -> Option<LocalResponse> {
        self.slot.borrow().local_response.clone()
    }

    /// A property as the plugin sees it now (`proxy_get_property`): what a plugin or the
    /// test set, or one the host derives (`request.path`, `response.code`, ...).
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// # let s = plugin.stream();
    /// assert_eq!(s.property("lateen.route.cluster").as_deref(), Some("outbound|80|v1|reviews"));
    /// ```
    pub fn property(&self, path: &str) -> Option<String> {
        self.property_bytes(path)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    /// A property's raw bytes (integers are 8-byte little-endian, as in Envoy).
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// # let s = plugin.stream();
    /// let code = s.property_bytes("response.code").unwrap();
    /// assert_eq!(i64::from_le_bytes(code[..8].try_into().unwrap()), 200);
    /// ```
    pub fn property_bytes(&self, path: &str) -> Option<Bytes> {
        let mut inner = self.plugin.borrow_mut();
        let mut st = self.slot.borrow_mut();
        let host = inner.vm.host_state();
        std::mem::swap(&mut host.cur, &mut *st);
        let v = lateen_wasm::abi::property(host, path);
        std::mem::swap(&mut host.cur, &mut *st);
        v
    }

    /// Whether the plugin resumed the request it paused (`proxy_continue_stream`), itself or
    /// from another context.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// # let s = plugin.stream();
    /// assert!(s.request_resumed());
    /// ```
    pub fn request_resumed(&self) -> bool {
        self.slot.borrow().resume_request
    }

    /// Whether the plugin resumed the response it paused.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// # let s = plugin.stream();
    /// assert!(!s.response_resumed());
    /// ```
    pub fn response_resumed(&self) -> bool {
        self.slot.borrow().resume_response
    }

    /// Whether the plugin reset the stream (`proxy_close_stream`).
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// # let s = plugin.stream();
    /// assert!(!s.was_reset());
    /// ```
    pub fn was_reset(&self) -> bool {
        self.slot.borrow().reset
    }

    /// The http_calls this stream made that are not answered yet.
    ///
    /// ```no_run
    /// # let plugin = lateen_harness::Plugin::load("filter.wasm").start().unwrap();
    /// # let s = plugin.stream();
    /// let call = &s.http_calls()[0];
    /// assert_eq!(call.header(":path"), Some("/check"));
    /// ```
    pub fn http_calls(&self) -> Vec<HttpCall> {
        self.plugin.borrow().calls_of(Some(self.ctx))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // A test that panics mid-stream must not panic again here.
        if self.finished || std::thread::panicking() {
            return;
        }
        self.finished = true;
        if let Ok(mut inner) = self.plugin.try_borrow_mut() {
            if let Ok(mut st) = self.slot.try_borrow_mut() {
                let _ = inner.vm.finish_stream(self.ctx, &mut st);
            }
            inner.collect();
        }
    }
}
