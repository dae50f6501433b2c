//! The daemon end to end: the real binary against the Consul simulator and, for every
//! scenario that needs no fault injection, against a real Consul agent as well.
//!
//! The backend switch: a scenario is a function of `&impl Consul` in `mod scenario`; the
//! test of its name runs it against the simulator, and `real::<name>` against a dev-mode
//! Consul 1.8.7 agent of its own (`CONSUL_BIN`, installed by `.ci/run`; `#[ignore]`d in a
//! plain `cargo test`, and failing, not skipping, when the agent is missing). Faults only
//! the simulator can inject (5xx bursts, index resets, a listener that vanishes) stay
//! simulator-only; the real agent's ACLs, TLS and restarts are in `tests/real_consul.rs`.

mod common;

use std::time::{Duration, Instant};

use common::consul::{Agent, AgentOptions, Consul};
use common::*;
use consul_sim::{Access, Fault, Rule, ServiceSpec, Sim, SimOptions, TestPki};
use serde_json::{json, Value};

const SHOP: &str = "gw-traefik.http.routers.shop.rule=Host(`shop.example.com`)";
const PORT: u16 = 9997;

fn converged(sim: &impl Consul, expected: &[(String, Vec<String>)]) -> bool {
    routes(sim, PORT) == expected
}

/// A fresh simulator without proxy-defaults: services are tcp unless told otherwise.
fn plain_sim() -> Sim {
    Sim::start(SimOptions::default())
}

/// A fresh agent without proxy-defaults.
fn plain_agent() -> Agent {
    Agent::start(AgentOptions::default())
}

/// An agent behind the racing proxy, so a concurrent write can be staged.
fn proxied_agent() -> Agent {
    let agent = Agent::http();
    agent.via_proxy();
    agent
}

/// `name(sim, agent);`: the test `name` runs `scenario::name` against the simulator that
/// `sim` makes, and `real::name` against the agent that `agent` starts.
macro_rules! both {
    ($($name:ident($sim:expr, $agent:expr);)*) => {
        $(
            #[test]
            fn $name() {
                scenario::$name(&$sim);
            }
        )*
        mod real {
            use super::*;
            $(
                #[test]
                #[ignore = "needs a Consul agent (CONSUL_BIN): run .ci/run"]
                fn $name() {
                    scenario::$name(&$agent);
                }
            )*
        }
    };
}

both! {
    converges_to_registration_and_entry(sim_http(), Agent::http());
    follows_add_change_and_remove(sim_http(), Agent::http());
    every_host_of_a_rule_is_routed(sim_http(), Agent::http());
    bad_hosts_and_conflicts_stay_with_their_service(sim_http(), Agent::http());
    a_tcp_service_does_not_break_the_gateway(plain_sim(), plain_agent());
    set_service_defaults_creates_missing_protocols(plain_sim(), plain_agent());
    http2_and_grpc_services_get_their_listeners(plain_sim(), plain_agent());
    foreign_listener_and_tls_are_kept_and_foreign_edits_corrected(sim_http(), Agent::http());
    a_cas_conflict_is_resolved_by_reading_again_keeping_the_other_write(sim_http(), proxied_agent());
    nothing_is_written_when_nothing_changed(sim_http(), Agent::http());
    sigterm_deregisters_and_exits_0_keeping_the_entry(sim_http(), Agent::http());
    fabio_mode(sim_http(), Agent::http());
    dry_run_prints_the_plan_and_writes_nothing(sim_http(), Agent::http());
    a_restarted_daemon_writes_nothing(sim_http(), Agent::http());
}

/// Against Consul 1.8.7 this scenario is in `tests/without_filter_or_403_detail.rs`, with the other
/// tests that wait on a daemon change for that Consul.
#[test]
fn sidecars_and_gateways_are_never_exposed_or_warned_about() {
    scenario::sidecars_and_gateways_are_never_exposed_or_warned_about(&sim_http());
}

/// The scenarios both backends run.
mod scenario {
    use super::*;

