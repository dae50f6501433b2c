//! The planner, pure and synchronous: what Consul should hold, from what it holds now.
//!
//! Inputs: the selected catalog (service -> its selected tags, prefix stripped), the
//! services' protocols, the current `ingress-gateway` entry (if any) and the config.
//! Output: the ingress service registration, the desired config entry, the
//! service-defaults to create, and warnings. The desired entry is valid by construction
//! (consul-api §6.2/§6.3): bad hosts dropped, host conflicts resolved by service name
//! order, protocol mismatches left out, empty listeners not written. Listeners on ports
//! that are not ours, and the gateway's TLS, Defaults and Meta, are carried over as is.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{json, Map, Value};

use crate::config::{host_for_url, Config, GatewayType};
use crate::tags;

/// Service name -> its selected tags, prefix already stripped (see `consul::wire`).
/// Only services with at least one selected tag are present.
pub type Catalog = BTreeMap<String, Vec<String>>;

/// Value of the entry's `Meta.managed-by` and the registration's `Meta.managed-by`.
pub const MANAGED_BY: &str = "ingress-service-monitor";

/// What decides each service's effective protocol (consul-api §7).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protocols {
    /// Every `service-defaults` entry: name -> its `Protocol` (possibly "").
    pub service_defaults: BTreeMap<String, String>,
    /// `proxy-defaults/global` `Config.protocol`, when set.
    pub proxy_default: Option<String>,
}

impl Protocols {
    /// Effective protocol, lower-cased: service-defaults' Protocol (empty means tcp),
    /// else proxy-defaults', else tcp.
    pub fn effective(&self, service: &str) -> String {
        match (self.service_defaults.get(service), &self.proxy_default) {
            (Some(protocol), _) if protocol.is_empty() => "tcp".to_owned(),
            (Some(protocol), _) => protocol.to_lowercase(),
            (None, Some(protocol)) if !protocol.is_empty() => protocol.to_lowercase(),
            (None, _) => "tcp".to_owned(),
        }
    }
}

/// Everything the planner looks at.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub catalog: &'a Catalog,
    pub protocols: &'a Protocols,
    /// The current entry as read from Consul (`None`: it does not exist).
    pub current_entry: Option<&'a Map<String, Value>>,
    pub config: &'a Config,
}

/// The ingress service registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub id: String,
    pub name: String,
    pub port: u16,
    pub address: Option<String>,
    /// Sorted, de-duplicated.
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    /// `http://<INGRESSADDRESS or 127.0.0.1>:<INGRESSHEALTHCHECKPORT>/ready`
    pub check_url: String,
}

impl Registration {
    /// Body of `PUT /v1/agent/service/register?replace-existing-checks`:
    /// ID, Name, Port, Address (when set), Tags, Meta, and a Check with CheckID
    /// `<id>:ready`, Name, HTTP, Interval "10s", Timeout "2s".
    pub fn to_json(&self) -> Value {
        let mut body = json!({
            "ID": self.id,
            "Name": self.name,
            "Port": self.port,
            "Tags": self.tags,
            "Meta": self.meta,
            "Check": {
                "CheckID": format!("{}:ready", self.id),
                "Name": "Ingress gateway ready",
                "HTTP": self.check_url,
                "Interval": "10s",
                "Timeout": "2s",
            },
        });
        if let (Some(address), Some(object)) = (&self.address, body.as_object_mut()) {
            object.insert("Address".into(), Value::from(address.as_str()));
        }
        body
    }

