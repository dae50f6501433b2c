//! `service-intentions` config entries, from Consul's
//! `agent/structs/config_entry_intentions.go` (schema, `normalize(false)`, `validate`)
//! and the L7 check of `agent/consul/state/config_entry.go`
//! (`validateProposedConfigEntryInServiceGraph`): an entry whose sources carry
//! `Permissions` needs an HTTP-like destination protocol, checked when the entry is
//! written and again when a protocol source (service-defaults, proxy-defaults, a
//! router, splitter or resolver) changes.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::entries::{
    f, multierror, obj, objects, str_of, strings, validate_meta, Emit, Entry, View, F, T,
};
use crate::util::go_quote;

pub const SERVICE_INTENTIONS: &str = "service-intentions";

const HEADER_PERMISSION: &[F] = &[
    f("Name", T::Str, Emit::Always),
    f("Present", T::Bool, Emit::NonZero),
    f("Exact", T::Str, Emit::NonZero),
    f("Prefix", T::Str, Emit::NonZero),
    f("Suffix", T::Str, Emit::NonZero),
    f("Regex", T::Str, Emit::NonZero),
    f("Invert", T::Bool, Emit::NonZero),
];

const HTTP_PERMISSION: &[F] = &[
    f("PathExact", T::Str, Emit::NonZero),
    f("PathPrefix", T::Str, Emit::NonZero),
    f("PathRegex", T::Str, Emit::NonZero),
    f("Header", T::ObjList(HEADER_PERMISSION), Emit::NonZero),
    f("Methods", T::StrList, Emit::NonZero),
];

const JWT_CLAIM: &[F] = &[
    f("Path", T::StrList, Emit::NonZero),
    f("Value", T::Str, Emit::NonZero),
];

const JWT_PROVIDER: &[F] = &[
    f("Name", T::Str, Emit::NonZero),
    f("VerifyClaims", T::ObjList(JWT_CLAIM), Emit::NonZero),
];

const JWT_REQUIREMENT: &[F] = &[f("Providers", T::ObjList(JWT_PROVIDER), Emit::NonZero)];

const PERMISSION: &[F] = &[
    f("Action", T::Str, Emit::Always),
    f("HTTP", T::Obj(HTTP_PERMISSION), Emit::IfSet),
    f("JWT", T::Obj(JWT_REQUIREMENT), Emit::IfSet),
];

const SOURCE: &[F] = &[
    f("Name", T::Str, Emit::Always),
    f("Action", T::Str, Emit::NonZero),
    f("Permissions", T::ObjList(PERMISSION), Emit::NonZero),
    f("Precedence", T::Int, Emit::Always),
    f("LegacyID", T::Str, Emit::NonZero),
    f("Type", T::Str, Emit::Always),
    f("Description", T::Str, Emit::NonZero),
    f("LegacyMeta", T::StrMap, Emit::NonZero),
    f("LegacyCreateTime", T::Any, Emit::IfSet),
    f("LegacyUpdateTime", T::Any, Emit::IfSet),
    f("Peer", T::Str, Emit::NonZero),
    f("SamenessGroup", T::Str, Emit::NonZero),
];

const SERVICE_INTENTIONS_FIELDS: &[F] = &[
    f("Kind", T::Str, Emit::Always),
    f("Name", T::Str, Emit::Always),
    f("Sources", T::ObjList(SOURCE), Emit::Always),
    f("JWT", T::Obj(JWT_REQUIREMENT), Emit::IfSet),
    f("Meta", T::StrMap, Emit::NonZero),
    f("Hash", T::Int, Emit::NonZero),
];

pub(crate) fn schema(kind: &str) -> Option<&'static [F]> {
    (kind == SERVICE_INTENTIONS).then_some(SERVICE_INTENTIONS_FIELDS)
}

/// `computeIntentionPrecedence` on CE (the namespace is never a wildcard).
fn precedence(destination: &str, source: &str) -> i64 {
    let max = if destination == "*" { 6 } else { 9 };
    let exact_source = if source == "*" { 1 } else { 2 };
    max - (2 - exact_source)
}

/// `normalize(false)`: default source type, legacy fields cleared (but `LegacyMeta`, so
/// that `validate` can refuse it), methods upper-cased, precedence computed, sources
/// sorted by precedence (stable), highest first.
pub(crate) fn normalize(entry: &mut Entry) {
    if entry.kind != SERVICE_INTENTIONS {
        return;
    }
    let destination = entry.name.clone();
    if let Some(Value::Array(sources)) = entry.body.get_mut("Sources") {
        normalize_sources(&destination, sources);
    }
    crate::api_gateway::set_hash(&mut entry.body);
}

