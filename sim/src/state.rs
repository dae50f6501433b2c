//! The simulator's data: a Raft-like global index, the catalog (services on nodes), the
//! local agent's registrations and checks, the config-entry table, ACL tokens, faults and
//! the request log. All mutation goes through methods that keep the per-table indexes and
//! report which tables changed, so the server wakes only the watchers of those tables.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

use crate::agent::{self, AgentCheck, AgentService, Registration};
use crate::entries::{self, Entry, Stored, Table, View};
use crate::{Fault, RequestRecord, Rule, ServiceSpec};

/// A service instance in the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogRow {
    pub node: String,
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub kind: String,
    pub address: String,
    pub port: i64,
    pub meta: BTreeMap<String, String>,
    pub weights: (i64, i64),
    pub enable_tag_override: bool,
    pub tagged_addresses: Map<String, Value>,
    pub proxy: Option<Value>,
    pub connect: Option<Value>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl CatalogRow {
    fn same_content(&self, other: &CatalogRow) -> bool {
        let strip = |r: &CatalogRow| CatalogRow {
            create_index: 0,
            modify_index: 0,
            ..r.clone()
        };
        strip(self) == strip(other)
    }

    fn from_spec(spec: &ServiceSpec) -> CatalogRow {
        CatalogRow {
            node: spec.node.clone(),
            id: spec.id.clone(),
            name: spec.name.clone(),
            tags: spec.tags.clone(),
            kind: spec.kind.clone(),
            address: spec.address.clone(),
            port: i64::from(spec.port),
            meta: BTreeMap::new(),
            weights: (1, 1),
            enable_tag_override: false,
            tagged_addresses: Map::new(),
            proxy: None,
            connect: None,
            create_index: 0,
            modify_index: 0,
        }
    }

    fn from_agent(svc: &AgentService) -> CatalogRow {
        let weights = match svc.weights {
            Some((p, w)) => (if p > 0 { p } else { 1 }, w),
            None => (1, 1),
        };
        CatalogRow {
            node: agent::NODE.to_string(),
            id: svc.id.clone(),
            name: svc.name.clone(),
            tags: svc.tags.clone(),
            kind: svc.kind.clone(),
            address: svc.address.clone(),
            port: svc.port,
            meta: svc.meta.clone(),
            weights,
            enable_tag_override: svc.enable_tag_override,
            tagged_addresses: agent::tagged_addresses(svc),
            proxy: svc.proxy.clone(),
            connect: svc.connect.clone(),
            create_index: 0,
            modify_index: 0,
        }
    }
}

/// Which tables a mutation touched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    pub services: bool,
    pub checks: bool,
    pub config: bool,
    pub agent: bool,
}

impl Changes {
    pub fn any(&self) -> bool {
        self.services || self.checks || self.config || self.agent
    }
}

/// Address every simulated node has.
pub const NODE_ADDRESS: &str = "127.0.0.1";

/// The outcome of a config-entry write that passed validation and ACLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// `true`/`false` answer, and whether state changed.
    Done { reply: bool, changed: bool },
    /// Graph validation failed (500).
    Rejected(String),
}

pub struct State {
    pub index: u64,
    pub services_index: u64,
    pub checks_index: u64,
    pub config_index: u64,
    pub catalog: BTreeMap<(String, String), CatalogRow>,
    pub agent_services: BTreeMap<String, AgentService>,
    pub agent_checks: BTreeMap<String, AgentCheck>,
    pub config: Table,
    pub tokens: HashMap<String, Vec<Rule>>,
    pub faults: Vec<Fault>,
    /// Requests to act on late: (method, path prefix, delay), each for one request (see
    /// [`crate::Sim::hold_next`]).
    pub holds: Vec<(String, String, std::time::Duration)>,
    /// Entries a concurrent writer stores just before the next `PUT /v1/config` of the
    /// same kind and name is applied (see [`crate::Sim::race_next_config_write`]).
    pub races: Vec<entries::Entry>,
    pub rpc_prefix: bool,
    pub enterprise: bool,
    pub max_conns_per_client: Option<usize>,
    pub log: Vec<RequestRecord>,
    pub writes: u64,
    /// Requests being served (blocking queries parked among them): id -> (method, path, query).
    pub in_flight: BTreeMap<u64, (String, String, String)>,
    pub next_request_id: u64,
    /// State-changing writes per config entry (kind, name).
    pub entry_writes: HashMap<(String, String), u64>,
    /// The API-gateway controller's inputs and bookkeeping (see `api_gateway`).
    pub gateways: crate::api_gateway::Controller,
}

