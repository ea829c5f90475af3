//! Plugin delivery: `http://`, `https://` and `oci://` WasmPlugin URLs, verified by sha256
//! and kept in a local cache, so that an unreachable server keeps the cached module serving
//! (`imagePullPolicy: IfNotPresent` uses the cache without asking at all).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use lateen_config::compile::ModuleSource;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::Duration;

/// Largest module accepted from a server.
const MAX_MODULE: usize = 256 << 20;

/// Fetches modules over HTTP into `cache_dir`.
#[derive(Debug)]
pub struct HttpFetcher {
    pub cache_dir: PathBuf,
}

impl HttpFetcher {
    fn cache_path(&self, url: &str) -> PathBuf {
        self.cache_dir.join(format!(
            "{}.wasm",
            hex::encode(Sha256::digest(url.as_bytes()))
        ))
    }

    fn get(url: &str) -> Result<Vec<u8>, String> {
        let session = Session::new()?;
        if let Some(reference) = url.strip_prefix("oci://") {
            return oci_pull(&session, reference);
        }
        session.get(url, None).map(|(_, body)| body)
    }
}

/// One fetch: a runtime and a client for http:// and https://, shared by the requests of an
/// OCI pull so that the trust roots are read once.
struct Session {
    rt: tokio::runtime::Runtime,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    /// Why there are no trust roots, if there are none (https:// then cannot work).
    no_roots: Option<String>,
}

/// The error and its causes, one after another (TLS failures hide the reason in a cause).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !out.contains(&s) {
            out = format!("{out}: {s}");
        }
        cause = c.source();
    }
    out
}

impl Session {
    fn new() -> Result<Self, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let (connector, no_roots) = lateen_proxy::connector::https_connector();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Session {
            rt,
            client,
            no_roots,
        })
    }

    /// One GET; returns the content type and the body.
    fn get(&self, url: &str, accept: Option<&str>) -> Result<(String, Vec<u8>), String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("invalid url: {e}"))?;
        if let (Some("https"), Some(why)) = (uri.scheme_str(), &self.no_roots) {
            return Err(format!("no trusted CA certificates for {url}: {why}"));
        }
        let mut req = http::Request::get(uri);
        if let Some(a) = accept {
            req = req.header(http::header::ACCEPT, a);
        }
        let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
        self.rt.block_on(async {
            let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| chain(&e))?;
            if !resp.status().is_success() {
                return Err(format!("{url}: server answered {}", resp.status()));
            }
            let ct = resp
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = Limited::new(resp.into_body(), MAX_MODULE)
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok((ct, body.to_bytes().to_vec()))
        })
    }
}

/// How a registry is spoken to: HTTPS, except for loopback registries and those listed in
/// `WASM_INSECURE_REGISTRIES` (comma-separated, `*` for all; Istio's agent variable).
fn registry_scheme(registry: &str, insecure: Option<&str>) -> &'static str {
    let host = registry
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(registry, |(h, _)| h);
    let loopback = host == "localhost"
        || host.ends_with(".localhost")
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let listed = insecure.is_some_and(|v| {
        v.split(',')
            .map(str::trim)
            .any(|r| r == "*" || r == registry || r == host)
    });
    if loopback || listed {
        "http"
    } else {
        "https"
    }
}

/// The wasm layer media type of Istio's Wasm OCI image format.
const WASM_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";