    /// Whether the agent's copy (`GET /v1/agent/service/<id>`) already says the same:
    /// ID, Service, Port, Address, Tags (as sets) and Meta.
    pub fn matches_agent(&self, agent: &Value) -> bool {
        let text = |key: &str| agent.get(key).and_then(Value::as_str);
        let tags: Option<BTreeSet<&str>> = match agent.get("Tags") {
            Some(Value::Array(tags)) => tags.iter().map(Value::as_str).collect(),
            None | Some(Value::Null) => Some(BTreeSet::new()),
            Some(_) => None,
        };
        let meta: Option<BTreeMap<&str, &str>> = match agent.get("Meta") {
            Some(Value::Object(meta)) => meta
                .iter()
                .map(|(k, v)| v.as_str().map(|v| (k.as_str(), v)))
                .collect(),
            None | Some(Value::Null) => Some(BTreeMap::new()),
            Some(_) => None,
        };
        let our_tags: BTreeSet<&str> = self.tags.iter().map(String::as_str).collect();
        let our_meta: BTreeMap<&str, &str> = self
            .meta
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        text("ID") == Some(self.id.as_str())
            && text("Service") == Some(self.name.as_str())
            && agent.get("Port").and_then(Value::as_u64) == Some(u64::from(self.port))
            // The agent reports "" for a service registered without an address.
            && text("Address").unwrap_or("") == self.address.as_deref().unwrap_or("")
            && tags == Some(our_tags)
            && meta == Some(our_meta)
    }
}

/// A warning about one service (and tag, when one tag is the cause).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Warning {
    pub service: String,
    pub tag: Option<String>,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tag {
            Some(tag) => write!(
                f,
                "service {:?}, tag {:?}: {}",
                self.service, tag, self.message
            ),
            None => write!(f, "service {:?}: {}", self.service, self.message),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub registration: Registration,
    /// The entry as it should be (`None`: no entry exists and there is nothing to expose).
    /// Never contains `CreateIndex`, `ModifyIndex` or `Hash`.
    pub desired_entry: Option<Value>,
    /// false when the current entry already equals `desired_entry` ignoring order
    /// (listeners, services, hosts) and Raft indexes: then nothing is written.
    pub entry_needs_write: bool,
    /// Services (sorted) for which `service-defaults` with Protocol "http" should be
    /// created (SETSERVICEDEFAULTS): they are left out of `desired_entry` until created.
    pub create_service_defaults: Vec<String>,
    /// Number of services in our listeners of `desired_entry`.
    pub exposed_services: usize,
    /// Sorted.
    pub warnings: Vec<Warning>,
}

