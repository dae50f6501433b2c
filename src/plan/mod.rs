//! The planner, pure and synchronous: what Consul should hold, from what it holds now.
//!
//! Input: a [`Snapshot`] (the selected catalog, the services' protocols, the entries
//! Consul holds) and the [`PlanSettings`]. Output: [`Desired`], the ingress service
//! registration plus a set of desired config entries, each with how much of it the
//! daemon owns ([`Ownership`]). The planner does not decide what to write: the diff
//! (`reconcile::diff`) compares `Desired` with what Consul holds.
//!
//! Every desired entry is valid by construction (consul-api §6.2/§6.3): bad hosts
//! dropped, host conflicts resolved by service name order, protocol mismatches left out,
//! empty listeners not written. Listeners on ports that are not ours, and the gateway's
//! TLS, Defaults and Meta, are carried over as they are.
//!
//! - [`registration`]: the ingress service's tags (Traefik key conflicts) and each
//!   service's hosts;
//! - [`ingress`]: the `ingress-gateway` entry;
//! - [`compare`]: order-insensitive equality of entries, as Consul normalises them;
//! - [`memo`]: what each service's tags gave in the last plan, so a change re-parses
//!   only the services it touched.

pub mod api_gateway;
pub mod compare;
pub mod ingress;
pub mod intentions;
pub mod memo;
pub mod registration;

use std::collections::BTreeSet;

use serde_json::{json, Value};

pub use memo::Memo;

use crate::config::{host_for_url, Config, GatewayKind, GatewayType};
use crate::model::{
    Body, Catalog, Entries, EntryKey, IntentionsView, Kind, Ownership, Protocols, Registration,
    Warning, CONSUL_OWNED_KEYS, MANAGED_BY, MAX_META,
};

/// What the planner needs to know of the configuration, and nothing more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanSettings {
    /// The Consul gateway whose entries are planned.
    pub gateway_kind: GatewayKind,
    /// The outer proxy reading the ingress service's tags.
    pub outer: GatewayType,
    /// Tag prefix including its trailing `-` (`gw-us-east-`).
    pub prefix: String,
    /// The gateway's service name, also its config entry's name.
    pub gateway_name: String,
    pub ingress_service_name: String,
    pub ingress_service_id: String,
    pub ingress_address: Option<String>,
    pub ingress_port: u16,
    pub ingress_port_http2: Option<u16>,
    pub ingress_port_grpc: Option<u16>,
    /// The ingress service's check URL.
    pub check_url: String,
    pub set_service_defaults: bool,
    /// SETINTENTIONS: allow the gateway in each exposed service's intentions.
    pub set_intentions: bool,
}

impl PlanSettings {
    pub fn from_config(config: &Config) -> PlanSettings {
        let check_host = host_for_url(config.ingress_address.as_deref().unwrap_or("127.0.0.1"));
        PlanSettings {
            gateway_kind: config.gateway_kind,
            outer: config.gateway_type,
            prefix: config.tag_prefix.clone(),
            gateway_name: config.gateway_name.clone(),
            ingress_service_name: config.ingress_service_name.clone(),
            ingress_service_id: config.ingress_service_id.clone(),
            ingress_address: config.ingress_address.clone(),
            ingress_port: config.ingress_port,
            ingress_port_http2: config.ingress_port_http2,
            ingress_port_grpc: config.ingress_port_grpc,
            check_url: format!("http://{check_host}:{}/ready", config.health_check_port),
            set_service_defaults: config.set_service_defaults,
            set_intentions: config.set_intentions,
        }
    }

    /// The key of the gateway's own config entry.
    pub fn gateway_key(&self) -> EntryKey {
        let kind = match self.gateway_kind {
            GatewayKind::Ingress => Kind::IngressGateway,
            GatewayKind::Api => Kind::ApiGateway,
        };
        EntryKey::new(kind, self.gateway_name.as_str())
    }
}

