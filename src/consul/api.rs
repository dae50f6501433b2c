//! The Consul endpoints the daemon uses, in one place: paths, request bodies, and what
//! their answers decode to. Everything above this module speaks in model types
//! ([`EntryKey`], [`Body`], [`Registration`]); only this module knows URLs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use serde_json::Value;

use crate::consul::client::{
    percent_encode, ApiPath, Connection, ConsulError, ErrorKind, Response, REQUEST_TIMEOUT,
};
use crate::consul::wire;
use crate::model::{
    modify_index, Body, Catalog, EntryKey, EntryList, Intentions, IntentionsList, Kind,
    Registration, GATEWAY_META,
};

// Each path names the template it is counted under in `ism_consul_requests_total`.
const ENTRY: &str = "/v1/config/{kind}/{name}";
pub const SERVICE_DEFAULTS_PATH: &ApiPath =
    &ApiPath::fixed("/v1/config/{kind}", "/v1/config/service-defaults");
pub const PROXY_DEFAULTS_PATH: &ApiPath =
    &ApiPath::fixed(ENTRY, "/v1/config/proxy-defaults/global");

/// `METHOD /path`, without the query string: how errors and logs name an endpoint (a
/// query may carry a filter, never the token, but it is noise).
pub fn endpoint(method: &Method, path_and_query: &str) -> String {
    let path = path_and_query
        .split_once('?')
        .map_or(path_and_query, |(path, _)| path);
    format!("{method} {path}")
}

/// A body that is not what `endpoint` returns.
pub fn decode_error(endpoint: &str, message: String) -> ConsulError {
    ConsulError {
        endpoint: endpoint.to_owned(),
        kind: ErrorKind::Decode(message),
    }
}

/// A duration as Go's `time.ParseDuration` reads it (Consul's `wait`), also used in
/// messages: whole seconds as `10s`, anything else in milliseconds (at least 1).
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis().max(1))
    }
}

/// The catalog watch: only typical services (sidecar proxies copy their parent's tags and
/// must never be exposed), and not our own ingress service, whose tags are every exposed
/// tag again (a third of the catalog's bytes at 10,000 services).
pub fn catalog_path(ingress_service_name: &str) -> ApiPath {
    let filter = format!("ServiceKind == \"\" and ServiceName != \"{ingress_service_name}\"");
    ApiPath::new(
        "/v1/catalog/services",
        format!("/v1/catalog/services?filter={}", percent_encode(&filter)),
    )
}

/// A catalog query with a filter no Consul can parse: Consul that honours `filter=` on
/// `/v1/catalog/services` refuses it (400 or 500); Consul before filtering reached that
/// endpoint (1.8 among them) ignores it and answers 200 with every service.
pub const CATALOG_FILTER_PROBE: &str = "/v1/catalog/services?filter=%3D%3D";

/// Where the catalog is watched when `filter=` is ignored: the UI's service summary,
/// which names each service's kind (and is blocking like the catalog).
pub const UI_SERVICES_PATH: &str = "/v1/internal/ui/services";

/// Whether this Consul honours `filter=` on `/v1/catalog/services`.
pub async fn catalog_filter_honoured(connection: &mut Connection) -> Result<bool, ConsulError> {
    let probe = ApiPath::fixed("/v1/catalog/services", CATALOG_FILTER_PROBE);
    let response = connection.get(probe, REQUEST_TIMEOUT).await;
    match response {
        Ok(response) => Ok(response.status != 200),
        // A refused filter is a 400/500 status: the filter was read.
        Err(ConsulError {
            kind: ErrorKind::Status {
                code: 400 | 500, ..
            },
            ..
        }) => Ok(true),
        Err(err) => Err(err),
    }
}

