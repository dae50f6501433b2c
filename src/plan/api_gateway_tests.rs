//! The api-gateway backend, table-driven: our listener and its name, what of the entry is
//! kept, route naming and grouping, (hostname, match) conflicts, the catch-all group,
//! protocols, and the Fabio tags of the registration. Each test runs the whole planner
//! (`plan::plan`) in api mode and reads the entries it plans as Consul would store them.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::config::{from_env, Config};
use crate::model::{
    Catalog, Entries, EntryKey, IntentionsView, Kind, Protocols, Warning, GATEWAY_META, MANAGED_BY,
};
use crate::plan::{plan, Desired, PlanSettings, Snapshot};

const PORT: u16 = 9997;

/// api mode, gateway `edge`, prefix `gw-`, our port 9997; `extra` may override.
fn config(extra: &[(&str, &str)]) -> Config {
    let map: HashMap<String, String> = [
        ("TAGINGRESSSERVICE", "gw"),
        ("SERVICENAMEINGRESSGATEWAY", "edge"),
        ("CONSULGATEWAY", "api"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    from_env(&|name| map.get(name).cloned()).expect("valid test config")
}

fn catalog(services: &[(&str, &[&str])]) -> Catalog {
    services
        .iter()
        .map(|(name, tags)| {
            (
                name.to_string(),
                tags.iter().map(|t| t.to_string()).collect(),
            )
        })
        .collect()
}

/// A Traefik router rule tag (prefix stripped, as the catalog holds it).
fn rule(router: &str, expr: &str) -> String {
    format!("traefik.http.routers.{router}.rule={expr}")
}

fn all_http(catalog: &Catalog) -> Protocols {
    Protocols {
        service_defaults: catalog.keys().map(|k| (k.clone(), "http".into())).collect(),
        proxy_default: None,
    }
}

fn run(
    catalog: &Catalog,
    protocols: &Protocols,
    current: Option<&Value>,
    config: &Config,
) -> Desired {
    let settings = PlanSettings::from_config(config);
    let mut entries = Entries::new();
    if let Some(Value::Object(current)) = current {
        entries.insert(settings.gateway_key(), current);
    }
    plan(
        &Snapshot {
            catalog,
            protocols,
            entries: &entries,
            intentions: &IntentionsView::default(),
        },
        &settings,
    )
}

/// Every service http, no existing entry, default config.
fn run_http(services: &[(&str, &[&str])]) -> Desired {
    let cat = catalog(services);
    run(&cat, &all_http(&cat), None, &config(&[]))
}

fn gateway(desired: &Desired) -> Value {
    let key = EntryKey::new(Kind::ApiGateway, "edge");
    let entry = desired
        .entry(&key)
        .expect("the api-gateway entry is always planned");
    Value::Object(entry.body.clone())
}

fn our_listener(desired: &Desired) -> Value {
    let gateway = gateway(desired);
    let ours: Vec<&Value> = gateway["Listeners"]
        .as_array()
        .expect("Listeners")
        .iter()
        .filter(|l| l["Port"] == PORT)
        .collect();
    assert_eq!(ours.len(), 1, "one listener on our port: {gateway:#}");
    ours[0].clone()
}

/// A match as `^/p` (prefix) or `=/p` (exact), then the method, `h:name=value`,
/// `q:name[=value]`, read from the route's JSON.
fn match_words(m: &Value) -> String {
    let kind = match m["Path"]["Match"].as_str() {
        Some("exact") => "=",
        Some("prefix") => "^",
        other => panic!("path match {other:?} in {m}"),
    };
    let mut parts = vec![format!(
        "{kind}{}",
        m["Path"]["Value"].as_str().unwrap_or("?")
    )];
    if let Some(method) = m["Method"].as_str() {
        parts.push(method.to_owned());
    }
    for h in m["Headers"].as_array().into_iter().flatten() {
        assert_eq!(h["Match"], "exact", "{h}");
        parts.push(format!(
            "h:{}={}",
            h["Name"].as_str().unwrap(),
            h["Value"].as_str().unwrap()
        ));
    }
    for q in m["Query"].as_array().into_iter().flatten() {
        match q["Match"].as_str() {
            Some("exact") => parts.push(format!(
                "q:{}={}",
                q["Name"].as_str().unwrap(),
                q["Value"].as_str().unwrap()
            )),
            Some("present") => parts.push(format!("q:{}", q["Name"].as_str().unwrap())),
            other => panic!("query match {other:?} in {q}"),
        }
    }
    parts.join(" ")
}

/// Each planned route as `name: hosts -> match; match [=> rewrite] @service`, `*` for a
/// route without Hostnames.
fn routes(desired: &Desired) -> Vec<String> {
    desired
        .entries
        .iter()
        .filter(|e| e.key.kind == Kind::HttpRoute)
        .map(|e| {
            let body = Value::Object(e.body.clone());
            assert_eq!(body["Name"], e.key.name.as_str());
            let hosts = match body.get("Hostnames") {
                None => "*".to_owned(),
                Some(Value::Array(hosts)) => {
                    assert!(!hosts.is_empty(), "Hostnames written empty: {body}");
                    hosts
                        .iter()
                        .map(|h| h.as_str().unwrap())
                        .collect::<Vec<_>>()
                        .join(",")
                }
                Some(other) => panic!("Hostnames {other}"),
            };
            let rules = body["Rules"].as_array().expect("Rules");
            assert_eq!(rules.len(), 1, "{body}");
            let rule = &rules[0];
            let matches: Vec<String> = rule["Matches"]
                .as_array()
                .expect("Matches")
                .iter()
                .map(match_words)
                .collect();
            let rewrite = rule["Filters"]["URLRewrite"]["Path"]
                .as_str()
                .map(|p| format!(" => {p}"))
                .unwrap_or_default();
            let services = rule["Services"].as_array().expect("Services");
            assert_eq!(services.len(), 1, "{body}");
            format!(
                "{}: {hosts} -> {}{rewrite} @{}",
                e.key.name,
                matches.join("; "),
                services[0]["Name"].as_str().unwrap()
            )
        })
        .collect()
}

fn messages(warnings: &[Warning]) -> Vec<String> {
    warnings.iter().map(ToString::to_string).collect()
}

fn assert_warns(desired: &Desired, service: &str, text: &str) {
    assert!(
        desired
            .warnings
            .iter()
            .any(|w| w.service == service && w.message.contains(text)),
        "no warning about {service} containing {text:?}: {:#?}",
        messages(&desired.warnings)
    );
}

#[test]
fn listener_naming() {
    // (what the current entry holds, the name of our listener)
    let cases: &[(&str, Option<Value>, &str)] = &[
        ("no entry yet", None, "http"),
        (
            "entry without listeners on our port",
            Some(json!([{"Name": "tcp", "Port": 5000, "Protocol": "tcp"}])),
            "http",
        ),
        (
            "the name of the listener on our port is kept",
            Some(json!([{"Name": "public", "Port": PORT, "Protocol": "http"}])),
            "public",
        ),
        (
            "kept even when it is a tcp listener we take over",
            Some(json!([{"Name": "old", "Port": PORT, "Protocol": "tcp"}])),
            "old",
        ),
        (
            "a foreign listener named http: ours is http-<port>",
            Some(json!([{"Name": "http", "Port": 5000, "Protocol": "http"}])),
            "http-9997",
        ),
        (
            "a foreign listener named http, ours named: ours keeps its name",
            Some(json!([
                {"Name": "http", "Port": 5000, "Protocol": "http"},
                {"Name": "web", "Port": PORT, "Protocol": "http"}
            ])),
            "web",
        ),
        (
            "ours already named http next to other foreign names",
            Some(json!([
                {"Name": "http-5000", "Port": 5000, "Protocol": "http"},
                {"Name": "http", "Port": PORT, "Protocol": "http"}
            ])),
            "http",
        ),
        (
            "foreign listeners named http and http-<port>: a name no one has",
            Some(json!([
                {"Name": "http", "Port": 5000, "Protocol": "http"},
                {"Name": "http-9997", "Port": 5001, "Protocol": "http"}
            ])),
            "http-9997-2",
        ),
    ];
    let cat = catalog(&[("web", &[&rule("web", "Host(`a.com`)")])]);
    for (what, listeners, want) in cases {
        let current = listeners
            .as_ref()
            .map(|l| json!({"Kind": "api-gateway", "Name": "edge", "Listeners": l}));
        let desired = run(&cat, &all_http(&cat), current.as_ref(), &config(&[]));
        let ours = our_listener(&desired);
        assert_eq!(ours["Name"], *want, "{what}: {ours}");
        assert_eq!(ours["Protocol"], "http", "{what}");
        assert!(
            ours.get("Hostname").is_none(),
            "{what}: hosts live on the routes"
        );
        // Names stay unique in the entry (Consul: found multiple listeners with the name).
        let gateway = gateway(&desired);
        let names: Vec<&str> = gateway["Listeners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["Name"].as_str().unwrap())
            .collect();
        let unique: std::collections::BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len(), "{what}: {names:?}");
        // Routes bind to it by name.
        let route = desired
            .entries
            .iter()
            .find(|e| e.key.kind == Kind::HttpRoute)
            .expect("a route");
        assert_eq!(
            route.body["Parents"],
            json!([{"Kind": "api-gateway", "Name": "edge", "SectionName": want}]),
            "{what}"
        );
    }
}

#[test]
fn foreign_listeners_meta_tls_and_fields_are_kept() {
    let tls = json!({"Certificates": [{"Kind": "inline-certificate", "Name": "edge-cert"}]});
    let current = json!({
        "Kind": "api-gateway",
        "Name": "edge",
        "Meta": {"owner": "platform"},
        "Listeners": [
            {"Name": "tls", "Port": 8443, "Protocol": "http", "Hostname": "*.example.com", "TLS": tls},
            {"Name": "db", "Port": 5432, "Protocol": "tcp"},
            // Ours: its name and TLS are kept, its Hostname is not (hosts live on routes).
            {"Name": "public", "Port": PORT, "Protocol": "http", "Hostname": "old.example.com", "TLS": tls},
        ],
        "Status": {"Conditions": [{"Type": "Accepted", "Status": "True"}]},
        "CreateIndex": 3,
        "ModifyIndex": 9,
        "Hash": "x",
    });
    let cat = catalog(&[("web", &[&rule("web", "Host(`a.com`)")])]);
    let desired = run(&cat, &all_http(&cat), Some(&current), &config(&[]));
    assert_eq!(
        gateway(&desired),
        json!({
            "Kind": "api-gateway",
            "Name": "edge",
            "Meta": {"owner": "platform", "managed-by": MANAGED_BY},
            "Listeners": [
                {"Name": "tls", "Port": 8443, "Protocol": "http", "Hostname": "*.example.com", "TLS": tls},
                {"Name": "db", "Port": 5432, "Protocol": "tcp"},
                {"Name": "public", "Port": PORT, "Protocol": "http", "TLS": tls},
            ],
        })
    );
}

#[test]
fn meta_full_of_foreign_keys_is_not_overfilled() {
    let meta: serde_json::Map<String, Value> =
        (0..64).map(|i| (format!("k{i}"), json!("v"))).collect();
    let current = json!({"Kind": "api-gateway", "Name": "edge", "Meta": meta,
        "Listeners": [{"Name": "http", "Port": PORT, "Protocol": "http"}]});
    let desired = run(
        &Catalog::new(),
        &Protocols::default(),
        Some(&current),
        &config(&[]),
    );
    assert_eq!(gateway(&desired)["Meta"], Value::Object(meta));
}

#[test]
fn a_second_listener_on_our_port_is_dropped() {
    let current = json!({"Kind": "api-gateway", "Name": "edge", "Listeners": [
        {"Name": "first", "Port": PORT, "Protocol": "http"},
        {"Name": "other", "Port": 5000, "Protocol": "http"},
        {"Name": "second", "Port": PORT, "Protocol": "http"},
    ]});
    let desired = run(
        &Catalog::new(),
        &Protocols::default(),
        Some(&current),
        &config(&[]),
    );
    assert_eq!(
        gateway(&desired)["Listeners"],
        json!([
            {"Name": "first", "Port": PORT, "Protocol": "http"},
            {"Name": "other", "Port": 5000, "Protocol": "http"},
        ])
    );
}

#[test]
fn the_gateway_entry_is_planned_with_nothing_exposed() {
    let desired = run(&Catalog::new(), &Protocols::default(), None, &config(&[]));
    assert_eq!(
        gateway(&desired),
        json!({"Kind": "api-gateway", "Name": "edge", "Meta": {"managed-by": MANAGED_BY},
            "Listeners": [{"Name": "http", "Port": PORT, "Protocol": "http"}]})
    );
    assert!(routes(&desired).is_empty());
    assert_eq!(desired.exposed_services, 0);
}

#[test]
fn a_route_is_what_consul_stores() {
    let desired = run_http(&[(
        "web",
        &[&rule("web", "Host(`b.com`, `A.com`) && PathPrefix(`/x`)")],
    )]);
    let key = EntryKey::new(Kind::HttpRoute, "edge-web");
    let route = desired.entry(&key).expect("route edge-web");
    assert_eq!(route.ownership, crate::model::Ownership::Whole);
    assert_eq!(
        Value::Object(route.body.clone()),
        json!({
            "Kind": "http-route",
            "Name": "edge-web",
            "Meta": {"managed-by": MANAGED_BY, GATEWAY_META: "edge"},
            "Parents": [{"Kind": "api-gateway", "Name": "edge", "SectionName": "http"}],
            "Hostnames": ["a.com", "b.com"],
            "Rules": [{
                "Matches": [{"Path": {"Match": "prefix", "Value": "/x"}}],
                "Services": [{"Name": "web", "Weight": 1}],
            }],
        })
    );
    assert_eq!(desired.exposed_services, 1);
    assert!(desired.warnings.is_empty(), "{:?}", desired.warnings);
}

#[test]
fn route_naming_and_grouping() {
    type Case<'a> = (&'a str, &'a [(&'a str, &'a [&'a str])], &'a [&'a str]);
    let r1 = rule("r1", "Host(`a.com`) && PathPrefix(`/x`)");
    let r2 = rule("r2", "Host(`b.com`) && PathPrefix(`/y`)");
    let r3 = rule("r3", "Host(`c.com`)");
    let both = rule("both", "Host(`a.com`, `b.com`) && Path(`/z`)");
    let or = rule(
        "or",
        "Host(`a.com`) && PathPrefix(`/x`) || Host(`b.com`) && Method(`POST`)",
    );
    let any = rule("any", "PathPrefix(`/health`)");
    let cases: &[Case] = &[
        ("one host set: one route", &[("web", &[&r1])], &["edge-web: a.com -> ^/x @web"]),
        (
            "three host sets: -2, -3 in the order of the host sets",
            &[("web", &[&r3, &r1, &r2])],
            &[
                "edge-web: a.com -> ^/x @web",
                "edge-web-2: b.com -> ^/y @web",
                "edge-web-3: c.com -> ^/ @web",
            ],
        ),
        (
            "hosts with the same matches share a route",
            &[("web", &[&both])],
            &["edge-web: a.com,b.com -> =/z @web"],
        ),
        (
            "|| with different host sets: one route per host set",
            &[("web", &[&or])],
            &["edge-web: a.com -> ^/x @web", "edge-web-2: b.com -> ^/ POST @web"],
        ),
        (
            "a host's matches from several tags are one rule",
            &[("web", &[&r1, &both])],
            &["edge-web: a.com -> =/z; ^/x @web", "edge-web-2: b.com -> =/z @web"],
        ),
        (
            "the catch-all (no Hostnames) is a route of its own, named first",
            &[("web", &[&r1, &any])],
            &["edge-web: * -> ^/health @web", "edge-web-2: a.com -> ^/x @web"],
        ),
        (
            "each service its own routes, by service name",
            &[("web", &[&r1]), ("api", &[&r2])],
            &["edge-api: b.com -> ^/y @api", "edge-web: a.com -> ^/x @web"],
        ),
        (
            "matchers: Method, Header, Query, && in one match",
            &[(
                "web",
                &[&rule(
                    "m",
                    "Host(`a.com`) && Path(`/x`) && Method(`get`) && Header(`X-Env`, `blue`) && Query(`q`) && Query(`v`, `1`)",
                )],
            )],
            &["edge-web: a.com -> =/x GET h:x-env=blue q:q q:v=1 @web"],
        ),
    ];
    for (what, services, want) in cases {
        let desired = run_http(services);
        assert_eq!(routes(&desired), *want, "{what}");
        assert!(
            desired.warnings.is_empty(),
            "{what}: {:?}",
            desired.warnings
        );
        assert_eq!(desired.exposed_services, services.len(), "{what}");
    }
}

