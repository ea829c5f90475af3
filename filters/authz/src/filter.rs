//! proxy-wasm glue for the authorization filter: reads the request's attributes, asks the
//! policies, and answers 403 when they deny.

use crate::config::{AuthzConfig, Request, DENIED_BODY};
use lateen_sdk::matcher::strip_port;
use lateen_sdk::proxy_wasm::traits::{Context, HttpContext, RootContext};
use lateen_sdk::proxy_wasm::types::{Action, ContextType, LogLevel};
use lateen_sdk::proxy_wasm::{self, hostcalls};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(AuthzRoot { config: Rc::new(AuthzConfig::default()) })
    });
}}

struct AuthzRoot {
    config: Rc<AuthzConfig>,
}

impl Context for AuthzRoot {}

impl RootContext for AuthzRoot {
    fn on_configure(&mut self, _: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match lateen_sdk::config::parse_or_default::<AuthzConfig>(&bytes) {
            Ok(c) => {
                self.config = Rc::new(c);
                true
            }
            Err(e) => {
                proxy_wasm::hostcalls::log(LogLevel::Error, &format!("authz config: {e}")).ok();
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(AuthzStream {
            config: self.config.clone(),
        }))
    }
}

struct AuthzStream {
    config: Rc<AuthzConfig>,
}

impl Context for AuthzStream {}

fn text(path: &[&str]) -> Option<String> {
    hostcalls::get_property(path.to_vec())
        .ok()
        .flatten()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// `ip:port` (Envoy's `source.address`) → the IP.
fn ip_of(addr: Option<String>) -> Option<IpAddr> {
    let a = addr?;
    a.parse::<SocketAddr>()
        .map(|s| s.ip())
        .or_else(|_| a.parse::<IpAddr>())
        .ok()
}

impl HttpContext for AuthzStream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        if self.config.is_empty() {
            return Action::Continue;
        }
        let headers: Vec<(String, String)> = self
            .get_http_request_headers()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let path = get(":path");
        let source_ip = ip_of(text(&["source", "address"]));
        let request = Request {
            principal: text(&["source", "principal"]),
            source_ip,
            remote_ip: source_ip,
            destination_ip: ip_of(text(&["destination", "address"])),
            destination_port: hostcalls::get_property(vec!["destination", "port"])
                .ok()
                .flatten()
                .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                .and_then(|b| u16::try_from(i64::from_le_bytes(b)).ok()),
            host: strip_port(&get(":authority")).to_string(),
            method: get(":method"),
            path: path.split('?').next().unwrap_or_default().to_string(),
            sni: text(&["connection", "requested_server_name"]),
            headers,
            request_principal: text(lateen_sdk::claims::PRINCIPAL),
            // Set by the JWT filter, which runs before this one, from a verified token.
            claims: hostcalls::get_property(lateen_sdk::claims::CLAIMS.to_vec())
                .ok()
                .flatten()
                .and_then(|b| serde_json::from_slice(&b).ok()),
        };
        let decision = self.config.evaluate(&request);
        if !decision.audited.is_empty() {
            let names = decision.audited.join(",");
            let _ =
                hostcalls::set_property(vec!["lateen", "authz", "audit"], Some(names.as_bytes()));
            let _ = hostcalls::log(
                LogLevel::Info,
                &format!(
                    "rbac audit: {} {} matched {names}",
                    request.method, request.path
                ),
            );
        }
        let Some(policy) = decision.denied_by else {
            return Action::Continue;
        };
        let _ = hostcalls::set_property(
            lateen_sdk::route::RESPONSE_FLAGS.to_vec(),
            Some(b"RBAC".as_slice()),
        );
        let _ = hostcalls::set_property(
            vec!["lateen", "authz", "denied_by"],
            Some(policy.as_bytes()),
        );
        let _ = hostcalls::send_http_response(403, vec![], Some(DENIED_BODY));
        Action::Pause
    }
}