/// `GET /v1/internal/ui/services` -> the catalog as [`decode_catalog`] makes it: typical
/// services only (no sidecar proxies, no gateways), never `own` (our ingress service),
/// tags selected by `prefix` and stripped.
pub fn decode_ui_services(response: &Response, prefix: &str, own: &str) -> Result<Catalog, String> {
    #[derive(serde::Deserialize)]
    struct Summary {
        #[serde(rename = "Kind", default)]
        kind: Option<String>,
        #[serde(rename = "Name")]
        name: String,
        #[serde(rename = "Tags", default)]
        tags: Option<Vec<String>>,
    }
    let services: Vec<Summary> =
        serde_json::from_slice(expect_200(response)?).map_err(|e| e.to_string())?;
    let mut catalog = Catalog::new();
    for service in services {
        if service.kind.as_deref().is_some_and(|k| !k.is_empty()) || service.name == own {
            continue;
        }
        let mut selected: Vec<String> = Vec::new();
        for tag in service.tags.iter().flatten() {
            if let Some(stripped) = crate::tags::strip_prefix(tag, prefix) {
                if !selected.iter().any(|t| t == stripped) {
                    selected.push(stripped.to_owned());
                }
            }
        }
        if !selected.is_empty() {
            catalog.entry(service.name).or_default().extend(selected);
        }
    }
    Ok(catalog)
}

/// `/v1/config/<kind>/<name>`. Names are checked at start (`config::check_path_name`)
/// or come from Consul's own catalog, so they need no escaping.
pub fn entry_path(key: &EntryKey) -> ApiPath {
    ApiPath::new(ENTRY, format!("/v1/config/{}/{}", key.kind, key.name))
}

fn expect_200(response: &Response) -> Result<&[u8], String> {
    if response.status == 200 {
        Ok(&response.body)
    } else {
        Err(format!("unexpected status {}", response.status))
    }
}

pub fn decode_catalog(response: &Response, prefix: &str) -> Result<Catalog, String> {
    wire::decode_catalog(expect_200(response)?, prefix).map_err(|e| e.to_string())
}

pub fn decode_service_defaults(response: &Response) -> Result<BTreeMap<String, String>, String> {
    wire::decode_service_defaults(expect_200(response)?).map_err(|e| e.to_string())
}

pub fn decode_proxy_defaults(response: &Response) -> Result<Option<String>, String> {
    if response.status == 404 {
        return Ok(None);
    }
    wire::decode_proxy_defaults(expect_200(response)?).map_err(|e| e.to_string())
}

