//! The local agent's service registrations (consul-api.md §4, §10): decoding and
//! validating `PUT /v1/agent/service/register` bodies with Consul's texts and order, and
//! the JSON shapes of `AgentService` and agent checks.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::util::{format_go_duration, go_quote, parse_go_duration};

pub const NODE: &str = "sim-agent";
pub const DATACENTER: &str = "dc1";

/// A service registered through the agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentService {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub port: i64,
    pub address: String,
    pub socket_path: String,
    pub tagged_addresses: Map<String, Value>,
    /// `(Passing, Warning)`.
    pub weights: Option<(i64, i64)>,
    pub enable_tag_override: bool,
    pub proxy: Option<Value>,
    pub connect: Option<Value>,
}

/// A check definition (`structs.CheckType`) as registered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckDef {
    pub check_id: String,
    pub name: String,
    pub status: String,
    pub notes: String,
    pub script_args: Vec<String>,
    pub http: String,
    pub h2ping: String,
    pub header: BTreeMap<String, Vec<String>>,
    pub method: String,
    pub body: String,
    pub disable_redirects: bool,
    pub tcp: String,
    pub udp: String,
    pub grpc: String,
    pub os_service: String,
    pub alias_node: String,
    pub alias_service: String,
    pub docker_container_id: String,
    pub shell: String,
    pub tls_server_name: String,
    pub tls_skip_verify: bool,
    pub interval_ns: i64,
    pub timeout_ns: i64,
    pub ttl_ns: i64,
    pub deregister_after_ns: i64,
    pub output_max_size: i64,
    pub success_before_passing: i64,
    pub failures_before_warning: i64,
    pub failures_before_critical: i64,
    /// Keys that were present, so an empty `{}` check can be told from a real one.
    pub set: bool,
}

impl CheckDef {
    fn is_interval_check(&self) -> bool {
        !self.script_args.is_empty()
            || !self.http.is_empty()
            || !self.tcp.is_empty()
            || !self.udp.is_empty()
            || !self.grpc.is_empty()
            || !self.h2ping.is_empty()
            || !self.os_service.is_empty()
    }

    fn is_alias(&self) -> bool {
        !self.alias_node.is_empty() || !self.alias_service.is_empty()
    }

    /// `CheckType.Validate()`.
    fn validate(&self) -> Result<(), String> {
        let interval_check = self.is_interval_check();
        if self.interval_ns > 0 && self.ttl_ns > 0 {
            return Err("Interval and TTL cannot both be specified".to_string());
        }
        if interval_check && self.interval_ns <= 0 {
            return Err(
                "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks"
                    .to_string(),
            );
        }
        if interval_check && self.is_alias() {
            return Err("Interval cannot be set for Alias checks".to_string());
        }
        if self.is_alias() && self.ttl_ns > 0 {
            return Err("TTL must be not be set for Alias checks".to_string());
        }
        if !interval_check && !self.is_alias() && self.ttl_ns <= 0 {
            return Err("TTL must be > 0 for TTL checks".to_string());
        }
        if self.output_max_size < 0 {
            return Err("MaxOutputMaxSize must be positive".to_string());
        }
        if self.failures_before_warning > self.failures_before_critical {
            return Err(
                "FailuresBeforeWarning can't be higher than FailuresBeforeCritical".to_string(),
            );
        }
        Ok(())
    }

    /// `CheckType.Type()`.
    pub fn check_type(&self) -> &'static str {
        let interval = self.interval_ns > 0;
        if !self.grpc.is_empty() && interval {
            "grpc"
        } else if !self.http.is_empty() && interval {
            "http"
        } else if self.ttl_ns > 0 {
            "ttl"
        } else if !self.tcp.is_empty() && interval {
            "tcp"
        } else if !self.udp.is_empty() && interval {
            "udp"
        } else if self.is_alias() {
            "alias"
        } else if !self.script_args.is_empty() && !self.docker_container_id.is_empty() && interval {
            "docker"
        } else if !self.script_args.is_empty() && interval {
            "script"
        } else if !self.h2ping.is_empty() && interval {
            "h2ping"
        } else if !self.os_service.is_empty() && interval {
            "os_service"
        } else {
            ""
        }
    }
}

