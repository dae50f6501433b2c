//! SETINTENTIONS=true: every exposed service's `service-intentions` allows the gateway,
//! in both gateway modes, without touching what operators wrote. The real binary
//! against the simulator, which validates intentions as Consul does.

mod common;

use std::time::{Duration, Instant};

use common::*;
use consul_sim::{Access, Rule, Sim, SimOptions};
use serde_json::{json, Value};

const SOURCE: &str = "managed by ingress-service-monitor";

fn shop() -> String {
    "gw-traefik.http.routers.shop.rule=Host(`shop.example.com`)".to_string()
}

fn env(sim: &Sim, mode: &str) -> Vec<(String, String)> {
    with(
        base_env(sim),
        &[("SETINTENTIONS", "true"), ("CONSULGATEWAY", mode)],
    )
}

fn sources(sim: &Sim, service: &str) -> Vec<Value> {
    sim.config("service-intentions", service)
        .and_then(|e| e["Sources"].as_array().cloned())
        .unwrap_or_default()
}

fn ours(source: &Value) -> bool {
    source["Name"] == GATEWAY && source["Description"] == SOURCE && source["Action"] == "allow"
}

#[test]
fn an_exposed_service_gets_an_allow_from_the_gateway_in_both_modes() {
    for mode in ["ingress", "api"] {
        let sim = sim_http();
        sim.add_service(service("shop", &[&shop()]));
        let _daemon = Daemon::start(&env(&sim, mode));
        wait_until(EVENTUALLY, "intentions created", || {
            sources(&sim, "shop").iter().any(ours)
        });
        let entry = sim.config("service-intentions", "shop").expect("entry");
        assert_eq!(
            entry["Meta"]["managed-by"], "ingress-service-monitor",
            "{mode}"
        );
        assert_eq!(sources(&sim, "shop").len(), 1, "{mode}");
    }
}

#[test]
fn our_source_joins_a_foreign_entry_and_leaves_it_again_alone() {
    let sim = sim_http();
    let theirs = json!({"Name": "billing", "Action": "deny"});
    sim.put_config(
        json!({"Kind": "service-intentions", "Name": "shop", "Sources": [theirs],
               "Meta": {"owner": "team-a"}}),
        None,
    )
    .expect("foreign intentions accepted");
    sim.add_service(service("shop", &[&shop()]));
    let _daemon = Daemon::start(&env(&sim, "ingress"));
    wait_until(EVENTUALLY, "our source added", || {
        sources(&sim, "shop").iter().any(ours)
    });
    let after = sources(&sim, "shop");
    assert!(
        after
            .iter()
            .any(|s| s["Name"] == "billing" && s["Action"] == "deny"),
        "{after:?}"
    );
    assert_eq!(
        sim.config("service-intentions", "shop").expect("entry")["Meta"]["owner"],
        "team-a"
    );

    sim.set_service_tags("node-1", "shop", &["version=2"]);
    wait_until(EVENTUALLY, "ours removed, theirs kept", || {
        let now = sources(&sim, "shop");
        now.len() == 1 && now[0]["Name"] == "billing"
    });
}

#[test]
fn a_source_added_between_our_read_and_our_write_is_kept() {
    let sim = sim_http();
    let billing = json!({"Name": "billing", "Action": "deny"});
    let reports = json!({"Name": "reports", "Action": "allow"});
    sim.put_config(
        json!({"Kind": "service-intentions", "Name": "shop", "Sources": [billing]}),
        None,
    )
    .expect("foreign intentions accepted");
    // Someone adds a source just before the daemon's write lands: the write, made on the
    // entry as read, must miss its CAS, and the daemon read the entry again.
    sim.race_next_config_write(json!({"Kind": "service-intentions", "Name": "shop",
        "Sources": [billing, reports]}))
        .expect("race accepted");
    sim.add_service(service("shop", &[&shop()]));
    let daemon = Daemon::start(&env(&sim, "ingress"));
    wait_until(EVENTUALLY, "our source added", || {
        sources(&sim, "shop").iter().any(ours)
    });
    let (_, metrics) = http_get(daemon.health_port(), "/metrics");
    assert!(
        metrics.contains("ism_writes_total{kind=\"intentions\",result=\"cas_conflict\"} 1"),
        "the write on the entry as first read missed: {metrics}"
    );
    let names: Vec<Value> = sources(&sim, "shop")
        .iter()
        .map(|s| s["Name"].clone())
        .collect();
    assert_eq!(
        names,
        ["billing", "reports", "edge"],
        "theirs kept, ours added"
    );
}

