//! The Consul edge: the HTTP client ([`client`]), the endpoints the daemon uses with their
//! paths and decoding ([`api`]), wire decoding ([`wire`]), the blocking-query watch with
//! Consul's index rules ([`watch`]), and the retry policy ([`retry`]).
//!
//! Each long-lived user (one per watch, plus one for writes and the periodic agent check)
//! owns one [`client::Connection`], a single keep-alive HTTP/1.1 connection that is
//! re-opened on failure. So the number of connections to the agent is fixed (five),
//! whatever the size of the catalog.

pub mod api;
pub mod client;
pub mod retry;
pub mod watch;
pub mod wire;

pub use client::{Client, ConsulError, ErrorKind, Response};