/// A check as the agent keeps it: definition plus state.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentCheck {
    pub def: CheckDef,
    pub check_id: String,
    pub name: String,
    pub service_id: String,
    pub status: String,
    pub output: String,
}

/// A decoded and validated registration.
#[derive(Debug, Clone)]
pub struct Registration {
    pub service: AgentService,
    pub checks: Vec<CheckDef>,
}

fn lower_no_underscore(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_error(v: &Value, field: &str, go_type: &str) -> String {
    format!(
        "json: cannot unmarshal {} into Go struct field {field} of type {go_type}",
        json_type(v)
    )
}

fn want_str(v: &Value, field: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        other => Err(type_error(other, field, "string")),
    }
}

fn want_int(v: &Value, field: &str) -> Result<i64, String> {
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| {
            format!("json: cannot unmarshal number {n} into Go struct field {field} of type int")
        }),
        Value::Null => Ok(0),
        other => Err(type_error(other, field, "int")),
    }
}

fn want_bool(v: &Value, field: &str) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Null => Ok(false),
        other => Err(type_error(other, field, "bool")),
    }
}

fn want_strings(v: &Value, field: &str) -> Result<Vec<String>, String> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items.iter().map(|i| want_str(i, field)).collect(),
        other => Err(type_error(other, field, "[]string")),
    }
}

fn want_string_map(v: &Value, field: &str) -> Result<BTreeMap<String, String>, String> {
    match v {
        Value::Null => Ok(BTreeMap::new()),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| Ok((k.clone(), want_str(v, field)?)))
            .collect(),
        other => Err(type_error(other, field, "map[string]string")),
    }
}

/// Durations in checks: strings are Go durations, numbers nanoseconds, anything else ignored.
fn want_duration(v: &Value) -> Result<i64, String> {
    match v {
        Value::String(s) => parse_go_duration(s),
        Value::Number(n) => Ok(n.as_f64().unwrap_or(0.0) as i64),
        _ => Ok(0),
    }
}

