//! A Consul HTTP API simulator, faithful to `shared/consul-api.md` for the endpoints
//! ingress-service-monitor (and Traefik's Consul Catalog provider) use.
//!
//! It runs its own tokio runtime on a background thread, so tests, the demo and the
//! benchmark drive it with plain synchronous calls while the daemon under test runs as a
//! separate process. It binds port 0 unless told otherwise. Dropping the [`Sim`] stops it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How to start the simulator.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Where to listen; default `127.0.0.1:0`.
    pub addr: SocketAddr,
    /// Serve HTTPS (optionally requiring client certificates).
    pub tls: Option<TlsOptions>,
    /// ACL mode: default policy deny; tokens from [`Sim::set_token`].
    pub acl: bool,
    /// `max_query_time`: blocking waits above this are clamped (Consul: 10 min).
    pub max_wait: Duration,
    /// `default_query_time`: used when `wait` is absent (Consul: 5 min).
    pub default_wait: Duration,
    /// Add Consul's random extra of up to wait/16 to blocking waits.
    pub jitter: bool,
    /// Run the HTTP checks of agent-registered services (GET every Interval).
    pub run_checks: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            acl: false,
            max_wait: Duration::from_secs(600),
            default_wait: Duration::from_secs(300),
            jitter: true,
            run_checks: false,
        }
    }
}

/// Server-side TLS material (PEM text).
#[derive(Debug, Clone)]
pub struct TlsOptions {
    pub cert_pem: String,
    pub key_pem: String,
    /// When set, clients must present a certificate signed by this CA (mutual TLS).
    pub client_ca_pem: Option<String>,
}

/// A catalog service instance on some node (not registered through the agent).
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub node: String,
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    /// "" for typical services, "connect-proxy", "ingress-gateway", ...
    pub kind: String,
    pub address: String,
    pub port: u16,
}

impl ServiceSpec {
    /// A typical service `name` with ID `name` on node `node-1`, address 127.0.0.1, port 8080.
    pub fn new(name: &str, tags: &[&str]) -> ServiceSpec {
        ServiceSpec {
            node: "node-1".into(),
            id: name.into(),
            name: name.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            kind: String::new(),
            address: "127.0.0.1".into(),
            port: 8080,
        }
    }
}

/// ACL access level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Deny,
    Read,
    Write,
}

/// One ACL rule, with Consul's matching: exact `service` beats `service_prefix`,
/// the longest prefix wins; `mesh` falls back to `operator` when no mesh rule exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    Service(String, Access),
    ServicePrefix(String, Access),
    NodePrefix(String, Access),
    Mesh(Access),
    Operator(Access),
}

/// Fault injection: the next `count` requests matching `method` (any when `None`) and
/// whose path starts with `path_prefix` get `status` with `body`.
#[derive(Debug, Clone)]
pub struct Fault {
    pub method: Option<String>,
    pub path_prefix: String,
    pub status: u16,
    pub body: String,
    pub count: usize,
}

/// One request as the simulator saw it.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// Raw query string ("" when none).
    pub query: String,
    pub status: u16,
    /// Whether an `X-Consul-Token` (or Bearer) header was present.
    pub had_token: bool,
    /// Response body size in bytes.
    pub response_bytes: usize,
}

/// Test PKI generated at run time: a CA, a server certificate for 127.0.0.1/localhost,
/// a client certificate, and a second unrelated CA; PEM files written under `dir`.
#[derive(Debug, Clone)]
pub struct TestPki {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that did not sign anything here (for "wrong CA" tests).
    pub other_ca_cert: PathBuf,
}

impl TestPki {
    pub fn generate(dir: PathBuf) -> TestPki {
        let _ = dir;
        todo!()
    }
    /// Server TLS options; `mutual` requires client certificates signed by the CA.
    pub fn server_tls(&self, mutual: bool) -> TlsOptions {
        let _ = mutual;
        todo!()
    }
}

/// A running simulator.
pub struct Sim {}

