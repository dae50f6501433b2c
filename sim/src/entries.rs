//! Config entries (consul-api.md §5-§7): decoding with Consul's mapstructure rules
//! (case-insensitive keys, snake_case aliases, weak typing, unknown keys rejected),
//! normalisation, `Validate()` with Consul's texts and order, rendering as `GET` returns
//! entries, and the protocol graph checks between ingress gateways and the protocol
//! sources (`service-defaults`, `proxy-defaults`).
//!
//! Entries are kept as canonical JSON objects (canonical key spelling, only the fields the
//! client set); rendering adds the fields Consul always emits.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::acl::{Authz, Resource};
use crate::util::go_quote;
use crate::Access;

pub const INGRESS: &str = "ingress-gateway";
pub const TERMINATING: &str = "terminating-gateway";
pub const SERVICE_DEFAULTS: &str = "service-defaults";
pub const PROXY_DEFAULTS: &str = "proxy-defaults";
pub const GLOBAL: &str = "global";

/// Every kind Consul's `MakeConfigEntry` knows; the ones without a schema here are
/// accepted generically (any keys).
pub const KNOWN_KINDS: &[&str] = &[
    SERVICE_DEFAULTS,
    PROXY_DEFAULTS,
    "service-router",
    "service-splitter",
    "service-resolver",
    INGRESS,
    TERMINATING,
    "service-intentions",
    "mesh",
    "exported-services",
    "sameness-group",
    "api-gateway",
    "bound-api-gateway",
    "inline-certificate",
    "file-system-certificate",
    "http-route",
    "tcp-route",
    "jwt-provider",
    "control-plane-request-limit",
];

pub fn is_known_kind(kind: &str) -> bool {
    KNOWN_KINDS.contains(&kind)
}

/// Field types of the schemas.
#[derive(Clone, Copy)]
pub(crate) enum T {
    Str,
    Int,
    Bool,
    /// `time.Duration`: Go duration string or nanoseconds; rendered as nanoseconds.
    Dur,
    StrList,
    StrMap,
    /// Free-form (`map[string]interface{}` and structures this simulator does not model).
    Any,
    Obj(&'static [F]),
    ObjList(&'static [F]),
}

/// When a field appears in rendered output.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Emit {
    /// No `omitempty` (or a struct value): always present, zero value when unset.
    Always,
    /// `omitempty` on a value: absent when zero/empty.
    NonZero,
    /// `omitempty` on a pointer: present whenever the client set it.
    IfSet,
    /// A pointer without `omitempty`: `null` when unset.
    Null,
}

#[derive(Clone, Copy)]
pub(crate) struct F {
    name: &'static str,
    t: T,
    emit: Emit,
}

pub(crate) const fn f(name: &'static str, t: T, emit: Emit) -> F {
    F { name, t, emit }
}

const SDS: &[F] = &[
    f("ClusterName", T::Str, Emit::NonZero),
    f("CertResource", T::Str, Emit::NonZero),
];

const GATEWAY_TLS: &[F] = &[
    f("Enabled", T::Bool, Emit::Always),
    f("SDS", T::Obj(SDS), Emit::IfSet),
    f("TLSMinVersion", T::Str, Emit::NonZero),
    f("TLSMaxVersion", T::Str, Emit::NonZero),
    f("CipherSuites", T::StrList, Emit::NonZero),
];

const SERVICE_TLS: &[F] = &[f("SDS", T::Obj(SDS), Emit::IfSet)];

const HEADERS: &[F] = &[
    f("Add", T::StrMap, Emit::NonZero),
    f("Set", T::StrMap, Emit::NonZero),
    f("Remove", T::StrList, Emit::NonZero),
];

const PASSIVE_HEALTH_CHECK: &[F] = &[
    f("Interval", T::Dur, Emit::NonZero),
    f("MaxFailures", T::Int, Emit::Always),
    f("EnforcingConsecutive5xx", T::Int, Emit::IfSet),
    f("MaxEjectionPercent", T::Int, Emit::IfSet),
    f("BaseEjectionTime", T::Dur, Emit::IfSet),
];

const INGRESS_SERVICE_CONFIG: &[F] = &[
    f("MaxConnections", T::Int, Emit::Always),
    f("MaxPendingRequests", T::Int, Emit::Always),
    f("MaxConcurrentRequests", T::Int, Emit::Always),
    f(
        "PassiveHealthCheck",
        T::Obj(PASSIVE_HEALTH_CHECK),
        Emit::IfSet,
    ),
];

const INGRESS_SERVICE: &[F] = &[
    f("Name", T::Str, Emit::Always),
    f("Hosts", T::StrList, Emit::Always),
    f("TLS", T::Obj(SERVICE_TLS), Emit::IfSet),
    f("RequestHeaders", T::Obj(HEADERS), Emit::IfSet),
    f("ResponseHeaders", T::Obj(HEADERS), Emit::IfSet),
    f("MaxConnections", T::Int, Emit::NonZero),
    f("MaxPendingRequests", T::Int, Emit::NonZero),
    f("MaxConcurrentRequests", T::Int, Emit::NonZero),
    f(
        "PassiveHealthCheck",
        T::Obj(PASSIVE_HEALTH_CHECK),
        Emit::IfSet,
    ),
    f("Meta", T::StrMap, Emit::NonZero),
];

const INGRESS_LISTENER: &[F] = &[
    f("Port", T::Int, Emit::Always),
    f("Protocol", T::Str, Emit::Always),
    f("TLS", T::Obj(GATEWAY_TLS), Emit::IfSet),
    f("Services", T::ObjList(INGRESS_SERVICE), Emit::Always),
];

const INGRESS_GATEWAY: &[F] = &[
    f("Kind", T::Str, Emit::Always),
    f("Name", T::Str, Emit::Always),
    f("TLS", T::Obj(GATEWAY_TLS), Emit::Always),
    f("Listeners", T::ObjList(INGRESS_LISTENER), Emit::Always),
    f("Defaults", T::Obj(INGRESS_SERVICE_CONFIG), Emit::IfSet),
    f("Meta", T::StrMap, Emit::NonZero),
];

const TRANSPARENT_PROXY: &[F] = &[
    f("OutboundListenerPort", T::Int, Emit::NonZero),
    f("DialedDirectly", T::Bool, Emit::NonZero),
];

const MESH_GATEWAY: &[F] = &[f("Mode", T::Str, Emit::NonZero)];

const EXPOSE: &[F] = &[
    f("Checks", T::Bool, Emit::NonZero),
    f("Paths", T::Any, Emit::NonZero),
];

const ACCESS_LOGS: &[F] = &[
    f("Enabled", T::Bool, Emit::NonZero),
    f("DisableListenerLogs", T::Bool, Emit::NonZero),
    f("Type", T::Str, Emit::NonZero),
    f("Path", T::Str, Emit::NonZero),
    f("JSONFormat", T::Str, Emit::NonZero),
    f("TextFormat", T::Str, Emit::NonZero),
];

const SERVICE_DEFAULTS_FIELDS: &[F] = &[
    f("Kind", T::Str, Emit::Always),
    f("Name", T::Str, Emit::Always),
    f("Protocol", T::Str, Emit::Always),
    f("Mode", T::Str, Emit::NonZero),
    f("TransparentProxy", T::Obj(TRANSPARENT_PROXY), Emit::Always),
    f("MutualTLSMode", T::Str, Emit::NonZero),
    f("MeshGateway", T::Obj(MESH_GATEWAY), Emit::Always),
    f("Expose", T::Obj(EXPOSE), Emit::Always),
    f("ExternalSNI", T::Str, Emit::NonZero),
    f("UpstreamConfig", T::Any, Emit::IfSet),
    f("Destination", T::Any, Emit::IfSet),
    f("MaxInboundConnections", T::Int, Emit::NonZero),
    f("LocalConnectTimeoutMs", T::Int, Emit::NonZero),
    f("LocalRequestTimeoutMs", T::Int, Emit::NonZero),
    f("BalanceInboundConnections", T::Str, Emit::NonZero),
    f("RateLimits", T::Any, Emit::IfSet),
    f("EnvoyExtensions", T::Any, Emit::NonZero),
    f("Meta", T::StrMap, Emit::NonZero),
];

const PROXY_DEFAULTS_FIELDS: &[F] = &[
    f("Kind", T::Str, Emit::Always),
    f("Name", T::Str, Emit::Always),
    f("Config", T::Any, Emit::Always),
    f("Mode", T::Str, Emit::NonZero),
    f("TransparentProxy", T::Obj(TRANSPARENT_PROXY), Emit::Always),
    f("MutualTLSMode", T::Str, Emit::NonZero),
    f("MeshGateway", T::Obj(MESH_GATEWAY), Emit::Always),
    f("Expose", T::Obj(EXPOSE), Emit::Always),
    f("AccessLogs", T::Obj(ACCESS_LOGS), Emit::Always),
    f("EnvoyExtensions", T::Any, Emit::NonZero),
    f("FailoverPolicy", T::Any, Emit::IfSet),
    f("PrioritizeByLocality", T::Any, Emit::IfSet),
    f("Meta", T::StrMap, Emit::NonZero),
];

fn schema(kind: &str) -> Option<&'static [F]> {
    match kind {
        INGRESS => Some(INGRESS_GATEWAY),
        SERVICE_DEFAULTS => Some(SERVICE_DEFAULTS_FIELDS),
        PROXY_DEFAULTS => Some(PROXY_DEFAULTS_FIELDS),
        _ => crate::api_gateway::schema(kind).or_else(|| crate::intentions::schema(kind)),
    }
}