/// Pulls `REGISTRY/REPO[:TAG|@DIGEST]` following Istio's Wasm image formats: a layer with
/// the wasm media type holds the module itself; otherwise the image's single layer is a
/// (gzipped) tar holding `plugin.wasm`.
fn oci_pull(session: &Session, reference: &str) -> Result<Vec<u8>, String> {
    let (registry, path) = reference
        .split_once('/')
        .ok_or_else(|| format!("oci://{reference}: expected REGISTRY/REPOSITORY[:TAG]"))?;
    let (repo, tag) = match path.rsplit_once('@') {
        Some((r, d)) => (r, d.to_string()),
        None => match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, t.to_string()),
            _ => (path, "latest".to_string()),
        },
    };
    let insecure = std::env::var("WASM_INSECURE_REGISTRIES").ok();
    let scheme = registry_scheme(registry, insecure.as_deref());
    let (_, manifest) = session.get(
        &format!("{scheme}://{registry}/v2/{repo}/manifests/{tag}"),
        Some(
            "application/vnd.oci.image.manifest.v1+json, \
             application/vnd.docker.distribution.manifest.v2+json",
        ),
    )?;
    let m: serde_json::Value = serde_json::from_slice(&manifest)
        .map_err(|e| format!("oci://{reference}: bad manifest: {e}"))?;
    let layers = m["layers"].as_array().cloned().unwrap_or_default();
    let blob = |l: &serde_json::Value| -> Result<Vec<u8>, String> {
        let digest = l["digest"].as_str().ok_or("layer without digest")?;
        let (_, b) = session.get(
            &format!("{scheme}://{registry}/v2/{repo}/blobs/{digest}"),
            None,
        )?;
        let got = format!("sha256:{}", hex::encode(Sha256::digest(&b)));
        if got != digest {
            return Err(format!("blob {digest} arrived with digest {got}"));
        }
        Ok(b)
    };
    if let Some(l) = layers.iter().find(|l| l["mediaType"] == WASM_LAYER) {
        return blob(l);
    }
    match layers.as_slice() {
        [only] => plugin_from_tar(&blob(only)?),
        _ => Err(format!(
            "oci://{reference}: no {WASM_LAYER} layer, and {} layers instead of the single one \
             of a Docker-format Wasm image",
            layers.len()
        )),
    }
}

// The `plugin.wasm` of a (possibly gzipped) tar layer.
fn plugin_from_tar(layer: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let reader: Box<dyn Read + '_> = if layer.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(layer))
    } else {
        Box::new(layer)
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        let is_plugin = entry
            .path()
            .ok()
            .and_then(|p| p.file_name().map(|n| n == "plugin.wasm"))
            .unwrap_or(false);
        if is_plugin {
            let mut out = Vec::new();
            entry
                .take(MAX_MODULE as u64)
                .read_to_end(&mut out)
                .map_err(|e| e.to_string())?;
            return Ok(out);
        }
    }
    Err("the image layer holds no plugin.wasm".into())
}

fn matches(bytes: &[u8], sha256: Option<&str>) -> bool {
    sha256.is_none_or(|want| hex::encode(Sha256::digest(bytes)).eq_ignore_ascii_case(want))
}

impl ModuleSource for HttpFetcher {
    fn fetch(&self, url: &str, sha256: Option<&str>, always: bool) -> Result<Vec<u8>, String> {
        let cached = std::fs::read(self.cache_path(url))
            .ok()
            .filter(|b| matches(b, sha256));
        if let (Some(b), false) = (&cached, always) {
            return Ok(b.clone());
        }
        match Self::get(url) {
            Ok(bytes) => {
                if !matches(&bytes, sha256) {
                    return Err(format!(
                        "sha256 mismatch: {url} has {}, expected {}",
                        hex::encode(Sha256::digest(&bytes)),
                        sha256.unwrap_or_default()
                    ));
                }
                let path = self.cache_path(url);
                let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                let stored = std::fs::create_dir_all(&self.cache_dir)
                    .and_then(|()| std::fs::write(&tmp, &bytes))
                    .and_then(|()| std::fs::rename(&tmp, &path));
                if let Err(e) = stored {
                    tracing::warn!("cannot cache {url}: {e}");
                }
                Ok(bytes)
            }
            Err(e) => match cached {
                Some(b) => {
                    tracing::warn!("fetching {url} failed ({e}); using the cached module");
                    Ok(b)
                }
                None if self.cache_path(url).exists() => Err(format!(
                    "cannot fetch {url}: {e}; the cached copy does not have the required sha256"
                )),
                None => Err(format!("cannot fetch {url}: {e}")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::registry_scheme;

    #[test]
    fn registries_use_https_unless_loopback_or_listed_insecure() {
        assert_eq!(registry_scheme("ghcr.io", None), "https");
        assert_eq!(registry_scheme("registry.example.com:5000", None), "https");
        assert_eq!(registry_scheme("127.0.0.1:5000", None), "http");
        assert_eq!(registry_scheme("localhost:5000", None), "http");
        assert_eq!(registry_scheme("[::1]:5000", None), "http");
        let list = Some("registry.example.com:5000, mirror.internal");
        assert_eq!(registry_scheme("registry.example.com:5000", list), "http");
        assert_eq!(registry_scheme("mirror.internal:443", list), "http");
        assert_eq!(registry_scheme("ghcr.io", list), "https");
        assert_eq!(registry_scheme("ghcr.io", Some("*")), "http");
    }
}