/// Decodes one check object strictly (`lib.UnmarshalJSON` disallows unknown fields).
fn decode_check(v: &Value) -> Result<CheckDef, String> {
    let obj = match v {
        Value::Object(o) => o,
        Value::Null => return Ok(CheckDef::default()),
        other => {
            return Err(type_error(
                other,
                "ServiceDefinition.Check",
                "structs.CheckType",
            ))
        }
    };
    let mut c = CheckDef {
        set: !obj.is_empty(),
        ..CheckDef::default()
    };
    let mut args: Vec<String> = Vec::new();
    let mut script_args_snake: Vec<String> = Vec::new();
    let mut dcsa_snake: Option<&Value> = None;
    let mut dcsa: Option<&Value> = None;
    let f = "CheckType";
    for (key, value) in obj {
        // Go's encoding/json matches field names case-insensitively; snake aliases are
        // explicit fields of the decoding struct.
        match key.to_lowercase().as_str() {
            "checkid" => c.check_id = want_str(value, f)?,
            "name" => c.name = want_str(value, f)?,
            "status" => c.status = want_str(value, f)?,
            "notes" => c.notes = want_str(value, f)?,
            "scriptargs" => c.script_args = want_strings(value, f)?,
            "args" => args = want_strings(value, f)?,
            "script_args" => script_args_snake = want_strings(value, f)?,
            "http" => c.http = want_str(value, f)?,
            "h2ping" => c.h2ping = want_str(value, f)?,
            "h2pingusetls" | "h2ping_use_tls" | "grpcusetls" | "grpc_use_tls" | "tcpusetls" => {
                want_bool(value, f)?;
            }
            "header" => {
                c.header = match value {
                    Value::Null => BTreeMap::new(),
                    Value::Object(m) => m
                        .iter()
                        .map(|(k, v)| Ok((k.clone(), want_strings(v, "CheckType.Header")?)))
                        .collect::<Result<_, String>>()?,
                    other => {
                        return Err(type_error(other, "CheckType.Header", "map[string][]string"))
                    }
                }
            }
            "method" => c.method = want_str(value, f)?,
            "body" => c.body = want_str(value, f)?,
            "disableredirects" => c.disable_redirects = want_bool(value, f)?,
            "tcp" => c.tcp = want_str(value, f)?,
            "udp" => c.udp = want_str(value, f)?,
            "grpc" => c.grpc = want_str(value, f)?,
            "osservice" => c.os_service = want_str(value, f)?,
            "aliasnode" => c.alias_node = want_str(value, f)?,
            "aliasservice" => c.alias_service = want_str(value, f)?,
            "dockercontainerid" | "docker_container_id" => {
                let s = want_str(value, f)?;
                if c.docker_container_id.is_empty() {
                    c.docker_container_id = s;
                }
            }
            "shell" => c.shell = want_str(value, f)?,
            "tlsservername" | "tls_server_name" => {
                let s = want_str(value, f)?;
                if c.tls_server_name.is_empty() {
                    c.tls_server_name = s;
                }
            }
            "tlsskipverify" | "tls_skip_verify" => {
                c.tls_skip_verify = c.tls_skip_verify || want_bool(value, f)?
            }
            "interval" => c.interval_ns = want_duration(value)?,
            "timeout" => c.timeout_ns = want_duration(value)?,
            "ttl" => c.ttl_ns = want_duration(value)?,
            "deregistercriticalserviceafter" => dcsa = Some(value),
            "deregister_critical_service_after" => dcsa_snake = Some(value),
            "successbeforepassing" => c.success_before_passing = want_int(value, f)?,
            "failuresbeforewarning" => c.failures_before_warning = want_int(value, f)?,
            "failuresbeforecritical" => c.failures_before_critical = want_int(value, f)?,
            "outputmaxsize" => c.output_max_size = want_int(value, f)?,
            "proxyhttp" | "proxygrpc" | "serviceid" | "service_id" => {
                want_str(value, f)?;
            }
            _ => return Err(format!("json: unknown field {}", go_quote(key))),
        }
    }
    if c.script_args.is_empty() {
        c.script_args = args;
    }
    if c.script_args.is_empty() {
        c.script_args = script_args_snake;
    }
    if let Some(v) = dcsa.or(dcsa_snake) {
        c.deregister_after_ns = want_duration(v)?;
    }
    Ok(c)
}

/// `ipaddr.IsAny`.
fn is_any_address(addr: &str) -> bool {
    matches!(addr, "0.0.0.0" | "::" | "[::]")
}

/// `structs.ValidateServiceMetadata` for typical services.
fn validate_service_meta(meta: &BTreeMap<String, String>) -> Result<(), String> {
    if meta.len() > 64 {
        return Err("Node metadata cannot contain more than 64 key/value pairs".to_string());
    }
    for (key, value) in meta {
        let problem = if key.is_empty() {
            Some("Key cannot be blank".to_string())
        } else if !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            Some("Key contains invalid characters".to_string())
        } else if key.len() > 128 {
            Some("Key is too long (limit: 128 characters)".to_string())
        } else if key.starts_with("consul-") {
            Some("Key prefix 'consul-' is reserved for internal use".to_string())
        } else if value.len() > 512 {
            Some("Value is too long (limit: 512 characters)".to_string())
        } else {
            None
        };
        if let Some(p) = problem {
            return Err(format!(
                "Couldn't load metadata pair ('{key}', '{value}'): {p}"
            ));
        }
    }
    Ok(())
}

