//! Property tests of the planner against the simulator's Consul validation.
//!
//! For arbitrary catalogs (random names, tags with valid, invalid, wildcard and
//! conflicting hosts, random rules and matchers), random protocols, and random existing
//! entries with foreign listeners, gateway TLS and Meta:
//! - the planned config entry is accepted by the simulator holding the same
//!   service-defaults, proxy-defaults and existing entry (Consul's validation, §6.2, and
//!   the protocol cross-check, §6.3), written with the existing entry's cas index;
//! - every foreign listener, the gateway TLS and foreign Meta survive unchanged;
//! - planning twice gives the same plan, and planning again from the written entry
//!   wants no write (the daemon converges, it never flaps).
//!
//! The same in api mode (`CONSULGATEWAY=api`), for Traefik rules built from `Host`,
//! `PathPrefix`, `Path`, `Method`, `Header`, `Query`, `&&`, `||` (and what a route cannot
//! express) or Fabio `urlprefix-` tags, with existing gateways holding foreign listeners
//! and existing routes (foreign ones, other gateways', stale ones of ours): every write
//! the diff makes (the `api-gateway` entry, each `http-route`, deletes) is accepted by
//! the simulator with its cas; foreign listeners and routes are untouched; no two routes
//! route one (hostname, match); and once Consul's controller has written its Status,
//! planning again wants no write.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use consul_sim::{Sim, SimOptions};
use ingress_service_monitor::config::{from_env, Config};
use ingress_service_monitor::model::{
    Body, Catalog, Entries, EntryKey, IntentionsView, Kind, Protocols,
};
use ingress_service_monitor::plan::{self, Desired, PlanSettings, Snapshot};
use ingress_service_monitor::reconcile::diff::{diff, Diff, Observed, Op, Stamping};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const OUR_PORT: u16 = 9997;
const GRPC_PORT: u16 = 9100;

fn config(set_service_defaults: bool) -> Config {
    let map: HashMap<&str, String> = [
        ("TAGINGRESSSERVICE", "gw".to_string()),
        ("SERVICENAMEINGRESSGATEWAY", "edge".to_string()),
        ("INGRESSPORTGRPC", GRPC_PORT.to_string()),
        ("SETSERVICEDEFAULTS", set_service_defaults.to_string()),
    ]
    .into_iter()
    .collect();
    from_env(&|name| map.get(name).cloned()).expect("valid test config")
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-d]\\.example\\.com",
        1 => "[A-D]\\.Example\\.COM",
        1 => Just("*".to_owned()),
        1 => Just("*.w.example.com".to_owned()),
        1 => Just("bad_host.example.com".to_owned()),
        1 => Just("x.*".to_owned()),
        1 => Just("a.*.b".to_owned()),
        1 => Just("".to_owned()),
        1 => "[a-z0-9.-]{0,12}",
        1 => "\\PC{0,6}",
    ]
}

/// One selected tag, prefix already stripped (what `consul::wire` hands the planner).
fn tag() -> impl Strategy<Value = String> {
    let quote = prop_oneof![Just('`'), Just('"'), Just('\'')];
    prop_oneof![
        4 => ("[a-c]", prop::collection::vec((host(), quote), 1..3), prop::bool::ANY).prop_map(
            |(router, hosts, and_path)| {
                let hosts: Vec<String> =
                    hosts.iter().map(|(h, q)| format!("Host({q}{h}{q})")).collect();
                let mut expr = hosts.join(" || ");
                if and_path {
                    expr = format!("({expr}) && PathPrefix(`/p`)");
                }
                format!("traefik.http.routers.{router}.rule={expr}")
            }
        ),
        1 => "[a-c]".prop_map(|r| format!("traefik.http.routers.{r}.tls=true")),
        1 => "[a-c]".prop_map(|r| format!("traefik.http.routers.{r}.rule=HostRegexp(`.+`)")),
        1 => "\\PC{0,30}",
    ]
}

fn protocol() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("http".to_owned())),
        Just(Some("HTTP".to_owned())),
        Just(Some("tcp".to_owned())),
        Just(Some("grpc".to_owned())),
        Just(Some("http2".to_owned())),
        Just(Some(String::new())),
    ]
}

type Services = Vec<(String, Vec<String>, Option<String>)>;

fn services() -> impl Strategy<Value = Services> {
    prop::collection::vec(
        ("[a-f]{1,2}", prop::collection::vec(tag(), 0..4), protocol()),
        0..8,
    )
}