impl State {
    pub fn new() -> State {
        let mut state = State {
            index: 1,
            services_index: 0,
            checks_index: 0,
            config_index: 0,
            catalog: BTreeMap::new(),
            agent_services: BTreeMap::new(),
            agent_checks: BTreeMap::new(),
            config: Table::new(),
            tokens: HashMap::new(),
            faults: Vec::new(),
            holds: Vec::new(),
            races: Vec::new(),
            rpc_prefix: false,
            enterprise: false,
            max_conns_per_client: None,
            log: Vec::new(),
            writes: 0,
            in_flight: BTreeMap::new(),
            next_request_id: 0,
            entry_writes: HashMap::new(),
            gateways: crate::api_gateway::Controller::default(),
        };
        // Servers list themselves as the `consul` service.
        let consul = CatalogRow {
            node: agent::NODE.to_string(),
            id: "consul".to_string(),
            name: "consul".to_string(),
            tags: Vec::new(),
            kind: String::new(),
            address: String::new(),
            port: 8300,
            meta: BTreeMap::new(),
            weights: (1, 1),
            enable_tag_override: false,
            tagged_addresses: Map::new(),
            proxy: None,
            connect: None,
            create_index: 0,
            modify_index: 0,
        };
        state.upsert_row(consul);
        state
    }

