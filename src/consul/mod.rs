//! The Consul edge: HTTP client ([`client`]), wire types and decoding ([`wire`]), and the
//! blocking-query watch with Consul's index rules ([`watch`]).
//!
//! Each long-lived user (one per watch, plus one for writes and the periodic agent check)
//! owns one [`client::Connection`], a single keep-alive HTTP/1.1 connection that is
//! re-opened on failure. So the number of connections to the agent is fixed (five),
//! whatever the size of the catalog.

pub mod client;
pub mod watch;
pub mod wire;

pub use client::{Client, ConsulError, ErrorKind, Response};
