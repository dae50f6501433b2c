//! API-gateway mode (`CONSULGATEWAY=api`): the real binary against the simulator, which
//! validates `api-gateway` and `http-route` entries with Consul's texts and writes their
//! Status a few milliseconds after each change, as Consul's controller does.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use consul_sim::Sim;
use serde_json::{json, Value};

const PORT: u16 = 9997;

fn api_env(sim: &Sim) -> Vec<(String, String)> {
    with(base_env(sim), &[("CONSULGATEWAY", "api")])
}

fn rule(router: &str, expr: &str) -> String {
    format!("gw-traefik.http.routers.{router}.rule={expr}")
}

/// Our routes as (name, hostnames, [(match kind, path)], target service).
type RouteView = (String, Vec<String>, Vec<(String, String)>, String);

fn our_routes(sim: &Sim) -> Vec<RouteView> {
    let mut out = Vec::new();
    for (name, route) in http_routes(sim) {
        if route["Meta"]["ingress-service-monitor-gateway"] != GATEWAY {
            continue;
        }
        let hostnames = route["Hostnames"]
            .as_array()
            .map(|h| {
                h.iter()
                    .filter_map(|h| h.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let rule = &route["Rules"][0];
        let matches = rule["Matches"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .map(|m| {
                        (
                            m["Path"]["Match"].as_str().unwrap_or("").to_string(),
                            m["Path"]["Value"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let target = rule["Services"][0]["Name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        out.push((name, hostnames, matches, target));
    }
    out
}

/// Every http-route the simulator holds, by name.
fn http_routes(sim: &Sim) -> BTreeMap<String, Value> {
    sim.config_names("http-route")
        .into_iter()
        .filter_map(|name| sim.config("http-route", &name).map(|r| (name, r)))
        .collect()
}

fn view(name: &str, hosts: &[&str], matches: &[(&str, &str)], target: &str) -> RouteView {
    (
        name.to_string(),
        hosts.iter().map(|h| h.to_string()).collect(),
        matches
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        target.to_string(),
    )
}

fn gateway_listeners(sim: &Sim) -> Vec<Value> {
    sim.config("api-gateway", GATEWAY)
        .and_then(|g| g["Listeners"].as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn converges_with_one_route_per_service_and_two_paths_on_one_host() {
    let sim = sim_http();
    sim.add_service(service(
        "shop",
        &[&rule("shop", "Host(`example.com`) && PathPrefix(`/shop`)")],
    ));
    sim.add_service(service(
        "blog",
        &[&rule("blog", "Host(`example.com`) && PathPrefix(`/blog`)")],
    ));
    sim.add_service(service("other", &["version=1"]));
    let daemon = Daemon::start(&api_env(&sim));
    let want = vec![
        view(
            "edge-blog",
            &["example.com"],
            &[("prefix", "/blog")],
            "blog",
        ),
        view(
            "edge-shop",
            &["example.com"],
            &[("prefix", "/shop")],
            "shop",
        ),
    ];
    wait_until(EVENTUALLY, "both routes written", || {
        our_routes(&sim) == want
    });
    let listeners = gateway_listeners(&sim);
    assert_eq!(listeners.len(), 1, "{listeners:?}");
    assert_eq!(listeners[0]["Port"], PORT);
    assert_eq!(listeners[0]["Protocol"], "http");
    assert_eq!(listeners[0]["Hostname"].as_str().unwrap_or(""), "");
    let gateway = sim.config("api-gateway", GATEWAY).expect("gateway entry");
    assert_eq!(gateway["Meta"]["managed-by"], "ingress-service-monitor");
    for (name, route) in http_routes(&sim) {
        assert_eq!(
            route["Meta"]["managed-by"], "ingress-service-monitor",
            "{name}"
        );
        assert_eq!(route["Parents"][0]["Name"], GATEWAY, "{name}");
        assert_eq!(
            route["Parents"][0]["SectionName"], listeners[0]["Name"],
            "{name}"
        );
    }
    wait_until(EVENTUALLY, "registered with the tags", || {
        ingress_tags(&sim).is_some_and(|tags| tags.iter().any(|t| t.contains("/blog")))
    });
    wait_until(EVENTUALLY, "routes bound", || {
        sim.conditions("http-route", "edge-shop")
            .iter()
            .any(|c| c.kind == "Bound" && c.status == "True")
    });
    let (status, body) = daemon.health();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"services_exposed\":2"), "{body}");
}

#[test]
fn a_route_is_deleted_when_its_service_loses_its_tags_or_vanishes() {
    let sim = sim_http();
    sim.add_service(service(
        "shop",
        &[&rule("shop", "Host(`shop.example.com`)")],
    ));
    sim.add_service(service(
        "blog",
        &[&rule("blog", "Host(`blog.example.com`)")],
    ));
    let _daemon = Daemon::start(&api_env(&sim));
    wait_until(EVENTUALLY, "both routes", || our_routes(&sim).len() == 2);

    sim.set_service_tags("node-1", "shop", &["version=2"]);
    wait_until(EVENTUALLY, "shop's route deleted", || {
        our_routes(&sim)
            == [view(
                "edge-blog",
                &["blog.example.com"],
                &[("prefix", "/")],
                "blog",
            )]
    });
    sim.remove_service("node-1", "blog");
    wait_until(EVENTUALLY, "blog's route deleted", || {
        our_routes(&sim).is_empty()
    });
    assert!(
        sim.config("api-gateway", GATEWAY).is_some(),
        "the gateway's entry stays"
    );
}

#[test]
fn a_foreign_route_and_a_foreign_listener_are_left_alone() {
    let sim = sim_http();
    sim.put_config(
        json!({"Kind": "api-gateway", "Name": GATEWAY, "Listeners": [
            {"Name": "admin", "Port": 9000, "Protocol": "http", "Hostname": "admin.example.com"}]}),
        None,
    )
    .expect("foreign gateway accepted");
    let foreign = json!({"Kind": "http-route", "Name": "edge-shop",
        "Meta": {"owner": "team-a"},
        "Parents": [{"Kind": "api-gateway", "Name": GATEWAY, "SectionName": "admin"}],
        "Rules": [{"Matches": [{"Path": {"Match": "prefix", "Value": "/"}}],
                   "Services": [{"Name": "admin-ui"}]}]});
    sim.put_config(foreign, None)
        .expect("foreign route accepted");
    let before = sim.config("http-route", "edge-shop").expect("stored");
    sim.add_service(service(
        "shop",
        &[&rule("shop", "Host(`shop.example.com`)")],
    ));
    let daemon = Daemon::start(&api_env(&sim));
    daemon.wait_output(
        EVENTUALLY,
        "was not written by this daemon for gateway \"edge\"; left alone",
    );
    wait_until(EVENTUALLY, "our listener added beside theirs", || {
        gateway_listeners(&sim).len() == 2
    });
    let listeners = gateway_listeners(&sim);
    assert!(
        listeners
            .iter()
            .any(|l| l["Name"] == "admin" && l["Hostname"] == "admin.example.com"),
        "{listeners:?}"
    );
    let after = sim.config("http-route", "edge-shop").expect("still there");
    assert_eq!(
        after["Rules"], before["Rules"],
        "the foreign route is untouched"
    );
    assert_eq!(after["Meta"], before["Meta"]);
    wait_until(EVENTUALLY, "the warning counts on /health", || {
        daemon.health().1.contains("\"warnings\":1")
    });
}

#[test]
fn a_service_that_is_not_http_is_left_out_with_the_fix() {
    let sim = Sim::start(consul_sim::SimOptions::default());
    sim.add_service(service("db", &[&rule("db", "Host(`db.example.com`)")]));
    let daemon = Daemon::start(&api_env(&sim));
    daemon.wait_output(
        EVENTUALLY,
        "Consul binds http-routes only to services whose protocol is",
    );
    assert!(
        daemon.output().contains("SETSERVICEDEFAULTS=true"),
        "{}",
        daemon.output()
    );
    wait_until(EVENTUALLY, "the gateway entry exists", || {
        sim.config("api-gateway", GATEWAY).is_some()
    });
    assert!(our_routes(&sim).is_empty());
}

#[test]
fn a_path_claimed_twice_goes_to_the_first_name_and_the_rest_still_routes() {
    let sim = sim_http();
    sim.add_service(service(
        "alpha",
        &[&rule("a", "Host(`example.com`) && PathPrefix(`/api`)")],
    ));
    sim.add_service(service(
        "beta",
        &[&rule(
            "b",
            "(Host(`example.com`) && PathPrefix(`/api`)) || Host(`beta.example.com`)",
        )],
    ));
    let daemon = Daemon::start(&api_env(&sim));
    let want = vec![
        view(
            "edge-alpha",
            &["example.com"],
            &[("prefix", "/api")],
            "alpha",
        ),
        view(
            "edge-beta",
            &["beta.example.com"],
            &[("prefix", "/")],
            "beta",
        ),
    ];
    wait_until(EVENTUALLY, "conflict resolved", || our_routes(&sim) == want);
    daemon.wait_output(EVENTUALLY, "is also routed by service \"alpha\"");
}

#[test]
fn idle_writes_nothing_and_a_restart_writes_nothing() {
    let sim = sim_http();
    sim.add_service(service(
        "shop",
        &[&rule("shop", "Host(`shop.example.com`)")],
    ));
    let daemon = Daemon::start(&api_env(&sim));
    wait_until(EVENTUALLY, "converged", || our_routes(&sim).len() == 1);
    wait_until(EVENTUALLY, "status settled", || {
        sim.gateway_controller_idle()
    });
    let writes = sim.state_changing_writes();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        assert_eq!(sim.state_changing_writes(), writes, "{}", daemon.output());
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(daemon);
    let again = Daemon::start(&api_env(&sim));
    again.wait_output(EVENTUALLY, "registered ingress service");
    // Its registration is the one write a fresh daemon makes.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        assert!(
            sim.state_changing_writes() <= writes + 1,
            "{}",
            again.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sigterm_deregisters_and_keeps_the_routes() {
    let sim = sim_http();
    sim.add_service(service(
        "shop",
        &[&rule("shop", "Host(`shop.example.com`)")],
    ));
    let mut daemon = Daemon::start(&api_env(&sim));
    wait_until(EVENTUALLY, "registered", || ingress_tags(&sim).is_some());
    wait_until(EVENTUALLY, "routed", || our_routes(&sim).len() == 1);
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(6));
    assert_eq!(status.code(), Some(0), "{}", daemon.output());
    assert!(sim.agent_service(INGRESS_ID).is_none());
    assert_eq!(our_routes(&sim).len(), 1, "routes stay for other instances");
}

#[test]
fn a_route_consul_does_not_accept_is_a_warning_and_health_stays_200() {
    let sim = sim_http();
    sim.add_service(service(
        "shop",
        &[&rule("shop", "Host(`shop.example.com`)")],
    ));
    let daemon = Daemon::start(&api_env(&sim));
    wait_until(EVENTUALLY, "routed", || our_routes(&sim).len() == 1);
    // Someone else's service-resolver breaks shop's discovery chain.
    sim.set_chain_error("shop", Some("resolver \"shop\" has no subset \"v9\""));
    daemon.wait_output(EVENTUALLY, "not accepted by Consul (InvalidDiscoveryChain)");
    assert!(
        daemon.output().contains("has no subset"),
        "Consul's message is in the log"
    );
    wait_until(EVENTUALLY, "counted on /health, still 200", || {
        let (status, body) = daemon.health();
        status == 200 && body.contains("\"warnings\":") && !body.contains("\"warnings\":0")
    });
    assert_eq!(our_routes(&sim).len(), 1, "the route stays as planned");
    sim.set_chain_error("shop", None);
    daemon.wait_output(EVENTUALLY, "resolved: ");
    wait_until(EVENTUALLY, "no warning left", || {
        daemon.health().1.contains("\"warnings\":0")
    });
}

#[test]
fn a_cas_conflict_with_a_racing_writer_is_planned_again() {
    let sim = sim_http();
    sim.add_service(service(
        "shop",
        &[&rule("shop", "Host(`shop.example.com`)")],
    ));
    let _daemon = Daemon::start(&api_env(&sim));
    wait_until(EVENTUALLY, "routed", || our_routes(&sim).len() == 1);
    wait_until(EVENTUALLY, "status settled", || {
        sim.gateway_controller_idle()
    });
    // Someone edits the route between the daemon's read and its next write of it.
    let mut theirs = sim.config("http-route", "edge-shop").expect("route");
    theirs["Hostnames"] = json!(["edited.example.com"]);
    sim.race_next_config_write(theirs)
        .expect("race entry valid");
    let puts_before = config_put_sizes(&sim).len();
    sim.set_service_tags(
        "node-1",
        "shop",
        &[&rule("shop", "Host(`shop2.example.com`)")],
    );
    wait_until(EVENTUALLY, "our plan written over the edit", || {
        our_routes(&sim)
            == [view(
                "edge-shop",
                &["shop2.example.com"],
                &[("prefix", "/")],
                "shop",
            )]
    });
    let puts = config_put_sizes(&sim)[puts_before..].to_vec();
    assert_eq!(
        puts,
        [5, 4],
        "a CAS miss (false), then the write after reading again (true)"
    );
}

#[test]
fn three_instances_converge_without_flapping() {
    let sim = sim_http();
    let host =
        |i: usize, v: usize| rule(&format!("s{i}"), &format!("Host(`s{i}-v{v}.example.com`)"));
    let mut versions = [0usize; 6];
    for (i, v) in versions.iter().enumerate() {
        sim.add_service(service(&format!("svc{i}"), &[host(i, *v).as_str()]));
    }
    let _daemons: Vec<Daemon> = ["a1", "a2", "a3"]
        .iter()
        .map(|alloc| Daemon::start(&with(api_env(&sim), &[("NOMAD_ALLOC_ID", alloc)])))
        .collect();
    let hosts_now = |versions: &[usize]| -> Vec<Vec<String>> {
        versions
            .iter()
            .enumerate()
            .map(|(i, v)| vec![format!("s{i}-v{v}.example.com")])
            .collect()
    };
    let seen = |sim: &Sim| -> Vec<Vec<String>> {
        our_routes(sim)
            .into_iter()
            .map(|(_, hosts, _, _)| hosts)
            .collect()
    };
    wait_until(EVENTUALLY, "converged", || {
        seen(&sim) == hosts_now(&versions)
    });
    let count = versions.len();
    let route_writes = |sim: &Sim| -> u64 {
        (0..count)
            .map(|i| sim.entry_writes("http-route", &format!("edge-svc{i}")))
            .sum()
    };
    let before = route_writes(&sim);
    let changes = 12;
    for change in 0..changes {
        let i = (change * 5) % versions.len();
        versions[i] += 1;
        sim.set_service_tags(
            "node-1",
            &format!("svc{i}"),
            &[host(i, versions[i]).as_str()],
        );
        wait_until(EVENTUALLY, "change routed", || {
            seen(&sim) == hosts_now(&versions)
        });
    }
    wait_until(EVENTUALLY, "status settled", || {
        sim.gateway_controller_idle()
    });
    let writes = route_writes(&sim) - before;
    assert!(
        writes <= changes as u64 + 2,
        "{writes} route writes for {changes} changes: instances flapped"
    );

    // A service comes and another goes: each route is created or deleted once, and an
    // instance that sees it late does not bring the old set back.
    let removed_before = sim.entry_writes("http-route", "edge-svc0");
    sim.add_service(service(
        "late",
        &[&rule("late", "Host(`late.example.com`)")],
    ));
    sim.remove_service("node-1", "svc0");
    wait_until(EVENTUALLY, "the set changed", || {
        let names: Vec<String> = our_routes(&sim)
            .into_iter()
            .map(|(name, ..)| name)
            .collect();
        names.contains(&"edge-late".to_string()) && !names.contains(&"edge-svc0".to_string())
    });
    for alloc in ["a1", "a2", "a3"] {
        let id = format!("edge-ingress-{alloc}");
        wait_until(EVENTUALLY, "every instance saw it", || {
            sim.agent_service(&id)
                .is_some_and(|s| s["Tags"].to_string().contains("late.example.com"))
        });
    }
    wait_until(EVENTUALLY, "status settled", || {
        sim.gateway_controller_idle()
    });
    assert_eq!(
        sim.entry_writes("http-route", "edge-late"),
        1,
        "created once"
    );
    // Deletes are not writes of content: any write here would be a re-creation.
    assert_eq!(
        sim.entry_writes("http-route", "edge-svc0") - removed_before,
        0,
        "never re-created after its delete"
    );
    assert!(sim.config("http-route", "edge-svc0").is_none());
}

#[test]
fn dry_run_prints_the_gateway_entry_and_the_routes() {
    let sim = sim_http();
    sim.add_service(service(
        "shop",
        &[&rule("shop", "Host(`example.com`) && PathPrefix(`/shop`)")],
    ));
    let mut daemon = Daemon::start_with_args(&api_env(&sim), &["--dry-run"]);
    assert_eq!(
        daemon.wait_exit(EVENTUALLY).code(),
        Some(0),
        "{}",
        daemon.output()
    );
    let out = daemon.output();
    assert!(out.contains("\"api-gateway\""), "{out}");
    assert!(out.contains("\"edge-shop\""), "{out}");
    assert!(out.contains("\"/shop\""), "{out}");
    assert_eq!(write_requests(&sim), 0);
}
