//! The sample backend used by the demo and the benchmark: answers every request with its
//! name in the `x-backend` header and in the body.

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;

/// Serves until the process ends.
pub async fn serve(name: String, addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let name: std::sync::Arc<str> = name.into();
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let name = name.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let name = name.clone();
                async move {
                    let body = format!(
                        "hello from {name} ({} {})\n",
                        req.method(),
                        req.uri().path()
                    );
                    let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
                    r.headers_mut().insert(
                        "x-backend",
                        hyper::header::HeaderValue::from_str(&name)
                            .unwrap_or(hyper::header::HeaderValue::from_static("backend")),
                    );
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}
