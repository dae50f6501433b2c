//! Hostile responses: the daemon talks to the simulator through a proxy that, when told
//! to, answers the catalog watch with a huge body, a truncated one, one that is not JSON,
//! or one that trickles in a byte per second. Each time the daemon must stay up with
//! bounded memory and time, report the problem (in the log and on /health), and converge
//! again once the agent behaves. And hostile clients: a flood of idle connections and a
//! slow one must not keep a health checker from its answer.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proxy::{HostileProxy, Mode};
use common::*;
use consul_sim::Sim;

/// Converges through the proxy, turns `mode` on and triggers a new catalog read, waits
/// for `symptom` in the log and a 503 on /health, then turns it off and checks that the
/// daemon converges on the next change. Returns the daemon (still running).
fn survives(mode: Mode, symptom: &str) -> Daemon {
    let sim = sim_http();
    sim.add_service(service(
        "shop",
        &["gw-traefik.http.routers.shop.rule=Host(`shop.example.com`)"],
    ));
    let proxy = HostileProxy::start(sim.addr().port());
    let daemon = Daemon::start(&with(base_env(&sim), &[("CONSULHTTPURL", &proxy.url())]));
    wait_until(EVENTUALLY, "converged through the proxy", || {
        routes(&sim, 9997) == [route("shop", &["shop.example.com"])]
    });

    proxy.set(mode);
    // The catalog watch is parked in a blocking query; a change makes it ask again.
    sim.add_service(service(
        "cart",
        &["gw-traefik.http.routers.cart.rule=Host(`cart.example.com`)"],
    ));
    daemon.wait_output(Duration::from_secs(30), symptom);
    wait_until(EVENTUALLY, "/health reports the problem", || {
        daemon.health().0 == 503
    });

    proxy.set(Mode::Pass);
    recover(&sim, &daemon);
    daemon
}

fn recover(sim: &Sim, daemon: &Daemon) {
    sim.add_service(service(
        "blog",
        &["gw-traefik.http.routers.blog.rule=Host(`blog.example.com`)"],
    ));
    let all = vec![
        route("blog", &["blog.example.com"]),
        route("cart", &["cart.example.com"]),
        route("shop", &["shop.example.com"]),
    ];
    // The backoff after the failures is at most 30 s.
    wait_until(
        Duration::from_secs(45),
        "converged once the agent behaves",
        || routes(sim, 9997) == all,
    );
    wait_until(EVENTUALLY, "/health ok again", || daemon.health().0 == 200);
}

#[test]
fn a_huge_catalog_is_cut_at_the_cap_with_bounded_memory() {
    let daemon = survives(Mode::Huge(50 * 1024 * 1024), "over the 32 MiB cap");
    let peak = proc_status_kib(daemon.pid(), "VmHWM:");
    eprintln!("peak RSS with a 50 MB catalog offered: {peak} KiB");
    // The cap (32 MiB) plus what the daemon needs anyway; reading the whole 50 MB, or
    // decoding it, would be far above.
    assert!(peak < 48 * 1024, "peak RSS {peak} KiB");
}

#[test]
fn a_truncated_catalog_is_an_error_not_a_crash() {
    survives(
        Mode::Truncated,
        "GET /v1/catalog/services: connection broke",
    );
}

#[test]
fn a_catalog_that_is_not_json_is_an_error_not_a_crash() {
    survives(
        Mode::NotJson,
        "GET /v1/catalog/services: unexpected response body",
    );
}

#[test]
fn a_catalog_that_trickles_in_times_out() {
    survives(Mode::Slow, "did not arrive within 10s of its headers");
}

/// A GET /health on a fresh connection -> (status, how long the answer took), or why it
/// failed; gives up after `limit`.
fn timed_health(port: u16, limit: Duration) -> Result<(u16, Duration), String> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(limit))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    stream
        .read_exact(&mut head)
        .map_err(|e| format!("no answer after {:?}: {e}", started.elapsed()))?;
    let status = std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {head:?}"))?;
    Ok((status, started.elapsed()))
}

#[test]
fn health_answers_within_a_second_behind_a_flood_of_idle_connections() {
    let sim = sim_http();
    sim.add_service(service(
        "shop",
        &["gw-traefik.http.routers.shop.rule=Host(`shop.example.com`)"],
    ));
    let daemon = Daemon::start(&base_env(&sim));
    wait_until(EVENTUALLY, "/health ok", || daemon.health().0 == 200);
    let port = daemon.health_port();

    // One client sends its headers at a byte per second, for as long as the test runs;
    // closed by the daemon (evicted or timed out), it connects again: the load stays.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let trickle = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let request = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n";
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut slow) = TcpStream::connect(("127.0.0.1", port)) else {
                    return;
                };
                for byte in request {
                    if stop.load(Ordering::Relaxed) || slow.write_all(&[*byte]).is_err() {
                        break;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    // The pace is the behaviour under test, not a wait for a condition.
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        })
    };
    // 200 idle connections that never send a byte, held open by this test.
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    wait_until(EVENTUALLY, "the slow client under way", || {
        sent.load(Ordering::Relaxed) >= 2
    });

    for probe in 1..=3 {
        match timed_health(port, Duration::from_secs(1)) {
            Ok((status, took)) => {
                eprintln!("probe {probe} behind 200 idle connections and a slow client: {took:?}");
                assert_eq!(status, 200, "probe {probe}");
                assert!(took < Duration::from_secs(1), "probe {probe} took {took:?}");
            }
            Err(why) => panic!("probe {probe}: {why}"),
        }
    }
    // Bounded in descriptors: the connection cap plus the daemon's own (Consul
    // connections, listener, stdio), not one per idle client.
    let fds = std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
        .expect("daemon's fds")
        .count();
    eprintln!("descriptors open in the daemon under that load: {fds}");
    assert!(fds < 64, "{fds} descriptors open in the daemon");

    stop.store(true, Ordering::Relaxed);
    drop(idle);
    trickle.join().expect("slow client");
}
