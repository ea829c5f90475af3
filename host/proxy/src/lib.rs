//! Lateen's runtime: it runs a [`lateen_model::Snapshot`] and knows nothing of YAML or xDS.
//!
//! Data flow: [`listener`] (accept, TLS, codec) → [`http`] (the request path, as phases) →
//! [`chain`] (drives the wasm filters of a stream) → route decision → [`cluster`] (endpoints,
//! load balancing, circuit breakers) → [`upstream`] (pools). [`live::Live`] is a snapshot
//! with its runtime state (clusters, rollouts, access-log writers, tracer), built by
//! [`live::Live::install`] from the snapshot and the one that ran before it; [`worker`] runs
//! the listeners on each worker thread.

pub mod access_log;
pub mod body;
pub mod chain;
pub mod cluster;
pub mod connector;
pub mod framing;
pub mod http;
pub mod listener;
pub mod live;
pub mod overload;
pub mod retry;
pub mod rollout;
pub mod sidecar;
pub mod tcp;
pub mod trace;
pub mod upstream;
pub mod worker;