/// Decodes and validates a registration body in Consul's order up to (not including) the
/// token resolution. `resolve_token` runs where Consul resolves the token; the remaining
/// checks follow it. `Err((status, body))`.
pub fn parse_register(
    body: &[u8],
    resolve_token: impl FnOnce() -> Result<(), (u16, String)>,
) -> Result<Registration, (u16, String)> {
    let bad = |msg: String| (400u16, msg);
    let decode_failed = |msg: String| (400u16, format!("Request decode failed: {msg}"));
    let raw: Value = if body.iter().all(u8::is_ascii_whitespace) {
        return Err(decode_failed("EOF".to_string()));
    } else {
        serde_json::from_slice(body).map_err(|e| decode_failed(e.to_string()))?
    };
    let Some(obj) = raw.as_object() else {
        return Err(decode_failed(format!(
            "json: cannot unmarshal {} into Go value of type structs.ServiceDefinition",
            json_type(&raw)
        )));
    };
    let mut svc = AgentService {
        id: String::new(),
        name: String::new(),
        kind: String::new(),
        tags: Vec::new(),
        meta: BTreeMap::new(),
        port: 0,
        address: String::new(),
        socket_path: String::new(),
        tagged_addresses: Map::new(),
        weights: None,
        enable_tag_override: false,
        proxy: None,
        connect: None,
    };
    let mut checks = Vec::new();
    let sd = |name: &str| format!("ServiceDefinition.{name}");
    for (key, value) in obj {
        let r: Result<(), String> = (|| {
            match lower_no_underscore(key).as_str() {
                "id" => svc.id = want_str(value, &sd("ID"))?,
                "name" => svc.name = want_str(value, &sd("Name"))?,
                "kind" => svc.kind = want_str(value, &sd("Kind"))?,
                "tags" => svc.tags = want_strings(value, &sd("Tags"))?,
                "meta" => svc.meta = want_string_map(value, &sd("Meta"))?,
                "port" => svc.port = want_int(value, &sd("Port"))?,
                "address" => svc.address = want_str(value, &sd("Address"))?,
                "socketpath" => svc.socket_path = want_str(value, &sd("SocketPath"))?,
                "taggedaddresses" => match value {
                    Value::Object(m) => svc.tagged_addresses = m.clone(),
                    Value::Null => {}
                    other => {
                        return Err(type_error(
                            other,
                            &sd("TaggedAddresses"),
                            "map[string]structs.ServiceAddress",
                        ))
                    }
                },
                "weights" => match value {
                    Value::Object(m) => {
                        let mut passing = 0;
                        let mut warning = 0;
                        for (k, v) in m {
                            match k.to_lowercase().as_str() {
                                "passing" => passing = want_int(v, "Weights.Passing")?,
                                "warning" => warning = want_int(v, "Weights.Warning")?,
                                _ => {}
                            }
                        }
                        svc.weights = Some((passing, warning));
                    }
                    Value::Null => {}
                    other => return Err(type_error(other, &sd("Weights"), "structs.Weights")),
                },
                "enabletagoverride" => {
                    svc.enable_tag_override = want_bool(value, &sd("EnableTagOverride"))?
                }
                "proxy" => svc.proxy = (!value.is_null()).then(|| value.clone()),
                "connect" => svc.connect = (!value.is_null()).then(|| value.clone()),
                "check" => {
                    let c = decode_check(value)?;
                    if c.set {
                        checks.insert(0, c);
                    }
                }
                "checks" => match value {
                    Value::Array(items) => {
                        for item in items {
                            checks.push(decode_check(item)?);
                        }
                    }
                    Value::Null => {}
                    other => return Err(type_error(other, &sd("Checks"), "structs.CheckTypes")),
                },
                // Unknown top-level keys are ignored, as encoding/json does by default.
                _ => {}
            }
            Ok(())
        })();
        r.map_err(decode_failed)?;
    }
    if svc.name.is_empty() {
        return Err(bad("Missing service name".to_string()));
    }
    if is_any_address(&svc.address) {
        return Err(bad("Invalid service address".to_string()));
    }
    resolve_token()?;
    if svc.id.is_empty() {
        svc.id = svc.name.clone();
    }
    if let Some((passing, warning)) = svc.weights {
        if passing < 1 {
            return Err(bad(
                "Invalid Weights: Passing must be greater than 0".to_string()
            ));
        }
        if warning < 0 {
            return Err(bad(
                "Invalid Weights: Warning must be greater or equal than 0".to_string(),
            ));
        }
    }
    validate_service_meta(&svc.meta).map_err(|e| bad(format!("Invalid Service Meta: {e}")))?;
    validate_node_service(&svc).map_err(|e| bad(format!("Validation failed: {e}")))?;
    for c in &checks {
        c.validate()
            .map_err(|e| bad(format!("Invalid check: {e}")))?;
    }
    for c in &checks {
        if !c.status.is_empty() && !matches!(c.status.as_str(), "passing" | "warning" | "critical")
        {
            return Err(bad(
                "Status for checks must 'passing', 'warning', 'critical'".to_string(),
            ));
        }
    }
    Ok(Registration {
        service: svc,
        checks,
    })
}

