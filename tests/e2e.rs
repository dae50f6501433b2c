//! The whole chain with the real Traefik and the real Envoy:
//!
//! ```text
//! client --Host: shop.example.com--> Traefik (consulCatalog provider, reading the simulator)
//!        --> the ingress service the daemon registered (INGRESSADDRESS:INGRESSPORT)
//!        --> Envoy standing in for the ingress gateway --> the backend of service "shop"
//! ```
//!
//! Traefik learns its routers only from the tags the daemon put on the ingress service
//! (prefix stripped, `traefik.enable=true` added), and Envoy learns its virtual hosts only
//! from the `ingress-gateway` config entry the daemon wrote, so a request that reaches the
//! right backend shows both halves of the daemon's work. In Consul the gateway's Envoy is
//! configured over xDS from that entry; here [`envoy_bootstrap`] derives a static
//! bootstrap from it, a deliberately small stand-in for that translation.
//!
//! The chain runs twice: with the simulator as Consul, and with a real Consul 1.8.7 dev
//! agent (Traefik's Consul Catalog provider then reads the real agent, whose HTTP check
//! of the ingress service follows Envoy's `/ready` at the daemon's registered 10s).
//!
//! The binaries come from `TRAEFIK_BIN`, `ENVOY_BIN` and `CONSUL_BIN` (`.ci/run`
//! installs them and sets all three); without them the test fails rather than skips.

mod common;
#[path = "e2e/stack.rs"]
mod stack;

use std::collections::BTreeMap;
use std::time::Duration;

use common::consul::{Agent, Consul};
use common::*;
use consul_sim::{ServiceSpec, Sim, SimOptions};
use serde_json::{json, Value};
use stack::{
    envoy_cluster, envoy_http_listener, envoy_ready_listener, envoy_socket, eventually, free_port,
    get, is_traefik_404, request, start_envoy, start_traefik, tool, Backend, ENVOY_BIN,
    TRAEFIK_BIN,
};

const SHOP_HOST: &str = "shop.example.com";
const BLOG_HOST: &str = "blog.example.com";

/// The ports of one run, all chosen by the OS.
struct Ports {
    /// Envoy's gateway listener: INGRESSPORT, the ingress service's port.
    ingress: u16,
    /// Envoy's `/ready` listener: INGRESSHEALTHCHECKPORT, the ingress service's check.
    ready: u16,
    envoy_admin: u16,
    /// Traefik's entrypoint for clients.
    traefik_web: u16,
    /// Traefik's `traefik` entrypoint, serving `/ping`.
    traefik_ping: u16,
}

impl Ports {
    fn pick() -> Ports {
        Ports {
            ingress: free_port(),
            ready: free_port(),
            envoy_admin: free_port(),
            traefik_web: free_port(),
            traefik_ping: free_port(),
        }
    }
}

/// The simulator with the HTTP check runner on, so the ingress service's health follows
/// Envoy's `/ready`; checks run every 200ms instead of the registered 10s so a health
/// transition shows within a test's patience.
fn sim_with_checks() -> Sim {
    let sim = Sim::start(SimOptions {
        run_checks: true,
        check_interval: Some(Duration::from_millis(200)),
        ..SimOptions::default()
    });
    sim.put_config(
        json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}}),
        None,
    )
    .expect("proxy-defaults accepted");
    sim
}

/// A catalog service whose instance is `backend`, tagged for the gateway with `host`.
fn exposed(backend: &Backend, host: &str) -> ServiceSpec {
    let tag = format!(
        "gw-traefik.http.routers.{}.rule=Host(`{host}`)",
        backend.name
    );
    ServiceSpec {
        port: backend.port,
        ..service(&backend.name, &[&tag, "version=1"])
    }
}