pub fn plan(inputs: Inputs<'_>) -> Plan {
    let config = inputs.config;
    let mut warnings = Warnings::new(&config.tag_prefix);

    let (registration, selected) = registration(config, inputs.catalog, &mut warnings);

    // Services per listener port, each with its hosts and the tag each host came from.
    let mut candidates: BTreeMap<u16, Vec<(&str, Hosts<'_>)>> = BTreeMap::new();
    let mut create_service_defaults = Vec::new();
    for (service, tags) in &selected {
        if *service == "*" {
            warnings.add(
                service,
                None,
                "a service named \"*\" would be a wildcard in the ingress-gateway entry; not \
                 exposed"
                    .into(),
            );
            continue;
        }
        let hosts = service_hosts(config.gateway_type, service, tags, &mut warnings);
        if hosts.is_empty() {
            warnings.add(
                service,
                None,
                "no usable host in its tags; left out of the ingress-gateway entry".into(),
            );
            continue;
        }
        let protocol = inputs.protocols.effective(service);
        match listener_port(config, &protocol) {
            Some(port) => candidates.entry(port).or_default().push((service, hosts)),
            None if config.set_service_defaults
                && protocol == "tcp"
                && !inputs.protocols.service_defaults.contains_key(*service) =>
            {
                create_service_defaults.push(service.to_string());
            }
            None => warnings.add(
                service,
                None,
                protocol_fix(service, &protocol, inputs.protocols, config),
            ),
        }
    }

    let mut listeners: BTreeMap<u16, Vec<(String, Vec<String>)>> = BTreeMap::new();
    for (port, services) in candidates {
        let protocol = our_listeners(config)
            .into_iter()
            .find(|&(p, _)| p == port)
            .map_or("http", |(_, protocol)| protocol);
        let mut owner: BTreeMap<String, &str> = BTreeMap::new();
        for (service, hosts) in services {
            let mut kept = Vec::new();
            for (host, tag) in hosts {
                match owner.get(&host) {
                    Some(first) => warnings.add(
                        service,
                        Some(tag),
                        format!(
                            "host {host:?} is also claimed by service {first:?} on the {protocol} \
                             listener (port {port}), which keeps it because its name sorts first"
                        ),
                    ),
                    None => {
                        owner.insert(host.clone(), service);
                        kept.push(host);
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

    let exposed_services = listeners.values().map(Vec::len).sum();
    let desired_entry = desired_entry(config, inputs.current_entry, &listeners);
    let entry_needs_write = match (&desired_entry, inputs.current_entry) {
        (Some(desired), Some(current)) => !entry_equals_map(desired, current),
        (Some(_), None) => true,
        (None, _) => false,
    };
    Plan {
        registration,
        desired_entry,
        entry_needs_write,
        create_service_defaults,
        exposed_services,
        warnings: warnings.into_sorted(),
    }
}

/// Collects warnings, naming tags as the operator wrote them (prefix included).
struct Warnings<'a> {
    prefix: &'a str,
    set: BTreeSet<Warning>,
}

impl<'a> Warnings<'a> {
    fn new(prefix: &'a str) -> Self {
        Warnings {
            prefix,
            set: BTreeSet::new(),
        }
    }

    fn add(&mut self, service: &str, stripped_tag: Option<&str>, message: String) {
        self.set.insert(Warning {
            service: service.to_owned(),
            tag: stripped_tag.map(|tag| format!("{}{tag}", self.prefix)),
            message,
        });
    }

    fn into_sorted(self) -> Vec<Warning> {
        self.set.into_iter().collect()
    }
}

/// (service, stripped tag) that set a Traefik key first.
type KeyOwner<'c> = (&'c str, &'c str);

/// The ingress service registration, and for each service the selected tags that made
/// it onto the registration (sorted, de-duplicated): only those give hosts, since a tag
/// left off the registration routes nothing to the gateway.
fn registration<'c>(
    config: &Config,
    catalog: &'c Catalog,
    warnings: &mut Warnings<'_>,
) -> (Registration, BTreeMap<&'c str, Vec<&'c str>>) {
    let traefik = config.gateway_type == GatewayType::Traefik;
    let mut tags: BTreeSet<String> = BTreeSet::new();
    // Traefik key (lower-cased) -> its value and who set it first (`None`: this daemon).
    // Traefik picks one value at random when several services set one key, so the
    // service whose name sorts first wins, deterministically.
    let mut keys: BTreeMap<String, (String, Option<KeyOwner<'_>>)> = BTreeMap::new();
    if traefik {
        tags.insert("traefik.enable=true".into());
        keys.insert("traefik.enable".into(), ("true".into(), None));
    }
    let mut selected = BTreeMap::new();
    for (service, service_tags) in catalog {
        if *service == config.ingress_service_name {
            warnings.add(
                service,
                None,
                "this is the ingress service itself; its tags are not selected again".into(),
            );
            continue;
        }
        let sorted: BTreeSet<&str> = service_tags.iter().map(String::as_str).collect();
        let mut kept = Vec::new();
        for tag in sorted {
            let ingress = tags::ingress_tag(config.gateway_type, tag);
            if traefik {
                let (key, value) = ingress.split_once('=').unwrap_or((&ingress, ""));
                let lower = key.to_ascii_lowercase();
                match keys.get(&lower) {
                    Some((first_value, first)) if first_value != value => {
                        let by = match first {
                            Some((other, other_tag)) => format!(
                                "service {other:?} (tag {:?}), whose name sorts first",
                                format!("{}{other_tag}", config.tag_prefix)
                            ),
                            None => "ingress-service-monitor itself".to_owned(),
                        };
                        warnings.add(
                            service,
                            Some(tag),
                            format!(
                                "Traefik key {key:?} is already set to a different value by {by}; \
                                 this tag is left off the ingress service"
                            ),
                        );
                        continue;
                    }
                    Some(_) => {}
                    None => {
                        keys.insert(lower, (value.to_owned(), Some((service.as_str(), tag))));
                    }
                }
            }
            tags.insert(ingress);
            kept.push(tag);
        }
        selected.insert(service.as_str(), kept);
    }
    let address = config.ingress_address.clone();
    let check_host = host_for_url(address.as_deref().unwrap_or("127.0.0.1"));
    let registration = Registration {
        id: config.ingress_service_id.clone(),
        name: config.ingress_service_name.clone(),
        port: config.ingress_port,
        address,
        tags: tags.into_iter().collect(),
        meta: BTreeMap::from([("managed-by".to_owned(), MANAGED_BY.to_owned())]),
        check_url: format!("http://{check_host}:{}/ready", config.health_check_port),
    };
    (registration, selected)
}

/// Valid hosts of one service (lower-cased), each with the first tag that named it.
type Hosts<'t> = BTreeMap<String, &'t str>;

fn service_hosts<'t>(
    gateway: GatewayType,
    service: &str,
    tags: &[&'t str],
    warnings: &mut Warnings<'_>,
) -> Hosts<'t> {
    let mut hosts = BTreeMap::new();
    for &tag in tags {
        match tags::tag_hosts(gateway, tag) {
            Err(err) => warnings.add(service, Some(tag), format!("{err}; no host taken from it")),
            Ok(found) => {
                for host in found {
                    let host = host.to_lowercase();
                    match tags::check_host(&host) {
                        Ok(()) => {
                            hosts.entry(host).or_insert(tag);
                        }
                        Err(problem) => warnings.add(
                            service,
                            Some(tag),
                            format!("host {host:?} dropped: {problem}"),
                        ),
                    }
                }
            }
        }
    }
    hosts
}

/// Our listeners: (port, protocol), the http one first.
fn our_listeners(config: &Config) -> Vec<(u16, &'static str)> {
    let mut ours = vec![(config.ingress_port, "http")];
    ours.extend(config.ingress_port_http2.map(|p| (p, "http2")));
    ours.extend(config.ingress_port_grpc.map(|p| (p, "grpc")));
    ours
}

/// Consul requires the listener protocol to equal the service's (consul-api §6.3).
fn listener_port(config: &Config, protocol: &str) -> Option<u16> {
    our_listeners(config)
        .into_iter()
        .find(|&(_, p)| p == protocol)
        .map(|(port, _)| port)
}

fn protocol_fix(service: &str, protocol: &str, protocols: &Protocols, config: &Config) -> String {
    let has_defaults = protocols.service_defaults.contains_key(service);
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
            let hint = if !has_defaults && protocol == "tcp" && !config.set_service_defaults {
                " (or set SETSERVICEDEFAULTS=true)"
            } else {
                ""
            };
            format!(
                "protocol is {protocol:?}; the http listener needs service-defaults Protocol = \
                 \"http\" for {service:?}{hint}"
            )
        }
    }
}

const RAFT_KEYS: [&str; 3] = ["CreateIndex", "ModifyIndex", "Hash"];
/// Consul's limit on config-entry Meta pairs (consul-api §6.2).
pub const MAX_META: usize = 64;

/// The current entry with our listeners replaced; `None` when there is no entry and
/// nothing to expose (an entry is never created just to be empty).
fn desired_entry(
    config: &Config,
    current: Option<&Map<String, Value>>,
    listeners: &BTreeMap<u16, Vec<(String, Vec<String>)>>,
) -> Option<Value> {
    if current.is_none() && listeners.is_empty() {
        return None;
    }
    // Only the parts that are kept are copied: our listeners (thousands of services)
    // are rebuilt, so cloning the whole current entry first would copy them for nothing.
    let mut entry = Map::new();
    let mut existing: &[Value] = &[];
    for (key, value) in current.into_iter().flatten() {
        if RAFT_KEYS.contains(&key.as_str()) {
            continue;
        }
        if key == "Listeners" {
            // A Listeners value that is not an array is dropped (it cannot be valid).
            if let Value::Array(listeners) = value {
                existing = listeners;
            }
            continue;
        }
        entry.insert(key.clone(), value.clone());
    }
    entry
        .entry("Kind")
        .or_insert_with(|| Value::from("ingress-gateway"));
    entry
        .entry("Name")
        .or_insert_with(|| Value::from(config.gateway_name.as_str()));

    let ours = our_listeners(config);
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

    let meta = entry
        .entry("Meta")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    if let Value::Object(meta) = meta {
        // Adding a 65th pair would make Consul reject the whole entry; the marker is
        // informational, so it gives way.
        if meta.contains_key("managed-by") || meta.len() < MAX_META {
            meta.insert("managed-by".into(), Value::from(MANAGED_BY));
        }
    }
    Some(Value::Object(entry))
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
    let mut existing_services: BTreeMap<&str, &Map<String, Value>> = BTreeMap::new();
    for (key, value) in existing.and_then(Value::as_object).into_iter().flatten() {
        if key != "Services" {
            listener.insert(key.clone(), value.clone());
            continue;
        }
        if let Value::Array(current) = value {
            for service in current.iter().filter_map(Value::as_object) {
                if let Some(name) = service.get("Name").and_then(Value::as_str) {
                    existing_services.entry(name).or_insert(service);
                }
            }
        }
    }
    let services: Vec<Value> = services
        .iter()
        .map(|(name, hosts)| {
            let mut service: Map<String, Value> = existing_services
                .get(name.as_str())
                .into_iter()
                .flat_map(|existing| existing.iter())
                .filter(|(key, _)| *key != "Name" && *key != "Hosts")
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            service.insert("Name".into(), Value::from(name.as_str()));
            service.insert("Hosts".into(), Value::from(hosts.clone()));
            Value::Object(service)
        })
        .collect();
    listener.insert("Port".into(), Value::from(port));
    listener.insert("Protocol".into(), Value::from(protocol));
    listener.insert("Services".into(), Value::Array(services));
    Value::Object(listener)
}

/// Equality of two entries ignoring listener/service/host order, `Hosts` null vs [] vs
/// absent, protocol case, and `CreateIndex`/`ModifyIndex`/`Hash`.
///
/// Compared in place, without building normalised copies: with thousands of services
/// each copy of an entry is megabytes, and this runs on every reconcile. The result is
/// the same as comparing canonical forms (see the `normalized` test oracle).
pub fn entries_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => entry_maps_equal(a, b),
        _ => a == b,
    }
}

