//! The daemon against a real Consul 1.8.7 agent where the agent's own machinery is the
//! point: ACLs (default deny, a token made from the README's policy), TLS (an HTTPS port,
//! client-certificate verification), an agent that restarts and forgets everything, and
//! several instances sharing one entry. The scenarios both backends run are in
//! `tests/daemon.rs` (`real::*`).
//!
//! Every test is `#[ignore]`d in a plain `cargo test` and run by `.ci/run`, which installs
//! the agent and sets `CONSUL_BIN`; without it they fail.

mod common;

use std::time::{Duration, Instant};

use common::consul::{Agent, AgentOptions, Consul};
use common::*;
use consul_sim::TestPki;

const SHOP: &str = "gw-traefik.http.routers.shop.rule=Host(`shop.example.com`)";
const PORT: u16 = 9997;
const SECRET: &str = "7f3b9c1e-5d2a-4e8f-9b6c-0a1d2e3f4a5b";

fn shop_routed(agent: &Agent) -> bool {
    routes(agent, PORT) == [route("shop", &["shop.example.com"])]
}

/// The `hcl` blocks of the README's "ACL policy" section, in order.
fn readme_policy_blocks() -> Vec<String> {
    let readme = include_str!("../README.md");
    let section = readme
        .split("\n## ACL policy\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README has an \"ACL policy\" section");
    section
        .split("```hcl\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .map(String::from)
        .collect()
}

/// The README's policy for the Consul these tests run: the common block plus the block
/// that names Consul 1.8.
fn readme_policy_for_consul_1_8() -> String {
    let blocks = readme_policy_blocks();
    let common = blocks
        .iter()
        .find(|b| b.contains("service \"edge-ingress\""))
        .expect("a policy block with the ingress service's rule");
    let entry = blocks
        .iter()
        .find(|b| b.contains("Consul 1.8"))
        .expect("a policy block for Consul 1.8");
    format!("{common}{entry}")
}

/// The README's policy without its entry-write rule (the common block only), plus `extra`.
fn readme_policy_without_entry_write(extra: &str) -> String {
    let blocks = readme_policy_blocks();
    let common = blocks
        .iter()
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

fn assert_no_token(daemon: &Daemon) {
    assert!(
        !daemon.output().contains(SECRET),
        "the token leaked into the output:\n{}",
        daemon.output()
    );
    assert!(!daemon.health().1.contains(SECRET), "the token on /health");
}

#[test]
#[ignore = "needs a Consul agent (CONSUL_BIN): run .ci/run"]
fn the_readme_policy_is_enough_on_consul_1_8() {
    let agent = acl_agent(&readme_policy_for_consul_1_8());
    let mut daemon = Daemon::start(&base_env(&agent));
    wait_until(EVENTUALLY, "shop routed with the README's policy", || {
        shop_routed(&agent)
    });
    wait_until(EVENTUALLY, "registered", || ingress_tags(&agent).is_some());
    wait_until(EVENTUALLY, "/health ok", || daemon.health().0 == 200);
    assert_no_token(&daemon);
    // Deregistering on SIGTERM is in the policy too.
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(6)).code(),
        Some(0),
        "{}",
        daemon.output()
    );
    assert!(agent.agent_service(INGRESS_ID).is_none(), "deregistered");
}