/// A foreign listener: tcp with one service of protocol tcp, or http with hosts.
#[derive(Debug, Clone)]
struct Foreign {
    port: u16,
    tcp: bool,
}

fn existing() -> impl Strategy<Value = Option<(Vec<Foreign>, bool, bool)>> {
    prop::option::of((
        prop::collection::vec(
            (5000u16..5004, prop::bool::ANY).prop_map(|(port, tcp)| Foreign { port, tcp }),
            0..3,
        ),
        prop::bool::ANY, // gateway TLS enabled
        prop::bool::ANY, // a stale listener of ours from an earlier run
    ))
}

struct Case {
    catalog: Catalog,
    protocols: Protocols,
    existing: Option<Value>,
}

fn build(services: &Services, existing: &Option<(Vec<Foreign>, bool, bool)>) -> Case {
    let mut catalog = Catalog::new();
    let mut service_defaults = BTreeMap::new();
    for (name, tags, protocol) in services {
        if !tags.is_empty() {
            catalog
                .entry(name.clone())
                .or_default()
                .extend(tags.iter().cloned());
        }
        if let Some(protocol) = protocol {
            service_defaults.insert(name.clone(), protocol.clone());
        }
    }
    let mut existing_entry = None;
    if let Some((foreign, tls, stale)) = existing {
        let mut listeners: Vec<Value> = Vec::new();
        let mut ports = Vec::new();
        for f in foreign {
            if ports.contains(&f.port) {
                continue;
            }
            ports.push(f.port);
            let name = format!("foreign{}", f.port);
            if f.tcp {
                service_defaults.insert(name.clone(), "tcp".into());
                listeners
                    .push(json!({"Port": f.port, "Protocol": "tcp", "Services": [{"Name": name}]}));
            } else {
                service_defaults.insert(name.clone(), "http".into());
                // Hosts that our services may claim too: a foreign listener's hosts are
                // its own business (uniqueness is per listener).
                listeners.push(json!({"Port": f.port, "Protocol": "http",
                    "Services": [{"Name": name, "Hosts": ["a.example.com"]}]}));
            }
        }
        if *stale {
            service_defaults.insert("old".into(), "http".into());
            listeners.push(json!({"Port": OUR_PORT, "Protocol": "http",
                "Services": [{"Name": "old", "Hosts": ["old.example.com"]}]}));
        }
        existing_entry = Some(json!({
            "Kind": "ingress-gateway", "Name": "edge",
            "TLS": {"Enabled": tls},
            "Meta": {"owner": "platform"},
            "Listeners": listeners,
        }));
    }
    Case {
        catalog,
        protocols: Protocols {
            service_defaults,
            proxy_default: None,
        },
        existing: existing_entry,
    }
}

fn foreign_listeners(entry: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = entry["Listeners"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .filter(|l| l["Port"] != OUR_PORT && l["Port"] != GRPC_PORT)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|l| l["Port"].as_u64());
    out
}

/// What the daemon would do with the gateway's entry: the desired entry, and the write
/// the diff makes of it (body and cas), if any.
#[derive(Debug, Clone, PartialEq)]
struct Planned {
    entry: Option<Value>,
    write: Option<(Value, u64)>,
    create_service_defaults: Vec<String>,
}

fn plan_for(case: &Case, current: Option<&Map<String, Value>>, config: &Config) -> Planned {
    let settings = PlanSettings::from_config(config);
    let key = settings.gateway_key();
    let mut entries = Entries::new();
    if let Some(current) = current {
        entries.insert(key.clone(), current);
    }
    let snapshot = Snapshot {
        catalog: &case.catalog,
        protocols: &case.protocols,
        entries: &entries,
        intentions: &IntentionsView::default(),
    };
    let desired = plan::plan(&snapshot, &settings);
    let entry = desired.entry(&key).map(|e| Value::Object(e.body.clone()));
    let create_service_defaults = desired
        .service_defaults_to_create()
        .map(String::from)
        .collect();
    let observed = Observed {
        entries: &entries,
        intentions: &IntentionsView::default(),
        registered: None,
        gateway: &settings.gateway_name,
    };
    let stamping = Stamping {
        catalog_index: None,
        defer_to_newer: true,
    };
    let write = diff(desired, &observed, stamping)
        .ops
        .into_iter()
        .find_map(|op| match op {
            Op::Put { key: k, body, cas } if k == key => Some((Value::Object(body), cas)),
            _ => None,
        });
    Planned {
        entry,
        write,
        create_service_defaults,
    }
}