#[test]
fn route_names_never_collide_across_services() {
    // Service "web" with two host sets and a service named "web-2": "edge-web-2" can
    // be only one of them. The primary names are kept; "web" skips to the next number.
    let desired = run_http(&[
        (
            "web",
            &[
                &rule("a", "Host(`a.com`)"),
                &rule("b", "Host(`b.com`) && PathPrefix(`/b`)"),
                &rule("c", "Host(`c.com`) && PathPrefix(`/c`)"),
            ],
        ),
        ("web-2", &[&rule("d", "Host(`d.com`)")]),
        ("web-4", &[&rule("e", "Host(`e.com`)")]),
    ]);
    assert_eq!(
        routes(&desired),
        [
            "edge-web: a.com -> ^/ @web",
            "edge-web-2: d.com -> ^/ @web-2",
            "edge-web-3: b.com -> ^/b @web",
            "edge-web-4: e.com -> ^/ @web-4",
            "edge-web-5: c.com -> ^/c @web",
        ]
    );
    let mut keys: Vec<&EntryKey> = desired.entries.iter().map(|e| &e.key).collect();
    keys.dedup();
    assert_eq!(keys.len(), desired.entries.len(), "{keys:?}");
}

#[test]
fn conflicts_go_to_the_service_whose_name_sorts_first() {
    // (what, services, routes, (service, warning) expected)
    type Case<'a> = (
        &'a str,
        Vec<(&'a str, Vec<String>)>,
        &'a [&'a str],
        &'a [(&'a str, &'a str)],
    );
    let cases: Vec<Case> = vec![
        (
            "same host, same path: the first name keeps it, the other has no route",
            vec![
                ("b", vec![rule("b", "Host(`x.com`) && PathPrefix(`/p`)")]),
                ("a", vec![rule("a", "Host(`x.com`) && PathPrefix(`/p`)")]),
            ],
            &["edge-a: x.com -> ^/p @a"],
            &[
                ("b", "prefix /p on host \"x.com\" is also routed by service \"a\", which keeps it because its name sorts first"),
                ("b", "every route it names is claimed by a service whose name sorts first; no http-route for it"),
            ],
        ),
        (
            "same host, different paths: not a conflict",
            vec![
                ("shop", vec![rule("s", "Host(`x.com`) && PathPrefix(`/shop`)")]),
                ("blog", vec![rule("b", "Host(`x.com`) && PathPrefix(`/blog`)")]),
            ],
            &["edge-blog: x.com -> ^/blog @blog", "edge-shop: x.com -> ^/shop @shop"],
            &[],
        ),
        (
            "same host and path, exact vs prefix: not a conflict",
            vec![
                ("a", vec![rule("a", "Host(`x.com`) && Path(`/p`)")]),
                ("b", vec![rule("b", "Host(`x.com`) && PathPrefix(`/p`)")]),
            ],
            &["edge-a: x.com -> =/p @a", "edge-b: x.com -> ^/p @b"],
            &[],
        ),
        (
            "same host and path, different methods: not a conflict",
            vec![
                ("a", vec![rule("a", "Host(`x.com`) && Method(`GET`)")]),
                ("b", vec![rule("b", "Host(`x.com`) && Method(`POST`)")]),
            ],
            &["edge-a: x.com -> ^/ GET @a", "edge-b: x.com -> ^/ POST @b"],
            &[],
        ),
        (
            "a partial conflict: the loser keeps its other hosts",
            vec![
                ("a", vec![rule("a", "Host(`x.com`)")]),
                ("b", vec![rule("b", "Host(`x.com`, `y.com`)")]),
            ],
            &["edge-a: x.com -> ^/ @a", "edge-b: y.com -> ^/ @b"],
            &[("b", "prefix / on host \"x.com\" is also routed by service \"a\"")],
        ),
        (
            "a partial conflict on one path of a host: the loser keeps the other path",
            vec![
                ("a", vec![rule("a", "Host(`x.com`) && PathPrefix(`/p`)")]),
                (
                    "b",
                    vec![rule("b", "Host(`x.com`) && (PathPrefix(`/p`) || PathPrefix(`/q`))")],
                ),
            ],
            &["edge-a: x.com -> ^/p @a", "edge-b: x.com -> ^/q @b"],
            &[("b", "prefix /p on host \"x.com\"")],
        ),
        (
            "two catch-alls on one path: a conflict on every host",
            vec![
                ("a", vec![rule("a", "PathPrefix(`/p`)")]),
                ("b", vec![rule("b", "PathPrefix(`/p`)")]),
            ],
            &["edge-a: * -> ^/p @a"],
            &[
                ("b", "prefix /p on every host is also routed by service \"a\""),
                ("b", "every route it names is claimed"),
            ],
        ),
        (
            "a catch-all and a named host on one path: not a conflict",
            vec![
                ("a", vec![rule("a", "PathPrefix(`/p`)")]),
                ("b", vec![rule("b", "Host(`x.com`) && PathPrefix(`/p`)")]),
            ],
            &["edge-a: * -> ^/p @a", "edge-b: x.com -> ^/p @b"],
            &[],
        ),
    ];
    for (what, services, want_routes, want_warnings) in cases {
        let tags: Vec<(&str, Vec<&str>)> = services
            .iter()
            .map(|(s, t)| (*s, t.iter().map(String::as_str).collect()))
            .collect();
        let services: Vec<(&str, &[&str])> = tags.iter().map(|(s, t)| (*s, t.as_slice())).collect();
        let desired = run_http(&services);
        assert_eq!(routes(&desired), want_routes, "{what}");
        assert_eq!(
            desired.warnings.len(),
            want_warnings.len(),
            "{what}: {:#?}",
            messages(&desired.warnings)
        );
        for (service, text) in want_warnings {
            assert_warns(&desired, service, text);
        }
        let exposed = want_routes
            .iter()
            .filter_map(|r| r.rsplit_once('@'))
            .map(|(_, s)| s)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        assert_eq!(desired.exposed_services, exposed, "{what}");
    }
}

