//! Request semantics: routing with Consul's 404/405 behaviour, fault injection, the
//! per-endpoint parsing order (enterprise params, consistency, wait/index, token), the
//! handlers, response headers, and the request log.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::acl::{Authz, Resource};
use crate::agent;
use crate::blocking::{self, effective_wait, Kind};
use crate::entries;
use crate::filter::{self, Filter, Schema};
use crate::server::{ConnCtx, Shared, TableKind};
use crate::state::{self, State, WriteOutcome};
use crate::util::{go_quote, parse_go_duration, parse_query, percent_decode};
use crate::{Access, RequestRecord};

/// A response being built.
pub struct Reply {
    status: u16,
    body: Vec<u8>,
    json: bool,
    headers: Vec<(&'static str, String)>,
    /// Errors produced server-side (they gain `rpc error making call: ` via a client agent).
    rpc: bool,
    close: bool,
    /// Consul's HTTP wrapper adds the default-ACL-policy header; its 404 handler does not.
    wrapped: bool,
}

impl Reply {
    fn new(status: u16, body: Vec<u8>, json: bool) -> Reply {
        Reply {
            status,
            body,
            json,
            headers: Vec::new(),
            rpc: false,
            close: false,
            wrapped: true,
        }
    }

    pub fn json(value: &Value, pretty: bool) -> Reply {
        let body = if pretty {
            let mut b = serde_json::to_vec_pretty(value).unwrap_or_default();
            b.push(b'\n');
            b
        } else {
            serde_json::to_vec(value).unwrap_or_default()
        };
        Reply::new(200, body, true)
    }

    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply::new(status, body.into().into_bytes(), false)
    }

    /// An error text that came from a server RPC.
    pub fn rpc(status: u16, body: impl Into<String>) -> Reply {
        let mut r = Reply::text(status, body);
        r.rpc = true;
        r
    }

    fn empty() -> Reply {
        Reply::new(200, Vec::new(), false)
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    /// Query metadata of server-answered reads.
    fn meta(self, index: u64, consistency: &str, filtered: bool) -> Reply {
        let mut r = self
            .header("X-Consul-Index", index.max(1).to_string())
            .header("X-Consul-KnownLeader", "true")
            .header("X-Consul-LastContact", "0")
            .header("X-Consul-Effective-Consistency", consistency)
            .header("X-Consul-Query-Backend", "blocking-query");
        if filtered {
            r = r.header("X-Consul-Results-Filtered-By-ACLs", "true");
        }
        r
    }
}

type HResult = Result<Reply, Reply>;

/// The parts of a request the handlers need.
#[derive(Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    /// The first value of a parameter (Go's `Query().Get`), `""` when empty.
    fn get(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn get_nonempty(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.is_empty())
    }

    fn has(&self, key: &str) -> bool {
        self.query.iter().any(|(k, _)| k == key)
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
    }

    fn bearer(&self) -> Option<String> {
        let auth = self.header("authorization")?;
        let mut parts = auth.split(' ');
        let scheme = parts.next()?;
        let rest: Vec<&str> = parts.collect();
        if rest.is_empty() || !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let value = rest.join(" ");
        Some(
            value
                .trim()
                .split(' ')
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
        )
    }

    /// `?token=`, then `X-Consul-Token`, then `Authorization: Bearer`.
    fn token(&self) -> Option<String> {
        if let Some(t) = self.get_nonempty("token") {
            return Some(t.to_string());
        }
        if let Some(t) = self.header("x-consul-token") {
            return Some(t.to_string());
        }
        self.bearer().filter(|t| !t.is_empty())
    }

    fn had_token_header(&self) -> bool {
        self.header("x-consul-token").is_some() || self.bearer().is_some_and(|t| !t.is_empty())
    }

    fn pretty(&self) -> bool {
        self.has("pretty")
    }
}

