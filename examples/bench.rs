//! Benchmark: the release daemon, as a separate process, against the Consul simulator.
//!
//! ```text
//! cargo build --release            # or the musl build, see --binary
//! cargo run --release --example bench -- --services 1000
//! cargo run --release --example bench                 # N = 10, 1000, 10000 (same as --all)
//! cargo run --release --example bench -- --services 1000 --idle-secs 10 --changes 50
//! ```
//!
//! For each catalog size N the simulator is loaded with a realistic mix (20% of the
//! services carry 6-10 tags of which 4-8 have the gateway prefix, one of them a
//! `...rule=Host(`sI.example.com`)`; the rest are untagged or carry other tags, some
//! with another gateway's prefix), service-defaults Protocol=http for every tagged
//! service (and tcp/grpc ones for a few others). The daemon binary is started against
//! it and measured:
//!
//! - first convergence: process start until the entry holds every expected host and the
//!   ingress service carries every expected tag (also from the daemon's first request);
//! - reaction latency over `--changes` host edits of tagged services: edit until both
//!   writes are visible in the simulator (polled every 200 µs on the counter of
//!   state-changing writes), and from the simulator's log until its register PUT arrived;
//! - requests, response bytes and writes per change, by endpoint;
//! - a burst: `--burst` host edits spread evenly over `--burst-ms` (50 within 1 s by
//!   default), counting the entry writes the daemon makes for the whole burst and
//!   checking that the final state is exact (the entry holds exactly the final
//!   catalog's hosts, the ingress service exactly its tags);
//! - requests and writes during `--idle-secs` of idle; blocking waits are clamped to
//!   `IDLE_MAX_WAIT` by the simulator so watches expire and are re-issued in the window;
//! - open connections while idle, peak RSS (VmHWM) and CPU time (utime + stime).
//!
//! `--gateway api` runs the daemon with `CONSULGATEWAY=api`: the state checks read the
//! `http-route` entries instead (one per tagged service, `edge-<service>`, whose
//! `Hostnames` are the service's host), and the entry writes counted are the route
//! writes (plus any to the `api-gateway` entry). `--intentions` runs it with
//! `SETINTENTIONS=true`: convergence and the burst's final state also need every
//! exposed service's `service-intentions` to hold the gateway's `allow` source. Either
//! implies `--passes`: the reconcile passes (`ism_reconciles_total` from `/metrics`)
//! per phase, to show work that writes nothing.
//!
//! Output: progress on stderr; a table and one `BENCH_JSON {...}` line per N on stdout.

// The result's `json!` object has more keys than the default macro recursion allows.
#![recursion_limit = "256"]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

use consul_sim::{RequestRecord, Sim, SimOptions};
use serde_json::{json, Value};

const GATEWAY: &str = "edge";
const INGRESS_ID: &str = "edge-ingress";
const HTTP_PORT: u64 = 9997;
const BINARY_NAME: &str = "ingress-service-monitor";
const MUSL_TRIPLE: &str = "x86_64-unknown-linux-musl";
/// The simulator's `max_query_time` for the whole run: the daemon asks for 5 min, so
/// without a clamp no blocking query would return during the idle window.
const IDLE_MAX_WAIT: Duration = Duration::from_secs(10);
const CATALOG_PATH: &str = "/v1/catalog/services?filter=ServiceKind%20%3D%3D%20%22%22";
const POLL: Duration = Duration::from_micros(200);

struct Args {
    sizes: Vec<usize>,
    idle_secs: u64,
    changes: usize,
    gap_ms: u64,
    burst: usize,
    burst_ms: u64,
    binary: Option<PathBuf>,
    mode: Mode,
}

/// What the daemon is asked to drive: the gateway kind and whether it writes intentions.
#[derive(Debug, Clone, Copy, Default)]
struct Mode {
    /// `CONSULGATEWAY=api` (else the default, `ingress`).
    api: bool,
    /// `SETINTENTIONS=true`.
    intentions: bool,
    /// Scrape `/metrics` for reconcile passes per phase (implied by the other two).
    passes: bool,
    /// Diagnosis: the simulator's API-gateway controller never runs (no Status, no
    /// status-driven index bumps), to tell its share of the cost from the daemon's.
    controller_paused: bool,
}

impl Mode {
    /// The benchmark as it always ran: its output stays the same.
    fn is_default(self) -> bool {
        !self.api && !self.intentions && !self.passes && !self.controller_paused
    }

    fn gateway(self) -> &'static str {
        if self.api {
            "api"
        } else {
            "ingress"
        }
    }

    /// The daemon's environment for this mode, beyond the common variables.
    fn env(self) -> Vec<(&'static str, &'static str)> {
        let mut env = Vec::new();
        if self.api {
            env.push(("CONSULGATEWAY", "api"));
        }
        if self.intentions {
            env.push(("SETINTENTIONS", "true"));
        }
        env
    }
}

const USAGE: &str = "usage: bench [--services N[,N...]] [--all] [--idle-secs S] [--changes C] \
[--gap-ms MS] [--burst B] [--burst-ms MS] [--binary PATH] [--gateway ingress|api] [--intentions] \
[--passes] [--pause-gateway-controller]
  --services N   catalog size (repeatable or comma-separated); default --all = 10,1000,10000
  --idle-secs S  idle window after convergence (default 60)
  --changes C    host edits measured for reaction latency (default 50, at least 1)
  --gap-ms MS    quiet time after each edit has converged before the next (default 500)
  --burst B      host edits in the burst, 0 for none (default 50)
  --burst-ms MS  the burst's edits are spread evenly over this window (default 1000)
  --binary PATH  daemon binary (default: the musl release build if present, else target/release)
  --gateway G    CONSULGATEWAY for the daemon: ingress (default) or api (the checks read http-routes)
  --intentions   SETINTENTIONS=true (the checks also read each exposed service's service-intentions)
  --passes       count reconcile passes per phase from /metrics (implied by --gateway api, --intentions)
  --pause-gateway-controller
                 diagnosis: the simulator writes no Status on api-gateway and http-routes";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        sizes: Vec::new(),
        idle_secs: 60,
        changes: 50,
        gap_ms: 500,
        burst: 50,
        burst_ms: 1000,
        binary: None,
        mode: Mode::default(),
    };
    let mut all = false;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--all" => all = true,
            "--services" => {
                for part in value("--services")?.split(',') {
                    let n: usize = part
                        .trim()
                        .parse()
                        .map_err(|_| format!("--services: {part:?} is not a number"))?;
                    if n == 0 {
                        return Err("--services: N must be at least 1".into());
                    }
                    args.sizes.push(n);
                }
            }
            "--idle-secs" => {
                args.idle_secs = value("--idle-secs")?
                    .parse()
                    .map_err(|_| "--idle-secs: not a number of seconds")?;
            }
            "--changes" => {
                args.changes = value("--changes")?
                    .parse()
                    .map_err(|_| "--changes: not a number")?;
                if args.changes == 0 {
                    return Err("--changes must be at least 1".into());
                }
            }
            "--gap-ms" => {
                args.gap_ms = value("--gap-ms")?
                    .parse()
                    .map_err(|_| "--gap-ms: not a number")?;
            }
            "--burst" => {
                args.burst = value("--burst")?
                    .parse()
                    .map_err(|_| "--burst: not a number")?;
            }
            "--burst-ms" => {
                args.burst_ms = value("--burst-ms")?
                    .parse()
                    .map_err(|_| "--burst-ms: not a number")?;
            }
            "--binary" => args.binary = Some(PathBuf::from(value("--binary")?)),
            "--gateway" => match value("--gateway")?.as_str() {
                "ingress" => args.mode.api = false,
                "api" => args.mode.api = true,
                other => return Err(format!("--gateway: {other:?} is neither ingress nor api")),
            },
            "--intentions" => args.mode.intentions = true,
            "--passes" => args.mode.passes = true,
            "--pause-gateway-controller" => args.mode.controller_paused = true,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if all || args.sizes.is_empty() {
        args.sizes = vec![10, 1000, 10_000];
    }
    args.mode.passes |= args.mode.api || args.mode.intentions || args.mode.controller_paused;
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("bench: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let binary = match find_binary(args.binary.as_deref()) {
        Ok(binary) => binary,
        Err(message) => {
            eprintln!("bench: {message}");
            return ExitCode::FAILURE;
        }
    };
    let machine = Machine::read();
    eprintln!(
        "bench: daemon binary {} ({}, {} bytes); {} x {}",
        binary.path.display(),
        binary.kind,
        binary.size,
        machine.nproc,
        machine.cpu
    );
    let mut results = Vec::new();
    for &n in &args.sizes {
        eprintln!("bench: N = {n}");
        match run_one(n, &binary, &args) {
            Ok(result) => results.push(result),
            Err(message) => {
                eprintln!("bench: N = {n}: {message}");
                return ExitCode::FAILURE;
            }
        }
    }
    print_table(&results, &binary, &machine, &args);
    for result in &results {
        println!(
            "BENCH_JSON {}",
            result.to_json(&binary, &machine, &args, git_commit())
        );
    }
    ExitCode::SUCCESS
}

