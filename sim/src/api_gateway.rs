//! The API gateway kinds (consul-api-gateway.md §1-§4): `api-gateway`, `http-route`,
//! `tcp-route` (schemas, `Normalize()`, `Validate()` with Consul's texts and order), the
//! controller-owned `bound-api-gateway`, and an asynchronous controller that writes
//! `Status.Conditions` and the bound entries a few milliseconds after a change, the way
//! `agent/consul/gateways/controller_gateways.go` does.
//!
//! The controller works in passes over a snapshot of the table. Like Consul's, a pass
//! binds routes using the statuses *stored* at its start (a route's own `Accepted`, the
//! gateway's `Accepted`, the bound entry's existence), so a new route first reads
//! `Bound=False` ("route has not been accepted", or `GatewayNotFound` before its gateway
//! was reconciled) and binds one pass later: each pass that changes something bumps the
//! ModifyIndex of what it wrote and wakes blocking queries, as Consul's status writes
//! do. Its own writes are not client changes: passes repeat only while they change
//! something and stop at the first that changes nothing (a handful in a row at most).
//! Routes whose inputs did not change reuse their last result, and under bursts the
//! passes space out, so thousands of routes do not hold up the API.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use tokio::sync::Notify;

use crate::entries::{
    f, obj, objects, str_of, strings, validate_meta, validate_tls, Emit, Entry, Stored, View, F, T,
};
use crate::server::Shared;
use crate::state::{Changes, State};
use crate::util::go_quote;

pub const API_GATEWAY: &str = "api-gateway";
pub const BOUND_API_GATEWAY: &str = "bound-api-gateway";
pub const HTTP_ROUTE: &str = "http-route";
pub const TCP_ROUTE: &str = "tcp-route";

// ------------------------------------------------------------------ schemas

const RESOURCE_REF: &[F] = &[
    f("Kind", T::Str, Emit::Always),
    f("Name", T::Str, Emit::Always),
    f("SectionName", T::Str, Emit::Always),
];

/// `Status`: written by the controller; a client's value is dropped on write.
const STATUS: &[F] = &[f("Conditions", T::Any, Emit::Always)];

const GATEWAY_TLS: &[F] = &[
    f("Certificates", T::ObjList(RESOURCE_REF), Emit::Always),
    f("MaxVersion", T::Str, Emit::Always),
    f("MinVersion", T::Str, Emit::Always),
    f("CipherSuites", T::StrList, Emit::Always),
];

const LISTENER: &[F] = &[
    f("Name", T::Str, Emit::Always),
    f("Hostname", T::Str, Emit::Always),
    f("Port", T::Int, Emit::Always),
    f("Protocol", T::Str, Emit::Always),
    f("TLS", T::Obj(GATEWAY_TLS), Emit::Always),
    // Enterprise JWT policies (1.17+): kept as sent.
    f("Override", T::Any, Emit::IfSet),
    f("Default", T::Any, Emit::IfSet),
];

const API_GATEWAY_FIELDS: &[F] = &[
    f("Kind", T::Str, Emit::Always),
    f("Name", T::Str, Emit::Always),
    f("Listeners", T::ObjList(LISTENER), Emit::Always),
    f("Status", T::Obj(STATUS), Emit::Always),
    f("Meta", T::StrMap, Emit::NonZero),
    f("Hash", T::Int, Emit::NonZero),
];

const HEADER_FILTER: &[F] = &[
    f("Add", T::StrMap, Emit::Always),
    f("Remove", T::StrList, Emit::Always),
    f("Set", T::StrMap, Emit::Always),
];

const URL_REWRITE: &[F] = &[f("Path", T::Str, Emit::Always)];

const RETRY_FILTER: &[F] = &[
    f("NumRetries", T::Int, Emit::Null),
    f("RetryOn", T::StrList, Emit::Always),
    f("RetryOnStatusCodes", T::Any, Emit::Always),
    f("RetryOnConnectFailure", T::Bool, Emit::Null),
];

const TIMEOUT_FILTER: &[F] = &[
    f("RequestTimeout", T::Dur, Emit::Always),
    f("IdleTimeout", T::Dur, Emit::Always),
];

const FILTERS: &[F] = &[
    f("Headers", T::ObjList(HEADER_FILTER), Emit::Always),
    f("URLRewrite", T::Obj(URL_REWRITE), Emit::Null),
    f("RetryFilter", T::Obj(RETRY_FILTER), Emit::Null),
    f("TimeoutFilter", T::Obj(TIMEOUT_FILTER), Emit::Null),
];

const RESPONSE_FILTERS: &[F] = &[f("Headers", T::ObjList(HEADER_FILTER), Emit::Always)];

const PATH_MATCH: &[F] = &[
    f("Match", T::Str, Emit::Always),
    f("Value", T::Str, Emit::Always),
];

const NAMED_MATCH: &[F] = &[
    f("Match", T::Str, Emit::Always),
    f("Name", T::Str, Emit::Always),
    f("Value", T::Str, Emit::Always),
];

const MATCH: &[F] = &[
    f("Headers", T::ObjList(NAMED_MATCH), Emit::Always),
    f("Method", T::Str, Emit::Always),
    f("Path", T::Obj(PATH_MATCH), Emit::Always),
    f("Query", T::ObjList(NAMED_MATCH), Emit::Always),
];

const HTTP_SERVICE: &[F] = &[
    f("Name", T::Str, Emit::Always),
    f("Weight", T::Int, Emit::Always),
    f("Filters", T::Obj(FILTERS), Emit::Always),
    f("ResponseFilters", T::Obj(RESPONSE_FILTERS), Emit::IfSet),
];