/// Serves one request: connection limit, faults, routing, then the log.
pub async fn handle(
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let at = Instant::now();
    let method = req.method().as_str().to_string();
    let raw_path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let headers = req.headers().clone();
    // A body that fails mid-stream is treated as empty; the handler reports what that means.
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let _in_flight = InFlight::new(&shared, &method, &raw_path, &raw_query);
    let request = Req {
        method: method.clone(),
        path: percent_decode(&raw_path, false),
        query: parse_query(&raw_query),
        headers,
        body,
    };
    let fault = if ctx.over_limit {
        None
    } else {
        shared.lock().take_fault(&method, &raw_path)
    };
    let hold = match (ctx.over_limit, &fault) {
        (false, None) => shared.lock().take_hold(&method, &raw_path),
        _ => None,
    };
    let mut reply = if ctx.over_limit {
        let mut r = Reply::text(
            429,
            "Your IP is issuing too many concurrent connections, please rate limit your calls",
        );
        r.close = true;
        r.wrapped = false;
        r
    } else if let Some((status, text)) = fault {
        Reply::text(status, text)
    } else if let Some(delay) = hold {
        // Acted on late, and even if the client has gone meanwhile, as Consul's handlers
        // finish a request whose client went away.
        let (held_shared, held) = (shared.clone(), request.clone());
        let late = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            route(&held_shared, &held).await
        });
        late.await
            .unwrap_or_else(|_| Reply::text(500, "held request failed"))
    } else {
        route(&shared, &request).await
    };
    let (rpc_prefix, acl) = (shared.lock().rpc_prefix, shared.settings.acl);
    if reply.rpc && rpc_prefix && reply.status >= 400 {
        let mut body = b"rpc error making call: ".to_vec();
        body.extend_from_slice(&reply.body);
        reply.body = body;
    }
    shared.lock().log.push(RequestRecord {
        at,
        method,
        path: raw_path,
        query: raw_query,
        status: reply.status,
        had_token: request.had_token_header(),
        user_agent: request.header("user-agent").unwrap_or("").to_string(),
        response_bytes: reply.body.len(),
    });
    build_response(reply, acl)
}

/// Lists a request in `State::in_flight` while it is served; dropped with the handler's
/// future, also when the client goes away mid-wait.
struct InFlight {
    shared: Arc<Shared>,
    id: u64,
}

impl InFlight {
    fn new(shared: &Arc<Shared>, method: &str, path: &str, query: &str) -> InFlight {
        let mut state = shared.lock();
        state.next_request_id += 1;
        let id = state.next_request_id;
        let request = (method.to_string(), path.to_string(), query.to_string());
        state.in_flight.insert(id, request);
        InFlight {
            shared: Arc::clone(shared),
            id,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.lock().in_flight.remove(&self.id);
    }
}

fn build_response(reply: Reply, acl: bool) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body_empty = reply.body.is_empty();
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    if reply.wrapped {
        put(
            "x-consul-default-acl-policy",
            if acl { "deny" } else { "allow" },
        );
    }
    if reply.json {
        put("content-type", "application/json");
    } else if !body_empty {
        put("content-type", "text/plain; charset=utf-8");
    }
    for (name, value) in &reply.headers {
        put(name, value);
    }
    if reply.close {
        put("connection", "close");
    }
    response
}

enum Route {
    CatalogServices,
    UiServices,
    CatalogService(String),
    HealthService(String),
    HealthState(String),
    Register,
    Deregister(String),
    AgentService(String),
    AgentServices,
    AgentChecks,
    AgentSelf,
    Leader,
    ConfigApply,
    Config(String),
}

fn resolve_route(path: &str) -> Option<(Route, &'static [&'static str])> {
    const GET: &[&str] = &["GET"];
    const PUT: &[&str] = &["PUT"];
    let rest = |prefix: &str| path.strip_prefix(prefix).map(str::to_string);
    let route = match path {
        "/v1/catalog/services" => (Route::CatalogServices, GET),
        "/v1/internal/ui/services" => (Route::UiServices, GET),
        "/v1/agent/service/register" => (Route::Register, PUT),
        "/v1/agent/services" => (Route::AgentServices, GET),
        "/v1/agent/checks" => (Route::AgentChecks, GET),
        "/v1/agent/self" => (Route::AgentSelf, GET),
        "/v1/status/leader" => (Route::Leader, GET),
        "/v1/config" => (Route::ConfigApply, PUT),
        _ => {
            if let Some(r) = rest("/v1/catalog/service/") {
                (Route::CatalogService(r), GET)
            } else if let Some(r) = rest("/v1/health/service/") {
                (Route::HealthService(r), GET)
            } else if let Some(r) = rest("/v1/health/state/") {
                (Route::HealthState(r), GET)
            } else if let Some(r) = rest("/v1/agent/service/deregister/") {
                (Route::Deregister(r), PUT)
            } else if let Some(r) = rest("/v1/agent/service/") {
                (Route::AgentService(r), GET)
            } else if let Some(r) = rest("/v1/config/") {
                (Route::Config(r), &["GET", "DELETE"][..])
            } else {
                return None;
            }
        }
    };
    Some(route)
}

