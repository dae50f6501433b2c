//! `/metrics` of the real binary: the families and the state gauges against the simulator,
//! the counters moving with what the daemon does (a change, a CAS miss, refused writes,
//! a burst of 500s on the catalog read) with labels that stay bounded, the Nomad jobs
//! advertising the endpoint, the output judged by the real `promtool check metrics`, and
//! a real Prometheus scraping the daemon on loopback and answering a query with what it
//! scraped.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use consul_sim::Fault;
use ingress_service_monitor::health::HealthState;
use ingress_service_monitor::metrics::{render, Metrics, Process, WriteKind, WriteResult};
use serde_json::{json, Value};

const SHOP: &str = "gw-traefik.http.routers.shop.rule=Host(`shop.example.com`)";
const CART: &str = "gw-traefik.http.routers.cart.rule=Host(`cart.example.com`)";

/// Every family `/metrics` must always carry, with its type.
const FAMILIES: [(&str, &str); 14] = [
    ("ism_build_info", "gauge"),
    ("ism_up", "gauge"),
    ("ism_exposed_services", "gauge"),
    ("ism_warnings", "gauge"),
    ("ism_last_sync_timestamp_seconds", "gauge"),
    ("ism_reconciles_total", "counter"),
    ("ism_writes_total", "counter"),
    ("ism_consul_requests_total", "counter"),
    ("ism_watch_errors_total", "counter"),
    ("ism_reaction_seconds", "histogram"),
    ("process_resident_memory_bytes", "gauge"),
    ("process_cpu_seconds_total", "counter"),
    ("process_open_fds", "gauge"),
    ("process_start_time_seconds", "gauge"),
];

/// `GET /metrics` -> (status, Content-Type, body).
fn scrape(port: u16) -> (u16, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut raw = String::new();
    let _ = stream.read_to_string(&mut raw); // a reset after the body is fine
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|l| {
            l.split_once(": ")
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        })
        .map(|(_, v)| v.to_string())
        .unwrap_or_default();
    (status, content_type, body.to_string())
}

/// The value of the sample named exactly `series` (name and labels as rendered).
fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_follow_the_daemon_state() {
    let sim = sim_http();
    sim.add_service(service("shop", &[SHOP]));
    let daemon = Daemon::start(&base_env(&sim));
    let port = daemon.health_port();
    wait_until(EVENTUALLY, "ism_up 1 with one service exposed", || {
        let body = scrape(port).2;
        value(&body, "ism_up") == Some(1.0) && value(&body, "ism_exposed_services") == Some(1.0)
    });

    let (status, content_type, body) = scrape(port);
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    for (name, kind) in FAMILIES {
        assert!(
            body.contains(&format!("\n# TYPE {name} {kind}\n")),
            "{name} ({kind}) missing:\n{body}"
        );
    }
    let version = format!(
        "ism_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&body, &version), Some(1.0), "{body}");
    assert_eq!(value(&body, "ism_warnings"), Some(0.0));
    // The last sync is the one /health reports, a moment ago.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let synced = value(&body, "ism_last_sync_timestamp_seconds").expect("last sync");
    assert!(
        synced > now - 60.0 && synced <= now + 1.0,
        "{synced} vs {now}"
    );
    // The process figures are the daemon's own, not this test's.
    let rss = value(&body, "process_resident_memory_bytes").expect("rss");
    let rss_kib = proc_status_kib(daemon.pid(), "VmRSS:") as f64;
    assert!(
        (rss / 1024.0 - rss_kib).abs() < 4096.0,
        "{rss} bytes vs {rss_kib} KiB"
    );
    let fds = value(&body, "process_open_fds").expect("fds");
    assert!((4.0..64.0).contains(&fds), "{fds}");

    // Writes fail: ism_up drops to 0 as /health turns 503, and comes back with it.
    sim.inject(Fault {
        method: Some("PUT".into()),
        path_prefix: "/v1/config".into(),
        status: 500,
        body: "raft apply failed: leadership lost while committing log".into(),
        count: 1_000,
    });
    sim.add_service(service("cart", &[CART]));
    wait_until(EVENTUALLY, "ism_up 0 while writes fail", || {
        value(&scrape(port).2, "ism_up") == Some(0.0)
    });
    assert_eq!(daemon.health().0, 503);
    let body = scrape(port).2;
    let failed = "ism_writes_total{kind=\"config_entry\",result=\"error\"}";
    assert!(value(&body, failed) >= Some(1.0), "{body}");
    assert!(
        value(&body, "ism_reconciles_total{result=\"error\"}") >= Some(1.0),
        "{body}"
    );
    let refused = "ism_consul_requests_total{endpoint=\"/v1/config\",code=\"500\"}";
    assert!(value(&body, refused) >= Some(1.0), "{body}");
    sim.clear_faults();
    // The backoff after the failures is at most 30 s.
    wait_until(
        Duration::from_secs(45),
        "ism_up 1 with two services",
        || {
            let body = scrape(port).2;
            value(&body, "ism_up") == Some(1.0) && value(&body, "ism_exposed_services") == Some(2.0)
        },
    );
    assert_eq!(daemon.health().0, 200);
}

/// Every `name="value"` label pair of every sample.
fn labels(body: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, rest)) = line.split_once('{') else {
            continue;
        };
        let Some((inside, _)) = rest.rsplit_once('}') else {
            continue;
        };
        for pair in inside.split("\",") {
            if let Some((name, value)) = pair.split_once("=\"") {
                out.push((name.to_string(), value.trim_end_matches('"').to_string()));
            }
        }
    }
    out
}

