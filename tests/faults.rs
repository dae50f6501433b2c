//! Faults of the agent, each an integration test of the real binary: the agent restarts
//! in the middle of a write, connections reset under blocking queries, the agent's
//! connection limit answers 429, and a snapshot restore sends every index backwards.
//! Each time the daemon converges afterwards, without a restart.

mod common;

use std::time::Duration;

use common::proxy::{HostileProxy, Mode};
use common::*;

const SHOP: &str = "gw-traefik.http.routers.shop.rule=Host(`shop.example.com`)";
const CART: &str = "gw-traefik.http.routers.cart.rule=Host(`cart.example.com`)";
/// Longest backoff (30 s) plus room.
const AFTER_BACKOFF: Duration = Duration::from_secs(45);

fn shop_and_cart() -> Vec<(String, Vec<String>)> {
    vec![
        route("cart", &["cart.example.com"]),
        route("shop", &["shop.example.com"]),
    ]
}

#[test]
fn the_agent_restarting_mid_write_loses_nothing() {
    let sim = sim_http();
    sim.add_service(service("shop", &[SHOP]));
    let proxy = HostileProxy::start(sim.addr().port());
    let daemon = Daemon::start(&with(base_env(&sim), &[("CONSULHTTPURL", &proxy.url())]));
    wait_until(EVENTUALLY, "converged", || {
        routes(&sim, 9997) == [route("shop", &["shop.example.com"])]
    });

    // The next write dies with the agent, which comes back without our registration.
    proxy.set(Mode::ResetWrites);
    sim.add_service(service("cart", &[CART]));
    daemon.wait_output(EVENTUALLY, "PUT /v1/config: connection");
    sim.restart_agent();
    assert!(sim.agent_service(INGRESS_ID).is_none());
    proxy.set(Mode::Pass);

    wait_until(AFTER_BACKOFF, "entry written after the restart", || {
        routes(&sim, 9997) == shop_and_cart()
    });
    wait_until(AFTER_BACKOFF, "registration back with cart's tag", || {
        ingress_tags(&sim).is_some_and(|t| t.iter().any(|tag| tag.contains("cart.example.com")))
    });
    wait_until(EVENTUALLY, "/health ok", || daemon.health().0 == 200);
}

#[test]
fn connections_reset_under_blocking_queries_are_reopened() {
    let sim = sim_http();
    sim.add_service(service("shop", &[SHOP]));
    let daemon = Daemon::start(&base_env(&sim));
    wait_until(EVENTUALLY, "converged", || {
        routes(&sim, 9997) == [route("shop", &["shop.example.com"])]
    });
    wait_until(EVENTUALLY, "five connections", || {
        sim.open_connections() == 5
    });

    // Every parked long poll loses its connection at once.
    sim.stop_listening();
    sim.start_listening();
    sim.add_service(service("cart", &[CART]));
    wait_until(AFTER_BACKOFF, "the change after the reset is seen", || {
        routes(&sim, 9997) == shop_and_cart()
    });
    wait_until(AFTER_BACKOFF, "back to five connections", || {
        sim.open_connections() == 5
    });
    let requests = sim.requests().len();
    std::thread::sleep(Duration::from_secs(2)); // the window measured: no hot reconnect loop
    let extra = sim.requests().len() - requests;
    assert!(extra <= 2, "{extra} requests in 2 s after recovering");
    wait_until(EVENTUALLY, "/health ok", || daemon.health().0 == 200);
}

#[test]
fn the_agents_connection_limit_is_reported_and_survived() {
    let sim = sim_http();
    sim.add_service(service("shop", &[SHOP]));
    // Below the daemon's five connections: some of its requests get 429.
    sim.set_max_conns_per_client(Some(3));
    let daemon = Daemon::start(&base_env(&sim));
    daemon.wait_output(
        EVENTUALLY,
        "429 Your IP is issuing too many concurrent connections",
    );
    daemon.wait_output(EVENTUALLY, "http_max_conns_per_client");
    wait_until(EVENTUALLY, "/health 503", || daemon.health().0 == 503);

    sim.set_max_conns_per_client(Some(5));
    sim.add_service(service("cart", &[CART]));
    wait_until(AFTER_BACKOFF, "converged once the limit allows it", || {
        routes(&sim, 9997) == shop_and_cart()
    });
    wait_until(AFTER_BACKOFF, "/health ok", || daemon.health().0 == 200);
}

#[test]
fn an_index_reset_is_followed_by_a_fresh_read() {
    let sim = sim_http();
    sim.add_service(service("shop", &[SHOP]));
    let daemon = Daemon::start(&base_env(&sim));
    wait_until(EVENTUALLY, "converged", || {
        routes(&sim, 9997) == [route("shop", &["shop.example.com"])]
    });
    // Make the indexes the daemon holds large, so the restore clearly goes backwards.
    for i in 0..20 {
        sim.set_service_tags("node-1", "shop", &[SHOP, &format!("other-{i}")]);
    }
    let before = sim.indexes();

    let parked_before = sim.in_flight().iter().map(|r| r.0).max().unwrap_or(0);
    sim.reset_index();
    assert!(
        sim.indexes().0 < before.0,
        "the restore moved the services index back"
    );
    // The catalog watch parks again. With an index from after the restore it wakes on the
    // next change; a watch that kept its old index would block the whole wait (5 min).
    wait_until(EVENTUALLY, "the catalog watch parked again", || {
        catalog_watch_parked(&sim, parked_before)
    });
    sim.add_service(service("cart", &[CART]));
    wait_until(EVENTUALLY, "the change after the restore is seen", || {
        routes(&sim, 9997) == shop_and_cart()
    });
    wait_until(EVENTUALLY, "/health ok", || daemon.health().0 == 200);
}

#[test]
fn a_passing_error_clears_from_health_without_a_catalog_change() {
    let sim = sim_http();
    sim.add_service(service("shop", &[SHOP]));
    let daemon = Daemon::start(&base_env(&sim));
    wait_until(EVENTUALLY, "converged", || {
        routes(&sim, 9997) == [route("shop", &["shop.example.com"])]
    });
    wait_until(EVENTUALLY, "/health ok", || daemon.health().0 == 200);
    wait_until(EVENTUALLY, "the catalog watch parked", || {
        catalog_watch_parked(&sim, 0)
    });

    // Every parked watch loses its connection; nothing in Consul changes afterwards, so
    // a watch that went back to waiting on its old index would keep the error (and
    // /health at 503) for the whole blocking wait.
    let indexes = sim.indexes();
    sim.stop_listening();
    wait_until(EVENTUALLY, "/health reports the broken watches", || {
        daemon.health().0 == 503
    });
    sim.start_listening();
    wait_until(EVENTUALLY, "/health ok again", || daemon.health().0 == 200);
    daemon.wait_output(EVENTUALLY, "succeeded again");
    assert_eq!(
        sim.indexes(),
        indexes,
        "nothing changed in Consul meanwhile"
    );
}