async fn route(shared: &Arc<Shared>, req: &Req) -> Reply {
    let Some((route, methods)) = resolve_route(&req.path) else {
        let mut r = if req.path == "/" {
            Reply::text(200, "Consul Agent: UI disabled. To enable, set ui_config.enabled=true in the agent configuration and restart.")
        } else if req.path.contains("/v1/") {
            Reply::text(
                404,
                "Invalid URL path: not a recognized HTTP API endpoint\n",
            )
        } else {
            Reply::text(404, "Invalid URL path: if attempting to use the HTTP API, ensure the path starts with '/v1/'\n")
        };
        r.wrapped = false;
        return r;
    };
    let allow = std::iter::once("OPTIONS")
        .chain(methods.iter().copied())
        .collect::<Vec<_>>()
        .join(",");
    if req.method == "OPTIONS" {
        return Reply::empty().header("Allow", allow);
    }
    if !methods.contains(&req.method.as_str()) {
        return Reply::text(405, format!("method {} not allowed", req.method))
            .header("Allow", allow);
    }
    let result = match route {
        Route::CatalogServices => catalog_services(shared, req).await,
        Route::UiServices => ui_services(shared, req).await,
        Route::CatalogService(name) => catalog_service(shared, req, &name).await,
        Route::HealthService(name) => health_service(shared, req, &name).await,
        Route::HealthState(state) => health_state(shared, req, &state).await,
        Route::Register => register(shared, req),
        Route::Deregister(id) => deregister(shared, req, &id),
        Route::AgentService(id) => agent_service(shared, req, &id).await,
        Route::AgentServices => agent_services(shared, req),
        Route::AgentChecks => agent_checks(shared, req),
        Route::AgentSelf => agent_self(shared, req),
        Route::Leader => Ok(Reply::json(&json!("127.0.0.1:8300"), req.pretty())),
        Route::ConfigApply => config_apply(shared, req),
        Route::Config(rest) if req.method == "DELETE" => config_delete(shared, req, &rest),
        Route::Config(rest) => config_get(shared, req, &rest).await,
    };
    match result {
        Ok(r) | Err(r) => r,
    }
}

// ---------------------------------------------------------------- parsing helpers

/// `parseEntMeta` on CE: any non-empty namespace or partition is a 400.
fn ent_meta(shared: &Shared, req: &Req) -> Result<(), Reply> {
    if shared.lock().enterprise {
        return Ok(());
    }
    if req.header("x-consul-namespace").is_some() {
        return Err(Reply::text(
            400,
            "Invalid header: \"X-Consul-Namespace\" - Namespaces are a Consul Enterprise feature",
        ));
    }
    if req.get_nonempty("ns").is_some() {
        return Err(Reply::text(
            400,
            "Invalid query parameter: \"ns\" - Namespaces are a Consul Enterprise feature",
        ));
    }
    if req.header("x-consul-partition").is_some() {
        return Err(Reply::text(
            400,
            "Invalid header: \"X-Consul-Partition\" - Partitions are a Consul Enterprise feature",
        ));
    }
    if req.get_nonempty("partition").is_some() {
        return Err(Reply::text(
            400,
            "Invalid query parameter: \"partition\" - Partitions are a Consul Enterprise feature",
        ));
    }
    Ok(())
}

/// Blocking and consistency options of a read.
struct QueryOpts {
    consistency: &'static str,
    wait_ns: Option<i64>,
    index: u64,
}

/// `parseConsistency` then `parseWait`.
fn query_opts(req: &Req) -> Result<QueryOpts, Reply> {
    let mut stale = req.has("stale");
    let consistent = req.has("consistent");
    if let Some(max_stale) = req.get_nonempty("max_stale") {
        match parse_go_duration(max_stale) {
            Ok(ns) if ns > 0 => stale = true,
            Ok(_) => {}
            Err(_) => {
                return Err(Reply::text(
                    400,
                    format!("Invalid max_stale value {}", go_quote(max_stale)),
                ))
            }
        }
    }
    if stale && consistent {
        return Err(Reply::text(
            400,
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        ));
    }
    let (wait_ns, index) = parse_wait(req)?;
    let consistency = if stale {
        "stale"
    } else if consistent {
        "consistent"
    } else {
        "leader"
    };
    Ok(QueryOpts {
        consistency,
        wait_ns,
        index,
    })
}

fn parse_wait(req: &Req) -> Result<(Option<i64>, u64), Reply> {
    let mut wait = None;
    if let Some(w) = req.get_nonempty("wait") {
        wait = Some(parse_go_duration(w).map_err(|_| Reply::text(400, "Invalid wait time"))?);
    }
    let mut index = 0;
    if let Some(i) = req.get_nonempty("index") {
        index = i
            .parse::<u64>()
            .map_err(|_| Reply::text(400, "Invalid index"))?;
    }
    Ok((wait, index))
}

fn check_dc(req: &Req) -> Result<(), Reply> {
    match req.get_nonempty("dc") {
        Some(dc) if dc != agent::DATACENTER => Err(Reply::rpc(500, "No path to datacenter")),
        _ => Ok(()),
    }
}

