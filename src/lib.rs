//! ingress-service-monitor: exposes Consul mesh services through a Consul Connect
//! Envoy ingress gateway, driven by service tags.
//!
//! How the pieces fit:
//! - [`config`] turns the environment into a typed, validated [`config::Config`] once.
//! - [`consul`] is the edge: an HTTP/1.1 client over TCP, TLS or a Unix socket with
//!   one keep-alive connection per user, the wire types, and the blocking-query watch.
//! - [`tags`] and [`plan`] are the pure core: catalog + protocols + current entry in,
//!   desired registration + desired config entry + warnings out. No I/O, no async.
//! - [`daemon`] runs the watches, debounces, plans, applies only differences (CAS),
//!   publishes health, and deregisters on shutdown.
//! - [`health`] serves `/health` and `/metrics`; [`metrics`] is the registry the daemon
//!   counts into and the Prometheus text renderer; [`shutdown`] turns signals into one
//!   future.
#![forbid(unsafe_code)]

pub mod config;
pub mod consul;
pub mod daemon;
pub mod health;
pub mod metrics;
pub mod plan;
pub mod shutdown;
pub mod tags;