/// Keys the top level may carry that are not entry fields (`validateUnusedKeys`).
const IGNORED_TOP_LEVEL: &[&str] = &["CreateIndex", "ModifyIndex", "Hash"];

/// A decoded (canonical) entry, not yet normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub kind: String,
    pub name: String,
    /// Canonical body including `Kind` and `Name`.
    pub body: Map<String, Value>,
}

/// Field-name matching: mapstructure is case-insensitive and `HookTranslateKeys` maps the
/// snake_case aliases, which this folds into one comparison.
fn norm(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

struct Decoder {
    unused: Vec<String>,
    errors: Vec<String>,
    enterprise: bool,
}

impl Decoder {
    fn object(
        &mut self,
        input: &Map<String, Value>,
        fields: &[F],
        path: &str,
    ) -> Map<String, Value> {
        let mut out = Map::new();
        for (key, value) in input {
            if path.is_empty() && IGNORED_TOP_LEVEL.contains(&key.as_str()) {
                continue;
            }
            let field = fields.iter().find(|f| norm(f.name) == norm(key));
            let Some(field) = field else {
                let nk = norm(key);
                if self.enterprise && (nk == "namespace" || nk == "partition") {
                    let canonical = if nk == "namespace" {
                        "Namespace"
                    } else {
                        "Partition"
                    };
                    if let Some(v) = self.value(value, T::Str, &join(path, canonical)) {
                        out.insert(canonical.to_string(), v);
                    }
                    continue;
                }
                self.unused.push(join(path, key));
                continue;
            };
            if let Some(v) = self.value(value, field.t, &join(path, field.name)) {
                out.insert(field.name.to_string(), v);
            }
        }
        out
    }

    fn expected(&mut self, path: &str, want: &str, v: &Value) {
        self.errors.push(format!(
            "'{path}' expected type '{want}', got unconvertible type '{}', value: '{}'",
            go_type(v),
            v
        ));
    }

    /// One value of type `t`; `None` leaves the field unset.
    fn value(&mut self, v: &Value, t: T, path: &str) -> Option<Value> {
        if v.is_null() {
            return None;
        }
        match t {
            T::Any => Some(v.clone()),
            T::Str => match v {
                Value::String(_) => Some(v.clone()),
                Value::Number(n) => Some(Value::String(n.to_string())),
                Value::Bool(b) => Some(Value::String(if *b { "1" } else { "0" }.to_string())),
                _ => {
                    self.expected(path, "string", v);
                    None
                }
            },
            T::Int => match v {
                Value::Number(n) => match n.as_i64() {
                    Some(i) => Some(Value::from(i)),
                    None => Some(Value::from(n.as_f64().unwrap_or(0.0) as i64)),
                },
                Value::Bool(b) => Some(Value::from(i64::from(*b))),
                Value::String(s) if s.is_empty() => Some(Value::from(0)),
                Value::String(s) => match s.parse::<i64>() {
                    Ok(i) => Some(Value::from(i)),
                    Err(_) => {
                        self.errors.push(format!(
                            "cannot parse '{path}' as int: strconv.ParseInt: parsing {}: invalid syntax",
                            go_quote(s)
                        ));
                        None
                    }
                },
                _ => {
                    self.expected(path, "int", v);
                    None
                }
            },
            T::Bool => match v {
                Value::Bool(_) => Some(v.clone()),
                Value::Number(n) => Some(Value::Bool(n.as_f64().unwrap_or(0.0) != 0.0)),
                Value::String(s) if s.is_empty() => Some(Value::Bool(false)),
                Value::String(s) => match crate::util::parse_go_bool(s) {
                    Some(b) => Some(Value::Bool(b)),
                    None => {
                        self.errors.push(format!(
                            "cannot parse '{path}' as bool: strconv.ParseBool: parsing {}: invalid syntax",
                            go_quote(s)
                        ));
                        None
                    }
                },
                _ => {
                    self.expected(path, "bool", v);
                    None
                }
            },
            T::Dur => match v {
                Value::Number(n) => Some(Value::from(n.as_i64().unwrap_or(0))),
                Value::String(s) => match crate::util::parse_go_duration(s) {
                    Ok(ns) => Some(Value::from(ns)),
                    Err(e) => {
                        self.errors.push(format!("error decoding '{path}': {e}"));
                        None
                    }
                },
                _ => {
                    self.expected(path, "int64", v);
                    None
                }
            },
            T::StrList => match v {
                Value::Array(items) => {
                    let mut out = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        if let Some(s) = self.value(item, T::Str, &format!("{path}[{i}]")) {
                            out.push(s);
                        } else if item.is_null() {
                            out.push(Value::String(String::new()));
                        }
                    }
                    Some(Value::Array(out))
                }
                Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                    let s = self.value(v, T::Str, &format!("{path}[0]"))?;
                    Some(Value::Array(vec![s]))
                }
                _ => {
                    self.expected(path, "[]string", v);
                    None
                }
            },
            T::StrMap => match single_object(v) {
                Some(Some(obj)) => {
                    let mut out = Map::new();
                    for (k, item) in obj {
                        if let Some(s) = self.value(item, T::Str, &format!("{path}[{k}]")) {
                            out.insert(k.clone(), s);
                        }
                    }
                    Some(Value::Object(out))
                }
                Some(None) => None,
                None => {
                    self.expected(path, "map[string]string", v);
                    None
                }
            },
            T::Obj(fields) => match single_object(v) {
                Some(Some(obj)) => Some(Value::Object(self.object(obj, fields, path))),
                Some(None) => None,
                None => {
                    self.errors
                        .push(format!("'{path}' expected a map, got '{}'", kind_name(v)));
                    None
                }
            },
            T::ObjList(fields) => match v {
                Value::Array(items) => {
                    let mut out = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        let item_path = format!("{path}[{i}]");
                        match item {
                            Value::Object(obj) => {
                                out.push(Value::Object(self.object(obj, fields, &item_path)))
                            }
                            Value::Null => out.push(Value::Object(Map::new())),
                            other => self.errors.push(format!(
                                "'{item_path}' expected a map, got '{}'",
                                kind_name(other)
                            )),
                        }
                    }
                    Some(Value::Array(out))
                }
                Value::Object(obj) => Some(Value::Array(vec![Value::Object(self.object(
                    obj,
                    fields,
                    &format!("{path}[0]"),
                ))])),
                _ => {
                    self.errors.push(format!(
                        "'{path}': source data must be an array or slice, got {}",
                        kind_name(v)
                    ));
                    None
                }
            },
        }
    }
}