/// Everything the planner looks at.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    pub catalog: &'a Catalog,
    pub protocols: &'a Protocols,
    /// The entries Consul holds (absent: it does not exist).
    pub entries: &'a Entries<'a>,
    /// What decides each service's intentions (SETINTENTIONS), by destination service.
    pub intentions: &'a IntentionsView<'a>,
}

/// One entry as it should be. Its body never contains what Consul writes itself
/// (`CreateIndex`, `ModifyIndex`, `Hash`, `Status`).
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredEntry {
    pub key: EntryKey,
    pub body: Body,
    pub ownership: Ownership,
}

impl DesiredEntry {
    /// An entry with its kind's ownership.
    pub fn new(key: EntryKey, body: Body) -> DesiredEntry {
        let ownership = key.kind.ownership();
        DesiredEntry {
            key,
            body,
            ownership,
        }
    }
}

/// What Consul should hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub registration: Registration,
    /// Sorted by key. An entry that exists and is not listed is left alone, unless it is
    /// one we own as a whole (then it is deleted).
    pub entries: Vec<DesiredEntry>,
    /// SETINTENTIONS: what each service's `service-intentions` needs, by service.
    pub intentions: Vec<intentions::IntentionsChange>,
    /// Number of services the gateway's config routes to.
    pub exposed_services: usize,
    /// Sorted.
    pub warnings: Vec<Warning>,
}

impl Desired {
    /// The desired entry under `key`, if any.
    pub fn entry(&self, key: &EntryKey) -> Option<&DesiredEntry> {
        self.entries.iter().find(|entry| entry.key == *key)
    }

    /// Services for which `service-defaults` are to be created (SETSERVICEDEFAULTS).
    pub fn service_defaults_to_create(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter(|entry| entry.key.kind == Kind::ServiceDefaults)
            .map(|entry| entry.key.name.as_str())
    }
}

/// The plan, from nothing but its inputs.
pub fn plan(snapshot: &Snapshot<'_>, settings: &PlanSettings) -> Desired {
    plan_with(snapshot, settings, &mut Memo::default())
}

/// [`plan`], reusing what `memo` kept of earlier plans (the same result, for less work;
/// see [`memo`]). The memo must only ever see plans made with these `settings`.
pub fn plan_with(snapshot: &Snapshot<'_>, settings: &PlanSettings, memo: &mut Memo) -> Desired {
    memo.start();
    let desired = plan_inner(snapshot, settings, memo);
    memo.finish();
    desired
}

fn plan_inner(snapshot: &Snapshot<'_>, settings: &PlanSettings, memo: &mut Memo) -> Desired {
    let mut warnings = Warnings::new(&settings.prefix);
    let (registration, selected) =
        registration::registration(settings, snapshot.catalog, &mut warnings);
    let gateway_key = settings.gateway_key();
    let current = snapshot.entries.get(&gateway_key).copied();
    let (mut entries, exposed, create) = match settings.gateway_kind {
        GatewayKind::Ingress => {
            let placed = ingress::place_services(
                settings,
                snapshot.protocols,
                &selected,
                memo,
                &mut warnings,
            );
            let gateway = ingress::desired_entry(settings, current, &placed.listeners)
                .map(|body| DesiredEntry::new(gateway_key, body));
            let exposed: BTreeSet<String> = placed
                .listeners
                .values()
                .flatten()
                .map(|(service, _)| service.clone())
                .collect();
            (
                gateway.into_iter().collect::<Vec<_>>(),
                exposed,
                placed.create_service_defaults,
            )
        }
        GatewayKind::Api => {
            let api = api_gateway::plan(
                settings,
                snapshot.protocols,
                &selected,
                current,
                &mut warnings,
            );
            (api.entries, api.exposed, api.create_service_defaults)
        }
    };
    entries.extend(create.iter().map(|name| service_defaults(name)));
    let intentions = match settings.set_intentions {
        true => intentions::plan(settings, &exposed, snapshot.intentions, &mut warnings),
        false => Vec::new(),
    };
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    Desired {
        registration,
        entries,
        intentions,
        exposed_services: exposed.len(),
        warnings: warnings.into_sorted(),
    }
}

