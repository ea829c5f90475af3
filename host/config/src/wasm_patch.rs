//! EnvoyFilter wasm patches: the classic way to add a wasm filter in Istio, an
//! `applyTo: HTTP_FILTER` patch whose value is an `envoy.extensions.filters.http.wasm.v3.Wasm`
//! filter (any filter name with that `@type`, directly or in a `udpa.type.v1` /
//! `xds.type.v3` TypedStruct). Each becomes a plugin like a WasmPlugin's, placed where the
//! patch puts it:
//!
//! - `INSERT_BEFORE` / `INSERT_AFTER` a `subFilter` (`envoy.filters.http.router`, or a
//!   built-in Lateen serves: `envoy.filters.http.local_ratelimit`, `envoy.filters.http.fault`,
//!   `istio.stats`; or their short names `router`, `ratelimit`, `fault`, `metrics`);
//! - `INSERT_FIRST`: the start of the chain; `ADD`: the end of the chain before the router
//!   (in Envoy, after the router, where a filter would never see a request).
//!
//! The filter config read is Envoy's `PluginConfig`: `name`, `root_id`, `vm_config`
//! (`vm_id`, `runtime` accepted and not acted on, `code.local.filename` / `inline_bytes` /
//! `inline_string`, `code.remote.http_uri.uri` with `sha256`, `configuration`,
//! `environment_variables`), `configuration` and `fail_open` / `failure_policy`. A
//! `google.protobuf.StringValue` configuration reaches the plugin as its string, a `Struct`
//! or TypedStruct as JSON, a `BytesValue` as its bytes. A field Lateen does not read is
//! refused with its path, as the xDS decoder refuses it.

use super::resources::{EnvoyConfigObjectPatch, EnvoyFilterSpec};
use super::source::{ConfigError, Doc};
use base64::Engine;
use lateen_model::xds::XdsWasm;
use lateen_model::{Builtin, Placement, TrafficSelector};
use serde_json::{Map, Value};

pub const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const TYPED_STRUCTS: [&str; 2] = [
    "type.googleapis.com/udpa.type.v1.TypedStruct",
    "type.googleapis.com/xds.type.v3.TypedStruct",
];

/// Where a patch puts its filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Next(Placement),
    First,
    Last,
}

/// A wasm filter an EnvoyFilter patch adds.
#[derive(Debug, Clone)]
pub struct WasmPatch {
    /// `spec.configPatches[i]`, for errors.
    pub field: String,
    /// The filter as the xDS decoder gives an Envoy wasm filter (its `name` is
    /// `config.name`, else the patch value's `name`; `url` is empty with inline code).
    pub wasm: XdsWasm,
    pub inline: Option<Vec<u8>>,
    pub place: Place,
    pub traffic: Vec<TrafficSelector>,
}

/// Whether an HTTP_FILTER patch value is a wasm filter (by its config's type, whatever
/// the filter is named).
pub fn is_wasm_filter(value: &Value) -> bool {
    let Some(tc) = value.get("typed_config") else {
        return false;
    };
    match tc.get("@type").and_then(Value::as_str) {
        Some(WASM_TYPE) => true,
        Some(t) if TYPED_STRUCTS.contains(&t) => {
            tc.get("type_url").and_then(Value::as_str) == Some(WASM_TYPE)
        }
        _ => false,
    }
}

/// The wasm filters one EnvoyFilter adds for a proxy in `gateway_mode` (or sidecar mode),
/// each with its error apart: one bad patch does not drop the others.
pub fn wasm_patches(
    ef: &Doc<EnvoyFilterSpec>,
    gateway_mode: bool,
) -> Vec<Result<WasmPatch, ConfigError>> {
    let mut out = Vec::new();
    for (i, p) in ef.spec.config_patches.iter().enumerate() {
        if p.apply_to != "HTTP_FILTER" || !p.patch.value.as_ref().is_some_and(is_wasm_filter) {
            continue;
        }
        let field = format!("spec.configPatches[{i}]");
        match patch(p, &field, gateway_mode) {
            Ok(Some(w)) => out.push(Ok(w)),
            Ok(None) => {}
            Err((f, m)) => out.push(Err(ef.info.error(&format!("{field}{f}"), m))),
        }
    }
    out
}

