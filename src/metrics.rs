//! Prometheus metrics: a registry the reconciler and the Consul client count into, and a
//! pure renderer of the text exposition format 0.0.4 that [`crate::health`] serves on
//! `GET /metrics`.
//!
//! How the pieces fit:
//! - [`Metrics`] is a cheap handle (an `Arc`) created once by the daemon and passed to
//!   whoever counts; no global. Its methods take a lock for a few additions and never
//!   across an `.await`.
//! - The gauges that describe the current state (`ism_up`, `ism_exposed_services`,
//!   `ism_warnings`, `ism_last_sync_timestamp_seconds`) are not counted here: they are read
//!   from the same [`HealthState`] that `/health` answers from, so both always agree.
//! - [`Process`] reads the standard `process_*` figures from `/proc/self` at scrape time.
//! - [`render`] turns a [`Snapshot`], the health state and the process figures into the
//!   text; it is pure and table-tested.
//!
//! Why hand-written: the Prometheus organisation's `prometheus-client` crate writes only
//! OpenMetrics, which `promtool check metrics` (2.42) rejects, and the set of families is
//! fixed and small. Label values stay bounded: endpoints and watches are `&'static str`
//! (path templates and names in the code, never a raw path, a query or a service name),
//! status codes are capped by [`MAX_REQUEST_SERIES`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::health::HealthState;
use crate::model::Kind;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Distinct `(endpoint, code)` pairs of `ism_consul_requests_total` at most; a new pair
/// beyond it is counted under `code="other"` of its endpoint, so an agent answering odd
/// status codes cannot grow the series without bound.
pub const MAX_REQUEST_SERIES: usize = 128;

/// Upper bounds (seconds) of `ism_reaction_seconds`: from a few milliseconds (a write
/// right after the 100 ms debounce is 0.1 to 0.25) to a minute (retries with backoff).
pub const REACTION_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// What a write to Consul changed: the `kind` label of `ism_writes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// The gateway's config entry (`ingress-gateway` or `api-gateway`).
    ConfigEntry,
    /// The ingress service's registration at the agent.
    Registration,
    ServiceDefaults,
    Intentions,
    /// An `http-route` or `tcp-route` config entry.
    Route,
}

impl WriteKind {
    pub const ALL: [WriteKind; 5] = [
        WriteKind::ConfigEntry,
        WriteKind::Registration,
        WriteKind::ServiceDefaults,
        WriteKind::Intentions,
        WriteKind::Route,
    ];

