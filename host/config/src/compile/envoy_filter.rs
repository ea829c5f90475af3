//! EnvoyFilter wasm patches ([`crate::wasm_patch`]) as plugins of this workload.

use super::*;

/// The wasm filters EnvoyFilter patches add for this workload (`workloadSelector`, the
/// root namespace or the workload's), loaded as WasmPlugins are; a bad patch is refused
/// alone, with its field.
pub(super) fn envoy_filter_plugins(
    res: &Resources,
    workload: &WorkloadInfo,
    rt: &Runtime,
    opts: &BuildOptions,
    errors: &mut Vec<ConfigError>,
) -> Vec<Loaded> {
    let gateway_mode =
        res.bootstrap.as_ref().and_then(|b| b.spec.mode.as_deref()) != Some("sidecar");
    let mut out = Vec::new();
    for ef in &res.envoy_filters {
        let selected = ef.spec.workload_selector.as_ref().is_none_or(|s| {
            s.labels
                .iter()
                .all(|(k, v)| workload.labels.get(k) == Some(v))
        });
        let ns_ok =
            ef.info.namespace == ROOT_NAMESPACE || workload.namespaces.contains(&ef.info.namespace);
        if !(selected && ns_ok) {
            continue;
        }
        let patches = crate::wasm_patch::wasm_patches(ef, gateway_mode);
        if ef.spec.target_refs.is_some() && !patches.is_empty() {
            errors.push(ef.info.error(
                "spec.targetRefs",
                "not served yet for wasm patches; select the workload with workloadSelector",
            ));
            continue;
        }
        for patch in patches {
            match patch.and_then(|w| envoy_filter_plugin(ef, w, rt, opts)) {
                Ok(l) => out.push(l),
                Err(e) => errors.push(e),
            }
        }
    }
    out
}

/// One EnvoyFilter wasm patch as a plugin: its module, Envoy's identity (root id, VM id,
/// VM configuration, environment), its configuration as the patch gives it, its place.
fn envoy_filter_plugin(
    ef: &Doc<EnvoyFilterSpec>,
    w: crate::wasm_patch::WasmPatch,
    rt: &Runtime,
    opts: &BuildOptions,
) -> Result<Loaded, ConfigError> {
    use crate::wasm_patch::Place;
    let name = format!("{}/{}", ef.info.key(), w.wasm.name);
    // Module errors (unreadable, sha256, compile) name the patch's typed_config.
    let prefix = format!("{}.patch.value.typed_config", w.field);
    let mut p = load_envoy_wasm(
        &ef.info,
        &w.wasm,
        w.inline.as_deref(),
        &prefix,
        name,
        rt,
        opts,
    )?;
    // Patches applied first sit first (EnvoyFilter `priority`, lower first).
    let order = -ef.spec.priority.unwrap_or(0);
    (p.phase, p.priority, p.placement) = match w.place {
        Place::Next(at) => (Phase::Unspecified, order, Some(at)),
        Place::First => (Phase::Authn, i64::MAX / 2 + order, None),
        Place::Last => (Phase::Unspecified, i64::MIN / 2 + order, None),
    };
    p.traffic = w.traffic.clone();
    Ok(Loaded {
        spec: Arc::new(p),
        config: Bytes::from(w.wasm.configuration),
        info: ef.info.clone(),
        gateways: Vec::new(),
        rules: None,
    })
}