const RULE: &[F] = &[
    f("Filters", T::Obj(FILTERS), Emit::Always),
    f("ResponseFilters", T::Obj(RESPONSE_FILTERS), Emit::IfSet),
    f("Matches", T::ObjList(MATCH), Emit::Always),
    f("Services", T::ObjList(HTTP_SERVICE), Emit::Always),
];

const HTTP_ROUTE_FIELDS: &[F] = &[
    f("Kind", T::Str, Emit::Always),
    f("Name", T::Str, Emit::Always),
    f("Parents", T::ObjList(RESOURCE_REF), Emit::Always),
    f("Rules", T::ObjList(RULE), Emit::Always),
    f("Hostnames", T::StrList, Emit::Always),
    f("Meta", T::StrMap, Emit::NonZero),
    f("Status", T::Obj(STATUS), Emit::Always),
];

const TCP_SERVICE: &[F] = &[f("Name", T::Str, Emit::Always)];

const TCP_ROUTE_FIELDS: &[F] = &[
    f("Kind", T::Str, Emit::Always),
    f("Name", T::Str, Emit::Always),
    f("Parents", T::ObjList(RESOURCE_REF), Emit::Always),
    f("Services", T::ObjList(TCP_SERVICE), Emit::Always),
    f("Meta", T::StrMap, Emit::NonZero),
    f("Status", T::Obj(STATUS), Emit::Always),
];

pub(crate) fn schema(kind: &str) -> Option<&'static [F]> {
    match kind {
        API_GATEWAY => Some(API_GATEWAY_FIELDS),
        HTTP_ROUTE => Some(HTTP_ROUTE_FIELDS),
        TCP_ROUTE => Some(TCP_ROUTE_FIELDS),
        _ => None,
    }
}

fn is_controlled(kind: &str) -> bool {
    matches!(kind, API_GATEWAY | HTTP_ROUTE | TCP_ROUTE)
}

// ------------------------------------------------------------------ normalize / validate

fn each_obj_mut<'a>(
    m: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    m.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

fn default_parent_kinds(body: &mut Map<String, Value>) {
    for parent in each_obj_mut(body, "Parents") {
        if str_of(parent, "Kind").is_empty() {
            parent.insert("Kind".into(), json!(API_GATEWAY));
        }
    }
}

/// `Normalize()` of the three client-written kinds; drops any client `Status`.
pub(crate) fn normalize(entry: &mut Entry) {
    let body = &mut entry.body;
    match entry.kind.as_str() {
        API_GATEWAY => {
            for listener in each_obj_mut(body, "Listeners") {
                let protocol = str_of(listener, "Protocol").to_lowercase();
                listener.insert("Protocol".into(), Value::String(protocol));
                if let Some(tls) = listener.get_mut("TLS").and_then(Value::as_object_mut) {
                    for cert in each_obj_mut(tls, "Certificates") {
                        if str_of(cert, "Kind").is_empty() {
                            cert.insert("Kind".into(), json!("inline-certificate"));
                        }
                    }
                }
            }
        }
        HTTP_ROUTE => {
            default_parent_kinds(body);
            for rule in each_obj_mut(body, "Rules") {
                for m in each_obj_mut(rule, "Matches") {
                    if let Some(method) = m.get("Method").and_then(Value::as_str) {
                        let upper = method.to_uppercase();
                        m.insert("Method".into(), Value::String(upper));
                    }
                    let path_match = obj(m, "Path").map_or("", |p| str_of(p, "Match"));
                    if path_match.is_empty() {
                        // Go's zero HTTPPathMatch becomes prefix "/", whatever Value said.
                        m.insert("Path".into(), json!({"Match": "prefix", "Value": "/"}));
                    }
                }
                for svc in each_obj_mut(rule, "Services") {
                    if svc.get("Weight").and_then(Value::as_i64).unwrap_or(0) <= 0 {
                        svc.insert("Weight".into(), json!(1));
                    }
                }
            }
        }
        TCP_ROUTE => default_parent_kinds(body),
        _ => return,
    }
    body.remove("Status");
    if entry.kind == API_GATEWAY {
        set_hash(body);
    }
}

/// `HashConfigEntry` as `Normalize()` sets it on the kinds that carry a `Hash` (newer
/// servers render it): a content hash, here over everything but `Status` and `Hash`.
pub(crate) fn set_hash(body: &mut Map<String, Value>) {
    body.remove("Hash");
    let status = body.remove("Status");
    // Over the keys in sorted order, as Consul hashes its structs: the same content
    // hashes the same whatever order its objects were written in.
    let mut canonical = Value::Object(body.clone());
    canonical.sort_all_objects();
    let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
    if let Some(status) = status {
        body.insert("Status".into(), status);
    }
    body.insert("Hash".into(), json!(crate::util::fnv64(0, &bytes)));
}

/// The controller-owned kind refuses client writes (`CanWrite`), ACLs or not.
pub(crate) fn check_controller_only(kind: &str) -> Result<(), String> {
    if kind == BOUND_API_GATEWAY {
        return Err("Permission denied: only writeable by controller".to_string());
    }
    Ok(())
}

/// A client write of a controlled kind keeps the stored `Status` (create starts empty).
pub(crate) fn keep_stored_status(entry: &Entry, existing: Option<&Stored>) -> Option<Entry> {
    if !is_controlled(&entry.kind) {
        return None;
    }
    let mut out = entry.clone();
    out.body.remove("Status");
    if let Some(status) = existing.and_then(|e| e.body.get("Status")) {
        out.body.insert("Status".into(), status.clone());
    }
    Some(out)
}

