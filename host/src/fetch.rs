//! Plugin delivery over HTTP: `http://` WasmPlugin URLs, verified by sha256 and kept in a
//! local cache, so that an unreachable server keeps the cached module serving
//! (`imagePullPolicy: IfNotPresent` uses the cache without asking at all).

use crate::config::compile::ModuleSource;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
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
        if url.starts_with("https://") {
            return Err(
                "https:// plugin URLs need TLS, which Lateen does not speak yet; \
                        use http:// with sha256, or file://"
                    .into(),
            );
        }
        let uri: http::Uri = url.parse().map_err(|e| format!("invalid url: {e}"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let client: Client<_, Empty<Bytes>> =
                Client::builder(TokioExecutor::new()).build_http();
            let resp = tokio::time::timeout(Duration::from_secs(30), client.get(uri))
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("server answered {}", resp.status()));
            }
            let body = Limited::new(resp.into_body(), MAX_MODULE)
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok(body.to_bytes().to_vec())
        })
    }
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