impl Sim {
    pub fn start(options: SimOptions) -> Sim {
        let _ = options;
        todo!()
    }
    pub fn addr(&self) -> SocketAddr {
        todo!()
    }
    /// `http://127.0.0.1:<port>` (or `https://`).
    pub fn url(&self) -> String {
        todo!()
    }

    // --- catalog (services on other nodes) ---
    pub fn add_service(&self, spec: ServiceSpec) {
        let _ = spec;
        todo!()
    }
    /// Replaces the tags of the instance `id` on `node`; bumps the services index.
    pub fn set_service_tags(&self, node: &str, id: &str, tags: &[&str]) {
        let _ = (node, id, tags);
        todo!()
    }
    pub fn remove_service(&self, node: &str, id: &str) {
        let _ = (node, id);
        todo!()
    }

    // --- config entries (no ACL; same validation as PUT /v1/config) ---
    /// Ok(true) written or identical, Ok(false) CAS miss, Err((status, text)) rejected.
    pub fn put_config(&self, entry: Value, cas: Option<u64>) -> Result<bool, (u16, String)> {
        let _ = (entry, cas);
        todo!()
    }
    /// The entry as `GET /v1/config/<kind>/<name>` returns it.
    pub fn config(&self, kind: &str, name: &str) -> Option<Value> {
        let _ = (kind, name);
        todo!()
    }
    pub fn delete_config(&self, kind: &str, name: &str) {
        let _ = (kind, name);
        todo!()
    }

    // --- the local agent ---
    /// The service as `GET /v1/agent/service/<id>` returns it.
    pub fn agent_service(&self, id: &str) -> Option<Value> {
        let _ = id;
        todo!()
    }
    /// Check definitions and states of agent services, as `GET /v1/agent/checks` returns them.
    pub fn agent_checks(&self) -> Value {
        todo!()
    }
    /// Status of a check ("passing", "warning", "critical").
    pub fn check_status(&self, check_id: &str) -> Option<String> {
        let _ = check_id;
        todo!()
    }
    /// The agent forgets every service registered through it (dev-mode restart, reaping);
    /// catalog and hash-blocking watchers see it.
    pub fn agent_forget_services(&self) {
        todo!()
    }
    /// Stops accepting and closes every open connection (the port stays reserved).
    pub fn stop_listening(&self) {
        todo!()
    }
    /// Listens again on the same address.
    pub fn start_listening(&self) {
        todo!()
    }
    /// Agent restart in dev mode: stop listening, forget agent services, listen again.
    pub fn restart_agent(&self) {
        todo!()
    }

    // --- faults ---
    pub fn inject(&self, fault: Fault) {
        let _ = fault;
        todo!()
    }
    pub fn clear_faults(&self) {
        todo!()
    }
    /// Snapshot restore: every index goes back to a small value (data kept); blocked
    /// queries are woken.
    pub fn reset_index(&self) {
        todo!()
    }
    /// Error bodies gain `rpc error making call: ` prefixes, as through a client agent.
    pub fn set_rpc_error_prefix(&self, on: bool) {
        let _ = on;
        todo!()
    }
    /// `limits.http_max_conns_per_client`: excess connections answer 429.
    pub fn set_max_conns_per_client(&self, limit: Option<usize>) {
        let _ = limit;
        todo!()
    }
    /// Consul CE (default) rejects `ns`/`partition`; Enterprise accepts them.
    pub fn set_enterprise(&self, on: bool) {
        let _ = on;
        todo!()
    }

    // --- ACL ---
    /// Creates or replaces a token (its secret) with the given rules.
    pub fn set_token(&self, secret: &str, rules: Vec<Rule>) {
        let _ = (secret, rules);
        todo!()
    }

    // --- observation ---
    pub fn requests(&self) -> Vec<RequestRecord> {
        todo!()
    }
    /// Config-entry writes and agent registrations that changed state.
    pub fn state_changing_writes(&self) -> u64 {
        todo!()
    }
    /// Connections currently open to the simulator.
    pub fn open_connections(&self) -> usize {
        todo!()
    }
    /// Current services-table and config-entries-table indexes.
    pub fn indexes(&self) -> (u64, u64) {
        todo!()
    }
}