/// Resolves the request's token; unknown secrets are a 403 `ACL not found`.
fn resolve(shared: &Shared, req: &Req, rpc: bool) -> Result<Authz, Reply> {
    let token = req.token();
    let state = shared.lock();
    Authz::resolve(shared.settings.acl, token.as_deref(), &state.tokens).map_err(|e| {
        if rpc {
            Reply::rpc(403, e)
        } else {
            Reply::text(403, e)
        }
    })
}

fn compile_filter(req: &Req, schema: Schema, rpc: bool) -> Result<Option<Filter>, Reply> {
    let Some(expr) = req.get_nonempty("filter") else {
        return Ok(None);
    };
    filter::parse(expr, schema).map(Some).map_err(|e| {
        let text = format!("Failed to create boolean expression evaluator: {e}");
        if rpc {
            Reply::rpc(500, text)
        } else {
            Reply::text(500, text)
        }
    })
}

/// `node-meta=key:value` filters (nodes here carry only `consul-network-segment`).
fn node_meta_ok(req: &Req) -> bool {
    req.all("node-meta").iter().all(|pair| {
        let (k, v) = pair.split_once(':').unwrap_or((pair, ""));
        k == "consul-network-segment" && v.is_empty()
    })
}

fn fingerprint(body: &Value) -> u64 {
    crate::util::fnv64(7, body.to_string().as_bytes())
}

// ---------------------------------------------------------------- catalog and health

/// `GET /v1/internal/ui/services` (the UI's summary, what Consul 1.8 offers where
/// `/v1/catalog/services` ignores `filter=`): one element per service name with its
/// `Kind` (left out when typical), `Name`, the union of its instances' `Tags`, its
/// `Nodes` and `InstanceCount`. Blocking on the services table.
async fn ui_services(shared: &Arc<Shared>, req: &Req) -> HResult {
    ent_meta(shared, req)?;
    let opts = query_opts(req)?;
    check_dc(req)?;
    let authz = resolve(shared, req, true)?;
    let wait = effective_wait(shared, opts.wait_ns);
    Ok(
        blocking::query(shared, &[TableKind::Services], opts.index, wait, |st| {
            type Summary<'a> = (&'a str, BTreeSet<&'a str>, BTreeSet<&'a str>, usize);
            let mut services: BTreeMap<&str, Summary<'_>> = BTreeMap::new();
            for row in st.catalog.values() {
                if !authz.can_read(Resource::Service(&row.name)) {
                    continue;
                }
                let entry = services.entry(&row.name).or_insert((
                    row.kind.as_str(),
                    BTreeSet::new(),
                    BTreeSet::new(),
                    0,
                ));
                entry.1.extend(row.tags.iter().map(String::as_str));
                entry.2.insert(row.node.as_str());
                entry.3 += 1;
            }
            let body: Vec<Value> = services
                .into_iter()
                .map(|(name, (kind, tags, nodes, count))| {
                    let mut service = Map::new();
                    if !kind.is_empty() {
                        service.insert("Kind".into(), json!(kind));
                    }
                    service.insert("Name".into(), json!(name));
                    service.insert("Tags".into(), json!(tags));
                    service.insert("Nodes".into(), json!(nodes));
                    service.insert("InstanceCount".into(), json!(count));
                    Value::Object(service)
                })
                .collect();
            let index = st.services_index;
            let reply =
                Reply::json(&Value::Array(body), req.pretty()).meta(index, opts.consistency, false);
            (reply, index, Kind::Plain)
        })
        .await,
    )
}

async fn catalog_services(shared: &Arc<Shared>, req: &Req) -> HResult {
    ent_meta(shared, req)?;
    let opts = query_opts(req)?;
    check_dc(req)?;
    let authz = resolve(shared, req, true)?;
    let filter = compile_filter(req, filter::CATALOG_SERVICE_NODE, true)?;
    let with_token = req.token().is_some();
    let node_meta = node_meta_ok(req);
    let wait = effective_wait(shared, opts.wait_ns);
    Ok(
        blocking::query(shared, &[TableKind::Services], opts.index, wait, |st| {
            let mut names: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
            let mut filtered = false;
            for row in st.catalog.values() {
                if !node_meta {
                    continue;
                }
                if !authz.can_read(Resource::Service(&row.name)) {
                    filtered = true;
                    continue;
                }
                if filter.as_ref().is_some_and(|f| !f.matches(row)) {
                    continue;
                }
                names
                    .entry(&row.name)
                    .or_default()
                    .extend(row.tags.iter().map(String::as_str));
            }
            let body: Map<String, Value> = names
                .into_iter()
                .map(|(name, tags)| (name.to_string(), json!(tags)))
                .collect();
            let index = st.services_index;
            let reply = Reply::json(&Value::Object(body), req.pretty()).meta(
                index,
                opts.consistency,
                filtered && with_token,
            );
            (reply, index, Kind::Plain)
        })
        .await,
    )
}