    pub fn converges_to_registration_and_entry(sim: &impl Consul) {
        sim.add_service(service(
            "shop",
            &[SHOP, "gw-traefik.http.routers.shop.tls=true", "version=2"],
        ));
        sim.add_service(service(
            "blog",
            &["gw-traefik.http.routers.blog.rule=Host('blog.example.com')"],
        ));
        sim.add_service(service(
            "internal",
            &["traefik.http.routers.internal.rule=Host(`internal.example.com`)"],
        ));
        // A sidecar copies its parent's tags; it must never be exposed.
        sim.add_service(ServiceSpec {
            kind: "connect-proxy".into(),
            ..service("shop-sidecar-proxy", &[SHOP])
        });
        let daemon = Daemon::start(&base_env(sim));

        let expected = vec![
            route("blog", &["blog.example.com"]),
            route("shop", &["shop.example.com"]),
        ];
        wait_until(EVENTUALLY, "entry routes blog and shop", || {
            converged(sim, &expected)
        });
        let tags = strings(&[
            "traefik.enable=true",
            "traefik.http.routers.blog.rule=Host(`blog.example.com`)",
            "traefik.http.routers.shop.rule=Host(`shop.example.com`)",
            "traefik.http.routers.shop.tls=true",
        ]);
        wait_until(EVENTUALLY, "ingress service tags", || {
            ingress_tags(sim) == Some(tags.clone())
        });

        let registration = sim.agent_service(INGRESS_ID).expect("registered");
        assert_eq!(registration["Service"], "edge-ingress");
        assert_eq!(registration["Port"], PORT);
        assert_eq!(
            registration["Meta"]["managed-by"],
            "ingress-service-monitor"
        );
        let checks = sim.agent_checks();
        let check = checks
            .as_object()
            .and_then(|c| c.values().find(|c| c["ServiceID"] == INGRESS_ID))
            .unwrap_or_else(|| panic!("a check of the ingress service in {checks}"));
        assert_eq!(check["Type"], "http", "{check}");
        if !sim.is_real() {
            // Consul 1.8.7 leaves the check's Definition empty in /v1/agent/checks.
            assert!(
                check.to_string().contains("http://127.0.0.1:8443/ready"),
                "check URL in {check}"
            );
        }
        let entry = entry(sim).expect("entry");
        assert_eq!(entry["Meta"]["managed-by"], "ingress-service-monitor");
        assert_eq!(
            listener(&entry, PORT).expect("listener")["Protocol"],
            "http"
        );

        wait_until(EVENTUALLY, "/health ok", || daemon.health().0 == 200);
        let health: Value = serde_json::from_str(&daemon.health().1).expect("health JSON");
        assert_eq!(health["status"], "ok");
        assert_eq!(health["services_exposed"], 2);
        assert!(health["last_sync"].is_string());
    }

    pub fn follows_add_change_and_remove(sim: &impl Consul) {
        sim.add_service(service("shop", &[SHOP]));
        let _daemon = Daemon::start(&base_env(sim));
        wait_until(EVENTUALLY, "shop routed", || {
            converged(sim, &[route("shop", &["shop.example.com"])])
        });

        sim.add_service(service(
            "cart",
            &["gw-traefik.http.routers.cart.rule=Host(`cart.example.com`)"],
        ));
        let both = vec![
            route("cart", &["cart.example.com"]),
            route("shop", &["shop.example.com"]),
        ];
        wait_until(EVENTUALLY, "cart added", || converged(sim, &both));

        // Same number of tags, different value: the Go original never applied this.
        sim.set_service_tags(
            "node-1",
            "shop",
            &["gw-traefik.http.routers.shop.rule=Host(`store.example.com`)"],
        );
        let changed = vec![
            route("cart", &["cart.example.com"]),
            route("shop", &["store.example.com"]),
        ];
        wait_until(EVENTUALLY, "shop's host changed", || {
            converged(sim, &changed)
        });
        wait_until(EVENTUALLY, "ingress tag changed", || {
            ingress_tags(sim).is_some_and(|t| {
                t.contains(&"traefik.http.routers.shop.rule=Host(`store.example.com`)".to_string())
            })
        });

        sim.remove_service("node-1", "cart");
        wait_until(EVENTUALLY, "cart removed", || {
            converged(sim, &[route("shop", &["store.example.com"])])
        });
        wait_until(EVENTUALLY, "cart's tag removed", || {
            ingress_tags(sim).is_some_and(|t| !t.iter().any(|tag| tag.contains("cart")))
        });
    }

    pub fn every_host_of_a_rule_is_routed(sim: &impl Consul) {
        sim.add_service(service(
            "shop",
            &[
                "gw-traefik.http.routers.shop.rule=Host(`a.example.com`) || Host(`B.example.com`)",
                "gw-traefik.http.routers.shop2.rule=(Host('c.example.com') && PathPrefix('/x')) || HostRegexp(`{x:.+}.d.example.com`)",
            ],
        ));
        let _daemon = Daemon::start(&base_env(sim));
        let expected = vec![route(
            "shop",
            &["a.example.com", "b.example.com", "c.example.com"],
        )];
        wait_until(EVENTUALLY, "all hosts of the rules", || {
            converged(sim, &expected)
        });
    }