/// `^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
fn valid_listener_name(name: &str) -> bool {
    let label_ok = |label: &str| {
        let b = label.as_bytes();
        let edge = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        !b.is_empty()
            && edge(b[0])
            && edge(b[b.len() - 1])
            && b.iter().all(|c| edge(*c) || *c == b'-')
    };
    !name.is_empty() && name.split('.').all(label_ok)
}

fn validate_gateway(body: &Map<String, Value>) -> Result<(), String> {
    validate_meta(body)?;
    let listeners = objects(body, "Listeners");
    if listeners.is_empty() {
        return Err("api gateway must have at least one listener".to_string());
    }
    let mut names = BTreeSet::new();
    for l in &listeners {
        let name = str_of(l, "Name");
        if !valid_listener_name(name) {
            return Err(format!("listener name {} is invalid, must be at least 1 character and contain only letters, numbers, or dashes", go_quote(name)));
        }
        if !names.insert(name) {
            return Err(format!(
                "found multiple listeners with the name {}",
                go_quote(name)
            ));
        }
    }
    let mut by_port: BTreeMap<i64, &Map<String, Value>> = BTreeMap::new();
    for l in &listeners {
        let port = l.get("Port").and_then(Value::as_i64).unwrap_or(0);
        if let Some(merged) = by_port.get(&port) {
            if str_of(merged, "Hostname") != str_of(l, "Hostname")
                || str_of(merged, "Protocol") != str_of(l, "Protocol")
            {
                return Err(format!(
                    "listeners {} and {} cannot be merged",
                    go_quote(str_of(merged, "Name")),
                    go_quote(str_of(l, "Name"))
                ));
            }
        }
        by_port.insert(port, l);
    }
    for l in &listeners {
        let protocol = str_of(l, "Protocol");
        let hostname = str_of(l, "Hostname");
        let port = l.get("Port").and_then(Value::as_i64).unwrap_or(0);
        if !matches!(protocol, "http" | "tcp") {
            return Err(format!(
                "unsupported listener protocol {}, must be one of 'tcp', or 'http'",
                go_quote(protocol)
            ));
        }
        if protocol == "tcp" && !hostname.is_empty() {
            return Err("hostname specification is not supported when using TCP".to_string());
        }
        if !(1..=65535).contains(&port) {
            return Err(format!("listener port {port} not in the range 1-65535"));
        }
        if hostname
            .strip_prefix("*.")
            .unwrap_or(hostname)
            .contains('*')
        {
            return Err(format!(
                "host {} is not valid, a wildcard specifier is only allowed as the left-most label",
                go_quote(hostname)
            ));
        }
        let tls = obj(l, "TLS");
        for cert in tls.map(|t| objects(t, "Certificates")).unwrap_or_default() {
            let kind = str_of(cert, "Kind");
            // 1.19+ also accepts file-system-certificate; the text is the older one.
            if !matches!(kind, "inline-certificate" | "file-system-certificate") {
                return Err(format!(
                    "unsupported certificate kind: {}, must be 'inline-certificate'",
                    go_quote(kind)
                ));
            }
            if str_of(cert, "Name").is_empty() {
                return Err("certificate reference must have a name".to_string());
            }
        }
        if let Some(tls) = tls {
            let mut as_ingress = Map::new();
            for (from, to) in [
                ("MinVersion", "TLSMinVersion"),
                ("MaxVersion", "TLSMaxVersion"),
                ("CipherSuites", "CipherSuites"),
            ] {
                if let Some(v) = tls.get(from) {
                    as_ingress.insert(to.to_string(), v.clone());
                }
            }
            validate_tls(Some(&as_ingress))?;
        }
    }
    Ok(())
}

fn validate_parents(body: &Map<String, Value>) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for parent in objects(body, "Parents") {
        let kind = str_of(parent, "Kind");
        if kind != API_GATEWAY {
            return Err(format!(
                "unsupported parent kind: {}, must be 'api-gateway'",
                go_quote(kind)
            ));
        }
        if !seen.insert((kind, str_of(parent, "Name"), str_of(parent, "SectionName"))) {
            return Err("route parents must be unique".to_string());
        }
    }
    Ok(())
}

const METHODS: &[&str] = &[
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE",
];

pub(crate) fn is_valid_method(m: &str) -> bool {
    METHODS.contains(&m)
}

fn validate_match(m: &Map<String, Value>) -> Result<(), String> {
    let method = str_of(m, "Method");
    if !method.is_empty() && !is_valid_method(method) {
        return Err(format!(
            "Method contains an invalid method {}",
            go_quote(method)
        ));
    }
    for (k, q) in objects(m, "Query").into_iter().enumerate() {
        let wrap = |e: &str| format!("Query[{k}], {e}");
        if str_of(q, "Name").is_empty() {
            return Err(wrap("missing required Name field"));
        }
        if !matches!(str_of(q, "Match"), "exact" | "present" | "regex") {
            return Err(wrap("match type should be one of present, exact, or regex"));
        }
    }
    for (k, h) in objects(m, "Headers").into_iter().enumerate() {
        let wrap = |e: &str| format!("Headers[{k}], {e}");
        if str_of(h, "Name").is_empty() {
            return Err(wrap("missing required Name field"));
        }
        if !matches!(
            str_of(h, "Match"),
            "exact" | "prefix" | "regex" | "suffix" | "present"
        ) {
            return Err(wrap(
                "match type should be one of present, exact, prefix, suffix, or regex",
            ));
        }
    }
    let path = obj(m, "Path");
    let kind = path.map_or("", |p| str_of(p, "Match"));
    let value = path.map_or("", |p| str_of(p, "Value"));
    match kind {
        "exact" | "prefix" if !value.starts_with('/') => Err(format!(
            "Path, {kind} type match doesn't start with '/': {}",
            go_quote(value)
        )),
        "exact" | "prefix" | "regex" => Ok(()),
        _ => Err("Path, match type should be one of exact, prefix, or regex".to_string()),
    }
}