fn tags_match(row_tags: &[String], wanted: &[&str]) -> bool {
    wanted
        .iter()
        .all(|w| row_tags.iter().any(|t| t.eq_ignore_ascii_case(w)))
}

async fn catalog_service(shared: &Arc<Shared>, req: &Req, name: &str) -> HResult {
    ent_meta(shared, req)?;
    let opts = query_opts(req)?;
    if name.is_empty() {
        return Err(Reply::text(400, "Missing service name"));
    }
    check_dc(req)?;
    let authz = resolve(shared, req, true)?;
    let filter = compile_filter(req, filter::CATALOG_SERVICE_NODE, true)?;
    let tags = req.all("tag");
    let with_token = req.token().is_some();
    let node_meta = node_meta_ok(req);
    let wait = effective_wait(shared, opts.wait_ns);
    Ok(
        blocking::query(shared, &[TableKind::Services], opts.index, wait, |st| {
            let mut out = Vec::new();
            let mut filtered = false;
            for row in st.catalog.values().filter(|r| r.name == name) {
                if !node_meta || !tags_match(&row.tags, &tags) {
                    continue;
                }
                if !authz.can_read(Resource::Node(&row.node))
                    || !authz.can_read(Resource::Service(&row.name))
                {
                    filtered = true;
                    continue;
                }
                if filter.as_ref().is_some_and(|f| !f.matches(row)) {
                    continue;
                }
                out.push(state::catalog_row_json(row));
            }
            let index = st.services_index;
            let reply = Reply::json(&Value::Array(out), req.pretty()).meta(
                index,
                opts.consistency,
                filtered && with_token,
            );
            (reply, index, Kind::Plain)
        })
        .await,
    )
}

async fn health_service(shared: &Arc<Shared>, req: &Req, name: &str) -> HResult {
    ent_meta(shared, req)?;
    let opts = query_opts(req)?;
    let passing = match req.get("passing") {
        None => false,
        Some("") => true,
        Some(v) => crate::util::parse_go_bool(v)
            .ok_or_else(|| Reply::text(400, "Invalid value for ?passing"))?,
    };
    if name.is_empty() {
        return Err(Reply::text(400, "Missing service name"));
    }
    check_dc(req)?;
    let authz = resolve(shared, req, true)?;
    let filter = compile_filter(req, filter::HEALTH_SERVICE_NODE, true)?;
    let tags = req.all("tag");
    let with_token = req.token().is_some();
    let node_meta = node_meta_ok(req);
    let wait = effective_wait(shared, opts.wait_ns);
    let tables = [TableKind::Services, TableKind::Checks];
    Ok(blocking::query(shared, &tables, opts.index, wait, |st| {
        let mut out = Vec::new();
        let mut filtered = false;
        for row in st.catalog.values().filter(|r| r.name == name) {
            if !node_meta || !tags_match(&row.tags, &tags) {
                continue;
            }
            if !authz.can_read(Resource::Node(&row.node))
                || !authz.can_read(Resource::Service(&row.name))
            {
                filtered = true;
                continue;
            }
            let checks = st.instance_checks(row);
            if passing && !checks.iter().all(|c| c["Status"] == "passing") {
                continue;
            }
            let element = json!({
                "Node": state::node_json(&row.node),
                "Service": state::node_service_json(row),
                "Checks": checks,
            });
            if filter.as_ref().is_some_and(|f| !f.matches(&element)) {
                continue;
            }
            out.push(element);
        }
        let index = st.health_index();
        let reply = Reply::json(&Value::Array(out), req.pretty()).meta(
            index,
            opts.consistency,
            filtered && with_token,
        );
        (reply, index, Kind::Plain)
    })
    .await)
}

async fn health_state(shared: &Arc<Shared>, req: &Req, wanted: &str) -> HResult {
    ent_meta(shared, req)?;
    let opts = query_opts(req)?;
    if wanted.is_empty() {
        return Err(Reply::text(400, "Missing check state"));
    }
    check_dc(req)?;
    let authz = resolve(shared, req, true)?;
    if !matches!(wanted, "any" | "passing" | "warning" | "critical") {
        return Err(Reply::rpc(500, "Bad state"));
    }
    let with_token = req.token().is_some();
    let wait = effective_wait(shared, opts.wait_ns);
    Ok(blocking::query(
        shared,
        &[TableKind::Checks, TableKind::Services],
        opts.index,
        wait,
        |st| {
            let mut out = Vec::new();
            let mut filtered = false;
            for node in st.nodes() {
                if !authz.can_read(Resource::Node(&node)) {
                    filtered = true;
                    continue;
                }
                let mut checks = vec![state::serf_check(&node)];
                if node == agent::NODE {
                    for c in st.agent_checks.values() {
                        let svc = st.agent_services.get(&c.service_id);
                        if let Some(s) = svc {
                            if !authz.can_read(Resource::Service(&s.name)) {
                                filtered = true;
                                continue;
                            }
                        }
                        checks.push(agent::check_json(c, svc));
                    }
                }
                out.extend(
                    checks
                        .into_iter()
                        .filter(|c| wanted == "any" || c["Status"] == wanted),
                );
            }
            let index = st.checks_index;
            let reply = Reply::json(&Value::Array(out), req.pretty()).meta(
                index,
                opts.consistency,
                filtered && with_token,
            );
            (reply, index, Kind::Plain)
        },
    )
    .await)
}