/// The value of `series`, 0 when it is not there (yet).
fn count(body: &str, series: &str) -> f64 {
    value(body, series).unwrap_or(0.0)
}

const RECONCILED_OK: &str = "ism_reconciles_total{result=\"ok\"}";
const ENTRY_WRITTEN: &str = "ism_writes_total{kind=\"config_entry\",result=\"ok\"}";
const REGISTERED: &str = "ism_writes_total{kind=\"registration\",result=\"ok\"}";
const REACTIONS: &str = "ism_reaction_seconds_count";
const CATALOG_READ: &str =
    "ism_consul_requests_total{endpoint=\"/v1/catalog/services\",code=\"200\"}";
const CATALOG_ERRORS: &str = "ism_watch_errors_total{watch=\"catalog\"}";

#[test]
fn a_change_moves_the_counters_and_labels_stay_bounded() {
    let sim = sim_http();
    sim.add_service(service("shop", &[SHOP]));
    let daemon = Daemon::start(&base_env(&sim));
    let port = daemon.health_port();
    wait_until(EVENTUALLY, "the first sync counted", || {
        let body = scrape(port).2;
        value(&body, "ism_up") == Some(1.0) && count(&body, REACTIONS) >= 1.0
    });
    let before = scrape(port).2;
    for series in [RECONCILED_OK, ENTRY_WRITTEN, REGISTERED, CATALOG_READ] {
        assert!(count(&before, series) >= 1.0, "{series}:\n{before}");
    }

    // One change: a pass that writes the entry and the registration, timed.
    sim.add_service(service("cart", &[CART]));
    wait_until(EVENTUALLY, "cart exposed", || {
        value(&scrape(port).2, "ism_exposed_services") == Some(2.0)
    });
    let mut after = String::new();
    wait_until(EVENTUALLY, "every counter of the change moved", || {
        after = scrape(port).2;
        [
            RECONCILED_OK,
            ENTRY_WRITTEN,
            REGISTERED,
            REACTIONS,
            CATALOG_READ,
        ]
        .iter()
        .all(|series| count(&after, series) > count(&before, series))
    });
    let reaction =
        count(&after, "ism_reaction_seconds_sum") - count(&before, "ism_reaction_seconds_sum");
    assert!(
        reaction > 0.0 && reaction < 10.0,
        "the change took {reaction} s to write"
    );
    // Nothing failed.
    for series in [
        "ism_reconciles_total{result=\"error\"}",
        "ism_writes_total{kind=\"config_entry\",result=\"error\"}",
        "ism_writes_total{kind=\"registration\",result=\"error\"}",
    ] {
        assert_eq!(count(&after, series), 0.0, "{series}:\n{after}");
    }

    assert_labels_bounded(&after, &["shop", "cart"]);
}

/// Labels are templates and fixed names: no service (`services`), gateway or ID name, no
/// query.
fn assert_labels_bounded(body: &str, services: &[&str]) {
    let pairs = labels(body);
    assert!(pairs.iter().any(|(name, _)| name == "endpoint"), "{body}");
    for (name, value) in &pairs {
        for word in services
            .iter()
            .chain(&[GATEWAY, INGRESS_ID, "?", "=", "&", "%"])
        {
            assert!(
                !value.contains(word),
                "label {name}=\"{value}\" holds {word:?}:\n{body}"
            );
        }
        if name == "endpoint" {
            assert!(
                value.starts_with("/v1/")
                    && value.chars().all(|c| c.is_ascii_lowercase()
                        || c.is_ascii_digit()
                        || "/{}-".contains(c)),
                "endpoint {value:?} is not a template:\n{body}"
            );
        }
    }
}