#[test]
fn a_foreign_deny_for_the_gateway_is_never_overridden() {
    let sim = sim_http();
    sim.put_config(
        json!({"Kind": "service-intentions", "Name": "shop",
               "Sources": [{"Name": GATEWAY, "Action": "deny", "Description": "security review"}]}),
        None,
    )
    .expect("accepted");
    sim.add_service(service("shop", &[&shop()]));
    let daemon = Daemon::start(&env(&sim, "ingress"));
    daemon.wait_output(EVENTUALLY, "never overridden");
    wait_until(EVENTUALLY, "routed anyway", || {
        routes(&sim, 9997).iter().any(|(name, _)| name == "shop")
    });
    let now = sources(&sim, "shop");
    assert_eq!(now.len(), 1);
    assert_eq!(now[0]["Action"], "deny");
    assert_eq!(now[0]["Description"], "security review");
}

#[test]
fn when_ours_was_the_last_source_the_entry_goes_only_if_it_is_ours() {
    let sim = sim_http();
    sim.add_service(service("shop", &[&shop()]));
    sim.add_service(service(
        "blog",
        &["gw-traefik.http.routers.blog.rule=Host(`blog.example.com`)"],
    ));
    // blog's entry was created by someone else, with our source already in it.
    sim.put_config(
        json!({"Kind": "service-intentions", "Name": "blog",
               "Sources": [{"Name": GATEWAY, "Action": "allow", "Description": SOURCE}]}),
        None,
    )
    .expect("accepted");
    let daemon = Daemon::start(&env(&sim, "ingress"));
    wait_until(EVENTUALLY, "shop's entry created", || {
        sources(&sim, "shop").iter().any(ours)
    });
    sim.set_service_tags("node-1", "shop", &["version=2"]);
    sim.set_service_tags("node-1", "blog", &["version=2"]);
    wait_until(EVENTUALLY, "our own entry deleted", || {
        sim.config("service-intentions", "shop").is_none()
    });
    daemon.wait_output(EVENTUALLY, "which this daemon did not create");
    assert_eq!(
        sources(&sim, "blog").len(),
        1,
        "the foreign entry is left as it is"
    );
}

#[test]
fn idle_and_several_instances_write_nothing_more() {
    let sim = sim_http();
    sim.add_service(service("shop", &[&shop()]));
    let daemons: Vec<Daemon> = ["a1", "a2", "a3"]
        .iter()
        .map(|alloc| Daemon::start(&with(env(&sim, "api"), &[("NOMAD_ALLOC_ID", alloc)])))
        .collect();
    wait_until(EVENTUALLY, "created", || {
        sources(&sim, "shop").iter().any(ours)
    });
    // Every instance has made its first pass (registered itself) before idle is judged.
    wait_until(EVENTUALLY, "every instance synced", || {
        daemons.iter().all(|daemon| daemon.health().0 == 200)
    });
    wait_until(EVENTUALLY, "status settled", || {
        sim.gateway_controller_idle()
    });
    let writes = sim.entry_writes("service-intentions", "shop");
    assert_eq!(writes, 1, "created once by three instances");
    let started = Instant::now();
    let all = sim.state_changing_writes();
    while started.elapsed() < Duration::from_secs(3) {
        assert_eq!(sim.state_changing_writes(), all, "idle writes");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_intentions_write_denied_by_acl_fails_health_but_the_gateway_stays_current() {
    let sim = Sim::start(SimOptions {
        acl: true,
        ..SimOptions::default()
    });
    sim.put_config(
        json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}}),
        None,
    )
    .expect("ok");
    sim.add_service(service("shop", &[&shop()]));
    let secret = "3c2b1a09-8f7e-4d6c-b5a4-938271605f4e";
    let policy = vec![
        Rule::ServicePrefix(String::new(), Access::Read),
        Rule::NodePrefix(String::new(), Access::Read),
        Rule::Service("edge-ingress".into(), Access::Write),
        Rule::Mesh(Access::Write),
    ];
    sim.set_token(secret, policy.clone());
    let daemon = Daemon::start(&with(env(&sim, "ingress"), &[("CONSULTOKEN", secret)]));
    wait_until(EVENTUALLY, "the gateway's entry written anyway", || {
        routes(&sim, 9997).iter().any(|(name, _)| name == "shop")
    });
    wait_until(EVENTUALLY, "/health 503 names the permission", || {
        let (status, body) = daemon.health();
        status == 503 && body.contains("intention:write")
    });
    let mut granted = policy;
    granted.push(Rule::IntentionsPrefix(String::new(), Access::Write));
    sim.set_token(secret, granted);
    wait_until(Duration::from_secs(40), "created once granted", || {
        sources(&sim, "shop").iter().any(ours)
    });
    wait_until(EVENTUALLY, "healthy again", || daemon.health().0 == 200);
    assert!(!daemon.output().contains(secret));
}
