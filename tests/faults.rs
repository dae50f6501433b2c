//! Faults of the agent, each an integration test of the real binary: the agent restarts
//! in the middle of a write, connections reset under blocking queries, the agent's
//! connection limit answers 429, a snapshot restore sends every index backwards, and an
//! answer of each watch arrives with a valid index but a body that does not decode.
//! Each time the daemon converges afterwards, without a restart.

mod common;

use std::time::Duration;

use common::proxy::{HostileProxy, Mode, Spoil, Spoiled};
use common::*;
use consul_sim::{Sim, SimOptions};
use serde_json::json;

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
    // The restore happens while the watch is parked at the latest index (the edits are
    // rate-limited by the watch's token bucket: a request sent after the restore with
    // the old index would block the whole wait, in Consul as in the simulator).
    wait_until(
        EVENTUALLY,
        "the catalog watch caught up with the edits",
        || parked_index(&sim, CATALOG_PATH) == Some(sim.indexes().0),
    );
    let before = sim.indexes();

    let parked_before = sim.in_flight().iter().map(|r| r.0).max().unwrap_or(0);
    sim.reset_index();
    assert!(
        sim.indexes().0 < before.0,
        "the restore moved the services index back"
    );
    // The catalog watch parks again. With an index from after the restore it wakes on the
    // next change; a watch that kept its old index would block the whole wait (5 min).
    wait_until(
        EVENTUALLY,
        "the catalog watch parked again after the restore",
        || {
            catalog_watch_parked(&sim, parked_before)
                && parked_index(&sim, CATALOG_PATH).is_some_and(|index| index <= sim.indexes().0)
        },
    );
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

// ------------------------------------------------------------ undecodable answers
//
// Consul, or a proxy in front of it, answers a blocking query with a valid
// X-Consul-Index and a body that does not decode. That answer carried a change: a watch
// that kept its index would block at it, and the change would wait for the next one
// (minutes or hours). Each test spoils exactly one answer carrying a change, changes
// nothing in Consul afterwards, and expects the change applied within a few seconds
// (the first backoff is 250 ms, then a non-blocking read).

const CATALOG_PATH: &str = "/v1/catalog/services";
const SERVICE_DEFAULTS_PATH: &str = "/v1/config/service-defaults";
const PROXY_DEFAULTS_PATH: &str = "/v1/config/proxy-defaults/global";
/// Backoff (250 ms at most the first time), a read, the debounce and the writes, on a
/// loaded machine. A watch that missed the change would wait for the whole blocking
/// wait (5 min).
const SPOILED_CHANGE_APPLIED: Duration = Duration::from_secs(5);

fn entry_path() -> String {
    format!("/v1/config/ingress-gateway/{GATEWAY}")
}

/// The daemon against `sim` through a proxy that can spoil answers.
fn through_proxy(sim: &Sim) -> (HostileProxy, Daemon) {
    let proxy = HostileProxy::start(sim.addr().port());
    let daemon = Daemon::start(&with(base_env(sim), &[("CONSULHTTPURL", &proxy.url())]));
    (proxy, daemon)
}

/// Whether the daemon is idle and has seen everything (given that it has made the
/// writes it needs): no write in flight, each of its four watches parked in a blocking query, the catalog one at the current services index (so after
/// our own registration) and the entry one at or after the entry's last write (so after
/// the echo of our own write). The simulator, like Consul, parks the other config-entry
/// watches until their own entry changes, at whatever index they last saw.
fn daemon_idle(sim: &Sim) -> bool {
    let parked = sim.in_flight();
    let parked_at = |path: &str| parked_index(sim, path);
    if parked.iter().any(|(_, method, _, _)| method != "GET") {
        return false; // a write in flight
    }
    let written = entry(sim)
        .and_then(|e| e["ModifyIndex"].as_u64())
        .unwrap_or(0);
    parked_at(CATALOG_PATH) == Some(sim.indexes().0.max(1))
        && parked_at(SERVICE_DEFAULTS_PATH).is_some()
        && parked_at(PROXY_DEFAULTS_PATH).is_some()
        && parked_at(&entry_path()).is_some_and(|index| index >= written)
}

