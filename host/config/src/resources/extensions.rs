//! `extensions.istio.io`: WasmPlugin.

use super::*;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WasmPluginSpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub target_ref: Option<Value>,
    #[serde(default)]
    pub target_refs: Option<Value>,
    pub url: String,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub image_pull_policy: Option<String>,
    #[serde(default)]
    pub image_pull_secret: Option<String>,
    #[serde(default)]
    pub plugin_config: Option<Value>,
    #[serde(default)]
    pub plugin_name: Option<String>,
    /// AUTHN, AUTHZ, STATS, UNSPECIFIED_PHASE.
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub priority: Option<i64>,
    /// FAIL_CLOSE (default), FAIL_OPEN.
    #[serde(default)]
    pub fail_strategy: Option<String>,
    #[serde(default)]
    pub vm_config: Option<VmConfig>,
    #[serde(default, rename = "match")]
    pub matches: Option<Value>,
    #[serde(default, rename = "type")]
    pub plugin_type: Option<String>,
    /// Lateen extension (Higress style): per domain, route and service configurations.
    #[serde(default)]
    pub match_rules: Option<Value>,
    /// Lateen extension: where no rule matches, the plugin is off.
    #[serde(default)]
    pub default_config_disable: Option<bool>,
    /// The module itself, for a plugin whose code came inline (an EnvoyFilter wasm patch's
    /// `code.local.inline_bytes`); never read from YAML.
    #[serde(skip)]
    pub inline_code: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmConfig {
    #[serde(default)]
    pub env: Vec<EnvVar>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
    /// INLINE (default) or HOST (the value comes from the proxy's own environment).
    #[serde(default)]
    pub value_from: Option<String>,
}

/// `extensions.istio.io TrafficExtension` (Istio 1.30): WasmPlugin's targeting and
/// ordering with the module under `wasm` (or a Lua script under `lua`, which Lateen
/// refuses: it runs wasm only).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficExtensionSpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub target_refs: Option<Value>,
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub priority: Option<i64>,
    #[serde(default, rename = "match")]
    pub matches: Option<Value>,
    #[serde(default)]
    pub wasm: Option<WasmConfig>,
    #[serde(default)]
    pub lua: Option<Value>,
}

/// TrafficExtension `wasm`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WasmConfig {
    pub url: String,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub image_pull_policy: Option<String>,
    #[serde(default)]
    pub image_pull_secret: Option<String>,
    #[serde(default)]
    pub plugin_name: Option<String>,
    #[serde(default)]
    pub plugin_config: Option<Value>,
    #[serde(default)]
    pub fail_strategy: Option<String>,
    #[serde(default)]
    pub vm_config: Option<VmConfig>,
    #[serde(default, rename = "type")]
    pub plugin_type: Option<String>,
}

impl TrafficExtensionSpec {
    /// The same plugin as a WasmPlugin; `None` for a Lua one.
    pub fn as_wasm_plugin(&self) -> Option<WasmPluginSpec> {
        let w = self.wasm.as_ref()?;
        Some(WasmPluginSpec {
            selector: self.selector.clone(),
            target_refs: self.target_refs.clone(),
            url: w.url.clone(),
            sha256: w.sha256.clone(),
            image_pull_policy: w.image_pull_policy.clone(),
            image_pull_secret: w.image_pull_secret.clone(),
            plugin_config: w.plugin_config.clone(),
            plugin_name: w.plugin_name.clone(),
            phase: self.phase.clone(),
            priority: self.priority,
            fail_strategy: w.fail_strategy.clone(),
            vm_config: w.vm_config.clone(),
            matches: self.matches.clone(),
            plugin_type: w.plugin_type.clone(),
            ..Default::default()
        })
    }
}
