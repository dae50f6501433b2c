//! The `api-gateway` backend: our `http` listener in the `api-gateway` entry, and one
//! `http-route` per exposed service and host set.
//!
//! - The entry keeps every listener that is not on our port, the gateway's other fields
//!   and Meta; our listener has an empty Hostname (hosts live on the routes) and keeps the
//!   name and extra keys (an operator's `TLS`) of the listener it replaces.
//! - Each service's tags become route groups (`routes::service_routes`): a set of
//!   hostnames (none: every host) with its matches. A (hostname, match) claimed by two
//!   services goes to the one whose name sorts first; the same hostname on different
//!   paths is the point of path routing, not a conflict.
//! - Routes are named `<gateway>-<service>`, then `-2`, `-3`... for further host sets
//!   (skipping a number that is another service's first name),
//!   carry our Meta (`managed-by`, `ingress-service-monitor-gateway`), and bind to our
//!   listener by `SectionName`. Routes of ours no longer planned are deleted by the diff.
//! - Released Consul binds http-routes only to services whose protocol is `http`: any
//!   other service is left out with the fix.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use super::{carry_over, mark_managed, DefaultsFix, DesiredEntry, PlanSettings, Warnings};
use crate::model::{Body, EntryKey, Kind, Protocols, GATEWAY_META, MANAGED_BY};
use crate::routes::{self, Match, RouteGroup, ANY_HOST};

/// Name of our listener when none on our port has one yet.
pub const LISTENER_NAME: &str = "http";

/// What the api backend plans.
#[derive(Debug, Default)]
pub struct ApiPlan {
    pub entries: Vec<DesiredEntry>,
    /// Services with at least one route.
    pub exposed: BTreeSet<String>,
    pub create_service_defaults: Vec<String>,
}

pub fn plan(
    settings: &PlanSettings,
    protocols: &Protocols,
    selected: &BTreeMap<&str, Vec<&str>>,
    current: Option<&Body>,
    warnings: &mut Warnings<'_>,
) -> ApiPlan {
    let listener = listener_name(settings, current);
    let (candidates, create_service_defaults) = candidates(settings, protocols, selected, warnings);
    let kept = resolve_conflicts(candidates, warnings);
    let mut entries = vec![DesiredEntry::new(
        settings.gateway_key(),
        gateway_entry(settings, current, &listener),
    )];
    let names = route_names(&settings.gateway_name, &kept);
    for ((service, groups), names) in kept.iter().zip(names) {
        for (group, name) in groups.iter().zip(names) {
            let body = route(settings, &listener, &name, service, group);
            entries.push(DesiredEntry::new(
                EntryKey::new(Kind::HttpRoute, name),
                body,
            ));
        }
    }
    ApiPlan {
        entries,
        exposed: kept.keys().map(|s| s.to_string()).collect(),
        create_service_defaults,
    }
}

/// For each service (in `kept`'s order), the names of its routes: `<gateway>-<service>`
/// for the first group, then `-2`, `-3`... skipping any number that would give another
/// service's first name (service `web`'s second route and service `web-2`'s first would
/// both be `edge-web-2`). Further names cannot collide with each other: their last
/// `-<number>` is the same only when the service is.
fn route_names(gateway: &str, kept: &BTreeMap<&str, Vec<RouteGroup>>) -> Vec<Vec<String>> {
    let first = |service: &str| format!("{gateway}-{service}");
    let firsts: BTreeSet<String> = kept.keys().map(|service| first(service)).collect();
    kept.iter()
        .map(|(service, groups)| {
            let further = (2..)
                .map(|n| format!("{gateway}-{service}-{n}"))
                .filter(|name| !firsts.contains(name));
            std::iter::once(first(service))
                .chain(further)
                .take(groups.len())
                .collect()
        })
        .collect()
}