type Fail = (String, String);

fn fail(f: &str, m: impl Into<String>) -> Fail {
    (f.to_string(), m.into())
}

/// Refuses the keys of `obj` outside `known`, naming the first.
fn only(obj: &Map<String, Value>, at: &str, known: &[&str]) -> Result<(), Fail> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(fail(
            &format!("{at}.{k}"),
            format!("not supported; Lateen reads {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

fn object<'a>(v: &'a Value, at: &str) -> Result<&'a Map<String, Value>, Fail> {
    v.as_object().ok_or_else(|| fail(at, "expected an object"))
}

fn string(v: Option<&Value>, at: &str) -> Result<String, Fail> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(fail(at, "expected a string")),
    }
}

fn patch(
    p: &EnvoyConfigObjectPatch,
    field: &str,
    gateway_mode: bool,
) -> Result<Option<WasmPatch>, Fail> {
    let m = p.matches.as_ref();
    let context = m
        .and_then(|m| m.get("context"))
        .and_then(Value::as_str)
        .unwrap_or("ANY");
    let (client, server) = match context {
        "ANY" => (true, true),
        "GATEWAY" if gateway_mode => (true, true),
        "SIDECAR_INBOUND" if !gateway_mode => (false, true),
        "SIDECAR_OUTBOUND" if !gateway_mode => (true, false),
        "GATEWAY" | "SIDECAR_INBOUND" | "SIDECAR_OUTBOUND" => return Ok(None),
        other => {
            return Err(fail(
                ".match.context",
                format!("unknown context `{other}`; expected ANY, GATEWAY, SIDECAR_INBOUND or SIDECAR_OUTBOUND"),
            ))
        }
    };
    let listener = m.and_then(|m| m.get("listener"));
    let ports = match listener.and_then(|l| l.get("portNumber")) {
        None => Vec::new(),
        Some(v) => vec![v
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| fail(".match.listener.portNumber", "expected a port number"))?],
    };
    let sub = listener
        .and_then(|l| l.pointer("/filterChain/filter/subFilter/name"))
        .and_then(Value::as_str);
    let op = p.patch.operation.as_deref().unwrap_or("");
    let place = match op {
        "INSERT_BEFORE" | "INSERT_AFTER" => {
            // Without a subFilter, Istio inserts relative to the router's position.
            let anchor = match sub {
                None => Builtin::Router,
                Some(s) => Builtin::named(s).ok_or_else(|| {
                    fail(
                        ".match.listener.filterChain.filter.subFilter.name",
                        format!(
                            "`{s}` is not a filter Lateen can place next to; expected \
                             envoy.filters.http.router, envoy.filters.http.local_ratelimit, \
                             envoy.filters.http.fault or istio.stats"
                        ),
                    )
                })?,
            };
            Place::Next(Placement {
                before: op == "INSERT_BEFORE",
                anchor,
            })
        }
        "INSERT_FIRST" => Place::First,
        "ADD" => Place::Last,
        other => {
            return Err(fail(
                ".patch.operation",
                format!(
                    "`{other}` is not served for wasm filters yet; expected INSERT_BEFORE, \
                     INSERT_AFTER, INSERT_FIRST or ADD"
                ),
            ))
        }
    };
    let value = p
        .patch
        .value
        .as_ref()
        .ok_or_else(|| fail(".patch.value", "missing"))?;
    let vobj = object(value, ".patch.value")?;
    only(vobj, ".patch.value", &["name", "typed_config"])?;
    let filter_name = string(value.get("name"), ".patch.value.name")?;
    let tc = &value["typed_config"];
    let (wasm, at) = if tc.get("@type").and_then(Value::as_str) == Some(WASM_TYPE) {
        only(
            object(tc, ".patch.value.typed_config")?,
            ".patch.value.typed_config",
            &["@type", "config"],
        )?;
        (tc, ".patch.value.typed_config".to_string())
    } else {
        only(
            object(tc, ".patch.value.typed_config")?,
            ".patch.value.typed_config",
            &["@type", "type_url", "value"],
        )?;
        (&tc["value"], ".patch.value.typed_config.value".to_string())
    };
    let cfg_at = format!("{at}.config");
    let cfg = wasm.get("config").ok_or_else(|| fail(&cfg_at, "missing"))?;
    let c = object(cfg, &cfg_at)?;
    only(
        c,
        &cfg_at,
        &[
            "name",
            "root_id",
            "vm_config",
            "configuration",
            "fail_open",
            "failure_policy",
        ],
    )?;
    let vm_at = format!("{cfg_at}.vm_config");
    let vm = c.get("vm_config").ok_or_else(|| fail(&vm_at, "missing"))?;
    let v = object(vm, &vm_at)?;
    only(
        v,
        &vm_at,
        &[
            "vm_id",
            "runtime",
            "code",
            "configuration",
            "environment_variables",
            "allow_precompiled",
            "nack_on_code_cache_miss",
        ],
    )?;
    let runtime = string(v.get("runtime"), &format!("{vm_at}.runtime"))?;
    if !matches!(
        runtime.as_str(),
        "" | "envoy.wasm.runtime.v8" | "envoy.wasm.runtime.wasmtime" | "envoy.wasm.runtime.wamr"
    ) {
        return Err(fail(
            &format!("{vm_at}.runtime"),
            format!("`{runtime}` is not a wasm runtime Lateen stands in for"),
        ));
    }
    let (url, sha256, inline) = code(v.get("code"), &format!("{vm_at}.code"))?;
    let env = environment(
        v.get("environment_variables"),
        &format!("{vm_at}.environment_variables"),
    )?;
    let failure_policy = string(c.get("failure_policy"), &format!("{cfg_at}.failure_policy"))?;
    let fail_open = match c.get("fail_open") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(fail(
                &format!("{cfg_at}.fail_open"),
                "expected true or false",
            ))
        }
    } || failure_policy == "FAIL_OPEN";
    let name = match string(c.get("name"), &format!("{cfg_at}.name"))? {
        n if n.is_empty() => filter_name,
        n => n,
    };
    Ok(Some(WasmPatch {
        field: field.to_string(),
        wasm: XdsWasm {
            pull_policy: None,
            resource_version: None,
            name,
            root_id: string(c.get("root_id"), &format!("{cfg_at}.root_id"))?,
            vm_id: string(v.get("vm_id"), &format!("{vm_at}.vm_id"))?,
            url,
            sha256,
            configuration: any_bytes(c.get("configuration"), &format!("{cfg_at}.configuration"))?,
            vm_configuration: any_bytes(v.get("configuration"), &format!("{vm_at}.configuration"))?,
            env,
            fail_open,
        },
        inline,
        place,
        traffic: vec![TrafficSelector {
            client,
            server,
            ports,
        }],
    }))
}