#[test]
fn fabio_conflicts_ignore_the_rewrite() {
    let cat = catalog(&[
        ("a", &["urlprefix-x.com/p/"]),
        ("b", &["urlprefix-x.com/p/ strip=/p/", "urlprefix-x.com/q"]),
    ]);
    let desired = run(
        &cat,
        &all_http(&cat),
        None,
        &config(&[("TYPEGATEWAY", "fabio")]),
    );
    assert_eq!(
        routes(&desired),
        ["edge-a: x.com -> ^/p/ @a", "edge-b: x.com -> ^/q @b"]
    );
    assert_warns(
        &desired,
        "b",
        "prefix /p/ on host \"x.com\" is also routed by service \"a\"",
    );
}

#[test]
fn catch_all_routes_have_no_hostnames() {
    let cat = catalog(&[("web", &["urlprefix-/api strip=/api", "urlprefix-/static"])]);
    let desired = run(
        &cat,
        &all_http(&cat),
        None,
        &config(&[("TYPEGATEWAY", "fabio")]),
    );
    assert_eq!(
        routes(&desired),
        [
            // /static has no rewrite, so it is a route of its own (groups without a
            // rewrite sort first). Fabio's strip=/api on /api: /api/ and exact /api
            // both become / (the trailing-slash caveat).
            "edge-web: * -> ^/static @web",
            "edge-web-2: * -> =/api; ^/api/ => / @web",
        ]
    );
    for entry in desired
        .entries
        .iter()
        .filter(|e| e.key.kind == Kind::HttpRoute)
    {
        assert!(!entry.body.contains_key("Hostnames"), "{:?}", entry.body);
    }
    let desired = run_http(&[("web", &[&rule("web", "PathPrefix(`/x`) || Path(`/y`)")])]);
    assert_eq!(routes(&desired), ["edge-web: * -> =/y; ^/x @web"]);
}

