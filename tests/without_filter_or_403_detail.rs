//! Where Consul 1.8.7 lacks what the daemon relied on, and what the daemon does there:
//!
//! - `/v1/catalog/services` ignores `filter=`: sidecars (with their parent's tags) and
//!   gateways would reach the daemon; it detects the ignored filter at start and reads
//!   the UI's service summary, which names each service's kind, instead.
//! - A denied write answers a bare `403 Permission denied`: the daemon names the
//!   permission of the call it made.
//!
//! `#[ignore]`d in a plain `cargo test`; they need `CONSUL_BIN`.

mod common;

use common::consul::{Agent, AgentOptions, Consul};
use common::*;
use consul_sim::ServiceSpec;
use serde_json::Value;

const SHOP: &str = "gw-traefik.http.routers.shop.rule=Host(`shop.example.com`)";
const PORT: u16 = 9997;
const SECRET: &str = "7f3b9c1e-5d2a-4e8f-9b6c-0a1d2e3f4a5b";

/// The README's policy blocks (as in `tests/real_consul.rs`): the common one plus `extra`.
fn readme_policy(extra: &str) -> String {
    let readme = include_str!("../README.md");
    let section = readme
        .split("\n## ACL policy\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README has an \"ACL policy\" section");
    let common = section
        .split("```hcl\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .find(|b| b.contains("service \"edge-ingress\""))
        .expect("a policy block with the ingress service's rule");
    format!("{common}{extra}\n")
}

fn acl_agent(rules: &str) -> Agent {
    let agent = Agent::start(AgentOptions {
        acl: true,
        http_defaults: true,
        ..AgentOptions::default()
    });
    agent.set_policy(SECRET, rules);
    agent.use_token(SECRET);
    agent.add_service(service("shop", &[SHOP]));
    agent
}

/// `sidecars_and_gateways_are_never_exposed_or_warned_about` of `tests/daemon.rs`,
/// against Consul 1.8.7: the daemon must leave sidecars and gateways out by itself when
/// the catalog filter is ignored.
#[test]
#[ignore = "needs a Consul agent (CONSUL_BIN): run .ci/run"]
fn sidecars_and_gateways_are_never_exposed_or_warned_about() {
    let agent = Agent::http();
    agent.add_service(service("shop", &[SHOP]));
    agent.add_service(ServiceSpec {
        kind: "connect-proxy".into(),
        port: 21000,
        ..service("shop-sidecar-proxy", &[SHOP])
    });
    agent.add_service(ServiceSpec {
        kind: "ingress-gateway".into(),
        port: 8888,
        ..service(
            "other-gateway",
            &["gw-traefik.http.routers.og.rule=Host(`other-gateway.example.com`)"],
        )
    });
    agent.add_service(ServiceSpec {
        kind: "terminating-gateway".into(),
        port: 8889,
        ..service(
            "egress",
            &["gw-traefik.http.routers.eg.rule=Host(`egress.example.com`)"],
        )
    });
    let daemon = Daemon::start(&base_env(&agent));
    wait_until(EVENTUALLY, "only shop routed", || {
        routes(&agent, PORT) == [route("shop", &["shop.example.com"])]
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
        || ingress_tags(&agent) == Some(tags.clone()),
    );
    let out = daemon.output();
    for name in ["shop-sidecar-proxy", "other-gateway", "egress"] {
        assert!(!out.contains(name), "{name} named in the output:\n{out}");
    }
}

/// Consul 1.8.7 answers a denied entry write with a bare `403 Permission denied`; the
/// daemon knows which call it made and names the permission itself: for the
/// ingress-gateway entry, `operator:write` on Consul 1.8 (`mesh:write` on Consul with the
/// mesh resource).
#[test]
#[ignore = "needs a Consul agent (CONSUL_BIN): run .ci/run"]
fn a_denied_entry_write_names_operator_write_on_health() {
    let agent = acl_agent(&readme_policy("mesh = \"write\""));
    let daemon = Daemon::start(&base_env(&agent));
    wait_until(EVENTUALLY, "/health 503 naming the permission", || {
        let (status, body) = daemon.health();
        status == 503 && body.contains("operator:write")
    });
    daemon.wait_output(EVENTUALLY, "operator:write");
}

/// With `SETSERVICEDEFAULTS=true`, a denied service-defaults write names
/// `service:write` on the service. Needs the same daemon change as above.
#[test]
#[ignore = "needs a Consul agent (CONSUL_BIN): run .ci/run"]
fn a_denied_service_defaults_write_names_service_write() {
    let agent = Agent::start(AgentOptions {
        acl: true,
        ..AgentOptions::default()
    });
    agent.set_policy(SECRET, &readme_policy("operator = \"write\""));
    agent.use_token(SECRET);
    agent.add_service(service(
        "web",
        &["gw-traefik.http.routers.web.rule=Host(`web.example.com`)"],
    ));
    let daemon = Daemon::start(&with(base_env(&agent), &[("SETSERVICEDEFAULTS", "true")]));
    daemon.wait_output(EVENTUALLY, "service:write");
    assert!(
        daemon.output().contains("\"web\""),
        "names the service:\n{}",
        daemon.output()
    );
}