/// [`entries_equal`] with the current entry as the watch decoded it.
fn entry_equals_map(desired: &Value, current: &Map<String, Value>) -> bool {
    match desired {
        Value::Object(desired) => entry_maps_equal(desired, current),
        _ => false,
    }
}

fn entry_maps_equal(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    // `Listeners` null, [] and absent are alike, as Consul normalises them on write.
    let skipped = ["CreateIndex", "ModifyIndex", "Hash", "Listeners"];
    other_fields_equal(a, b, &skipped)
        && match (list_field(a, "Listeners"), list_field(b, "Listeners")) {
            (None, None) => true,
            (Some(Value::Array(a)), Some(Value::Array(b))) => same_elements(
                a,
                b,
                |l| l.get("Port").and_then(Value::as_u64),
                listeners_equal,
            ),
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
}

/// A list-valued key, `None` when it is absent, null or empty (all alike to Consul).
fn list_field<'m>(map: &'m Map<String, Value>, key: &str) -> Option<&'m Value> {
    match map.get(key) {
        Some(Value::Array(list)) if list.is_empty() => None,
        Some(Value::Null) | None => None,
        Some(value) => Some(value),
    }
}

/// Whether the keys of `a` and `b` other than `skipped` are the same, with equal values.
fn other_fields_equal(a: &Map<String, Value>, b: &Map<String, Value>, skipped: &[&str]) -> bool {
    let kept = |map: &Map<String, Value>| {
        map.iter()
            .filter(|(key, _)| !skipped.contains(&key.as_str()))
            .count()
    };
    kept(a) == kept(b)
        && a.iter()
            .filter(|(key, _)| !skipped.contains(&key.as_str()))
            .all(|(key, value)| b.get(key) == Some(value))
}