fn normalize_sources(destination: &str, sources: &mut [Value]) {
    for src in sources.iter_mut().filter_map(Value::as_object_mut) {
        if str_of(src, "Type").is_empty() {
            src.insert("Type".into(), json!("consul"));
        }
        for legacy in ["LegacyID", "LegacyCreateTime", "LegacyUpdateTime"] {
            src.remove(legacy);
        }
        let p = precedence(destination, str_of(src, "Name"));
        src.insert("Precedence".into(), json!(p));
        if let Some(Value::Array(perms)) = src.get_mut("Permissions") {
            for perm in perms.iter_mut().filter_map(Value::as_object_mut) {
                let http = perm.get_mut("HTTP").and_then(Value::as_object_mut);
                if let Some(Value::Array(methods)) = http.and_then(|h| h.get_mut("Methods")) {
                    for m in methods.iter_mut() {
                        if let Some(s) = m.as_str() {
                            *m = Value::String(s.to_uppercase());
                        }
                    }
                }
            }
        }
    }
    let key = |v: &Value| {
        v.as_object()
            .and_then(|o| o.get("Precedence"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    sources.sort_by_key(|v| std::cmp::Reverse(key(v)));
}

/// `validateIntentionWildcards` for a name (the namespace is never set on CE).
fn wildcard_error(name: &str) -> Option<&'static str> {
    (name != "*" && name.contains('*'))
        .then_some("Name: wildcard character '*' cannot be used with partial values")
}

fn validate_jwt(jwt: Option<&Map<String, Value>>) -> Result<(), String> {
    let Some(jwt) = jwt else { return Ok(()) };
    let errors: Vec<String> = objects(jwt, "Providers")
        .into_iter()
        .filter(|p| str_of(p, "Name").is_empty())
        .map(|_| "JWT provider name is required".to_string())
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(multierror(&errors))
    }
}

fn validate_permission(i: usize, j: usize, perm: &Map<String, Value>) -> Result<(), String> {
    if !matches!(str_of(perm, "Action"), "allow" | "deny") {
        return Err(format!(
            "Sources[{i}].Permissions[{j}].Action must be set to 'allow' or 'deny'"
        ));
    }
    let prefix = format!("Sources[{i}].Permissions[{j}].HTTP");
    let Some(http) = obj(perm, "HTTP") else {
        return Err(format!("{prefix} is required"));
    };
    let mut path_parts = 0;
    for key in ["PathExact", "PathPrefix"] {
        let v = str_of(http, key);
        if !v.is_empty() {
            path_parts += 1;
            if !v.starts_with('/') {
                return Err(format!(
                    "{prefix}.{key} doesn't start with '/': {}",
                    go_quote(v)
                ));
            }
        }
    }
    if !str_of(http, "PathRegex").is_empty() {
        path_parts += 1;
    }
    if path_parts > 1 {
        return Err(format!(
            "{prefix} should only contain at most one of PathExact, PathPrefix, or PathRegex"
        ));
    }
    let mut parts = path_parts;
    for (k, hdr) in objects(http, "Header").into_iter().enumerate() {
        if str_of(hdr, "Name").is_empty() {
            return Err(format!("{prefix}.Header[{k}] missing required Name field"));
        }
        let present = hdr.get("Present").and_then(Value::as_bool).unwrap_or(false);
        let set = usize::from(present)
            + ["Exact", "Regex", "Prefix", "Suffix"]
                .iter()
                .filter(|key| !str_of(hdr, key).is_empty())
                .count();
        if set != 1 {
            return Err(format!("{prefix}.Header[{k}] should only contain one of Present, Exact, Prefix, Suffix, or Regex"));
        }
        parts += 1;
    }
    let methods = strings(http, "Methods");
    if !methods.is_empty() {
        let mut seen = BTreeSet::new();
        for m in methods {
            if !crate::api_gateway::is_valid_method(m) {
                return Err(format!(
                    "{prefix}.Methods contains an invalid method {}",
                    go_quote(m)
                ));
            }
            if !seen.insert(m) {
                return Err(format!(
                    "{prefix}.Methods contains {} more than once",
                    go_quote(m)
                ));
            }
        }
        parts += 1;
    }
    if parts == 0 {
        return Err(format!("{prefix} should not be empty"));
    }
    validate_jwt(obj(perm, "JWT"))
}

fn validate_intentions(entry: &Entry) -> Result<(), String> {
    let body = &entry.body;
    if entry.name.is_empty() {
        return Err("Name is required".to_string());
    }
    if let Some(e) = wildcard_error(&entry.name) {
        return Err(e.to_string());
    }
    let dest_is_wild = entry.name == "*";
    validate_jwt(obj(body, "JWT"))?;
    validate_meta(body)?;
    let sources = objects(body, "Sources");
    if sources.is_empty() {
        return Err("At least one source is required".to_string());
    }
    let mut seen = BTreeSet::new();
    for (i, src) in sources.into_iter().enumerate() {
        let name = str_of(src, "Name");
        let peer = str_of(src, "Peer");
        let group = str_of(src, "SamenessGroup");
        if name.is_empty() {
            return Err(format!("Sources[{i}].Name is required"));
        }
        if !group.is_empty() {
            // CE's validateSamenessGroup; the trailing space is Consul's.
            return Err(format!(
                "Sources[{i}].SamenessGroup: Sameness groups are a Consul Enterprise feature. "
            ));
        }
        if let Some(e) = wildcard_error(name) {
            return Err(format!("Sources[{i}].{e}"));
        }
        if peer.contains('*') {
            return Err(format!(
                "Sources[{i}].Peer: cannot use wildcard '*' in peer"
            ));
        }
        if str_of(src, "Description").len() > 512 {
            return Err(format!(
                "Sources[{i}].Description exceeds maximum length 512"
            ));
        }
        if obj(src, "LegacyMeta").is_some_and(|m| !m.is_empty()) {
            return Err(format!("Sources[{i}].LegacyMeta must be omitted"));
        }
        let permissions = objects(src, "Permissions");
        let action = str_of(src, "Action");
        if permissions.is_empty() && !matches!(action, "allow" | "deny") {
            return Err(format!(
                "Sources[{i}].Action must be set to 'allow' or 'deny'"
            ));
        }
        if !permissions.is_empty() && !action.is_empty() {
            return Err(format!(
                "Sources[{i}].Action must be omitted if Permissions are specified"
            ));
        }
        if dest_is_wild && !permissions.is_empty() {
            return Err(format!("Sources[{i}].Permissions cannot be specified on intentions with wildcarded destinations"));
        }
        if str_of(src, "Type") != "consul" {
            return Err(format!("Sources[{i}].Type must be set to 'consul'"));
        }
        for (j, perm) in permissions.into_iter().enumerate() {
            validate_permission(i, j, perm)?;
        }
        if !seen.insert((peer, name)) {
            return Err(if peer.is_empty() {
                format!("Sources[{i}] defines {} more than once", go_quote(name))
            } else {
                format!(
                    "Sources[{i}] defines peer({}) {} more than once",
                    go_quote(peer),
                    go_quote(name)
                )
            });
        }
    }
    Ok(())
}

/// `Validate()` of `service-intentions`; `Ok` for every other kind.
pub(crate) fn validate(entry: &Entry) -> Result<(), String> {
    if entry.kind == SERVICE_INTENTIONS {
        validate_intentions(entry)
    } else {
        Ok(())
    }
}

fn has_permissions(body: &Map<String, Value>) -> bool {
    objects(body, "Sources")
        .into_iter()
        .any(|s| !objects(s, "Permissions").is_empty())
}

fn check_l7(view: &View<'_>, name: &str, body: &Map<String, Value>) -> Result<(), String> {
    if name == "*" || !has_permissions(body) {
        return Ok(());
    }
    let protocol = view.effective_protocol(name);
    if matches!(protocol.as_str(), "http" | "http2" | "grpc") {
        return Ok(());
    }
    Err(format!(
        "service {} has protocol {}, which is incompatible with L7 intentions permissions",
        go_quote(name),
        go_quote(&protocol)
    ))
}

/// The L7 part of the graph validation for a proposed write or delete.
pub(crate) fn check_graph(view: &View<'_>) -> Result<(), String> {
    let Some((kind, name, proposed)) = view.change else {
        return Ok(());
    };
    match kind {
        SERVICE_INTENTIONS => match proposed {
            Some(body) => check_l7(view, name, body),
            None => Ok(()),
        },
        // Consul re-checks every intentions entry here; only the destination's own
        // protocol can change, so the simulator checks the ones that can break: the
        // entry of that service, or all of them when proxy-defaults changes (this
        // keeps thousands of writes linear).
        crate::entries::PROXY_DEFAULTS => {
            let all = view
                .table
                .range((SERVICE_INTENTIONS.to_string(), String::new())..)
                .take_while(|((k, _), _)| k == SERVICE_INTENTIONS);
            for ((_, n), stored) in all {
                check_l7(view, n, &stored.body)?;
            }
            Ok(())
        }
        crate::entries::SERVICE_DEFAULTS
        | "service-router"
        | "service-splitter"
        | "service-resolver" => match view.get(SERVICE_INTENTIONS, name) {
            Some(body) => check_l7(view, name, body),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}