/// One config entry (404: it does not exist).
pub fn decode_entry(response: &Response) -> Result<Option<Body>, String> {
    if response.status == 404 {
        return Ok(None);
    }
    wire::decode_entry(expect_200(response)?)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// `/v1/config/<kind>`: every entry of a kind (blocking list).
pub fn list_path(kind: Kind) -> ApiPath {
    ApiPath::new("/v1/config/{kind}", format!("/v1/config/{kind}"))
}

/// `GET /v1/config/http-route` -> the routes that concern `gateway`: those whose Meta
/// says we wrote them for it, and any whose name we would use (`<gateway>-...`), so a
/// foreign route under such a name is seen and left alone. Others are dropped while
/// decoding. Routes unchanged since `previous` are shared with it (see [`decode_list`]).
pub fn decode_routes(
    response: &Response,
    gateway: &str,
    previous: Option<&EntryList>,
) -> Result<EntryList, String> {
    let prefix = format!("{gateway}-");
    decode_list(response, previous, &mut |entry| {
        let ours = entry
            .get("Meta")
            .and_then(|meta| meta.get(GATEWAY_META))
            .and_then(Value::as_str)
            == Some(gateway);
        let named_like_ours = entry
            .get("Name")
            .and_then(Value::as_str)
            .is_some_and(|name| name.starts_with(&prefix));
        ours || named_like_ours
    })
}

/// `GET /v1/config/service-intentions` -> what decides the plan of every entry, by
/// destination name (see [`Intentions`]: the entries themselves are not kept).
pub fn decode_intentions(response: &Response, gateway: &str) -> Result<IntentionsList, String> {
    let decoded = wire::decode_entry_list(expect_200(response)?, &mut |entry| {
        let name = entry.get("Name")?.as_str()?.to_owned();
        Some((name, Intentions::of(&entry, gateway)))
    })
    .map_err(|e| e.to_string())?;
    // Built again in one go: a map filled one insert at a time in key order leaves its
    // nodes about half full, one built from a sorted list fills them (a third less to
    // hold, for thousands of entries that stay until the next answer).
    Ok(decoded.into_iter().collect())
}

/// A list of config entries -> those `wanted` keeps, by name, each [`compact`]ed. An
/// entry whose `CreateIndex` and `ModifyIndex` are those of the entry of that name in
/// `previous` is that entry again (Consul bumps `ModifyIndex` on every write, its
/// controller's Status included): it is shared, not kept a second time.
fn decode_list(
    response: &Response,
    previous: Option<&EntryList>,
    wanted: &mut dyn FnMut(&Body) -> bool,
) -> Result<EntryList, String> {
    let indexes = |entry: &Body| {
        let create = entry.get("CreateIndex").and_then(Value::as_u64);
        modify_index(entry).zip(create)
    };
    wire::decode_entry_list(expect_200(response)?, &mut |entry| {
        if !wanted(&entry) {
            return None;
        }
        let name = entry.get("Name")?.as_str()?.to_owned();
        let same = previous.and_then(|list| list.get(&name)).filter(|kept| {
            let kept_indexes = indexes(kept);
            kept_indexes.is_some() && kept_indexes == indexes(&entry)
        });
        let entry = match same {
            Some(kept) => Arc::clone(kept),
            None => Arc::new(compact(entry)),
        };
        Some((name, entry))
    })
    .map_err(|e| e.to_string())
}

/// An entry of the API-gateway kinds or intentions as the daemon keeps it: Consul renders
/// every field of its Go structs, most of them zero (`"Hostname": ""`, `"Filters":
/// {"Headers": null, ...}`); those are left out (the comparison of these kinds treats
/// absent as zero, and a write without them means the same to Consul), and of `Status`
/// only the conditions that report a problem are kept, with their type, reason and
/// message. At thousands of routes this is most of what a decoded list costs.
pub fn compact(mut entry: Body) -> Body {
    if let Some(status) = entry.remove("Status") {
        let problems: Vec<Value> = status
            .get("Conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| c.get("Status").and_then(Value::as_str) == Some("False"))
            .map(|c| {
                let field = |k: &str| c.get(k).cloned().unwrap_or(Value::Null);
                Value::Object(crate::model::exact_map(vec![
                    ("Type".into(), field("Type")),
                    ("Status".into(), "False".into()),
                    ("Reason".into(), field("Reason")),
                    ("Message".into(), field("Message")),
                ]))
            })
            .collect();
        if !problems.is_empty() {
            let conditions =
                crate::model::exact_map(vec![("Conditions".into(), Value::Array(problems))]);
            entry.insert("Status".into(), Value::Object(conditions));
        }
    }
    without_zeros(entry)
}

fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
    }
}

/// `map` without its zero-valued keys, depth first (list elements keep their place),
/// rebuilt at its new size rather than shrunk in place.
fn without_zeros(map: Body) -> Body {
    let kept: Vec<(String, Value)> = map
        .into_iter()
        .map(|(key, value)| (key, pruned(value)))
        .filter(|(_, value)| !is_zero(value))
        .collect();
    crate::model::exact_map(kept)
}

fn pruned(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(without_zeros(map)),
        Value::Array(items) => Value::Array(items.into_iter().map(pruned).collect()),
        other => other,
    }
}

/// One entry of the API-gateway kinds, kept as [`compact`] makes it (404: absent).
pub fn decode_compact_entry(response: &Response) -> Result<Option<Body>, String> {
    decode_entry(response).map(|entry| entry.map(compact))
}

