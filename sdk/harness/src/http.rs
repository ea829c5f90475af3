//! Requests and responses a test feeds to a plugin, and the http_calls a plugin makes.

use bytes::Bytes;
use std::time::Duration;

/// Headers, body and trailers of a message.
pub(crate) type Parts = (Vec<(String, String)>, Option<Bytes>, Vec<(String, String)>);

/// A request to run through a plugin's request callbacks. Pseudo-headers come first, as
/// proxy-wasm hosts present them.
///
/// ```
/// let r = lateen_harness::Request::get("/reviews/1?x=1")
///     .authority("reviews.default.svc.cluster.local")
///     .header("cookie", "user=jason");
/// assert_eq!(r.headers()[0], (":method".to_string(), "GET".to_string()));
/// ```
#[derive(Debug, Clone)]
pub struct Request {
    headers: Vec<(String, String)>,
    body: Option<Bytes>,
    trailers: Vec<(String, String)>,
}

impl Request {
    /// A request with `method` and `path`; `:scheme` is `http` and `:authority` is
    /// `localhost` until set.
    ///
    /// ```
    /// let r = lateen_harness::Request::new("DELETE", "/items/7");
    /// assert!(r.headers().iter().any(|(k, v)| k == ":method" && v == "DELETE"));
    /// ```
    pub fn new(method: &str, path: &str) -> Self {
        Request {
            headers: vec![
                (":method".into(), method.into()),
                (":scheme".into(), "http".into()),
                (":authority".into(), "localhost".into()),
                (":path".into(), path.into()),
            ],
            body: None,
            trailers: Vec::new(),
        }
    }

    /// A `GET` of `path`.
    ///
    /// ```
    /// let r = lateen_harness::Request::get("/");
    /// assert!(r.body_bytes().is_none());
    /// ```
    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    /// A `POST` of `path` with `body`.
    ///
    /// ```
    /// let r = lateen_harness::Request::post("/orders", "{}");
    /// assert_eq!(r.body_bytes().unwrap().as_ref(), b"{}");
    /// ```
    pub fn post(path: &str, body: impl Into<Bytes>) -> Self {
        Self::new("POST", path).body(body)
    }

    /// Sets `:authority` (the host).
    ///
    /// ```
    /// let r = lateen_harness::Request::get("/").authority("shop.example.com");
    /// assert!(r.headers().iter().any(|(k, v)| k == ":authority" && v == "shop.example.com"));
    /// ```
    pub fn authority(self, host: &str) -> Self {
        self.set(":authority", host)
    }

    /// Sets `:scheme`.
    ///
    /// ```
    /// let r = lateen_harness::Request::get("/").scheme("https");
    /// assert!(r.headers().iter().any(|(k, v)| k == ":scheme" && v == "https"));
    /// ```
    pub fn scheme(self, scheme: &str) -> Self {
        self.set(":scheme", scheme)
    }

    /// Adds a header (the name is lower-cased; repeated names are kept in order).
    ///
    /// ```
    /// let r = lateen_harness::Request::get("/").header("X-Tag", "a").header("x-tag", "b");
    /// assert_eq!(r.headers().iter().filter(|(k, _)| k == "x-tag").count(), 2);
    /// ```
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Sets the body; the headers are then sent without end of stream.
    ///
    /// ```
    /// let r = lateen_harness::Request::get("/").body("hello");
    /// assert_eq!(r.body_bytes().unwrap().len(), 5);
    /// ```
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Adds a trailer, sent after the body.
    ///
    /// ```
    /// let r = lateen_harness::Request::post("/", "x").trailer("grpc-status", "0");
    /// assert_eq!(r.trailers().len(), 1);
    /// ```
    pub fn trailer(mut self, name: &str, value: &str) -> Self {
        self.trailers
            .push((name.to_ascii_lowercase(), value.into()));
        self
    }

    fn set(mut self, name: &str, value: &str) -> Self {
        match self.headers.iter_mut().find(|(k, _)| k == name) {
            Some(h) => h.1 = value.into(),
            None => self.headers.push((name.into(), value.into())),
        }
        self
    }

