//! Refusing a resource alone: what a reload applies when only some resources fail.

use super::*;

/// `Kind namespace/name`, as errors name a resource.
pub(super) fn resource_key(info: &DocInfo) -> String {
    format!("{} {}/{}", info.kind, info.namespace, info.name)
}

/// The resources to apply when only some are refused, as istiod refuses a resource that
/// fails validation alone: each resource an error names keeps its version in `last_good`
/// (or is left out when it had none). `None` when the change fails as a whole: an error
/// names no resource (a file that does not parse, a setting of the whole build).
pub fn isolate(
    new: &Resources,
    last_good: &Resources,
    errors: &[ConfigError],
) -> Option<Resources> {
    let refused: BTreeSet<&str> = errors
        .iter()
        .map(|e| e.resource.as_deref())
        .collect::<Option<_>>()?;
    let mut out = new.clone();
    macro_rules! each {
        ($($field:ident),*) => {$(
            out.$field.retain(|d| !refused.contains(resource_key(&d.info).as_str()));
            for d in &last_good.$field {
                if refused.contains(resource_key(&d.info).as_str()) {
                    out.$field.push(d.clone());
                }
            }
        )*};
    }
    each!(
        gateways,
        virtual_services,
        destination_rules,
        service_entries,
        wasm_plugins,
        envoy_filters,
        authorization_policies,
        request_authentications,
        peer_authentications,
        sidecars,
        telemetries
    );
    if out
        .bootstrap
        .as_ref()
        .is_some_and(|b| refused.contains(resource_key(&b.info).as_str()))
        || last_good
            .bootstrap
            .as_ref()
            .is_some_and(|b| refused.contains(resource_key(&b.info).as_str()))
    {
        out.bootstrap = last_good.bootstrap.clone();
    }
    if out
        .mesh
        .as_ref()
        .is_some_and(|m| refused.contains(resource_key(&m.info).as_str()))
    {
        out.mesh = last_good.mesh.clone();
    }
    Some(out)
}