/// Body of `PUT /v1/agent/service/register?replace-existing-checks`:
/// ID, Name, Port, Address (when set), Tags, Meta, and a Check with CheckID
/// `<id>:ready`, Name, HTTP, Interval "10s", Timeout "2s".
pub fn registration_json(registration: &Registration) -> Value {
    serde_json::to_value(RegistrationBody::of(registration)).unwrap_or(Value::Null)
}

/// The registration as the agent reads it, borrowed: serialised straight from the
/// [`Registration`], since at 10,000 services it carries thousands of tags, written on
/// every change.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct RegistrationBody<'r> {
    #[serde(rename = "ID")]
    id: &'r str,
    name: &'r str,
    port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<&'r str>,
    tags: &'r [String],
    meta: &'r BTreeMap<String, String>,
    check: RegistrationCheck<'r>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct RegistrationCheck<'r> {
    #[serde(rename = "CheckID")]
    check_id: String,
    name: &'static str,
    #[serde(rename = "HTTP")]
    http: &'r str,
    interval: &'static str,
    timeout: &'static str,
}

impl<'r> RegistrationBody<'r> {
    fn of(registration: &'r Registration) -> Self {
        RegistrationBody {
            id: &registration.id,
            name: &registration.name,
            port: registration.port,
            address: registration.address.as_deref(),
            tags: &registration.tags,
            meta: &registration.meta,
            check: RegistrationCheck {
                check_id: format!("{}:ready", registration.id),
                name: "Ingress gateway ready",
                http: &registration.check_url,
                interval: "10s",
                timeout: "2s",
            },
        }
    }
}

/// Whether the agent's copy (`GET /v1/agent/service/<id>`) already says the same:
/// ID, Service, Port, Address, Tags (as sets) and Meta.
pub fn matches_agent(registration: &Registration, agent: &Value) -> bool {
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
    let our_tags: BTreeSet<&str> = registration.tags.iter().map(String::as_str).collect();
    let our_meta: BTreeMap<&str, &str> = registration
        .meta
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    text("ID") == Some(registration.id.as_str())
        && text("Service") == Some(registration.name.as_str())
        && agent.get("Port").and_then(Value::as_u64) == Some(u64::from(registration.port))
        // The agent reports "" for a service registered without an address.
        && text("Address").unwrap_or("") == registration.address.as_deref().unwrap_or("")
        && tags == Some(our_tags)
        && meta == Some(our_meta)
}

/// A GET decoded by `decode`; a body that does not decode is an error of that endpoint.
pub async fn read<T>(
    connection: &mut Connection,
    path: &ApiPath,
    decode: impl Fn(&Response) -> Result<T, String>,
) -> Result<T, ConsulError> {
    let response = connection.get(path, REQUEST_TIMEOUT).await?;
    decode(&response)
        .map_err(|message| decode_error(&endpoint(&Method::GET, path.as_str()), message))
}

/// `GET /v1/config/<kind>/<name>` (None: it does not exist).
pub async fn read_entry(
    connection: &mut Connection,
    key: &EntryKey,
) -> Result<Option<Body>, ConsulError> {
    let entry = read(connection, &entry_path(key), decode_entry).await?;
    Ok(match key.kind {
        Kind::ApiGateway | Kind::HttpRoute | Kind::ServiceIntentions => entry.map(compact),
        Kind::IngressGateway | Kind::ServiceDefaults => entry,
    })
}

/// Consul's `true` / `false` answer to a CAS write or delete.
fn decode_cas_answer(response: &Response, endpoint: &str) -> Result<bool, ConsulError> {
    match serde_json::from_slice::<bool>(&response.body) {
        Ok(done) if response.status == 200 => Ok(done),
        _ => Err(decode_error(
            endpoint,
            format!(
                "expected true or false, got status {} {:?}",
                response.status,
                String::from_utf8_lossy(&response.body)
            ),
        )),
    }
}