/// The parts of `NodeService.Validate()` a gateway or proxy registration can trip.
fn validate_node_service(svc: &AgentService) -> Result<(), String> {
    match svc.kind.as_str() {
        "" | "mesh-gateway" | "terminating-gateway" | "ingress-gateway" | "api-gateway" => Ok(()),
        "connect-proxy" => {
            let dest = svc
                .proxy
                .as_ref()
                .and_then(|p| p.as_object())
                .and_then(|p| {
                    p.iter()
                        .find(|(k, _)| lower_no_underscore(k) == "destinationservicename")
                        .and_then(|(_, v)| v.as_str())
                })
                .unwrap_or("");
            if dest.is_empty() {
                return Err(
                    "Proxy.DestinationServiceName must be non-empty for Connect proxy services"
                        .to_string(),
                );
            }
            if svc.port == 0 && svc.socket_path.is_empty() {
                return Err("Port or SocketPath must be set for a Connect proxy".to_string());
            }
            Ok(())
        }
        other => Err(format!("Invalid service kind: {}", go_quote(other))),
    }
}

/// The destination of a connect proxy (its registration needs write on it too).
pub fn proxy_destination(svc: &AgentService) -> Option<String> {
    if svc.kind != "connect-proxy" {
        return None;
    }
    svc.proxy.as_ref()?.as_object()?.iter().find_map(|(k, v)| {
        (lower_no_underscore(k) == "destinationservicename")
            .then(|| v.as_str().map(str::to_string))
            .flatten()
    })
}

fn is_gateway_or_proxy(kind: &str) -> bool {
    matches!(
        kind,
        "connect-proxy"
            | "mesh-gateway"
            | "terminating-gateway"
            | "ingress-gateway"
            | "api-gateway"
    )
}

/// Tagged addresses with the agent's `lan_ipv4`/`wan_ipv4` (or `_ipv6`) defaults.
pub fn tagged_addresses(svc: &AgentService) -> Map<String, Value> {
    let mut out = svc.tagged_addresses.clone();
    if let Ok(ip) = svc.address.parse::<std::net::IpAddr>() {
        let (lan, wan) = if ip.is_ipv4() {
            ("lan_ipv4", "wan_ipv4")
        } else {
            ("lan_ipv6", "wan_ipv6")
        };
        let entry = json!({"Address": svc.address, "Port": svc.port});
        out.entry(lan.to_string()).or_insert_with(|| entry.clone());
        out.entry(wan.to_string()).or_insert(entry);
    }
    out
}