    pub(crate) fn bump(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    /// Inserts or replaces a catalog row; bumps the services index only on a change.
    fn upsert_row(&mut self, mut row: CatalogRow) -> bool {
        let key = (row.node.clone(), row.id.clone());
        if let Some(old) = self.catalog.get(&key) {
            if old.same_content(&row) {
                return false;
            }
            row.create_index = old.create_index;
        }
        let idx = self.bump();
        if row.create_index == 0 {
            row.create_index = idx;
        }
        row.modify_index = idx;
        self.services_index = idx;
        self.catalog.insert(key, row);
        true
    }

    fn remove_row(&mut self, node: &str, id: &str) -> bool {
        if self
            .catalog
            .remove(&(node.to_string(), id.to_string()))
            .is_some()
        {
            self.services_index = self.bump();
            true
        } else {
            false
        }
    }

    pub fn add_service(&mut self, spec: &ServiceSpec) -> Changes {
        Changes {
            services: self.upsert_row(CatalogRow::from_spec(spec)),
            ..Changes::default()
        }
    }

    pub fn set_service_tags(&mut self, node: &str, id: &str, tags: &[&str]) -> Changes {
        let Some(row) = self.catalog.get(&(node.to_string(), id.to_string())) else {
            return Changes::default();
        };
        let mut row = row.clone();
        row.tags = tags.iter().map(|t| t.to_string()).collect();
        Changes {
            services: self.upsert_row(row),
            ..Changes::default()
        }
    }

    pub fn remove_service(&mut self, node: &str, id: &str) -> Changes {
        Changes {
            services: self.remove_row(node, id),
            ..Changes::default()
        }
    }

    /// An agent registration (upsert). Counts as a state-changing write when it changed
    /// the service or its checks.
    pub fn register(&mut self, reg: &Registration, replace_existing_checks: bool) -> Changes {
        let id = reg.service.id.clone();
        let new_checks = agent::build_checks(reg, &self.agent_checks);
        let mut next_checks = self.agent_checks.clone();
        if replace_existing_checks {
            next_checks.retain(|_, c| c.service_id != id);
        }
        for c in new_checks {
            next_checks.insert(c.check_id.clone(), c);
        }
        let service_changed = self.agent_services.get(&id) != Some(&reg.service);
        let checks_changed = next_checks != self.agent_checks;
        let mut changes = Changes::default();
        if service_changed {
            self.agent_services.insert(id.clone(), reg.service.clone());
            changes.agent = true;
            changes.services = self.upsert_row(CatalogRow::from_agent(&reg.service));
        }
        if checks_changed {
            self.agent_checks = next_checks;
            self.checks_index = self.bump();
            changes.checks = true;
        }
        if changes.any() {
            self.writes += 1;
        }
        changes
    }

    /// Removes an agent service and its checks; `None` when the ID is unknown.
    pub fn deregister(&mut self, id: &str) -> Option<Changes> {
        self.agent_services.remove(id)?;
        let mut changes = Changes {
            agent: true,
            services: self.remove_row(agent::NODE, id),
            ..Changes::default()
        };
        let before = self.agent_checks.len();
        self.agent_checks.retain(|_, c| c.service_id != id);
        if self.agent_checks.len() != before {
            self.checks_index = self.bump();
            changes.checks = true;
        }
        self.writes += 1;
        Some(changes)
    }

    /// The agent loses every registration (dev-mode restart, reaping).
    pub fn forget_agent_services(&mut self) -> Changes {
        let ids: Vec<String> = self.agent_services.keys().cloned().collect();
        let mut changes = Changes::default();
        for id in ids {
            self.agent_services.remove(&id);
            changes.agent = true;
            changes.services |= self.remove_row(agent::NODE, &id);
        }
        if !self.agent_checks.is_empty() {
            self.agent_checks.clear();
            self.checks_index = self.bump();
            changes.checks = true;
        }
        changes
    }

    /// Records a check result; the health view changes only when the status does.
    pub fn set_check_result(&mut self, check_id: &str, status: &str, output: &str) -> Changes {
        let Some(check) = self.agent_checks.get_mut(check_id) else {
            return Changes::default();
        };
        check.output = output.to_string();
        if check.status == status {
            return Changes::default();
        }
        check.status = status.to_string();
        self.checks_index = self.bump();
        Changes {
            checks: true,
            ..Changes::default()
        }
    }

    /// Writes a validated, ACL-approved entry: identical content is skipped (even with a
    /// stale CAS), then CAS, then graph validation.
    pub fn write_entry(&mut self, entry: &Entry, cas: Option<u64>) -> (WriteOutcome, Changes) {
        let key = (entry.kind.clone(), entry.name.clone());
        let existing = self.config.get(&key);
        // A client write never sets the controller-written Status: the stored one stays.
        let carried = crate::api_gateway::keep_stored_status(entry, existing);
        let entry = carried.as_ref().unwrap_or(entry);
        if let Some(existing) = existing {
            if entries::render(&existing.body, &entry.kind, 0, 0)
                == entries::render(&entry.body, &entry.kind, 0, 0)
            {
                return (
                    WriteOutcome::Done {
                        reply: true,
                        changed: false,
                    },
                    Changes::default(),
                );
            }
        }
        if let Some(cas) = cas {
            let ok = match existing {
                None => cas == 0,
                Some(e) => cas != 0 && e.modify_index == cas,
            };
            if !ok {
                return (
                    WriteOutcome::Done {
                        reply: false,
                        changed: false,
                    },
                    Changes::default(),
                );
            }
        }
        let view = View {
            table: &self.config,
            change: Some((&entry.kind, &entry.name, Some(&entry.body))),
        };
        if let Err(e) = entries::check_graph(&view) {
            return (WriteOutcome::Rejected(e), Changes::default());
        }
        let previous_create = existing.map(|e| e.create_index);
        let idx = self.bump();
        let create_index = previous_create.unwrap_or(idx);
        self.config.insert(
            key,
            Stored {
                body: entry.body.clone(),
                create_index,
                modify_index: idx,
            },
        );
        self.config_index = idx;
        self.writes += 1;
        self.gateways.touch();
        *self
            .entry_writes
            .entry((entry.kind.clone(), entry.name.clone()))
            .or_default() += 1;
        (
            WriteOutcome::Done {
                reply: true,
                changed: true,
            },
            Changes {
                config: true,
                ..Changes::default()
            },
        )
    }

    /// Deletes an entry. Without CAS a missing entry is a no-op success.
    pub fn delete_entry(
        &mut self,
        kind: &str,
        name: &str,
        cas: Option<u64>,
        validate_graph: bool,
    ) -> (WriteOutcome, Changes) {
        let key = (kind.to_string(), name.to_string());
        let existing = self.config.get(&key);
        let done = |reply| {
            (
                WriteOutcome::Done {
                    reply,
                    changed: false,
                },
                Changes::default(),
            )
        };
        let Some(existing) = existing else {
            return done(cas.is_none());
        };
        if let Some(cas) = cas {
            if cas == 0 || existing.modify_index != cas {
                return done(false);
            }
        }
        if validate_graph {
            let view = View {
                table: &self.config,
                change: Some((kind, name, None)),
            };
            if let Err(e) = entries::check_graph(&view) {
                return (WriteOutcome::Rejected(e), Changes::default());
            }
        }
        self.config.remove(&key);
        self.config_index = self.bump();
        self.writes += 1;
        self.gateways.touch();
        (
            WriteOutcome::Done {
                reply: true,
                changed: true,
            },
            Changes {
                config: true,
                ..Changes::default()
            },
        )
    }

    pub fn entry_json(&self, kind: &str, name: &str) -> Option<Value> {
        self.config
            .get(&(kind.to_string(), name.to_string()))
            .map(|s| entries::render(&s.body, kind, s.create_index, s.modify_index))
    }

    /// Snapshot restore: every index restarts from a small value; data is kept.
    pub fn reset_index(&mut self) {
        self.index = 2;
        for row in self.catalog.values_mut() {
            row.create_index = 2;
            row.modify_index = 2;
        }
        for entry in self.config.values_mut() {
            entry.create_index = 2;
            entry.modify_index = 2;
        }
        self.services_index = 2;
        self.checks_index = if self.agent_checks.is_empty() { 0 } else { 2 };
        self.config_index = if self.config.is_empty() { 0 } else { 2 };
    }

    pub fn health_index(&self) -> u64 {
        self.services_index.max(self.checks_index)
    }

    /// Finds and consumes the first fault matching the request.
    pub fn take_fault(&mut self, method: &str, path: &str) -> Option<(u16, String)> {
        let pos = self.faults.iter().position(|f| {
            f.count > 0
                && f.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && path.starts_with(&f.path_prefix)
        })?;
        let fault = &mut self.faults[pos];
        fault.count -= 1;
        let out = (fault.status, fault.body.clone());
        if fault.count == 0 {
            self.faults.remove(pos);
        }
        Some(out)
    }

    /// The delay of the first hold matching this request, removing it.
    pub fn take_hold(&mut self, method: &str, path: &str) -> Option<std::time::Duration> {
        let pos = self.holds.iter().position(|(m, prefix, _)| {
            m.eq_ignore_ascii_case(method) && path.starts_with(prefix)
        })?;
        Some(self.holds.remove(pos).2)
    }

    /// The checks of an instance: the node's serf check plus agent checks of the service.
    pub fn instance_checks(&self, row: &CatalogRow) -> Vec<Value> {
        let mut out = vec![serf_check(&row.node)];
        if row.node == agent::NODE {
            let svc = self.agent_services.get(&row.id);
            for c in self
                .agent_checks
                .values()
                .filter(|c| c.service_id == row.id)
            {
                let mut j = agent::check_json(c, svc);
                if let Some(o) = j.as_object_mut() {
                    o.insert("CreateIndex".into(), json!(self.checks_index));
                    o.insert("ModifyIndex".into(), json!(self.checks_index));
                }
                out.push(j);
            }
        }
        out
    }

    /// Every node known to the catalog.
    pub fn nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self.catalog.keys().map(|(n, _)| n.clone()).collect();
        nodes.dedup();
        nodes
    }
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

/// The `serfHealth` check every live node has.
pub fn serf_check(node: &str) -> Value {
    json!({
        "Node": node, "CheckID": "serfHealth", "Name": "Serf Health Status",
        "Status": "passing", "Notes": "", "Output": "Agent alive and reachable",
        "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": "",
        "ExposedPort": 0, "Definition": {}, "CreateIndex": 1, "ModifyIndex": 1
    })
}

pub fn node_json(node: &str) -> Value {
    json!({
        "ID": crate::util::uuid_from(node),
        "Node": node,
        "Address": NODE_ADDRESS,
        "Datacenter": agent::DATACENTER,
        "TaggedAddresses": {"lan": NODE_ADDRESS, "lan_ipv4": NODE_ADDRESS,
                            "wan": NODE_ADDRESS, "wan_ipv4": NODE_ADDRESS},
        "Meta": {"consul-network-segment": ""},
        "CreateIndex": 1,
        "ModifyIndex": 1
    })
}

fn proxy_json(row: &CatalogRow) -> Value {
    let mut proxy = row
        .proxy
        .as_ref()
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    proxy.entry("Mode").or_insert_with(|| json!(""));
    proxy.entry("MeshGateway").or_insert_with(|| json!({}));
    proxy.entry("Expose").or_insert_with(|| json!({}));
    Value::Object(proxy)
}

/// A `GET /v1/catalog/service/:name` element (flat `ServiceNode`).
pub fn catalog_row_json(row: &CatalogRow) -> Value {
    json!({
        "ID": crate::util::uuid_from(&row.node),
        "Node": row.node,
        "Address": NODE_ADDRESS,
        "Datacenter": agent::DATACENTER,
        "TaggedAddresses": {"lan": NODE_ADDRESS, "lan_ipv4": NODE_ADDRESS,
                            "wan": NODE_ADDRESS, "wan_ipv4": NODE_ADDRESS},
        "NodeMeta": {"consul-network-segment": ""},
        "ServiceKind": row.kind,
        "ServiceID": row.id,
        "ServiceName": row.name,
        "ServiceTags": row.tags,
        "ServiceAddress": row.address,
        "ServiceTaggedAddresses": row.tagged_addresses,
        "ServiceWeights": {"Passing": row.weights.0, "Warning": row.weights.1},
        "ServiceMeta": row.meta,
        "ServicePort": row.port,
        "ServiceSocketPath": "",
        "ServiceEnableTagOverride": row.enable_tag_override,
        "ServiceProxy": proxy_json(row),
        "ServiceConnect": row.connect.clone().unwrap_or_else(|| json!({})),
        "ServicePeerName": "",
        "CreateIndex": row.create_index,
        "ModifyIndex": row.modify_index
    })
}

/// Direct field access for filters on the hot path (`/v1/catalog/services` over large
/// catalogs); rare selectors fall back to the full JSON.
impl crate::filter::Fields for CatalogRow {
    fn field(&self, path: &[String]) -> Option<Value> {
        let first = path.first()?.as_str();
        let second = path.get(1).map(String::as_str);
        match (first, second, path.len()) {
            ("ServiceKind", None, 1) => Some(Value::String(self.kind.clone())),
            ("ServiceName", None, 1) => Some(Value::String(self.name.clone())),
            ("ServiceID", None, 1) => Some(Value::String(self.id.clone())),
            ("Node", None, 1) => Some(Value::String(self.node.clone())),
            ("ServiceTags", None, 1) => Some(json!(self.tags)),
            ("ServicePort", None, 1) => Some(json!(self.port)),
            ("ServiceAddress", None, 1) => Some(Value::String(self.address.clone())),
            ("ServiceMeta", None, 1) => Some(json!(self.meta)),
            ("ServiceMeta", Some(k), 2) => self.meta.get(k).map(|v| Value::String(v.clone())),
            _ => crate::filter::lookup(&catalog_row_json(self), path).cloned(),
        }
    }
}

/// The `Service` part of a health element (`NodeService`).
pub fn node_service_json(row: &CatalogRow) -> Value {
    let mut out = json!({
        "ID": row.id,
        "Service": row.name,
        "Tags": row.tags,
        "Address": row.address,
        "Meta": row.meta,
        "Port": row.port,
        "Weights": {"Passing": row.weights.0, "Warning": row.weights.1},
        "EnableTagOverride": row.enable_tag_override,
        "Proxy": proxy_json(row),
        "Connect": row.connect.clone().unwrap_or_else(|| json!({})),
        "PeerName": "",
        "CreateIndex": row.create_index,
        "ModifyIndex": row.modify_index
    });
    if let Some(o) = out.as_object_mut() {
        if !row.kind.is_empty() {
            o.insert("Kind".into(), json!(row.kind));
        }
        if !row.tagged_addresses.is_empty() {
            o.insert(
                "TaggedAddresses".into(),
                Value::Object(row.tagged_addresses.clone()),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(v: Value) -> Entry {
        let mut e = match entries::decode(&v, false) {
            Ok(e) => e,
            Err(e) => panic!("{e}"),
        };
        entries::normalize(&mut e);
        e
    }

    #[test]
    fn identical_writes_and_stale_cas_do_not_bump() {
        let mut s = State::new();
        let sd = entry(json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"}));
        let (out, ch) = s.write_entry(&sd, Some(0));
        assert_eq!(
            out,
            WriteOutcome::Done {
                reply: true,
                changed: true
            }
        );
        assert!(ch.config);
        let idx = s.config_index;
        let writes = s.writes;
        // Identical content: true, nothing moves, even with a stale CAS.
        for cas in [None, Some(0), Some(12345)] {
            let (out, ch) = s.write_entry(&sd, cas);
            assert_eq!(
                out,
                WriteOutcome::Done {
                    reply: true,
                    changed: false
                },
                "cas {cas:?}"
            );
            assert!(!ch.any());
            assert_eq!(s.config_index, idx);
            assert_eq!(s.writes, writes);
        }
        let grpc = entry(json!({"Kind": "service-defaults", "Name": "web", "Protocol": "grpc"}));
        // CAS misses: create-only on an existing entry, and a wrong index.
        for cas in [Some(0), Some(idx + 100)] {
            let (out, _) = s.write_entry(&grpc, cas);
            assert_eq!(
                out,
                WriteOutcome::Done {
                    reply: false,
                    changed: false
                }
            );
        }
        let (out, _) = s.write_entry(&grpc, Some(idx));
        assert_eq!(
            out,
            WriteOutcome::Done {
                reply: true,
                changed: true
            }
        );
        assert!(s.config_index > idx);
        let j = s.entry_json("service-defaults", "web").unwrap_or_default();
        assert_eq!(j["CreateIndex"], json!(idx));
        assert_eq!(j["ModifyIndex"], json!(s.config_index));
    }

    #[test]
    fn deletes_follow_cas_rules() {
        let mut s = State::new();
        let (out, _) = s.delete_entry("service-defaults", "nope", None, true);
        assert_eq!(
            out,
            WriteOutcome::Done {
                reply: true,
                changed: false
            }
        );
        let (out, _) = s.delete_entry("service-defaults", "nope", Some(3), true);
        assert_eq!(
            out,
            WriteOutcome::Done {
                reply: false,
                changed: false
            }
        );
        s.write_entry(
            &entry(json!({"Kind": "service-defaults", "Name": "web"})),
            None,
        );
        let idx = s.config_index;
        for cas in [0, idx + 1] {
            let (out, _) = s.delete_entry("service-defaults", "web", Some(cas), true);
            assert_eq!(
                out,
                WriteOutcome::Done {
                    reply: false,
                    changed: false
                }
            );
        }
        let (out, ch) = s.delete_entry("service-defaults", "web", Some(idx), true);
        assert_eq!(
            out,
            WriteOutcome::Done {
                reply: true,
                changed: true
            }
        );
        assert!(ch.config);
        assert!(s.config.is_empty());
    }

    #[test]
    fn catalog_changes_bump_only_when_content_changes() {
        let mut s = State::new();
        let spec = ServiceSpec::new("web", &["a"]);
        assert!(s.add_service(&spec).services);
        let idx = s.services_index;
        assert!(!s.add_service(&spec).services);
        assert_eq!(s.services_index, idx);
        assert!(s.set_service_tags("node-1", "web", &["b"]).services);
        assert!(s.services_index > idx);
        assert!(!s.set_service_tags("node-x", "web", &["b"]).services);
        assert!(s.remove_service("node-1", "web").services);
        assert!(!s.remove_service("node-1", "web").services);
    }
}