#[test]
fn refused_rules_are_warnings_naming_service_tag_and_matcher() {
    let cases: &[(&str, &str)] = &[
        ("HostRegexp(`{sub:[a-z]+}.a.com`)", "HostRegexp"),
        (
            "Host(`a.com`) && ClientIP(`10.0.0.1`)",
            "ClientIP(`10.0.0.1`) cannot be expressed by an http-route",
        ),
        ("Host(`a.com`) && !Path(`/x`)", "cannot be expressed"),
        (
            "Host(`a.com`) && PathPrefix(`/x`) && PathPrefix(`/y`)",
            "cannot be expressed",
        ),
        ("Host(`*.a.com`)", "host \"*.a.com\" dropped"),
        ("Host(`a_b.com`)", "host \"a_b.com\" dropped"),
    ];
    for (expr, text) in cases {
        let tag = rule("web", expr);
        let desired = run_http(&[("web", &[&tag])]);
        assert!(
            routes(&desired).is_empty(),
            "{expr}: {:?}",
            routes(&desired)
        );
        let warning = desired
            .warnings
            .iter()
            .find(|w| w.message.contains(text))
            .unwrap_or_else(|| panic!("{expr}: {:#?}", messages(&desired.warnings)));
        assert_eq!(warning.service, "web", "{expr}");
        assert_eq!(
            warning.tag.as_deref(),
            Some(format!("gw-{tag}").as_str()),
            "{expr}"
        );
        assert_warns(
            &desired,
            "web",
            "no usable route in its tags; no http-route for it",
        );
        assert_eq!(desired.exposed_services, 0, "{expr}");
    }
    // One bad tag never takes the others down.
    let desired = run_http(&[(
        "web",
        &[
            &rule("bad", "HostRegexp(`.+`)"),
            &rule("good", "Host(`a.com`)"),
        ],
    )]);
    assert_eq!(routes(&desired), ["edge-web: a.com -> ^/ @web"]);
}

