//! HTTP/1.1 client for the Consul agent over TCP, TLS (rustls, ring) or a Unix socket.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;

use crate::config::ConsulConfig;

/// Largest response body accepted; a larger one is an error (logged with the endpoint),
/// so a runaway response cannot exhaust memory.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// Timeout for non-blocking requests (reads, writes, deregistration).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Connection parameters shared by every [`Connection`]; cheap to clone.
#[derive(Clone)]
pub struct Client {}

impl Client {
    /// Builds the client (TLS configuration included). Fails only on TLS material that
    /// rustls refuses (message names the variable).
    pub fn new(config: &ConsulConfig) -> Result<Client, String> {
        let _ = config;
        todo!()
    }

    /// A new lazily-opened connection; `purpose` names it in debug logs.
    pub fn connection(&self, purpose: &'static str) -> Connection {
        let _ = purpose;
        todo!()
    }
}

/// One keep-alive connection to the agent, (re)opened on demand.
pub struct Connection {}

impl Connection {
    /// Sends one request and reads the whole response within `timeout`.
    /// `path_and_query` starts with `/v1/`; the client adds the address's path prefix,
    /// `ns`/`partition` when configured, and the token and basic-auth headers.
    /// A request that fails on a reused connection before any response byte arrived is
    /// retried once on a fresh connection.
    /// Ok for 2xx and 404; any other status is `ErrorKind::Status`.
    pub async fn request(
        &mut self,
        method: hyper::Method,
        path_and_query: &str,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Response, ConsulError> {
        let _ = (method, path_and_query, body, timeout);
        todo!()
    }

    pub async fn get(
        &mut self,
        path_and_query: &str,
        timeout: Duration,
    ) -> Result<Response, ConsulError> {
        self.request(hyper::Method::GET, path_and_query, None, timeout)
            .await
    }

    pub async fn put(
        &mut self,
        path_and_query: &str,
        body: Bytes,
    ) -> Result<Response, ConsulError> {
        self.request(
            hyper::Method::PUT,
            path_and_query,
            Some(body),
            REQUEST_TIMEOUT,
        )
        .await
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// `X-Consul-Index`, when present and numeric.
    pub index: Option<u64>,
    pub body: Bytes,
}

/// A failed request: which endpoint, and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsulError {
    /// `METHOD /path` without the query string (never contains the token).
    pub endpoint: String,
    pub kind: ErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// Could not connect (refused, unreachable, TLS handshake failed, ...).
    Connect(String),
    /// Connection broke during the exchange.
    Io(String),
    Timeout(Duration),
    /// Non-2xx, non-404 status with Consul's message (body text, trimmed).
    Status {
        code: u16,
        message: String,
    },
    BodyTooLarge {
        limit: usize,
    },
    /// The body is not what the endpoint returns (set by callers that decode).
    Decode(String),
}

impl ConsulError {
    /// What the operator can do about it, when we know: for 403 the missing permission
    /// (from Consul's text) and the README's ACL policy; for a 400 about namespaces or
    /// partitions on Consul CE, unsetting CONSUL_NAMESPACE / CONSUL_PARTITION; for 429,
    /// the agent's `http_max_conns_per_client`.
    pub fn hint(&self) -> Option<String> {
        todo!()
    }
}

impl fmt::Display for ConsulError {
    /// `PUT /v1/config: 403 Permission denied: ... (hint: ...)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let _ = f;
        todo!()
    }
}

impl std::error::Error for ConsulError {}
