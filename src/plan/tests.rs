use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

use super::compare::{entries_equal as bodies_equal, values_equal as entries_equal};
use super::*;
use crate::config::{from_env, Config};
use crate::consul::api::{matches_agent, registration_json};
use crate::model::{Entries, IntentionsView};
use crate::tags;

fn config(extra: &[(&str, &str)]) -> Config {
    let map: HashMap<String, String> = [
        ("TAGINGRESSSERVICE", "gw"),
        ("SERVICENAMEINGRESSGATEWAY", "edge"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    from_env(&|name| map.get(name).cloned()).expect("valid test config")
}

/// (service, protocol) pairs.
type Pairs<'a> = &'a [(&'a str, &'a str)];

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

fn rule(router: &str, expr: &str) -> String {
    format!("traefik.http.routers.{router}.rule={expr}")
}

/// Every service of the catalog has service-defaults Protocol = http.
fn all_http(catalog: &Catalog) -> Protocols {
    Protocols {
        service_defaults: catalog.keys().map(|k| (k.clone(), "http".into())).collect(),
        proxy_default: None,
    }
}

/// The planner's output for the gateway's entry, as these tests read it.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    registration: Registration,
    desired_entry: Option<Value>,
    /// Whether the diff would write the gateway's entry.
    entry_needs_write: bool,
    create_service_defaults: Vec<String>,
    exposed_services: usize,
    warnings: Vec<Warning>,
}

fn run(catalog: &Catalog, protocols: &Protocols, current: Option<&Value>, config: &Config) -> Plan {
    let settings = PlanSettings::from_config(config);
    let key = settings.gateway_key();
    let mut entries = Entries::new();
    if let Some(Value::Object(current)) = current {
        entries.insert(key.clone(), current);
    }
    let desired = plan(
        &Snapshot {
            catalog,
            protocols,
            entries: &entries,
            intentions: &IntentionsView::default(),
        },
        &settings,
    );
    let gateway = desired.entry(&key).map(|entry| entry.body.clone());
    let entry_needs_write = match (&gateway, entries.get(&key)) {
        (Some(desired), Some(current)) => !bodies_equal(desired, current),
        (Some(_), None) => true,
        (None, _) => false,
    };
    Plan {
        create_service_defaults: desired
            .service_defaults_to_create()
            .map(String::from)
            .collect(),
        registration: desired.registration,
        desired_entry: gateway.map(Value::Object),
        entry_needs_write,
        exposed_services: desired.exposed_services,
        warnings: desired.warnings,
    }
}

/// Our listener on `port` in the desired entry: service name -> hosts.
fn listener_services(plan: &Plan, port: u16) -> Option<BTreeMap<String, Vec<String>>> {
    let entry = plan.desired_entry.as_ref()?;
    let listener = entry["Listeners"]
        .as_array()?
        .iter()
        .find(|l| l["Port"] == port)?;
    Some(
        listener["Services"]
            .as_array()?
            .iter()
            .map(|s| {
                let hosts = s["Hosts"]
                    .as_array()
                    .map(|h| h.iter().map(|h| h.as_str().unwrap().to_owned()).collect())
                    .unwrap_or_default();
                (s["Name"].as_str().unwrap().to_owned(), hosts)
            })
            .collect(),
    )
}

fn hosts_of(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    pairs
        .iter()
        .map(|(name, hosts)| {
            (
                name.to_string(),
                hosts.iter().map(|h| h.to_string()).collect(),
            )
        })
        .collect()
}

fn warning_about<'p>(plan: &'p Plan, service: &str, text: &str) -> &'p Warning {
    plan.warnings
        .iter()
        .find(|w| w.service == service && w.message.contains(text))
        .unwrap_or_else(|| {
            panic!(
                "no warning about {service} containing {text:?}: {:#?}",
                plan.warnings
            )
        })
}

#[test]
fn effective_protocol() {
    let defaults = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    #[rustfmt::skip]
    let cases: &[(Pairs, Option<&str>, &str)] = &[
        (&[], None, "tcp"),
        (&[], Some("http"), "http"),
        (&[], Some("GRPC"), "grpc"),
        (&[], Some(""), "tcp"),
        (&[("web", "HTTP")], None, "http"),
        (&[("web", "http2")], Some("http"), "http2"),
        // An entry with an empty Protocol means tcp; proxy-defaults is not consulted.
        (&[("web", "")], Some("http"), "tcp"),
        (&[("other", "http")], None, "tcp"),
    ];
    for &(service_defaults, proxy_default, want) in cases {
        let protocols = Protocols {
            service_defaults: defaults(service_defaults),
            proxy_default: proxy_default.map(str::to_owned),
        };
        assert_eq!(protocols.effective("web"), want, "{protocols:?}");
    }
}

#[test]
fn registration_carries_converted_tags_and_traefik_enable() {
    let config = config(&[("INGRESSPORT", "8080"), ("INGRESSHEALTHCHECKPORT", "21000")]);
    let cat = catalog(&[
        (
            "web",
            &[
                &rule("web", "Host('web.example.com')"),
                "traefik.http.routers.web.tls=true",
            ],
        ),
        (
            "api",
            &[
                &rule("api", "Host(`api.example.com`)"),
                "traefik.http.routers.web.tls=true",
            ],
        ),
    ]);
    let plan = run(&cat, &all_http(&cat), None, &config);
    let reg = &plan.registration;
    assert_eq!(
        reg.tags,
        [
            "traefik.enable=true",
            "traefik.http.routers.api.rule=Host(`api.example.com`)",
            "traefik.http.routers.web.rule=Host(`web.example.com`)",
            "traefik.http.routers.web.tls=true",
        ]
    );
    assert_eq!(reg.id, "edge-ingress");
    assert_eq!(reg.name, "edge-ingress");
    assert_eq!(reg.port, 8080);
    assert_eq!(reg.address, None);
    assert_eq!(reg.check_url, "http://127.0.0.1:21000/ready");
    assert_eq!(
        reg.meta,
        BTreeMap::from([("managed-by".into(), MANAGED_BY.into())])
    );
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
}