#[test]
fn only_tags_on_the_registration_give_routes() {
    // Both set router "web"'s rule: Traefik picks one at random, so the daemon keeps the
    // first service's and leaves the other's off the registration; it routes nothing.
    let desired = run_http(&[
        ("a", &[&rule("web", "Host(`a.com`)")]),
        ("b", &[&rule("web", "Host(`b.com`)")]),
    ]);
    assert_eq!(routes(&desired), ["edge-a: a.com -> ^/ @a"]);
    assert_warns(&desired, "b", "this tag is left off the ingress service");
}

#[test]
fn a_service_named_star_is_not_a_route_target() {
    let desired = run_http(&[("*", &[&rule("web", "Host(`a.com`)")])]);
    assert!(routes(&desired).is_empty());
    assert_warns(&desired, "*", "cannot be a route's target");
}

#[test]
fn protocols_decide_who_gets_routes() {
    const HINT: &str = " (or set SETSERVICEDEFAULTS=true)";
    // (service-defaults Protocol, proxy-defaults protocol, SETSERVICEDEFAULTS,
    //  routed, service-defaults created, warning: protocol and whether it has the hint)
    type Case<'a> = (
        Option<&'a str>,
        Option<&'a str>,
        bool,
        bool,
        bool,
        Option<(&'a str, bool)>,
    );
    let cases: &[Case] = &[
        (Some("http"), None, false, true, false, None),
        (Some("HTTP"), None, false, true, false, None),
        (None, Some("http"), false, true, false, None),
        (Some("http"), Some("grpc"), false, true, false, None),
        (None, None, false, false, false, Some(("tcp", true))),
        // SETSERVICEDEFAULTS: created (create-only), routed once it exists.
        (None, None, true, false, true, None),
        // An operator's tcp is theirs: never overwritten, no hint.
        (Some("tcp"), None, true, false, false, Some(("tcp", false))),
        (Some("tcp"), None, false, false, false, Some(("tcp", false))),
        (Some(""), None, false, false, false, Some(("tcp", false))),
        // Released Consul binds http-routes only to http services.
        (
            Some("http2"),
            None,
            true,
            false,
            false,
            Some(("http2", false)),
        ),
        (
            Some("grpc"),
            None,
            false,
            false,
            false,
            Some(("grpc", false)),
        ),
        (
            None,
            Some("grpc"),
            true,
            false,
            false,
            Some(("grpc", false)),
        ),
    ];
    let cat = catalog(&[("web", &[&rule("web", "Host(`a.com`)")])]);
    for &(service_default, proxy_default, set, routed, created, warning) in cases {
        let what = format!("{service_default:?} {proxy_default:?} SETSERVICEDEFAULTS={set}");
        let protocols = Protocols {
            service_defaults: service_default
                .map(|p| [("web".to_owned(), p.to_owned())].into())
                .unwrap_or_default(),
            proxy_default: proxy_default.map(str::to_owned),
        };
        let desired = run(
            &cat,
            &protocols,
            None,
            &config(&[("SETSERVICEDEFAULTS", &set.to_string())]),
        );
        let want_routes: &[&str] = if routed {
            &["edge-web: a.com -> ^/ @web"]
        } else {
            &[]
        };
        assert_eq!(routes(&desired), want_routes, "{what}");
        assert_eq!(desired.exposed_services, usize::from(routed), "{what}");
        let create: Vec<&str> = desired.service_defaults_to_create().collect();
        assert_eq!(create, if created { vec!["web"] } else { vec![] }, "{what}");
        if created {
            let entry = desired
                .entry(&EntryKey::new(Kind::ServiceDefaults, "web"))
                .expect("service-defaults");
            assert_eq!(entry.body["Protocol"], "http", "{what}");
            assert_eq!(
                entry.ownership,
                crate::model::Ownership::CreateOnly,
                "{what}"
            );
        }
        match warning {
            None => assert!(
                desired.warnings.is_empty(),
                "{what}: {:?}",
                desired.warnings
            ),
            Some((protocol, hint)) => {
                assert_eq!(desired.warnings.len(), 1, "{what}: {:?}", desired.warnings);
                let message = &desired.warnings[0].message;
                let want = format!(
                    "protocol is {protocol:?}; Consul binds http-routes only to services whose \
                     protocol is \"http\": set service-defaults Protocol = \"http\" for \"web\""
                );
                assert!(message.starts_with(&want), "{what}: {message}");
                assert_eq!(message.ends_with(HINT), hint, "{what}: {message}");
            }
        }
    }
}

