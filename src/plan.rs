//! The planner, pure and synchronous: what Consul should hold, from what it holds now.
//!
//! Inputs: the selected catalog (service -> its selected tags, prefix stripped), the
//! services' protocols, the current `ingress-gateway` entry (if any) and the config.
//! Output: the ingress service registration, the desired config entry, the
//! service-defaults to create, and warnings. The desired entry is valid by construction
//! (consul-api §6.2/§6.3): bad hosts dropped, host conflicts resolved by service name
//! order, protocol mismatches left out, empty listeners not written. Listeners on ports
//! that are not ours, and the gateway's TLS, Defaults and Meta, are carried over as is.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::config::Config;

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
        let _ = service;
        todo!()
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
        todo!()
    }

    /// Whether the agent's copy (`GET /v1/agent/service/<id>`) already says the same:
    /// ID, Service, Port, Address, Tags (as sets) and Meta.
    pub fn matches_agent(&self, agent: &Value) -> bool {
        let _ = agent;
        todo!()
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
    let _ = inputs;
    todo!()
}

/// Equality of two entries ignoring listener/service/host order, `Hosts` null vs [] vs
/// absent, protocol case, and `CreateIndex`/`ModifyIndex`/`Hash`.
pub fn entries_equal(a: &Value, b: &Value) -> bool {
    let _ = (a, b);
    todo!()
}