// ------------------------------------------------------------------ the binary

struct Binary {
    path: PathBuf,
    /// "musl" (static, stripped release build), "gnu" (target/release) or "custom".
    kind: &'static str,
    size: u64,
}

fn find_binary(explicit: Option<&Path>) -> Result<Binary, String> {
    let size_of = |path: &Path| std::fs::metadata(path).map(|m| m.len()).ok();
    if let Some(path) = explicit {
        let size = size_of(path).ok_or(format!(
            "--binary {}: no such file (build it first)",
            path.display()
        ))?;
        let kind = if path.to_string_lossy().contains(MUSL_TRIPLE) {
            "musl"
        } else {
            "custom"
        };
        return Ok(Binary {
            path: path.to_path_buf(),
            kind,
            size,
        });
    }
    // Target directories to look in: the one this example was built into (it honours
    // CARGO_TARGET_DIR), then the repository's own.
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        // <target>/release/examples/bench
        if let Some(target) = exe.parent().and_then(Path::parent).and_then(Path::parent) {
            dirs.push(target.to_path_buf());
        }
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let mut candidates: Vec<(PathBuf, &'static str)> = Vec::new();
    for dir in &dirs {
        candidates.push((
            dir.join(MUSL_TRIPLE).join("release").join(BINARY_NAME),
            "musl",
        ));
    }
    for dir in &dirs {
        candidates.push((dir.join("release").join(BINARY_NAME), "gnu"));
    }
    for (path, kind) in &candidates {
        if let Some(size) = size_of(path) {
            warn_if_stale(path);
            return Ok(Binary {
                path: path.clone(),
                kind,
                size,
            });
        }
    }
    let looked: Vec<String> = candidates
        .iter()
        .map(|(p, _)| format!("  {}", p.display()))
        .collect();
    Err(format!(
        "no daemon binary found; build it first with `cargo build --release` (or \
         `cargo build --release --target {MUSL_TRIPLE}`), or pass --binary PATH. Looked in:\n{}",
        looked.join("\n")
    ))
}

/// A binary older than the daemon's sources measures old code: say so.
fn warn_if_stale(binary: &Path) {
    fn newest(dir: &Path, newest_seen: &mut Option<SystemTime>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                newest(&path, newest_seen);
            } else if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                if newest_seen.map_or(true, |n| modified > n) {
                    *newest_seen = Some(modified);
                }
            }
        }
    }
    let mut sources = None;
    newest(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut sources,
    );
    let built = std::fs::metadata(binary).and_then(|m| m.modified()).ok();
    if let (Some(sources), Some(built)) = (sources, built) {
        if sources > built {
            eprintln!(
                "bench: warning: {} is older than the newest file in src/; rebuild it to measure the current code",
                binary.display()
            );
        }
    }
}

struct Machine {
    nproc: usize,
    cpu: String,
    clock_ticks: u64,
}

impl Machine {
    fn read() -> Machine {
        let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let clock_ticks = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100);
        Machine {
            nproc,
            cpu,
            clock_ticks,
        }
    }
}

fn git_commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

// ------------------------------------------------------------------ the workload

#[path = "common/workload.rs"]
mod workload;
use workload::{Tagged, Workload, PREFIX};

impl Tagged {
    /// The tags as the ingress service carries them (prefix and its `-` stripped).
    fn stripped(&self) -> Vec<String> {
        let prefix = format!("{PREFIX}-");
        self.tags()
            .iter()
            .filter_map(|t| t.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }
}

impl Workload {
    fn tag_count(&self) -> usize {
        self.specs.iter().map(|s| s.tags.len()).sum()
    }

    /// Expected `service -> hosts` on the http listener.
    fn expected_routes(&self) -> BTreeMap<String, Vec<String>> {
        self.tagged
            .iter()
            .map(|t| (t.name.clone(), vec![t.host.clone()]))
            .collect()
    }