/// Consul 1.8 has no `mesh` resource: a policy with `mesh = "write"` is accepted and the
/// rule ignored, so the entry write is denied until `operator = "write"` is granted, which
/// the daemon picks up by itself.
#[test]
#[ignore = "needs a Consul agent (CONSUL_BIN): run .ci/run"]
fn denied_without_operator_write_then_granted_without_a_restart() {
    let agent = acl_agent(&readme_policy_without_entry_write("mesh = \"write\""));
    let daemon = Daemon::start(&base_env(&agent));
    wait_until(
        EVENTUALLY,
        "/health 503 while the entry write is denied",
        || {
            let (status, body) = daemon.health();
            status == 503 && body.contains("403")
        },
    );
    assert!(entry(&agent).is_none(), "nothing written while denied");

    agent.set_policy(SECRET, &readme_policy_for_consul_1_8());
    wait_until(Duration::from_secs(40), "converged once granted", || {
        shop_routed(&agent)
    });
    wait_until(EVENTUALLY, "/health ok", || daemon.health().0 == 200);
    assert_no_token(&daemon);
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ism-real-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn tls_agent(pki: &TestPki, mutual: bool) -> Agent {
    let agent = Agent::start(AgentOptions {
        tls: Some((pki.clone(), mutual)),
        http_defaults: true,
        ..AgentOptions::default()
    });
    agent.add_service(service("shop", &[SHOP]));
    agent
}

/// The daemon's environment for the agent's HTTPS port.
fn tls_env(agent: &Agent, ca: &std::path::Path, client: Option<&TestPki>) -> Vec<(String, String)> {
    let url = agent.https_url();
    let mut env = with(
        base_env(agent),
        &[
            ("CONSULHTTPURL", url.as_str()),
            ("CONSUL_CACERT", ca.to_str().expect("utf-8 path")),
        ],
    );
    if let Some(pki) = client {
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

/// The daemon's requests the agent served (on either port).
fn daemon_requests(agent: &Agent) -> Vec<String> {
    agent
        .requests()
        .into_iter()
        .map(|(method, url)| format!("{method} {url}"))
        .collect()
}

#[test]
#[ignore = "needs a Consul agent (CONSUL_BIN): run .ci/run"]
fn https_with_the_ca_only() {
    let pki = TestPki::generate(temp_dir("tls"));
    let agent = tls_agent(&pki, false);
    let _daemon = Daemon::start(&tls_env(&agent, &pki.ca_cert, None));
    wait_until(EVENTUALLY, "converged over HTTPS", || shop_routed(&agent));
    wait_until(EVENTUALLY, "registered over HTTPS", || {
        ingress_tags(&agent).is_some()
    });
}

#[test]
#[ignore = "needs a Consul agent (CONSUL_BIN): run .ci/run"]
fn mutual_tls_and_no_client_certificate_refused() {
    let pki = TestPki::generate(temp_dir("mtls"));
    let agent = tls_agent(&pki, true);

    // Without a client certificate the agent refuses the handshake.
    let refused = Daemon::start(&tls_env(&agent, &pki.ca_cert, None));
    wait_until(
        EVENTUALLY,
        "/health 503 without a client certificate",
        || refused.health().0 == 503,
    );
    assert!(
        entry(&agent).is_none(),
        "nothing written without a client certificate"
    );
    assert_eq!(daemon_requests(&agent), Vec::<String>::new());
    drop(refused);

    let _daemon = Daemon::start(&tls_env(&agent, &pki.ca_cert, Some(&pki)));
    wait_until(EVENTUALLY, "converged over mutual TLS", || {
        shop_routed(&agent)
    });
    wait_until(EVENTUALLY, "registered over mutual TLS", || {
        ingress_tags(&agent).is_some()
    });
}

#[test]
#[ignore = "needs a Consul agent (CONSUL_BIN): run .ci/run"]
fn a_wrong_ca_is_refused_without_falling_back_to_plaintext() {
    let pki = TestPki::generate(temp_dir("wrong-ca"));
    let agent = tls_agent(&pki, false);
    let daemon = Daemon::start(&tls_env(&agent, &pki.other_ca_cert, None));
    wait_until(EVENTUALLY, "/health 503", || daemon.health().0 == 503);
    daemon.wait_output(EVENTUALLY, "certificate");
    // The agent also serves plain HTTP (on another port): nothing reached it either way.
    assert_eq!(daemon_requests(&agent), Vec::<String>::new());
    assert!(entry(&agent).is_none());
    assert!(agent.agent_service(INGRESS_ID).is_none());
}

/// A dev agent restarted forgets everything: catalog, entries, registrations. Once the
/// tagged services are back, the daemon registers again and writes its entry again.
#[test]
#[ignore = "needs a Consul agent (CONSUL_BIN): run .ci/run"]
fn an_agent_restarted_from_nothing_gets_registration_and_entry_back() {
    let agent = Agent::http();
    agent.add_service(service("shop", &[SHOP]));
    let daemon = Daemon::start(&base_env(&agent));
    wait_until(EVENTUALLY, "shop routed", || shop_routed(&agent));
    wait_until(EVENTUALLY, "registered", || ingress_tags(&agent).is_some());

    agent.restart();
    // The daemon may register again at once; what the restart lost for sure is what only
    // the test puts back.
    let catalog = agent.call("GET", "/v1/catalog/services", None).json();
    assert!(
        catalog.get("shop").is_none(),
        "the restart lost the catalog: {catalog}"
    );
    let started = Instant::now();
    agent.replay_services();
    wait_until(Duration::from_secs(30), "registered again", || {
        ingress_tags(&agent).is_some()
    });
    wait_until(Duration::from_secs(30), "entry written again", || {
        shop_routed(&agent)
    });
    assert!(
        started.elapsed() <= Duration::from_secs(25),
        "back within 25 s, took {:?}",
        started.elapsed()
    );
    wait_until(EVENTUALLY, "/health ok", || daemon.health().0 == 200);
}

#[test]
#[ignore = "needs a Consul agent (CONSUL_BIN): run .ci/run"]
fn sigterm_with_the_agent_stopped_exits_1_within_5_seconds() {
    let agent = Agent::http();
    agent.add_service(service("shop", &[SHOP]));
    let mut daemon = Daemon::start(&base_env(&agent));
    wait_until(EVENTUALLY, "registered", || ingress_tags(&agent).is_some());
    agent.stop();
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

/// Config-entry writes the agent accepted (each moves the entry's ModifyIndex on
/// Consul 1.8.7, identical or not), through the proxy the daemons talk to.
fn entry_writes(agent: &Agent) -> usize {
    agent.config_put_results().iter().filter(|&&ok| ok).count()
}

/// Three instances (one per gateway allocation) share the entry. On Consul 1.8.7 an
/// identical write is not skipped: it moves ModifyIndex and wakes every watcher, so each
/// catalog change must cost one accepted entry write, not one per instance, and a quiet
/// catalog none.
#[test]
#[ignore = "needs a Consul agent (CONSUL_BIN): run .ci/run"]
fn three_instances_write_once_per_change_and_never_while_idle() {
    let agent = Agent::http();
    agent.via_proxy();
    agent.add_service(service("shop", &[SHOP]));
    let daemons: Vec<Daemon> = (0..3).map(|_| Daemon::start(&base_env(&agent))).collect();
    wait_until(EVENTUALLY, "shop routed", || shop_routed(&agent));
    for daemon in &daemons {
        wait_until(EVENTUALLY, "every instance healthy", || {
            daemon.health().0 == 200
        });
    }
    // Settled: the measured windows start here.
    std::thread::sleep(Duration::from_secs(2));
    let settled = entry_writes(&agent);
    let index = entry(&agent).expect("entry")["ModifyIndex"].clone();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(entry_writes(&agent), settled, "entry writes while idle");
    assert_eq!(entry(&agent).expect("entry")["ModifyIndex"], index);

    let mut per_change = Vec::new();
    for n in 0..3 {
        let before = entry_writes(&agent);
        let host = format!("cart{n}.example.com");
        let tag = format!("gw-traefik.http.routers.cart.rule=Host(`{host}`)");
        agent.add_service(service("cart", &[tag.as_str()]));
        wait_until(EVENTUALLY, "cart routed", || {
            routes(&agent, PORT).contains(&route("cart", &[host.as_str()]))
        });
        std::thread::sleep(Duration::from_secs(2)); // the other instances' reaction
        per_change.push(entry_writes(&agent) - before);
    }
    eprintln!(
        "accepted entry writes per catalog change with three instances: {per_change:?}; \
         every PUT answer: {:?}",
        agent.config_put_results()
    );
    assert!(
        per_change.iter().all(|&w| w == 1),
        "accepted entry writes per catalog change with three instances: {per_change:?}"
    );
}
