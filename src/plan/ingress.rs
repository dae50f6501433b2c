//! The `ingress-gateway` backend: services placed on our listeners by protocol, host
//! conflicts resolved, and the entry built around what others wrote into it.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value};

use super::memo::Memo;
use super::registration::Hosts;
use super::{carry_over, mark_managed, DefaultsFix, PlanSettings, Warnings};
use crate::model::{Body, Protocols};

/// Our listeners' services: port -> (service, its hosts), services sorted by name.
pub type Listeners = BTreeMap<u16, Vec<(String, Vec<String>)>>;

/// Where the selected services go.
#[derive(Debug, Default)]
pub struct Placed {
    pub listeners: Listeners,
    /// Services (sorted) for which `service-defaults` with Protocol "http" should be
    /// created (SETSERVICEDEFAULTS): they are left out of the entry until created.
    pub create_service_defaults: Vec<String>,
}

/// Places each selected service on the listener of its protocol, then gives each host
/// to the service whose name sorts first.
pub fn place_services(
    settings: &PlanSettings,
    protocols: &Protocols,
    selected: &BTreeMap<&str, Vec<&str>>,
    memo: &mut Memo,
    warnings: &mut Warnings<'_>,
) -> Placed {
    let (candidates, create_service_defaults) =
        candidates(settings, protocols, selected, memo, warnings);
    Placed {
        listeners: resolve_conflicts(settings, candidates, warnings),
        create_service_defaults,
    }
}

/// Services per listener port, each with its hosts and the tag each host came from.
type Candidates<'s> = BTreeMap<u16, Vec<(&'s str, Hosts<'s>)>>;

fn candidates<'s>(
    settings: &PlanSettings,
    protocols: &Protocols,
    selected: &BTreeMap<&'s str, Vec<&'s str>>,
    memo: &mut Memo,
    warnings: &mut Warnings<'_>,
) -> (Candidates<'s>, Vec<String>) {
    let mut candidates: Candidates<'s> = BTreeMap::new();
    let mut create_service_defaults = Vec::new();
    for (&service, tags) in selected {
        if service == "*" {
            warnings.add(
                service,
                None,
                "a service named \"*\" would be a wildcard in the ingress-gateway entry; not \
                 exposed"
                    .into(),
            );
            continue;
        }
        let hosts = memo.hosts(settings.outer, service, tags, warnings);
        if hosts.is_empty() {
            warnings.add(
                service,
                None,
                "no usable host in its tags; left out of the ingress-gateway entry".into(),
            );
            continue;
        }
        let protocol = protocols.effective(service);
        match listener_port(settings, &protocol) {
            Some(port) => candidates.entry(port).or_default().push((service, hosts)),
            None if DefaultsFix::of(settings, protocols, service, &protocol)
                == DefaultsFix::Create =>
            {
                create_service_defaults.push(service.to_string());
            }
            None => warnings.add(
                service,
                None,
                protocol_fix(service, &protocol, protocols, settings),
            ),
        }
    }
    (candidates, create_service_defaults)
}

/// Each host goes to the first service (by name) on its listener that claims it.
fn resolve_conflicts(
    settings: &PlanSettings,
    candidates: Candidates<'_>,
    warnings: &mut Warnings<'_>,
) -> Listeners {
    let mut listeners = Listeners::new();
    for (port, services) in candidates {
        let protocol = our_listeners(settings)
            .into_iter()
            .find(|&(p, _)| p == port)
            .map_or("http", |(_, protocol)| protocol);
        // Only looked up, never iterated: hashed, since thousands of hosts share long
        // suffixes and a sorted map compares them byte by byte.
        let mut owner: HashMap<String, &str> = HashMap::new();
        for (service, hosts) in services {
            let mut kept = Vec::new();
            for (host, tag) in hosts {
                match owner.entry(host) {
                    Entry::Occupied(first) => {
                        let (host, first) = (first.key(), first.get());
                        warnings.add(
                            service,
                            Some(tag),
                            format!(
                                "host {host:?} is also claimed by service {first:?} on the \
                                 {protocol} listener (port {port}), which keeps it because its \
                                 name sorts first"
                            ),
                        )
                    }
                    Entry::Vacant(vacant) => {
                        kept.push(vacant.key().clone());
                        vacant.insert(service);
                    }
                }
            }
            if kept.is_empty() {
                warnings.add(
                    service,
                    None,
                    "every host it names is claimed by a service whose name sorts first; left \
                     out of the ingress-gateway entry"
                        .into(),
                );
            } else {
                listeners
                    .entry(port)
                    .or_default()
                    .push((service.to_string(), kept));
            }
        }
    }
    listeners
}

/// Our listeners: (port, protocol), the http one first.
fn our_listeners(settings: &PlanSettings) -> Vec<(u16, &'static str)> {
    let mut ours = vec![(settings.ingress_port, "http")];
    ours.extend(settings.ingress_port_http2.map(|p| (p, "http2")));
    ours.extend(settings.ingress_port_grpc.map(|p| (p, "grpc")));
    ours
}

/// Consul requires the listener protocol to equal the service's (consul-api §6.3).
fn listener_port(settings: &PlanSettings, protocol: &str) -> Option<u16> {
    our_listeners(settings)
        .into_iter()
        .find(|&(_, p)| p == protocol)
        .map(|(port, _)| port)
}