fn validate_http_route(body: &Map<String, Value>) -> Result<(), String> {
    for host in strings(body, "Hostnames") {
        if !crate::dns::is_domain_name(host) {
            return Err(format!(
                "host {} must be a valid DNS hostname",
                go_quote(host)
            ));
        }
        if host.contains('*') {
            return Err(format!("host {} must not be a wildcard", go_quote(host)));
        }
    }
    validate_parents(body)?;
    validate_meta(body)?;
    for (i, rule) in objects(body, "Rules").into_iter().enumerate() {
        // Header filters and URLRewrite have no write-time rules (TODOs in Consul).
        for (j, m) in objects(rule, "Matches").into_iter().enumerate() {
            validate_match(m).map_err(|e| format!("Rule[{i}], Match[{j}], {e}"))?;
        }
    }
    Ok(())
}

fn validate_tcp_route(body: &Map<String, Value>) -> Result<(), String> {
    if objects(body, "Services").len() > 1 {
        return Err("tcp-route currently only supports one service".to_string());
    }
    validate_parents(body)?;
    validate_meta(body)
}

/// `Validate()` of the gateway kinds; `Ok` for every other kind.
pub(crate) fn validate(entry: &Entry) -> Result<(), String> {
    match entry.kind.as_str() {
        API_GATEWAY => validate_gateway(&entry.body),
        HTTP_ROUTE => validate_http_route(&entry.body),
        TCP_ROUTE => validate_tcp_route(&entry.body),
        _ => Ok(()),
    }
}

// ------------------------------------------------------------------ the controller

/// The controller's inputs and bookkeeping, kept in the simulator's state.
pub struct Controller {
    /// A pass is due (a client change, or the controller's own last pass wrote).
    dirty: bool,
    /// A client change happened since the last pass.
    client_change: bool,
    wake: Arc<Notify>,
    /// How long after a change a pass runs (Consul: a few milliseconds).
    pub delay: Duration,
    /// While paused no pass runs; changes wait.
    pub paused: bool,
    /// Services whose discovery chain fails to compile, with the compile error.
    pub chain_errors: BTreeMap<String, String>,
    /// Status and bound-entry writes done by the controller.
    pub status_writes: u64,
    /// Passes that ran (changing something or not).
    pub passes: u64,
    /// The bound state last written per gateway, with the entry's ModifyIndex then:
    /// an unchanged one is not rendered again (thousands of routes make that costly).
    bound_cache: BTreeMap<String, (u64, BoundGateway)>,
    /// Each route's last result with the inputs it came from.
    route_cache: BTreeMap<(String, String), RouteResult>,
}

impl Default for Controller {
    fn default() -> Self {
        Controller {
            dirty: false,
            client_change: false,
            wake: Arc::new(Notify::new()),
            delay: Duration::from_millis(5),
            paused: false,
            chain_errors: BTreeMap::new(),
            status_writes: 0,
            passes: 0,
            bound_cache: BTreeMap::new(),
            route_cache: BTreeMap::new(),
        }
    }
}

impl Controller {
    /// A client-visible change happened: schedule a pass.
    pub fn touch(&mut self) {
        self.dirty = true;
        self.client_change = true;
        self.wake.notify_one();
    }

    /// Whether a pass is due (or running).
    pub fn pending(&self) -> bool {
        self.dirty
    }
}

/// Passes in a row without a client change: Consul's controller needs three (status,
/// then binding, then nothing); more means a simulator bug.
const MAX_OWN_PASSES: usize = 8;

/// The controller task: a pass `delay` after a change, and again while passes change
/// something. A pass over thousands of routes is not free and runs under the state
/// lock, so under a burst of writes the next pass waits at least four times as long as
/// the last one took: the API stays responsive, as Consul's does while its controller
/// works, and statuses lag a little more (as they do in Consul under load).
pub async fn run(shared: Arc<Shared>) {
    let wake = Arc::clone(&shared.lock().gateways.wake);
    let mut last_took = Duration::ZERO;
    loop {
        wake.notified().await;
        let mut own_passes = 0;
        loop {
            let delay = shared.lock().gateways.delay;
            tokio::time::sleep(delay.max(last_took * 4)).await;
            let changed = {
                let mut st = shared.lock();
                if st.gateways.paused || !st.gateways.dirty {
                    break;
                }
                let client_change = std::mem::take(&mut st.gateways.client_change);
                own_passes = if client_change { 0 } else { own_passes + 1 };
                if own_passes > MAX_OWN_PASSES {
                    eprintln!("consul-sim: the gateway controller did not settle");
                    break;
                }
                st.gateways.dirty = false;
                st.gateways.passes += 1;
                let started = std::time::Instant::now();
                let changed = reconcile(&mut st);
                last_took = started.elapsed();
                // Consul's controller reconciles again after its own writes.
                st.gateways.dirty |= changed;
                changed
            };
            if changed {
                shared.notify(Changes {
                    config: true,
                    ..Changes::default()
                });
            }
        }
    }
}

/// A `ResourceReference` (CE: no namespace or partition).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Ref {
    kind: String,
    name: String,
    section: String,
}

impl Ref {
    fn empty() -> Ref {
        Ref {
            kind: String::new(),
            name: String::new(),
            section: String::new(),
        }
    }
    fn of(m: &Map<String, Value>) -> Ref {
        Ref {
            kind: str_of(m, "Kind").to_string(),
            name: str_of(m, "Name").to_string(),
            section: str_of(m, "SectionName").to_string(),
        }
    }
    fn json(&self) -> Value {
        json!({"Kind": self.kind, "Name": self.name, "SectionName": self.section})
    }
}