    /// Expected tags of the ingress service.
    fn expected_tags(&self) -> BTreeSet<String> {
        let mut tags: BTreeSet<String> = self.tagged.iter().flat_map(Tagged::stripped).collect();
        tags.insert("traefik.enable=true".into());
        tags
    }
}

// ------------------------------------------------------------------ observation helpers

/// `service -> sorted hosts` the gateway routes: the http listener of the
/// `ingress-gateway` entry, or in api mode the daemon's `http-route` entries.
fn routes(sim: &Sim, mode: Mode) -> BTreeMap<String, Vec<String>> {
    if mode.api {
        return api_routes(sim);
    }
    let Some(entry) = sim.config("ingress-gateway", GATEWAY) else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    let listeners = entry["Listeners"].as_array().cloned().unwrap_or_default();
    for listener in listeners.iter().filter(|l| l["Port"] == HTTP_PORT) {
        for service in listener["Services"].as_array().into_iter().flatten() {
            let mut hosts: Vec<String> = service["Hosts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|h| h.as_str().map(str::to_string))
                .collect();
            hosts.sort();
            if let Some(name) = service["Name"].as_str() {
                out.insert(name.to_string(), hosts);
            }
        }
    }
    out
}

/// Our routes as `service -> sorted Hostnames`: a route `edge-<service>` carrying our
/// Meta for this gateway. A route whose target is not its service shows an extra
/// `<target ...>` host, so it never matches what is expected.
fn api_routes(sim: &Sim) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let prefix = format!("{GATEWAY}-");
    for name in sim.config_names("http-route") {
        let Some(route) = sim.config("http-route", &name) else {
            continue;
        };
        if route["Meta"]["ingress-service-monitor-gateway"] != GATEWAY {
            continue;
        }
        let service = name.strip_prefix(&prefix).unwrap_or(&name).to_string();
        let mut hosts = hostnames(&route);
        let target = route["Rules"][0]["Services"][0]["Name"].as_str();
        if target != Some(service.as_str()) {
            hosts.push(format!("<target {target:?}>"));
        }
        out.insert(service, hosts);
    }
    out
}

fn hostnames(route: &Value) -> Vec<String> {
    let mut hosts: Vec<String> = route["Hostnames"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h.as_str().map(str::to_string))
        .collect();
    hosts.sort();
    hosts
}

/// The hosts the gateway routes to one service (None: not routed).
fn service_hosts(sim: &Sim, mode: Mode, service: &str) -> Option<Vec<String>> {
    if !mode.api {
        return routes(sim, mode).remove(service);
    }
    let route = sim.config("http-route", &format!("{GATEWAY}-{service}"))?;
    let target = route["Rules"][0]["Services"][0]["Name"].as_str();
    (target == Some(service)).then(|| hostnames(&route))
}

/// With `--intentions`: how many of `services` have no `service-intentions` holding an
/// `allow` from the gateway (0 otherwise).
fn intentions_missing<'a>(
    sim: &Sim,
    mode: Mode,
    services: impl IntoIterator<Item = &'a String>,
) -> usize {
    if !mode.intentions {
        return 0;
    }
    services
        .into_iter()
        .filter(|service| {
            let entry = sim.config("service-intentions", service);
            let allowed = entry.as_ref().is_some_and(|entry| {
                entry["Sources"].as_array().into_iter().flatten().any(|s| {
                    s["Name"] == GATEWAY
                        && s["Action"] == "allow"
                        && s["Peer"].as_str().unwrap_or("").is_empty()
                })
            });
            !allowed
        })
        .count()
}

/// Writes that changed the gateway's config: the `ingress-gateway` entry, or in api
/// mode the `api-gateway` entry and every `http-route`.
fn gateway_entry_writes(sim: &Sim, mode: Mode) -> u64 {
    if !mode.api {
        return sim.entry_writes("ingress-gateway", GATEWAY);
    }
    sim.config_names("http-route")
        .iter()
        .map(|name| sim.entry_writes("http-route", name))
        .sum::<u64>()
        + sim.entry_writes("api-gateway", GATEWAY)
}

fn ingress_tags(sim: &Sim) -> Option<BTreeSet<String>> {
    let service = sim.agent_service(INGRESS_ID)?;
    Some(
        service["Tags"]
            .as_array()?
            .iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect(),
    )
}

#[derive(Debug, Clone, Copy, Default)]
struct ProcStats {
    /// utime + stime.
    cpu: Duration,
    hwm_kib: u64,
    rss_kib: u64,
}

fn proc_stats(pid: u32, clock_ticks: u64) -> Option<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(ProcStats {
        cpu: Duration::from_secs_f64((utime + stime) as f64 / clock_ticks.max(1) as f64),
        hwm_kib: kib("VmHWM:")?,
        rss_kib: kib("VmRSS:")?,
    })
}

fn endpoint(record: &RequestRecord) -> &'static str {
    let path = record.path.as_str();
    match (record.method.as_str(), path) {
        ("GET", "/v1/catalog/services") => "GET catalog",
        ("GET", "/v1/config/service-defaults") => "GET service-defaults",
        ("GET", "/v1/config/proxy-defaults/global") => "GET proxy-defaults",
        ("GET", p) if p == format!("/v1/config/ingress-gateway/{GATEWAY}") => "GET entry",
        ("GET", p) if p == format!("/v1/config/api-gateway/{GATEWAY}") => "GET entry",
        ("GET", "/v1/config/http-route") => "GET routes",
        ("GET", "/v1/config/service-intentions") => "GET intentions",
        ("GET", p) if p == format!("/v1/agent/service/{INGRESS_ID}") => "GET agent service",
        ("PUT", "/v1/config") => "PUT entry",
        ("PUT", "/v1/agent/service/register") => "PUT register",
        _ => "other",
    }
}

#[derive(Debug, Clone, Default)]
struct Traffic {
    requests: usize,
    bytes: usize,
    by_endpoint: BTreeMap<&'static str, usize>,
    bytes_by_endpoint: BTreeMap<&'static str, usize>,
}

fn traffic(records: &[RequestRecord]) -> Traffic {
    let mut t = Traffic::default();
    for record in records {
        t.requests += 1;
        t.bytes += record.response_bytes;
        *t.by_endpoint.entry(endpoint(record)).or_default() += 1;
        *t.bytes_by_endpoint.entry(endpoint(record)).or_default() += record.response_bytes;
    }
    t
}

/// The daemon process, killed on drop.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// The port `/health` and `/metrics` were bound to (`HEALTHPORT=0`: the daemon logs it).
    fn health_port(&self) -> Result<u16, String> {
        let marker = "addr=0.0.0.0:";
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text
            .find(marker)
            .map(|i| i + marker.len())
            .ok_or_else(|| format!("no {marker:?} in the daemon's log:\n{}", self.log_tail()))?;
        text[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .map_err(|e| format!("the health port in the daemon's log: {e}"))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "the daemon exited ({status}); its log:\n{}",
                self.log_tail()
            )),
            Err(e) => Err(format!("cannot watch the daemon: {e}")),
        }
    }

    /// SIGTERM, as an orchestrator stops it; killed when it does not exit within 6 s.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(6);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill(); // it is gone either way after wait
            let _ = self.child.wait();
        }
    }
}

/// A `GET` over a fresh connection, as a probe of the simulator's own latency.
fn raw_get(sim: &Sim, path: &str) -> Result<(Duration, usize), String> {
    use std::io::{Read, Write};
    let start = Instant::now();
    let mut stream = std::net::TcpStream::connect(sim.addr()).map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| e.to_string())?;
    Ok((start.elapsed(), response.len()))
}