    pub fn label(self) -> &'static str {
        match self {
            WriteKind::ConfigEntry => "config_entry",
            WriteKind::Registration => "registration",
            WriteKind::ServiceDefaults => "service_defaults",
            WriteKind::Intentions => "intentions",
            WriteKind::Route => "route",
        }
    }

    /// What writing a config entry of `kind` changes.
    pub fn of_entry(kind: Kind) -> WriteKind {
        match kind {
            Kind::ServiceDefaults => WriteKind::ServiceDefaults,
            Kind::IngressGateway | Kind::ApiGateway => WriteKind::ConfigEntry,
            Kind::HttpRoute => WriteKind::Route,
            Kind::ServiceIntentions => WriteKind::Intentions,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How a write ended: the `result` label of `ism_writes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteResult {
    Ok,
    /// Consul answered `false` to a `cas` write: someone wrote in between.
    CasConflict,
    Error,
}

impl WriteResult {
    pub const ALL: [WriteResult; 3] = [
        WriteResult::Ok,
        WriteResult::CasConflict,
        WriteResult::Error,
    ];

    pub fn label(self) -> &'static str {
        match self {
            WriteResult::Ok => "ok",
            WriteResult::CasConflict => "cas_conflict",
            WriteResult::Error => "error",
        }
    }

    /// Consul's answer to a `cas` write or delete: `true` written, `false` a CAS miss.
    pub fn of_cas<E>(answer: &Result<bool, E>) -> WriteResult {
        match answer {
            Ok(true) => WriteResult::Ok,
            Ok(false) => WriteResult::CasConflict,
            Err(_) => WriteResult::Error,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The `code` label of `ism_consul_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Code {
    /// The agent answered with this HTTP status.
    Status(u16),
    /// No answer: connection refused or broken, timeout, TLS failure, body over the cap.
    Error,
    /// A status beyond [`MAX_REQUEST_SERIES`].
    Other,
}

impl Code {
    fn label(self) -> String {
        match self {
            Code::Status(status) => status.to_string(),
            Code::Error => "error".into(),
            Code::Other => "other".into(),
        }
    }
}

/// A histogram with the fixed [`REACTION_BUCKETS`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Observations per bucket, not cumulative; the last is above every bound (`+Inf`).
    pub counts: [u64; REACTION_BUCKETS.len() + 1],
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        let bucket = REACTION_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(REACTION_BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum += seconds;
        self.count += 1;
    }
}

/// Everything counted so far: what [`Metrics::snapshot`] copies out for [`render`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub reconciles_ok: u64,
    pub reconciles_error: u64,
    /// Indexed by [`WriteKind`], then [`WriteResult`], in the order of their `ALL`.
    pub writes: [[u64; 3]; 5],
    pub consul_requests: BTreeMap<(&'static str, Code), u64>,
    pub watch_errors: BTreeMap<&'static str, u64>,
    pub reaction: Histogram,
}

/// The registry: clone it freely, every clone counts into the same numbers.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Snapshot>>,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    fn with(&self, change: impl FnOnce(&mut Snapshot)) {
        // Every change is a few additions that leave the numbers consistent, so a panic
        // elsewhere while the lock was held cannot leave them half-updated.
        let mut snapshot = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut snapshot);
    }

    /// A reconcile ended: `ok` when everything it had to write was written.
    pub fn reconciled(&self, ok: bool) {
        self.with(|s| {
            if ok {
                s.reconciles_ok += 1;
            } else {
                s.reconciles_error += 1;
            }
        });
    }

    /// A write to Consul ended.
    pub fn write(&self, kind: WriteKind, result: WriteResult) {
        self.with(|s| s.writes[kind.index()][result.index()] += 1);
    }

    /// A request to the agent ended: `endpoint_template` names the path with its variable
    /// parts as placeholders (`/v1/config/{kind}/{name}`), never the raw path or a query;
    /// `code` is the answer's status, `None` when there was none.
    pub fn consul_request(&self, endpoint_template: &'static str, code: Option<u16>) {
        self.with(|s| {
            let code = code.map_or(Code::Error, Code::Status);
            let key = if s.consul_requests.len() < MAX_REQUEST_SERIES
                || s.consul_requests.contains_key(&(endpoint_template, code))
            {
                (endpoint_template, code)
            } else {
                (endpoint_template, Code::Other)
            };
            *s.consul_requests.entry(key).or_default() += 1;
        });
    }

    /// A watch's read failed (`"catalog"`, `"service_defaults"`, `"proxy_defaults"`,
    /// `"entry"`, ...).
    pub fn watch_error(&self, watch: &'static str) {
        self.with(|s| *s.watch_errors.entry(watch).or_default() += 1);
    }

    /// From a watch answer that changed the plan to the last write that carried it out.
    pub fn reaction(&self, took: Duration) {
        self.with(|s| s.reaction.observe(took.as_secs_f64()));
    }

    pub fn snapshot(&self) -> Snapshot {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The clock behind `ism_reaction_seconds`: when the change the reconciler is carrying out
/// arrived, kept across failed passes so the retry that finally writes it counts from
/// the change, not from the retry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reaction {
    since: Option<Instant>,
}

impl Reaction {
    /// A pass starts; `trigger` is when the first change it acts on arrived (`None` when
    /// it runs for a requeue or the agent check only). An earlier change not yet carried
    /// out keeps its own, earlier time.
    pub fn started(&mut self, trigger: Option<Instant>) {
        if self.since.is_none() {
            self.since = trigger;
        }
    }

