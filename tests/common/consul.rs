//! The real Consul agent beside the simulator: a dev-mode agent per test on free loopback
//! ports, and the [`Consul`] trait that lets one scenario run against either.
//!
//! The agent binary comes from `CONSUL_BIN` (`.ci/run` installs Debian bullseye's Consul
//! 1.8.7 into `.tools/consul` and exports it); a test that needs it and does not find it
//! fails. The agent runs in `-dev` mode (in-memory, its own server and leader), with its
//! HTTP API on a plain port the harness uses, and optionally ACLs (default deny, a master
//! token for the harness) and an HTTPS port with client-certificate verification. It is
//! killed when its guard drops. Its debug log lists every request it served, which is how
//! the tests count writes against it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use consul_sim::{ServiceSpec, Sim, TestPki};
use serde_json::{json, Value};

use super::{EVENTUALLY, GATEWAY};

pub const CONSUL_BIN: &str = "CONSUL_BIN";

/// The harness's token on an agent with ACLs: full rights.
pub const MASTER_TOKEN: &str = "d5b0c3a4-0000-4000-8000-00000000a11c";

/// Path of the Consul binary from `CONSUL_BIN`. Panics when it is unset or not a file:
/// the tests that need it are ignored unless asked for, and a run that asks must have it.
pub fn consul_bin() -> String {
    let path = match std::env::var(CONSUL_BIN) {
        Ok(p) if !p.is_empty() => p,
        _ => panic!(
            "{CONSUL_BIN} is not set: it must name the consul binary (Consul 1.8.7). \
             `bash .ci/run` installs it into .tools/consul and exports {CONSUL_BIN}; or set it \
             by hand to run this test"
        ),
    };
    if !std::path::Path::new(&path).is_file() {
        panic!("{CONSUL_BIN}={path} is not a file: it must name the consul binary");
    }
    path
}

/// A port free for both TCP and UDP right now (Serf and DNS bind both), and never
/// handed out before in this process (the OS readily gives a just-released port again,
/// and one agent must not get the same port twice). Taken and released at once: the
/// agent binds it a moment later; another process could take it in between, which
/// [`Agent::start`] answers by starting again on fresh ports.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = listener.local_addr().expect("local addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if given.insert(port) {
            return port;
        }
    }
}

/// How the agent is started.
#[derive(Clone, Default)]
pub struct AgentOptions {
    /// ACLs enabled, default policy deny, [`MASTER_TOKEN`] for the harness.
    pub acl: bool,
    /// An HTTPS port with this PKI's server certificate; `mutual` requires client
    /// certificates signed by its CA (`verify_incoming`, as operators set it).
    pub tls: Option<(TestPki, bool)>,
    /// `proxy-defaults/global` with protocol http, written once the agent is up, so
    /// scenarios that do not care about protocols need no service-defaults.
    pub http_defaults: bool,
}

#[derive(Debug, Clone, Copy)]
struct Ports {
    http: u16,
    https: Option<u16>,
    grpc: u16,
    dns: u16,
    serf_lan: u16,
    serf_wan: u16,
    server: u16,
}

/// A dev-mode Consul agent. Killed on drop.
pub struct Agent {
    options: AgentOptions,
    ports: Ports,
    config: PathBuf,
    /// Holds the configuration; removed on drop.
    dir: PathBuf,
    child: Mutex<Option<Child>>,
    log: Arc<Mutex<String>>,
    /// Catalog registrations made through [`Consul::add_service`], to re-register with
    /// new tags and after a restart.
    specs: Mutex<BTreeMap<(String, String), ServiceSpec>>,
    /// Tokens made with [`Agent::set_policy`]: secret -> policy ID.
    policies: Mutex<BTreeMap<String, String>>,
    /// The token the daemon is given (`CONSULTOKEN`), when ACLs are on.
    daemon_token: Mutex<Option<String>>,
    /// In front of the agent when [`Agent::race_next_config_write`] is used.
    proxy: Mutex<Option<RacingProxy>>,
}

static AGENTS: AtomicU64 = AtomicU64::new(0);
static SYNCS: AtomicU64 = AtomicU64::new(0);

/// The query parameter that marks the harness's own requests.
pub const HARNESS_MARK: &str = "from-test-harness";

