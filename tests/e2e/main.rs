//! End-to-end tests: the real `lateen` binary, real upstream servers on 127.0.0.1, real
//! sockets. One binary with a module per area.

mod access_log;
mod admin;
mod authz;
mod component;
mod config;
mod envoyfilter;
mod golden;
mod graph;
mod hardening;
mod jwt;
mod kubernetes;
mod lifecycle;
mod log_phase;
mod metrics;
mod ordering;
mod plugins;
mod ratelimit;
mod recycle;
mod reload;
mod resilience;
mod routing;
mod scaffold;
mod scoping;
mod sidecar;
mod tcp;
mod telemetry;
mod tls;
mod tracing;
mod traffic;
mod upgrade;
mod xds;
