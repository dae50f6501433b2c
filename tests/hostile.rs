//! Hostile responses: the daemon talks to the simulator through a proxy that, when told
//! to, answers the catalog watch with a huge body, a truncated one, one that is not JSON,
//! or one that trickles in a byte per second. Each time the daemon must stay up with
//! bounded memory and time, report the problem (in the log and on /health), and converge
//! again once the agent behaves.

mod common;

use std::time::Duration;

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