/// `ism_reconciles_total`, both results, from the daemon's `/metrics`.
fn reconcile_passes(port: u16) -> Result<u64, String> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response); // a reset after the body is fine
    let passes: Vec<u64> = response
        .lines()
        .filter(|l| l.starts_with("ism_reconciles_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    if passes.is_empty() {
        return Err("no ism_reconciles_total".into());
    }
    Ok(passes.iter().sum())
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ------------------------------------------------------------------ one run

#[derive(Debug, Default)]
struct RunResult {
    n: usize,
    tagged: usize,
    catalog_tags: usize,
    service_defaults: usize,
    setup_ms: f64,
    sim_catalog_get_ms: f64,
    sim_catalog_bytes: usize,
    sim_entry_put_ms: f64,
    /// Spawn -> daemon's first request at the simulator.
    first_request_ms: f64,
    /// Spawn -> converged (both writes visible, content checked).
    converge_ms: f64,
    /// First request -> converged.
    converge_after_agent_ms: f64,
    /// First request -> first entry PUT / register PUT arrived (simulator log).
    entry_put_after_agent_ms: f64,
    register_put_after_agent_ms: f64,
    converge_requests: usize,
    converge_bytes: usize,
    converge_writes: u64,
    converge_by_endpoint: BTreeMap<&'static str, usize>,
    cpu_converge_ms: f64,
    rss_converged_kib: u64,
    idle_secs: u64,
    idle: Traffic,
    idle_writes: u64,
    idle_cpu_ms: f64,
    conns_idle_min: usize,
    conns_idle_max: usize,
    changes: usize,
    latency_poll: Vec<f64>,
    latency_log: Vec<f64>,
    change_traffic: Traffic,
    change_writes: u64,
    change_writes_max: u64,
    change_cpu_ms: f64,
    /// The burst: edits made, first to last edit, entry writes that changed the entry,
    /// `PUT /v1/config` requests (CAS misses and identical writes included), register
    /// writes, every request, last edit -> exact final state, CPU for the burst.
    burst: usize,
    burst_span_ms: f64,
    burst_entry_writes: u64,
    burst_entry_puts: usize,
    burst_register_puts: usize,
    burst_requests: usize,
    burst_settle_ms: f64,
    burst_cpu_ms: f64,
    hwm_kib: u64,
    rss_end_kib: u64,
    cpu_total_ms: f64,
    exit_status: String,
    mode: Mode,
    /// With `--passes`: reconcile passes (`ism_reconciles_total`) from start to one
    /// second after convergence, during the idle window, the host edits and the burst.
    passes_converge: u64,
    passes_idle: u64,
    passes_changes: u64,
    passes_burst: u64,
    /// With `--passes`: VmHWM one second after convergence, after the idle window and
    /// after the host edits (the last is `hwm_kib`, after the burst).
    hwm_phases_kib: [u64; 3],
    /// Api mode: Status (and bound-entry) writes of the simulator's gateway controller
    /// up to one second after convergence, during the host edits and the burst.
    status_writes: [u64; 3],
}

fn run_one(n: usize, binary: &Binary, args: &Args) -> Result<RunResult, String> {
    let mut r = RunResult {
        n,
        idle_secs: args.idle_secs,
        changes: args.changes,
        burst: args.burst,
        mode: args.mode,
        ..RunResult::default()
    };
    let mode = args.mode;
    let machine_ticks = Machine::read().clock_ticks;
    let setup = Instant::now();
    let sim = Sim::start(SimOptions {
        max_wait: IDLE_MAX_WAIT,
        ..SimOptions::default()
    });
    if mode.controller_paused {
        sim.pause_gateway_controller(true);
    }
    let mut workload = Workload::new(n);
    sim.put_config(
        json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"local_connect_timeout_ms": 5000}}),
        None,
    )
    .map_err(|e| format!("proxy-defaults refused: {e:?}"))?;
    for (name, protocol) in &workload.defaults {
        sim.put_config(
            json!({"Kind": "service-defaults", "Name": name, "Protocol": protocol}),
            None,
        )
        .map_err(|e| format!("service-defaults {name} refused: {e:?}"))?;
    }
    for spec in &workload.specs {
        sim.add_service(spec.clone());
    }
    r.setup_ms = ms(setup.elapsed());
    r.tagged = workload.tagged.len();
    r.catalog_tags = workload.tag_count();
    r.service_defaults = workload.defaults.len();

    // The simulator's own cost of the daemon's biggest read.
    let mut probes = Vec::new();
    for _ in 0..5 {
        let (took, bytes) = raw_get(&sim, CATALOG_PATH)?;
        probes.push(took);
        r.sim_catalog_bytes = bytes;
    }
    r.sim_catalog_get_ms = ms(median(probes));

    let base_log = sim.requests().len();
    let base_writes = sim.state_changing_writes();
    let log_path = std::env::temp_dir().join(format!("ism-bench-{}-{n}.log", std::process::id()));
    let log_file = File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let spawned_at = Instant::now();
    let child = Command::new(&binary.path)
        .env_clear()
        .env("TAGINGRESSSERVICE", PREFIX)
        .env("SERVICENAMEINGRESSGATEWAY", GATEWAY)
        .env("CONSULHTTPURL", sim.url())
        .env("HEALTHPORT", "0")
        .env("RUST_LOG", "info")
        .envs(mode.env())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.path.display()))?;
    let mut daemon = Daemon {
        child,
        log: log_path,
    };
    let pid = daemon.child.id();

    // --- first convergence
    let want_routes = workload.expected_routes();
    let want_tags = workload.expected_tags();
    // The writes convergence takes at least: the gateway's entry and the registration,
    // in api mode one route per tagged service, with intentions one entry per tagged
    // service (checking the state only then keeps the simulator's lock free meanwhile).
    let tagged = workload.tagged.len() as u64;
    let least_writes =
        2 + if mode.api { tagged } else { 0 } + if mode.intentions { tagged } else { 0 };
    let deadline = spawned_at + Duration::from_secs(120);
    let converged_at = loop {
        if sim.state_changing_writes() >= base_writes + least_writes {
            let now = Instant::now();
            if routes(&sim, mode) == want_routes
                && ingress_tags(&sim).as_ref() == Some(&want_tags)
                && intentions_missing(&sim, mode, want_routes.keys()) == 0
            {
                break now;
            }
        }
        daemon.check_alive()?;
        if Instant::now() > deadline {
            let got = routes(&sim, mode);
            return Err(format!(
                "no convergence within 120 s: entry has {} of {} services, ingress service has {:?} of {} tags, {} intentions missing; daemon log:\n{}",
                got.len(),
                want_routes.len(),
                ingress_tags(&sim).map(|t| t.len()),
                want_tags.len(),
                intentions_missing(&sim, mode, want_routes.keys()),
                daemon.log_tail()
            ));
        }
        std::thread::sleep(POLL);
    };
    let at_converge = proc_stats(pid, machine_ticks).unwrap_or_default();
    // Let the watches re-issue after the daemon's own writes (and the log catch up: a
    // request is logged once its answer is built).
    std::thread::sleep(Duration::from_secs(1));
    daemon.check_alive()?;
    let metrics = if mode.passes {
        Some(daemon.health_port()?)
    } else {
        None
    };
    let passes = |what: &str| -> Result<u64, String> {
        match metrics {
            Some(port) => reconcile_passes(port).map_err(|e| format!("{what}: /metrics: {e}")),
            None => Ok(0),
        }
    };
    r.passes_converge = passes("convergence")?;
    r.hwm_phases_kib[0] = proc_stats(pid, machine_ticks).unwrap_or_default().hwm_kib;
    r.status_writes[0] = sim.gateway_status_writes();
    let log = sim.requests();
    let startup = &log[base_log.min(log.len())..];
    let first = startup
        .iter()
        .map(|rec| rec.at)
        .min()
        .ok_or("no request from the daemon")?;
    let first_put = |what: &str| {
        startup
            .iter()
            .filter(|rec| endpoint(rec) == what)
            .map(|rec| ms(rec.at.saturating_duration_since(first)))
            .reduce(f64::min)
            .unwrap_or(f64::NAN)
    };
    r.first_request_ms = ms(first.saturating_duration_since(spawned_at));
    r.converge_ms = ms(converged_at - spawned_at);
    r.converge_after_agent_ms = ms(converged_at.saturating_duration_since(first));
    r.entry_put_after_agent_ms = first_put("PUT entry");
    r.register_put_after_agent_ms = first_put("PUT register");
    r.cpu_converge_ms = ms(at_converge.cpu);
    r.rss_converged_kib = at_converge.rss_kib;
    let converge = traffic(startup);
    r.converge_requests = converge.requests;
    r.converge_bytes = converge.bytes;
    r.converge_by_endpoint = converge.by_endpoint.clone();
    r.converge_writes = sim.state_changing_writes() - base_writes;

    // --- idle
    eprintln!(
        "bench: N = {n}: converged in {:.1} ms; idle for {} s",
        r.converge_ms, args.idle_secs
    );
    let idle_log = sim.requests().len();
    let idle_writes = sim.state_changing_writes();
    let idle_cpu = proc_stats(pid, machine_ticks).unwrap_or_default().cpu;
    let idle_passes = passes("idle")?;
    let idle_end = Instant::now() + Duration::from_secs(args.idle_secs);
    r.conns_idle_min = usize::MAX;
    loop {
        let conns = sim.open_connections();
        r.conns_idle_min = r.conns_idle_min.min(conns);
        r.conns_idle_max = r.conns_idle_max.max(conns);
        let now = Instant::now();
        if now >= idle_end {
            break;
        }
        std::thread::sleep((idle_end - now).min(Duration::from_millis(100)));
    }
    daemon.check_alive()?;
    r.idle = traffic(&sim.requests()[idle_log..]);
    r.idle_writes = sim.state_changing_writes() - idle_writes;
    r.idle_cpu_ms = ms(proc_stats(pid, machine_ticks).unwrap_or_default().cpu - idle_cpu);
    r.passes_idle = passes("idle")? - idle_passes;
    r.hwm_phases_kib[1] = proc_stats(pid, machine_ticks).unwrap_or_default().hwm_kib;

    // --- reaction to host edits
    eprintln!("bench: N = {n}: {} host edits", args.changes);
    let changes_log = sim.requests().len();
    let changes_writes = sim.state_changing_writes();
    let changes_cpu = proc_stats(pid, machine_ticks).unwrap_or_default().cpu;
    let changes_passes = passes("host edits")?;
    let changes_status = sim.gateway_status_writes();
    let gap = Duration::from_millis(args.gap_ms);
    let tagged_count = workload.tagged.len();
    for k in 0..args.changes {
        // Spread edits over the catalog, never the same service twice in a row.
        let which = (k * 7919) % tagged_count;
        let before_log = sim.requests().len();
        let before_writes = sim.state_changing_writes();
        let service = &mut workload.tagged[which];
        service.host = format!("{}-v{k}.example.com", service.name);
        let tags = service.tags();
        let tag_refs: Vec<&str> = tags.iter().map(String::as_str).collect();
        let started = Instant::now();
        sim.set_service_tags(&service.node, &service.name, &tag_refs);
        let deadline = started + Duration::from_secs(20);
        let seen = loop {
            if sim.state_changing_writes() >= before_writes + 2 {
                break Instant::now();
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "edit {k} ({}) not reflected within 20 s; daemon log:\n{}",
                    service.name,
                    daemon.log_tail()
                ));
            }
            std::thread::sleep(POLL);
        };
        r.latency_poll.push(ms(seen - started));
        let host = service.host.clone();
        let name = service.name.clone();
        let entry_hosts = service_hosts(&sim, mode, &name);
        let tagged_ok = ingress_tags(&sim)
            .is_some_and(|tags| tags.iter().any(|t| t.contains(&format!("Host(`{host}`)"))));
        if entry_hosts.as_deref() != Some(std::slice::from_ref(&host)) || !tagged_ok {
            return Err(format!(
                "edit {k}: two writes seen but the state is wrong: entry hosts of {name} = {entry_hosts:?}, ingress tag with {host}: {tagged_ok}"
            ));
        }
        std::thread::sleep(gap);
        daemon.check_alive()?;
        let log = sim.requests();
        let window = &log[before_log..];
        let last_put = window
            .iter()
            .filter(|rec| rec.method == "PUT" && rec.at >= started)
            .map(|rec| rec.at)
            .max();
        r.latency_log
            .push(last_put.map_or(f64::NAN, |at| ms(at - started)));
        let writes = sim.state_changing_writes() - before_writes;
        r.change_writes_max = r.change_writes_max.max(writes);
    }
    r.change_traffic = traffic(&sim.requests()[changes_log..]);
    r.change_writes = sim.state_changing_writes() - changes_writes;
    r.change_cpu_ms = ms(proc_stats(pid, machine_ticks).unwrap_or_default().cpu - changes_cpu);
    r.passes_changes = passes("host edits")? - changes_passes;
    r.status_writes[1] = sim.gateway_status_writes() - changes_status;
    r.hwm_phases_kib[2] = proc_stats(pid, machine_ticks).unwrap_or_default().hwm_kib;

    // --- a burst of host edits
    if args.burst > 0 {
        eprintln!(
            "bench: N = {n}: burst of {} host edits within {} ms",
            args.burst, args.burst_ms
        );
        let burst_passes = passes("burst")?;
        let burst_status = sim.gateway_status_writes();
        burst(
            &sim,
            &mut daemon,
            &mut workload,
            &mut r,
            args,
            pid,
            machine_ticks,
        )?;
        r.passes_burst = passes("burst")? - burst_passes;
        r.status_writes[2] = sim.gateway_status_writes() - burst_status;
    }
    let end = proc_stats(pid, machine_ticks).unwrap_or_default();
    r.hwm_kib = end.hwm_kib;
    r.rss_end_kib = end.rss_kib;
    r.cpu_total_ms = ms(end.cpu);

    // The simulator's own cost of the daemon's entry write (identical content: it is
    // decoded, validated and compared, nothing changes). In api mode: one route.
    let probe = if mode.api {
        let first = workload.tagged.first().map_or("", |t| t.name.as_str());
        sim.config("http-route", &format!("{GATEWAY}-{first}"))
    } else {
        sim.config("ingress-gateway", GATEWAY)
    };
    if let Some(mut entry) = probe {
        if let Some(object) = entry.as_object_mut() {
            for key in ["CreateIndex", "ModifyIndex", "Hash"] {
                object.remove(key);
            }
            if mode.api {
                let with_status = serde_json::to_vec(object).map_or(0, |v| v.len());
                object.remove("Status"); // the controller's: a client's is dropped
                let without = serde_json::to_vec(object).map_or(0, |v| v.len());
                eprintln!(
                    "bench: N = {n}: one route is {with_status} bytes as JSON, {} of them its Status",
                    with_status.saturating_sub(without)
                );
            }
        }
        let writes = sim.state_changing_writes();
        let mut samples = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            let _ = sim.put_config(entry.clone(), None);
            samples.push(start.elapsed());
        }
        if sim.state_changing_writes() != writes {
            eprintln!("bench: warning: re-writing the entry changed it");
        }
        r.sim_entry_put_ms = ms(median(samples));
    }

    r.exit_status = match daemon.stop() {
        Some(status) => status.to_string(),
        None => "did not exit within 6 s of SIGTERM".into(),
    };
    let _ = std::fs::remove_file(&daemon.log);
    Ok(r)
}