// ---------------------------------------------------------------- agent

fn register(shared: &Arc<Shared>, req: &Req) -> HResult {
    ent_meta(shared, req)?;
    let mut authz = None;
    let reg = agent::parse_register(&req.body, || {
        authz = Some(
            resolve(shared, req, false)
                .map_err(|r| (r.status, String::from_utf8_lossy(&r.body).into_owned()))?,
        );
        Ok(())
    })
    .map_err(|(status, text)| Reply::text(status, text))?;
    let authz = authz.unwrap_or_else(Authz::allow_all);
    let svc = &reg.service;
    let mut state = shared.lock();
    let previous_name = state
        .agent_services
        .get(&svc.id)
        .map(|s| s.name.clone())
        .filter(|n| n != &svc.name);
    authz
        .require(Resource::Service(&svc.name), Access::Write)
        .map_err(|e| Reply::text(403, e))?;
    if let Some(old) = &previous_name {
        authz
            .require(Resource::Service(old), Access::Write)
            .map_err(|e| Reply::text(403, e))?;
    }
    if let Some(dest) = agent::proxy_destination(svc) {
        authz
            .require(Resource::Service(&dest), Access::Write)
            .map_err(|e| Reply::text(403, e))?;
    }
    let replace = req.has("replace-existing-checks")
        && matches!(req.get("replace-existing-checks"), Some("") | Some("true"));
    let changes = state.register(&reg, replace);
    drop(state);
    shared.notify(changes);
    Ok(Reply::empty())
}

fn deregister(shared: &Arc<Shared>, req: &Req, id: &str) -> HResult {
    ent_meta(shared, req)?;
    let authz = resolve(shared, req, false)?;
    let mut state = shared.lock();
    let Some(existing) = state.agent_services.get(id) else {
        return Err(Reply::text(
            404,
            format!(
                "Unknown service ID {}. Ensure that the service ID is passed, not the service name.",
                go_quote(id)
            ),
        ));
    };
    authz
        .require(Resource::Service(&existing.name.clone()), Access::Write)
        .map_err(|e| Reply::text(403, e))?;
    let changes = state.deregister(id).unwrap_or_default();
    drop(state);
    shared.notify(changes);
    Ok(Reply::empty())
}

async fn agent_service(shared: &Arc<Shared>, req: &Req, id: &str) -> HResult {
    let (wait_ns, _) = parse_wait(req)?;
    ent_meta(shared, req)?;
    let authz = resolve(shared, req, false)?;
    let hash = req.get("hash").unwrap_or("").to_string();
    let wait = effective_wait(shared, wait_ns);
    Ok(blocking::hash_query(shared, &hash, wait, |st| {
        let Some(svc) = st.agent_services.get(id) else {
            return (
                Reply::text(404, format!("unknown service ID: {id}")),
                String::new(),
            );
        };
        if let Err(e) = authz.require(Resource::Service(&svc.name), Access::Read) {
            return (Reply::text(403, e), String::new());
        }
        let mut body = agent::agent_service_json(svc);
        let content_hash = agent::content_hash(&body);
        body.insert("ContentHash".into(), Value::String(content_hash.clone()));
        let reply = Reply::json(&Value::Object(body), req.pretty())
            .header("X-Consul-ContentHash", content_hash.clone());
        (reply, content_hash)
    })
    .await)
}

fn agent_services(shared: &Arc<Shared>, req: &Req) -> HResult {
    ent_meta(shared, req)?;
    let authz = resolve(shared, req, false)?;
    let filter = compile_filter(req, filter::AGENT_SERVICE, false)?;
    let state = shared.lock();
    let mut out = Map::new();
    let mut total = 0;
    for (id, svc) in &state.agent_services {
        let body = Value::Object(agent::agent_service_json(svc));
        if filter.as_ref().is_some_and(|f| !f.matches(&body)) {
            continue;
        }
        total += 1;
        if authz.can_read(Resource::Service(&svc.name)) {
            out.insert(id.clone(), body);
        }
    }
    let mut reply = Reply::json(&Value::Object(out.clone()), req.pretty());
    if req.token().is_some() && total != out.len() {
        reply = reply.header("X-Consul-Results-Filtered-By-ACLs", "true");
    }
    Ok(reply)
}