/// `vm_config.code`: the module's URL, its sha256, or its inline bytes.
type Code = (String, Option<String>, Option<Vec<u8>>);

fn code(v: Option<&Value>, at: &str) -> Result<Code, Fail> {
    let v = v.ok_or_else(|| fail(at, "missing"))?;
    let c = object(v, at)?;
    only(c, at, &["local", "remote"])?;
    if let Some(local) = c.get("local") {
        let lat = format!("{at}.local");
        let l = object(local, &lat)?;
        only(l, &lat, &["filename", "inline_bytes", "inline_string"])?;
        if let Some(f) = l.get("filename") {
            let f = string(Some(f), &format!("{lat}.filename"))?;
            return Ok((format!("file://{f}"), None, None));
        }
        if let Some(b) = l.get("inline_bytes") {
            let b64 = string(Some(b), &format!("{lat}.inline_bytes"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| fail(&format!("{lat}.inline_bytes"), format!("not base64: {e}")))?;
            return Ok((String::new(), None, Some(bytes)));
        }
        if let Some(s) = l.get("inline_string") {
            let s = string(Some(s), &format!("{lat}.inline_string"))?;
            return Ok((String::new(), None, Some(s.into_bytes())));
        }
        return Err(fail(
            &lat,
            "expected filename, inline_bytes or inline_string",
        ));
    }
    let rat = format!("{at}.remote");
    let remote = c
        .get("remote")
        .ok_or_else(|| fail(at, "expected local or remote"))?;
    let r = object(remote, &rat)?;
    only(r, &rat, &["http_uri", "sha256", "retry_policy"])?;
    let uri = r
        .get("http_uri")
        .and_then(|h| h.get("uri"))
        .and_then(Value::as_str)
        .ok_or_else(|| fail(&format!("{rat}.http_uri.uri"), "missing"))?;
    let oci = uri.starts_with("oci://");
    if !(oci || uri.starts_with("http://") || uri.starts_with("https://")) {
        return Err(fail(
            &format!("{rat}.http_uri.uri"),
            format!("`{uri}` is not an http(s) or oci URL"),
        ));
    }
    let sha = string(r.get("sha256"), &format!("{rat}.sha256"))?;
    // As in Envoy, an http(s) module is pinned by its sha256.
    if sha.is_empty() && !oci {
        return Err(fail(
            &format!("{rat}.sha256"),
            "required for an http(s) module",
        ));
    }
    Ok((uri.to_string(), (!sha.is_empty()).then_some(sha), None))
}

/// `environment_variables`: `key_values`, and `host_env_keys` read from the proxy's own
/// environment.
fn environment(v: Option<&Value>, at: &str) -> Result<Vec<(String, String)>, Fail> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let e = object(v, at)?;
    only(e, at, &["host_env_keys", "key_values"])?;
    let mut env = Vec::new();
    if let Some(kv) = e.get("key_values") {
        for (k, v) in object(kv, &format!("{at}.key_values"))? {
            env.push((k.clone(), string(Some(v), &format!("{at}.key_values.{k}"))?));
        }
    }
    if let Some(keys) = e.get("host_env_keys") {
        let keys = keys
            .as_array()
            .ok_or_else(|| fail(&format!("{at}.host_env_keys"), "expected a list"))?;
        for k in keys {
            let k = string(Some(k), &format!("{at}.host_env_keys"))?;
            let v = std::env::var(&k).unwrap_or_default();
            env.push((k, v));
        }
    }
    env.sort();
    Ok(env)
}