/// `buildAgentService`: the JSON of `GET /v1/agent/service/:id` without `ContentHash`.
pub fn agent_service_json(svc: &AgentService) -> Map<String, Value> {
    let mut out = Map::new();
    if !svc.kind.is_empty() {
        out.insert("Kind".into(), Value::String(svc.kind.clone()));
    }
    out.insert("ID".into(), Value::String(svc.id.clone()));
    out.insert("Service".into(), Value::String(svc.name.clone()));
    out.insert("Tags".into(), json!(svc.tags));
    out.insert("Meta".into(), json!(svc.meta));
    out.insert("Port".into(), json!(svc.port));
    out.insert("Address".into(), Value::String(svc.address.clone()));
    if !svc.socket_path.is_empty() {
        out.insert("SocketPath".into(), Value::String(svc.socket_path.clone()));
    }
    let tagged = tagged_addresses(svc);
    if !tagged.is_empty() {
        out.insert("TaggedAddresses".into(), Value::Object(tagged));
    }
    let (passing, warning) = match svc.weights {
        Some((p, w)) => (if p > 0 { p } else { 1 }, w),
        None => (1, 1),
    };
    out.insert(
        "Weights".into(),
        json!({"Passing": passing, "Warning": warning}),
    );
    out.insert("EnableTagOverride".into(), json!(svc.enable_tag_override));
    if is_gateway_or_proxy(&svc.kind) {
        let mut proxy = svc
            .proxy
            .as_ref()
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        proxy.entry("MeshGateway").or_insert_with(|| json!({}));
        proxy.entry("Expose").or_insert_with(|| json!({}));
        out.insert("Proxy".into(), Value::Object(proxy));
    }
    let native = svc
        .connect
        .as_ref()
        .and_then(Value::as_object)
        .and_then(|c| c.iter().find(|(k, _)| k.eq_ignore_ascii_case("native")))
        .and_then(|(_, v)| v.as_bool())
        .unwrap_or(false);
    if native {
        out.insert("Connect".into(), json!({"Native": true}));
    }
    out.insert("Datacenter".into(), Value::String(DATACENTER.to_string()));
    out
}

/// The opaque content hash of an agent service (hex, like hashstructure's output).
pub fn content_hash(svc_json: &Map<String, Value>) -> String {
    let text = Value::Object(svc_json.clone()).to_string();
    format!("{:x}", crate::util::fnv64(0x0c0ffee, text.as_bytes()))
}

/// The check as `GET /v1/agent/checks` (and the health endpoints) show it.
pub fn check_json(check: &AgentCheck, service: Option<&AgentService>) -> Value {
    let def = &check.def;
    let mut definition = Map::new();
    let mut put_str = |k: &str, v: &str| {
        if !v.is_empty() {
            definition.insert(k.to_string(), Value::String(v.to_string()));
        }
    };
    put_str("HTTP", &def.http);
    put_str("Method", &def.method);
    put_str("Body", &def.body);
    put_str("TLSServerName", &def.tls_server_name);
    put_str("TCP", &def.tcp);
    put_str("UDP", &def.udp);
    put_str("GRPC", &def.grpc);
    put_str("H2PING", &def.h2ping);
    put_str("OSService", &def.os_service);
    put_str("AliasNode", &def.alias_node);
    put_str("AliasService", &def.alias_service);
    put_str("DockerContainerID", &def.docker_container_id);
    put_str("Shell", &def.shell);
    if !def.header.is_empty() {
        definition.insert("Header".into(), json!(def.header));
    }
    if def.tls_skip_verify {
        definition.insert("TLSSkipVerify".into(), Value::Bool(true));
    }
    if def.disable_redirects {
        definition.insert("DisableRedirects".into(), Value::Bool(true));
    }
    if !def.script_args.is_empty() {
        definition.insert("ScriptArgs".into(), json!(def.script_args));
    }
    for (k, ns) in [
        ("Interval", def.interval_ns),
        ("Timeout", def.timeout_ns),
        ("TTL", def.ttl_ns),
        ("DeregisterCriticalServiceAfter", def.deregister_after_ns),
    ] {
        if ns != 0 {
            definition.insert(k.to_string(), Value::String(format_go_duration(ns)));
        }
    }
    if def.output_max_size != 0 {
        definition.insert("OutputMaxSize".into(), json!(def.output_max_size));
    }
    let mut out = json!({
        "Node": NODE,
        "CheckID": check.check_id,
        "Name": check.name,
        "Status": check.status,
        "Notes": def.notes,
        "Output": check.output,
        "ServiceID": check.service_id,
        "ServiceName": service.map(|s| s.name.clone()).unwrap_or_default(),
        "ServiceTags": service.map(|s| s.tags.clone()).unwrap_or_default(),
        "Type": def.check_type(),
        "ExposedPort": 0,
        "Definition": Value::Object(definition),
        "CreateIndex": 0,
        "ModifyIndex": 0,
    });
    if let Some(obj) = out.as_object_mut() {
        if def.interval_ns != 0 {
            obj.insert(
                "Interval".into(),
                Value::String(format_go_duration(def.interval_ns)),
            );
        }
        if def.timeout_ns != 0 {
            obj.insert(
                "Timeout".into(),
                Value::String(format_go_duration(def.timeout_ns)),
            );
        }
    }
    out
}