#[test]
fn fabio_strip_is_done_by_the_route_in_api_mode() {
    // (tag, on the registration in api mode, the route)
    let cases: &[(&str, &str, &str)] = &[
        (
            "urlprefix-a.com/api strip=/api",
            "urlprefix-a.com/api",
            "edge-web: a.com -> =/api; ^/api/ => / @web",
        ),
        (
            "urlprefix-a.com/api/ strip=/api/",
            "urlprefix-a.com/api/",
            "edge-web: a.com -> ^/api/ => / @web",
        ),
        (
            "urlprefix-a.com/api/v1 strip=/api",
            "urlprefix-a.com/api/v1",
            "edge-web: a.com -> ^/api/v1 => /v1 @web",
        ),
        (
            "urlprefix-a.com/api strip=/api proto=https",
            "urlprefix-a.com/api proto=https",
            "edge-web: a.com -> =/api; ^/api/ => / @web",
        ),
        (
            "urlprefix-a.com/x",
            "urlprefix-a.com/x",
            "edge-web: a.com -> ^/x @web",
        ),
        (
            "urlprefix-a.com:8080/x",
            "urlprefix-a.com:8080/x",
            "edge-web: a.com -> ^/x @web",
        ),
    ];
    for (tag, registered, route) in cases {
        let cat = catalog(&[("web", &[tag])]);
        let api = run(
            &cat,
            &all_http(&cat),
            None,
            &config(&[("TYPEGATEWAY", "fabio")]),
        );
        assert_eq!(api.registration.tags, [*registered], "{tag}");
        assert_eq!(routes(&api), [*route], "{tag}");
        assert!(api.warnings.is_empty(), "{tag}: {:?}", api.warnings);
        // Ingress mode: the outer Fabio still strips (the ingress gateway cannot).
        let ingress = run(
            &cat,
            &all_http(&cat),
            None,
            &config(&[("TYPEGATEWAY", "fabio"), ("CONSULGATEWAY", "ingress")]),
        );
        assert_eq!(ingress.registration.tags, [*tag], "{tag}");
    }
}
