//! Clients: hyper over HTTP/1.1 and h2c, kept-alive connections, rustls over TLS, the real curl.

use super::*;

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Reads a response's body to its end.
    pub async fn read(resp: hyper::Response<hyper::body::Incoming>) -> Result<Resp> {
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// GET `url`.
pub async fn get(url: &str) -> Result<Resp> {
    send("GET", url, &[], "").await
}

/// Sends a request over HTTP/1.1.
pub async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Result<Resp> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    let mut b = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::from(body.to_string())))?;
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .context("request timed out")??;
    Resp::read(resp).await
}

/// Sends a GET over HTTP/2 with prior knowledge (h2c).
pub async fn get_h2(url: &str) -> Result<Resp> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = hyper::Request::builder()
        .uri(url)
        .body(Full::new(Bytes::new()))?;
    let resp = client.request(req).await?;
    Resp::read(resp).await
}

/// A client that keeps its connections (HTTP/1.1 keep-alive, or one HTTP/2 connection).
#[derive(Clone)]
pub struct KeepAlive {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl KeepAlive {
    pub fn http1() -> Self {
        KeepAlive {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub fn http2() -> Self {
        KeepAlive {
            client: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    pub async fn get(&self, url: &str) -> Result<Resp> {
        let req = hyper::Request::builder()
            .uri(url)
            .body(Full::new(Bytes::new()))?;
        let resp = tokio::time::timeout(Duration::from_secs(20), self.client.request(req))
            .await
            .context("request timed out")??;
        Resp::read(resp).await
    }
}

/// What `curl` printed and how it ended.
#[derive(Debug)]
pub struct Curl {
    /// curl's exit code: 0 on success; 35 for a failed TLS handshake, 60 for a certificate
    /// it does not trust, 56 for a connection the peer closed.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the real `curl` (with a 10 s limit) without blocking the test's runtime.
pub async fn curl(args: &[&str]) -> Curl {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(&args)
            .output()
            .expect("curl is installed (tests/run.sh installs it)");
        Curl {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .expect("curl task")
}

/// One kept-alive HTTP/1.1 connection over TLS, made with rustls: for what curl cannot
/// show, such as a connection that outlives a certificate rotation.
pub struct TlsConn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    /// The DNS SANs of the certificate the server presented.
    pub server_dns_sans: Vec<String>,
    /// The URI SANs (SPIFFE ids) of the certificate the server presented.
    pub server_uri_sans: Vec<String>,
}

impl TlsConn {
    /// Connects to 127.0.0.1:`port` with SNI `sni`, trusting `root`; presents the
    /// `cert-chain.pem`/`key.pem` of `identity` when given. Server names are not checked
    /// (mesh certificates carry SPIFFE ids); the chain is.
    pub async fn connect(
        port: u16,
        sni: &str,
        root: &Path,
        identity: Option<&Path>,
    ) -> Result<TlsConn> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(root)? {
            roots.add(c?)?;
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots)).build()?;
        let builder = rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly(verifier)));
        let cfg = match identity {
            Some(dir) => {
                let chain = CertificateDer::pem_file_iter(dir.join("cert-chain.pem"))?
                    .collect::<Result<Vec<_>, _>>()?;
                let key = PrivateKeyDer::from_pem_file(dir.join("key.pem"))?;
                builder.with_client_auth_cert(chain, key)?
            }
            None => builder.with_no_client_auth(),
        };
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from(sni.to_string())?, tcp)
            .await?;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .context("no server certificate")?
            .clone();
        let (dns, uri) = cert_sans(&leaf);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(TlsConn {
            sender,
            server_dns_sans: dns,
            server_uri_sans: uri,
        })
    }

    /// A GET for `path` with `host`, on this connection.
    pub async fn get(&mut self, host: &str, path: &str) -> Result<Resp> {
        self.sender.ready().await?;
        let req = hyper::Request::get(path)
            .header("host", host)
            .body(Full::new(Bytes::new()))?;
        let resp = tokio::time::timeout(Duration::from_secs(10), self.sender.send_request(req))
            .await
            .context("request timed out")??;
        Resp::read(resp).await
    }
}

/// The DNS and URI SANs of a DER certificate, read with rcgen's parser.
pub fn cert_sans(der: &rustls_pki_types::CertificateDer<'_>) -> (Vec<String>, Vec<String>) {
    let params = rcgen::CertificateParams::from_ca_cert_der(der).expect("parse certificate");
    let mut dns = Vec::new();
    let mut uri = Vec::new();
    for san in params.subject_alt_names {
        match san {
            rcgen::SanType::DnsName(d) => dns.push(d.as_str().to_string()),
            rcgen::SanType::URI(u) => uri.push(u.as_str().to_string()),
            _ => {}
        }
    }
    (dns, uri)
}

/// Checks the chain and not the name: mesh peers are named by SPIFFE id.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