#[test]
fn api_mode_with_intentions_counts_route_and_intentions_writes_and_watches() {
    let sim = sim_http();
    sim.add_service(service("shop", &[SHOP]));
    let env = with(
        base_env(&sim),
        &[("CONSULGATEWAY", "api"), ("SETINTENTIONS", "true")],
    );
    let daemon = Daemon::start(&env);
    let port = daemon.health_port();
    let routes_written = "ism_writes_total{kind=\"route\",result=\"ok\"}";
    let intentions_written = "ism_writes_total{kind=\"intentions\",result=\"ok\"}";
    let listed = "ism_consul_requests_total{endpoint=\"/v1/config/{kind}\",code=\"200\"}";
    wait_until(EVENTUALLY, "route, intentions and gateway written", || {
        let body = scrape(port).2;
        value(&body, "ism_up") == Some(1.0)
            && [
                routes_written,
                intentions_written,
                ENTRY_WRITTEN,
                REGISTERED,
                listed,
            ]
            .iter()
            .all(|series| count(&body, series) >= 1.0)
    });
    let body = scrape(port).2;
    assert_labels_bounded(&body, &["shop"]);

    // Each list watch counts its own failures.
    for (path, watch) in [
        ("/v1/config/http-route", "routes"),
        ("/v1/config/service-intentions", "intentions"),
    ] {
        let series = format!("ism_watch_errors_total{{watch=\"{watch}\"}}");
        assert_eq!(count(&scrape(port).2, &series), 0.0, "{series}");
        sim.inject(Fault {
            method: Some("GET".into()),
            path_prefix: path.into(),
            status: 500,
            body: "No cluster leader".into(),
            count: 2,
        });
        // A change wakes the parked list query; the reads after it fail.
        sim.add_service(service(watch, &[&SHOP.replace("shop", watch)]));
        wait_until(EVENTUALLY, &format!("{series} counted"), || {
            count(&scrape(port).2, &series) >= 1.0
        });
    }
    wait_until(Duration::from_secs(45), "ism_up 1 again", || {
        value(&scrape(port).2, "ism_up") == Some(1.0)
    });
}

#[test]
fn a_cas_miss_counts_as_a_conflict_then_the_write_after_reading_again() {
    let sim = sim_http();
    sim.add_service(service("shop", &[SHOP]));
    let daemon = Daemon::start(&base_env(&sim));
    let port = daemon.health_port();
    wait_until(EVENTUALLY, "ism_up 1", || {
        value(&scrape(port).2, "ism_up") == Some(1.0)
    });
    let conflicts = "ism_writes_total{kind=\"config_entry\",result=\"cas_conflict\"}";
    let before = scrape(port).2;
    assert_eq!(count(&before, conflicts), 0.0, "{before}");

    // Another writer changes the entry between the daemon's read and its write.
    sim.put_config(
        json!({"Kind": "service-defaults", "Name": "db", "Protocol": "tcp"}),
        None,
    )
    .expect("accepted");
    let mut theirs = entry(&sim).expect("entry");
    if let Some(listeners) = theirs["Listeners"].as_array_mut() {
        listeners.push(json!({"Port": 5432, "Protocol": "tcp", "Services": [{"Name": "db"}]}));
    }
    sim.race_next_config_write(theirs)
        .expect("race entry valid");
    sim.add_service(service("cart", &[CART]));
    wait_until(
        EVENTUALLY,
        "the miss and the write after it counted",
        || {
            let body = scrape(port).2;
            count(&body, conflicts) == 1.0
                && count(&body, ENTRY_WRITTEN) > count(&before, ENTRY_WRITTEN)
                && value(&body, "ism_exposed_services") == Some(2.0)
        },
    );
    assert_eq!(
        routes(&sim, 5432),
        [route("db", &[])],
        "their listener kept"
    );
}