#[test]
fn fabio_tags_are_unchanged_and_no_traefik_enable() {
    let config = config(&[("TYPEGATEWAY", "fabio")]);
    let cat = catalog(&[(
        "web",
        &["urlprefix-Web.example.com/ opts='x'", "urlprefix-/static"],
    )]);
    let plan = run(&cat, &all_http(&cat), None, &config);
    assert_eq!(
        plan.registration.tags,
        ["urlprefix-/static", "urlprefix-Web.example.com/ opts='x'"]
    );
    assert_eq!(
        listener_services(&plan, 9997),
        Some(hosts_of(&[("web", &["web.example.com"])]))
    );
}

#[test]
fn check_url_uses_ingress_address() {
    let cases = [
        ("10.0.0.5", "http://10.0.0.5:8443/ready"),
        ("fd00::5", "http://[fd00::5]:8443/ready"),
        ("gw.example.com", "http://gw.example.com:8443/ready"),
    ];
    for (address, url) in cases {
        let config = config(&[("INGRESSADDRESS", address)]);
        let plan = run(&Catalog::new(), &Protocols::default(), None, &config);
        assert_eq!(plan.registration.check_url, url);
        assert_eq!(plan.registration.address.as_deref(), Some(address));
    }
}

#[test]
fn registration_json_and_agent_comparison() {
    let config = config(&[("INGRESSADDRESS", "10.0.0.5"), ("NOMAD_ALLOC_ID", "a1")]);
    let cat = catalog(&[("web", &[&rule("web", "Host(`w.example.com`)")])]);
    let reg = run(&cat, &all_http(&cat), None, &config).registration;
    let body = registration_json(&reg);
    assert_eq!(
        body,
        json!({
            "ID": "edge-ingress-a1",
            "Name": "edge-ingress",
            "Port": 9997,
            "Address": "10.0.0.5",
            "Tags": ["traefik.enable=true", "traefik.http.routers.web.rule=Host(`w.example.com`)"],
            "Meta": {"managed-by": MANAGED_BY},
            "Check": {
                "CheckID": "edge-ingress-a1:ready",
                "Name": "Ingress gateway ready",
                "HTTP": "http://10.0.0.5:8443/ready",
                "Interval": "10s",
                "Timeout": "2s",
            },
        })
    );
    let no_address = Registration {
        address: None,
        ..reg.clone()
    };
    assert!(registration_json(&no_address).get("Address").is_none());

    let agent = json!({
        "ID": "edge-ingress-a1", "Service": "edge-ingress", "Port": 9997, "Address": "10.0.0.5",
        "Tags": ["traefik.http.routers.web.rule=Host(`w.example.com`)", "traefik.enable=true"],
        "Meta": {"managed-by": MANAGED_BY}, "Weights": {"Passing": 1, "Warning": 1},
        "TaggedAddresses": {"lan_ipv4": {"Address": "10.0.0.5", "Port": 9997}}, "ContentHash": "x",
    });
    assert!(matches_agent(&reg, &agent));
    let changed = |key: &str, value: Value| {
        let mut agent = agent.clone();
        agent[key] = value;
        agent
    };
    #[rustfmt::skip]
    let differing = [
        changed("ID", json!("edge-ingress")),
        changed("Service", json!("other")),
        changed("Port", json!(9998)),
        changed("Address", json!("")),
        changed("Tags", json!(["traefik.enable=true"])),
        changed("Tags", json!(["traefik.enable=true", "traefik.http.routers.web.rule=Host(`w.example.com`)", "x"])),
        changed("Meta", json!({})),
        changed("Meta", json!({"managed-by": MANAGED_BY, "extra": "1"})),
        json!({}),
    ];
    for agent in differing {
        assert!(!matches_agent(&reg, &agent), "{agent}");
    }
    let unaddressed = changed("Address", json!(""));
    assert!(matches_agent(&no_address, &unaddressed));
}

#[test]
fn multi_host_rules_and_host_normalisation() {
    let cat = catalog(&[(
        "web",
        &[
            &rule("web", "Host(`B.example.com`) || Host(\"a.example.com\")"),
            &rule(
                "web2",
                "(Host('c.example.com') && PathPrefix(`/x`)) || Host(`a.example.com`)",
            ),
            &rule("web3", "Host(`d.example.com`, `e.example.com`)"),
            &rule(
                "web4",
                "HostRegexp(`{x:.+}.example.com`) || !Host(`neg.example.com`)",
            ),
        ],
    )]);
    let plan = run(&cat, &all_http(&cat), None, &config(&[]));
    assert_eq!(
        listener_services(&plan, 9997),
        Some(hosts_of(&[(
            "web",
            &[
                "a.example.com",
                "b.example.com",
                "c.example.com",
                "d.example.com",
                "e.example.com"
            ]
        )]))
    );
    assert_eq!(plan.exposed_services, 1);
    assert!(plan.entry_needs_write);
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
}