    pub fn bad_hosts_and_conflicts_stay_with_their_service(sim: &impl Consul) {
        sim.add_service(service(
            "alpha",
            &["gw-traefik.http.routers.a.rule=Host(`dup.example.com`)"],
        ));
        sim.add_service(service(
            "beta",
            &["gw-traefik.http.routers.b.rule=Host(`dup.example.com`) || Host(`beta.example.com`)"],
        ));
        sim.add_service(service(
            "gamma",
            &[
                "gw-traefik.http.routers.g.rule=Host(`bad_host!.example.com`)",
                "gw-traefik.http.routers.g2.rule=Host(`gamma.example.com`)",
            ],
        ));
        sim.add_service(service(
            "delta",
            &["gw-traefik.http.routers.d.rule=Host(`example.*`)"],
        ));
        sim.add_service(service(
            "wild",
            &["gw-traefik.http.routers.w.rule=Host(`*.wild.example.com`)"],
        ));
        let daemon = Daemon::start(&base_env(sim));

        let expected = vec![
            route("alpha", &["dup.example.com"]),
            route("beta", &["beta.example.com"]),
            route("gamma", &["gamma.example.com"]),
            route("wild", &["*.wild.example.com"]),
        ];
        wait_until(EVENTUALLY, "good hosts routed, bad ones dropped", || {
            converged(sim, &expected)
        });
        daemon.wait_output(EVENTUALLY, "bad_host!.example.com");
        let out = daemon.output();
        assert!(
            out.contains("\"gamma\""),
            "warning names the service: {out}"
        );
        assert!(
            out.contains("example.*"),
            "warning names delta's host: {out}"
        );
        assert!(
            out.contains("dup.example.com") && out.contains("\"beta\""),
            "conflict warning names beta: {out}"
        );
        wait_until(EVENTUALLY, "/health ok with warnings counted", || {
            let (status, body) = daemon.health();
            status == 200
                && serde_json::from_str::<Value>(&body)
                    .is_ok_and(|h| h["warnings"].as_u64() >= Some(3))
        });
    }

    pub fn a_tcp_service_does_not_break_the_gateway(sim: &impl Consul) {
        sim.put_config(
            json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"}),
            None,
        )
        .expect("accepted");
        sim.add_service(service(
            "web",
            &["gw-traefik.http.routers.web.rule=Host(`web.example.com`)"],
        ));
        sim.add_service(service(
            "db",
            &["gw-traefik.http.routers.db.rule=Host(`db.example.com`)"],
        ));
        let daemon = Daemon::start(&base_env(sim));
        wait_until(EVENTUALLY, "web routed without db", || {
            converged(sim, &[route("web", &["web.example.com"])])
        });
        daemon.wait_output(EVENTUALLY, "Protocol = \"http\"");
        assert!(
            daemon.output().contains("\"db\""),
            "warning names db:\n{}",
            daemon.output()
        );
        // The tag still reaches the outer proxy.
        assert!(
            ingress_tags(sim).is_some_and(|t| t.iter().any(|tag| tag.contains("db.example.com")))
        );
    }

    pub fn set_service_defaults_creates_missing_protocols(sim: &impl Consul) {
        sim.put_config(
            json!({"Kind": "service-defaults", "Name": "legacy", "Protocol": "tcp"}),
            None,
        )
        .expect("accepted");
        sim.add_service(service(
            "web",
            &["gw-traefik.http.routers.web.rule=Host(`web.example.com`)"],
        ));
        sim.add_service(service(
            "legacy",
            &["gw-traefik.http.routers.l.rule=Host(`legacy.example.com`)"],
        ));
        let _daemon = Daemon::start(&with(base_env(sim), &[("SETSERVICEDEFAULTS", "true")]));
        wait_until(EVENTUALLY, "web routed", || {
            converged(sim, &[route("web", &["web.example.com"])])
        });
        let created = sim
            .config("service-defaults", "web")
            .expect("service-defaults created");
        assert_eq!(created["Protocol"], "http");
        // An existing service-defaults entry is never overridden.
        assert_eq!(
            sim.config("service-defaults", "legacy").expect("kept")["Protocol"],
            "tcp"
        );
    }