/// `HookWeakDecodeFromSlice`: a one-element list stands for its element when a map is
/// wanted. `Some(None)` for an empty list (left unset), `None` when not a map at all.
fn single_object(v: &Value) -> Option<Option<&Map<String, Value>>> {
    match v {
        Value::Object(o) => Some(Some(o)),
        Value::Array(items) if items.is_empty() => Some(None),
        Value::Array(items) if items.len() == 1 => items[0].as_object().map(Some),
        _ => None,
    }
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "invalid",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// hashicorp/go-multierror's format.
pub(crate) fn multierror(errors: &[String]) -> String {
    let noun = if errors.len() == 1 {
        "1 error occurred".to_string()
    } else {
        format!("{} errors occurred", errors.len())
    };
    let items: String = errors.iter().map(|e| format!("\t* {e}\n")).collect();
    format!("{noun}:\n{items}\n")
}

/// Decodes a `PUT /v1/config` body. `Err` is the complete 400 body.
pub fn decode(raw: &Value, enterprise: bool) -> Result<Entry, String> {
    let fail = |msg: String| format!("Request decoding failed: {msg}");
    let Some(obj) = raw.as_object() else {
        return Err(fail(format!(
            "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            json_kind(raw)
        )));
    };
    let kind_value = obj.get("Kind").or_else(|| obj.get("kind"));
    let Some(kind_value) = kind_value else {
        return Err(fail(
            "Payload does not contain a kind/Kind key at the top level".to_string(),
        ));
    };
    let Some(kind) = kind_value.as_str() else {
        return Err(fail("Kind value in payload is not a string".to_string()));
    };
    if !is_known_kind(kind) {
        return Err(fail(format!("invalid config entry kind: {kind}")));
    }
    let mut decoder = Decoder {
        unused: Vec::new(),
        errors: Vec::new(),
        enterprise,
    };
    let mut body = match schema(kind) {
        Some(fields) => decoder.object(obj, fields, ""),
        None => {
            // Generic kinds: no schema, keep what was sent minus the bookkeeping keys.
            let mut body = Map::new();
            for (k, v) in obj {
                if k == "kind" || IGNORED_TOP_LEVEL.contains(&k.as_str()) {
                    continue;
                }
                let key = if norm(k) == "name" {
                    "Name".to_string()
                } else {
                    k.clone()
                };
                body.insert(key, v.clone());
            }
            body
        }
    };
    if !decoder.errors.is_empty() {
        let items: Vec<String> = decoder.errors.iter().map(|e| format!("* {e}")).collect();
        return Err(fail(format!(
            "{} error(s) decoding:\n\n{}",
            decoder.errors.len(),
            items.join("\n")
        )));
    }
    let mut unused = decoder.unused;
    unused.retain(|k| k != "kind" && k != "Kind");
    unused.sort();
    if !unused.is_empty() {
        let errors: Vec<String> = unused
            .iter()
            .map(|k| {
                if k.to_lowercase().ends_with("namespace") {
                    format!(
                        "invalid config key {}, namespaces are a consul enterprise feature",
                        go_quote(k)
                    )
                } else {
                    format!("invalid config key {}", go_quote(k))
                }
            })
            .collect();
        return Err(fail(multierror(&errors)));
    }
    body.insert("Kind".to_string(), Value::String(kind.to_string()));
    let name = match body.get("Name") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    body.insert("Name".to_string(), Value::String(name.clone()));
    Ok(Entry {
        kind: kind.to_string(),
        name,
        body,
    })
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

pub(crate) fn str_of<'a>(m: &'a Map<String, Value>, key: &str) -> &'a str {
    m.get(key).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn objects<'a>(m: &'a Map<String, Value>, key: &str) -> Vec<&'a Map<String, Value>> {
    m.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default()
}

pub(crate) fn strings<'a>(m: &'a Map<String, Value>, key: &str) -> Vec<&'a str> {
    m.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// `Normalize()`: forced kind, defaulted names, lower-cased protocols.
