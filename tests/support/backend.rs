//! Upstreams the tests route to: HTTP backends that record what they saw, TCP echo servers.

use super::*;

/// A TCP server on a loopback port that greets each connection with `name` and a newline,
/// then echoes what it reads. Returns the port; it serves until the test's runtime ends.
pub async fn tcp_echo(name: &'static str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                if s.write_all(format!("{name}\n").as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// A request as a backend saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The client end of the connection the request came on (one per upstream connection).
    pub peer: SocketAddr,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An upstream server that names itself in `x-backend` and records what it saw.
/// `/slow/<ms>` answers after that delay; anything else at once.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

/// What a backend answers for special paths (anywhere in the path):
/// `/flaky/N/KEY`: 503 for the first N requests of KEY, then 200;
/// `/status/CODE`: that status; `/slowfirst/KEY`: the first request of KEY waits 3 s;
/// `/slow/MS`: waits MS; `…/chunks`: a three-frame body; `…/stall`: one frame, then none
/// for 5 s; `…/echo-body`: echoes the body.
fn special(path: &str, counts: &Mutex<std::collections::HashMap<String, u32>>) -> (u16, u64) {
    let seg = |marker: &str| path.split_once(marker).map(|(_, rest)| rest.to_string());
    let count = |key: &str| {
        let mut c = counts.lock().unwrap();
        let n = c.entry(key.to_string()).or_default();
        *n += 1;
        *n
    };
    if let Some(rest) = seg("/flaky/") {
        let mut it = rest.splitn(2, '/');
        let n: u32 = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let key = it.next().unwrap_or("");
        return (
            if count(&format!("flaky/{key}")) <= n {
                503
            } else {
                200
            },
            0,
        );
    }
    if let Some(rest) = seg("/status/") {
        return (
            rest.split('/')
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(200),
            0,
        );
    }
    if let Some(key) = seg("/slowfirst/") {
        return (
            200,
            if count(&format!("slowfirst/{key}")) == 1 {
                3000
            } else {
                0
            },
        );
    }
    if let Some(ms) = seg("/slow/") {
        return (200, ms.parse().unwrap_or(0));
    }
    (200, 0)
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Self::start_with(name, None).await
    }

    /// A backend that answers every request with `status`.
    pub async fn failing(name: &str, status: u16) -> Backend {
        Self::start_with(name, Some(status)).await
    }

    async fn start_with(name: &str, fixed_status: Option<u16>) -> Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let counts: Arc<Mutex<std::collections::HashMap<String, u32>>> = Arc::default();
        let (name2, seen2) = (name.to_string(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    return;
                };
                let (name, seen, counts) = (name2.clone(), seen2.clone(), counts.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (name, seen, counts) = (name.clone(), seen.clone(), counts.clone());
                        async move {
                            let path = req
                                .uri()
                                .path_and_query()
                                .map_or("/".into(), |p| p.to_string());
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| {
                                    (
                                        k.to_string(),
                                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                    )
                                })
                                .collect();
                            let method = req.method().to_string();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            seen.lock().unwrap().push(Seen {
                                method: method.clone(),
                                path: path.clone(),
                                headers,
                                peer,
                            });
                            let (status, delay_ms) = special(&path, &counts);
                            let status = fixed_status.unwrap_or(status);
                            if delay_ms > 0 {
                                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                            }
                            let text = if path.ends_with("/echo-body") {
                                String::from_utf8_lossy(&body).into_owned()
                            } else {
                                format!("{name} {method} {path}")
                            };
                            let body = if path.contains("/stall") {
                                // One chunk at once, then nothing for 5 s: a stalled body.
                                let chunks = futures_util::stream::unfold(0u8, |i| async move {
                                    match i {
                                        0 => {}
                                        1 => tokio::time::sleep(Duration::from_secs(5)).await,
                                        _ => return None,
                                    }
                                    let frame =
                                        hyper::body::Frame::data(Bytes::from(format!("stall{i};")));
                                    Some((Ok::<_, std::convert::Infallible>(frame), i + 1))
                                });
                                http_body_util::StreamBody::new(chunks).boxed_unsync()
                            } else if path.contains("/chunks") {
                                // Three chunks, 20 ms apart: a body that arrives in frames.
                                let chunks = futures_util::stream::unfold(0u8, |i| async move {
                                    if i == 3 {
                                        return None;
                                    }
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                    let frame =
                                        hyper::body::Frame::data(Bytes::from(format!("chunk{i};")));
                                    Some((Ok::<_, std::convert::Infallible>(frame), i + 1))
                                });
                                http_body_util::StreamBody::new(chunks).boxed_unsync()
                            } else {
                                Full::new(Bytes::from(text)).boxed_unsync()
                            };
                            let mut r = hyper::Response::new(body);
                            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            r.headers_mut().insert("x-backend", name.parse().unwrap());
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Backend {
            name: name.to_string(),
            addr,
            seen,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests seen so far.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("backend saw a request")
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}