fn agent_checks(shared: &Arc<Shared>, req: &Req) -> HResult {
    ent_meta(shared, req)?;
    let authz = resolve(shared, req, false)?;
    let filter = compile_filter(req, filter::AGENT_CHECK, false)?;
    let state = shared.lock();
    let out = checks_map(&state, &authz, filter.as_ref());
    let mut reply = Reply::json(&Value::Object(out.0), req.pretty());
    if req.token().is_some() && out.1 {
        reply = reply.header("X-Consul-Results-Filtered-By-ACLs", "true");
    }
    Ok(reply)
}

/// `/v1/agent/checks` content; the flag says whether ACLs removed something.
pub fn checks_map(
    state: &State,
    authz: &Authz,
    filter: Option<&Filter>,
) -> (Map<String, Value>, bool) {
    let mut out = Map::new();
    let mut filtered = false;
    for (id, check) in &state.agent_checks {
        let svc = state.agent_services.get(&check.service_id);
        let body = agent::check_json(check, svc);
        if filter.is_some_and(|f| !f.matches(&body)) {
            continue;
        }
        let allowed = match svc {
            Some(s) => authz.can_read(Resource::Service(&s.name)),
            None => authz.can_read(Resource::Node(agent::NODE)),
        };
        if allowed {
            out.insert(id.clone(), body);
        } else {
            filtered = true;
        }
    }
    (out, filtered)
}

fn agent_self(shared: &Arc<Shared>, req: &Req) -> HResult {
    resolve(shared, req, false)?;
    let body = json!({
        "Config": {
            "Datacenter": agent::DATACENTER,
            "PrimaryDatacenter": agent::DATACENTER,
            "NodeName": agent::NODE,
            "NodeID": crate::util::uuid_from(agent::NODE),
            "Server": true,
            "Revision": "consul-sim",
            "Version": "1.20.0"
        },
        "Member": {"Name": agent::NODE, "Addr": state::NODE_ADDRESS, "Port": 8301, "Status": 1},
        "Meta": {"consul-network-segment": ""},
        "Stats": {},
        "DebugConfig": {}
    });
    Ok(Reply::json(&body, req.pretty()))
}

// ---------------------------------------------------------------- config entries

fn config_apply(shared: &Arc<Shared>, req: &Req) -> HResult {
    let raw: Value = if req.body.iter().all(u8::is_ascii_whitespace) {
        return Err(Reply::text(400, "Request decoding failed: EOF"));
    } else {
        serde_json::from_slice(&req.body)
            .map_err(|e| Reply::text(400, format!("Request decoding failed: {e}")))?
    };
    let enterprise = shared.lock().enterprise;
    let mut entry = entries::decode(&raw, enterprise).map_err(|e| Reply::text(400, e))?;
    ent_meta(shared, req)?;
    let cas = match req.get_nonempty("cas") {
        None => None,
        Some(c) => Some(c.parse::<u64>().map_err(|_| {
            Reply::text(
                500,
                format!("strconv.ParseUint: parsing {}: invalid syntax", go_quote(c)),
            )
        })?),
    };
    check_dc(req)?;
    let authz = resolve(shared, req, true)?;
    entries::normalize(&mut entry);
    entries::validate(&entry).map_err(|e| Reply::rpc(500, e))?;
    entries::check_write(&authz, &entry.kind, &entry.name).map_err(|e| Reply::rpc(403, e))?;
    let (race_changes, (outcome, changes)) = {
        let mut state = shared.lock();
        // A concurrent writer that got in between the caller's read and this write.
        let race = state
            .races
            .iter()
            .position(|r| r.kind == entry.kind && r.name == entry.name);
        let race_changes = race
            .map(|i| state.races.remove(i))
            .map(|race| state.write_entry(&race, None).1);
        (race_changes, state.write_entry(&entry, cas))
    };
    if let Some(race_changes) = race_changes {
        shared.notify(race_changes);
    }
    shared.notify(changes);
    match outcome {
        WriteOutcome::Done { reply, .. } => Ok(Reply::json(&json!(reply), req.pretty())),
        WriteOutcome::Rejected(e) => Err(Reply::rpc(500, e)),
    }
}

fn entry_readable(authz: &Authz, kind: &str, name: &str) -> bool {
    entries::can_read(authz, kind, name)
}