pub fn normalize(entry: &mut Entry) {
    match entry.kind.as_str() {
        INGRESS => {
            if let Some(Value::Array(listeners)) = entry.body.get_mut("Listeners") {
                for listener in listeners.iter_mut().filter_map(Value::as_object_mut) {
                    let protocol = str_of(listener, "Protocol").to_lowercase();
                    let protocol = if protocol.is_empty() {
                        "tcp".to_string()
                    } else {
                        protocol
                    };
                    listener.insert("Protocol".to_string(), Value::String(protocol));
                }
            }
        }
        SERVICE_DEFAULTS => {
            let protocol = str_of(&entry.body, "Protocol").to_lowercase();
            if entry.body.contains_key("Protocol") {
                entry
                    .body
                    .insert("Protocol".to_string(), Value::String(protocol));
            }
        }
        PROXY_DEFAULTS if entry.name.is_empty() => entry.name = GLOBAL.to_string(),
        "mesh" if entry.name.is_empty() => entry.name = "mesh".to_string(),
        _ => {
            crate::api_gateway::normalize(entry);
            crate::intentions::normalize(entry);
        }
    }
    entry
        .body
        .insert("Name".to_string(), Value::String(entry.name.clone()));
    entry
        .body
        .insert("Kind".to_string(), Value::String(entry.kind.clone()));
}