    pub fn http2_and_grpc_services_get_their_listeners(sim: &impl Consul) {
        for (name, protocol) in [("web", "http"), ("api", "http2"), ("rpc", "grpc")] {
            sim.put_config(
                json!({"Kind": "service-defaults", "Name": name, "Protocol": protocol}),
                None,
            )
            .expect("accepted");
            let tag = format!("gw-traefik.http.routers.{name}.rule=Host(`{name}.example.com`)");
            sim.add_service(service(name, &[tag.as_str()]));
        }
        let env = with(
            base_env(sim),
            &[("INGRESSPORTHTTP2", "9998"), ("INGRESSPORTGRPC", "9999")],
        );
        let _daemon = Daemon::start(&env);
        wait_until(EVENTUALLY, "three listeners", || {
            routes(sim, 9997) == [route("web", &["web.example.com"])]
                && routes(sim, 9998) == [route("api", &["api.example.com"])]
                && routes(sim, 9999) == [route("rpc", &["rpc.example.com"])]
        });
        let entry = entry(sim).expect("entry");
        assert_eq!(listener(&entry, 9998).expect("http2")["Protocol"], "http2");
        assert_eq!(listener(&entry, 9999).expect("grpc")["Protocol"], "grpc");
    }

    pub fn foreign_listener_and_tls_are_kept_and_foreign_edits_corrected(sim: &impl Consul) {
        sim.put_config(
            json!({"Kind": "service-defaults", "Name": "db", "Protocol": "tcp"}),
            None,
        )
        .expect("accepted");
        sim.put_config(
            json!({
                "Kind": "ingress-gateway", "Name": GATEWAY,
                "TLS": {"Enabled": true},
                "Meta": {"owner": "platform-team"},
                "Listeners": [{"Port": 5432, "Protocol": "tcp", "Services": [{"Name": "db"}]}]
            }),
            None,
        )
        .expect("foreign entry accepted");
        sim.add_service(service("shop", &[SHOP]));
        let _daemon = Daemon::start(&base_env(sim));
        wait_until(EVENTUALLY, "shop routed", || {
            converged(sim, &[route("shop", &["shop.example.com"])])
        });
        let written = entry(sim).expect("entry");
        assert_eq!(written["TLS"]["Enabled"], true);
        assert_eq!(written["Meta"]["owner"], "platform-team");
        assert_eq!(written["Meta"]["managed-by"], "ingress-service-monitor");
        assert_eq!(routes(sim, 5432), [route("db", &[])]);

        // Someone edits our listener by hand: the daemon puts it back, keeping their listener.
        let mut edited = written.clone();
        edited["Listeners"] = json!([
            {"Port": 5432, "Protocol": "tcp", "Services": [{"Name": "db"}]},
            {"Port": PORT, "Protocol": "http", "Services": [{"Name": "shop", "Hosts": ["wrong.example.com"]}]}
        ]);
        sim.put_config(edited, None).expect("edit accepted");
        wait_until(EVENTUALLY, "our listener restored", || {
            converged(sim, &[route("shop", &["shop.example.com"])])
        });
        assert_eq!(routes(sim, 5432), [route("db", &[])]);
    }

    pub fn a_cas_conflict_is_resolved_by_reading_again_keeping_the_other_write(sim: &impl Consul) {
        sim.put_config(
            json!({"Kind": "service-defaults", "Name": "db", "Protocol": "tcp"}),
            None,
        )
        .expect("accepted");
        sim.add_service(service("shop", &[SHOP]));
        let _daemon = Daemon::start(&base_env(sim));
        wait_until(EVENTUALLY, "shop routed", || {
            converged(sim, &[route("shop", &["shop.example.com"])])
        });

        // Another writer (an operator, another gateway instance) adds its listener between
        // the daemon's read and its next write: that write's cas index is stale.
        let mut theirs = entry(sim).expect("entry");
        let mut listeners = theirs["Listeners"].as_array().cloned().unwrap_or_default();
        listeners.push(json!({"Port": 5432, "Protocol": "tcp", "Services": [{"Name": "db"}]}));
        theirs["Listeners"] = Value::Array(listeners);
        sim.race_next_config_write(theirs);
        let puts_before = sim.config_put_results();
        sim.add_service(service(
            "cart",
            &["gw-traefik.http.routers.cart.rule=Host(`cart.example.com`)"],
        ));

        let both = vec![
            route("cart", &["cart.example.com"]),
            route("shop", &["shop.example.com"]),
        ];
        wait_until(EVENTUALLY, "cart added and the other listener kept", || {
            converged(sim, &both) && routes(sim, 5432) == [route("db", &[])]
        });
        // The first write missed (false), the second, after reading again, landed.
        let puts = sim.config_put_results()[puts_before.len()..].to_vec();
        assert_eq!(
            puts,
            [false, true],
            "answers to the PUTs after the race (a CAS miss, then written)"
        );
    }