/// `args.burst` host edits spread evenly over `args.burst_ms`, never waiting for the
/// daemon; then waits for the exact final state (every route and tag of the final
/// catalog, nothing else) and counts what the daemon wrote for the whole burst.
fn burst(
    sim: &Sim,
    daemon: &mut Daemon,
    workload: &mut Workload,
    r: &mut RunResult,
    args: &Args,
    pid: u32,
    machine_ticks: u64,
) -> Result<(), String> {
    let log_start = sim.requests().len();
    let mode = args.mode;
    let entry_writes = gateway_entry_writes(sim, mode);
    let cpu = proc_stats(pid, machine_ticks).unwrap_or_default().cpu;
    let tagged_count = workload.tagged.len();
    let step = Duration::from_millis(args.burst_ms) / args.burst.max(1) as u32;
    let started = Instant::now();
    let mut last_edit = started;
    for k in 0..args.burst {
        // Distinct services where the catalog has enough of them (N >= 250).
        let which = (k * 7919 + 13) % tagged_count;
        let service = &mut workload.tagged[which];
        service.host = format!("{}-b{k}.example.com", service.name);
        let tags = service.tags();
        let tag_refs: Vec<&str> = tags.iter().map(String::as_str).collect();
        let due = started + step * k as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait); // the burst's own pace
        }
        sim.set_service_tags(&service.node, &service.name, &tag_refs);
        last_edit = Instant::now();
    }
    r.burst_span_ms = ms(last_edit - started);
    let want_routes = workload.expected_routes();
    let want_tags = workload.expected_tags();
    let deadline = last_edit + Duration::from_secs(30);
    let exact = |sim: &Sim| {
        routes(sim, mode) == want_routes
            && ingress_tags(sim).as_ref() == Some(&want_tags)
            && intentions_missing(sim, mode, want_routes.keys()) == 0
    };
    let settled = loop {
        if exact(sim) {
            break Instant::now();
        }
        daemon.check_alive()?;
        if Instant::now() > deadline {
            let got = routes(sim, mode);
            let wrong = want_routes
                .iter()
                .filter(|(name, hosts)| got.get(*name) != Some(hosts))
                .count();
            return Err(format!(
                "burst: no exact final state within 30 s of the last edit: {wrong} of {} services with other hosts, {} routes in the entry; daemon log:\n{}",
                want_routes.len(),
                got.len(),
                daemon.log_tail()
            ));
        }
        std::thread::sleep(POLL);
    };
    r.burst_settle_ms = ms(settled - last_edit);
    // Anything still in flight shows now; the state must stay exact.
    std::thread::sleep(Duration::from_millis(args.gap_ms));
    daemon.check_alive()?;
    if !exact(sim) {
        return Err("burst: the final state changed after it was reached".into());
    }
    let log = sim.requests();
    let window = traffic(&log[log_start..]);
    r.burst_requests = window.requests;
    r.burst_entry_puts = *window.by_endpoint.get("PUT entry").unwrap_or(&0);
    r.burst_register_puts = *window.by_endpoint.get("PUT register").unwrap_or(&0);
    r.burst_entry_writes = gateway_entry_writes(sim, mode) - entry_writes;
    r.burst_cpu_ms = ms(proc_stats(pid, machine_ticks).unwrap_or_default().cpu - cpu);
    Ok(())
}