pub(crate) fn validate_meta(body: &Map<String, Value>) -> Result<(), String> {
    let Some(meta) = body.get("Meta").and_then(Value::as_object) else {
        return Ok(());
    };
    let mut errors = Vec::new();
    if meta.len() > 64 {
        errors.push("Meta exceeds maximum element count 64".to_string());
    }
    for (k, v) in meta {
        if k.len() > 128 {
            errors.push(format!(
                "Meta key {} exceeds maximum length 128",
                go_quote(k)
            ));
        }
        if v.as_str().map_or(0, str::len) > 512 {
            errors.push(format!(
                "Meta value for key {} exceeds maximum length 512",
                go_quote(k)
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(multierror(&errors))
    }
}

const TLS_VERSIONS: &[&str] = &["TLS_AUTO", "TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3"];

pub(crate) fn validate_tls(tls: Option<&Map<String, Value>>) -> Result<(), String> {
    let Some(tls) = tls else { return Ok(()) };
    let min = str_of(tls, "TLSMinVersion");
    let max = str_of(tls, "TLSMaxVersion");
    let position = |v: &str| TLS_VERSIONS.iter().position(|x| *x == v);
    for v in [min, max] {
        if !v.is_empty() && position(v).is_none() {
            return Err(format!("no matching TLS version found for {v}"));
        }
    }
    if let (Some(lo), Some(hi)) = (position(min), position(max)) {
        // TLS_AUTO compares as "unspecified".
        if lo > 0 && hi > 0 && hi < lo {
            return Err(format!("configuring max TLS version ({max}) less than the configured min TLS version ({min}) is not allowed"));
        }
    }
    if !strings(tls, "CipherSuites").is_empty() && !matches!(min, "TLSv1_0" | "TLSv1_1" | "TLSv1_2")
    {
        return Err("configuring CipherSuites is only supported for connections negotiated with TLS 1.2 or earlier, set TLSMinVersion to 1.2 or lower".to_string());
    }
    Ok(())
}

fn is_http_like(protocol: &str) -> bool {
    matches!(protocol, "http" | "http2" | "grpc")
}

fn headers_set(svc: &Map<String, Value>, key: &str) -> bool {
    svc.get(key).and_then(Value::as_object).is_some_and(|h| {
        ["Add", "Set", "Remove"].iter().any(|k| match h.get(*k) {
            Some(Value::Object(m)) => !m.is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            _ => false,
        })
    })
}

fn sds(tls: Option<&Map<String, Value>>) -> Option<&Map<String, Value>> {
    tls.and_then(|t| t.get("SDS")).and_then(Value::as_object)
}

pub(crate) fn obj<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Map<String, Value>> {
    m.get(key).and_then(Value::as_object)
}

/// The SDS rules of `validateServiceSDS` (rule 13 of §6.2).
fn validate_service_sds(
    gateway: &Map<String, Value>,
    listener: &Map<String, Value>,
    svc: &Map<String, Value>,
    port: i64,
) -> Result<(), String> {
    let gw_sds = sds(obj(gateway, "TLS"));
    let mut gw_cluster = false;
    let mut gw_cert = false;
    if let Some(s) = gw_sds {
        if str_of(s, "ClusterName").is_empty() && !str_of(s, "CertResource").is_empty() {
            return Err("TLS.SDS.ClusterName is required if CertResource is set".to_string());
        }
        gw_cluster = !str_of(s, "ClusterName").is_empty();
        gw_cert = !str_of(s, "CertResource").is_empty();
    }
    let lis_sds = sds(obj(listener, "TLS"));
    let lis_cert = lis_sds.is_some_and(|s| !str_of(s, "CertResource").is_empty());
    let lis_cluster = lis_sds.is_some_and(|s| !str_of(s, "ClusterName").is_empty());
    if gw_cluster && !gw_cert && !lis_cert {
        return Err(format!("TLS.SDS.CertResource is required if ClusterName is set for gateway (listener on port {port})"));
    }
    if lis_cluster && !lis_cert {
        return Err(format!("TLS.SDS.CertResource is required if ClusterName is set for listener (listener on port {port})"));
    }
    if lis_cert && !lis_cluster && !gw_cluster {
        return Err(format!(
            "TLS.SDS.ClusterName is required if CertResource is set (listener on port {port})"
        ));
    }
    let svc_sds = sds(obj(svc, "TLS"));
    let svc_cert = svc_sds.is_some_and(|s| !str_of(s, "CertResource").is_empty());
    let name = str_of(svc, "Name");
    if svc_cert && strings(svc, "Hosts").is_empty() {
        return Err(format!("A service specifying TLS.SDS.CertResource must have at least one item in Hosts (service {} on listener on port {port})", go_quote(name)));
    }
    if svc_cert
        && svc_sds.is_some_and(|s| str_of(s, "ClusterName").is_empty())
        && !lis_cluster
        && !gw_cluster
    {
        return Err(format!("TLS.SDS.ClusterName is required if CertResource is set (service {} on listener on port {port})", go_quote(name)));
    }
    Ok(())
}

fn validate_ingress(body: &Map<String, Value>) -> Result<(), String> {
    validate_meta(body)?;
    validate_tls(obj(body, "TLS"))?;
    let tls_enabled = obj(body, "TLS")
        .and_then(|t| t.get("Enabled"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut ports = std::collections::HashSet::new();
    for listener in objects(body, "Listeners") {
        let port = listener.get("Port").and_then(Value::as_i64).unwrap_or(0);
        let protocol = str_of(listener, "Protocol");
        if !ports.insert(port) {
            return Err(format!("port {port} declared on two listeners"));
        }
        if !matches!(protocol, "tcp" | "http" | "http2" | "grpc") {
            return Err(format!("protocol must be 'tcp', 'http', 'http2', or 'grpc'. '{protocol}' is an unsupported protocol"));
        }
        let services = objects(listener, "Services");
        if services.is_empty() {
            return Err(format!("No service declared for listener with port {port}"));
        }
        if !is_http_like(protocol) && services.len() > 1 {
            return Err(format!("Multiple services per listener are only supported for L7 protocols, 'http', 'grpc' and 'http2' (listener on port {port})"));
        }
        validate_tls(obj(listener, "TLS"))?;
        let mut hosts_seen = std::collections::HashSet::new();
        let mut names_seen = std::collections::HashSet::new();
        for svc in services {
            let name = str_of(svc, "Name");
            let hosts = strings(svc, "Hosts");
            for (key, label) in [
                ("RequestHeaders", "request"),
                ("ResponseHeaders", "response"),
            ] {
                if headers_set(svc, key) && !is_http_like(protocol) {
                    return Err(format!("{label} headers only valid for http, http2 and grpc protocols (service {} on listener on port {port})", go_quote(name)));
                }
            }
            if protocol == "tcp" {
                if name == "*" {
                    return Err(format!("Wildcard service name is only valid for protocol = 'http' (listener on port {port})"));
                }
                if !hosts.is_empty() {
                    return Err(format!("Associating hosts to a service is not supported for the {protocol} protocol (listener on port {port})"));
                }
            }
            if name.is_empty() {
                return Err(format!(
                    "Service name cannot be blank (listener on port {port})"
                ));
            }
            if name == "*" && !hosts.is_empty() {
                return Err(format!("Associating hosts to a wildcard service is not supported (listener on port {port})"));
            }
            if str_of(svc, "Namespace") == "*" {
                return Err(format!("Wildcard namespace is not supported for ingress services (listener on port {port})"));
            }
            if !names_seen.insert((str_of(svc, "Namespace"), name)) {
                return Err(format!(
                    "Service {name} cannot be added multiple times (listener on port {port})"
                ));
            }
            validate_service_sds(body, listener, svc, port)?;
            for host in hosts {
                if !hosts_seen.insert(host) {
                    return Err(format!(
                        "Hosts must be unique within a specific listener (listener on port {port})"
                    ));
                }
                crate::dns::validate_ingress_host(tls_enabled, host)?;
            }
        }
    }
    Ok(())
}

/// `Validate()`; `Err` is the text Consul answers with status 500.
pub fn validate(entry: &Entry) -> Result<(), String> {
    match entry.kind.as_str() {
        INGRESS => validate_ingress(&entry.body),
        SERVICE_DEFAULTS => {
            if entry.name.is_empty() {
                return Err("Name is required".to_string());
            }
            if entry.name == "*" {
                return Err(
                    "service-defaults name must be the name of a service, and not a wildcard"
                        .to_string(),
                );
            }
            validate_meta(&entry.body)
        }
        PROXY_DEFAULTS => {
            if entry.name != GLOBAL {
                return Err(format!(
                    "invalid name ({}), only {} is supported",
                    go_quote(&entry.name),
                    go_quote(GLOBAL)
                ));
            }
            validate_meta(&entry.body)
        }
        _ => {
            crate::api_gateway::validate(entry)?;
            crate::intentions::validate(entry)
        }
    }
}

/// An entry as `GET /v1/config/:kind/:name` returns it.
pub fn render(
    body: &Map<String, Value>,
    kind: &str,
    create_index: u64,
    modify_index: u64,
) -> Value {
    let mut out = match schema(kind) {
        Some(fields) => render_object(fields, body),
        None => body.clone(),
    };
    out.insert("CreateIndex".to_string(), Value::from(create_index));
    out.insert("ModifyIndex".to_string(), Value::from(modify_index));
    Value::Object(out)
}

fn render_object(fields: &[F], m: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for field in fields {
        match m.get(field.name) {
            Some(v) => {
                let rendered = render_value(field.t, v);
                if field.emit == Emit::NonZero && is_zero(&rendered) {
                    continue;
                }
                out.insert(field.name.to_string(), rendered);
            }
            None if field.emit == Emit::Always => {
                out.insert(field.name.to_string(), zero(field.t));
            }
            None if field.emit == Emit::Null => {
                out.insert(field.name.to_string(), Value::Null);
            }
            None => {}
        }
    }
    for extra in ["Namespace", "Partition"] {
        if let Some(v) = m.get(extra) {
            out.insert(extra.to_string(), v.clone());
        }
    }
    out
}

fn render_value(t: T, v: &Value) -> Value {
    match (t, v) {
        (T::Obj(fields), Value::Object(o)) => Value::Object(render_object(fields, o)),
        (T::ObjList(fields), Value::Array(items)) => Value::Array(
            items
                .iter()
                .map(|item| match item {
                    Value::Object(o) => Value::Object(render_object(fields, o)),
                    other => other.clone(),
                })
                .collect(),
        ),
        _ => v.clone(),
    }
}

fn zero(t: T) -> Value {
    match t {
        T::Str => Value::String(String::new()),
        T::Int | T::Dur => Value::from(0),
        T::Bool => Value::Bool(false),
        T::Obj(fields) => Value::Object(render_object(fields, &Map::new())),
        T::StrList | T::StrMap | T::Any | T::ObjList(_) => Value::Null,
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Who may read an entry (`CanRead`); `None` when anyone may.
pub fn read_resource<'a>(kind: &str, name: &'a str) -> Option<Resource<'a>> {
    match kind {
        PROXY_DEFAULTS | "mesh" => None,
        SERVICE_DEFAULTS | "service-router" | "service-splitter" | "service-resolver" | INGRESS
        | TERMINATING | "api-gateway" | "bound-api-gateway" => Some(Resource::Service(name)),
        "service-intentions" => Some(Resource::Intention(name)),
        _ => Some(Resource::Mesh),
    }
}

/// Who may write an entry (`CanWrite`).
pub fn write_resource<'a>(kind: &str, name: &'a str) -> Resource<'a> {
    match kind {
        SERVICE_DEFAULTS | "service-router" | "service-splitter" | "service-resolver" => {
            Resource::Service(name)
        }
        "service-intentions" => Resource::Intention(name),
        "control-plane-request-limit" => Resource::Operator,
        _ => Resource::Mesh,
    }
}

pub fn can_read(authz: &Authz, kind: &str, name: &str) -> bool {
    read_resource(kind, name).is_none_or(|r| authz.can_read(r))
}

pub fn check_read(authz: &Authz, kind: &str, name: &str) -> Result<(), String> {
    match read_resource(kind, name) {
        None => Ok(()),
        Some(r) => authz.require(r, Access::Read),
    }
}

pub fn check_write(authz: &Authz, kind: &str, name: &str) -> Result<(), String> {
    crate::api_gateway::check_controller_only(kind)?;
    authz.require(write_resource(kind, name), Access::Write)
}

/// A stored entry.
#[derive(Debug, Clone)]
pub struct Stored {
    pub body: Map<String, Value>,
    pub create_index: u64,
    pub modify_index: u64,
}

pub type Table = BTreeMap<(String, String), Stored>;

/// The config-entry table as it would be after one proposed change (`Some` = upsert,
/// `None` = delete), for graph validation before the change is applied.
pub struct View<'a> {
    pub table: &'a Table,
    pub change: Option<Change<'a>>,
}

/// `(kind, name, proposed body)`; no body means a delete.
pub type Change<'a> = (&'a str, &'a str, Option<&'a Map<String, Value>>);

impl<'a> View<'a> {
    pub fn get(&self, kind: &str, name: &str) -> Option<&Map<String, Value>> {
        if let Some((k, n, proposed)) = self.change {
            if k == kind && n == name {
                return proposed;
            }
        }
        self.table
            .get(&(kind.to_string(), name.to_string()))
            .map(|s| &s.body)
    }

    /// §7: service-defaults Protocol (empty ⇒ tcp), else proxy-defaults `protocol`, else tcp.
    pub fn effective_protocol(&self, service: &str) -> String {
        if let Some(sd) = self.get(SERVICE_DEFAULTS, service) {
            let p = str_of(sd, "Protocol");
            return if p.is_empty() {
                "tcp".to_string()
            } else {
                p.to_lowercase()
            };
        }
        if let Some(pd) = self.get(PROXY_DEFAULTS, GLOBAL) {
            if let Some(p) = obj(pd, "Config")
                .and_then(|c| c.get("protocol"))
                .and_then(Value::as_str)
            {
                if !p.is_empty() {
                    return p.to_lowercase();
                }
            }
        }
        "tcp".to_string()
    }

    /// Whether the service's discovery chain starts with a router or splitter.
    fn has_l7_chain(&self, service: &str) -> bool {
        self.get("service-router", service).is_some()
            || self.get("service-splitter", service).is_some()
    }

    fn ingress_entries(&self) -> Vec<(&str, &Map<String, Value>)> {
        let mut out: Vec<(&str, &Map<String, Value>)> = self
            .table
            .range((INGRESS.to_string(), String::new())..)
            .take_while(|((k, _), _)| k == INGRESS)
            .map(|((_, n), s)| (n.as_str(), &s.body))
            .collect();
        if let Some((k, n, proposed)) = self.change {
            if k == INGRESS {
                out.retain(|(name, _)| *name != n);
                if let Some(p) = proposed {
                    out.push((n, p));
                }
            }
        }
        out
    }
}

fn mismatch(service: &str, protocol: &str, listener: &str) -> String {
    format!(
        "service {} has protocol {}, which does not match defined listener protocol {}",
        go_quote(service),
        go_quote(protocol),
        go_quote(listener)
    )
}

/// Graph validation of a proposed write or delete (§6.3, §6.4): name clashes between
/// gateway kinds, and listener protocols against the services' effective protocols.
pub fn check_graph(view: &View<'_>) -> Result<(), String> {
    let Some((kind, name, proposed)) = view.change else {
        return Ok(());
    };
    crate::intentions::check_graph(view)?;
    match (kind, proposed) {
        (INGRESS | TERMINATING, Some(body)) => {
            let other = if kind == INGRESS {
                TERMINATING
            } else {
                INGRESS
            };
            if view
                .table
                .contains_key(&(other.to_string(), name.to_string()))
            {
                return Err(format!("cannot create a {} config entry with name {}, a {} config entry with that name already exists", go_quote(kind), go_quote(name), go_quote(other)));
            }
            if kind == INGRESS {
                for listener in objects(body, "Listeners") {
                    let lp = str_of(listener, "Protocol");
                    for svc in objects(listener, "Services") {
                        let s = str_of(svc, "Name");
                        if s == "*" {
                            continue;
                        }
                        let p = view.effective_protocol(s);
                        if p != lp {
                            return Err(mismatch(s, &p, lp));
                        }
                    }
                }
            }
            Ok(())
        }
        (SERVICE_DEFAULTS, _) => check_dependents(view, Some(name)),
        (PROXY_DEFAULTS, _) => check_dependents(view, None),
        ("service-router" | "service-splitter", _) => check_dependents(view, Some(name)),
        _ => Ok(()),
    }
}

/// Re-validates the ingress gateways that reference `service` (all when `None`).
fn check_dependents(view: &View<'_>, service: Option<&str>) -> Result<(), String> {
    for (_, body) in view.ingress_entries() {
        for listener in objects(body, "Listeners") {
            let lp = str_of(listener, "Protocol");
            for svc in objects(listener, "Services") {
                let s = str_of(svc, "Name");
                if s == "*" || service.is_some_and(|want| want != s) {
                    continue;
                }
                let p = view.effective_protocol(s);
                if p == lp {
                    continue;
                }
                // A tcp listener tolerates an L7 service whose chain starts at a resolver.
                if lp == "tcp" && !view.has_l7_chain(s) {
                    continue;
                }
                return Err(mismatch(s, &p, lp));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode_ok(v: Value) -> Entry {
        match decode(&v, false) {
            Ok(e) => e,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn decoding_is_case_insensitive_weakly_typed_and_strict_on_keys() {
        let e = decode_ok(json!({"kind": "ingress-gateway", "name": "edge",
            "listeners": [{"port": "8080", "protocol": "HTTP",
                "services": [{"name": "web", "hosts": ["a.example.com"], "max_connections": 5}]}],
            "CreateIndex": 3, "ModifyIndex": 4}));
        assert_eq!(e.kind, "ingress-gateway");
        assert_eq!(e.name, "edge");
        let rendered = render(&e.body, &e.kind, 1, 2);
        assert_eq!(
            rendered,
            json!({"Kind": "ingress-gateway", "Name": "edge", "TLS": {"Enabled": false},
                "Listeners": [{"Port": 8080, "Protocol": "HTTP",
                    "Services": [{"Name": "web", "Hosts": ["a.example.com"], "MaxConnections": 5}]}],
                "CreateIndex": 1, "ModifyIndex": 2})
        );
        let cases: &[(Value, &str)] = &[
            (json!({"Name": "x"}), "Request decoding failed: Payload does not contain a kind/Kind key at the top level"),
            (json!({"Kind": "nope", "Name": "x"}), "Request decoding failed: invalid config entry kind: nope"),
            (json!({"Kind": "service-defaults", "Name": "x", "Foo": 1}), "invalid config key \"Foo\""),
            (json!({"Kind": "service-defaults", "Name": "x", "Namespace": "default"}),
             "invalid config key \"Namespace\", namespaces are a consul enterprise feature"),
            (json!({"Kind": "service-defaults", "Name": "x", "Partition": "default"}), "invalid config key \"Partition\""),
            (json!({"Kind": "ingress-gateway", "Name": "x", "Listeners": [{"Port": 1, "Bogus": true}]}),
             "invalid config key \"Listeners[0].Bogus\""),
            (json!({"Kind": "ingress-gateway", "Name": "x", "Listeners": [{"Port": "abc"}]}),
             "cannot parse 'Listeners[0].Port' as int"),
        ];
        for (body, want) in cases {
            match decode(body, false) {
                Ok(_) => panic!("{body} decoded"),
                Err(e) => assert!(e.contains(want), "{body}: got {e:?}"),
            }
        }
        assert!(decode(
            &json!({"Kind": "service-defaults", "Name": "x", "Namespace": "default"}),
            true
        )
        .is_ok());
    }

    #[test]
    fn hosts_read_back_null_when_unset_and_protocols_normalise() {
        let mut e = decode_ok(json!({"Kind": "ingress-gateway", "Name": "edge",
            "Listeners": [{"Port": 1, "Services": [{"Name": "db"}]}]}));
        normalize(&mut e);
        let r = render(&e.body, &e.kind, 1, 1);
        assert_eq!(r["Listeners"][0]["Protocol"], json!("tcp"));
        assert_eq!(r["Listeners"][0]["Services"][0]["Hosts"], Value::Null);
        let mut sd =
            decode_ok(json!({"Kind": "service-defaults", "Name": "web", "Protocol": "HTTP"}));
        normalize(&mut sd);
        let r = render(&sd.body, &sd.kind, 5, 6);
        assert_eq!(
            r,
            json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http",
                "TransparentProxy": {}, "MeshGateway": {}, "Expose": {}, "CreateIndex": 5, "ModifyIndex": 6})
        );
        let mut pd = decode_ok(json!({"Kind": "proxy-defaults", "Config": {"protocol": "http"}}));
        normalize(&mut pd);
        assert_eq!(pd.name, "global");
    }

    fn ingress(listeners: Value) -> Entry {
        let mut e =
            decode_ok(json!({"Kind": "ingress-gateway", "Name": "edge", "Listeners": listeners}));
        normalize(&mut e);
        e
    }

    #[test]
    fn ingress_validation_rules_in_order_with_consul_texts() {
        let cases: Vec<(Value, Result<(), &str>)> = vec![
            (json!([]), Ok(())),
            (json!([{"Port": 1, "Protocol": "http", "Services": [{"Name": "a", "Hosts": ["a.example.com", "*.b.example.com"]}, {"Name": "b"}]}]), Ok(())),
            (json!([{"Port": 1, "Services": [{"Name": "a"}]}, {"Port": 1, "Services": [{"Name": "b"}]}]),
             Err("port 1 declared on two listeners")),
            (json!([{"Port": 1, "Protocol": "udp", "Services": [{"Name": "a"}]}]),
             Err("protocol must be 'tcp', 'http', 'http2', or 'grpc'. 'udp' is an unsupported protocol")),
            (json!([{"Port": 2, "Protocol": "http", "Services": []}]), Err("No service declared for listener with port 2")),
            (json!([{"Port": 2, "Protocol": "http"}]), Err("No service declared for listener with port 2")),
            (json!([{"Port": 3, "Protocol": "tcp", "Services": [{"Name": "a"}, {"Name": "b"}]}]),
             Err("Multiple services per listener are only supported for L7 protocols, 'http', 'grpc' and 'http2' (listener on port 3)")),
            (json!([{"Port": 4, "Protocol": "tcp", "Services": [{"Name": "a", "RequestHeaders": {"Add": {"x": "y"}}}]}]),
             Err("request headers only valid for http, http2 and grpc protocols (service \"a\" on listener on port 4)")),
            (json!([{"Port": 4, "Protocol": "tcp", "Services": [{"Name": "a", "ResponseHeaders": {"Remove": ["x"]}}]}]),
             Err("response headers only valid for http, http2 and grpc protocols (service \"a\" on listener on port 4)")),
            (json!([{"Port": 5, "Protocol": "tcp", "Services": [{"Name": "*"}]}]),
             Err("Wildcard service name is only valid for protocol = 'http' (listener on port 5)")),
            (json!([{"Port": 6, "Protocol": "tcp", "Services": [{"Name": "a", "Hosts": ["a.example.com"]}]}]),
             Err("Associating hosts to a service is not supported for the tcp protocol (listener on port 6)")),
            (json!([{"Port": 7, "Protocol": "http", "Services": [{"Name": ""}]}]),
             Err("Service name cannot be blank (listener on port 7)")),
            (json!([{"Port": 8, "Protocol": "http", "Services": [{"Name": "*", "Hosts": ["a.example.com"]}]}]),
             Err("Associating hosts to a wildcard service is not supported (listener on port 8)")),
            (json!([{"Port": 8, "Protocol": "grpc", "Services": [{"Name": "*"}]}]), Ok(())),
            (json!([{"Port": 9, "Protocol": "http", "Services": [{"Name": "a"}, {"Name": "a"}]}]),
             Err("Service a cannot be added multiple times (listener on port 9)")),
            (json!([{"Port": 10, "Protocol": "http", "Services": [{"Name": "a", "TLS": {"SDS": {"CertResource": "c"}}}]}]),
             Err("A service specifying TLS.SDS.CertResource must have at least one item in Hosts (service \"a\" on listener on port 10)")),
            (json!([{"Port": 10, "Protocol": "http", "Services": [{"Name": "a", "Hosts": ["a.example.com"], "TLS": {"SDS": {"CertResource": "c"}}}]}]),
             Err("TLS.SDS.ClusterName is required if CertResource is set (service \"a\" on listener on port 10)")),
            (json!([{"Port": 11, "Protocol": "http", "Services": [{"Name": "a", "Hosts": ["x.example.com"]}, {"Name": "b", "Hosts": ["x.example.com"]}]}]),
             Err("Hosts must be unique within a specific listener (listener on port 11)")),
            (json!([{"Port": 11, "Protocol": "http", "Services": [{"Name": "a", "Hosts": ["x.example.com"]}]},
                    {"Port": 12, "Protocol": "http", "Services": [{"Name": "b", "Hosts": ["x.example.com"]}]}]), Ok(())),
            (json!([{"Port": 13, "Protocol": "http", "Services": [{"Name": "a", "Hosts": ["*"]}]}]), Ok(())),
            (json!([{"Port": 14, "Protocol": "http", "Services": [{"Name": "a", "Hosts": ["a..b"]}]}]),
             Err("Host \"a..b\" must be a valid DNS hostname")),
            (json!([{"Port": 15, "Protocol": "http", "Services": [{"Name": "a", "Hosts": ["example.*"]}]}]),
             Err("Host \"example.*\" is not valid, a wildcard specifier is only allowed as the leftmost label")),
            // The first failing rule wins: the duplicate service precedes the bad host.
            (json!([{"Port": 16, "Protocol": "http", "Services": [{"Name": "a", "Hosts": ["a..b"]}, {"Name": "a"}]}]),
             Err("Host \"a..b\" must be a valid DNS hostname")),
            (json!([{"Port": 17, "Protocol": "http", "Services": [{"Name": "a"}, {"Name": "a", "Hosts": ["a..b"]}]}]),
             Err("Service a cannot be added multiple times (listener on port 17)")),
        ];
        for (listeners, want) in cases {
            let e = ingress(listeners.clone());
            assert_eq!(
                validate(&e),
                want.map_err(str::to_string),
                "listeners {listeners}"
            );
        }
        let mut tls = decode_ok(
            json!({"Kind": "ingress-gateway", "Name": "edge", "TLS": {"Enabled": true},
            "Listeners": [{"Port": 1, "Protocol": "http", "Services": [{"Name": "a", "Hosts": ["*"]}]}]}),
        );
        normalize(&mut tls);
        assert_eq!(
            validate(&tls),
            Err("Host '*' is not allowed when TLS is enabled, all hosts must be valid DNS records to add as a DNSSAN".to_string())
        );
        let mut meta = decode_ok(
            json!({"Kind": "ingress-gateway", "Name": "edge", "Meta": {"k": "v".repeat(513)}}),
        );
        normalize(&mut meta);
        assert!(
            matches!(validate(&meta), Err(e) if e.contains("Meta value for key \"k\" exceeds maximum length 512"))
        );
    }

    #[test]
    fn service_and_proxy_defaults_name_rules() {
        let cases: Vec<(Value, Result<(), &str>)> = vec![
            (json!({"Kind": "service-defaults", "Name": "web"}), Ok(())),
            (json!({"Kind": "service-defaults"}), Err("Name is required")),
            (
                json!({"Kind": "service-defaults", "Name": "*"}),
                Err("service-defaults name must be the name of a service, and not a wildcard"),
            ),
            (json!({"Kind": "proxy-defaults", "Name": "global"}), Ok(())),
            (json!({"Kind": "proxy-defaults"}), Ok(())),
            (
                json!({"Kind": "proxy-defaults", "Name": "x"}),
                Err("invalid name (\"x\"), only \"global\" is supported"),
            ),
        ];
        for (body, want) in cases {
            let mut e = decode_ok(body.clone());
            normalize(&mut e);
            assert_eq!(validate(&e), want.map_err(str::to_string), "{body}");
        }
    }

    fn stored(body: Value) -> Stored {
        let mut e = decode_ok(body);
        normalize(&mut e);
        Stored {
            body: e.body,
            create_index: 1,
            modify_index: 1,
        }
    }

    #[test]
    fn effective_protocol_follows_section_7() {
        let mut table = Table::new();
        let view = View {
            table: &table,
            change: None,
        };
        assert_eq!(view.effective_protocol("web"), "tcp");
        table.insert(
            (PROXY_DEFAULTS.into(), GLOBAL.into()),
            stored(json!({"Kind": "proxy-defaults", "Config": {"protocol": "HTTP2"}})),
        );
        table.insert(
            (SERVICE_DEFAULTS.into(), "web".into()),
            stored(json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"})),
        );
        table.insert(
            (SERVICE_DEFAULTS.into(), "empty".into()),
            stored(json!({"Kind": "service-defaults", "Name": "empty"})),
        );
        let view = View {
            table: &table,
            change: None,
        };
        assert_eq!(view.effective_protocol("web"), "http");
        assert_eq!(view.effective_protocol("empty"), "tcp");
        assert_eq!(view.effective_protocol("other"), "http2");
    }

    #[test]
    fn graph_checks_cover_both_directions() {
        let mut table = Table::new();
        let gw = ingress(
            json!([{"Port": 1, "Protocol": "http", "Services": [{"Name": "web"}]},
                               {"Port": 2, "Protocol": "tcp", "Services": [{"Name": "db"}]}]),
        );
        let view = View {
            table: &table,
            change: Some((INGRESS, "edge", Some(&gw.body))),
        };
        assert_eq!(
            check_graph(&view),
            Err("service \"web\" has protocol \"tcp\", which does not match defined listener protocol \"http\"".to_string())
        );
        table.insert(
            (SERVICE_DEFAULTS.into(), "web".into()),
            stored(json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"})),
        );
        let view = View {
            table: &table,
            change: Some((INGRESS, "edge", Some(&gw.body))),
        };
        assert_eq!(check_graph(&view), Ok(()));
        table.insert(
            (INGRESS.into(), "edge".into()),
            Stored {
                body: gw.body.clone(),
                create_index: 2,
                modify_index: 2,
            },
        );
        // Downgrading or deleting web's service-defaults breaks the http listener.
        let tcp = stored(json!({"Kind": "service-defaults", "Name": "web", "Protocol": "tcp"}));
        for change in [Some(&tcp.body), None] {
            let view = View {
                table: &table,
                change: Some((SERVICE_DEFAULTS, "web", change)),
            };
            assert_eq!(
                check_graph(&view),
                Err("service \"web\" has protocol \"tcp\", which does not match defined listener protocol \"http\"".to_string())
            );
        }
        // db on the tcp listener turning http is tolerated without a router...
        let db_http = stored(json!({"Kind": "service-defaults", "Name": "db", "Protocol": "http"}));
        let view = View {
            table: &table,
            change: Some((SERVICE_DEFAULTS, "db", Some(&db_http.body))),
        };
        assert_eq!(check_graph(&view), Ok(()));
        // ...and proxy-defaults turning everything grpc breaks web (which has its own entry: no).
        let pd = stored(json!({"Kind": "proxy-defaults", "Config": {"protocol": "grpc"}}));
        let view = View {
            table: &table,
            change: Some((PROXY_DEFAULTS, GLOBAL, Some(&pd.body))),
        };
        assert_eq!(check_graph(&view), Ok(()));
        // Name clash with a terminating gateway.
        table.insert(
            (TERMINATING.into(), "edge2".into()),
            stored(json!({"Kind": "terminating-gateway", "Name": "edge2"})),
        );
        let view = View {
            table: &table,
            change: Some((INGRESS, "edge2", Some(&gw.body))),
        };
        assert_eq!(
            check_graph(&view),
            Err("cannot create a \"ingress-gateway\" config entry with name \"edge2\", a \"terminating-gateway\" config entry with that name already exists".to_string())
        );
    }
}