/// Multiset equality under `equal` (an equivalence): elements are grouped by `key`
/// (equal elements must have equal keys), then matched within each group.
fn same_elements<'v, K: Ord>(
    a: &'v [Value],
    b: &'v [Value],
    key: impl Fn(&'v Value) -> K,
    equal: impl Fn(&Value, &Value) -> bool,
) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let sorted = |items: &'v [Value]| {
        let mut keyed: Vec<(K, &'v Value)> = items.iter().map(|v| (key(v), v)).collect();
        keyed.sort_by(|x, y| x.0.cmp(&y.0));
        keyed
    };
    let (a, b) = (sorted(a), sorted(b));
    let mut start = 0;
    while start < a.len() {
        let mut end = start + 1;
        while end < a.len() && a[end].0 == a[start].0 {
            end += 1;
        }
        // Same group boundaries on both sides, or the multisets differ.
        if b[start].0 != a[start].0 || b[end - 1].0 != a[start].0 {
            return false;
        }
        if end < b.len() && b[end].0 == a[start].0 {
            return false;
        }
        let (group_a, group_b) = (&a[start..end], &b[start..end]);
        if let ([(_, x)], [(_, y)]) = (group_a, group_b) {
            // The usual case: one service per name, one listener per port.
            if !equal(x, y) {
                return false;
            }
        } else {
            let mut used = vec![false; group_b.len()];
            for (_, x) in group_a {
                match (0..group_b.len()).find(|&i| !used[i] && equal(x, group_b[i].1)) {
                    Some(i) => used[i] = true,
                    None => return false,
                }
            }
        }
        start = end;
    }
    true
}