impl Agent {
    /// Starts the agent and waits until it is ready. A port taken by someone else between
    /// [`free_port`] and the agent's bind makes it exit at once: it is then tried again on
    /// fresh ports, three times at most.
    pub fn start(options: AgentOptions) -> Agent {
        consul_bin(); // fail before creating anything when it is missing
        let mut attempt = 1;
        let agent = loop {
            let agent = Agent::configure(options.clone());
            match agent.spawn() {
                Ok(()) => break agent,
                Err(log) if attempt < 3 && log.contains("address already in use") => {
                    attempt += 1;
                }
                Err(log) => panic!("consul exited at start:\n{log}"),
            }
        };
        if agent.options.http_defaults {
            agent
                .put_config(
                    json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}}),
                    None,
                )
                .expect("proxy-defaults accepted");
        }
        agent
    }

    /// The agent's configuration file on fresh ports; nothing started yet.
    fn configure(options: AgentOptions) -> Agent {
        let n = AGENTS.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("ism-consul-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("agent dir");
        let ports = Ports {
            http: free_port(),
            https: options.tls.as_ref().map(|_| free_port()),
            grpc: free_port(),
            dns: free_port(),
            serf_lan: free_port(),
            serf_wan: free_port(),
            server: free_port(),
        };
        let mut config = json!({
            "node_name": format!("agent-{}", ports.http),
            "ports": {
                "http": ports.http,
                "https": ports.https.map_or(-1, i64::from),
                "grpc": ports.grpc,
                "dns": ports.dns,
                "serf_lan": ports.serf_lan,
                "serf_wan": ports.serf_wan,
                "server": ports.server,
            },
        });
        if options.acl {
            config["acl"] = json!({
                "enabled": true,
                "default_policy": "deny",
                "tokens": {"master": MASTER_TOKEN, "agent": MASTER_TOKEN},
            });
        }
        if let Some((pki, mutual)) = &options.tls {
            config["ca_file"] = json!(pki.ca_cert);
            config["cert_file"] = json!(pki.server_cert);
            config["key_file"] = json!(pki.server_key);
            config["verify_incoming"] = json!(*mutual);
        }
        let config_path = dir.join("agent.json");
        std::fs::write(&config_path, config.to_string()).expect("agent config");
        Agent {
            options,
            ports,
            config: config_path,
            dir,
            child: Mutex::new(None),
            log: Arc::new(Mutex::new(String::new())),
            specs: Mutex::new(BTreeMap::new()),
            policies: Mutex::new(BTreeMap::new()),
            daemon_token: Mutex::new(None),
            proxy: Mutex::new(None),
        }
    }

    /// A plain agent with `proxy-defaults` http.
    pub fn http() -> Agent {
        Agent::start(AgentOptions {
            http_defaults: true,
            ..AgentOptions::default()
        })
    }

    /// Starts the process and waits until it is ready; Err(its log) when it exited.
    fn spawn(&self) -> Result<(), String> {
        let mut child = Command::new(consul_bin())
            .args([
                "agent",
                "-dev",
                "-bind",
                "127.0.0.1",
                "-client",
                "127.0.0.1",
            ])
            .arg("-config-file")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start consul: {e}"));
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        collect(stdout, self.log.clone());
        collect(stderr, self.log.clone());
        *self.child.lock().expect("child") = Some(child);
        self.wait_ready()
    }

    /// Waits until the agent has a leader, its ACLs accept the master token, and it has
    /// registered itself (the `consul` service): only then are writes accepted.
    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(Ok(Some(status))) = self
                .child
                .lock()
                .expect("child")
                .as_mut()
                .map(Child::try_wait)
            {
                // Its output pipes close with it; give the readers a moment to drain them.
                std::thread::sleep(Duration::from_millis(100));
                return Err(format!("exit {status}:\n{}", self.log()));
            }
            let token = self.options.acl.then_some(MASTER_TOKEN);
            let get = |path: &str| {
                let marked = format!("{path}?{HARNESS_MARK}");
                try_call(self.ports.http, "GET", &marked, None, token).ok()
            };
            let leader = get("/v1/status/leader");
            if leader.is_some_and(|l| l.status == 200 && l.body.len() > 2) {
                let services = get("/v1/catalog/services");
                if services.is_some_and(|s| s.status == 200 && s.body.contains("\"consul\"")) {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                panic!("consul not ready after 60s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the agent (SIGKILL: a dev agent forgets everything either way) and starts a
    /// new one on the same ports and configuration; the catalog registrations the test
    /// made are not replayed (see [`Agent::replay_services`]).
    pub fn restart(&self) {
        self.stop();
        if let Err(log) = self.spawn() {
            panic!("consul did not start again on its ports: {log}");
        }
        if self.options.http_defaults {
            self.put_config(
                json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}}),
                None,
            )
            .expect("proxy-defaults accepted");
        }
    }

    /// The agent stops: its ports refuse connections.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().expect("child").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Registers again every catalog service the test added (after [`Agent::restart`]).
    pub fn replay_services(&self) {
        let specs: Vec<ServiceSpec> = self
            .specs
            .lock()
            .expect("specs")
            .values()
            .cloned()
            .collect();
        for spec in specs {
            self.register(&spec);
        }
    }

    pub fn http_port(&self) -> u16 {
        self.ports.http
    }

    pub fn https_url(&self) -> String {
        format!(
            "https://127.0.0.1:{}",
            self.ports.https.expect("agent has HTTPS")
        )
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.http)
    }

    /// Everything the agent printed so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The requests the agent served to others than the harness (the daemon, Traefik),
    /// as (method, url) from its debug log, in order. Everything the agent finished
    /// before this call is in it: a marked request is sent and waited for in the log.
    pub fn requests(&self) -> Vec<(String, String)> {
        let n = SYNCS.fetch_add(1, Ordering::SeqCst);
        let marker = format!("/v1/status/leader?sync={n}");
        let _ = self.call("GET", &marker, None);
        let deadline = Instant::now() + Duration::from_secs(10);
        let logged = format!("{marker}&{HARNESS_MARK}");
        while !self.log().contains(&logged) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.log()
            .lines()
            .filter(|line| !line.contains(HARNESS_MARK))
            .filter_map(|line| {
                let rest = line.split_once("Request finished: method=")?.1;
                let (method, rest) = rest.split_once(" url=")?;
                let url = rest.split(' ').next()?;
                Some((method.to_string(), url.to_string()))
            })
            .collect()
    }

    /// A request of the harness to the plain HTTP port, with the master token when ACLs
    /// are on. HTTP/1.0, so the answer ends with the connection (never chunked).
    /// Every harness request carries [`HARNESS_MARK`] in its query (Consul ignores it), so
    /// [`Agent::requests`] can tell the daemon's requests from the test's own.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let token = self.options.acl.then_some(MASTER_TOKEN);
        let separator = if path.contains('?') { '&' } else { '?' };
        let marked = format!("{path}{separator}{HARNESS_MARK}");
        call(self.ports.http, method, &marked, body, token)
    }

    /// Creates or replaces the token `secret` with a policy of these HCL `rules`.
    pub fn set_policy(&self, secret: &str, rules: &str) {
        let mut policies = self.policies.lock().expect("policies");
        let name = format!("policy-{}", &secret[..8.min(secret.len())]);
        let body = json!({"Name": name, "Rules": rules});
        match policies.get(secret) {
            Some(id) => {
                let reply = self.call("PUT", &format!("/v1/acl/policy/{id}"), Some(&body));
                assert_eq!(reply.status, 200, "policy update: {}", reply.body);
            }
            None => {
                let reply = self.call("PUT", "/v1/acl/policy", Some(&body));
                assert_eq!(reply.status, 200, "policy create: {}", reply.body);
                let id = reply.json()["ID"].as_str().expect("policy ID").to_string();
                let token = json!({"SecretID": secret, "Policies": [{"ID": id}]});
                let reply = self.call("PUT", "/v1/acl/token", Some(&token));
                assert_eq!(reply.status, 200, "token create: {}", reply.body);
                policies.insert(secret.to_string(), id);
            }
        }
    }

    /// The daemon gets `CONSULTOKEN=secret` from [`Consul::env`].
    pub fn use_token(&self, secret: &str) {
        *self.daemon_token.lock().expect("token") = Some(secret.to_string());
    }

    /// A concurrent writer, as [`Sim::race_next_config_write`]: the daemon then talks to
    /// the agent through a proxy that, on the daemon's next `PUT /v1/config`, first
    /// writes `entry` to the agent itself, so the daemon's cas index is stale. Call it
    /// before starting the daemon.
    pub fn race_next_config_write(&self, entry: Value) {
        let mut proxy = self.proxy.lock().expect("proxy");
        let proxy = proxy.get_or_insert_with(|| RacingProxy::start(self.ports.http));
        proxy.races.lock().expect("races").push(entry);
    }

    /// Answers of the agent to the daemon's `PUT /v1/config` through the racing proxy.
    pub fn proxied_config_puts(&self) -> Vec<String> {
        self.proxy
            .lock()
            .expect("proxy")
            .as_ref()
            .map(|p| p.put_replies.lock().expect("replies").clone())
            .unwrap_or_default()
    }

    /// Starts the racing proxy (with no race yet), so a daemon started now goes through
    /// it and a later [`Agent::race_next_config_write`] applies to its next write.
    pub fn via_proxy(&self) {
        let mut proxy = self.proxy.lock().expect("proxy");
        proxy.get_or_insert_with(|| RacingProxy::start(self.ports.http));
    }

    fn register(&self, spec: &ServiceSpec) {
        let mut service = json!({
            "ID": spec.id,
            "Service": spec.name,
            "Tags": spec.tags,
            "Address": spec.address,
            "Port": spec.port,
        });
        if !spec.kind.is_empty() {
            service["Kind"] = json!(spec.kind);
        }
        if spec.kind == "connect-proxy" {
            let parent = spec.name.trim_end_matches("-sidecar-proxy");
            service["Proxy"] = json!({"DestinationServiceName": parent});
        }
        let body = json!({"Node": spec.node, "Address": "127.0.0.1", "Service": service});
        let reply = self.call("PUT", "/v1/catalog/register", Some(&body));
        assert_eq!(
            reply.status, 200,
            "catalog register {}: {}",
            spec.id, reply.body
        );
    }

    /// The status of an agent check ("passing", "critical", ...).
    pub fn check_status(&self, check_id: &str) -> Option<String> {
        self.agent_checks()[check_id]["Status"]
            .as_str()
            .map(String::from)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir); // best effort: it is under the temp dir
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!(
                "--- consul agent log (last 80 lines) ---\n{}\n--- end ---",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

fn collect(stream: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if let Ok(mut out) = into.lock() {
                out.push_str(&line);
                out.push('\n');
            }
        }
    });
}