// ------------------------------------------------------------------ output

impl RunResult {
    fn sorted(samples: &[f64]) -> Vec<f64> {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    fn per_change(&self, count: usize) -> f64 {
        count as f64 / self.changes.max(1) as f64
    }

    fn to_json(&self, binary: &Binary, machine: &Machine, args: &Args, commit: String) -> Value {
        let poll = RunResult::sorted(&self.latency_poll);
        let log = RunResult::sorted(&self.latency_log);
        let lat = |v: &[f64]| {
            json!({
                "p50": percentile(v, 50.0),
                "p95": percentile(v, 95.0),
                "max": v.last().copied().unwrap_or(f64::NAN),
            })
        };
        let by_endpoint = |counts: &BTreeMap<&'static str, usize>, per: f64| -> Value {
            counts
                .iter()
                .map(|(k, v)| ((*k).to_string(), json!(*v as f64 / per)))
                .collect::<serde_json::Map<String, Value>>()
                .into()
        };
        let mut out = json!({
            "commit": commit,
            "services": self.n,
            "tagged_services": self.tagged,
            "catalog_tags": self.catalog_tags,
            "service_defaults": self.service_defaults,
            "binary": binary.path.display().to_string(),
            "binary_kind": binary.kind,
            "binary_bytes": binary.size,
            "nproc": machine.nproc,
            "cpu": machine.cpu,
            "sim_max_wait_s": IDLE_MAX_WAIT.as_secs(),
            "setup_ms": self.setup_ms,
            "sim_catalog_get_ms": self.sim_catalog_get_ms,
            "sim_catalog_bytes": self.sim_catalog_bytes,
            "sim_entry_put_ms": self.sim_entry_put_ms,
            "first_request_ms": self.first_request_ms,
            "converge_ms": self.converge_ms,
            "converge_after_agent_ms": self.converge_after_agent_ms,
            "entry_put_after_agent_ms": self.entry_put_after_agent_ms,
            "register_put_after_agent_ms": self.register_put_after_agent_ms,
            "converge_requests": self.converge_requests,
            "converge_bytes": self.converge_bytes,
            "converge_writes": self.converge_writes,
            "cpu_converge_ms": self.cpu_converge_ms,
            "rss_converged_kib": self.rss_converged_kib,
            "changes": self.changes,
            "gap_ms": args.gap_ms,
            "latency_ms": lat(&poll),
            "latency_log_ms": lat(&log),
            "requests_per_change": self.per_change(self.change_traffic.requests),
            "bytes_per_change": self.per_change(self.change_traffic.bytes),
            "writes_per_change": self.change_writes as f64 / self.changes.max(1) as f64,
            "writes_per_change_max": self.change_writes_max,
            "bytes_per_change_by_endpoint": by_endpoint(
                &self.change_traffic.bytes_by_endpoint,
                self.changes.max(1) as f64,
            ),
            "requests_per_change_by_endpoint": by_endpoint(&self.change_traffic.by_endpoint, self.changes.max(1) as f64),
            "cpu_per_change_ms": self.change_cpu_ms / self.changes.max(1) as f64,
            "burst_changes": self.burst,
            "burst_window_ms": args.burst_ms,
            "burst_span_ms": self.burst_span_ms,
            "burst_entry_writes": self.burst_entry_writes,
            "burst_entry_puts": self.burst_entry_puts,
            "burst_register_puts": self.burst_register_puts,
            "burst_requests": self.burst_requests,
            "burst_settle_ms": self.burst_settle_ms,
            "burst_cpu_ms": self.burst_cpu_ms,
            "idle_secs": self.idle_secs,
            "idle_requests": self.idle.requests,
            "idle_bytes": self.idle.bytes,
            "idle_writes": self.idle_writes,
            "idle_requests_by_endpoint": by_endpoint(&self.idle.by_endpoint, 1.0),
            "idle_bytes_by_endpoint": by_endpoint(&self.idle.bytes_by_endpoint, 1.0),
            "idle_cpu_ms": self.idle_cpu_ms,
            "idle_connections_min": self.conns_idle_min,
            "idle_connections_max": self.conns_idle_max,
            "peak_rss_kib": self.hwm_kib,
            "rss_end_kib": self.rss_end_kib,
            "cpu_total_ms": self.cpu_total_ms,
            "exit": self.exit_status,
        });
        if !self.mode.is_default() {
            if let Some(object) = out.as_object_mut() {
                object.insert("gateway".into(), json!(self.mode.gateway()));
                object.insert("intentions".into(), json!(self.mode.intentions));
                object.insert(
                    "gateway_controller_paused".into(),
                    json!(self.mode.controller_paused),
                );
                object.insert("passes_converge".into(), json!(self.passes_converge));
                object.insert("passes_idle".into(), json!(self.passes_idle));
                object.insert(
                    "passes_per_change".into(),
                    json!(self.per_change(self.passes_changes as usize)),
                );
                object.insert("passes_burst".into(), json!(self.passes_burst));
                object.insert(
                    "converge_requests_by_endpoint".into(),
                    by_endpoint(&self.converge_by_endpoint, 1.0),
                );
                object.insert("peak_rss_by_phase_kib".into(), json!(self.hwm_phases_kib));
                object.insert(
                    "sim_status_writes_converge_changes_burst".into(),
                    json!(self.status_writes),
                );
            }
        }
        out
    }
}