#[test]
fn a_burst_of_5xx_on_the_catalog_read_counts_and_drops_ism_up_until_recovery() {
    let sim = sim_http();
    sim.add_service(service("shop", &[SHOP]));
    let daemon = Daemon::start(&base_env(&sim));
    let port = daemon.health_port();
    wait_until(EVENTUALLY, "ism_up 1", || {
        value(&scrape(port).2, "ism_up") == Some(1.0)
    });
    assert_eq!(count(&scrape(port).2, CATALOG_ERRORS), 0.0);

    sim.inject(Fault {
        method: Some("GET".into()),
        path_prefix: "/v1/catalog/services".into(),
        status: 500,
        body: "No cluster leader".into(),
        count: 1_000,
    });
    // Wakes the parked catalog query; every read after it fails.
    sim.add_service(service("cart", &[CART]));
    wait_until(EVENTUALLY, "catalog errors counted, ism_up 0", || {
        let body = scrape(port).2;
        count(&body, CATALOG_ERRORS) >= 2.0 && value(&body, "ism_up") == Some(0.0)
    });
    assert_eq!(daemon.health().0, 503);
    let body = scrape(port).2;
    let refused = "ism_consul_requests_total{endpoint=\"/v1/catalog/services\",code=\"500\"}";
    assert!(count(&body, refused) >= 2.0, "{body}");
    for other in ["service_defaults", "proxy_defaults", "entry"] {
        let series = format!("ism_watch_errors_total{{watch=\"{other}\"}}");
        assert_eq!(count(&body, &series), 0.0, "{series}:\n{body}");
    }

    sim.clear_faults();
    // The watch's backoff is at most 30 s.
    wait_until(Duration::from_secs(45), "ism_up 1 with cart", || {
        let body = scrape(port).2;
        value(&body, "ism_up") == Some(1.0) && value(&body, "ism_exposed_services") == Some(2.0)
    });
    assert_eq!(daemon.health().0, 200);
}

/// The Nomad jobs register the daemon's service (the one checking `/health`) with the
/// `metrics` tag and `meta.metrics_path`, which a Consul-SD Prometheus keeps and follows.
#[test]
fn the_nomad_jobs_advertise_metrics_for_consul_discovery() {
    use hcl::{Block, Body, Expression};
    fn blocks<'a>(body: &'a Body, name: &'a str) -> impl Iterator<Item = &'a Block> + 'a {
        body.blocks().filter(move |b| b.identifier() == name)
    }
    fn attr<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
        body.attributes().find(|a| a.key() == key).map(|a| a.expr())
    }
    fn text(expr: Option<&Expression>) -> Option<&str> {
        match expr? {
            Expression::String(s) => Some(s),
            _ => None,
        }
    }
    for file in [
        "nomad/ingress-gateway.nomad.hcl",
        "nomad/api-gateway.nomad.hcl",
    ] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(file);
        let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        let body: Body = hcl::parse(&source).unwrap_or_else(|e| panic!("{file}: {e}"));
        let services: Vec<&Block> = blocks(&body, "job")
            .flat_map(|job| blocks(job.body(), "group"))
            .flat_map(|group| {
                blocks(group.body(), "task")
                    .filter(|t| {
                        t.labels().first().map(|l| l.as_str()) == Some("ingress-service-monitor")
                    })
                    .flat_map(|task| blocks(task.body(), "service"))
                    .chain(blocks(group.body(), "service"))
            })
            .filter(|service| {
                blocks(service.body(), "check")
                    .any(|check| text(attr(check.body(), "path")) == Some("/health"))
            })
            .collect();
        assert_eq!(services.len(), 1, "{file}: one service checks /health");
        let service = services[0].body();
        let tags: Vec<&str> = match attr(service, "tags") {
            Some(Expression::Array(items)) => items.iter().filter_map(|e| text(Some(e))).collect(),
            other => panic!("{file}: tags is {other:?}"),
        };
        assert!(tags.contains(&"metrics"), "{file}: tags {tags:?}");
        let meta = blocks(service, "meta")
            .next()
            .unwrap_or_else(|| panic!("{file}: no meta block"));
        assert_eq!(
            text(attr(meta.body(), "metrics_path")),
            Some("/metrics"),
            "{file}"
        );
    }
}

/// `promtool` from `PROMTOOL_BIN`, else the one on PATH (Debian's `prometheus` package).
fn promtool() -> String {
    std::env::var("PROMTOOL_BIN").unwrap_or_else(|_| "promtool".into())
}