    /// The pass ended at `now`: how long the reaction took, when the pass succeeded and
    /// wrote something. A pass that succeeded without writing ends the reaction unseen
    /// (the change did not change the plan, e.g. the echo of our own write); a failed one
    /// leaves it running.
    pub fn ended(&mut self, now: Instant, ok: bool, wrote: bool) -> Option<Duration> {
        if !ok {
            return None;
        }
        let since = self.since.take()?;
        wrote.then(|| now.saturating_duration_since(since))
    }
}

/// The standard process figures; `None` where `/proc` could not tell (the family is then
/// left out rather than reported as 0).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Process {
    pub resident_memory_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

/// Linux reports process times in USER_HZ, which the kernel fixes at 100 for userspace
/// on every architecture this daemon is built for (x86_64, aarch64); reading it through
/// `sysconf` would need libc and unsafe code for a constant.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

impl Process {
    /// Reads `/proc/self/{stat,status,fd}` and `/proc/stat`: a few small files per scrape.
    pub fn read() -> Process {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let stat = read("/proc/self/stat").and_then(|s| parse_stat(&s));
        let boot_time = read("/proc/stat").and_then(|s| parse_boot_time(&s));
        Process {
            resident_memory_bytes: read("/proc/self/status").and_then(|s| parse_rss_bytes(&s)),
            cpu_seconds: stat.map(|s| (s.utime + s.stime) as f64 / CLOCK_TICKS_PER_SECOND),
            // The directory handle that lists them is counted too, as client_golang does.
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|entries| entries.count() as u64),
            start_time_seconds: stat
                .zip(boot_time)
                .map(|(stat, boot)| boot as f64 + stat.start_ticks as f64 / CLOCK_TICKS_PER_SECOND),
        }
    }
}

/// The fields of `/proc/<pid>/stat` this module needs, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub utime: u64,
    pub stime: u64,
    /// Since boot.
    pub start_ticks: u64,
}

/// `/proc/<pid>/stat`: `pid (comm) state ppid ...`; `comm` may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let after_comm = &text[text.rfind(')')? + 1..];
    // Field 3 (state) is the first after comm; utime is field 14, stime 15, starttime 22.
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
    })
}

/// `VmRSS:  1234 kB` of `/proc/<pid>/status`, in bytes.
pub fn parse_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let mut words = line.split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => kib.checked_mul(1024),
        _ => None,
    }
}

/// `btime <seconds since the epoch>` of `/proc/stat`.
pub fn parse_boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The whole exposition, families in a fixed order, each with `# HELP` and `# TYPE`.
pub fn render(snapshot: &Snapshot, health: &HealthState, process: &Process) -> String {
    let mut out = String::with_capacity(4096);
    state_gauges(&mut out, health);
    counters(&mut out, snapshot);
    reaction_histogram(&mut out, &snapshot.reaction);
    process_metrics(&mut out, process);
    out
}

