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

use std::collections::{BTreeMap, HashMap};

use consul_sim::{Sim, SimOptions};
use ingress_service_monitor::config::{from_env, Config};
use ingress_service_monitor::model::{Catalog, Entries, Protocols};
use ingress_service_monitor::plan::{self, PlanSettings, Snapshot};
use ingress_service_monitor::reconcile::diff::{diff, Observed, Op, Stamping};
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
    };
    let desired = plan::plan(&snapshot, &settings);
    let entry = desired.entry(&key).map(|e| Value::Object(e.body.clone()));
    let create_service_defaults = desired
        .service_defaults_to_create()
        .map(String::from)
        .collect();
    let observed = Observed {
        entries: &entries,
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