/// Runs `promtool check metrics` on `text`; panics with its findings, or when it is missing.
fn promtool_check(text: &str, what: &str) {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (Debian package prometheus; .ci/run installs it)",
                promtool()
            )
        });
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "promtool check metrics on {what}: {} {findings}\n--- input ---\n{text}",
        out.status
    );
}

#[test]
#[ignore = "needs promtool (installed by .ci/run)"]
fn promtool_accepts_the_metrics() {
    // The daemon's own output, live.
    let sim = sim_http();
    sim.add_service(service("shop", &[SHOP]));
    let daemon = Daemon::start(&base_env(&sim));
    let port = daemon.health_port();
    wait_until(EVENTUALLY, "ism_up 1", || {
        value(&scrape(port).2, "ism_up") == Some(1.0)
    });
    promtool_check(&scrape(port).2, "the daemon's /metrics");

    // And with every family carrying samples, odd label values included.
    let metrics = Metrics::new();
    metrics.reconciled(true);
    metrics.reconciled(false);
    for kind in WriteKind::ALL {
        for result in WriteResult::ALL {
            metrics.write(kind, result);
        }
    }
    metrics.consul_request("/v1/catalog/services", Some(200));
    metrics.consul_request("/v1/config/{kind}/{name}", Some(404));
    metrics.consul_request("/v1/config", None);
    metrics.consul_request("/v1/odd \"quoted\" \\ path\nnext", Some(500));
    metrics.watch_error("catalog");
    metrics.watch_error("service_defaults");
    for ms in [3, 40, 150, 900, 70_000] {
        metrics.reaction(Duration::from_millis(ms));
    }
    let health = HealthState {
        problem: Some("PUT /v1/config: 500 \"raft\"\nsecond line".into()),
        last_sync: Some(SystemTime::now()),
        services_exposed: 7,
        warnings: 2,
    };
    promtool_check(
        &render(&metrics.snapshot(), &health, &Process::read()),
        "a registry with every family",
    );
}

/// A Prometheus server, killed (and its data removed) on drop.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Prometheus {
    /// Starts `PROMETHEUS_BIN` (else `prometheus` on PATH) scraping 127.0.0.1:`target`
    /// every second, and waits until it is ready.
    fn start(target: u16) -> Prometheus {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir =
            std::env::temp_dir().join(format!("ism-prometheus-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: ism\n    metrics_path: /metrics\n    \
                 static_configs:\n      - targets: [\"127.0.0.1:{target}\"]\n"
            ),
        )
        .expect("write prometheus.yml");
        // A port from the OS, released for Prometheus to take.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
        let bin = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".into());
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {bin}: {e} (Debian package prometheus; .ci/run installs it)")
            });
        let prometheus = Prometheus { child, dir, port };
        wait_until(Duration::from_secs(30), "Prometheus ready", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok() && http_get(port, "/-/ready").0 == 200
        });
        prometheus
    }

    /// The value of the single sample `query` returns now, if any.
    fn query(&self, query: &str) -> Option<f64> {
        let (status, body) = http_get(self.port, &format!("/api/v1/query?query={query}"));
        if status != 200 {
            return None;
        }
        let answer: Value = serde_json::from_str(&body).ok()?;
        answer["data"]["result"].as_array()?.first()?["value"][1]
            .as_str()?
            .parse()
            .ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill(); // may have exited already; either way it is gone after wait
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- prometheus log ---\n{}--- end ---", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir); // best effort: a temp dir
    }
}

#[test]
#[ignore = "needs prometheus (installed by .ci/run)"]
fn prometheus_scrapes_the_daemon() {
    let sim = sim_http();
    sim.add_service(service("shop", &[SHOP]));
    let daemon = Daemon::start(&base_env(&sim));
    let port = daemon.health_port();
    let prometheus = Prometheus::start(port);
    wait_until(
        Duration::from_secs(30),
        "Prometheus reads ism_exposed_services 1",
        || prometheus.query("ism_exposed_services") == Some(1.0),
    );
    // What it reads follows the daemon: a second service, scraped a second later.
    sim.add_service(service("cart", &[CART]));
    wait_until(
        Duration::from_secs(30),
        "Prometheus reads ism_exposed_services 2",
        || prometheus.query("ism_exposed_services") == Some(2.0),
    );
    // The scrape itself is healthy: Prometheus parsed every sample of the page.
    assert_eq!(prometheus.query("up"), Some(1.0));
    assert_eq!(prometheus.query("ism_up"), Some(1.0));
}
