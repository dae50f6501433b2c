//! Test harness: runs the real daemon binary against the Consul simulator.
//!
//! Every wait is on a condition with a deadline; the daemon process is killed when its
//! guard drops, whatever path the test takes out.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod consul;
pub mod proxy;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use consul_sim::{ServiceSpec, Sim, SimOptions};
use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_ingress-service-monitor");
pub const GATEWAY: &str = "edge";
pub const PREFIX: &str = "gw";
pub const INGRESS_ID: &str = "edge-ingress";

/// Default bound for "eventually" conditions. Generous: CI machines are slow, and a
/// passing condition returns as soon as it holds.
pub const EVENTUALLY: Duration = Duration::from_secs(20);

/// Polls `condition` until it holds or `timeout` passes; panics naming `what`.
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A simulator where `proxy-defaults/global` makes every service http, so tests that do
/// not care about protocols need no service-defaults.
pub fn sim_http() -> Sim {
    let sim = Sim::start(SimOptions::default());
    sim.put_config(
        json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}}),
        None,
    )
    .expect("proxy-defaults accepted");
    sim
}

pub fn service(name: &str, tags: &[&str]) -> ServiceSpec {
    ServiceSpec::new(name, tags)
}

/// The variables every test needs, pointing at `consul` (the simulator or a real agent,
/// with the agent's token when the test gave the daemon one).
pub fn base_env(consul: &impl consul::Consul) -> Vec<(String, String)> {
    consul.env()
}

/// The variables every test needs, pointing at `url`.
pub fn env_for(url: &str) -> Vec<(String, String)> {
    [
        ("TAGINGRESSSERVICE", PREFIX.to_string()),
        ("SERVICENAMEINGRESSGATEWAY", GATEWAY.to_string()),
        ("CONSULHTTPURL", url.to_string()),
        ("HEALTHPORT", "0".to_string()),
        ("RUST_LOG", "info,ingress_service_monitor=debug".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

pub fn with(mut env: Vec<(String, String)>, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    for (key, value) in extra {
        env.retain(|(k, _)| k != key);
        env.push((key.to_string(), value.to_string()));
    }
    env
}

/// The daemon process. Killed on drop.
pub struct Daemon {
    child: Child,
    output: Arc<Mutex<String>>,
    status: Option<ExitStatus>,
    /// The threads copying stdout and stderr into `output`; joined once the process has
    /// exited, so everything it printed is in `output` when `wait_exit` returns.
    readers: Vec<JoinHandle<()>>,
}

impl Daemon {
    /// Starts the binary with exactly `env` (nothing inherited) and `args`.
    pub fn start_with_args(env: &[(String, String)], args: &[&str]) -> Daemon {
        let mut child = Command::new(BIN)
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("daemon binary starts");
        let output = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        let readers = vec![
            collect(stdout, output.clone()),
            collect(stderr, output.clone()),
        ];
        Daemon {
            child,
            output,
            status: None,
            readers,
        }
    }

    pub fn start(env: &[(String, String)]) -> Daemon {
        Daemon::start_with_args(env, &[])
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process printed so far (stdout and stderr interleaved by line).
    pub fn output(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    pub fn wait_output(&self, timeout: Duration, needle: &str) {
        let deadline = Instant::now() + timeout;
        while !self.output().contains(needle) {
            if Instant::now() >= deadline {
                panic!("timed out after {timeout:?} waiting for {needle:?} in the daemon's output:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The port /health was bound to (the daemon logs it at start).
    pub fn health_port(&self) -> u16 {
        let marker = "addr=0.0.0.0:";
        self.wait_output(EVENTUALLY, marker);
        let out = self.output();
        let start = out.find(marker).map(|i| i + marker.len()).unwrap_or(0);
        out[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .expect("health port in the log")
    }

    /// `GET /health` -> (status, body).
    pub fn health(&self) -> (u16, String) {
        http_get(self.health_port(), "/health")
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.status = Some(status);
                // The pipes close with the process (it starts no children), so the
                // readers end promptly after draining what is left.
                for reader in self.readers.drain(..) {
                    reader.join().expect("output reader");
                }
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "daemon still running after {timeout:?}; output:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill(); // may already have exited; either way it is gone after wait
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- daemon output ---\n{}--- end ---", self.output());
        }
    }
}

fn collect(stream: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if let Ok(mut out) = into.lock() {
                out.push_str(&line);
                out.push('\n');
            }
        }
    })
}

/// A minimal HTTP/1.1 GET to 127.0.0.1:port -> (status, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    http_request(port, "GET", path)
}

pub fn http_request(port: u16, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response); // a reset after the body is fine
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The gateway's config entry, if any.
pub fn entry(consul: &impl consul::Consul) -> Option<Value> {
    consul.config("ingress-gateway", GATEWAY)
}

/// Listener on `port` of the entry.
pub fn listener(entry: &Value, port: u16) -> Option<Value> {
    entry["Listeners"]
        .as_array()?
        .iter()
        .find(|l| l["Port"] == port)
        .cloned()
}

/// Service name -> hosts, on the listener at `port` (empty when absent).
pub fn routes(consul: &impl consul::Consul, port: u16) -> Vec<(String, Vec<String>)> {
    let Some(entry) = entry(consul) else {
        return Vec::new();
    };
    let Some(listener) = listener(&entry, port) else {
        return Vec::new();
    };
    let mut routes: Vec<(String, Vec<String>)> = listener["Services"]
        .as_array()
        .map(|services| {
            services
                .iter()
                .map(|s| {
                    let mut hosts: Vec<String> = s["Hosts"]
                        .as_array()
                        .map(|h| {
                            h.iter()
                                .filter_map(|x| x.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default();
                    hosts.sort();
                    (s["Name"].as_str().unwrap_or_default().to_string(), hosts)
                })
                .collect()
        })
        .unwrap_or_default();
    routes.sort();
    routes
}

pub fn route(name: &str, hosts: &[&str]) -> (String, Vec<String>) {
    (
        name.to_string(),
        hosts.iter().map(|h| h.to_string()).collect(),
    )
}

/// Tags of the ingress service at the agent, sorted.
pub fn ingress_tags(consul: &impl consul::Consul) -> Option<Vec<String>> {
    let service = consul.agent_service(INGRESS_ID)?;
    let mut tags: Vec<String> = service["Tags"]
        .as_array()?
        .iter()
        .filter_map(|t| t.as_str().map(String::from))
        .collect();
    tags.sort();
    Some(tags)
}

pub fn strings(items: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// Requests that wrote something (any method but GET).
/// Response body sizes of the `PUT /v1/config` requests so far, in order: `true` is 4
/// bytes, `false` (a CAS miss) 5.
pub fn config_put_sizes(sim: &Sim) -> Vec<usize> {
    sim.requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.path == "/v1/config")
        .map(|r| r.response_bytes)
        .collect()
}

/// Whether a blocking catalog watch that arrived after request `after` (an id of
/// [`Sim::in_flight`]) is parked in its wait.
pub fn catalog_watch_parked(sim: &Sim, after: u64) -> bool {
    sim.in_flight().iter().any(|(id, method, path, query)| {
        *id > after && method == "GET" && path == "/v1/catalog/services" && query.contains("index=")
    })
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS:`, `VmHWM:`).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

pub fn write_requests(sim: &Sim) -> usize {
    sim.requests().iter().filter(|r| r.method != "GET").count()
}