/// `service-defaults` with Protocol "http", created (only) for a service nothing else
/// gives a protocol (SETSERVICEDEFAULTS).
fn service_defaults(name: &str) -> DesiredEntry {
    let body = json!({
        "Kind": Kind::ServiceDefaults.as_str(),
        "Name": name,
        "Protocol": "http",
        "Meta": { "managed-by": MANAGED_BY },
    });
    DesiredEntry::new(
        EntryKey::new(Kind::ServiceDefaults, name),
        match body {
            Value::Object(body) => body,
            _ => Body::new(),
        },
    )
}

/// A gateway entry as Consul holds it, without its listeners (which the backend
/// rebuilds: thousands of services, so they are borrowed, not copied) and without what
/// Consul writes itself; and its listeners. A `Listeners` value that is not a list is
/// dropped (it cannot be valid).
fn carry_over(current: Option<&Body>) -> (Body, &[Value]) {
    let mut entry = Body::new();
    let mut existing: &[Value] = &[];
    for (key, value) in current.into_iter().flatten() {
        if CONSUL_OWNED_KEYS.contains(&key.as_str()) {
            continue;
        }
        if key == "Listeners" {
            if let Value::Array(listeners) = value {
                existing = listeners;
            }
            continue;
        }
        entry.insert(key.clone(), value.clone());
    }
    (entry, existing)
}

/// `Meta.managed-by` = us. Adding a 65th pair would make Consul reject the whole entry;
/// the marker is informational, so it gives way.
fn mark_managed(entry: &mut Body) {
    let meta = entry
        .entry("Meta")
        .or_insert_with(|| Value::Object(Body::new()));
    if !meta.is_object() {
        *meta = Value::Object(Body::new());
    }
    if let Value::Object(meta) = meta {
        if meta.contains_key("managed-by") || meta.len() < MAX_META {
            meta.insert("managed-by".into(), Value::from(MANAGED_BY));
        }
    }
}

/// What SETSERVICEDEFAULTS does for a service that is not http: `Create` its
/// service-defaults when nothing decides its protocol (no service-defaults entry, tcp by
/// default or by proxy-defaults) and the setting is on; when it is off, the warning gains
/// [`DefaultsFix::Hint`] for such a service; otherwise nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DefaultsFix {
    Create,
    Hint,
    None,
}

impl DefaultsFix {
    fn of(settings: &PlanSettings, protocols: &Protocols, service: &str, protocol: &str) -> Self {
        let undecided = protocol == "tcp" && !protocols.service_defaults.contains_key(service);
        match (undecided, settings.set_service_defaults) {
            (true, true) => DefaultsFix::Create,
            (true, false) => DefaultsFix::Hint,
            (false, _) => DefaultsFix::None,
        }
    }

    /// The end of the protocol warning.
    fn hint(self) -> &'static str {
        match self {
            DefaultsFix::Hint => " (or set SETSERVICEDEFAULTS=true)",
            DefaultsFix::Create | DefaultsFix::None => "",
        }
    }
}

/// Collects warnings, naming tags as the operator wrote them (prefix included).
pub struct Warnings<'a> {
    prefix: &'a str,
    set: BTreeSet<Warning>,
}

impl<'a> Warnings<'a> {
    pub fn new(prefix: &'a str) -> Self {
        Warnings {
            prefix,
            set: BTreeSet::new(),
        }
    }

    pub fn add(&mut self, service: &str, stripped_tag: Option<&str>, message: String) {
        self.set.insert(Warning {
            service: service.to_owned(),
            tag: stripped_tag.map(|tag| format!("{}{tag}", self.prefix)),
            message,
        });
    }

    pub fn into_sorted(self) -> Vec<Warning> {
        self.set.into_iter().collect()
    }
}

#[cfg(test)]
mod tests;