/// A listener's protocol as Consul normalises it: lower case, empty means tcp.
fn listener_protocol(listener: &Map<String, Value>) -> std::borrow::Cow<'_, str> {
    match listener.get("Protocol") {
        Some(Value::String(p)) if !p.is_empty() => p.to_lowercase().into(),
        Some(Value::String(_) | Value::Null) | None => "tcp".into(),
        Some(other) => other.to_string().into(),
    }
}

fn listeners_equal(a: &Value, b: &Value) -> bool {
    let (Value::Object(a), Value::Object(b)) = (a, b) else {
        return a == b;
    };
    if listener_protocol(a) != listener_protocol(b) {
        return false;
    }
    if !other_fields_equal(a, b, &["Protocol", "Services"]) {
        return false;
    }
    match (a.get("Services"), b.get("Services")) {
        (Some(Value::Array(a)), Some(Value::Array(b))) => same_elements(
            a,
            b,
            |s| s.get("Name").and_then(Value::as_str),
            services_equal,
        ),
        (a, b) => a == b,
    }
}

fn services_equal(a: &Value, b: &Value) -> bool {
    let (Value::Object(a), Value::Object(b)) = (a, b) else {
        return a == b;
    };
    // `Hosts` null, [] and absent are alike; a non-empty list is compared as a multiset.
    other_fields_equal(a, b, &["Hosts"])
        && match (list_field(a, "Hosts"), list_field(b, "Hosts")) {
            (None, None) => true,
            (Some(Value::Array(a)), Some(Value::Array(b))) => {
                same_elements(a, b, Value::as_str, |x, y| x == y)
            }
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_env;
    use std::collections::HashMap;

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

    fn run(
        catalog: &Catalog,
        protocols: &Protocols,
        current: Option<&Value>,
        config: &Config,
    ) -> Plan {
        plan(Inputs {
            catalog,
            protocols,
            current_entry: current.and_then(Value::as_object),
            config,
        })
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
        let body = reg.to_json();
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
        assert!(no_address.to_json().get("Address").is_none());

        let agent = json!({
            "ID": "edge-ingress-a1", "Service": "edge-ingress", "Port": 9997, "Address": "10.0.0.5",
            "Tags": ["traefik.http.routers.web.rule=Host(`w.example.com`)", "traefik.enable=true"],
            "Meta": {"managed-by": MANAGED_BY}, "Weights": {"Passing": 1, "Warning": 1},
            "TaggedAddresses": {"lan_ipv4": {"Address": "10.0.0.5", "Port": 9997}}, "ContentHash": "x",
        });
        assert!(reg.matches_agent(&agent));
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
            assert!(!reg.matches_agent(&agent), "{agent}");
        }
        let unaddressed = changed("Address", json!(""));
        assert!(no_address.matches_agent(&unaddressed));
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
        for key in RAFT_KEYS {
            object.remove(key);
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
}