    /// The headers, pseudo-headers first.
    ///
    /// ```
    /// assert_eq!(lateen_harness::Request::get("/").headers().len(), 4);
    /// ```
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The body, if any.
    ///
    /// ```
    /// assert!(lateen_harness::Request::get("/").body_bytes().is_none());
    /// ```
    pub fn body_bytes(&self) -> Option<&Bytes> {
        self.body.as_ref()
    }

    /// The trailers.
    ///
    /// ```
    /// assert!(lateen_harness::Request::get("/").trailers().is_empty());
    /// ```
    pub fn trailers(&self) -> &[(String, String)] {
        &self.trailers
    }

    pub(crate) fn into_parts(self) -> Parts {
        (self.headers, self.body, self.trailers)
    }
}

/// A response: fed to a plugin's response callbacks, or the answer to one of its
/// http_calls.
///
/// ```
/// let r = lateen_harness::Response::new(200).header("content-type", "text/plain").body("ok");
/// assert_eq!(r.status(), 200);
/// ```
#[derive(Debug, Clone)]
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Option<Bytes>,
    trailers: Vec<(String, String)>,
}

impl Response {
    /// A response with `status` and no body.
    ///
    /// ```
    /// assert_eq!(lateen_harness::Response::new(204).status(), 204);
    /// ```
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: vec![(":status".into(), status.to_string())],
            body: None,
            trailers: Vec::new(),
        }
    }

    /// Adds a header (lower-cased).
    ///
    /// ```
    /// let r = lateen_harness::Response::new(200).header("Server", "test");
    /// assert!(r.headers().iter().any(|(k, _)| k == "server"));
    /// ```
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Sets the body.
    ///
    /// ```
    /// let r = lateen_harness::Response::new(200).body("{\"keys\":[]}");
    /// assert!(r.body_bytes().is_some());
    /// ```
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Adds a trailer.
    ///
    /// ```
    /// let r = lateen_harness::Response::new(200).trailer("grpc-status", "0");
    /// assert_eq!(r.trailers().len(), 1);
    /// ```
    pub fn trailer(mut self, name: &str, value: &str) -> Self {
        self.trailers
            .push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// The status code.
    ///
    /// ```
    /// assert_eq!(lateen_harness::Response::new(503).status(), 503);
    /// ```
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The headers, `:status` first.
    ///
    /// ```
    /// assert_eq!(lateen_harness::Response::new(200).headers()[0].0, ":status");
    /// ```
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The body, if any.
    ///
    /// ```
    /// assert!(lateen_harness::Response::new(200).body_bytes().is_none());
    /// ```
    pub fn body_bytes(&self) -> Option<&Bytes> {
        self.body.as_ref()
    }

    /// The trailers.
    ///
    /// ```
    /// assert!(lateen_harness::Response::new(200).trailers().is_empty());
    /// ```
    pub fn trailers(&self) -> &[(String, String)] {
        &self.trailers
    }

    pub(crate) fn into_parts(self) -> Parts {
        (self.headers, self.body, self.trailers)
    }
}

/// An http_call a plugin made (`proxy_http_call`), waiting for the test to answer it with
/// [`Plugin::answer_http_call`](crate::Plugin::answer_http_call).
#[derive(Debug, Clone)]
pub struct HttpCall {
    /// The token the plugin got back, which the answer must carry.
    pub token: u32,
    /// The context that made the call: a stream's, or the root's.
    pub context_id: u32,
    /// The upstream the plugin named.
    pub cluster: String,
    /// Request headers, pseudo-headers included.
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Bytes,
    /// The timeout the plugin asked for.
    pub timeout: Duration,
}

impl HttpCall {
    /// The first value of a header of the call (lower-case name).
    ///
    /// ```
    /// let call = lateen_harness::HttpCall {
    ///     token: 1,
    ///     context_id: 2,
    ///     cluster: "auth".into(),
    ///     headers: vec![(":path".into(), "/check".into())],
    ///     body: Default::default(),
    ///     timeout: std::time::Duration::from_secs(1),
    /// };
    /// assert_eq!(call.header(":path"), Some("/check"));
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}