#[test]
fn bad_hosts_are_dropped_with_warnings() {
    let bad = rule(
        "bad",
        "Host(`*`) || Host(`bad_host.com`) || Host(`example.*`) || Host(`ok.example.com`)",
    );
    let broken = rule("broken", "Host(`x.example.com`");
    let cat = catalog(&[
        ("web", &[bad.as_str(), broken.as_str()]),
        ("only-bad", &[&rule("ob", "Host(`a b`)")]),
    ]);
    let plan = run(&cat, &all_http(&cat), None, &config(&[]));
    assert_eq!(
        listener_services(&plan, 9997),
        Some(hosts_of(&[("web", &["ok.example.com"])]))
    );
    let full_tag = format!("gw-{bad}");
    #[rustfmt::skip]
    let expected = [
        ("web", "host \"*\" dropped: a bare '*' host would catch every request"),
        ("web", "host \"bad_host.com\" dropped: not a valid DNS hostname"),
        ("web", "host \"example.*\" dropped: a wildcard is only allowed as the leftmost label"),
    ];
    for (service, text) in expected {
        let warning = warning_about(&plan, service, text);
        assert_eq!(warning.tag.as_deref(), Some(full_tag.as_str()));
    }
    let warning = warning_about(&plan, "web", "does not parse");
    assert_eq!(warning.tag, Some(format!("gw-{broken}")));
    warning_about(&plan, "only-bad", "no usable host");
    assert!(
        plan.registration.tags.contains(&rule("ob", "Host(`a b`)")),
        "tags stay on the registration"
    );
    assert_eq!(plan.exposed_services, 1);
}

#[test]
fn host_conflicts_go_to_the_first_name() {
    let cat = catalog(&[
        (
            "b-svc",
            &[&rule(
                "b",
                "Host(`shop.example.com`) || Host(`b.example.com`)",
            )],
        ),
        ("a-svc", &[&rule("a", "Host(`shop.example.com`)")]),
        ("c-svc", &[&rule("c", "Host(`SHOP.example.com`)")]),
    ]);
    let plan = run(&cat, &all_http(&cat), None, &config(&[]));
    assert_eq!(
        listener_services(&plan, 9997),
        Some(hosts_of(&[
            ("a-svc", &["shop.example.com"]),
            ("b-svc", &["b.example.com"])
        ]))
    );
    let warning = warning_about(
        &plan,
        "b-svc",
        "host \"shop.example.com\" is also claimed by service \"a-svc\"",
    );
    assert_eq!(
        warning.tag,
        Some(format!(
            "gw-{}",
            rule("b", "Host(`shop.example.com`) || Host(`b.example.com`)")
        ))
    );
    warning_about(&plan, "c-svc", "also claimed by service \"a-svc\"");
    warning_about(&plan, "c-svc", "left out of the ingress-gateway entry");
    assert!(
        !plan.warnings.iter().any(|w| w.service == "a-svc"),
        "{:?}",
        plan.warnings
    );
    assert_eq!(plan.exposed_services, 2);
}

#[test]
fn same_host_on_different_listeners_is_no_conflict() {
    let config = config(&[("INGRESSPORTGRPC", "9001")]);
    let cat = catalog(&[
        ("a", &[&rule("a", "Host(`x.example.com`)")]),
        ("b", &[&rule("b", "Host(`x.example.com`)")]),
    ]);
    let protocols = Protocols {
        service_defaults: BTreeMap::from([
            ("a".into(), "http".into()),
            ("b".into(), "grpc".into()),
        ]),
        proxy_default: None,
    };
    let plan = run(&cat, &protocols, None, &config);
    assert_eq!(
        listener_services(&plan, 9997),
        Some(hosts_of(&[("a", &["x.example.com"])]))
    );
    assert_eq!(
        listener_services(&plan, 9001),
        Some(hosts_of(&[("b", &["x.example.com"])]))
    );
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
}