/// The index of the blocking `GET path` parked at the simulator (the highest if several).
fn parked_index(sim: &Sim, path: &str) -> Option<u64> {
    sim.in_flight()
        .iter()
        .filter(|(_, method, p, _)| method == "GET" && p == path)
        .filter_map(|(_, _, _, query)| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix("index="))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .max()
}

/// Once the daemon is idle, makes `change` in Consul with the next answer on `path`
/// that carries a change spoiled as `spoil`; returns that answer once the proxy has
/// sent it.
fn change_with_one_answer_spoiled(
    sim: &Sim,
    proxy: &HostileProxy,
    path: &str,
    spoil: Spoil,
    change: impl FnOnce(),
) -> Spoiled {
    wait_until(EVENTUALLY, "the daemon idle, every watch parked", || {
        daemon_idle(sim)
    });
    proxy.spoil_next_change(path, spoil);
    change();
    wait_until(EVENTUALLY, "the answer carrying the change spoiled", || {
        !proxy.spoiled().is_empty()
    });
    let spoiled = proxy.spoiled();
    assert_eq!(spoiled.len(), 1, "exactly one answer spoiled: {spoiled:?}");
    spoiled[0].clone()
}

#[test]
fn a_catalog_answer_cut_short_is_read_again_and_its_change_applied() {
    let sim = sim_http();
    sim.add_service(service("shop", &[SHOP]));
    let (proxy, daemon) = through_proxy(&sim);
    // Both writes made: a registration still to come would move the services index and
    // wake the watch with the change in its answer.
    wait_until(EVENTUALLY, "converged", || {
        routes(&sim, 9997) == [route("shop", &["shop.example.com"])]
            && ingress_tags(&sim)
                .is_some_and(|t| t.iter().any(|tag| tag.contains("shop.example.com")))
    });

    let spoiled =
        change_with_one_answer_spoiled(&sim, &proxy, CATALOG_PATH, Spoil::TruncatedJson, || {
            sim.add_service(service("cart", &[CART]))
        });
    assert!(
        spoiled.real_body.contains("cart.example.com"),
        "{spoiled:?}"
    );
    wait_until(
        SPOILED_CHANGE_APPLIED,
        "cart routed without a further change",
        || routes(&sim, 9997) == shop_and_cart(),
    );
    wait_until(EVENTUALLY, "cart's tag on the ingress service", || {
        ingress_tags(&sim).is_some_and(|t| t.iter().any(|tag| tag.contains("cart.example.com")))
    });
    daemon.wait_output(
        EVENTUALLY,
        "GET /v1/catalog/services: unexpected response body",
    );
    wait_until(EVENTUALLY, "/health ok", || daemon.health().0 == 200);
}

#[test]
fn a_service_defaults_answer_as_an_html_page_is_read_again_and_its_change_applied() {
    // No proxy-defaults: shop is tcp until its service-defaults say http.
    let sim = Sim::start(SimOptions::default());
    sim.add_service(service("shop", &[SHOP]));
    let (proxy, daemon) = through_proxy(&sim);
    daemon.wait_output(EVENTUALLY, "protocol is \"tcp\"");
    assert!(entry(&sim).is_none(), "nothing exposed yet");

    let spoiled =
        change_with_one_answer_spoiled(&sim, &proxy, SERVICE_DEFAULTS_PATH, Spoil::Html, || {
            sim.put_config(
                json!({"Kind": "service-defaults", "Name": "shop", "Protocol": "http"}),
                None,
            )
            .expect("service-defaults accepted");
        });
    assert!(spoiled.real_body.contains("\"shop\""), "{spoiled:?}");
    wait_until(
        SPOILED_CHANGE_APPLIED,
        "shop routed without a further change",
        || routes(&sim, 9997) == [route("shop", &["shop.example.com"])],
    );
    daemon.wait_output(
        EVENTUALLY,
        "GET /v1/config/service-defaults: unexpected response body",
    );
    wait_until(EVENTUALLY, "/health ok", || daemon.health().0 == 200);
}