fn print_table(results: &[RunResult], binary: &Binary, machine: &Machine, args: &Args) {
    println!();
    println!(
        "ingress-service-monitor benchmark ({}; {} CPUs, {})",
        git_commit(),
        machine.nproc,
        machine.cpu
    );
    println!(
        "binary: {} ({}, {:.2} MiB{})",
        binary.path.display(),
        binary.kind,
        binary.size as f64 / 1_048_576.0,
        if binary.kind == "musl" {
            ", target < 3 MiB"
        } else {
            ""
        }
    );
    println!(
        "simulator max_wait clamp {} s (the daemon asks for 5 min); idle window {} s; {} host edits, {} ms apart after convergence; burst of {} edits within {} ms",
        IDLE_MAX_WAIT.as_secs(),
        args.idle_secs,
        args.changes,
        args.gap_ms,
        args.burst,
        args.burst_ms
    );
    let mode = args.mode;
    if !mode.is_default() {
        println!(
            "gateway {} (CONSULGATEWAY={}); intentions {}; reconcile passes counted from /metrics{}",
            mode.gateway(),
            mode.gateway(),
            if mode.intentions {
                "on (SETINTENTIONS=true)"
            } else {
                "off"
            },
            if mode.controller_paused {
                "; the simulator's gateway controller PAUSED (no Status)"
            } else {
                ""
            }
        );
    }
    println!();
    let mut header = format!("{:<46}", "metric");
    for result in results {
        header.push_str(&format!("{:>16}", format!("N={}", result.n)));
    }
    header.push_str("  target");
    println!("{header}");
    println!("{}", "-".repeat(header.len()));
    type Cell = Box<dyn Fn(&RunResult) -> String>;
    let f1 = |x: f64| format!("{x:.1}");
    // One watch (connection) more for the routes in api mode, one for the intentions.
    let conns_target = match (mode.api, mode.intentions) {
        (false, false) => "<= 5, const",
        (true, false) => "<= 6, const",
        (false, true) => "<= 6 (5 + intentions), const",
        (true, true) => "<= 7 (6 + intentions), const",
    };
    let (burst_label, burst_target) = if mode.api {
        (
            "burst: route writes (PUT /v1/config requests)",
            "1 per edited route",
        )
    } else {
        ("burst: entry writes (PUT entry requests)", "<= 5")
    };
    let rss_target = match (mode.api, mode.intentions) {
        (false, false) => "<= 8 @1k, <= 12 @10k",
        (true, false) => "<= 1.5x ingress @1k",
        (_, true) => "= without intentions",
    };
    let mut rows: Vec<(&str, Cell, &str)> = vec![
        (
            "tagged services / catalog tags",
            Box::new(|r: &RunResult| format!("{}/{}", r.tagged, r.catalog_tags)),
            "",
        ),
        (
            "sim: catalog GET, fresh conn (ms)",
            Box::new(move |r: &RunResult| f1(r.sim_catalog_get_ms)),
            "sim cost",
        ),
        (
            "sim: catalog body (KiB)",
            Box::new(|r: &RunResult| format!("{:.0}", r.sim_catalog_bytes as f64 / 1024.0)),
            "",
        ),
        (
            "sim: entry PUT, in-process (ms)",
            Box::new(move |r: &RunResult| f1(r.sim_entry_put_ms)),
            "sim cost",
        ),
        (
            "start -> first request (ms)",
            Box::new(move |r: &RunResult| f1(r.first_request_ms)),
            "",
        ),
        (
            "start -> converged (ms)",
            Box::new(move |r: &RunResult| f1(r.converge_ms)),
            "",
        ),
        (
            "first request -> converged (ms)",
            Box::new(move |r: &RunResult| f1(r.converge_after_agent_ms)),
            "<= 500 @10k",
        ),
        (
            "  first request -> entry PUT (ms)",
            Box::new(move |r: &RunResult| f1(r.entry_put_after_agent_ms)),
            "",
        ),
        (
            "  first request -> register PUT (ms)",
            Box::new(move |r: &RunResult| f1(r.register_put_after_agent_ms)),
            "",
        ),
        (
            "  requests / KiB / writes to converge",
            Box::new(|r: &RunResult| {
                format!(
                    "{}/{:.0}/{}",
                    r.converge_requests,
                    r.converge_bytes as f64 / 1024.0,
                    r.converge_writes
                )
            }),
            "",
        ),
        (
            "  CPU to converge (ms)",
            Box::new(move |r: &RunResult| f1(r.cpu_converge_ms)),
            "",
        ),
        (
            "reaction p50 (ms)",
            Box::new(|r: &RunResult| {
                format!(
                    "{:.1}",
                    percentile(&RunResult::sorted(&r.latency_poll), 50.0)
                )
            }),
            "<= 15 @1k, <= 120 @10k",
        ),
        (
            "reaction p95 (ms)",
            Box::new(|r: &RunResult| {
                format!(
                    "{:.1}",
                    percentile(&RunResult::sorted(&r.latency_poll), 95.0)
                )
            }),
            "",
        ),
        (
            "reaction max (ms)",
            Box::new(|r: &RunResult| {
                format!(
                    "{:.1}",
                    RunResult::sorted(&r.latency_poll)
                        .last()
                        .copied()
                        .unwrap_or(f64::NAN)
                )
            }),
            "",
        ),
        (
            "  p50 from sim log, edit -> register PUT",
            Box::new(|r: &RunResult| {
                format!(
                    "{:.1}",
                    percentile(&RunResult::sorted(&r.latency_log), 50.0)
                )
            }),
            "",
        ),
        (
            "requests per change",
            Box::new(|r: &RunResult| format!("{:.2}", r.per_change(r.change_traffic.requests))),
            "<= 5",
        ),
        (
            "  of which GET catalog",
            Box::new(|r: &RunResult| {
                format!(
                    "{:.2}",
                    r.per_change(
                        *r.change_traffic
                            .by_endpoint
                            .get("GET catalog")
                            .unwrap_or(&0)
                    )
                )
            }),
            "",
        ),
        (
            "  of which GET entry",
            Box::new(|r: &RunResult| {
                format!(
                    "{:.2}",
                    r.per_change(*r.change_traffic.by_endpoint.get("GET entry").unwrap_or(&0))
                )
            }),
            "",
        ),
        (
            "  of which PUT entry + PUT register",
            Box::new(|r: &RunResult| {
                format!(
                    "{:.2}",
                    r.per_change(
                        r.change_traffic.by_endpoint.get("PUT entry").unwrap_or(&0)
                            + r.change_traffic
                                .by_endpoint
                                .get("PUT register")
                                .unwrap_or(&0)
                    )
                )
            }),
            "",
        ),
        (
            "  of which timer-driven (expiries, agent check)",
            Box::new(|r: &RunResult| {
                let known = [
                    "GET catalog",
                    "GET entry",
                    "GET routes",
                    "GET intentions",
                    "PUT entry",
                    "PUT register",
                ];
                let other: usize = r
                    .change_traffic
                    .by_endpoint
                    .iter()
                    .filter(|(k, _)| !known.contains(k))
                    .map(|(_, v)| v)
                    .sum();
                format!("{:.2}", r.per_change(other))
            }),
            "",
        ),
        (
            "bytes received per change (KiB)",
            Box::new(|r: &RunResult| {
                format!("{:.1}", r.per_change(r.change_traffic.bytes) / 1024.0)
            }),
            "",
        ),
        (
            "writes per change (max)",
            Box::new(|r: &RunResult| {
                format!(
                    "{:.2} ({})",
                    r.change_writes as f64 / r.changes.max(1) as f64,
                    r.change_writes_max
                )
            }),
            "2",
        ),
        (
            "CPU per change (ms)",
            Box::new(|r: &RunResult| format!("{:.2}", r.change_cpu_ms / r.changes.max(1) as f64)),
            "<= 30 @10k",
        ),
        (
            "burst: edits / first to last edit (ms)",
            Box::new(|r: &RunResult| format!("{}/{:.0}", r.burst, r.burst_span_ms)),
            "50 within 1 s",
        ),
        (
            burst_label,
            Box::new(|r: &RunResult| format!("{} ({})", r.burst_entry_writes, r.burst_entry_puts)),
            burst_target,
        ),
        (
            "  register PUTs / all requests",
            Box::new(|r: &RunResult| format!("{}/{}", r.burst_register_puts, r.burst_requests)),
            "",
        ),
        (
            "  last edit -> exact final state (ms)",
            Box::new(move |r: &RunResult| f1(r.burst_settle_ms)),
            "exact",
        ),
        (
            "  CPU for the burst (ms)",
            Box::new(move |r: &RunResult| f1(r.burst_cpu_ms)),
            "",
        ),
        (
            "idle: requests",
            Box::new(|r: &RunResult| format!("{}", r.idle.requests)),
            "",
        ),
        (
            "idle: KiB received",
            Box::new(|r: &RunResult| format!("{:.0}", r.idle.bytes as f64 / 1024.0)),
            "",
        ),
        (
            "idle: writes",
            Box::new(|r: &RunResult| format!("{}", r.idle_writes)),
            "0",
        ),
        (
            "idle: CPU (ms)",
            Box::new(move |r: &RunResult| f1(r.idle_cpu_ms)),
            "",
        ),
        (
            "idle: open connections (min-max)",
            Box::new(|r: &RunResult| format!("{}-{}", r.conns_idle_min, r.conns_idle_max)),
            conns_target,
        ),
        (
            "RSS at convergence (MiB)",
            Box::new(|r: &RunResult| format!("{:.2}", r.rss_converged_kib as f64 / 1024.0)),
            "",
        ),
        (
            "peak RSS, VmHWM (MiB)",
            Box::new(|r: &RunResult| format!("{:.2}", r.hwm_kib as f64 / 1024.0)),
            rss_target,
        ),
        (
            "CPU total, utime+stime (ms)",
            Box::new(move |r: &RunResult| f1(r.cpu_total_ms)),
            "",
        ),
        (
            "exit on SIGTERM",
            Box::new(|r: &RunResult| r.exit_status.clone()),
            "",
        ),
    ];
    let at = |rows: &[(&str, Cell, &str)], label: &str| {
        rows.iter()
            .position(|(l, _, _)| *l == label)
            .map_or(rows.len(), |i| i + 1)
    };
    let per_change_of = |endpoint: &'static str| -> Cell {
        Box::new(move |r: &RunResult| {
            format!(
                "{:.2}",
                r.per_change(*r.change_traffic.by_endpoint.get(endpoint).unwrap_or(&0))
            )
        })
    };
    if mode.intentions {
        let i = at(&rows, "  of which GET entry");
        rows.insert(
            i,
            (
                "  of which GET intentions",
                per_change_of("GET intentions"),
                "",
            ),
        );
    }
    if mode.api {
        let i = at(&rows, "  of which GET entry");
        rows.insert(
            i,
            ("  of which GET routes", per_change_of("GET routes"), ""),
        );
    }
    if mode.passes {
        let i = at(&rows, "idle: open connections (min-max)");
        let mut passes: Vec<(&str, Cell, &str)> = vec![
            (
                "reconcile passes: converge / idle",
                Box::new(|r: &RunResult| format!("{}/{}", r.passes_converge, r.passes_idle)),
                "",
            ),
            (
                "reconcile passes per change",
                Box::new(|r: &RunResult| format!("{:.2}", r.per_change(r.passes_changes as usize))),
                "",
            ),
            (
                "reconcile passes in the burst",
                Box::new(|r: &RunResult| format!("{}", r.passes_burst)),
                "",
            ),
            (
                "VmHWM after converge/idle/edits (MiB)",
                Box::new(|r: &RunResult| {
                    let [a, b, c] = r.hwm_phases_kib.map(|k| k as f64 / 1024.0);
                    format!("{a:.1}/{b:.1}/{c:.1}")
                }),
                "",
            ),
        ];
        if mode.api {
            passes.push((
                "sim Status writes: converge/edit/burst",
                Box::new(|r: &RunResult| {
                    format!(
                        "{}/{:.1}/{}",
                        r.status_writes[0],
                        r.per_change(r.status_writes[1] as usize),
                        r.status_writes[2]
                    )
                }),
                "",
            ));
        }
        for (k, row) in passes.into_iter().enumerate() {
            rows.insert(i + k, row);
        }
    }
    for (label, cell, target) in rows {
        let mut line = format!("{label:<46}");
        for result in results {
            line.push_str(&format!("{:>16}", cell(result)));
        }
        if !target.is_empty() {
            line.push_str(&format!("  {target}"));
        }
        println!("{line}");
    }
    println!();
}