/// Envoy's bootstrap for the gateway, derived from the `ingress-gateway` entry the way
/// Consul's xDS would configure it, reduced to what the test exercises:
/// - each entry listener becomes an HTTP listener on its port, with one virtual host per
///   service whose `domains` are the service's `Hosts` (also with `:<port>`, as Consul
///   does; `<service>.ingress.*` when Hosts is empty), routing `/` to a cluster of that
///   service;
/// - a service's cluster points straight at its backend (`backends`: service -> port),
///   where Consul would point at its sidecars over mTLS;
/// - the ready listener routes `/ready` to the admin's own `/ready`, as Consul's
///   `envoy_ready_listener` does, so `POST /healthcheck/fail` on the admin turns it 503.
fn envoy_bootstrap(entry: &Value, ports: &Ports, backends: &BTreeMap<String, u16>) -> Value {
    let mut listeners = Vec::new();
    let mut clusters = vec![envoy_cluster("self_admin", ports.envoy_admin)];
    for listener in entry["Listeners"].as_array().expect("entry has Listeners") {
        let port = listener["Port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .expect("listener Port");
        let mut virtual_hosts = Vec::new();
        for service in listener["Services"].as_array().expect("listener Services") {
            let name = service["Name"].as_str().expect("service Name");
            let hosts: Vec<String> = match service["Hosts"].as_array() {
                Some(hosts) if !hosts.is_empty() => hosts
                    .iter()
                    .map(|h| h.as_str().expect("host").to_string())
                    .collect(),
                _ => vec![format!("{name}.ingress.*")],
            };
            let domains: Vec<String> = hosts
                .iter()
                .flat_map(|h| [h.clone(), format!("{h}:{port}")])
                .collect();
            virtual_hosts.push(json!({
                "name": name,
                "domains": domains,
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": name}}],
            }));
            let backend = backends
                .get(name)
                .unwrap_or_else(|| panic!("the entry routes {name:?}, which has no backend"));
            clusters.push(envoy_cluster(name, *backend));
        }
        listeners.push(envoy_http_listener(
            &format!("ingress:{port}"),
            port,
            json!(virtual_hosts),
        ));
    }
    listeners.push(envoy_ready_listener(ports.ready, "self_admin"));
    json!({
        "admin": {"address": envoy_socket(ports.envoy_admin)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    })
}

/// What the chain needs of Consul beyond [`Consul`]: the ingress check's status, the
/// address for Traefik, and a look at how Traefik's own requests were answered.
trait ChainConsul: Consul {
    fn check_status(&self, check_id: &str) -> Option<String>;
    fn address(&self) -> String;
    fn assert_traefik_reads_were_served(&self);
}

impl ChainConsul for Sim {
    fn check_status(&self, check_id: &str) -> Option<String> {
        Sim::check_status(self, check_id)
    }
    fn address(&self) -> String {
        self.addr().to_string()
    }
    fn assert_traefik_reads_were_served(&self) {
        assert_traefik_reads_were_served(self);
    }
}

impl ChainConsul for Agent {
    fn check_status(&self, check_id: &str) -> Option<String> {
        Agent::check_status(self, check_id)
    }
    fn address(&self) -> String {
        self.addr()
    }
    /// The agent logs every request it answered with an error; none may be Traefik's
    /// reads (the catalog and health endpoints, which the daemon's watch shares only
    /// for the catalog, without errors either).
    fn assert_traefik_reads_were_served(&self) {
        let log = self.log();
        let health_reads = self
            .requests()
            .iter()
            .filter(|(method, url)| method == "GET" && url.starts_with("/v1/health/service/"))
            .count();
        assert!(
            health_reads > 0,
            "no health read from Traefik in the agent's log"
        );
        let errors: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("Request error:"))
            .filter(|l| l.contains("url=/v1/health/") || l.contains("url=/v1/catalog/"))
            .collect();
        assert!(
            errors.is_empty(),
            "Traefik's reads answered with errors:\n{}",
            errors.join("\n")
        );
    }
}

/// Names of the services the entry routes on the listener at `port`, sorted.
fn routed_services(consul: &impl Consul, port: u16) -> Vec<String> {
    routes(consul, port)
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

/// Traefik's Consul client (Go's, whose User-Agent the daemon's does not share) must
/// have been answered on every request: a 404 would mean it called an endpoint the
/// simulator does not serve, and the test would then exercise the simulator's gaps
/// rather than the daemon.
fn assert_traefik_reads_were_served(sim: &Sim) {
    let traefik: Vec<String> = sim
        .requests()
        .iter()
        .filter(|r| r.user_agent.starts_with("Go-http-client"))
        .map(|r| format!("{} {}?{} -> {}", r.method, r.path, r.query, r.status))
        .collect();
    assert!(!traefik.is_empty(), "no request from Traefik in the log");
    assert!(
        traefik.iter().all(|r| r.ends_with("-> 200")),
        "Traefik's requests to the simulator:\n{}",
        traefik.join("\n")
    );
}

fn answered_by(seen: &Option<(u16, String)>, backend: &str) -> bool {
    matches!(seen, Some((200, body)) if body == backend)
}

#[test]
#[ignore = "needs Traefik and Envoy: run .ci/run"]
fn traefik_and_envoy_route_hosts_through_the_ingress_service() {
    // Fail before starting anything when a binary is missing.
    tool(TRAEFIK_BIN.0, TRAEFIK_BIN.1);
    tool(ENVOY_BIN.0, ENVOY_BIN.1);
    let _one_at_a_time = one_chain_at_a_time();
    chain(&sim_with_checks());
}

/// The two chains take their ports the same way ([`free_port`]: chosen by the OS, then
/// released) and each starts an Envoy and a Traefik; run side by side, one could take a
/// port the other was about to bind. They run one after the other instead.
fn one_chain_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static CHAIN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A chain that panicked poisons the lock; the next one still runs on its own.
    CHAIN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The same chain with a real Consul 1.8.7 agent in the simulator's place.
#[test]
#[ignore = "needs Traefik, Envoy and a Consul agent: run .ci/run"]
fn traefik_and_envoy_route_hosts_through_the_ingress_service_with_real_consul() {
    tool(TRAEFIK_BIN.0, TRAEFIK_BIN.1);
    tool(ENVOY_BIN.0, ENVOY_BIN.1);
    common::consul::consul_bin();
    let _one_at_a_time = one_chain_at_a_time();
    chain(&Agent::http());
}

fn chain(sim: &impl ChainConsul) {
    let shop = Backend::start("shop");
    let blog = Backend::start("blog");
    let backends: BTreeMap<String, u16> = [&shop, &blog]
        .iter()
        .map(|b| (b.name.clone(), b.port))
        .collect();
    let ports = Ports::pick();
    let check_id = format!("{INGRESS_ID}:ready");
    sim.add_service(exposed(&shop, SHOP_HOST));
    sim.add_service(exposed(&blog, BLOG_HOST));

    let env = with(
        base_env(sim),
        &[
            ("INGRESSPORT", &ports.ingress.to_string()),
            ("INGRESSHEALTHCHECKPORT", &ports.ready.to_string()),
            ("INGRESSADDRESS", "127.0.0.1"),
        ],
    );
    let _daemon = Daemon::start(&env);
    // Only the names: whether the hosts are right is for the requests below to show.
    wait_until(EVENTUALLY, "the entry lists blog and shop", || {
        routed_services(sim, ports.ingress) == ["blog", "shop"]
    });

    let entry = entry(sim).expect("entry written");
    let mut envoy = start_envoy(&envoy_bootstrap(&entry, &ports, &backends));
    eventually(
        &mut [&mut envoy],
        EVENTUALLY,
        "Envoy's /ready answers 200 on INGRESSHEALTHCHECKPORT",
        || get(ports.ready, "localhost", "/ready"),
        |seen| matches!(seen, Some((200, _))),
    );
    wait_until(EVENTUALLY, "the ingress service's check passes", || {
        sim.check_status(&check_id).as_deref() == Some("passing")
    });

    let mut traefik = start_traefik(&sim.address(), ports.traefik_web, ports.traefik_ping);
    eventually(
        &mut [&mut traefik],
        EVENTUALLY,
        "Traefik's /ping",
        || get(ports.traefik_ping, "localhost", "/ping"),
        |seen| matches!(seen, Some((200, _))),
    );

    let through_traefik = |host: &str| get(ports.traefik_web, host, "/");
    eventually(
        &mut [&mut traefik, &mut envoy],
        EVENTUALLY,
        "shop.example.com through Traefik reaches the shop backend",
        || through_traefik(SHOP_HOST),
        |seen| answered_by(seen, "shop"),
    );
    eventually(
        &mut [&mut traefik, &mut envoy],
        EVENTUALLY,
        "blog.example.com through Traefik reaches the blog backend",
        || through_traefik(BLOG_HOST),
        |seen| answered_by(seen, "blog"),
    );

    // Without its gateway tag, shop leaves the ingress service's tags: Traefik drops the
    // router and answers 404 for the host, while blog stays routed.
    sim.set_service_tags("node-1", "shop", &["version=1"]);
    wait_until(EVENTUALLY, "the entry lists only blog", || {
        routed_services(sim, ports.ingress) == ["blog"]
    });
    eventually(
        &mut [&mut traefik, &mut envoy],
        EVENTUALLY,
        "Traefik answers 404 for shop.example.com",
        || through_traefik(SHOP_HOST),
        is_traefik_404,
    );
    let blog_seen = through_traefik(BLOG_HOST);
    assert!(
        answered_by(&blog_seen, "blog"),
        "blog.example.com after shop left: {blog_seen:?}"
    );

    // A failing gateway: its /ready turns 503, the check critical, and Traefik, which
    // routes only to healthy instances, drops the router (Envoy itself would still
    // route: failing its health check only makes it report draining).
    let admin = ports.envoy_admin;
    let failed = request(admin, "POST", "localhost", "/healthcheck/fail");
    assert!(
        matches!(failed, Some((200, _))),
        "POST /healthcheck/fail: {failed:?}"
    );
    eventually(
        &mut [&mut envoy],
        EVENTUALLY,
        "Envoy's /ready answers 503",
        || get(ports.ready, "localhost", "/ready"),
        |seen| matches!(seen, Some((503, _))),
    );
    eventually(
        &mut [&mut envoy],
        EVENTUALLY,
        "the ingress service's check turns critical",
        || sim.check_status(&check_id),
        |seen| seen.as_deref() == Some("critical"),
    );
    eventually(
        &mut [&mut traefik, &mut envoy],
        EVENTUALLY,
        "Traefik answers 404 for blog.example.com (no healthy instance, no router)",
        || through_traefik(BLOG_HOST),
        is_traefik_404,
    );

    let recovered = request(admin, "POST", "localhost", "/healthcheck/ok");
    assert!(
        matches!(recovered, Some((200, _))),
        "POST /healthcheck/ok: {recovered:?}"
    );
    eventually(
        &mut [&mut envoy],
        EVENTUALLY,
        "the ingress service's check passes again",
        || sim.check_status(&check_id),
        |seen| seen.as_deref() == Some("passing"),
    );
    eventually(
        &mut [&mut traefik, &mut envoy],
        EVENTUALLY,
        "Traefik routes blog.example.com again",
        || through_traefik(BLOG_HOST),
        |seen| answered_by(seen, "blog"),
    );
    sim.assert_traefik_reads_were_served();
}