/// One answer of the agent (or the simulator).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub index: Option<u64>,
    pub headers: String,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// A request to 127.0.0.1:port over HTTP/1.0 (the answer ends with the connection).
pub fn call(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> Reply {
    try_call(port, method, path, body, token)
        .unwrap_or_else(|e| panic!("{method} {path} on 127.0.0.1:{port}: {e}"))
}

/// [`call`], with a refused connection as an error.
pub fn try_call(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(token) = token {
        request.push_str(&format!("X-Consul-Token: {token}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let (headers, body) = response
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_string(), b.to_string()))
        .unwrap_or_default();
    let status = headers
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let index = header(&headers, "x-consul-index").and_then(|v| v.parse().ok());
    Ok(Reply {
        status,
        index,
        headers,
        body,
    })
}

pub fn header(headers: &str, name: &str) -> Option<String> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// What a scenario needs of a Consul: the simulator and the real agent both provide it.
pub trait Consul {
    /// `CONSULHTTPURL` for the daemon.
    fn url(&self) -> String;
    /// Whether this is the real agent (for the few assertions that differ).
    fn is_real(&self) -> bool;
    /// The daemon's base environment (and its token, if it has one).
    fn env(&self) -> Vec<(String, String)>;
    fn add_service(&self, spec: ServiceSpec);
    fn set_service_tags(&self, node: &str, id: &str, tags: &[&str]);
    fn remove_service(&self, node: &str, id: &str);
    /// Ok(true) written, Ok(false) CAS miss, Err((status, text)) rejected.
    fn put_config(&self, entry: Value, cas: Option<u64>) -> Result<bool, (u16, String)>;
    fn config(&self, kind: &str, name: &str) -> Option<Value>;
    fn agent_service(&self, id: &str) -> Option<Value>;
    fn agent_checks(&self) -> Value;
    /// X-Consul-Index of the catalog's services and of the config entries.
    fn indexes(&self) -> (u64, u64);
    /// Requests that wrote something (any method but GET), counted from the start.
    fn writes(&self) -> Vec<String>;
    /// Requests served so far (the harness's own included).
    fn request_count(&self) -> usize;
    /// A concurrent writer: `entry` is written just before the daemon's next config-entry
    /// write, so that write's cas index is stale.
    fn race_next_config_write(&self, entry: Value);
    /// The answers to the daemon's config-entry writes so far (true written, false CAS
    /// miss). On the agent, only those through the racing proxy.
    fn config_put_results(&self) -> Vec<bool>;
}

impl Consul for Sim {
    fn url(&self) -> String {
        Sim::url(self)
    }
    fn is_real(&self) -> bool {
        false
    }
    fn env(&self) -> Vec<(String, String)> {
        super::env_for(&Sim::url(self))
    }
    fn add_service(&self, spec: ServiceSpec) {
        Sim::add_service(self, spec)
    }
    fn set_service_tags(&self, node: &str, id: &str, tags: &[&str]) {
        Sim::set_service_tags(self, node, id, tags)
    }
    fn remove_service(&self, node: &str, id: &str) {
        Sim::remove_service(self, node, id)
    }
    fn put_config(&self, entry: Value, cas: Option<u64>) -> Result<bool, (u16, String)> {
        Sim::put_config(self, entry, cas)
    }
    fn config(&self, kind: &str, name: &str) -> Option<Value> {
        Sim::config(self, kind, name)
    }
    fn agent_service(&self, id: &str) -> Option<Value> {
        Sim::agent_service(self, id)
    }
    fn agent_checks(&self) -> Value {
        Sim::agent_checks(self)
    }
    fn indexes(&self) -> (u64, u64) {
        Sim::indexes(self)
    }
    fn writes(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|r| r.method != "GET")
            .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
            .collect()
    }
    fn request_count(&self) -> usize {
        self.requests().len()
    }
    fn race_next_config_write(&self, entry: Value) {
        Sim::race_next_config_write(self, entry).expect("race entry valid");
    }
    fn config_put_results(&self) -> Vec<bool> {
        // `true` is 4 bytes, `false` 5.
        super::config_put_sizes(self)
            .into_iter()
            .map(|size| size == 4)
            .collect()
    }
}

impl Consul for Agent {
    fn url(&self) -> String {
        match self.proxy.lock().expect("proxy").as_ref() {
            Some(proxy) => format!("http://127.0.0.1:{}", proxy.port),
            None => format!("http://127.0.0.1:{}", self.ports.http),
        }
    }
    fn is_real(&self) -> bool {
        true
    }
    fn env(&self) -> Vec<(String, String)> {
        let mut env = super::env_for(&Consul::url(self));
        if let Some(token) = self.daemon_token.lock().expect("token").clone() {
            env.push(("CONSULTOKEN".to_string(), token));
        }
        env
    }
    fn add_service(&self, spec: ServiceSpec) {
        self.register(&spec);
        self.specs
            .lock()
            .expect("specs")
            .insert((spec.node.clone(), spec.id.clone()), spec);
    }
    fn set_service_tags(&self, node: &str, id: &str, tags: &[&str]) {
        let spec = {
            let mut specs = self.specs.lock().expect("specs");
            let spec = specs
                .get_mut(&(node.to_string(), id.to_string()))
                .unwrap_or_else(|| panic!("no service {id} on {node}"));
            spec.tags = tags.iter().map(|t| t.to_string()).collect();
            spec.clone()
        };
        self.register(&spec);
    }
    fn remove_service(&self, node: &str, id: &str) {
        self.specs
            .lock()
            .expect("specs")
            .remove(&(node.to_string(), id.to_string()));
        let body = json!({"Node": node, "ServiceID": id});
        let reply = self.call("PUT", "/v1/catalog/deregister", Some(&body));
        assert_eq!(reply.status, 200, "catalog deregister {id}: {}", reply.body);
    }
    fn put_config(&self, entry: Value, cas: Option<u64>) -> Result<bool, (u16, String)> {
        let path = match cas {
            Some(cas) => format!("/v1/config?cas={cas}"),
            None => "/v1/config".to_string(),
        };
        let reply = self.call("PUT", &path, Some(&entry));
        match (reply.status, reply.body.trim()) {
            (200, "true") => Ok(true),
            (200, "false") => Ok(false),
            (status, body) => Err((status, body.to_string())),
        }
    }
    fn config(&self, kind: &str, name: &str) -> Option<Value> {
        let reply = self.call("GET", &format!("/v1/config/{kind}/{name}"), None);
        (reply.status == 200).then(|| reply.json())
    }
    fn agent_service(&self, id: &str) -> Option<Value> {
        let reply = self.call("GET", &format!("/v1/agent/service/{id}"), None);
        (reply.status == 200).then(|| reply.json())
    }
    fn agent_checks(&self) -> Value {
        self.call("GET", "/v1/agent/checks", None).json()
    }
    fn indexes(&self) -> (u64, u64) {
        let services = self.call("GET", "/v1/catalog/services", None);
        let entries = self.call("GET", "/v1/config/ingress-gateway", None);
        (
            services.index.expect("catalog index"),
            entries.index.expect("config index"),
        )
    }
    fn writes(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|(method, _)| method != "GET")
            .map(|(method, url)| format!("{method} {url}"))
            .collect()
    }
    fn request_count(&self) -> usize {
        self.requests().len()
    }
    fn race_next_config_write(&self, entry: Value) {
        Agent::race_next_config_write(self, entry)
    }
    fn config_put_results(&self) -> Vec<bool> {
        self.proxied_config_puts()
            .iter()
            .map(|reply| reply == "true")
            .collect()
    }
}