/// A configuration `Any` as the plugin reads it: a StringValue's string, a BytesValue's
/// bytes, a Struct's or TypedStruct's value as JSON.
fn any_bytes(v: Option<&Value>, at: &str) -> Result<Vec<u8>, Fail> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let o = object(v, at)?;
    let ty = o.get("@type").and_then(Value::as_str).unwrap_or("");
    match ty {
        "type.googleapis.com/google.protobuf.StringValue" => {
            only(o, at, &["@type", "value"])?;
            Ok(string(o.get("value"), &format!("{at}.value"))?.into_bytes())
        }
        "type.googleapis.com/google.protobuf.BytesValue" => {
            only(o, at, &["@type", "value"])?;
            let b64 = string(o.get("value"), &format!("{at}.value"))?;
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| fail(&format!("{at}.value"), format!("not base64: {e}")))
        }
        "type.googleapis.com/google.protobuf.Struct" => {
            only(o, at, &["@type", "value"])?;
            Ok(serde_json::to_vec(o.get("value").unwrap_or(&Value::Null)).unwrap_or_default())
        }
        t if TYPED_STRUCTS.contains(&t) => {
            only(o, at, &["@type", "type_url", "value"])?;
            Ok(serde_json::to_vec(o.get("value").unwrap_or(&Value::Null)).unwrap_or_default())
        }
        "" => Err(fail(
            &format!("{at}.@type"),
            "missing; expected google.protobuf.StringValue, BytesValue, Struct or a TypedStruct",
        )),
        other => Err(fail(
            &format!("{at}.@type"),
            format!("`{other}`: expected google.protobuf.StringValue, BytesValue, Struct or a TypedStruct"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Option<WasmPatch>, Fail> {
        let p: EnvoyConfigObjectPatch =
            serde_json::from_value(serde_saphyr::from_str::<Value>(yaml).expect("yaml"))
                .expect("patch");
        patch(&p, "spec.configPatches[0]", true)
    }

    const BASE: &str = r#"
applyTo: HTTP_FILTER
match:
  context: GATEWAY
  listener:
    portNumber: 8080
    filterChain: {filter: {name: envoy.filters.network.http_connection_manager, subFilter: {name: envoy.filters.http.router}}}
patch:
  operation: INSERT_BEFORE
  value:
    name: my.wasm
    typed_config:
      "@type": type.googleapis.com/udpa.type.v1.TypedStruct
      type_url: type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
      value:
        config:
          root_id: my_root
          configuration:
            "@type": type.googleapis.com/google.protobuf.StringValue
            value: '{"a": 1}'
          vm_config:
            vm_id: vm1
            runtime: envoy.wasm.runtime.v8
            code: {local: {filename: /etc/wasm/plugin.wasm}}
            environment_variables: {key_values: {MODE: test}}
"#;

    #[test]
    fn a_typed_struct_patch_with_a_string_value_configuration() {
        let w = parse(BASE).unwrap().unwrap();
        assert_eq!(w.wasm.name, "my.wasm");
        assert_eq!(w.wasm.root_id, "my_root");
        assert_eq!(w.wasm.vm_id, "vm1");
        assert_eq!(w.wasm.url, "file:///etc/wasm/plugin.wasm");
        // The plugin gets the string as it is.
        assert_eq!(w.wasm.configuration, br#"{"a": 1}"#);
        assert_eq!(w.wasm.env, vec![("MODE".into(), "test".into())]);
        assert_eq!(
            w.place,
            Place::Next(Placement {
                before: true,
                anchor: Builtin::Router
            })
        );
        assert_eq!(w.traffic[0].ports, vec![8080]);
        assert!(!w.wasm.fail_open);
    }

    #[test]
    fn a_direct_type_with_a_struct_configuration_and_inline_code() {
        let y = r#"
applyTo: HTTP_FILTER
patch:
  operation: INSERT_FIRST
  value:
    name: anything
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
      config:
        name: inline
        fail_open: true
        configuration: {"@type": type.googleapis.com/google.protobuf.Struct, value: {k: v}}
        vm_config: {code: {local: {inline_bytes: AGFzbQEAAAA=}}}
"#;
        let w = parse(y).unwrap().unwrap();
        assert_eq!(w.wasm.name, "inline");
        assert_eq!(w.place, Place::First);
        assert!(w.wasm.fail_open);
        assert_eq!(w.wasm.configuration, br#"{"k":"v"}"#);
        assert_eq!(w.inline.as_deref(), Some(&b"\0asm\x01\0\0\0"[..]));
    }

    #[test]
    fn refusals_name_the_field() {
        let bad = BASE.replace("vm_id: vm1", "vm_id: vm1\n            unknown_knob: 1");
        let (f, m) = parse(&bad).unwrap_err();
        assert_eq!(
            f, ".patch.value.typed_config.value.config.vm_config.unknown_knob",
            "{m}"
        );
        let bad = BASE.replace("envoy.filters.http.router", "envoy.filters.http.cors");
        let (f, _) = parse(&bad).unwrap_err();
        assert_eq!(f, ".match.listener.filterChain.filter.subFilter.name");
        let bad = BASE.replace("INSERT_BEFORE", "REPLACE");
        assert_eq!(parse(&bad).unwrap_err().0, ".patch.operation");
        let bad = BASE.replace("google.protobuf.StringValue", "google.protobuf.Duration");
        assert_eq!(
            parse(&bad).unwrap_err().0,
            ".patch.value.typed_config.value.config.configuration.@type"
        );
        // A sidecar-only patch does not apply to a gateway.
        let sidecar = BASE.replace("context: GATEWAY", "context: SIDECAR_INBOUND");
        assert!(parse(&sidecar).unwrap().is_none());
    }
}
