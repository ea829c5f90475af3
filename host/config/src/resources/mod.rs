//! The YAML resources Lateen reads, as plain serde data. Field names follow the Istio API
//! reference (`networking.istio.io/v1`, `extensions.istio.io/v1alpha1`). Fields of Istio's
//! schema that Lateen does not act on yet are accepted (so copied YAML loads) and reported
//! as warnings; unknown fields are errors, so a typo never passes silently.

use lateen_sdk::istio::{
    Headers, HttpDirectResponse, HttpFaultInjection, HttpMatchRequest, HttpMirrorPolicy,
    HttpRedirect, HttpRetry, HttpRewrite, MirrorDestination, Percent,
};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

mod bootstrap;
mod extensions;
mod networking;
mod security;
mod telemetry;
pub use self::{bootstrap::*, extensions::*, networking::*, security::*, telemetry::*};

/// `apiVersion`, `kind` and `metadata`, read first to pick the typed spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
}

/// A whole resource with its typed spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Typed<S> {
    #[allow(dead_code)]
    pub api_version: String,
    #[allow(dead_code)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: S,
    #[serde(default)]
    #[allow(dead_code)]
    pub status: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}