    /// Sidecar proxies copy their parent's tags and gateways may carry any tag: neither
    /// is ever exposed, warned about or counted, whether or not Consul applies the
    /// catalog filter (Consul 1.8.7 ignores `filter=` on `/v1/catalog/services`).
    pub fn sidecars_and_gateways_are_never_exposed_or_warned_about(sim: &impl Consul) {
        sim.add_service(service("shop", &[SHOP]));
        sim.add_service(ServiceSpec {
            kind: "connect-proxy".into(),
            port: 21000,
            ..service("shop-sidecar-proxy", &[SHOP])
        });
        sim.add_service(ServiceSpec {
            kind: "ingress-gateway".into(),
            port: 8888,
            ..service(
                "other-gateway",
                &["gw-traefik.http.routers.og.rule=Host(`other-gateway.example.com`)"],
            )
        });
        sim.add_service(ServiceSpec {
            kind: "terminating-gateway".into(),
            port: 8889,
            ..service(
                "egress",
                &["gw-traefik.http.routers.eg.rule=Host(`egress.example.com`)"],
            )
        });
        let daemon = Daemon::start(&base_env(sim));
        wait_until(EVENTUALLY, "only shop routed", || {
            converged(sim, &[route("shop", &["shop.example.com"])])
        });
        wait_until(EVENTUALLY, "/health ok", || daemon.health().0 == 200);
        let health: Value = serde_json::from_str(&daemon.health().1).expect("health JSON");
        assert_eq!(health["services_exposed"], 1, "{health}");
        assert_eq!(health["warnings"], 0, "{health}");
        let tags = strings(&[
            "traefik.enable=true",
            "traefik.http.routers.shop.rule=Host(`shop.example.com`)",
        ]);
        wait_until(
            EVENTUALLY,
            "only shop's tags on the ingress service",
            || ingress_tags(sim) == Some(tags.clone()),
        );
        let out = daemon.output();
        for name in ["shop-sidecar-proxy", "other-gateway", "egress"] {
            assert!(!out.contains(name), "{name} named in the output:\n{out}");
        }
    }

    /// A daemon restarted (SIGTERM, then started again) over a converged gateway registers
    /// again and writes no config entry: the entry is already what it would write.
    pub fn a_restarted_daemon_writes_nothing(sim: &impl Consul) {
        sim.add_service(service("shop", &[SHOP]));
        let mut daemon = Daemon::start(&base_env(sim));
        wait_until(EVENTUALLY, "shop routed", || {
            converged(sim, &[route("shop", &["shop.example.com"])])
        });
        wait_until(EVENTUALLY, "/health ok", || daemon.health().0 == 200);
        daemon.signal("TERM");
        assert_eq!(daemon.wait_exit(Duration::from_secs(6)).code(), Some(0));
        let modify_index = entry(sim).expect("entry")["ModifyIndex"].clone();
        let writes = sim.writes().len();

        let daemon = Daemon::start(&base_env(sim));
        wait_until(EVENTUALLY, "registered again", || {
            ingress_tags(sim).is_some()
        });
        wait_until(EVENTUALLY, "/health ok again", || daemon.health().0 == 200);
        // The measured window: what the restarted daemon does once it has converged.
        std::thread::sleep(Duration::from_secs(2));
        let config_writes: Vec<String> = sim.writes()[writes..]
            .iter()
            .filter(|w| w.starts_with("PUT /v1/config"))
            .cloned()
            .collect();
        assert_eq!(
            config_writes,
            Vec::<String>::new(),
            "config-entry writes after the restart"
        );
        assert_eq!(
            entry(sim).expect("entry")["ModifyIndex"],
            modify_index,
            "the entry did not move"
        );
    }

    pub fn nothing_is_written_when_nothing_changed(sim: &impl Consul) {
        sim.add_service(service("shop", &[SHOP]));
        let daemon = Daemon::start(&base_env(sim));
        wait_until(EVENTUALLY, "shop routed", || {
            converged(sim, &[route("shop", &["shop.example.com"])])
        });
        wait_until(EVENTUALLY, "/health ok", || daemon.health().0 == 200);
        let indexes = sim.indexes();
        let writes = sim.writes();
        let requests = sim.request_count();
        // The measured window itself: what the daemon does while nothing happens.
        std::thread::sleep(Duration::from_secs(5));
        let idle = sim.request_count() - requests;
        assert_eq!(sim.writes(), writes, "no writes while idle");
        assert_eq!(
            sim.indexes(),
            indexes,
            "Consul's indexes did not move because of us"
        );
        assert!(
            idle <= 2,
            "{idle} requests in 5 s of idle (expected at most the periodic agent check)"
        );
    }