/// The gauges that say what /health says.
fn state_gauges(o: &mut String, health: &HealthState) {
    family(
        o,
        "ism_build_info",
        "gauge",
        "The daemon's version; always 1.",
    );
    sample(
        o,
        "ism_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );

    family(
        o,
        "ism_up",
        "gauge",
        "1 when the last reconcile succeeded (/health answers 200), 0 otherwise.",
    );
    sample(o, "ism_up", &[], u8::from(health.problem.is_none()));

    family(
        o,
        "ism_exposed_services",
        "gauge",
        "Services the gateway currently exposes.",
    );
    sample(o, "ism_exposed_services", &[], health.services_exposed);

    family(
        o,
        "ism_warnings",
        "gauge",
        "Warnings currently standing (bad tags, host conflicts, ...); the log names each.",
    );
    sample(o, "ism_warnings", &[], health.warnings);

    family(
        o,
        "ism_last_sync_timestamp_seconds",
        "gauge",
        "When the last successful reconcile ended, in seconds since the epoch; 0 before the first.",
    );
    sample(
        o,
        "ism_last_sync_timestamp_seconds",
        &[],
        float(health.last_sync.map_or(0.0, epoch_seconds)),
    );
}

fn counters(o: &mut String, snapshot: &Snapshot) {
    family(
        o,
        "ism_reconciles_total",
        "counter",
        "Reconciles, by result.",
    );
    sample(
        o,
        "ism_reconciles_total",
        &[("result", "ok")],
        snapshot.reconciles_ok,
    );
    sample(
        o,
        "ism_reconciles_total",
        &[("result", "error")],
        snapshot.reconciles_error,
    );

    family(
        o,
        "ism_writes_total",
        "counter",
        "Writes to Consul, by what they changed and how they ended.",
    );
    for kind in WriteKind::ALL {
        for result in WriteResult::ALL {
            sample(
                o,
                "ism_writes_total",
                &[("kind", kind.label()), ("result", result.label())],
                snapshot.writes[kind.index()][result.index()],
            );
        }
    }

    family(
        o,
        "ism_consul_requests_total",
        "counter",
        "Requests to the Consul agent, by endpoint (path template) and status code ('error' when no answer).",
    );
    for ((endpoint, code), n) in &snapshot.consul_requests {
        sample(
            o,
            "ism_consul_requests_total",
            &[("endpoint", *endpoint), ("code", &code.label())],
            n,
        );
    }

    family(
        o,
        "ism_watch_errors_total",
        "counter",
        "Failed reads of a watch, by watch.",
    );
    for (watch, n) in &snapshot.watch_errors {
        sample(o, "ism_watch_errors_total", &[("watch", *watch)], n);
    }
}

fn reaction_histogram(o: &mut String, reaction: &Histogram) {
    family(
        o,
        "ism_reaction_seconds",
        "histogram",
        "Seconds from a watch answer that changed the plan to the last write that carried it out.",
    );
    let mut cumulative = 0;
    for (i, bound) in REACTION_BUCKETS.iter().enumerate() {
        cumulative += reaction.counts[i];
        sample(
            o,
            "ism_reaction_seconds_bucket",
            &[("le", &float(*bound))],
            cumulative,
        );
    }
    sample(
        o,
        "ism_reaction_seconds_bucket",
        &[("le", "+Inf")],
        reaction.count,
    );
    sample(o, "ism_reaction_seconds_sum", &[], float(reaction.sum));
    sample(o, "ism_reaction_seconds_count", &[], reaction.count);
}

/// The standard process metrics; each left out when /proc could not be read.
fn process_metrics(o: &mut String, process: &Process) {
    if let Some(bytes) = process.resident_memory_bytes {
        family(
            o,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        sample(o, "process_resident_memory_bytes", &[], bytes);
    }
    if let Some(seconds) = process.cpu_seconds {
        family(
            o,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
        );
        sample(o, "process_cpu_seconds_total", &[], float(seconds));
    }
    if let Some(fds) = process.open_fds {
        family(
            o,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
        );
        sample(o, "process_open_fds", &[], fds);
    }
    if let Some(seconds) = process.start_time_seconds {
        family(
            o,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
        );
        sample(o, "process_start_time_seconds", &[], float(seconds));
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help)); // writing to a String cannot fail
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(key);
            out.push_str("=\"");
            out.push_str(&escape_label(value));
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}"); // writing to a String cannot fail
}

/// A label value in the text format: backslash, double quote and line feed escaped.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A `# HELP` text: backslash and line feed escaped (quotes are literal there).
pub fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A float as Prometheus parses it: `+Inf`, `-Inf`, `NaN`, else the shortest decimal
/// that reads back the same (Rust never writes an exponent for `f64` with `{}`).
pub fn float(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{value}")
    }
}