fn protocol_fix(
    service: &str,
    protocol: &str,
    protocols: &Protocols,
    settings: &PlanSettings,
) -> String {
    match protocol {
        "http2" | "grpc" => {
            let variable = if protocol == "http2" {
                "INGRESSPORTHTTP2"
            } else {
                "INGRESSPORTGRPC"
            };
            format!(
                "protocol is {protocol:?} and {variable} is not set; set {variable} to expose it \
                 on a {protocol} listener, or set service-defaults Protocol = \"http\" for \
                 {service:?}"
            )
        }
        _ => {
            let hint = DefaultsFix::of(settings, protocols, service, protocol).hint();
            format!(
                "protocol is {protocol:?}; the http listener needs service-defaults Protocol = \
                 \"http\" for {service:?}{hint}"
            )
        }
    }
}

/// The current entry with our listeners replaced; `None` when there is no entry and
/// nothing to expose (an entry is never created just to be empty).
pub fn desired_entry(
    settings: &PlanSettings,
    current: Option<&Body>,
    listeners: &Listeners,
) -> Option<Body> {
    if current.is_none() && listeners.is_empty() {
        return None;
    }
    // Only the parts that are kept are copied: our listeners (thousands of services)
    // are rebuilt, so cloning the whole current entry first would copy them for nothing.
    let (mut entry, existing) = carry_over(current);
    entry
        .entry("Kind")
        .or_insert_with(|| Value::from("ingress-gateway"));
    entry
        .entry("Name")
        .or_insert_with(|| Value::from(settings.gateway_name.as_str()));

    let ours = our_listeners(settings);
    let ours_at = |port: Option<u64>| {
        ours.iter()
            .copied()
            .find(|&(p, _)| Some(u64::from(p)) == port)
    };
    let build = |port: u16, protocol: &str, existing: Option<&Value>| {
        listeners
            .get(&port)
            .map(|services| our_listener(port, protocol, services, existing))
    };
    let mut written = BTreeSet::new();
    let mut result = Vec::new();
    for listener in existing {
        match ours_at(listener.get("Port").and_then(Value::as_u64)) {
            None => result.push(listener.clone()),
            // A second listener on one of our ports cannot be valid; it is dropped.
            Some((port, protocol)) => {
                if written.insert(port) {
                    result.extend(build(port, protocol, Some(listener)));
                }
            }
        }
    }
    let mut missing: Vec<_> = ours.iter().filter(|(p, _)| !written.contains(p)).collect();
    missing.sort_unstable();
    for &(port, protocol) in missing {
        result.extend(build(port, protocol, None));
    }
    entry.insert("Listeners".into(), Value::Array(result));

    mark_managed(&mut entry);
    Some(entry)
}

/// One of our listeners. Keys we do not manage (listener `TLS`, a service's
/// `RequestHeaders`, Enterprise `Namespace`...) are carried over from the current
/// listener, so an operator's additions survive and the comparison stays stable.
fn our_listener(
    port: u16,
    protocol: &str,
    services: &[(String, Vec<String>)],
    existing: Option<&Value>,
) -> Value {
    // Borrowed, not cloned: only the keys we carry over are copied (Services, Name and
    // Hosts are replaced), so the current listener's services are not copied twice.
    let mut listener = Map::new();
    // The current services by name (the first of a name), in a sorted list rather than
    // a map: Consul keeps the order we wrote, so it is nearly always sorted already.
    let mut existing_services: Vec<(&str, &Map<String, Value>)> = Vec::new();
    for (key, value) in existing.and_then(Value::as_object).into_iter().flatten() {
        if key != "Services" {
            listener.insert(key.clone(), value.clone());
            continue;
        }
        if let Value::Array(current) = value {
            existing_services.extend(current.iter().filter_map(Value::as_object).filter_map(
                |service| Some((service.get("Name").and_then(Value::as_str)?, service)),
            ));
        }
    }
    if !existing_services
        .windows(2)
        .all(|pair| pair[0].0 <= pair[1].0)
    {
        existing_services.sort_by(|a, b| a.0.cmp(b.0));
    }
    existing_services.dedup_by(|later, first| later.0 == first.0);
    let existing_service = |name: &str| {
        existing_services
            .binary_search_by(|(other, _)| (*other).cmp(name))
            .ok()
            .map(|at| existing_services[at].1)
    };
    let services: Vec<Value> = services
        .iter()
        .map(|(name, hosts)| {
            // Sized up front: thousands of these are held while a change is written.
            let mut service = vec![
                ("Name".to_owned(), Value::from(name.as_str())),
                ("Hosts".to_owned(), Value::from(hosts.clone())),
            ];
            service.extend(
                existing_service(name)
                    .into_iter()
                    .flat_map(|existing| existing.iter())
                    .filter(|(key, _)| *key != "Name" && *key != "Hosts")
                    .map(|(key, value)| (key.clone(), value.clone())),
            );
            Value::Object(crate::model::exact_map(service))
        })
        .collect();
    listener.insert("Port".into(), Value::from(port));
    listener.insert("Protocol".into(), Value::from(protocol));
    listener.insert("Services".into(), Value::Array(services));
    Value::Object(listener)
}