    pub fn sigterm_deregisters_and_exits_0_keeping_the_entry(sim: &impl Consul) {
        sim.add_service(service("shop", &[SHOP]));
        let mut daemon = Daemon::start(&base_env(sim));
        wait_until(EVENTUALLY, "registered", || ingress_tags(sim).is_some());
        let sent = Instant::now();
        daemon.signal("TERM");
        let status = daemon.wait_exit(Duration::from_secs(6));
        assert!(sent.elapsed() < Duration::from_secs(5), "exited within 5 s");
        assert_eq!(status.code(), Some(0), "output:\n{}", daemon.output());
        assert!(sim.agent_service(INGRESS_ID).is_none(), "deregistered");
        assert!(
            entry(sim).is_some(),
            "the config entry stays for other instances"
        );
    }

    pub fn fabio_mode(sim: &impl Consul) {
        sim.add_service(service(
            "shop",
            &[
                "gw-urlprefix-shop.example.com/ strip=/shop",
                "gw-urlprefix-/api",
            ],
        ));
        sim.add_service(service("tcp", &["gw-urlprefix-:3306 proto=tcp"]));
        let _daemon = Daemon::start(&with(base_env(sim), &[("TYPEGATEWAY", "fabio")]));
        wait_until(EVENTUALLY, "shop routed", || {
            converged(sim, &[route("shop", &["shop.example.com"])])
        });
        let tags = strings(&[
            "urlprefix-/api",
            "urlprefix-:3306 proto=tcp",
            "urlprefix-shop.example.com/ strip=/shop",
        ]);
        wait_until(EVENTUALLY, "fabio tags, no traefik.enable", || {
            ingress_tags(sim) == Some(tags.clone())
        });
    }

    pub fn dry_run_prints_the_plan_and_writes_nothing(sim: &impl Consul) {
        sim.add_service(service("shop", &[SHOP]));
        let before = sim.writes(); // the test's own set-up, on the real agent
        let mut daemon = Daemon::start_with_args(&base_env(sim), &["--dry-run"]);
        assert_eq!(
            daemon.wait_exit(EVENTUALLY).code(),
            Some(0),
            "{}",
            daemon.output()
        );
        let out = daemon.output();
        assert!(out.contains("\"shop.example.com\""), "{out}");
        assert!(out.contains("traefik.enable=true"), "{out}");
        assert_eq!(sim.writes(), before, "the dry run wrote nothing");
        assert!(entry(sim).is_none());
    }
}

#[test]
fn restarted_agent_gets_the_registration_back() {
    let sim = sim_http();
    sim.add_service(service("shop", &[SHOP]));
    let _daemon = Daemon::start(&base_env(&sim));
    wait_until(EVENTUALLY, "registered", || ingress_tags(&sim).is_some());
    sim.restart_agent();
    assert!(
        sim.agent_service(INGRESS_ID).is_none(),
        "the restart lost the registration"
    );
    let started = Instant::now();
    wait_until(Duration::from_secs(20), "registered again", || {
        ingress_tags(&sim).is_some()
    });
    assert!(
        started.elapsed() <= Duration::from_secs(16),
        "re-registered within 15 s, took {:?}",
        started.elapsed()
    );
    assert_eq!(routes(&sim, PORT), [route("shop", &["shop.example.com"])]);
}

#[test]
fn starts_while_the_agent_is_down_and_converges_when_it_is_up() {
    let sim = sim_http();
    sim.add_service(service("shop", &[SHOP]));
    sim.stop_listening();
    let daemon = Daemon::start(&base_env(&sim));
    wait_until(EVENTUALLY, "/health 503 while the agent is down", || {
        daemon.health().0 == 503
    });
    daemon.wait_output(EVENTUALLY, "/v1/");
    sim.start_listening();
    wait_until(EVENTUALLY, "converged after the agent came up", || {
        converged(&sim, &[route("shop", &["shop.example.com"])])
    });
    wait_until(EVENTUALLY, "/health ok", || daemon.health().0 == 200);
}

