//! ingress-service-monitor: exposes Consul mesh services through a Consul Connect
//! Envoy ingress gateway, driven by service tags.
//!
//! How the pieces fit:
//! - [`config`] turns the environment into a typed, validated [`config::Config`] once.
//! - [`consul`] is the edge: an HTTP/1.1 client over TCP, TLS or a Unix socket with
//!   one keep-alive connection per user, the wire types, and the blocking-query watch.
//! - [`model`], [`tags`], [`routes`] and [`plan`] are the pure core: catalog +
//!   protocols + the entries Consul holds in, desired registration + desired entries +
//!   warnings out. No I/O, no async. [`routes`] says what a tag becomes on an API
//!   gateway's http-route.
//! - [`reconcile`] turns the watches into passes: snapshot, plan, a pure diff into
//!   operations, apply them with CAS, report to /health.
//! - [`daemon`] wires the watches, the reconciler and /health together, and shuts down
//!   in one place (the write in flight finishes, then the ingress service is
//!   deregistered).
//! - [`health`] serves `/health` and `/metrics`; [`metrics`] is the registry the daemon
//!   counts into and the Prometheus text renderer; [`shutdown`] turns signals into one
//!   future.
#![forbid(unsafe_code)]

pub mod config;
pub mod consul;
pub mod daemon;
pub mod health;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod reconcile;
pub mod routes;
pub mod shutdown;
pub mod tags;