/// The name of the listener on our port if it has a usable one, else [`LISTENER_NAME`]
/// (or `http-<port>`, then `http-<port>-2`..., when another port's listener already has
/// that name).
fn listener_name(settings: &PlanSettings, current: Option<&Body>) -> String {
    let listeners = listeners(current);
    let on_our_port = listeners
        .iter()
        .find(|l| port_of(l) == Some(settings.ingress_port))
        .and_then(|l| l.get("Name"))
        .and_then(Value::as_str)
        .filter(|name| !name.is_empty());
    if let Some(name) = on_our_port {
        return name.to_owned();
    }
    // Listener names are unique in the entry: none of another port's may be reused.
    let port = settings.ingress_port;
    let taken: BTreeSet<&str> = listeners
        .iter()
        .filter(|l| port_of(l) != Some(port))
        .filter_map(|l| l.get("Name").and_then(Value::as_str))
        .collect();
    std::iter::once(LISTENER_NAME.to_owned())
        .chain((1..).map(|n| match n {
            1 => format!("{LISTENER_NAME}-{port}"),
            n => format!("{LISTENER_NAME}-{port}-{n}"),
        }))
        .find(|name| !taken.contains(name.as_str()))
        .unwrap_or_else(|| LISTENER_NAME.to_owned())
}

fn listeners(current: Option<&Body>) -> Vec<&Map<String, Value>> {
    match current.and_then(|c| c.get("Listeners")) {
        Some(Value::Array(listeners)) => listeners.iter().filter_map(Value::as_object).collect(),
        _ => Vec::new(),
    }
}

fn port_of(listener: &Map<String, Value>) -> Option<u16> {
    listener
        .get("Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
}

/// Services whose protocol lets them have routes, with their route groups.
type Candidates<'s> = Vec<(&'s str, Vec<RouteGroup>)>;

fn candidates<'s>(
    settings: &PlanSettings,
    protocols: &Protocols,
    selected: &BTreeMap<&'s str, Vec<&'s str>>,
    warnings: &mut Warnings<'_>,
) -> (Candidates<'s>, Vec<String>) {
    let mut candidates = Vec::new();
    let mut create_service_defaults = Vec::new();
    for (&service, tags) in selected {
        if service == "*" {
            warnings.add(
                service,
                None,
                "a service named \"*\" cannot be a route's target; not exposed".into(),
            );
            continue;
        }
        let found = routes::service_routes(settings.outer, service, tags);
        for warning in found.warnings {
            warnings.add(service, Some(&warning.tag), warning.message);
        }
        if found.groups.is_empty() {
            warnings.add(
                service,
                None,
                "no usable route in its tags; no http-route for it".into(),
            );
            continue;
        }
        let protocol = protocols.effective(service);
        let fix = DefaultsFix::of(settings, protocols, service, &protocol);
        if protocol == "http" {
            candidates.push((service, found.groups));
        } else if fix == DefaultsFix::Create {
            create_service_defaults.push(service.to_owned());
        } else {
            let hint = fix.hint();
            warnings.add(
                service,
                None,
                format!(
                    "protocol is {protocol:?}; Consul binds http-routes only to services whose \
                     protocol is \"http\": set service-defaults Protocol = \"http\" for \
                     {service:?}{hint}"
                ),
            );
        }
    }
    (candidates, create_service_defaults)
}

/// Gives each (hostname, match) to the first service by name that routes it; what is left
/// of each service is regrouped: hostnames with the same rewrite and matches share a route.
fn resolve_conflicts<'s>(
    candidates: Candidates<'s>,
    warnings: &mut Warnings<'_>,
) -> BTreeMap<&'s str, Vec<RouteGroup>> {
    let mut owner: BTreeMap<(String, Match), &str> = BTreeMap::new();
    let mut kept = BTreeMap::new();
    for (service, groups) in candidates {
        // (host key, rewrite) -> matches kept.
        let mut per_host: BTreeMap<(String, Option<String>), BTreeSet<Match>> = BTreeMap::new();
        for group in &groups {
            for (host, m) in group.conflict_keys() {
                let key = (host.to_owned(), m.clone());
                match owner.get(&key) {
                    Some(first) => warnings.add(
                        service,
                        None,
                        format!(
                            "{} on {} is also routed by service {first:?}, which keeps it \
                             because its name sorts first",
                            routes::describe_match(m),
                            host_words(host)
                        ),
                    ),
                    None => {
                        owner.insert(key, service);
                        per_host
                            .entry((host.to_owned(), group.rewrite.clone()))
                            .or_default()
                            .insert(m.clone());
                    }
                }
            }
        }
        let regrouped = regroup(per_host);
        if regrouped.is_empty() {
            warnings.add(
                service,
                None,
                "every route it names is claimed by a service whose name sorts first; no \
                 http-route for it"
                    .into(),
            );
        } else {
            kept.insert(service, regrouped);
        }
    }
    kept
}