#[test]
fn server_errors_are_retried_and_logged_once() {
    let sim = sim_http();
    sim.add_service(service("shop", &[SHOP]));
    let daemon = Daemon::start(&base_env(&sim));
    wait_until(EVENTUALLY, "shop routed", || {
        converged(&sim, &[route("shop", &["shop.example.com"])])
    });
    let message = "raft apply failed: leadership lost while committing log";
    sim.inject(Fault {
        method: Some("PUT".into()),
        path_prefix: "/v1/config".into(),
        status: 500,
        body: message.into(),
        count: 3,
    });
    sim.add_service(service(
        "cart",
        &["gw-traefik.http.routers.cart.rule=Host(`cart.example.com`)"],
    ));
    let both = vec![
        route("cart", &["cart.example.com"]),
        route("shop", &["shop.example.com"]),
    ];
    wait_until(Duration::from_secs(30), "converged after the burst", || {
        converged(&sim, &both)
    });
    let out = daemon.output();
    assert_eq!(
        out.matches(message).count(),
        1,
        "the same error is logged once per state change:\n{out}"
    );
    assert!(
        out.contains("PUT /v1/config"),
        "the log names the endpoint:\n{out}"
    );
}

#[test]
fn denied_then_granted_and_the_token_never_shows() {
    let secret = "7f3b9c1e-5d2a-4e8f-9b6c-0a1d2e3f4a5b";
    let sim = Sim::start(SimOptions {
        acl: true,
        ..SimOptions::default()
    });
    sim.put_config(
        json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}}),
        None,
    )
    .expect("ok");
    sim.add_service(service("shop", &[SHOP]));
    let read_only = vec![
        Rule::ServicePrefix(String::new(), Access::Read),
        Rule::NodePrefix(String::new(), Access::Read),
        Rule::Service("edge-ingress".into(), Access::Write),
    ];
    sim.set_token(secret, read_only.clone());
    let daemon = Daemon::start(&with(base_env(&sim), &[("CONSULTOKEN", secret)]));
    daemon.wait_output(EVENTUALLY, "mesh:write");
    wait_until(EVENTUALLY, "/health 503 names the permission", || {
        let (status, body) = daemon.health();
        status == 503 && body.contains("mesh:write")
    });
    assert!(entry(&sim).is_none());

    let mut granted = read_only;
    granted.push(Rule::Mesh(Access::Write));
    sim.set_token(secret, granted);
    wait_until(Duration::from_secs(40), "converged once granted", || {
        converged(&sim, &[route("shop", &["shop.example.com"])])
    });
    wait_until(EVENTUALLY, "/health ok", || daemon.health().0 == 200);
    assert!(
        sim.requests().iter().all(|r| r.had_token),
        "every request carries the token"
    );
    assert!(
        !daemon.output().contains(secret),
        "the token leaked into the output:\n{}",
        daemon.output()
    );
    assert!(!daemon.health().1.contains(secret));
}

#[test]
fn sigterm_with_the_agent_unreachable_exits_1_within_5_seconds() {
    let sim = sim_http();
    sim.add_service(service("shop", &[SHOP]));
    let mut daemon = Daemon::start(&base_env(&sim));
    wait_until(EVENTUALLY, "registered", || ingress_tags(&sim).is_some());
    sim.stop_listening();
    let sent = Instant::now();
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(6));
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "exited within 5 s, took {:?}",
        sent.elapsed()
    );
    assert_eq!(status.code(), Some(1));
    assert!(
        daemon.output().contains("could not deregister"),
        "{}",
        daemon.output()
    );
}

fn tls_env(
    sim: &Sim,
    pki: &TestPki,
    ca: &std::path::Path,
    client_cert: bool,
) -> Vec<(String, String)> {
    let url = sim.url();
    assert!(url.starts_with("https://"), "{url}");
    let mut env = with(
        base_env(sim),
        &[("CONSUL_CACERT", ca.to_str().expect("utf-8 path"))],
    );
    if client_cert {
        env = with(
            env,
            &[
                (
                    "CONSUL_CLIENT_CERT",
                    pki.client_cert.to_str().expect("utf-8"),
                ),
                ("CONSUL_CLIENT_KEY", pki.client_key.to_str().expect("utf-8")),
            ],
        );
    }
    env
}

fn tls_sim(pki: &TestPki, mutual: bool) -> Sim {
    let sim = Sim::start(SimOptions {
        tls: Some(pki.server_tls(mutual)),
        ..SimOptions::default()
    });
    sim.put_config(
        json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}}),
        None,
    )
    .expect("ok");
    sim.add_service(service("shop", &[SHOP]));
    sim
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ism-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn tls_and_mutual_tls() {
    let pki = TestPki::generate(temp_dir("tls"));
    let sim = tls_sim(&pki, false);
    let _daemon = Daemon::start(&tls_env(&sim, &pki, &pki.ca_cert, false));
    wait_until(EVENTUALLY, "converged over TLS", || {
        converged(&sim, &[route("shop", &["shop.example.com"])])
    });

    let mutual = tls_sim(&pki, true);
    let _daemon = Daemon::start(&tls_env(&mutual, &pki, &pki.ca_cert, true));
    wait_until(EVENTUALLY, "converged over mutual TLS", || {
        converged(&mutual, &[route("shop", &["shop.example.com"])])
    });
}