/// A condition without its `LastTransitionTime`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Cond {
    typ: String,
    status: String,
    reason: String,
    message: String,
    resource: Ref,
}

fn cond(typ: &str, status: &str, reason: &str, message: impl Into<String>, resource: Ref) -> Cond {
    Cond {
        typ: typ.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        resource,
    }
}

/// `StatusUpdater.SetCondition`: replaces the condition of the same type and resource.
fn set(conds: &mut Vec<Cond>, c: Cond) {
    match conds
        .iter_mut()
        .find(|x| x.typ == c.typ && x.resource == c.resource)
    {
        Some(slot) => *slot = c,
        None => conds.push(c),
    }
}

fn stored_list(body: &Map<String, Value>) -> &[Value] {
    obj(body, "Status")
        .and_then(|s| s.get("Conditions"))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Whether a stored condition is `c` (ignoring `LastTransitionTime`), without copying.
fn is(stored: &Value, c: &Cond) -> bool {
    let Some(s) = stored.as_object() else {
        return false;
    };
    let r = obj(s, "Resource");
    let field = |k: &str| r.map_or("", |r| str_of(r, k));
    str_of(s, "Type") == c.typ
        && str_of(s, "Status") == c.status
        && str_of(s, "Reason") == c.reason
        && str_of(s, "Message") == c.message
        && field("Kind") == c.resource.kind
        && field("Name") == c.resource.name
        && field("SectionName") == c.resource.section
}

/// `Status.MatchesConditionStatus` for `Accepted=True` with an empty resource.
fn accepted(body: &Map<String, Value>) -> bool {
    stored_list(body)
        .iter()
        .filter_map(Value::as_object)
        .any(|c| {
            let r = obj(c, "Resource");
            let empty = |k: &str| r.is_none_or(|r| str_of(r, k).is_empty());
            str_of(c, "Type") == "Accepted"
                && str_of(c, "Status") == "True"
                && empty("Kind")
                && empty("Name")
                && empty("SectionName")
        })
}

/// `SameConditions` between the stored conditions and `conds`: equal as sets (a type
/// and resource appear once), ignoring `LastTransitionTime`.
fn same_as_stored(body: &Map<String, Value>, conds: &[Cond]) -> bool {
    let stored = stored_list(body);
    stored.len() == conds.len() && conds.iter().all(|c| stored.iter().any(|s| is(s, c)))
}

fn entries_of<'a>(st: &'a State, kind: &str) -> Vec<(String, &'a Map<String, Value>)> {
    st.config
        .range((kind.to_string(), String::new())..)
        .take_while(|((k, _), _)| k == kind)
        .map(|((_, n), s)| (n.clone(), &s.body))
        .collect()
}

/// `HTTPRouteConfigEntry.FilteredHostnames`.
fn filtered_hostnames(route: &Map<String, Value>, listener_hostname: &str) -> Vec<String> {
    let hostnames = strings(route, "Hostnames");
    if hostnames.is_empty() {
        return vec![listener_hostname.to_string()];
    }
    let wildcard = listener_hostname.contains('*');
    let trimmed = listener_hostname.trim_start_matches('*');
    let trimmed = trimmed.strip_prefix('.').unwrap_or(trimmed);
    hostnames
        .into_iter()
        .filter(|h| {
            if wildcard {
                h.ends_with(trimmed)
            } else {
                *h == trimmed
            }
        })
        .map(str::to_string)
        .collect()
}

fn route_services(kind: &str, body: &Map<String, Value>) -> Vec<String> {
    if kind == HTTP_ROUTE {
        objects(body, "Rules")
            .into_iter()
            .flat_map(|r| objects(r, "Services"))
            .map(|s| str_of(s, "Name").to_string())
            .collect()
    } else {
        objects(body, "Services")
            .into_iter()
            .map(|s| str_of(s, "Name").to_string())
            .collect()
    }
}

/// A route's result in a pass, with the inputs it came from: its ModifyIndex (its
/// content and stored status), its services' protocols or chain errors, and per parent
/// the ModifyIndex of that gateway when it has a bound entry.
struct RouteResult {
    modify_index: u64,
    /// Whether the fields below were computed (not only parsed).
    evaluated: bool,
    services: Vec<String>,
    parents: Vec<Ref>,
    protocols: Vec<Result<String, String>>,
    gws: Vec<Option<u64>>,
    binds: Vec<(String, usize)>,
    bound_gws: Vec<String>,
}

#[derive(Clone, PartialEq)]
struct BoundListener {
    name: String,
    routes: Vec<Ref>,
    certificates: Vec<Ref>,
}

#[derive(Clone, PartialEq)]
struct BoundGateway {
    listeners: Vec<BoundListener>,
    services: BTreeMap<String, Vec<Ref>>,
}

/// Records a binding error for a parent (the last one per parent wins).
fn set_error(errors: &mut Vec<(Ref, String)>, r: &Ref, e: String) {
    match errors.iter_mut().find(|(x, _)| x == r) {
        Some(slot) => slot.1 = e,
        None => errors.push((r.clone(), e)),
    }
}

