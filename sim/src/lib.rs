//! A Consul HTTP API simulator, faithful to `shared/consul-api.md` for the endpoints
//! ingress-service-monitor (and Traefik's Consul Catalog provider) use.
//!
//! It runs its own tokio runtime on a background thread, so tests, the demo and the
//! benchmark drive it with plain synchronous calls while the daemon under test runs as a
//! separate process. It binds port 0 unless told otherwise. Dropping the [`Sim`] stops it.
//!
//! How the pieces fit: `server` owns the listener, TLS and connection bookkeeping and
//! hands each request to `http`, which routes it, applies faults and Consul's parsing
//! order, and calls the handlers. Reads run through `blocking` (index- or hash-based
//! long polls woken per table); writes go through `state`, which keeps the Raft-like
//! indexes and reports which tables changed. Config entries are decoded, validated and
//! rendered by `entries` (with `dns` for host names and the protocol graph checks;
//! `api_gateway` adds the API-gateway kinds and the controller task that writes their
//! Status, `intentions` the service-intentions rules and their L7 protocol check);
//! agent registrations by `agent`; `filter` is the `filter=` language, `acl` the token
//! rules and texts, `checks` the HTTP check runner and `pki` the TLS material. The
//! control methods of [`Sim`] lock the same state the server uses, so a test's change is
//! visible to the very next request, and blocked queries wake as if a client wrote it.

#![forbid(unsafe_code)]

mod acl;
mod agent;
mod api_gateway;
mod blocking;
mod checks;
mod dns;
mod entries;
mod filter;
mod http;
mod intentions;
mod pki;
mod server;
mod state;
mod util;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::server::{Cmd, Settings, Shared};

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
    /// A test speed-up, not Consul behaviour: when set, every HTTP check runs at this
    /// interval instead of its registered `Interval` (the daemon registers 10s, so a
    /// health transition would otherwise take that long to show).
    pub check_interval: Option<Duration>,
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
            check_interval: None,
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
    /// The `intentions = "<level>"` part of `service "<name>" { ... }`. Without it, a
    /// `service` rule grants intention read when its policy is read or write, and deny
    /// when it is deny; rules of the same name merge as Consul merges them (deny beats
    /// write beats read), and an exact name beats every prefix, so `service "x" { policy =
    /// "write" }` leaves only intention read on `x` even beside `service_prefix "" {
    /// intentions = "write" }`.
    Intentions(String, Access),
    /// The `intentions = "<level>"` part of `service_prefix "<prefix>" { ... }`.
    IntentionsPrefix(String, Access),
}

/// One `Status.Conditions` element, as [`Sim::conditions`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// `Type`: `Accepted`, `Bound`, `ResolvedRefs`, `Conflicted`.
    pub kind: String,
    /// `Status`: `True`, `False`, `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
    /// `Resource.Name` (the gateway for `Bound`, empty for `Accepted`).
    pub resource_name: String,
    /// `Resource.SectionName` (the listener).
    pub section: String,
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
    /// The `User-Agent` header ("" when none): tells which client sent it when several
    /// share the simulator.
    pub user_agent: String,
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
    /// Generates the PKI under `dir` (created if needed). Panics when that fails: it is
    /// test set-up, and there is nothing a test could do instead.
    pub fn generate(dir: PathBuf) -> TestPki {
        let files = match pki::generate(&dir) {
            Ok(f) => f,
            Err(e) => panic!("consul-sim: test PKI: {e}"),
        };
        TestPki {
            dir,
            ca_cert: files.ca_cert,
            server_cert: files.server_cert,
            server_key: files.server_key,
            client_cert: files.client_cert,
            client_key: files.client_key,
            other_ca_cert: files.other_ca_cert,
        }
    }
    /// Server TLS options; `mutual` requires client certificates signed by the CA.
    pub fn server_tls(&self, mutual: bool) -> TlsOptions {
        let read = |path: &PathBuf| match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => panic!("consul-sim: read {}: {e}", path.display()),
        };
        TlsOptions {
            cert_pem: read(&self.server_cert),
            key_pem: read(&self.server_key),
            client_ca_pem: mutual.then(|| read(&self.ca_cert)),
        }
    }
}