/// The checks a registration produces: auto IDs and names, initial status (critical
/// unless given), and the previous status/output kept for re-registered IDs.
pub fn build_checks(
    reg: &Registration,
    existing: &BTreeMap<String, AgentCheck>,
) -> Vec<AgentCheck> {
    let total = reg.checks.len();
    reg.checks
        .iter()
        .enumerate()
        .map(|(i, def)| {
            let check_id = if def.check_id.is_empty() {
                if total > 1 {
                    format!("service:{}:{}", reg.service.id, i + 1)
                } else {
                    format!("service:{}", reg.service.id)
                }
            } else {
                def.check_id.clone()
            };
            let name = if def.name.is_empty() {
                format!("Service '{}' check", reg.service.name)
            } else {
                def.name.clone()
            };
            let (status, output) = match existing.get(&check_id) {
                Some(prev) => (prev.status.clone(), prev.output.clone()),
                None if !def.status.is_empty() => (def.status.clone(), String::new()),
                None => ("critical".to_string(), String::new()),
            };
            AgentCheck {
                def: def.clone(),
                check_id,
                name,
                service_id: reg.service.id.clone(),
                status,
                output,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Result<Registration, (u16, String)> {
        parse_register(body.to_string().as_bytes(), || Ok(()))
    }

    #[test]
    fn registrations_decode_case_insensitively_with_defaults() {
        let reg = match parse(json!({"name": "web", "PORT": 80, "tags": ["a"],
            "enable_tag_override": true,
            "check": {"checkid": "c1", "http": "http://127.0.0.1/", "interval": "10s", "Timeout": 2000000000u64,
                      "deregister_critical_service_after": "10m"}}))
        {
            Ok(r) => r,
            Err(e) => panic!("{e:?}"),
        };
        assert_eq!(reg.service.id, "web");
        assert_eq!(reg.service.port, 80);
        assert!(reg.service.enable_tag_override);
        assert_eq!(reg.checks.len(), 1);
        assert_eq!(reg.checks[0].check_id, "c1");
        assert_eq!(reg.checks[0].interval_ns, 10_000_000_000);
        assert_eq!(reg.checks[0].timeout_ns, 2_000_000_000);
        assert_eq!(reg.checks[0].deregister_after_ns, 600_000_000_000);
        assert_eq!(reg.checks[0].check_type(), "http");
    }

    #[test]
    fn registration_errors_use_consul_texts_in_order() {
        let cases: Vec<(Value, &str)> = vec![
            (json!({"Port": 1}), "Missing service name"),
            (json!({"Name": "a", "Address": "0.0.0.0"}), "Invalid service address"),
            (json!({"Name": "a", "Address": "::"}), "Invalid service address"),
            (json!({"Name": "a", "Port": "80"}),
             "Request decode failed: json: cannot unmarshal string into Go struct field ServiceDefinition.Port of type int"),
            (json!({"Name": "a", "Check": {"ID": "x", "TTL": "10s"}}), "Request decode failed: json: unknown field \"ID\""),
            (json!({"Name": "a", "Check": {"HTTP": "http://x", "Interval": "soon"}}),
             "Request decode failed: time: invalid duration \"soon\""),
            (json!({"Name": "a", "Weights": {"Passing": 0}}), "Invalid Weights: Passing must be greater than 0"),
            (json!({"Name": "a", "Meta": {"consul-x": "v"}}),
             "Invalid Service Meta: Couldn't load metadata pair ('consul-x', 'v'): Key prefix 'consul-' is reserved for internal use"),
            (json!({"Name": "a", "Meta": {"bad key": "v"}}), "Key contains invalid characters"),
            (json!({"Name": "a", "Check": {"HTTP": "http://x"}}),
             "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks"),
            (json!({"Name": "a", "Check": {"HTTP": "http://x", "Interval": "10s", "TTL": "10s"}}),
             "Invalid check: Interval and TTL cannot both be specified"),
            (json!({"Name": "a", "Checks": [{"Name": "x"}]}), "Invalid check: TTL must be > 0 for TTL checks"),
            (json!({"Name": "a", "Check": {"TTL": "10s", "Status": "ok"}}),
             "Status for checks must 'passing', 'warning', 'critical'"),
        ];
        for (body, want) in cases {
            match parse(body.clone()) {
                Ok(_) => panic!("{body} accepted"),
                Err((status, text)) => {
                    assert_eq!(status, 400, "{body}");
                    assert!(text.contains(want), "{body}: got {text:?}, want {want:?}");
                }
            }
        }
        // An empty Check object is no check at all.
        assert!(matches!(parse(json!({"Name": "a", "Check": {}})), Ok(r) if r.checks.is_empty()));
    }

    #[test]
    fn checks_get_auto_ids_names_and_keep_status() {
        let reg = match parse(json!({"ID": "web-1", "Name": "web",
            "Check": {"TTL": "10s"}, "Checks": [{"TTL": "10s", "Status": "passing"}]}))
        {
            Ok(r) => r,
            Err(e) => panic!("{e:?}"),
        };
        let built = build_checks(&reg, &BTreeMap::new());
        let ids: Vec<&str> = built.iter().map(|c| c.check_id.as_str()).collect();
        assert_eq!(ids, vec!["service:web-1:1", "service:web-1:2"]);
        assert_eq!(built[0].name, "Service 'web' check");
        assert_eq!(built[0].status, "critical");
        assert_eq!(built[1].status, "passing");
        let mut existing = BTreeMap::new();
        let mut prev = built[0].clone();
        prev.status = "passing".into();
        existing.insert(prev.check_id.clone(), prev);
        let again = build_checks(&reg, &existing);
        assert_eq!(again[0].status, "passing");
        let single = match parse(json!({"ID": "web-1", "Name": "web", "Check": {"TTL": "10s"}})) {
            Ok(r) => r,
            Err(e) => panic!("{e:?}"),
        };
        assert_eq!(
            build_checks(&single, &BTreeMap::new())[0].check_id,
            "service:web-1"
        );
    }

    #[test]
    fn agent_service_json_has_consul_shape() {
        let reg =
            match parse(json!({"ID": "i1", "Name": "ing", "Address": "10.0.0.5", "Port": 9100})) {
                Ok(r) => r,
                Err(e) => panic!("{e:?}"),
            };
        let j = Value::Object(agent_service_json(&reg.service));
        assert_eq!(
            j,
            json!({"ID": "i1", "Service": "ing", "Tags": [], "Meta": {}, "Port": 9100, "Address": "10.0.0.5",
                "TaggedAddresses": {"lan_ipv4": {"Address": "10.0.0.5", "Port": 9100},
                                    "wan_ipv4": {"Address": "10.0.0.5", "Port": 9100}},
                "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": false, "Datacenter": "dc1"})
        );
    }
}