/// `PUT /v1/config?cas=N`: Ok(true) written (or already identical), Ok(false) CAS miss
/// (`cas=0`: the entry exists already).
pub async fn put_entry(
    connection: &mut Connection,
    key: &EntryKey,
    body: &Body,
    cas: u64,
) -> Result<bool, ConsulError> {
    let text = serde_json::to_vec(body)
        .map_err(|e| decode_error("PUT /v1/config", format!("cannot encode the entry: {e}")))?;
    let response = connection
        .put(
            ApiPath::new("/v1/config", format!("/v1/config?cas={cas}")),
            Bytes::from(text),
        )
        .await
        .map_err(|err| name_permission(err, || write_permission(key)))?;
    decode_cas_answer(&response, "PUT /v1/config")
}

/// The permission writing (or deleting) `key` needs.
pub fn write_permission(key: &EntryKey) -> String {
    match key.kind {
        Kind::ServiceDefaults => format!("service:write on {:?}", key.name),
        Kind::ServiceIntentions => format!("intention:write on {:?}", key.name),
        Kind::IngressGateway | Kind::ApiGateway | Kind::HttpRoute => {
            "mesh:write (operator:write on Consul without the mesh ACL resource, such as 1.8)"
                .into()
        }
    }
}

/// A 403 whose text does not say what was missing (Consul 1.8 answers a bare `Permission
/// denied`) gains the permission this call needs: the daemon knows which call it made.
fn name_permission(err: ConsulError, needs: impl FnOnce() -> String) -> ConsulError {
    match err.kind {
        ErrorKind::Status { code: 403, message }
            if !message.contains("lacks permission")
                && !message.contains("ACL not found")
                && !message.contains("Access is restricted") =>
        {
            ConsulError {
                endpoint: err.endpoint,
                kind: ErrorKind::Status {
                    code: 403,
                    message: format!("{message} (this call needs {})", needs()),
                },
            }
        }
        kind => ConsulError {
            endpoint: err.endpoint,
            kind,
        },
    }
}

/// `DELETE /v1/config/<kind>/<name>?cas=N`: Ok(true) deleted, Ok(false) CAS miss.
pub async fn delete_entry(
    connection: &mut Connection,
    key: &EntryKey,
    cas: u64,
) -> Result<bool, ConsulError> {
    let path = entry_path(key);
    let response = connection
        .request(
            Method::DELETE,
            ApiPath::new(ENTRY, format!("{}?cas={cas}", path.as_str())),
            None,
            REQUEST_TIMEOUT,
        )
        .await
        .map_err(|err| name_permission(err, || write_permission(key)))?;
    decode_cas_answer(&response, &endpoint(&Method::DELETE, path.as_str()))
}

/// `PUT /v1/agent/service/register?replace-existing-checks`.
pub async fn register(
    connection: &mut Connection,
    registration: &Registration,
) -> Result<(), ConsulError> {
    let body = serde_json::to_vec(&RegistrationBody::of(registration))
        .map_err(|e| decode_error("PUT /v1/agent/service/register", e.to_string()))?;
    let body = Bytes::from(body);
    connection
        .put(
            ApiPath::fixed(
                "/v1/agent/service/register",
                "/v1/agent/service/register?replace-existing-checks",
            ),
            body,
        )
        .await
        .map(drop)
        .map_err(|err| name_permission(err, || format!("service:write on {:?}", registration.name)))
}

/// `GET /v1/agent/service/<id>`: the agent's copy (None: it has none; a body that is not
/// JSON counts as a copy that differs).
pub async fn agent_service(
    connection: &mut Connection,
    id: &str,
) -> Result<Option<Value>, ConsulError> {
    let response = connection
        .get(
            ApiPath::new("/v1/agent/service/{id}", format!("/v1/agent/service/{id}")),
            REQUEST_TIMEOUT,
        )
        .await?;
    if response.status == 404 {
        return Ok(None);
    }
    Ok(Some(
        serde_json::from_slice(&response.body).unwrap_or(Value::Null),
    ))
}