fn epoch_seconds(t: SystemTime) -> f64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> HealthState {
        HealthState {
            problem: None,
            last_sync: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_250)),
            services_exposed: 3,
            warnings: 2,
        }
    }

    fn process() -> Process {
        Process {
            resident_memory_bytes: Some(9_437_184),
            cpu_seconds: Some(1.25),
            open_fds: Some(16),
            start_time_seconds: Some(1_699_999_000.5),
        }
    }

    #[test]
    fn renders_every_family() {
        let metrics = Metrics::new();
        metrics.reconciled(true);
        metrics.reconciled(true);
        metrics.reconciled(false);
        metrics.write(WriteKind::ConfigEntry, WriteResult::Ok);
        metrics.write(WriteKind::ConfigEntry, WriteResult::CasConflict);
        metrics.write(WriteKind::Registration, WriteResult::Ok);
        metrics.write(WriteKind::Route, WriteResult::Error);
        metrics.consul_request("/v1/catalog/services", Some(200));
        metrics.consul_request("/v1/catalog/services", Some(200));
        metrics.consul_request("/v1/config", Some(500));
        metrics.consul_request("/v1/config", None);
        metrics.watch_error("catalog");
        metrics.watch_error("entry");
        metrics.watch_error("catalog");
        metrics.reaction(Duration::from_millis(120));
        metrics.reaction(Duration::from_secs(3));
        let text = render(&metrics.snapshot(), &healthy(), &process());
        let want = format!(
            r#"# HELP ism_build_info The daemon's version; always 1.
# TYPE ism_build_info gauge
ism_build_info{{version="{version}"}} 1
# HELP ism_up 1 when the last reconcile succeeded (/health answers 200), 0 otherwise.
# TYPE ism_up gauge
ism_up 1
# HELP ism_exposed_services Services the gateway currently exposes.
# TYPE ism_exposed_services gauge
ism_exposed_services 3
# HELP ism_warnings Warnings currently standing (bad tags, host conflicts, ...); the log names each.
# TYPE ism_warnings gauge
ism_warnings 2
# HELP ism_last_sync_timestamp_seconds When the last successful reconcile ended, in seconds since the epoch; 0 before the first.
# TYPE ism_last_sync_timestamp_seconds gauge
ism_last_sync_timestamp_seconds 1700000000.25
# HELP ism_reconciles_total Reconciles, by result.
# TYPE ism_reconciles_total counter
ism_reconciles_total{{result="ok"}} 2
ism_reconciles_total{{result="error"}} 1
# HELP ism_writes_total Writes to Consul, by what they changed and how they ended.
# TYPE ism_writes_total counter
ism_writes_total{{kind="config_entry",result="ok"}} 1
ism_writes_total{{kind="config_entry",result="cas_conflict"}} 1
ism_writes_total{{kind="config_entry",result="error"}} 0
ism_writes_total{{kind="registration",result="ok"}} 1
ism_writes_total{{kind="registration",result="cas_conflict"}} 0
ism_writes_total{{kind="registration",result="error"}} 0
ism_writes_total{{kind="service_defaults",result="ok"}} 0
ism_writes_total{{kind="service_defaults",result="cas_conflict"}} 0
ism_writes_total{{kind="service_defaults",result="error"}} 0
ism_writes_total{{kind="intentions",result="ok"}} 0
ism_writes_total{{kind="intentions",result="cas_conflict"}} 0
ism_writes_total{{kind="intentions",result="error"}} 0
ism_writes_total{{kind="route",result="ok"}} 0
ism_writes_total{{kind="route",result="cas_conflict"}} 0
ism_writes_total{{kind="route",result="error"}} 1
# HELP ism_consul_requests_total Requests to the Consul agent, by endpoint (path template) and status code ('error' when no answer).
# TYPE ism_consul_requests_total counter
ism_consul_requests_total{{endpoint="/v1/catalog/services",code="200"}} 2
ism_consul_requests_total{{endpoint="/v1/config",code="500"}} 1
ism_consul_requests_total{{endpoint="/v1/config",code="error"}} 1
# HELP ism_watch_errors_total Failed reads of a watch, by watch.
# TYPE ism_watch_errors_total counter
ism_watch_errors_total{{watch="catalog"}} 2
ism_watch_errors_total{{watch="entry"}} 1
# HELP ism_reaction_seconds Seconds from a watch answer that changed the plan to the last write that carried it out.
# TYPE ism_reaction_seconds histogram
ism_reaction_seconds_bucket{{le="0.005"}} 0
ism_reaction_seconds_bucket{{le="0.01"}} 0
ism_reaction_seconds_bucket{{le="0.025"}} 0
ism_reaction_seconds_bucket{{le="0.05"}} 0
ism_reaction_seconds_bucket{{le="0.1"}} 0
ism_reaction_seconds_bucket{{le="0.25"}} 1
ism_reaction_seconds_bucket{{le="0.5"}} 1
ism_reaction_seconds_bucket{{le="1"}} 1
ism_reaction_seconds_bucket{{le="2.5"}} 1
ism_reaction_seconds_bucket{{le="5"}} 2
ism_reaction_seconds_bucket{{le="10"}} 2
ism_reaction_seconds_bucket{{le="30"}} 2
ism_reaction_seconds_bucket{{le="60"}} 2
ism_reaction_seconds_bucket{{le="+Inf"}} 2
ism_reaction_seconds_sum 3.12
ism_reaction_seconds_count 2
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 9437184
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 1.25
# HELP process_open_fds Number of open file descriptors.
# TYPE process_open_fds gauge
process_open_fds 16
# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1699999000.5
"#,
            version = env!("CARGO_PKG_VERSION")
        );
        assert_eq!(text, want);
    }

    #[test]
    fn state_gauges_follow_health_and_empty_families_keep_their_header() {
        let text = render(
            &Snapshot::default(),
            &HealthState::starting(),
            &Process::default(),
        );
        for line in [
            "ism_up 0\n",
            "ism_exposed_services 0\n",
            "ism_warnings 0\n",
            "ism_last_sync_timestamp_seconds 0\n",
            "ism_reconciles_total{result=\"ok\"} 0\n",
            "ism_reconciles_total{result=\"error\"} 0\n",
            "# TYPE ism_consul_requests_total counter\n# HELP ism_watch_errors_total",
            "# TYPE ism_watch_errors_total counter\n# HELP ism_reaction_seconds",
            "ism_reaction_seconds_bucket{le=\"+Inf\"} 0\nism_reaction_seconds_sum 0\nism_reaction_seconds_count 0\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        // /proc unreadable: those families are left out, not reported as 0.
        assert!(!text.contains("process_"), "{text}");
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let cases = [
            ("plain", "plain"),
            ("a\"b", "a\\\"b"),
            ("back\\slash", "back\\\\slash"),
            ("two\nlines", "two\\nlines"),
            ("\\\"\n", "\\\\\\\"\\n"),
            ("ünïcode {x}", "ünïcode {x}"),
        ];
        for (raw, want) in cases {
            assert_eq!(escape_label(raw), want, "{raw:?}");
        }
        assert_eq!(escape_help("a \"q\" \\ b\nc"), "a \"q\" \\\\ b\\nc");
        let metrics = Metrics::new();
        metrics.consul_request("/v1/x\"y\\z\n", Some(200));
        let text = render(&metrics.snapshot(), &healthy(), &Process::default());
        assert!(
            text.contains(
                "ism_consul_requests_total{endpoint=\"/v1/x\\\"y\\\\z\\n\",code=\"200\"} 1\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn histogram_buckets_are_inclusive_upper_bounds() {
        // (observed seconds, index of the bucket it lands in)
        let last = REACTION_BUCKETS.len();
        let cases = [
            (0.0, 0),
            (0.005, 0),
            (0.0051, 1),
            (0.1, 4),
            (1.0, 7),
            (60.0, last - 1),
            (60.5, last),
            (1e9, last),
        ];
        for (seconds, bucket) in cases {
            let mut h = Histogram::default();
            h.observe(seconds);
            let mut want = [0u64; REACTION_BUCKETS.len() + 1];
            want[bucket] = 1;
            assert_eq!(h.counts, want, "{seconds}");
            assert_eq!((h.sum, h.count), (seconds, 1), "{seconds}");
        }
    }

    #[test]
    fn rendered_buckets_are_cumulative_and_end_at_the_count() {
        let metrics = Metrics::new();
        for ms in [1, 7, 7, 200, 200, 200, 90_000] {
            metrics.reaction(Duration::from_millis(ms));
        }
        let text = render(&metrics.snapshot(), &healthy(), &Process::default());
        let buckets: Vec<(String, u64)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("ism_reaction_seconds_bucket{le=\""))
            .filter_map(|l| l.split_once("\"} "))
            .map(|(le, n)| (le.to_string(), n.parse().expect("count")))
            .collect();
        let want: Vec<(String, u64)> = [
            ("0.005", 1),
            ("0.01", 3),
            ("0.025", 3),
            ("0.05", 3),
            ("0.1", 3),
            ("0.25", 6),
            ("0.5", 6),
            ("1", 6),
            ("2.5", 6),
            ("5", 6),
            ("10", 6),
            ("30", 6),
            ("60", 6),
            ("+Inf", 7),
        ]
        .iter()
        .map(|(le, n)| (le.to_string(), *n))
        .collect();
        assert_eq!(buckets, want);
        assert!(text.contains("ism_reaction_seconds_count 7\n"), "{text}");
        let sum: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("ism_reaction_seconds_sum "))
            .and_then(|v| v.parse().ok())
            .expect("sum");
        assert!((sum - 90.615).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn request_codes_are_bounded() {
        let metrics = Metrics::new();
        for code in 0..(MAX_REQUEST_SERIES as u16 + 50) {
            metrics.consul_request("/v1/catalog/services", Some(1000 + code));
        }
        // A pair already seen still counts as itself once the cap is reached.
        metrics.consul_request("/v1/catalog/services", Some(1000));
        let s = metrics.snapshot();
        assert_eq!(s.consul_requests.len(), MAX_REQUEST_SERIES + 1);
        assert_eq!(
            s.consul_requests[&("/v1/catalog/services", Code::Other)],
            50
        );
        assert_eq!(
            s.consul_requests[&("/v1/catalog/services", Code::Status(1000))],
            2
        );
    }

    #[test]
    fn reaction_runs_from_the_first_change_to_the_pass_that_wrote_it() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // (trigger of the pass, offset it ends at, ok, wrote, observed)
        type Step = (Option<u64>, u64, bool, bool, Option<u64>);
        let cases: [(&str, &[Step]); 6] = [
            (
                "a change written at once",
                &[(Some(0), 120, true, true, Some(120))],
            ),
            (
                "a change that wrote nothing",
                &[(Some(0), 5, true, false, None)],
            ),
            ("an agent check that wrote", &[(None, 5, true, true, None)]),
            (
                "failed, then retried without a new change",
                &[
                    (Some(0), 50, false, true, None),
                    (None, 900, true, true, Some(900)),
                ],
            ),
            (
                "failed, then a later change: the first one counts",
                &[
                    (Some(0), 50, false, false, None),
                    (Some(400), 450, true, true, Some(450)),
                ],
            ),
            (
                "each change after a success counts from itself",
                &[
                    (Some(0), 100, true, true, Some(100)),
                    (Some(300), 310, true, true, Some(10)),
                    (None, 400, true, true, None),
                ],
            ),
        ];
        for (name, steps) in cases {
            let mut reaction = Reaction::default();
            for (i, (trigger, end, ok, wrote, want)) in steps.iter().enumerate() {
                reaction.started(trigger.map(|t| t0 + ms(t)));
                let got = reaction.ended(t0 + ms(*end), *ok, *wrote);
                assert_eq!(got, want.map(ms), "{name}, pass {i}");
            }
        }
    }

    #[test]
    fn write_kinds_and_results_of_entries_and_cas_answers() {
        assert_eq!(
            WriteKind::of_entry(Kind::IngressGateway),
            WriteKind::ConfigEntry
        );
        assert_eq!(
            WriteKind::of_entry(Kind::ServiceDefaults),
            WriteKind::ServiceDefaults
        );
        assert_eq!(WriteKind::of_entry(Kind::HttpRoute), WriteKind::Route);
        assert_eq!(
            WriteKind::of_entry(Kind::ApiGateway),
            WriteKind::ConfigEntry
        );
        assert_eq!(
            WriteKind::of_entry(Kind::ServiceIntentions),
            WriteKind::Intentions
        );
        assert_eq!(WriteResult::of_cas::<()>(&Ok(true)), WriteResult::Ok);
        assert_eq!(
            WriteResult::of_cas::<()>(&Ok(false)),
            WriteResult::CasConflict
        );
        assert_eq!(WriteResult::of_cas(&Err(())), WriteResult::Error);
    }

    #[test]
    fn floats_as_prometheus_reads_them() {
        let cases = [
            (0.0, "0"),
            (1.0, "1"),
            (0.005, "0.005"),
            (1_700_000_000.25, "1700000000.25"),
            (1e-7, "0.0000001"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for (value, want) in cases {
            assert_eq!(float(value), want);
        }
    }

    #[test]
    fn proc_stat_fields_are_counted_from_the_last_parenthesis() {
        let tail = "S 1 1234 1234 0 -1 4194560 1000 0 0 0 250 125 0 0 20 0 1 0 98765 10000000 2000 18446744073709551615";
        let cases = [
            (
                format!("4242 (ingress-servic) {tail}"),
                Some((250, 125, 98765)),
            ),
            // A comm with spaces and parentheses of its own.
            (format!("4242 (a) b (c) d) {tail}"), Some((250, 125, 98765))),
            ("4242 (x) S 1".to_string(), None),
            ("no parenthesis at all".to_string(), None),
            (format!("4242 (x) {}", tail.replace("250", "many")), None),
            (String::new(), None),
        ];
        for (text, want) in cases {
            let got = parse_stat(&text).map(|s| (s.utime, s.stime, s.start_ticks));
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn proc_status_and_boot_time() {
        let status = "Name:\tism\nVmHWM:\t   10000 kB\nVmRSS:\t    9216 kB\nThreads:\t1\n";
        assert_eq!(parse_rss_bytes(status), Some(9216 * 1024));
        assert_eq!(parse_rss_bytes("Name:\tism\n"), None);
        assert_eq!(parse_rss_bytes("VmRSS:\t9216 MB\n"), None);
        assert_eq!(parse_rss_bytes("VmRSS:\tlots kB\n"), None);
        let stat = "cpu  1 2 3 4\nintr 5\nctxt 6\nbtime 1764612345\nprocesses 7\n";
        assert_eq!(parse_boot_time(stat), Some(1_764_612_345));
        assert_eq!(parse_boot_time("cpu 1 2 3\n"), None);
        assert_eq!(parse_boot_time("btime soon\n"), None);
    }

    #[test]
    fn reads_this_process_from_proc() {
        let p = Process::read();
        let rss = p.resident_memory_bytes.expect("rss");
        assert!(rss > 1024 * 1024, "{rss}");
        assert!(p.cpu_seconds.expect("cpu") >= 0.0);
        assert!(p.open_fds.expect("fds") >= 3);
        let now = epoch_seconds(SystemTime::now());
        let start = p.start_time_seconds.expect("start");
        // Started before now, and not before this test binary could have been built.
        assert!(
            start <= now + 1.0 && start > now - 86_400.0,
            "{start} vs {now}"
        );
    }
}