/// Hosts with the same rewrite and the same matches become one group (one route); the
/// catch-all (no hostnames) never shares a route with named hosts.
fn regroup(per_host: BTreeMap<(String, Option<String>), BTreeSet<Match>>) -> Vec<RouteGroup> {
    type Shape = (bool, Option<String>, Vec<Match>);
    let mut groups: BTreeMap<Shape, BTreeSet<String>> = BTreeMap::new();
    for ((host, rewrite), matches) in per_host {
        let any = host == ANY_HOST;
        let hosts = groups
            .entry((any, rewrite, matches.into_iter().collect()))
            .or_default();
        if !any {
            hosts.insert(host);
        }
    }
    let mut out: Vec<RouteGroup> = groups
        .into_iter()
        .map(|((_, rewrite, matches), hostnames)| RouteGroup {
            hostnames,
            rewrite,
            matches,
        })
        .collect();
    out.sort();
    out
}

fn host_words(host: &str) -> String {
    match host {
        ANY_HOST => "every host".to_owned(),
        host => format!("host {host:?}"),
    }
}

/// The current entry with our listener replaced (created when absent: the gateway needs
/// its listener whether or not anything is exposed yet).
fn gateway_entry(settings: &PlanSettings, current: Option<&Body>, listener: &str) -> Body {
    let (mut entry, existing) = carry_over(current);
    entry.insert("Kind".into(), Value::from(Kind::ApiGateway.as_str()));
    entry.insert("Name".into(), Value::from(settings.gateway_name.as_str()));
    let mut result = Vec::new();
    let mut ours_written = false;
    for current in existing {
        let port = current.as_object().and_then(port_of);
        if port != Some(settings.ingress_port) {
            result.push(current.clone());
        } else if !ours_written {
            // A second listener on our port could not be valid; it is dropped.
            result.push(our_listener(settings, listener, current.as_object()));
            ours_written = true;
        }
    }
    if !ours_written {
        result.push(our_listener(settings, listener, None));
    }
    entry.insert("Listeners".into(), Value::Array(result));
    mark_managed(&mut entry);
    entry
}

/// Our listener: `http` on our port, every host; an operator's extra keys (`TLS`) kept.
fn our_listener(
    settings: &PlanSettings,
    name: &str,
    existing: Option<&Map<String, Value>>,
) -> Value {
    let mut listener: Map<String, Value> = existing
        .into_iter()
        .flatten()
        .filter(|(key, _)| !matches!(key.as_str(), "Name" | "Port" | "Protocol" | "Hostname"))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    listener.insert("Name".into(), Value::from(name));
    listener.insert("Port".into(), Value::from(settings.ingress_port));
    listener.insert("Protocol".into(), Value::from("http"));
    Value::Object(listener)
}

fn route(
    settings: &PlanSettings,
    listener: &str,
    name: &str,
    service: &str,
    group: &RouteGroup,
) -> Body {
    let mut body = Map::new();
    body.insert("Kind".into(), Value::from(Kind::HttpRoute.as_str()));
    body.insert("Name".into(), Value::from(name));
    body.insert(
        "Meta".into(),
        json!({"managed-by": MANAGED_BY, GATEWAY_META: settings.gateway_name}),
    );
    body.insert(
        "Parents".into(),
        json!([{"Kind": Kind::ApiGateway.as_str(), "Name": settings.gateway_name, "SectionName": listener}]),
    );
    if !group.hostnames.is_empty() {
        body.insert("Hostnames".into(), json!(group.hostnames));
    }
    let mut rule = group.rule_json(service);
    // Consul stores a missing or zero weight as 1: written as it will read back.
    if let Some(Value::Array(services)) = rule.get_mut("Services") {
        for target in services.iter_mut().filter_map(Value::as_object_mut) {
            target.insert("Weight".into(), Value::from(1));
        }
    }
    body.insert("Rules".into(), Value::Array(vec![rule]));
    body
}

#[cfg(test)]
#[path = "api_gateway_tests.rs"]
mod tests;