/// A running simulator.
pub struct Sim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tls: bool,
    commands: tokio::sync::mpsc::UnboundedSender<Cmd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How long a listener command may take before the caller gives up waiting.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

impl Sim {
    /// Starts the server thread and waits until it listens. Panics when it cannot
    /// (bad TLS material, address in use): a test cannot run without it.
    pub fn start(options: SimOptions) -> Sim {
        let acceptor = options.tls.as_ref().map(|t| match pki::acceptor(t) {
            Ok(a) => a,
            Err(e) => panic!("consul-sim: invalid TLS options: {e}"),
        });
        let shared = Arc::new(Shared::new(Settings {
            acl: options.acl,
            max_wait: options.max_wait,
            default_wait: options.default_wait,
            jitter: options.jitter,
            run_checks: options.run_checks,
            check_interval: options.check_interval,
        }));
        let (commands, command_rx) = tokio::sync::mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_shared = Arc::clone(&shared);
        let addr = options.addr;
        let spawned = std::thread::Builder::new()
            .name("consul-sim".to_string())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        // `start` waits on this channel; if it is gone there is no one to tell.
                        let _ = ready_tx.send(Err(format!("runtime: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    // The API-gateway controller lives as long as the server does.
                    tokio::spawn(api_gateway::run(Arc::clone(&thread_shared)));
                    server::run(thread_shared, addr, acceptor, command_rx, ready_tx).await
                });
            });
        let thread = match spawned {
            Ok(t) => t,
            Err(e) => panic!("consul-sim: cannot start the server thread: {e}"),
        };
        let addr = match ready_rx.recv() {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => panic!("consul-sim: {e}"),
            Err(_) => panic!("consul-sim: the server thread exited before listening"),
        };
        Sim {
            shared,
            addr,
            tls: options.tls.is_some(),
            commands,
            thread: Some(thread),
        }
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// `http://127.0.0.1:<port>` (or `https://`).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    fn mutate(&self, f: impl FnOnce(&mut state::State) -> state::Changes) {
        let changes = f(&mut self.shared.lock());
        self.shared.notify(changes);
    }

    // --- catalog (services on other nodes) ---
    pub fn add_service(&self, spec: ServiceSpec) {
        self.mutate(|s| s.add_service(&spec));
    }
    /// Replaces the tags of the instance `id` on `node`; bumps the services index.
    pub fn set_service_tags(&self, node: &str, id: &str, tags: &[&str]) {
        self.mutate(|s| s.set_service_tags(node, id, tags));
    }
    pub fn remove_service(&self, node: &str, id: &str) {
        self.mutate(|s| s.remove_service(node, id));
    }

    // --- config entries (no ACL; same validation as PUT /v1/config) ---
    /// Ok(true) written or identical, Ok(false) CAS miss, Err((status, text)) rejected.
    pub fn put_config(&self, entry: Value, cas: Option<u64>) -> Result<bool, (u16, String)> {
        let entry = self.checked_entry(&entry)?;
        let (outcome, changes) = self.shared.lock().write_entry(&entry, cas);
        self.shared.notify(changes);
        match outcome {
            state::WriteOutcome::Done { reply, .. } => Ok(reply),
            state::WriteOutcome::Rejected(e) => Err((500, e)),
        }
    }
    /// The entry as `GET /v1/config/<kind>/<name>` returns it.
    pub fn config(&self, kind: &str, name: &str) -> Option<Value> {
        self.shared.lock().entry_json(kind, name)
    }
    /// The names of every entry of `kind`, sorted.
    pub fn config_names(&self, kind: &str) -> Vec<String> {
        let state = self.shared.lock();
        state
            .config
            .keys()
            .filter(|(k, _)| k == kind)
            .map(|(_, name)| name.clone())
            .collect()
    }
    /// Removes the entry as an operator with full rights would, without the graph
    /// validation a `DELETE` runs (tests use it to create states the API would refuse).
    pub fn delete_config(&self, kind: &str, name: &str) {
        self.mutate(|s| s.delete_entry(kind, name, None, false).1);
    }

    // --- the API-gateway controller (status of api-gateway, http-route, tcp-route) ---
    /// Makes the discovery chain of `service` fail to compile with `message` (as a
    /// foreign `service-resolver` or `service-router` can), or compile again with
    /// `None`: routes targeting it become `Accepted=False` / `InvalidDiscoveryChain` with
    /// that message, then unbind. The controller runs as after any change.
    pub fn set_chain_error(&self, service: &str, message: Option<&str>) {
        let mut state = self.shared.lock();
        match message {
            Some(m) => state
                .gateways
                .chain_errors
                .insert(service.to_string(), m.to_string()),
            None => state.gateways.chain_errors.remove(service),
        };
        state.gateways.touch();
    }
    /// How long after a change the controller runs (default 5 ms).
    pub fn set_gateway_controller_delay(&self, delay: Duration) {
        self.shared.lock().gateways.delay = delay;
    }
    /// Holds the controller (changes wait) or lets it run again.
    pub fn pause_gateway_controller(&self, paused: bool) {
        let mut state = self.shared.lock();
        state.gateways.paused = paused;
        if !paused && state.gateways.pending() {
            state.gateways.touch();
        }
    }
    /// Writes the controller made (Status of gateways and routes, bound-api-gateway
    /// entries). They bump indexes but are not client writes: neither
    /// [`Sim::state_changing_writes`] nor [`Sim::entry_writes`] count them.
    pub fn gateway_status_writes(&self) -> u64 {
        self.shared.lock().gateways.status_writes
    }
    /// Whether the controller has no change left to reconcile: its statuses reflect the
    /// table as it is now.
    pub fn gateway_controller_idle(&self) -> bool {
        let state = self.shared.lock();
        !state.gateways.pending()
    }
    /// The `Status.Conditions` of an entry as (Type, Status, Reason, Message,
    /// Resource.SectionName), in stored order; empty when none or no such entry.
    pub fn conditions(&self, kind: &str, name: &str) -> Vec<Condition> {
        let Some(entry) = self.config(kind, name) else {
            return Vec::new();
        };
        let text = |c: &Value, k: &str| c[k].as_str().unwrap_or("").to_string();
        entry["Status"]["Conditions"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|c| Condition {
                        kind: text(c, "Type"),
                        status: text(c, "Status"),
                        reason: text(c, "Reason"),
                        message: text(c, "Message"),
                        resource_name: c["Resource"]["Name"].as_str().unwrap_or("").to_string(),
                        section: c["Resource"]["SectionName"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    // --- the local agent ---
    /// The service as `GET /v1/agent/service/<id>` returns it.
    pub fn agent_service(&self, id: &str) -> Option<Value> {
        let state = self.shared.lock();
        let svc = state.agent_services.get(id)?;
        let mut body = agent::agent_service_json(svc);
        let hash = agent::content_hash(&body);
        body.insert("ContentHash".to_string(), Value::String(hash));
        Some(Value::Object(body))
    }
    /// Check definitions and states of agent services, as `GET /v1/agent/checks` returns them.
    pub fn agent_checks(&self) -> Value {
        let state = self.shared.lock();
        Value::Object(http::checks_map(&state, &acl::Authz::allow_all(), None).0)
    }
    /// Status of a check ("passing", "warning", "critical").
    pub fn check_status(&self, check_id: &str) -> Option<String> {
        self.shared
            .lock()
            .agent_checks
            .get(check_id)
            .map(|c| c.status.clone())
    }
    /// The agent forgets every service registered through it (dev-mode restart, reaping);
    /// catalog and hash-blocking watchers see it.
    pub fn agent_forget_services(&self) {
        self.mutate(|s| s.forget_agent_services());
    }

    fn command(&self, make: impl FnOnce(std::sync::mpsc::Sender<()>) -> Cmd) {
        let (ack, done) = std::sync::mpsc::channel();
        if self.commands.send(make(ack)).is_ok() {
            // A timeout means the server thread is stuck or gone; the caller's next
            // observation will show it, so there is nothing better to do here.
            let _ = done.recv_timeout(COMMAND_TIMEOUT);
        }
    }
    /// Stops accepting and closes every open connection (the port stays reserved).
    pub fn stop_listening(&self) {
        self.command(Cmd::StopListening);
    }
    /// Listens again on the same address.
    pub fn start_listening(&self) {
        self.command(Cmd::StartListening);
    }
    /// Agent restart in dev mode: stop listening, forget agent services, listen again.
    pub fn restart_agent(&self) {
        self.stop_listening();
        self.agent_forget_services();
        self.start_listening();
    }

    // --- faults ---
    /// A concurrent writer: `entry` (validated like a `PUT /v1/config`) is stored just
    /// before the next API write of the same kind and name is applied, so that write's
    /// `cas` index is stale and it answers `false`.
    pub fn race_next_config_write(&self, entry: Value) -> Result<(), (u16, String)> {
        let entry = self.checked_entry(&entry)?;
        self.shared.lock().races.push(entry);
        Ok(())
    }

    /// Decodes, normalises and validates an entry as `PUT /v1/config` does before
    /// applying it: Err((400 or 500, Consul's text)).
    fn checked_entry(&self, entry: &Value) -> Result<entries::Entry, (u16, String)> {
        let enterprise = self.shared.lock().enterprise;
        let mut entry = entries::decode(entry, enterprise).map_err(|e| (400, e))?;
        entries::normalize(&mut entry);
        entries::validate(&entry).map_err(|e| (500, e))?;
        Ok(entry)
    }
    /// The next `method` request whose path starts with `path_prefix` is received and
    /// then acted on (and answered) only after `delay`, even if its client has gone
    /// meanwhile: a slow agent with a write in flight.
    pub fn hold_next(&self, method: &str, path_prefix: &str, delay: std::time::Duration) {
        self.shared
            .lock()
            .holds
            .push((method.to_string(), path_prefix.to_string(), delay));
    }
    pub fn inject(&self, fault: Fault) {
        self.shared.lock().faults.push(fault);
    }
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }
    /// Snapshot restore: every index goes back to a small value (data kept); blocked
    /// queries are woken.
    pub fn reset_index(&self) {
        self.shared.lock().reset_index();
        self.shared.abandon();
    }
    /// Error bodies gain `rpc error making call: ` prefixes, as through a client agent.
    pub fn set_rpc_error_prefix(&self, on: bool) {
        self.shared.lock().rpc_prefix = on;
    }
    /// `limits.http_max_conns_per_client`: excess connections answer 429.
    pub fn set_max_conns_per_client(&self, limit: Option<usize>) {
        self.shared.lock().max_conns_per_client = limit;
    }
    /// Consul CE (default) rejects `ns`/`partition`; Enterprise accepts them.
    pub fn set_enterprise(&self, on: bool) {
        self.shared.lock().enterprise = on;
    }

    // --- ACL ---
    /// Creates or replaces a token (its secret) with the given rules. The secret
    /// `anonymous` sets the rules of requests that carry no token.
    pub fn set_token(&self, secret: &str, rules: Vec<Rule>) {
        self.shared.lock().tokens.insert(secret.to_string(), rules);
    }

    // --- observation ---
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().log.clone()
    }
    /// Config-entry writes and agent registrations that changed state.
    pub fn state_changing_writes(&self) -> u64 {
        self.shared.lock().writes
    }
    /// Writes that changed the config entry `kind`/`name` (identical writes and CAS
    /// misses do not count).
    pub fn entry_writes(&self, kind: &str, name: &str) -> u64 {
        let key = (kind.to_string(), name.to_string());
        self.shared
            .lock()
            .entry_writes
            .get(&key)
            .copied()
            .unwrap_or(0)
    }
    /// Requests being served right now, as (id, method, path, query), ids increasing in
    /// arrival order: blocking queries parked in their wait show up here before they
    /// answer.
    pub fn in_flight(&self) -> Vec<(u64, String, String, String)> {
        let state = self.shared.lock();
        state
            .in_flight
            .iter()
            .map(|(id, (method, path, query))| (*id, method.clone(), path.clone(), query.clone()))
            .collect()
    }
    /// Connections currently open to the simulator.
    pub fn open_connections(&self) -> usize {
        self.shared.open_connections()
    }
    /// Current services-table and config-entries-table indexes.
    pub fn indexes(&self) -> (u64, u64) {
        let state = self.shared.lock();
        (state.services_index, state.config_index)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        // Ending the runtime drops every task, which closes every connection.
        // A failed send means the thread already ended; a panic in it has been reported.
        let _ = self.commands.send(Cmd::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