proptest! {
    // Each case starts a simulator (a thread and a socket): keep the count moderate.
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn planned_entries_pass_consul_validation_and_keep_foreign_listeners(
        services in services(),
        existing in existing(),
        set_service_defaults in prop::bool::ANY,
    ) {
        let config = config(set_service_defaults);
        let case = build(&services, &existing);
        let sim = Sim::start(SimOptions::default());
        for (name, protocol) in &case.protocols.service_defaults {
            sim.put_config(json!({"Kind": "service-defaults", "Name": name, "Protocol": protocol}), None)
                .map_err(|e| TestCaseError::fail(format!("service-defaults {name}: {e:?}")))?;
        }
        let mut current = None;
        if let Some(entry) = &case.existing {
            sim.put_config(entry.clone(), None)
                .map_err(|e| TestCaseError::fail(format!("existing entry refused: {e:?}")))?;
            current = sim.config("ingress-gateway", "edge");
        }
        let current_map = current.as_ref().and_then(Value::as_object);

        let first = plan_for(&case, current_map, &config);
        let again = plan_for(&case, current_map, &config);
        prop_assert_eq!(&first, &again, "planning twice differs");

        // What SETSERVICEDEFAULTS would create comes first, as the daemon does it.
        for name in &first.create_service_defaults {
            prop_assert!(!case.protocols.service_defaults.contains_key(name), "would override {}", name);
        }

        if first.entry.is_none() {
            prop_assert!(current.is_none(), "an existing entry was planned away");
            return Ok(());
        }
        let Some((desired, cas)) = first.write.clone() else {
            prop_assert!(current.is_some(), "no write planned but no entry exists");
            return Ok(());
        };
        let expected_cas = current.as_ref().and_then(|c| c["ModifyIndex"].as_u64()).unwrap_or(0);
        prop_assert_eq!(cas, expected_cas, "the write's cas is the entry's ModifyIndex");
        let written = sim.put_config(desired.clone(), Some(cas));
        prop_assert_eq!(written, Ok(true), "Consul refused the planned entry {}", desired);

        let stored = sim.config("ingress-gateway", "edge").expect("stored");
        if let Some(before) = &current {
            prop_assert_eq!(foreign_listeners(before), foreign_listeners(&stored), "a foreign listener changed");
            prop_assert_eq!(&before["TLS"], &stored["TLS"], "gateway TLS changed");
            prop_assert_eq!(&before["Meta"]["owner"], &stored["Meta"]["owner"], "foreign Meta lost");
        }
        prop_assert_eq!(&stored["Meta"]["managed-by"], "ingress-service-monitor");

        // From what was written, the plan is a fixed point: no further write.
        let settled = plan_for(&case, stored.as_object(), &config);
        prop_assert!(settled.write.is_none(), "would write again after {}", stored);
    }
}

// ------------------------------------------------------------------------- api mode

fn api_config(fabio: bool, set_service_defaults: bool) -> Config {
    let map: HashMap<&str, String> = [
        ("TAGINGRESSSERVICE", "gw".to_string()),
        ("SERVICENAMEINGRESSGATEWAY", "edge".to_string()),
        ("CONSULGATEWAY", "api".to_string()),
        (
            "TYPEGATEWAY",
            if fabio { "fabio" } else { "traefik" }.to_string(),
        ),
        ("SETSERVICEDEFAULTS", set_service_defaults.to_string()),
    ]
    .into_iter()
    .collect();
    from_env(&|name| map.get(name).cloned()).expect("valid test config")
}

fn pick(values: &[&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(values.to_vec()).prop_map(str::to_owned)
}

/// Hosts as tags write them: valid, upper-case, wildcard, not DNS names, empty.
fn route_host() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => "[a-c]\\.example\\.com",
        1 => Just("A.Example.com".to_owned()),
        1 => Just("*.example.com".to_owned()),
        1 => Just("bad_host.example.com".to_owned()),
        1 => Just(String::new()),
        1 => "[a-z0-9.-]{0,8}",
    ]
}

fn route_path() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => pick(&["/", "/p", "/p/", "/q", "/p/q"]),
        1 => pick(&["x", "", "/a?b", "/%41", "/{id}", "/a b"]),
    ]
}