/// What a route's inputs make of it: its conditions, the (gateway, listener index)
/// pairs it binds to, and the gateways whose bound entry lists its services.
#[allow(clippy::too_many_arguments)]
fn evaluate_route(
    kind: &str,
    name: &str,
    body: &Map<String, Value>,
    services: &[String],
    protocols: &[Result<String, String>],
    parents: &[Ref],
    gateways: &[(String, &Map<String, Value>)],
    bound_names: &BTreeSet<String>,
) -> (Vec<Cond>, Vec<(String, usize)>, Vec<String>) {
    let mut binds = Vec::new();
    let mut bound_gws = Vec::new();
    let protocol = if kind == HTTP_ROUTE { "http" } else { "tcp" };
    let mut conds = Vec::new();
    for protocol_of in protocols {
        let c = if let Err(e) = protocol_of {
            cond(
                "Accepted",
                "False",
                "InvalidDiscoveryChain",
                e.clone(),
                Ref::empty(),
            )
        } else if protocol_of.as_deref() != Ok(protocol) {
            cond(
                "Accepted",
                "False",
                "InvalidDiscoveryChain",
                "route protocol does not match targeted service protocol",
                Ref::empty(),
            )
        } else {
            cond(
                "Accepted",
                "True",
                "Accepted",
                "route is valid",
                Ref::empty(),
            )
        };
        set(&mut conds, c);
    }
    if services.is_empty() {
        set(
            &mut conds,
            cond(
                "Accepted",
                "False",
                "NoUpstreamServicesTargeted",
                "route must target at least one upstream service",
                Ref::empty(),
            ),
        );
    }
    let route_accepted = accepted(body);
    let mut bound_refs: Vec<Ref> = Vec::new();
    let mut errors: Vec<(Ref, String)> = Vec::new();
    for (gw_name, gw_body) in gateways {
        if !bound_names.contains(gw_name) {
            continue;
        }
        let gw_accepted = accepted(gw_body);
        let listeners = objects(gw_body, "Listeners");
        for p in parents {
            if !(p.kind == API_GATEWAY || p.kind.is_empty()) || &p.name != gw_name {
                continue;
            }
            if listeners.is_empty() {
                set_error(
                    &mut errors,
                    p,
                    "route cannot bind because gateway has no listeners".into(),
                );
                continue;
            }
            let mut did_bind = false;
            for (li, l) in listeners.iter().enumerate() {
                let lname = str_of(l, "Name");
                if !(lname == p.section || p.section.is_empty()) {
                    continue;
                }
                let failure = if !gw_accepted {
                    Some(format!(
                        "failed to bind route to gateway {gw_name}: gateway has not been accepted"
                    ))
                } else if !route_accepted {
                    Some(format!(
                        "failed to bind route to gateway {gw_name}: route has not been accepted"
                    ))
                } else if kind == HTTP_ROUTE && {
                    let h = str_of(l, "Hostname");
                    filtered_hostnames(body, if h.is_empty() { "*" } else { h }).is_empty()
                } {
                    Some(format!("failed to bind route to gateway {gw_name}: listener {lname} is does not have any hostnames that match the route"))
                } else if str_of(l, "Protocol") == protocol {
                    binds.push((gw_name.clone(), li));
                    did_bind = true;
                    None
                } else if !p.section.is_empty() {
                    Some(format!("failed to bind route {name} to gateway {gw_name}: listener {lname} is not a {protocol} listener"))
                } else {
                    None
                };
                if let Some(e) = failure {
                    set_error(&mut errors, p, e);
                }
            }
            if !did_bind && !errors.iter().any(|(r, _)| r == p) {
                set_error(
                    &mut errors,
                    p,
                    format!(
                        "failed to bind route {name} to gateway {gw_name} with listener '{}'",
                        p.section
                    ),
                );
            }
            if did_bind {
                bound_gws.push(gw_name.clone());
                bound_refs.push(p.clone());
            }
        }
    }
    for p in &bound_refs {
        set(
            &mut conds,
            cond(
                "Bound",
                "True",
                "Bound",
                "successfully bound route",
                p.clone(),
            ),
        );
    }
    for (p, e) in &errors {
        set(
            &mut conds,
            cond("Bound", "False", "FailedToBind", e.clone(), p.clone()),
        );
    }
    for p in parents {
        if !bound_refs.contains(p) && !errors.iter().any(|(r, _)| r == p) {
            set(
                &mut conds,
                cond(
                    "Bound",
                    "False",
                    "GatewayNotFound",
                    "gateway was not found",
                    p.clone(),
                ),
            );
        }
    }
    (conds, binds, bound_gws)
}