/// The gateway's ingress-gateway entry at `consul`.
pub fn gateway_entry(consul: &impl Consul) -> Option<Value> {
    consul.config("ingress-gateway", GATEWAY)
}

/// Waits on the real agent for `what`; a shorthand used by the real-only tests.
pub fn eventually(what: &str, condition: impl FnMut() -> bool) {
    super::wait_until(EVENTUALLY, what, condition)
}

/// A proxy between the daemon and the agent that plays a concurrent writer: on the
/// daemon's `PUT /v1/config` while a race entry is pending, it first writes that entry
/// to the agent itself. Everything else passes unchanged, one upstream connection per
/// daemon connection; responses are relayed by their framing (Content-Length or
/// chunked), so keep-alive and blocking queries work as without it.
struct RacingProxy {
    port: u16,
    races: Arc<Mutex<Vec<Value>>>,
    put_replies: Arc<Mutex<Vec<String>>>,
}

impl RacingProxy {
    fn start(upstream: u16) -> RacingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let races: Arc<Mutex<Vec<Value>>> = Arc::default();
        let put_replies: Arc<Mutex<Vec<String>>> = Arc::default();
        let (r, p) = (races.clone(), put_replies.clone());
        // The threads end with the test process; each serves one daemon connection.
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let (r, p) = (r.clone(), p.clone());
                std::thread::spawn(move || relay(client, upstream, &r, &p));
            }
        });
        RacingProxy {
            port,
            races,
            put_replies,
        }
    }
}