/// One Traefik matcher, valid or not, expressible by a route or not.
fn matcher() -> impl Strategy<Value = String> {
    let quoted = |args: Vec<String>| {
        args.iter()
            .map(|a| format!("`{a}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    prop_oneof![
        4 => prop::collection::vec(route_host(), 1..3)
            .prop_map(move |hosts| format!("Host({})", quoted(hosts))),
        3 => route_path().prop_map(|p| format!("PathPrefix(`{p}`)")),
        2 => route_path().prop_map(|p| format!("Path(`{p}`)")),
        1 => prop_oneof![4 => pick(&["GET", "post"]), 1 => pick(&["BREW", ""])]
            .prop_map(|m| format!("Method(`{m}`)")),
        1 => (
            prop_oneof![4 => pick(&["X-Env", "x-env"]), 1 => pick(&["", "a b"])],
            prop_oneof![4 => pick(&["blue", ""]), 1 => Just("v\u{1}".to_owned())],
        )
            .prop_map(|(k, v)| format!("Header(`{k}`, `{v}`)")),
        1 => (
            prop_oneof![4 => pick(&["q", "v"]), 1 => Just(String::new())],
            prop::option::of(prop_oneof![4 => pick(&["1", ""]), 1 => Just("a b".to_owned())]),
        )
            .prop_map(
            |(k, v)| match v {
                Some(v) => format!("Query(`{k}`, `{v}`)"),
                None => format!("Query(`{k}`)"),
            }
        ),
        1 => pick(&["HostRegexp(`.+`)", "ClientIP(`10.0.0.1`)", "PathRegexp(`/x.*`)"]),
    ]
}

fn rule_expr() -> impl Strategy<Value = String> {
    matcher().prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            8 => (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} && {b}")),
            6 => (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) || {b}")),
            1 => inner.prop_map(|a| format!("!({a})")),
        ]
    })
}

fn traefik_tag() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => ("[a-h]", rule_expr())
            .prop_map(|(r, e)| format!("traefik.http.routers.{r}.rule={e}")),
        1 => "[a-c]".prop_map(|r| format!("traefik.http.routers.{r}.middlewares=strip")),
        1 => Just("traefik.http.middlewares.strip.stripprefix.prefixes=/p".to_owned()),
        1 => "[a-c]".prop_map(|r| format!("traefik.http.routers.{r}.tls=true")),
        1 => "\\PC{0,20}",
    ]
}

fn fabio_tag() -> impl Strategy<Value = String> {
    let host = prop_oneof![
        8 => pick(&["a.example.com", "b.example.com", "A.example.com:8080"]),
        1 => pick(&["*.example.com", "bad_host", ":80"]),
    ];
    let strip = prop_oneof![
        8 => pick(&["/p", "/p/", "/q", "/pp"]),
        1 => pick(&["p", ""]),
    ];
    let option = prop_oneof![
        4 => pick(&["proto=https", "weight=0.5"]),
        1 => pick(&["proto=tcp", "redirect=301,https://x$path", "host=dst"]),
    ];
    prop_oneof![
        8 => (
            prop::option::of(host),
            route_path(),
            prop::option::of(strip),
            prop::option::of(option),
        )
            .prop_map(|(host, path, strip, option)| {
                let mut tag = format!("urlprefix-{}{path}", host.unwrap_or_default());
                if let Some(strip) = strip {
                    tag.push_str(&format!(" strip={strip}"));
                }
                if let Some(option) = option {
                    tag.push_str(&format!(" {option}"));
                }
                tag
            }),
        1 => "\\PC{0,20}",
    ]
}

/// Names that collide with another's further routes (`a` and `a-2`) now and then.
fn service_name() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-e]", 1 => "[a-c]-[2-3]"]
}

/// Mostly http: released Consul routes only to http services.
fn api_protocol() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        6 => Just(Some("http".to_owned())),
        1 => Just(Some("HTTP".to_owned())),
        2 => Just(None),
        1 => Just(Some("tcp".to_owned())),
        1 => Just(Some("grpc".to_owned())),
        1 => Just(Some(String::new())),
    ]
}

fn api_services(fabio: bool) -> BoxedStrategy<Services> {
    let tag = if fabio {
        fabio_tag().boxed()
    } else {
        traefik_tag().boxed()
    };
    prop::collection::vec(
        (
            service_name(),
            prop::collection::vec(tag, 1..4),
            api_protocol(),
        ),
        1..7,
    )
    .boxed()
}