/// One pass; `true` when it wrote something.
fn reconcile(st: &mut State) -> bool {
    let mut cache = std::mem::take(&mut st.gateways.route_cache);
    let view = View {
        table: &st.config,
        change: None,
    };
    let gateways = entries_of(st, API_GATEWAY);
    let bound_names: BTreeSet<String> = entries_of(st, BOUND_API_GATEWAY)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut routes = entries_of(st, HTTP_ROUTE)
        .into_iter()
        .map(|(n, b)| (HTTP_ROUTE, n, b))
        .collect::<Vec<_>>();
    routes.extend(
        entries_of(st, TCP_ROUTE)
            .into_iter()
            .map(|(n, b)| (TCP_ROUTE, n, b)),
    );

    let mut bound: BTreeMap<String, BoundGateway> = gateways
        .iter()
        .map(|(name, body)| {
            let listeners = objects(body, "Listeners")
                .into_iter()
                .map(|l| BoundListener {
                    name: str_of(l, "Name").to_string(),
                    routes: Vec::new(),
                    certificates: Vec::new(),
                })
                .collect();
            (
                name.clone(),
                BoundGateway {
                    listeners,
                    services: BTreeMap::new(),
                },
            )
        })
        .collect();

    // Routes: acceptance from the discovery chains, binding from the stored statuses.
    // A route whose inputs are those of the last pass reuses its result and needs no
    // status write: that pass found its status current or wrote it, and a write changes
    // the route's ModifyIndex, so its inputs.
    let gateway_inputs: BTreeMap<&str, Option<u64>> = gateways
        .iter()
        .map(|(n, _)| {
            let index = st
                .config
                .get(&(API_GATEWAY.to_string(), n.clone()))
                .map(|s| s.modify_index);
            (n.as_str(), index.filter(|_| bound_names.contains(n)))
        })
        .collect();
    let mut fresh_cache = BTreeMap::new();
    let mut route_status: Vec<(&str, String, Vec<Cond>)> = Vec::new();
    for (kind, name, body) in &routes {
        let key = (kind.to_string(), name.clone());
        let modify_index = st.config.get(&key).map_or(0, |s| s.modify_index);
        let mut result = match cache.remove(&key) {
            Some(c) if c.modify_index == modify_index => c,
            _ => RouteResult {
                modify_index,
                evaluated: false,
                services: route_services(kind, body),
                parents: objects(body, "Parents").into_iter().map(Ref::of).collect(),
                protocols: Vec::new(),
                gws: Vec::new(),
                binds: Vec::new(),
                bound_gws: Vec::new(),
            },
        };
        let protocols: Vec<Result<String, String>> = result
            .services
            .iter()
            .map(|svc| match st.gateways.chain_errors.get(svc) {
                Some(e) => Err(e.clone()),
                None => Ok(view.effective_protocol(svc)),
            })
            .collect();
        let gws: Vec<Option<u64>> = result
            .parents
            .iter()
            .map(|p| gateway_inputs.get(p.name.as_str()).copied().flatten())
            .collect();
        if !(result.evaluated && result.protocols == protocols && result.gws == gws) {
            let (conds, binds, bound_gws) = evaluate_route(
                kind,
                name,
                body,
                &result.services,
                &protocols,
                &result.parents,
                &gateways,
                &bound_names,
            );
            route_status.push((kind, name.clone(), conds));
            result.evaluated = true;
            result.protocols = protocols;
            result.gws = gws;
            result.binds = binds;
            result.bound_gws = bound_gws;
        }
        let route_ref = Ref {
            kind: kind.to_string(),
            name: name.clone(),
            section: String::new(),
        };
        for (gw, li) in &result.binds {
            if let Some(bl) = bound.get_mut(gw).and_then(|b| b.listeners.get_mut(*li)) {
                // Routes are applied one after the other: only this route's own
                // earlier binds can repeat it.
                if bl.routes.last() != Some(&route_ref) {
                    bl.routes.push(route_ref.clone());
                }
            }
        }
        for gw in &result.bound_gws {
            if let Some(b) = bound.get_mut(gw) {
                for svc in &result.services {
                    let refs = b.services.entry(svc.clone()).or_default();
                    if refs.last() != Some(&route_ref) {
                        refs.push(route_ref.clone());
                    }
                }
            }
        }
        fresh_cache.insert(key, result);
    }

    // Gateways: certificates, acceptance, conflicts.
    let mut gateway_status: Vec<(String, Vec<Cond>)> = Vec::new();
    for (gw_name, gw_body) in &gateways {
        let mut conds = Vec::new();
        let listener_ref = |l: &str| Ref {
            kind: API_GATEWAY.into(),
            name: gw_name.clone(),
            section: l.to_string(),
        };
        let listeners = objects(gw_body, "Listeners");
        for l in &listeners {
            set(
                &mut conds,
                cond(
                    "ResolvedRefs",
                    "True",
                    "ResolvedRefs",
                    "resolved refs",
                    listener_ref(str_of(l, "Name")),
                ),
            );
        }
        let mut cert_errors = Vec::new();
        for (li, l) in listeners.iter().enumerate() {
            let certs = obj(l, "TLS")
                .map(|t| objects(t, "Certificates"))
                .unwrap_or_default();
            for c in certs {
                let r = Ref::of(c);
                if st.config.contains_key(&(r.kind.clone(), r.name.clone())) {
                    if let Some(bl) = bound.get_mut(gw_name).and_then(|b| b.listeners.get_mut(li)) {
                        bl.certificates.push(r);
                    }
                } else {
                    cert_errors.push((
                        listener_ref(str_of(l, "Name")),
                        format!("certificate {} not found", go_quote(&r.name)),
                    ));
                }
            }
        }
        for (r, e) in &cert_errors {
            set(
                &mut conds,
                cond(
                    "ResolvedRefs",
                    "False",
                    "InvalidCertificateRef",
                    e.clone(),
                    r.clone(),
                ),
            );
        }
        if cert_errors.is_empty() {
            set(
                &mut conds,
                cond(
                    "Accepted",
                    "True",
                    "Accepted",
                    "gateway is valid",
                    Ref::empty(),
                ),
            );
        } else {
            set(
                &mut conds,
                cond(
                    "Accepted",
                    "False",
                    "InvalidCertificates",
                    "gateway references invalid certificates",
                    Ref::empty(),
                ),
            );
        }
        for (li, l) in listeners.iter().enumerate() {
            let routes = bound
                .get(gw_name)
                .and_then(|b| b.listeners.get(li))
                .map_or(0, |bl| bl.routes.len());
            let r = listener_ref(str_of(l, "Name"));
            let c = if str_of(l, "Protocol") == "tcp" && routes > 1 {
                cond(
                    "Conflicted",
                    "True",
                    "RouteConflict",
                    "TCP-based listeners currently only support binding a single route",
                    r,
                )
            } else {
                cond(
                    "Conflicted",
                    "False",
                    "NoConflict",
                    "listener has no route conflicts",
                    r,
                )
            };
            set(&mut conds, c);
        }
        gateway_status.push((gw_name.clone(), conds));
    }

    let orphans: Vec<String> = bound_names
        .iter()
        .filter(|n| !gateways.iter().any(|(g, _)| g == *n))
        .cloned()
        .collect();

    // Apply: each changed entry is its own write with its own index, as in Raft.
    let mut changed = false;
    st.gateways.route_cache = fresh_cache;
    let now = now_rfc3339();
    for (name, conds) in gateway_status {
        changed |= write_status(st, API_GATEWAY, &name, &conds, &now);
    }
    for (kind, name, conds) in route_status {
        changed |= write_status(st, kind, &name, &conds, &now);
    }
    for (name, b) in bound {
        let key = (BOUND_API_GATEWAY.to_string(), name.clone());
        let stored = st.config.get(&key).map(|s| s.modify_index);
        let cached = st.gateways.bound_cache.get(&name);
        if stored.is_some() && cached.is_some_and(|(i, c)| Some(*i) == stored && *c == b) {
            continue;
        }
        changed |= write_bound(st, &name, bound_json(&name, &b));
        let written = st.config.get(&key).map_or(0, |s| s.modify_index);
        st.gateways.bound_cache.insert(name, (written, b));
    }
    for name in orphans {
        st.gateways.bound_cache.remove(&name);
        st.config
            .remove(&(BOUND_API_GATEWAY.to_string(), name.clone()));
        st.config_index = st.bump();
        st.gateways.status_writes += 1;
        changed = true;
    }
    changed
}

