//! Order-insensitive equality of config entries, as Consul normalises them: the diff's
//! comparator. Consul answers with its own order and its own indexes; an entry that
//! differs only there is not written again.

use serde_json::{Map, Value};

use crate::model::{Body, Kind, CATALOG_INDEX_META};

/// Equality of two entries as Consul sees them: listener/service/host order ignored,
/// `Hosts` null vs [] vs absent alike, protocol case ignored, and what Consul writes
/// itself (`CreateIndex`, `ModifyIndex`, `Hash`, `Status`) and our catalog-index stamp
/// in `Meta` left out.
///
/// Compared in place, without building normalised copies: with thousands of services
/// each copy of an entry is megabytes, and this runs on every reconcile. The result is
/// the same as comparing canonical forms (see the `normalized` test oracle).
pub fn entries_equal(a: &Body, b: &Body) -> bool {
    entry_maps_equal(a, b)
}

/// Equality of two entries of `kind` as Consul sees them (see [`entries_equal`] and
/// [`struct_equal`]).
pub fn equal(kind: Kind, a: &Body, b: &Body) -> bool {
    match kind {
        Kind::IngressGateway | Kind::ServiceDefaults => entries_equal(a, b),
        Kind::ApiGateway | Kind::HttpRoute | Kind::ServiceIntentions => struct_equal(a, b),
    }
}

/// Equality as Consul's Go structs see it, for the API-gateway kinds, which Consul
/// answers with every field of its struct (`"Hostname": ""`, `"TLS": {...}` of zero
/// values, `"Filters": {...}`): a key absent on one side equals a zero value on the
/// other (`null`, `""`, `0`, `false`, `[]`, `{}` or an object of zero values). List order
/// counts (Consul keeps it), except that what Consul writes itself and our stamp are
/// left out as in [`entries_equal`].
pub fn struct_equal(a: &Body, b: &Body) -> bool {
    let skipped = ["CreateIndex", "ModifyIndex", "Hash", "Status", "Meta"];
    let keys = a
        .keys()
        .chain(b.keys())
        .filter(|k| !skipped.contains(&k.as_str()));
    keys.into_iter()
        .all(|key| zero_equal(a.get(key), b.get(key)))
        && meta_equal(a.get("Meta"), b.get("Meta"))
}

fn is_zero(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => !b,
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(items)) => items.is_empty(),
        Some(Value::Object(map)) => map.values().all(|v| is_zero(Some(v))),
    }
}

fn zero_equal(a: Option<&Value>, b: Option<&Value>) -> bool {
    if is_zero(a) && is_zero(b) {
        return true;
    }
    match (a, b) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => a
            .keys()
            .chain(b.keys())
            .all(|key| zero_equal(a.get(key), b.get(key))),
        (Some(Value::Array(a)), Some(Value::Array(b))) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| zero_equal(Some(x), Some(y)))
        }
        (Some(Value::Number(a)), Some(Value::Number(b))) => a.as_f64() == b.as_f64(),
        (a, b) => a == b,
    }
}

/// [`entries_equal`] on JSON values (objects compared as entries).
pub fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => entry_maps_equal(a, b),
        _ => a == b,
    }
}

fn entry_maps_equal(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    // `Listeners` null, [] and absent are alike, as Consul normalises them on write.
    let skipped = [
        "CreateIndex",
        "ModifyIndex",
        "Hash",
        "Status",
        "Listeners",
        "Meta",
    ];
    other_fields_equal(a, b, &skipped)
        && meta_equal(a.get("Meta"), b.get("Meta"))
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

/// `Meta` without our catalog-index stamp: a differing stamp alone is no reason to write.
/// Absent, null and `{}` are alike.
fn meta_equal(a: Option<&Value>, b: Option<&Value>) -> bool {
    fn as_map(meta: Option<&Value>) -> Option<Option<&Map<String, Value>>> {
        match meta {
            None | Some(Value::Null) => Some(None),
            Some(Value::Object(map)) => Some(Some(map)),
            Some(_) => None,
        }
    }
    match (as_map(a), as_map(b)) {
        (Some(x), Some(y)) => {
            let empty = Map::new();
            other_fields_equal(
                x.unwrap_or(&empty),
                y.unwrap_or(&empty),
                &[CATALOG_INDEX_META],
            )
        }
        _ => a == b,
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

/// The longest list [`same_elements`] first compares in order.
const SHORT: usize = 8;

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
    // A short list (a service's hosts) that is equal in order needs no grouping, and
    // that is the usual case: Consul keeps the order we wrote.
    if a.len() <= SHORT && a.iter().zip(b).all(|(x, y)| equal(x, y)) {
        return true;
    }
    // Long lists (services, listeners) are usually sorted already (we write them sorted
    // and Consul keeps the order): sorting is only paid for when they are not.
    let sorted = |items: &'v [Value]| {
        let mut keyed: Vec<(K, &'v Value)> = items.iter().map(|v| (key(v), v)).collect();
        if !keyed.windows(2).all(|pair| pair[0].0 <= pair[1].0) {
            keyed.sort_by(|x, y| x.0.cmp(&y.0));
        }
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
    use serde_json::json;

    fn body(value: Value) -> Body {
        match value {
            Value::Object(map) => map,
            _ => Body::new(),
        }
    }

    #[test]
    fn struct_equality_treats_absent_as_zero() {
        let ours = body(json!({"Kind": "api-gateway", "Name": "edge",
            "Listeners": [{"Name": "http", "Port": 9997, "Protocol": "http"}],
            "Meta": {"managed-by": "ingress-service-monitor"}}));
        let stored = body(json!({"Kind": "api-gateway", "Name": "edge",
            "Listeners": [{"Name": "http", "Port": 9997, "Protocol": "http", "Hostname": "",
                "TLS": {"Certificates": null, "MinVersion": "", "MaxVersion": "", "CipherSuites": null}}],
            "Status": {"Conditions": [{"Type": "Accepted"}]}, "Hash": 123, "ModifyIndex": 9,
            "Meta": {"managed-by": "ingress-service-monitor", CATALOG_INDEX_META: "4"}}));
        assert!(struct_equal(&ours, &stored));
        assert!(struct_equal(&stored, &ours));
        let differing = [
            json!({"Listeners": [{"Name": "http", "Port": 9998, "Protocol": "http"}]}),
            json!({"Listeners": [{"Name": "http", "Port": 9997, "Protocol": "http", "Hostname": "a.example.com"}]}),
            json!({"Listeners": []}),
            json!({"Meta": {"managed-by": "ingress-service-monitor", "owner": "x"}}),
        ];
        for change in differing {
            let mut other = stored.clone();
            other.extend(body(change.clone()));
            assert!(!struct_equal(&ours, &other), "{change}");
        }
    }

    #[test]
    fn route_lists_keep_their_order() {
        let a = body(json!({"Hostnames": ["a", "b"]}));
        let b = body(json!({"Hostnames": ["b", "a"]}));
        assert!(!struct_equal(&a, &b));
        assert!(struct_equal(
            &body(json!({"Hostnames": null})),
            &body(json!({}))
        ));
    }
}