/// An existing `api-gateway`: other ports' listeners (port, tcp, name) and a listener of
/// ours from an earlier run (name, with TLS).
type ExistingGateway = (Vec<(u16, bool, String)>, Option<(String, bool)>);

fn existing_gateway() -> impl Strategy<Value = Option<ExistingGateway>> {
    prop::option::of((
        prop::collection::vec(
            (
                5000u16..5003,
                prop::bool::ANY,
                pick(&["http", "http-9997", "f", "web", "public"]),
            ),
            0..3,
        ),
        prop::option::of((pick(&["http", "public", "http-9997"]), prop::bool::ANY)),
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RouteOwner {
    Ours,
    NoMeta,
    OtherGateway,
}

/// Existing http-routes: (name, who wrote it).
fn existing_routes() -> impl Strategy<Value = Vec<(String, RouteOwner)>> {
    prop::collection::vec(
        (
            pick(&["edge-a", "edge-b", "edge-a-2", "edge-zz", "edge-b-2"]),
            prop::sample::select(vec![
                RouteOwner::Ours,
                RouteOwner::NoMeta,
                RouteOwner::OtherGateway,
            ]),
        ),
        0..3,
    )
}

struct ApiCase {
    catalog: Catalog,
    protocols: Protocols,
    gateway: Option<Value>,
    routes: Vec<Value>,
}

fn build_api(
    services: &Services,
    gateway: &Option<ExistingGateway>,
    routes: &[(String, RouteOwner)],
    proxy_http: bool,
) -> ApiCase {
    let mut catalog = Catalog::new();
    let mut service_defaults = BTreeMap::new();
    for (name, tags, protocol) in services {
        if !tags.is_empty() {
            catalog
                .entry(name.clone())
                .or_default()
                .extend(tags.iter().cloned());
        }
        if let Some(protocol) = protocol {
            service_defaults.insert(name.clone(), protocol.clone());
        }
    }
    let mut gateway_entry = None;
    if let Some((foreign, ours)) = gateway {
        let mut listeners = Vec::new();
        let mut ports = BTreeSet::new();
        let mut names = BTreeSet::new();
        for (port, tcp, name) in foreign {
            if !ports.insert(*port) || !names.insert(name.clone()) {
                continue;
            }
            let protocol = if *tcp { "tcp" } else { "http" };
            listeners.push(json!({"Name": name, "Port": port, "Protocol": protocol}));
        }
        if let Some((name, tls)) = ours {
            if names.insert(name.clone()) {
                let mut listener = json!({"Name": name, "Port": OUR_PORT, "Protocol": "http",
                    "Hostname": "old.example.com"});
                if *tls {
                    listener["TLS"] = json!({"Certificates": [
                        {"Kind": "inline-certificate", "Name": "edge-cert"}]});
                }
                listeners.push(listener);
            }
        }
        if !listeners.is_empty() {
            gateway_entry = Some(json!({
                "Kind": "api-gateway", "Name": "edge",
                "Meta": {"owner": "platform"},
                "Listeners": listeners,
            }));
        }
    }
    let mut seen = BTreeSet::new();
    let mut route_entries = Vec::new();
    for (name, owner) in routes {
        if !seen.insert(name.clone()) {
            continue;
        }
        let (meta, parent) = match owner {
            RouteOwner::Ours => (
                json!({"managed-by": "ingress-service-monitor",
                    "ingress-service-monitor-gateway": "edge"}),
                "edge",
            ),
            RouteOwner::NoMeta => (json!({}), "edge"),
            RouteOwner::OtherGateway => (
                json!({"managed-by": "ingress-service-monitor",
                    "ingress-service-monitor-gateway": "other"}),
                "other",
            ),
        };
        route_entries.push(json!({
            "Kind": "http-route", "Name": name, "Meta": meta,
            "Parents": [{"Kind": "api-gateway", "Name": parent, "SectionName": "http"}],
            "Hostnames": ["old.example.com"],
            "Rules": [{"Matches": [{"Path": {"Match": "prefix", "Value": "/old"}}],
                "Services": [{"Name": "old"}]}],
        }));
    }
    ApiCase {
        catalog,
        protocols: Protocols {
            service_defaults,
            proxy_default: proxy_http.then(|| "http".to_owned()),
        },
        gateway: gateway_entry,
        routes: route_entries,
    }
}

fn object(value: Value) -> Body {
    match value {
        Value::Object(body) => body,
        other => panic!("not an object: {other}"),
    }
}

/// What the daemon watches in api mode: our api-gateway entry and every http-route.
fn api_entries(sim: &Sim) -> Vec<(EntryKey, Body)> {
    let mut out = Vec::new();
    if let Some(gateway) = sim.config("api-gateway", "edge") {
        out.push((EntryKey::new(Kind::ApiGateway, "edge"), object(gateway)));
    }
    for name in sim.config_names("http-route") {
        if let Some(route) = sim.config("http-route", &name) {
            out.push((EntryKey::new(Kind::HttpRoute, name), object(route)));
        }
    }
    out
}

fn plan_api(case: &ApiCase, held: &[(EntryKey, Body)], config: &Config) -> (Desired, Diff) {
    let settings = PlanSettings::from_config(config);
    let entries: Entries<'_> = held.iter().map(|(k, b)| (k.clone(), b)).collect();
    let snapshot = Snapshot {
        catalog: &case.catalog,
        protocols: &case.protocols,
        entries: &entries,
        intentions: &IntentionsView::default(),
    };
    let desired = plan::plan(&snapshot, &settings);
    let observed = Observed {
        entries: &entries,
        intentions: &IntentionsView::default(),
        registered: None,
        gateway: &settings.gateway_name,
    };
    let stamping = Stamping {
        catalog_index: None,
        defer_to_newer: true,
    };
    let ops = diff(desired.clone(), &observed, stamping);
    (desired, ops)
}

/// `DELETE /v1/config/<kind>/<name>?cas=<cas>` as the daemon sends it: Consul's answer.
fn delete_with_cas(sim: &Sim, key: &EntryKey, cas: u64) -> Result<bool, String> {
    let mut stream = TcpStream::connect(sim.addr()).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "DELETE /v1/config/{}/{}?cas={cas} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n",
        key.kind, key.name
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no response: {response:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(response);
    }
    match body.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("unexpected body {other:?}")),
    }
}

/// Applies the diff's operations in order, as the daemon does (the registration aside).
fn apply(sim: &Sim, diff: &Diff) -> Result<(), TestCaseError> {
    for op in &diff.ops {
        match op {
            Op::Put { key, body, cas } => {
                let written = sim.put_config(Value::Object(body.clone()), Some(*cas));
                prop_assert_eq!(
                    written,
                    Ok(true),
                    "Consul refused the planned {} {}",
                    key,
                    Value::Object(body.clone())
                );
            }
            Op::Delete { key, cas } => {
                let deleted = delete_with_cas(sim, key, *cas);
                prop_assert_eq!(deleted, Ok(true), "delete of {} with cas {}", key, cas);
            }
            Op::Refresh { key } => {
                prop_assert!(false, "refresh of {} with every ModifyIndex known", key);
            }
            Op::Intentions { key, .. } => {
                prop_assert!(false, "{} planned without SETINTENTIONS", key);
            }
            Op::Register(_) => {}
        }
    }
    Ok(())
}

/// The entry without what Consul writes itself.
fn content(body: &Body) -> Body {
    let mut body = body.clone();
    for key in ["CreateIndex", "ModifyIndex", "Hash", "Status"] {
        body.remove(key);
    }
    body
}

fn ours(body: &Body) -> bool {
    body.get("Meta").is_some_and(|m| {
        m["managed-by"] == "ingress-service-monitor"
            && m["ingress-service-monitor-gateway"] == "edge"
    })
}

fn listeners_not_ours(gateway: &Value) -> Vec<Value> {
    gateway["Listeners"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .filter(|l| l["Port"] != OUR_PORT)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// What holds of every api-mode plan: one entry per key, nothing overriding an
/// operator's service-defaults, our listener planned, every route bound to it and
/// targeting an http service, and no (hostname, match) routed by two routes.
fn check_desired(desired: &Desired, case: &ApiCase) -> Result<(), TestCaseError> {
    let keys: BTreeSet<&EntryKey> = desired.entries.iter().map(|e| &e.key).collect();
    prop_assert_eq!(
        keys.len(),
        desired.entries.len(),
        "two entries under one key"
    );
    for name in desired.service_defaults_to_create() {
        prop_assert!(
            !case.protocols.service_defaults.contains_key(name),
            "would override {}",
            name
        );
    }
    let gateway_key = EntryKey::new(Kind::ApiGateway, "edge");
    let listener = desired.entry(&gateway_key).and_then(|g| {
        g.body["Listeners"]
            .as_array()?
            .iter()
            .find(|l| l["Port"] == OUR_PORT)
            .cloned()
    });
    let Some(listener) = listener else {
        prop_assert!(false, "no listener of ours planned");
        return Ok(());
    };
    let mut routed = BTreeSet::new();
    for entry in desired
        .entries
        .iter()
        .filter(|e| e.key.kind == Kind::HttpRoute)
    {
        let route = &entry.body;
        prop_assert_eq!(&route["Parents"][0]["SectionName"], &listener["Name"]);
        let target = route["Rules"][0]["Services"][0]["Name"]
            .as_str()
            .unwrap_or("");
        prop_assert_eq!(
            case.protocols.effective(target),
            "http",
            "route {} to {}",
            entry.key,
            target
        );
        let hosts: Vec<String> = match route.get("Hostnames") {
            Some(Value::Array(hosts)) => hosts.iter().map(|h| h.to_string()).collect(),
            _ => vec!["*".to_owned()],
        };
        for host in &hosts {
            for m in route["Rules"][0]["Matches"]
                .as_array()
                .into_iter()
                .flatten()
            {
                prop_assert!(
                    routed.insert((host.clone(), m.to_string())),
                    "{} {} routed twice (again by {})",
                    host,
                    m,
                    entry.key
                );
            }
        }
    }
    Ok(())
}

proptest! {
    // Each case starts a simulator (a thread and a socket): keep the count moderate.
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn api_mode_writes_pass_consul_validation_and_settle(
        (fabio, services) in prop::bool::ANY.prop_flat_map(|f| (Just(f), api_services(f))),
        gateway in existing_gateway(),
        routes in existing_routes(),
        proxy_http in prop::bool::ANY,
        set_service_defaults in prop::bool::ANY,
    ) {
        let config = api_config(fabio, set_service_defaults);
        let case = build_api(&services, &gateway, &routes, proxy_http);
        let sim = Sim::start(SimOptions::default());
        // Held while the diff is applied: no Status write races our cas.
        sim.pause_gateway_controller(true);
        sim.set_gateway_controller_delay(Duration::from_millis(1));
        for (name, protocol) in &case.protocols.service_defaults {
            sim.put_config(json!({"Kind": "service-defaults", "Name": name, "Protocol": protocol}), None)
                .map_err(|e| TestCaseError::fail(format!("service-defaults {name}: {e:?}")))?;
        }
        if case.protocols.proxy_default.is_some() {
            sim.put_config(json!({"Kind": "proxy-defaults", "Name": "global",
                "Config": {"protocol": "http"}}), None)
                .map_err(|e| TestCaseError::fail(format!("proxy-defaults: {e:?}")))?;
        }
        for entry in case.gateway.iter().chain(&case.routes) {
            sim.put_config(entry.clone(), None)
                .map_err(|e| TestCaseError::fail(format!("existing entry {entry} refused: {e:?}")))?;
        }
        let before = api_entries(&sim);
        // One pass, or two when SETSERVICEDEFAULTS creates service-defaults: the
        // protocol watch sees them and the next pass routes those services.
        let mut case = case;
        let mut held_now = before.clone();
        let mut passes = 0;
        let desired = loop {
            passes += 1;
            let (desired, ops) = plan_api(&case, &held_now, &config);
            if passes == 1 {
                let (again, _) = plan_api(&case, &held_now, &config);
                prop_assert_eq!(&desired, &again, "planning twice differs");
            }
            check_desired(&desired, &case)?;
            apply(&sim, &ops)?;
            held_now = api_entries(&sim);
            let created: Vec<String> =
                desired.service_defaults_to_create().map(String::from).collect();
            if created.is_empty() || passes == 2 {
                break desired;
            }
            for name in created {
                case.protocols.service_defaults.insert(name, "http".into());
            }
        };
        let gateway_key = EntryKey::new(Kind::ApiGateway, "edge");
        let written = api_entries(&sim);
        let held = |entries: &[(EntryKey, Body)], key: &EntryKey| {
            entries.iter().find(|(k, _)| k == key).map(|(_, b)| b.clone())
        };
        // Foreign listeners, TLS of ours and foreign Meta survive.
        let stored = held(&written, &gateway_key).map(Value::Object);
        let Some(stored) = stored else {
            prop_assert!(false, "no api-gateway entry written");
            return Ok(());
        };
        prop_assert_eq!(&stored["Meta"]["managed-by"], "ingress-service-monitor");
        if let Some(old) = held(&before, &gateway_key).map(Value::Object) {
            prop_assert_eq!(listeners_not_ours(&old), listeners_not_ours(&stored), "a foreign listener changed");
            prop_assert_eq!(&old["Meta"]["owner"], &stored["Meta"]["owner"], "foreign Meta lost");
            let tls = |g: &Value| g["Listeners"].as_array().and_then(|ls| {
                ls.iter().find(|l| l["Port"] == OUR_PORT).map(|l| l["TLS"].clone())
            });
            if let Some(old_tls) = tls(&old) {
                prop_assert_eq!(Some(old_tls), tls(&stored), "our listener's TLS lost");
            }
        }
        // Foreign routes untouched; ours are exactly the planned ones not held by others.
        let mut want_ours = BTreeSet::new();
        for entry in desired.entries.iter().filter(|e| e.key.kind == Kind::HttpRoute) {
            match held(&before, &entry.key) {
                Some(old) if !ours(&old) => {}
                _ => {
                    want_ours.insert(entry.key.name.clone());
                }
            }
        }
        let mut have_ours = BTreeSet::new();
        for (key, body) in written.iter().filter(|(k, _)| k.kind == Kind::HttpRoute) {
            if ours(body) {
                have_ours.insert(key.name.clone());
            } else {
                let old = held(&before, key).map(|b| content(&b));
                prop_assert_eq!(old, Some(content(body)), "foreign route {} changed", key);
            }
        }
        prop_assert_eq!(&have_ours, &want_ours, "our routes in Consul");

        // Consul's controller writes Status (and bumps indexes); planning again from
        // what it then holds wants no write.
        sim.pause_gateway_controller(false);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !sim.gateway_controller_idle() {
            prop_assert!(Instant::now() < deadline, "the controller did not settle");
            std::thread::sleep(Duration::from_millis(2));
        }
        let settled = api_entries(&sim);
        let (_, again) = plan_api(&case, &settled, &config);
        let writes: Vec<&Op> = again.ops.iter().filter(|op| !matches!(op, Op::Register(_))).collect();
        prop_assert!(writes.is_empty(), "would write again: {:?}", writes);
    }
}

/// One step of a catalog's history: some services' tags replaced (by index, modulo the
/// number of services), or a new catalog altogether.
#[derive(Debug, Clone)]
enum Step {
    Edit(Vec<(usize, Vec<String>)>),
    Fresh(Services),
}

fn history() -> impl Strategy<Value = (Services, Vec<Step>)> {
    let step = prop_oneof![
        3 => prop::collection::vec((0usize..8, prop::collection::vec(tag(), 0..4)), 1..3)
            .prop_map(Step::Edit),
        1 => services().prop_map(Step::Fresh),
    ];
    (services(), prop::collection::vec(step, 1..6))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The planner's memo (what each service's tags gave in the last plan) changes no
    /// plan: along any history of catalog edits, each plan made with the memo of the
    /// plans before it equals the plan made from nothing, warnings included.
    #[test]
    fn plans_with_the_memo_of_earlier_plans_equal_plans_from_nothing(
        (mut services, steps) in history(),
    ) {
        let settings = PlanSettings::from_config(&config(false));
        let entries = Entries::new();
        let mut memo = plan::Memo::default();
        for step in std::iter::once(None).chain(steps.into_iter().map(Some)) {
            match step {
                None => {}
                Some(Step::Fresh(fresh)) => services = fresh,
                Some(Step::Edit(edits)) if !services.is_empty() => {
                    let count = services.len();
                    for (index, tags) in edits {
                        services[index % count].1 = tags;
                    }
                }
                Some(Step::Edit(_)) => {}
            }
            let case = build(&services, &None);
            let snapshot = Snapshot {
                catalog: &case.catalog,
                protocols: &case.protocols,
                entries: &entries,
                intentions: &IntentionsView::default(),
            };
            let remembered = plan::plan_with(&snapshot, &settings, &mut memo);
            let from_nothing = plan::plan(&snapshot, &settings);
            prop_assert_eq!(remembered, from_nothing);
        }
    }
}
