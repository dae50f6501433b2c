//! Soak: the daemon under a steady stream of catalog changes for minutes, against the
//! simulator. Memory (RSS) must stay flat after warm-up, and open connections, file
//! descriptors and threads must not grow. Prints the figures.
//!
//! `SOAK_SECS` sets the length (default 300); `.ci/run` runs it with a bound that keeps
//! CI short while still making well over 10,000 changes.

mod common;

use std::time::{Duration, Instant};

use common::*;

const SERVICES: usize = 50;
/// Versions each service's host cycles through, so the catalog's size stays bounded and
/// any growth is the daemon's.
const VERSIONS: usize = 4;
const WARM_UP: Duration = Duration::from_secs(20);
const PAUSE: Duration = Duration::from_millis(5);

fn tag(service: usize, version: usize) -> String {
    format!("gw-traefik.http.routers.s{service}.rule=Host(`s{service}-v{version}.example.com`)")
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    rss_kib: u64,
    fds: usize,
    threads: usize,
}

fn sample(pid: u32) -> Sample {
    let count = |dir: &str| {
        std::fs::read_dir(format!("/proc/{pid}/{dir}"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    Sample {
        rss_kib: proc_status_kib(pid, "VmRSS:"),
        fds: count("fd"),
        threads: count("task"),
    }
}

#[test]
#[ignore = "soak: minutes long; run by .ci/run"]
fn steady_churn_keeps_memory_connections_and_threads_flat() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let length = Duration::from_secs(secs);
    assert!(
        length > WARM_UP * 2,
        "SOAK_SECS={secs} leaves no time after the warm-up"
    );
    let sim = sim_http();
    let mut versions = vec![0usize; SERVICES];
    for i in 0..SERVICES {
        sim.add_service(service(&format!("svc{i:02}"), &[tag(i, 0).as_str()]));
    }
    let mut env = base_env(&sim);
    env.retain(|(k, _)| k != "RUST_LOG");
    env.push(("RUST_LOG".into(), "warn".into()));
    let daemon = Daemon::start(&env);
    wait_until(EVENTUALLY, "first convergence", || {
        routes(&sim, 9997).len() == SERVICES
    });

    let started = Instant::now();
    let mut changes = 0u64;
    let mut warm: Option<(Sample, usize)> = None;
    let mut samples: Vec<Sample> = Vec::new();
    let mut next_sample = started + WARM_UP;
    while started.elapsed() < length {
        let i = (changes as usize * 7) % SERVICES;
        versions[i] = (versions[i] + 1) % VERSIONS;
        sim.set_service_tags(
            "node-1",
            &format!("svc{i:02}"),
            &[tag(i, versions[i]).as_str()],
        );
        changes += 1;
        std::thread::sleep(PAUSE); // the load's pace, not a synchronisation
        if Instant::now() >= next_sample {
            let s = sample(daemon.pid());
            if warm.is_none() {
                warm = Some((s, sim.open_connections()));
            }
            samples.push(s);
            next_sample += Duration::from_secs(10);
        }
    }
    // After the churn, the daemon must still converge to the final catalog.
    let expected: Vec<(String, Vec<String>)> = (0..SERVICES)
        .map(|i| {
            (
                format!("svc{i:02}"),
                vec![format!("s{i}-v{}.example.com", versions[i])],
            )
        })
        .collect();
    wait_until(EVENTUALLY, "converged after the churn", || {
        routes(&sim, 9997) == expected
    });
    let end = sample(daemon.pid());
    let connections = sim.open_connections();
    let (warm, warm_connections) = warm.expect("sampled after the warm-up");
    let peak = samples
        .iter()
        .map(|s| s.rss_kib)
        .max()
        .unwrap_or(warm.rss_kib);
    let entry_writes = sim.entry_writes("ingress-gateway", GATEWAY);
    eprintln!(
        "soak {secs} s: {changes} catalog changes ({:.0}/s), {entry_writes} entry writes; \
         RSS after warm-up {} KiB, peak after {} KiB, end {} KiB; fds {} -> {}; threads {} -> {}; \
         connections to the agent {warm_connections} -> {connections}",
        changes as f64 / secs as f64,
        warm.rss_kib,
        peak,
        end.rss_kib,
        warm.fds,
        end.fds,
        warm.threads,
        end.threads,
    );
    assert!(changes >= 10_000 || secs < 120, "only {changes} changes");
    // Flat: the allocator may hold a little more after a busy moment, never a trend.
    let allowed = warm.rss_kib + warm.rss_kib / 10 + 1024;
    assert!(
        peak <= allowed,
        "RSS grew from {} KiB to {peak} KiB",
        warm.rss_kib
    );
    assert!(
        end.fds <= warm.fds,
        "file descriptors grew: {} -> {}",
        warm.fds,
        end.fds
    );
    assert!(
        end.threads <= warm.threads,
        "threads grew: {} -> {}",
        warm.threads,
        end.threads
    );
    assert!(
        connections <= warm_connections && connections <= 5,
        "connections: {warm_connections} -> {connections}"
    );
    drop(daemon);
}