#[test]
fn protocol_mismatches_are_left_out_with_the_fix() {
    let cat = catalog(&[
        ("web", &[&rule("web", "Host(`web.example.com`)")]),
        ("db", &[&rule("db", "Host(`db.example.com`)")]),
        ("legacy", &[&rule("legacy", "Host(`legacy.example.com`)")]),
        ("h2", &[&rule("h2", "Host(`h2.example.com`)")]),
        ("rpc", &[&rule("rpc", "Host(`rpc.example.com`)")]),
    ]);
    let protocols = Protocols {
        service_defaults: BTreeMap::from([
            ("web".into(), "http".into()),
            ("legacy".into(), "tcp".into()),
            ("h2".into(), "http2".into()),
            ("rpc".into(), "grpc".into()),
        ]),
        proxy_default: None,
    };
    let plan = run(&cat, &protocols, None, &config(&[]));
    assert_eq!(
        listener_services(&plan, 9997),
        Some(hosts_of(&[("web", &["web.example.com"])]))
    );
    assert_eq!(
        plan.desired_entry.as_ref().unwrap()["Listeners"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    #[rustfmt::skip]
    let expected = [
        ("db", "protocol is \"tcp\"; the http listener needs service-defaults Protocol = \"http\" for \"db\" (or set SETSERVICEDEFAULTS=true)"),
        ("legacy", "protocol is \"tcp\"; the http listener needs service-defaults Protocol = \"http\" for \"legacy\""),
        ("h2", "protocol is \"http2\" and INGRESSPORTHTTP2 is not set; set INGRESSPORTHTTP2"),
        ("rpc", "protocol is \"grpc\" and INGRESSPORTGRPC is not set; set INGRESSPORTGRPC"),
    ];
    for (service, text) in expected {
        warning_about(&plan, service, text);
    }
    let legacy = warning_about(&plan, "legacy", "tcp");
    assert!(
        !legacy.message.contains("SETSERVICEDEFAULTS"),
        "an existing entry is never overridden"
    );
    assert!(plan.create_service_defaults.is_empty());
    assert_eq!(plan.exposed_services, 1);
}

#[test]
fn http2_and_grpc_listeners_when_ports_are_set() {
    let config = config(&[("INGRESSPORTHTTP2", "9998"), ("INGRESSPORTGRPC", "9999")]);
    let cat = catalog(&[
        ("web", &[&rule("web", "Host(`web.example.com`)")]),
        ("h2", &[&rule("h2", "Host(`h2.example.com`)")]),
        ("rpc", &[&rule("rpc", "Host(`rpc.example.com`)")]),
        ("h2-too", &[&rule("h2b", "Host(`h2b.example.com`)")]),
    ]);
    let protocols = Protocols {
        service_defaults: BTreeMap::from([
            ("web".into(), "http".into()),
            ("rpc".into(), "GRPC".into()),
        ]),
        proxy_default: Some("http2".into()),
    };
    let plan = run(&cat, &protocols, None, &config);
    let entry = plan.desired_entry.as_ref().unwrap();
    let protocols: Vec<(u64, &str)> = entry["Listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["Port"].as_u64().unwrap(), l["Protocol"].as_str().unwrap()))
        .collect();
    assert_eq!(protocols, [(9997, "http"), (9998, "http2"), (9999, "grpc")]);
    assert_eq!(
        listener_services(&plan, 9998),
        Some(hosts_of(&[
            ("h2", &["h2.example.com"]),
            ("h2-too", &["h2b.example.com"])
        ]))
    );
    assert_eq!(
        listener_services(&plan, 9999),
        Some(hosts_of(&[("rpc", &["rpc.example.com"])]))
    );
    assert_eq!(plan.exposed_services, 4);
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
}

#[test]
fn set_service_defaults_creates_only_where_nothing_decides() {
    let config = config(&[("SETSERVICEDEFAULTS", "true")]);
    let cat = catalog(&[
        ("web", &[&rule("web", "Host(`web.example.com`)")]),
        ("new", &[&rule("new", "Host(`new.example.com`)")]),
        ("pinned-tcp", &[&rule("p", "Host(`p.example.com`)")]),
        ("pinned-empty", &[&rule("e", "Host(`e.example.com`)")]),
        ("hostless", &["traefik.http.routers.h.tls=true"]),
    ]);
    let protocols = Protocols {
        service_defaults: BTreeMap::from([
            ("web".into(), "http".into()),
            ("pinned-tcp".into(), "tcp".into()),
            ("pinned-empty".into(), "".into()),
        ]),
        proxy_default: Some("tcp".into()),
    };
    let plan = run(&cat, &protocols, None, &config);
    assert_eq!(plan.create_service_defaults, ["new"]);
    assert_eq!(
        listener_services(&plan, 9997),
        Some(hosts_of(&[("web", &["web.example.com"])]))
    );
    assert!(
        !plan.warnings.iter().any(|w| w.service == "new"),
        "{:?}",
        plan.warnings
    );
    let pinned = warning_about(
        &plan,
        "pinned-tcp",
        "needs service-defaults Protocol = \"http\"",
    );
    assert!(!pinned.message.contains("SETSERVICEDEFAULTS"));
    warning_about(&plan, "pinned-empty", "protocol is \"tcp\"");

    // http2 from proxy-defaults is a decision too: no creation, a warning instead.
    let protocols = Protocols {
        service_defaults: BTreeMap::new(),
        proxy_default: Some("http2".into()),
    };
    let plan = run(&cat, &protocols, None, &config);
    assert!(plan.create_service_defaults.is_empty());
    warning_about(&plan, "new", "INGRESSPORTHTTP2 is not set");

    // Once the daemon records the created protocol, the service is exposed.
    let mut protocols = Protocols::default();
    protocols
        .service_defaults
        .insert("new".into(), "http".into());
    let cat = catalog(&[("new", &[&rule("new", "Host(`new.example.com`)")])]);
    let plan = run(&cat, &protocols, None, &config);
    assert!(plan.create_service_defaults.is_empty());
    assert_eq!(
        listener_services(&plan, 9997),
        Some(hosts_of(&[("new", &["new.example.com"])]))
    );
}

#[test]
fn traefik_key_conflicts_keep_the_first_service() {
    let cat = catalog(&[
        (
            "zeta",
            &[
                &rule("shop", "Host(`z.example.com`)"),
                "traefik.http.routers.shop.tls=true",
                "traefik.enable=false",
            ],
        ),
        (
            "alpha",
            &[
                &rule("shop", "Host(`a.example.com`)"),
                "traefik.http.routers.shop.tls=true",
            ],
        ),
    ]);
    let plan = run(&cat, &all_http(&cat), None, &config(&[]));
    assert_eq!(
        plan.registration.tags,
        [
            "traefik.enable=true",
            "traefik.http.routers.shop.rule=Host(`a.example.com`)",
            "traefik.http.routers.shop.tls=true",
        ]
    );
    let warning = warning_about(&plan, "zeta", "Traefik key \"traefik.http.routers.shop.rule\" is already set to a different value by service \"alpha\"");
    assert_eq!(
        warning.tag,
        Some(format!("gw-{}", rule("shop", "Host(`z.example.com`)")))
    );
    warning_about(&plan, "zeta", "Traefik key \"traefik.enable\" is already set to a different value by ingress-service-monitor itself");
    // A tag left off the registration routes nothing to the gateway: no hosts from it.
    assert_eq!(
        listener_services(&plan, 9997),
        Some(hosts_of(&[("alpha", &["a.example.com"])]))
    );
    assert!(
        !plan.warnings.iter().any(|w| w.message.contains("tls")),
        "same value is no conflict"
    );
}

#[test]
fn wildcard_and_own_service_are_skipped() {
    let cat = catalog(&[
        ("*", &[&rule("all", "Host(`all.example.com`)")]),
        ("edge-ingress", &[&rule("loop", "Host(`loop.example.com`)")]),
        ("web", &[&rule("web", "Host(`web.example.com`)")]),
    ]);
    let plan = run(&cat, &all_http(&cat), None, &config(&[]));
    assert_eq!(
        listener_services(&plan, 9997),
        Some(hosts_of(&[("web", &["web.example.com"])]))
    );
    warning_about(&plan, "*", "wildcard");
    warning_about(&plan, "edge-ingress", "ingress service itself");
    assert!(!plan.registration.tags.iter().any(|t| t.contains("loop")));
}

#[test]
fn no_entry_and_nothing_to_expose_is_none() {
    let cases = [
        catalog(&[]),
        catalog(&[("db", &[&rule("db", "Host(`db.example.com`)")])]),
        catalog(&[("web", &["traefik.http.routers.web.tls=true"])]),
    ];
    for cat in cases {
        let plan = run(&cat, &Protocols::default(), None, &config(&[]));
        assert_eq!(plan.desired_entry, None, "{cat:?}");
        assert!(!plan.entry_needs_write);
        assert_eq!(plan.exposed_services, 0);
    }
}

fn foreign_entry() -> Value {
    json!({
        "Kind": "ingress-gateway",
        "Name": "edge",
        "TLS": {"Enabled": true, "TLSMinVersion": "TLSv1_2"},
        "Defaults": {"MaxConnections": 100},
        "Meta": {"owner": "team-a"},
        "Listeners": [
            {"Port": 7000, "Protocol": "tcp", "Services": [{"Name": "db", "Hosts": null}]},
            {"Port": 9997, "Protocol": "http", "TLS": {"Enabled": true},
             "Services": [
                {"Name": "web", "Hosts": ["old.example.com"], "RequestHeaders": {"Add": {"X-A": "1"}}},
                {"Name": "gone", "Hosts": ["gone.example.com"]}
             ]},
            {"Port": 6000, "Protocol": "http", "Services": [{"Name": "other", "Hosts": ["web.example.com"]}]}
        ],
        "CreateIndex": 10,
        "ModifyIndex": 42,
        "Hash": "abc",
    })
}

#[test]
fn foreign_parts_are_preserved_and_ours_replaced() {
    let config = config(&[("INGRESSPORTGRPC", "9100")]);
    let cat = catalog(&[
        (
            "web",
            &[&rule("web", "Host(`web.example.com`) || Host(`*`)")],
        ),
        ("rpc", &[&rule("rpc", "Host(`rpc.example.com`)")]),
    ]);
    let protocols = Protocols {
        service_defaults: BTreeMap::from([
            ("web".into(), "http".into()),
            ("rpc".into(), "grpc".into()),
        ]),
        proxy_default: None,
    };
    let current = foreign_entry();
    let plan = run(&cat, &protocols, Some(&current), &config);
    let expected = json!({
        "Kind": "ingress-gateway",
        "Name": "edge",
        "TLS": {"Enabled": true, "TLSMinVersion": "TLSv1_2"},
        "Defaults": {"MaxConnections": 100},
        "Meta": {"owner": "team-a", "managed-by": MANAGED_BY},
        "Listeners": [
            {"Port": 7000, "Protocol": "tcp", "Services": [{"Name": "db", "Hosts": null}]},
            {"Port": 9997, "Protocol": "http", "TLS": {"Enabled": true},
             "Services": [
                {"Name": "web", "Hosts": ["web.example.com"], "RequestHeaders": {"Add": {"X-A": "1"}}}
             ]},
            {"Port": 6000, "Protocol": "http", "Services": [{"Name": "other", "Hosts": ["web.example.com"]}]},
            {"Port": 9100, "Protocol": "grpc", "Services": [{"Name": "rpc", "Hosts": ["rpc.example.com"]}]}
        ],
    });
    assert_eq!(plan.desired_entry.as_ref(), Some(&expected));
    assert!(plan.entry_needs_write);
    assert_eq!(plan.exposed_services, 2);
    warning_about(&plan, "web", "host \"*\" dropped");
}

#[test]
fn empty_listener_of_ours_is_removed() {
    let current = foreign_entry();
    let plan = run(
        &Catalog::new(),
        &Protocols::default(),
        Some(&current),
        &config(&[]),
    );
    let desired = plan.desired_entry.as_ref().expect("the entry exists");
    let ports: Vec<u64> = desired["Listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["Port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [7000, 6000]);
    assert!(plan.entry_needs_write);
    assert_eq!(plan.exposed_services, 0);

    let ours_only = json!({"Kind": "ingress-gateway", "Name": "edge", "Listeners": [
        {"Port": 9997, "Protocol": "http", "Services": [{"Name": "web", "Hosts": ["w.example.com"]}]}]});
    let plan = run(
        &Catalog::new(),
        &Protocols::default(),
        Some(&ours_only),
        &config(&[]),
    );
    let desired = plan.desired_entry.expect("the entry is kept, emptied");
    assert_eq!(desired["Listeners"], json!([]));
    assert_eq!(desired["Meta"], json!({"managed-by": MANAGED_BY}));
    assert!(plan.entry_needs_write);
}

#[test]
fn no_write_when_equal_ignoring_order() {
    let config = config(&[("INGRESSPORTHTTP2", "9998")]);
    let cat = catalog(&[
        (
            "a",
            &[&rule(
                "a",
                "Host(`a1.example.com`) || Host(`a2.example.com`)",
            )],
        ),
        ("b", &[&rule("b", "Host(`b.example.com`)")]),
        ("c", &[&rule("c", "Host(`c.example.com`)")]),
    ]);
    let protocols = Protocols {
        service_defaults: BTreeMap::from([
            ("a".into(), "http".into()),
            ("b".into(), "http".into()),
            ("c".into(), "http2".into()),
        ]),
        proxy_default: None,
    };
    // What Consul hands back after our write: shuffled, indexed, upper-case protocol.
    let current = json!({
        "Kind": "ingress-gateway", "Name": "edge", "TLS": {"Enabled": false},
        "Meta": {"managed-by": MANAGED_BY},
        "Listeners": [
            {"Port": 9998, "Protocol": "HTTP2", "Services": [{"Name": "c", "Hosts": ["c.example.com"]}]},
            {"Port": 7000, "Protocol": "tcp", "Services": [{"Name": "db", "Hosts": null}]},
            {"Port": 9997, "Protocol": "http", "Services": [
                {"Name": "b", "Hosts": ["b.example.com"]},
                {"Name": "a", "Hosts": ["a2.example.com", "a1.example.com"]}]}
        ],
        "CreateIndex": 5, "ModifyIndex": 9,
    });
    let plan = run(&cat, &protocols, Some(&current), &config);
    assert!(!plan.entry_needs_write, "{:#?}", plan.desired_entry);
    assert_eq!(plan.exposed_services, 3);
}

#[test]
fn write_when_a_foreign_edit_changed_our_listener() {
    let cat = catalog(&[("web", &[&rule("web", "Host(`web.example.com`)")])]);
    let protocols = all_http(&cat);
    let settled = run(&cat, &protocols, None, &config(&[]))
        .desired_entry
        .unwrap();
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut entry = settled.clone();
        f(&mut entry);
        entry
    };
    #[rustfmt::skip]
    let edits = [
        edit(&|e| e["Listeners"][0]["Services"][0]["Hosts"] = json!(["evil.example.com"])),
        edit(&|e| e["Listeners"][0]["Services"][0]["Hosts"] = json!(null)),
        edit(&|e| e["Listeners"][0]["Services"].as_array_mut().unwrap().push(json!({"Name": "x", "Hosts": ["x.example.com"]}))),
        edit(&|e| e["Listeners"][0]["Services"] = json!([])),
        edit(&|e| e["Listeners"][0]["Protocol"] = json!("tcp")),
        edit(&|e| e["Listeners"] = json!([])),
        edit(&|e| e["Meta"] = json!({})),
    ];
    for current in edits {
        let plan = run(&cat, &protocols, Some(&current), &config(&[]));
        assert!(plan.entry_needs_write, "{current}");
        let desired = plan.desired_entry.unwrap();
        assert!(entries_equal(&desired, &settled), "{desired}");
    }
    let plan = run(&cat, &protocols, Some(&settled), &config(&[]));
    assert!(!plan.entry_needs_write);
}

#[test]
fn entries_equal_table() {
    let base = json!({"Kind": "ingress-gateway", "Name": "edge", "Listeners": [
        {"Port": 1, "Protocol": "http", "Services": [{"Name": "a", "Hosts": ["x", "y"]}, {"Name": "b"}]},
        {"Port": 2, "Services": [{"Name": "db", "Hosts": null}]}]});
    #[rustfmt::skip]
    let equal = [
        json!({"Kind": "ingress-gateway", "Name": "edge", "ModifyIndex": 3, "CreateIndex": 1, "Hash": "h", "Listeners": [
            {"Port": 2, "Protocol": "", "Services": [{"Name": "db", "Hosts": []}]},
            {"Port": 1, "Protocol": "HTTP", "Services": [{"Name": "b", "Hosts": null}, {"Name": "a", "Hosts": ["y", "x"]}]}]}),
        json!({"Kind": "ingress-gateway", "Name": "edge", "Listeners": [
            {"Port": 1, "Protocol": "http", "Services": [{"Name": "a", "Hosts": ["x", "y"]}, {"Name": "b", "Hosts": []}]},
            {"Port": 2, "Protocol": "tcp", "Services": [{"Name": "db"}]}]}),
    ];
    for other in &equal {
        assert!(entries_equal(&base, other), "{other}");
        assert!(entries_equal(other, &base), "{other}");
    }
    #[rustfmt::skip]
    let different = [
        json!({"Kind": "ingress-gateway", "Name": "edge"}),
        json!({"Kind": "ingress-gateway", "Name": "other", "Listeners": base["Listeners"].clone()}),
        json!({"Kind": "ingress-gateway", "Name": "edge", "Meta": {"k": "v"}, "Listeners": base["Listeners"].clone()}),
        json!({"Kind": "ingress-gateway", "Name": "edge", "Listeners": [
            {"Port": 1, "Protocol": "http", "Services": [{"Name": "a", "Hosts": ["x"]}, {"Name": "b"}]},
            {"Port": 2, "Services": [{"Name": "db", "Hosts": null}]}]}),
        json!({"Kind": "ingress-gateway", "Name": "edge", "Listeners": [
            {"Port": 1, "Protocol": "http2", "Services": [{"Name": "a", "Hosts": ["x", "y"]}, {"Name": "b"}]},
            {"Port": 2, "Services": [{"Name": "db", "Hosts": null}]}]}),
        json!({"Kind": "ingress-gateway", "Name": "edge", "Listeners": [
            {"Port": 1, "Protocol": "http", "Services": [{"Name": "a", "Hosts": ["x", "y"]}, {"Name": "b"}]},
            {"Port": 3, "Services": [{"Name": "db", "Hosts": null}]}]}),
    ];
    for other in &different {
        assert!(!entries_equal(&base, other), "{other}");
    }
    let empty = json!({"Kind": "ingress-gateway", "Name": "edge"});
    assert!(entries_equal(
        &empty,
        &json!({"Kind": "ingress-gateway", "Name": "edge", "Listeners": []})
    ));
    assert!(entries_equal(
        &empty,
        &json!({"Kind": "ingress-gateway", "Name": "edge", "Listeners": null})
    ));
}

#[test]
fn meta_at_consuls_limit_is_not_overfilled() {
    let meta: Map<String, Value> = (0..64).map(|i| (format!("k{i}"), json!("v"))).collect();
    let current = json!({"Kind": "ingress-gateway", "Name": "edge", "Meta": meta});
    let cat = catalog(&[("web", &[&rule("web", "Host(`web.example.com`)")])]);
    let plan = run(&cat, &all_http(&cat), Some(&current), &config(&[]));
    let desired = plan.desired_entry.unwrap();
    assert_eq!(desired["Meta"].as_object().unwrap().len(), 64);
    assert!(desired["Meta"].get("managed-by").is_none());
}

#[test]
fn planning_is_deterministic() {
    let tags_a = [
        rule("a", "Host(`x.example.com`) || Host(`y.example.com`)"),
        rule("a2", "Host(`bad_host`)"),
    ];
    let tags_b = [
        rule("b", "Host(`x.example.com`)"),
        "traefik.http.routers.b.tls=true".to_owned(),
    ];
    let mut one = Catalog::new();
    one.insert("a".into(), tags_a.to_vec());
    one.insert("b".into(), tags_b.to_vec());
    let mut two = Catalog::new();
    two.insert("b".into(), tags_b.iter().rev().cloned().collect());
    two.insert("a".into(), tags_a.iter().rev().cloned().collect());
    let protocols = all_http(&one);
    let current = foreign_entry();
    let config = config(&[]);
    let first = run(&one, &protocols, Some(&current), &config);
    let again = run(&one, &protocols, Some(&current), &config);
    let permuted = run(&two, &protocols, Some(&current), &config);
    assert_eq!(first, again);
    assert_eq!(first, permuted);
    assert!(!first.warnings.is_empty());
    let mut sorted = first.warnings.clone();
    sorted.sort();
    assert_eq!(first.warnings, sorted);
}

/// The canonical form `entries_equal` used to build and compare (kept as the
/// oracle for the in-place comparison).
/// The entry in a canonical form. Also treats `Listeners` null/[]/absent alike and an
/// empty listener protocol as `tcp`, as Consul normalises them on write.
fn normalized(entry: &Value) -> Value {
    let mut entry = entry.clone();
    let Value::Object(object) = &mut entry else {
        return entry;
    };
    for key in crate::model::CONSUL_OWNED_KEYS {
        object.remove(key);
    }
    // Our stamp is not content; Meta null, {} and absent are alike.
    if let Some(Value::Object(meta)) = object.get_mut("Meta") {
        meta.remove(crate::model::CATALOG_INDEX_META);
    }
    if matches!(object.get("Meta"), Some(Value::Null))
        || matches!(object.get("Meta"), Some(Value::Object(m)) if m.is_empty())
    {
        object.remove("Meta");
    }
    match object.get_mut("Listeners") {
        Some(Value::Array(listeners)) if !listeners.is_empty() => {
            listeners.iter_mut().for_each(normalize_listener);
            listeners
                .sort_by_cached_key(|l| (l.get("Port").and_then(Value::as_u64), l.to_string()));
        }
        Some(Value::Array(_) | Value::Null) => {
            object.remove("Listeners");
        }
        _ => {}
    }
    entry
}

fn normalize_listener(listener: &mut Value) {
    let Value::Object(listener) = listener else {
        return;
    };
    let protocol = match listener.get("Protocol") {
        Some(Value::String(p)) if !p.is_empty() => p.to_lowercase(),
        Some(Value::String(_) | Value::Null) | None => "tcp".to_owned(),
        Some(other) => other.to_string(),
    };
    listener.insert("Protocol".into(), Value::from(protocol));
    if let Some(Value::Array(services)) = listener.get_mut("Services") {
        for service in services.iter_mut() {
            let Value::Object(service) = service else {
                continue;
            };
            match service.get_mut("Hosts") {
                Some(Value::Array(hosts)) if !hosts.is_empty() => {
                    hosts.sort_by_cached_key(Value::to_string);
                }
                Some(Value::Array(_) | Value::Null) => {
                    service.remove("Hosts");
                }
                _ => {}
            }
        }
        services.sort_by_cached_key(|s| {
            (
                s.get("Name").and_then(Value::as_str).map(str::to_owned),
                s.to_string(),
            )
        });
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!("x")),
            Just(json!("y")),
            Just(json!("X")),
            Just(json!(1)),
            Just(json!(null)),
            Just(json!([])),
        ]
    }

    /// An optional key: absent (None) or one of a few values.
    fn field(values: Vec<Value>) -> impl Strategy<Value = Option<Value>> {
        prop::option::of(prop::sample::select(values))
    }

    fn put(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
        if let Some(value) = value {
            map.insert(key.to_owned(), value);
        }
    }

    fn any_service() -> impl Strategy<Value = Value> {
        (
            field(vec![json!("a"), json!("b"), json!(1)]),
            prop_oneof![
                Just(None),
                Just(Some(json!(null))),
                prop::collection::vec(json_value(), 0..3).prop_map(|h| Some(Value::from(h))),
            ],
            field(vec![json!({"k": "v"}), json!(null)]),
            any::<bool>(),
        )
            .prop_map(|(name, hosts, headers, not_object)| {
                if not_object {
                    return json!("svc");
                }
                let mut service = Map::new();
                put(&mut service, "Name", name);
                put(&mut service, "Hosts", hosts);
                put(&mut service, "RequestHeaders", headers);
                Value::Object(service)
            })
    }

    fn any_listener() -> impl Strategy<Value = Value> {
        (
            field(vec![json!(1), json!(2), json!("1")]),
            field(vec![
                json!("http"),
                json!("HTTP"),
                json!(""),
                json!(null),
                json!("tcp"),
                json!(5),
                json!("5"),
            ]),
            prop_oneof![
                Just(None),
                Just(Some(json!(null))),
                prop::collection::vec(any_service(), 0..4).prop_map(|s| Some(Value::from(s))),
            ],
            field(vec![json!({"Enabled": true})]),
        )
            .prop_map(|(port, protocol, services, tls)| {
                let mut listener = Map::new();
                put(&mut listener, "Port", port);
                put(&mut listener, "Protocol", protocol);
                put(&mut listener, "Services", services);
                put(&mut listener, "TLS", tls);
                Value::Object(listener)
            })
    }

    fn any_entry() -> impl Strategy<Value = Value> {
        (
            prop_oneof![
                Just(None),
                Just(Some(json!(null))),
                Just(Some(json!("bad"))),
                prop::collection::vec(any_listener(), 0..4).prop_map(|l| Some(Value::from(l))),
            ],
            field(vec![json!({"managed-by": MANAGED_BY}), json!({})]),
            field(vec![json!(3), json!(4)]),
        )
            .prop_map(|(listeners, meta, index)| {
                let mut entry = Map::new();
                entry.insert("Kind".into(), json!("ingress-gateway"));
                entry.insert("Name".into(), json!("edge"));
                put(&mut entry, "Listeners", listeners);
                put(&mut entry, "Meta", meta);
                put(&mut entry, "ModifyIndex", index);
                Value::Object(entry)
            })
    }

    /// The same entry as Consul might hand it back: every list reversed, empty host
    /// lists as null, protocols in upper case, Raft indexes added.
    fn scrambled(entry: &Value) -> Value {
        let mut entry = entry.clone();
        entry["CreateIndex"] = json!(1);
        if let Some(Value::Array(listeners)) = entry.get_mut("Listeners") {
            listeners.reverse();
            for listener in listeners.iter_mut().filter_map(Value::as_object_mut) {
                if let Some(Value::String(p)) = listener.get_mut("Protocol") {
                    *p = p.to_uppercase();
                }
                if let Some(Value::Array(services)) = listener.get_mut("Services") {
                    services.reverse();
                    for service in services.iter_mut().filter_map(Value::as_object_mut) {
                        match service.get_mut("Hosts") {
                            Some(Value::Array(hosts)) if hosts.is_empty() => {
                                service.insert("Hosts".into(), json!(null));
                            }
                            Some(Value::Array(hosts)) => hosts.reverse(),
                            _ => {}
                        }
                    }
                }
            }
        }
        entry
    }

    fn host() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-c]\\.example\\.com",
            Just("*".to_owned()),
            Just("*.w.example.com".to_owned()),
            Just("bad_host".to_owned()),
            Just("x.*".to_owned()),
        ]
    }

    fn service() -> impl Strategy<Value = (String, Vec<Vec<String>>, String)> {
        (
            "[a-e]",
            prop::collection::vec(prop::collection::vec(host(), 1..3), 0..3),
            prop_oneof![Just("http"), Just("tcp"), Just("grpc"), Just("http2")]
                .prop_map(str::to_owned),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        /// The in-place comparison agrees with comparing canonical forms.
        #[test]
        fn entries_equal_matches_the_canonical_form(a in any_entry(), b in any_entry()) {
            for (x, y) in [(&a, &b), (&a, &scrambled(&a)), (&b, &scrambled(&a))] {
                let want = normalized(x) == normalized(y);
                prop_assert_eq!(entries_equal(x, y), want, "{} vs {}", x, y);
                prop_assert_eq!(entries_equal(y, x), want, "{} vs {}", y, x);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever the catalog, the desired entry passes the host and listener
        /// rules Consul checks (consul-api §6.2) and planning is repeatable.
        #[test]
        fn desired_entry_is_valid(services in prop::collection::vec(service(), 0..6)) {
            let config = config(&[("INGRESSPORTGRPC", "9100"), ("SETSERVICEDEFAULTS", "true")]);
            let mut cat = Catalog::new();
            let mut protocols = Protocols::default();
            for (name, rules, protocol) in &services {
                let tags = rules.iter().enumerate().map(|(i, hosts)| {
                    let expr: Vec<String> = hosts.iter().map(|h| format!("Host(`{h}`)")).collect();
                    rule(&format!("r{i}"), &expr.join(" || "))
                });
                cat.entry(name.clone()).or_default().extend(tags);
                protocols.service_defaults.insert(name.clone(), protocol.clone());
            }
            let first = run(&cat, &protocols, Some(&foreign_entry()), &config);
            let again = run(&cat, &protocols, Some(&foreign_entry()), &config);
            prop_assert_eq!(&first, &again);
            let entry = first.desired_entry.clone().expect("an entry exists");
            let listeners = entry["Listeners"].as_array().unwrap();
            let mut ports = BTreeSet::new();
            let mut ours = 0;
            for listener in listeners {
                prop_assert!(ports.insert(listener["Port"].as_u64().unwrap()), "port declared twice");
                let services = listener["Services"].as_array().unwrap();
                prop_assert!(!services.is_empty(), "empty listener");
                let port = listener["Port"].as_u64().unwrap();
                if port != 9997 && port != 9100 {
                    continue;
                }
                ours += services.len();
                let mut names = BTreeSet::new();
                let mut hosts = BTreeSet::new();
                for service in services {
                    let name = service["Name"].as_str().unwrap();
                    prop_assert!(names.insert(name), "service twice");
                    prop_assert_eq!(protocols.effective(name), listener["Protocol"].as_str().unwrap());
                    let service_hosts = service["Hosts"].as_array().unwrap();
                    prop_assert!(!service_hosts.is_empty());
                    for host in service_hosts {
                        let host = host.as_str().unwrap();
                        prop_assert!(tags::check_host(host).is_ok(), "bad host {}", host);
                        prop_assert!(hosts.insert(host), "host {} twice in a listener", host);
                    }
                }
            }
            prop_assert_eq!(ours, first.exposed_services);
        }
    }
}