async fn config_get(shared: &Arc<Shared>, req: &Req, rest: &str) -> HResult {
    let opts = query_opts(req)?;
    check_dc(req)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let with_token = req.token().is_some();
    let wait = effective_wait(shared, opts.wait_ns);
    match parts.as_slice() {
        [kind, name] => {
            ent_meta(shared, req)?;
            let authz = resolve(shared, req, true)?;
            if !entries::is_known_kind(kind) {
                return Err(Reply::rpc(
                    500,
                    format!("invalid config entry kind: {kind}"),
                ));
            }
            entries::check_read(&authz, kind, name).map_err(|e| Reply::rpc(403, e))?;
            Ok(
                blocking::query(shared, &[TableKind::Config], opts.index, wait, |st| {
                    let index = st.config_index;
                    match st.config.get(&(kind.to_string(), name.to_string())) {
                        Some(stored) => {
                            let body = entries::render(
                                &stored.body,
                                kind,
                                stored.create_index,
                                stored.modify_index,
                            );
                            let reply = Reply::json(&body, req.pretty()).meta(
                                index,
                                opts.consistency,
                                false,
                            );
                            (reply, index, Kind::Fingerprint(stored.modify_index))
                        }
                        None => {
                            let reply = Reply::text(
                                404,
                                format!(
                                    "Config entry not found for {} / {}",
                                    go_quote(kind),
                                    go_quote(name)
                                ),
                            )
                            .meta(index, opts.consistency, false);
                            (reply, index, Kind::NotFound)
                        }
                    }
                })
                .await,
            )
        }
        [kind] => {
            ent_meta(shared, req)?;
            let authz = resolve(shared, req, true)?;
            if !kind.is_empty() && !entries::is_known_kind(kind) {
                return Err(Reply::rpc(
                    500,
                    format!("invalid config entry kind: {kind}"),
                ));
            }
            if req.get_nonempty("filter").is_some() && *kind != entries::SERVICE_DEFAULTS {
                return Err(Reply::rpc(
                    500,
                    format!("filtering not supported for config entry kind={kind}"),
                ));
            }
            let filter = compile_filter(req, filter::SERVICE_DEFAULTS, true)?;
            Ok(
                blocking::query(shared, &[TableKind::Config], opts.index, wait, |st| {
                    let mut out = Vec::new();
                    let mut filtered = false;
                    for ((k, n), stored) in &st.config {
                        if !kind.is_empty() && k != kind {
                            continue;
                        }
                        if !entry_readable(&authz, k, n) {
                            filtered = true;
                            continue;
                        }
                        let body = entries::render(
                            &stored.body,
                            k,
                            stored.create_index,
                            stored.modify_index,
                        );
                        if filter.as_ref().is_some_and(|f| !f.matches(&body)) {
                            continue;
                        }
                        out.push(body);
                    }
                    let body = Value::Array(out);
                    let index = st.config_index;
                    let fp = fingerprint(&body);
                    let reply = Reply::json(&body, req.pretty()).meta(
                        index,
                        opts.consistency,
                        filtered && with_token,
                    );
                    (reply, index, Kind::Fingerprint(fp))
                })
                .await,
            )
        }
        _ => Err(Reply::text(
            404,
            "Must provide either a kind or both kind and name",
        )),
    }
}

fn config_delete(shared: &Arc<Shared>, req: &Req, rest: &str) -> HResult {
    let Some((kind, name)) = rest.split_once('/') else {
        return Err(Reply::text(
            404,
            "Must provide both a kind and name to delete",
        ));
    };
    if !entries::is_known_kind(kind) {
        return Err(Reply::text(
            400,
            format!("invalid config entry kind: {kind}"),
        ));
    }
    ent_meta(shared, req)?;
    let cas = match req.get_nonempty("cas") {
        None => None,
        Some(c) => Some(c.parse::<u64>().map_err(|_| {
            Reply::text(
                400,
                format!(
                    "Failed to parse CAS value: strconv.ParseUint: parsing {}: invalid syntax",
                    go_quote(c)
                ),
            )
        })?),
    };
    check_dc(req)?;
    let authz = resolve(shared, req, true)?;
    let name = if kind == entries::PROXY_DEFAULTS && name.is_empty() {
        entries::GLOBAL
    } else {
        name
    };
    entries::check_write(&authz, kind, name).map_err(|e| Reply::rpc(403, e))?;
    let (outcome, changes) = shared.lock().delete_entry(kind, name, cas, true);
    shared.notify(changes);
    match outcome {
        WriteOutcome::Done { reply, .. } if cas.is_some() => {
            Ok(Reply::json(&json!(reply), req.pretty()))
        }
        WriteOutcome::Done { .. } => Ok(Reply::json(&json!({}), req.pretty())),
        WriteOutcome::Rejected(e) => Err(Reply::rpc(500, e)),
    }
}