/// Head (through the blank line) of one HTTP/1.1 message.
fn read_head(reader: &mut impl BufRead) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            return Some(head);
        }
    }
}

/// The body after `head`, raw (chunk framing included) and decoded.
fn read_body(reader: &mut impl BufRead, head: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    if header(head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut raw = Vec::new();
        let mut decoded = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            raw.extend_from_slice(line.as_bytes());
            let size = usize::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            raw.extend_from_slice(&chunk);
            decoded.extend_from_slice(&chunk[..size]);
            if size == 0 {
                return Some((raw, decoded));
            }
        }
    }
    let length = header(head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((body.clone(), body))
}

fn relay(
    client: TcpStream,
    upstream: u16,
    races: &Mutex<Vec<Value>>,
    put_replies: &Mutex<Vec<String>>,
) {
    let Ok(mut writer) = client.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(client);
    let Ok(agent) = TcpStream::connect(("127.0.0.1", upstream)) else {
        let _ = writer.shutdown(Shutdown::Both);
        return;
    };
    let Ok(mut agent_writer) = agent.try_clone() else {
        return;
    };
    let mut agent_reader = BufReader::new(agent);
    while let Some(head) = read_head(&mut reader) {
        let Some((body, _)) = read_body(&mut reader, &head) else {
            return;
        };
        let config_put = head.starts_with("PUT /v1/config?") || head.starts_with("PUT /v1/config ");
        if config_put {
            let race = races.lock().expect("races").pop();
            if let Some(entry) = race {
                let reply = call(upstream, "PUT", "/v1/config", Some(&entry), None);
                assert_eq!(reply.body.trim(), "true", "the racing write: {reply:?}");
            }
        }
        if agent_writer.write_all(head.as_bytes()).is_err()
            || agent_writer.write_all(&body).is_err()
        {
            return;
        }
        let Some(response_head) = read_head(&mut agent_reader) else {
            return;
        };
        let Some((raw, decoded)) = read_body(&mut agent_reader, &response_head) else {
            return;
        };
        if config_put {
            put_replies
                .lock()
                .expect("replies")
                .push(String::from_utf8_lossy(&decoded).trim().to_string());
        }
        if writer.write_all(response_head.as_bytes()).is_err() || writer.write_all(&raw).is_err() {
            return;
        }
    }
}