#[test]
fn a_wrong_ca_is_refused_without_falling_back_to_plaintext() {
    let pki = TestPki::generate(temp_dir("wrong-ca"));
    let sim = tls_sim(&pki, false);
    let daemon = Daemon::start(&tls_env(&sim, &pki, &pki.other_ca_cert, false));
    wait_until(EVENTUALLY, "/health 503", || daemon.health().0 == 503);
    daemon.wait_output(EVENTUALLY, "certificate");
    assert!(
        sim.requests().is_empty(),
        "no request got through: {:?}",
        sim.requests()
    );
    assert!(entry(&sim).is_none());
}

#[test]
fn bad_configuration_exits_2_naming_each_variable() {
    let env = vec![
        ("SERVICENAMEINGRESSGATEWAY".to_string(), "edge".to_string()),
        ("INGRESSPORT".to_string(), "99999".to_string()),
        ("TYPEGATEWAY".to_string(), "nginx".to_string()),
    ];
    let mut daemon = Daemon::start(&env);
    let status = daemon.wait_exit(EVENTUALLY);
    assert_eq!(status.code(), Some(2));
    let out = daemon.output();
    for variable in ["TAGINGRESSSERVICE", "INGRESSPORT", "TYPEGATEWAY"] {
        assert!(out.contains(variable), "{variable} named in:\n{out}");
    }
}

#[test]
fn bad_tls_material_exits_2_with_the_other_problems() {
    let pki = TestPki::generate(temp_dir("bad-tls"));
    let sim = tls_sim(&pki, true);
    let garbage = temp_dir("bad-tls-files").join("garbage-ca.pem");
    // PEM that parses, holding no certificate rustls can use.
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nAQIDBA==\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let env = with(
        base_env(&sim),
        &[
            ("CONSUL_CACERT", garbage.to_str().expect("utf-8")),
            (
                "CONSUL_CLIENT_CERT",
                pki.client_cert.to_str().expect("utf-8"),
            ),
            // A real key, but not the client certificate's.
            ("CONSUL_CLIENT_KEY", pki.server_key.to_str().expect("utf-8")),
            ("INGRESSPORT", "99999"),
        ],
    );
    let mut daemon = Daemon::start(&env);
    let status = daemon.wait_exit(EVENTUALLY);
    let out = daemon.output();
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains("invalid configuration (3 problems)"), "{out}");
    for variable in ["CONSUL_CACERT:", "CONSUL_CLIENT_KEY:", "INGRESSPORT:"] {
        assert!(out.contains(variable), "{variable} named in:\n{out}");
    }
    assert!(sim.requests().is_empty(), "{:?}", sim.requests());
}

#[test]
fn a_value_that_is_not_utf8_exits_2_naming_its_variable() {
    use std::os::unix::ffi::OsStrExt;
    let sim = sim_http();
    let mut child = std::process::Command::new(BIN)
        .env_clear()
        .envs(base_env(&sim))
        .env(
            "CONSUL_HTTP_TOKEN",
            std::ffi::OsStr::from_bytes(b"s3cr3t-\xff"),
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("daemon binary starts");
    let deadline = Instant::now() + EVENTUALLY;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after {EVENTUALLY:?}: a bad value must stop it at once");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().expect("output");
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("CONSUL_HTTP_TOKEN: the value is not valid UTF-8"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t"), "{err}");
    assert!(sim.requests().is_empty(), "{:?}", sim.requests());
}

#[test]
fn enterprise_settings_against_consul_ce_are_reported_with_the_fix() {
    let sim = sim_http();
    sim.add_service(service("shop", &[SHOP]));
    let daemon = Daemon::start(&with(base_env(&sim), &[("CONSUL_NAMESPACE", "team-a")]));
    daemon.wait_output(EVENTUALLY, "Namespaces are a Consul Enterprise feature");
    daemon.wait_output(EVENTUALLY, "unset CONSUL_NAMESPACE");
    wait_until(EVENTUALLY, "/health 503 naming the fix", || {
        let (status, body) = daemon.health();
        status == 503 && body.contains("CONSUL_NAMESPACE")
    });
    assert!(entry(&sim).is_none(), "nothing written");
}