/// `PUT /v1/agent/service/deregister/<id>` within `timeout`: Ok(false) when the agent
/// had no such service.
pub async fn deregister(
    connection: &mut Connection,
    id: &str,
    timeout: Duration,
) -> Result<bool, ConsulError> {
    let path = ApiPath::new(
        "/v1/agent/service/deregister/{id}",
        format!("/v1/agent/service/deregister/{id}"),
    );
    let response = connection
        .request(Method::PUT, &path, None, timeout)
        .await?;
    Ok(response.status != 404)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{GatewaySource, Kind};
    use serde_json::json;

    #[test]
    fn endpoints_never_carry_the_query() {
        let cases = [
            (
                Method::GET,
                "/v1/catalog/services?filter=x&index=3",
                "GET /v1/catalog/services",
            ),
            (Method::PUT, "/v1/config?cas=0", "PUT /v1/config"),
            (
                Method::DELETE,
                "/v1/config/http-route/a",
                "DELETE /v1/config/http-route/a",
            ),
        ];
        for (method, path, want) in cases {
            assert_eq!(endpoint(&method, path), want);
        }
    }

    #[test]
    fn durations_as_go_parses_them() {
        let cases = [
            (Duration::from_secs(300), "300s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_micros(10), "1ms"),
            (Duration::from_millis(1500), "1500ms"),
        ];
        for (d, want) in cases {
            assert_eq!(format_duration(d), want);
        }
    }

    #[test]
    fn a_bare_403_names_the_permission_of_the_call() {
        let denied = |message: &str| ConsulError {
            endpoint: "PUT /v1/config".into(),
            kind: ErrorKind::Status {
                code: 403,
                message: message.into(),
            },
        };
        let key = EntryKey::new(Kind::ServiceDefaults, "web");
        let named = name_permission(denied("Permission denied"), || write_permission(&key));
        assert!(
            named.to_string().contains("service:write on \"web\""),
            "{named}"
        );
        let gateway = EntryKey::new(Kind::IngressGateway, "edge");
        let named = name_permission(denied("Permission denied"), || write_permission(&gateway));
        assert!(named.to_string().contains("operator:write"), "{named}");
        // Consul's own detail, or another cause, is kept as it is.
        for message in [
            "Permission denied: token with AccessorID 'x' lacks permission 'mesh:write'",
            "ACL not found",
        ] {
            let err = name_permission(denied(message), || write_permission(&gateway));
            assert_eq!(err, denied(message));
        }
    }

    #[test]
    fn compact_entries_keep_what_is_not_zero_and_the_problems() {
        let rendered = json!({
            "Kind": "http-route", "Name": "edge-web", "ModifyIndex": 9,
            "Meta": {"managed-by": "ingress-service-monitor"},
            "Parents": [{"Kind": "api-gateway", "Name": "edge", "SectionName": "http"}],
            "Rules": [{"Filters": {"Headers": null, "URLRewrite": null},
                       "Matches": [{"Path": {"Match": "prefix", "Value": "/"}, "Method": "",
                                    "Headers": null, "Query": null}],
                       "Services": [{"Name": "web", "Weight": 1, "Filters": {"Headers": null}}]}],
            "Hostnames": null,
            "Status": {"Conditions": [
                {"Type": "Accepted", "Status": "True", "Reason": "Accepted", "Message": "route is valid",
                 "Resource": {"Kind": "", "Name": ""}, "LastTransitionTime": "2026-12-01T00:00:00Z"},
                {"Type": "Bound", "Status": "False", "Reason": "FailedToBind", "Message": "no listener",
                 "Resource": {"Kind": "api-gateway", "Name": "edge"}}]},
        });
        let Value::Object(rendered) = rendered else {
            unreachable!()
        };
        let kept = compact(rendered.clone());
        assert_eq!(
            Value::Object(kept.clone()),
            json!({
                "Kind": "http-route", "Name": "edge-web", "ModifyIndex": 9,
                "Meta": {"managed-by": "ingress-service-monitor"},
                "Parents": [{"Kind": "api-gateway", "Name": "edge", "SectionName": "http"}],
                "Rules": [{"Matches": [{"Path": {"Match": "prefix", "Value": "/"}}],
                           "Services": [{"Name": "web", "Weight": 1}]}],
                "Status": {"Conditions": [{"Type": "Bound", "Status": "False",
                    "Reason": "FailedToBind", "Message": "no listener"}]},
            })
        );
        // The comparison of these kinds cannot tell the two apart.
        assert!(crate::plan::compare::struct_equal(&kept, &rendered));
    }

    #[test]
    fn paths() {
        assert_eq!(
            entry_path(&EntryKey::new(Kind::IngressGateway, "edge")).as_str(),
            "/v1/config/ingress-gateway/edge"
        );
        assert_eq!(
            catalog_path("edge-ingress").as_str(),
            "/v1/catalog/services?filter=ServiceKind%20%3D%3D%20%22%22%20and%20ServiceName%20%21%3D%20%22edge-ingress%22"
        );
        // Counted under templates: never a name or a query.
        let templates = [
            (catalog_path("edge-ingress"), "/v1/catalog/services"),
            (
                entry_path(&EntryKey::new(Kind::HttpRoute, "shop")),
                "/v1/config/{kind}/{name}",
            ),
            (SERVICE_DEFAULTS_PATH.clone(), "/v1/config/{kind}"),
            (PROXY_DEFAULTS_PATH.clone(), "/v1/config/{kind}/{name}"),
        ];
        for (path, want) in templates {
            assert_eq!(path.template(), want, "{}", path.as_str());
        }
    }

    #[test]
    fn undecodable_bodies_are_errors() {
        let response = |status, body: &'static str| Response {
            status,
            index: Some(1),
            body: Bytes::from_static(body.as_bytes()),
        };
        assert!(decode_catalog(&response(200, "{\"a\": [\"gw-x\"]"), "gw-").is_err());
        assert!(decode_catalog(&response(200, "<html>"), "gw-").is_err());
        assert!(decode_service_defaults(&response(200, "[{")).is_err());
        assert!(decode_proxy_defaults(&response(200, "<html>")).is_err());
        assert_eq!(decode_proxy_defaults(&response(404, "")), Ok(None));
        assert!(decode_entry(&response(200, "{\"Kind\":")).is_err());
        assert_eq!(decode_entry(&response(404, "not found")), Ok(None));
        assert!(decode_entry(&response(500, "{}")).is_err());
    }

    fn answer(body: String) -> Response {
        Response {
            status: 200,
            index: Some(1),
            body: Bytes::from(body),
        }
    }

    fn route(name: &str, create: u64, modify: u64, service: &str) -> String {
        format!(
            r#"{{"Kind":"http-route","Name":"edge-{name}","Rules":[{{"Services":[{{"Name":"{service}"}}]}}],"CreateIndex":{create},"ModifyIndex":{modify}}}"#
        )
    }

    #[test]
    fn list_entries_whose_indexes_did_not_move_are_shared_with_the_previous_answer() {
        let decode = |body: String, previous| decode_routes(&answer(body), "edge", previous);
        let first = format!(
            "[{},{},{}]",
            route("a", 5, 5, "web"),
            route("b", 6, 6, "web"),
            route("c", 7, 7, "web")
        );
        let first = decode(first, None).expect("decodes");
        // b was written (ModifyIndex moved); c was deleted and created again (same
        // ModifyIndex as before by chance, another CreateIndex); a did not change.
        let second = format!(
            "[{},{},{}]",
            route("a", 5, 5, "web"),
            route("b", 6, 9, "api"),
            route("c", 8, 7, "api")
        );
        let second = decode(second, Some(&first)).expect("decodes");
        assert!(
            Arc::ptr_eq(&first["edge-a"], &second["edge-a"]),
            "unchanged: shared"
        );
        for name in ["edge-b", "edge-c"] {
            assert!(
                !Arc::ptr_eq(&first[name], &second[name]),
                "{name}: decoded again"
            );
            assert_eq!(
                second[name]["Rules"][0]["Services"][0]["Name"],
                Value::from("api"),
                "{name}: the new content"
            );
        }
        // Without a previous list, or with the entry gone from it, everything is decoded.
        let again = decode(format!("[{}]", route("a", 5, 5, "web")), None).expect("decodes");
        assert!(!Arc::ptr_eq(&first["edge-a"], &again["edge-a"]));
        assert_eq!(first["edge-a"], again["edge-a"]);
    }

    #[test]
    fn of_intentions_only_what_decides_the_plan_is_kept() {
        let body = r#"[
            {"Kind":"service-intentions","Name":"web","Sources":[
                {"Name":"api","Action":"deny","Precedence":9,"Type":"consul"},
                {"Name":"edge","Action":"allow","Description":"managed by ingress-service-monitor","Precedence":9,"Type":"consul"}],
             "Meta":{"managed-by":"ingress-service-monitor","ingress-service-monitor-catalog-index":"12"},
             "CreateIndex":5,"ModifyIndex":8},
            {"Kind":"service-intentions","Name":"db","Sources":[
                {"Name":"edge","Action":"deny"},{"Name":"edge","Peer":"dc2","Action":"allow"}],
             "CreateIndex":6,"ModifyIndex":6}]"#;
        let list = decode_intentions(&answer(body.to_owned()), "edge").expect("decodes");
        let want = IntentionsList::from([
            (
                "web".to_owned(),
                Intentions {
                    modify_index: Some(8),
                    managed_by_us: true,
                    stamp: Some(12),
                    gateway: GatewaySource::Ours,
                    ours: 1,
                    others: 1,
                },
            ),
            (
                "db".to_owned(),
                Intentions {
                    modify_index: Some(6),
                    managed_by_us: false,
                    stamp: None,
                    gateway: GatewaySource::TheirDeny,
                    ours: 0,
                    others: 2,
                },
            ),
        ]);
        assert_eq!(list, want);
        assert!(decode_intentions(&answer("{".into()), "edge").is_err());
    }

    #[test]
    fn list_entries_are_kept_compact() {
        let body = r#"[{"Kind":"http-route","Name":"edge-web","Meta":{"managed-by":"ingress-service-monitor","ingress-service-monitor-gateway":"edge"},
            "Hostnames":null,"Rules":[{"Filters":{"Headers":null,"URLRewrite":null},"Matches":[{"Path":{"Match":"prefix","Value":"/"},"Method":""}],"Services":[{"Name":"web","Weight":1,"Filters":{"Headers":null}}]}],
            "Status":{"Conditions":[{"Type":"Accepted","Status":"True","Reason":"Accepted","Message":"ok","LastTransitionTime":"x"},
                                    {"Type":"Bound","Status":"False","Reason":"FailedToBind","Message":"no","LastTransitionTime":"y"}]},
            "CreateIndex":3,"ModifyIndex":4},
            {"Kind":"http-route","Name":"other","CreateIndex":5,"ModifyIndex":5}]"#;
        let routes = decode_routes(&answer(body.to_owned()), "edge", None).expect("decodes");
        assert_eq!(
            routes.keys().collect::<Vec<_>>(),
            ["edge-web"],
            "others dropped"
        );
        let want = json!({"Kind":"http-route","Name":"edge-web",
            "Meta":{"managed-by":"ingress-service-monitor","ingress-service-monitor-gateway":"edge"},
            "Rules":[{"Matches":[{"Path":{"Match":"prefix","Value":"/"}}],"Services":[{"Name":"web","Weight":1}]}],
            "Status":{"Conditions":[{"Type":"Bound","Status":"False","Reason":"FailedToBind","Message":"no"}]},
            "CreateIndex":3,"ModifyIndex":4});
        assert_eq!(Value::Object((*routes["edge-web"]).clone()), want);
    }
}