fn bound_json(name: &str, b: &BoundGateway) -> Map<String, Value> {
    let refs = |v: &[Ref]| {
        if v.is_empty() {
            Value::Null
        } else {
            Value::Array(v.iter().map(Ref::json).collect())
        }
    };
    let listeners: Vec<Value> = b
        .listeners
        .iter()
        .map(|l| json!({"Name": l.name, "Routes": refs(&l.routes), "Certificates": refs(&l.certificates)}))
        .collect();
    let services: Map<String, Value> = b
        .services
        .iter()
        .map(|(svc, r)| (svc.clone(), Value::Array(r.iter().map(Ref::json).collect())))
        .collect();
    let mut out = Map::new();
    out.insert("Kind".into(), json!(BOUND_API_GATEWAY));
    out.insert("Name".into(), json!(name));
    out.insert("Listeners".into(), Value::Array(listeners));
    out.insert("Services".into(), Value::Object(services));
    set_hash(&mut out);
    out
}

fn write_status(st: &mut State, kind: &str, name: &str, conds: &[Cond], now: &str) -> bool {
    let key = (kind.to_string(), name.to_string());
    let Some(stored) = st.config.get(&key) else {
        return false;
    };
    if same_as_stored(&stored.body, conds) {
        return false;
    }
    let list: Vec<Value> = conds
        .iter()
        .map(|c| {
            json!({"Type": c.typ, "Status": c.status, "Reason": c.reason, "Message": c.message,
                   "Resource": c.resource.json(), "LastTransitionTime": now})
        })
        .collect();
    let idx = st.bump();
    if let Some(stored) = st.config.get_mut(&key) {
        stored
            .body
            .insert("Status".into(), json!({ "Conditions": list }));
        stored.modify_index = idx;
    }
    st.config_index = idx;
    st.gateways.status_writes += 1;
    true
}

fn write_bound(st: &mut State, name: &str, body: Map<String, Value>) -> bool {
    let key = (BOUND_API_GATEWAY.to_string(), name.to_string());
    if st.config.get(&key).is_some_and(|s| s.body == body) {
        return false;
    }
    let idx = st.bump();
    let create_index = st.config.get(&key).map_or(idx, |s| s.create_index);
    st.config.insert(
        key,
        Stored {
            body,
            create_index,
            modify_index: idx,
        },
    );
    st.config_index = idx;
    st.gateways.status_writes += 1;
    true
}

/// Go's `time.Time` JSON (RFC 3339 with nanoseconds, trailing zeros trimmed), UTC.
fn now_rfc3339() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(since.as_secs(), since.subsec_nanos())
}

fn rfc3339(secs: u64, nanos: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_names_follow_consul_regex() {
        for ok in ["a", "http", "a-b", "a.b", "a1.b-2", "0"] {
            assert!(valid_listener_name(ok), "{ok}");
        }
        for bad in ["", "A", "-a", "a-", "a..b", "a_b", "a/b", ".a", "a."] {
            assert!(!valid_listener_name(bad), "{bad}");
        }
    }

    #[test]
    fn times_render_like_go() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(1_796_083_200, 120_000_000),
            "2026-12-01T00:00:00.12Z"
        );
        assert_eq!(rfc3339(951_782_400, 1), "2000-02-29T00:00:00.000000001Z");
    }

    #[test]
    fn filtered_hostnames_match_listener_hostnames() {
        let route = |hosts: Value| {
            json!({"Hostnames": hosts})
                .as_object()
                .cloned()
                .unwrap_or_default()
        };
        let cases: &[(Value, &str, usize)] = &[
            (json!([]), "*", 1),
            (json!(["a.example.com"]), "*", 1),
            (json!(["a.example.com", "b.other.org"]), "*.example.com", 1),
            // A plain suffix: the apex and badexample.com pass too.
            (json!(["example.com", "badexample.com"]), "*.example.com", 2),
            (json!(["a.example.com"]), "b.example.com", 0),
            (json!(["a.example.com"]), "a.example.com", 1),
        ];
        for (hosts, listener, want) in cases {
            assert_eq!(
                filtered_hostnames(&route(hosts.clone()), listener).len(),
                *want,
                "{hosts} on {listener}"
            );
        }
    }
}
