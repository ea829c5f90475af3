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