#[test]
fn a_proxy_defaults_answer_cut_short_is_read_again_and_its_change_applied() {
    // No proxy-defaults yet (the watch holds a 404): shop is tcp until they say http.
    let sim = Sim::start(SimOptions::default());
    sim.add_service(service("shop", &[SHOP]));
    let (proxy, daemon) = through_proxy(&sim);
    daemon.wait_output(EVENTUALLY, "protocol is \"tcp\"");
    assert!(entry(&sim).is_none(), "nothing exposed yet");

    let spoiled = change_with_one_answer_spoiled(
        &sim,
        &proxy,
        PROXY_DEFAULTS_PATH,
        Spoil::TruncatedJson,
        || {
            sim.put_config(
                json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}}),
                None,
            )
            .expect("proxy-defaults accepted");
        },
    );
    assert!(spoiled.real_body.contains("\"protocol\""), "{spoiled:?}");
    wait_until(
        SPOILED_CHANGE_APPLIED,
        "shop routed without a further change",
        || routes(&sim, 9997) == [route("shop", &["shop.example.com"])],
    );
    daemon.wait_output(
        EVENTUALLY,
        "GET /v1/config/proxy-defaults/global: unexpected response body",
    );
    wait_until(EVENTUALLY, "/health ok", || daemon.health().0 == 200);
}

#[test]
fn an_entry_answer_as_an_html_page_is_read_again_and_a_foreign_edit_repaired() {
    let sim = sim_http();
    sim.add_service(service("shop", &[SHOP]));
    let (proxy, daemon) = through_proxy(&sim);
    wait_until(EVENTUALLY, "converged", || {
        routes(&sim, 9997) == [route("shop", &["shop.example.com"])]
    });

    // Someone edits our listener by hand; the answer showing it to the daemon is spoiled.
    let mut edited = entry(&sim).expect("entry");
    edited["Listeners"] = json!([
        {"Port": 9997, "Protocol": "http", "Services": [{"Name": "shop", "Hosts": ["wrong.example.com"]}]}
    ]);
    let path = entry_path();
    let spoiled = change_with_one_answer_spoiled(&sim, &proxy, &path, Spoil::Html, || {
        sim.put_config(edited, None).expect("edit accepted");
    });
    assert!(
        spoiled.real_body.contains("wrong.example.com"),
        "{spoiled:?}"
    );
    wait_until(SPOILED_CHANGE_APPLIED, "our listener repaired", || {
        routes(&sim, 9997) == [route("shop", &["shop.example.com"])]
    });
    daemon.wait_output(
        EVENTUALLY,
        "GET /v1/config/ingress-gateway/edge: unexpected response body",
    );
    wait_until(EVENTUALLY, "/health ok", || daemon.health().0 == 200);
}

#[test]
fn an_entry_deletion_answered_with_an_html_page_is_read_again_and_the_entry_re_created() {
    let sim = sim_http();
    sim.add_service(service("shop", &[SHOP]));
    let (proxy, daemon) = through_proxy(&sim);
    wait_until(EVENTUALLY, "converged", || {
        routes(&sim, 9997) == [route("shop", &["shop.example.com"])]
    });

    // The entry is deleted by hand; the 404 telling the daemon becomes a 200 HTML page.
    let path = entry_path();
    let spoiled = change_with_one_answer_spoiled(&sim, &proxy, &path, Spoil::Html, || {
        sim.delete_config("ingress-gateway", GATEWAY);
    });
    assert!(!spoiled.real_body.contains("Listeners"), "{spoiled:?}");
    wait_until(SPOILED_CHANGE_APPLIED, "the entry re-created", || {
        routes(&sim, 9997) == [route("shop", &["shop.example.com"])]
    });
    daemon.wait_output(
        EVENTUALLY,
        "GET /v1/config/ingress-gateway/edge: unexpected response body",
    );
    wait_until(EVENTUALLY, "/health ok", || daemon.health().0 == 200);
}
