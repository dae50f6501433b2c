//! The API-gateway kinds (consul-api-gateway.md §1-§4): validation texts, CAS, reads,
//! the read-only bound entry, and the asynchronous controller's Status.

mod common;

use std::time::Duration;

use common::*;
use consul_sim::{Access, Condition, Rule, Sim, SimOptions};
use serde_json::{json, Value};

fn sim() -> Sim {
    Sim::start(quick_options())
}

fn gateway(name: &str, listeners: Value) -> Value {
    json!({"Kind": "api-gateway", "Name": name, "Listeners": listeners})
}

fn http_listener(name: &str, port: u16) -> Value {
    json!({"Name": name, "Port": port, "Protocol": "http"})
}

fn route(name: &str, gw: &str, section: &str, service: &str) -> Value {
    json!({"Kind": "http-route", "Name": name,
           "Parents": [{"Name": gw, "SectionName": section}],
           "Rules": [{"Matches": [{"Path": {"Match": "prefix", "Value": "/"}}],
                      "Services": [{"Name": service}]}]})
}

fn put_ok(sim: &Sim, entry: Value) {
    assert_eq!(sim.put_config(entry.clone(), None), Ok(true), "{entry}");
}

fn http_service(sim: &Sim, name: &str) {
    put_ok(
        sim,
        json!({"Kind": "service-defaults", "Name": name, "Protocol": "http"}),
    );
}

/// Whether the entry carries the condition `typ` with `status` and `reason` (and, when
/// given, a message containing `message`).
fn has(sim: &Sim, kind: &str, name: &str, typ: &str, status: &str, reason: &str) -> bool {
    sim.conditions(kind, name)
        .iter()
        .any(|c| c.kind == typ && c.status == status && c.reason == reason)
}

fn message(sim: &Sim, kind: &str, name: &str, typ: &str) -> String {
    sim.conditions(kind, name)
        .into_iter()
        .find(|c: &Condition| c.kind == typ)
        .map(|c| c.message)
        .unwrap_or_default()
}

async fn settled(sim: &Sim) {
    eventually("the gateway controller settles", || {
        sim.gateway_controller_idle()
    })
    .await;
}

async fn put_body(sim: &Sim, path: &str, body: &Value) -> Resp {
    put(sim.addr(), path, &body.to_string()).await
}

// ------------------------------------------------------------------ validation

#[tokio::test]
async fn gateway_validation_errors_are_500_with_consul_texts() {
    let sim = sim();
    let l = |name: &str, port: i64, protocol: &str| json!({"Name": name, "Port": port, "Protocol": protocol});
    let cases: Vec<(Value, Result<(), &str>)> = vec![
        (json!([l("http", 8080, "http")]), Ok(())),
        // Protocols are lower-cased first; two listeners may share a port when identical.
        (json!([l("a", 8080, "HTTP"), l("b", 8080, "http")]), Ok(())),
        (json!([l("a.b-1", 9000, "tcp")]), Ok(())),
        (json!([{"Name": "h", "Port": 1, "Protocol": "http", "Hostname": "*.example.com"}]), Ok(())),
        (json!([]), Err("api gateway must have at least one listener")),
        (json!([l("", 1, "http")]),
         Err("listener name \"\" is invalid, must be at least 1 character and contain only letters, numbers, or dashes")),
        (json!([l("Web", 1, "http")]),
         Err("listener name \"Web\" is invalid, must be at least 1 character and contain only letters, numbers, or dashes")),
        (json!([l("a_b", 1, "http")]), Err("listener name \"a_b\" is invalid")),
        (json!([l("a", 1, "http"), l("a", 2, "http")]), Err("found multiple listeners with the name \"a\"")),
        (json!([l("a", 1, "http"), l("b", 1, "tcp")]), Err("listeners \"a\" and \"b\" cannot be merged")),
        (json!([{"Name": "a", "Port": 1, "Protocol": "http", "Hostname": "x.example.com"}, l("b", 1, "http")]),
         Err("listeners \"a\" and \"b\" cannot be merged")),
        (json!([l("a", 1, "grpc")]), Err("unsupported listener protocol \"grpc\", must be one of 'tcp', or 'http'")),
        (json!([{"Name": "a", "Port": 1}]), Err("unsupported listener protocol \"\", must be one of 'tcp', or 'http'")),
        (json!([{"Name": "a", "Port": 1, "Protocol": "tcp", "Hostname": "x.example.com"}]),
         Err("hostname specification is not supported when using TCP")),
        (json!([l("a", 0, "http")]), Err("listener port 0 not in the range 1-65535")),
        (json!([l("a", 65536, "http")]), Err("listener port 65536 not in the range 1-65535")),
        (json!([{"Name": "a", "Port": 1, "Protocol": "http", "Hostname": "a.*.example.com"}]),
         Err("host \"a.*.example.com\" is not valid, a wildcard specifier is only allowed as the left-most label")),
        (json!([{"Name": "a", "Port": 1, "Protocol": "http", "TLS": {"Certificates": [{"Kind": "foo", "Name": "c"}]}}]),
         Err("unsupported certificate kind: \"foo\", must be 'inline-certificate'")),
        (json!([{"Name": "a", "Port": 1, "Protocol": "http", "TLS": {"Certificates": [{"Name": ""}]}}]),
         Err("certificate reference must have a name")),
        (json!([{"Name": "a", "Port": 1, "Protocol": "http", "TLS": {"MinVersion": "TLSv9"}}]),
         Err("no matching TLS version found for TLSv9")),
    ];
    for (listeners, want) in cases {
        let body = gateway("edge", listeners.clone());
        let r = put_body(&sim, "/v1/config", &body).await;
        match want {
            Ok(()) => assert_eq!((r.status, r.body.as_str()), (200, "true"), "{listeners}"),
            Err(text) => {
                assert_eq!(r.status, 500, "{listeners}: {}", r.body);
                assert!(r.body.contains(text), "{listeners}: got {:?}", r.body);
            }
        }
    }
    let meta = json!({"Kind": "api-gateway", "Name": "edge", "Meta": {"k": "v".repeat(513)},
                      "Listeners": [http_listener("http", 1)]});
    let r = put_body(&sim, "/v1/config", &meta).await;
    assert_eq!(r.status, 500);
    assert!(r
        .body
        .contains("Meta value for key \"k\" exceeds maximum length 512"));
    // Unknown keys are decode errors (400), as for every kind.
    let r = put_body(
        &sim,
        "/v1/config",
        &gateway(
            "edge",
            json!([{"Name": "a", "Port": 1, "Protocol": "http", "Bogus": 1}]),
        ),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("invalid config key \"Listeners[0].Bogus\""));
}

#[tokio::test]
async fn route_validation_errors_are_500_with_consul_texts() {
    let sim = sim();
    let with = |patch: Value| {
        let mut r = route("r", "edge", "http", "web");
        if let (Some(o), Some(p)) = (r.as_object_mut(), patch.as_object()) {
            for (k, v) in p {
                o.insert(k.clone(), v.clone());
            }
        }
        r
    };
    let matches = |m: Value| {
        with(
            json!({"Rules": [{"Matches": [{"Path": {"Match": "prefix", "Value": "/"}}, m], "Services": [{"Name": "web"}]}]}),
        )
    };
    let cases: Vec<(Value, Result<(), &str>)> = vec![
        (with(json!({})), Ok(())),
        (with(json!({"Hostnames": ["shop.example.com", "a-b.example"]})), Ok(())),
        (with(json!({"Rules": []})), Ok(())),
        (with(json!({"Rules": [{"Services": []}]})), Ok(())),
        (matches(json!({"Method": "get", "Headers": [{"Match": "suffix", "Name": "x", "Value": "y"}],
                        "Query": [{"Match": "present", "Name": "q"}]})), Ok(())),
        (matches(json!({"Path": {"Match": "regex", "Value": "^/a.*"}})), Ok(())),
        (with(json!({"Hostnames": ["a..b"]})), Err("host \"a..b\" must be a valid DNS hostname")),
        (with(json!({"Hostnames": ["*.example.com"]})), Err("host \"*.example.com\" must not be a wildcard")),
        (with(json!({"Hostnames": ["*"]})), Err("host \"*\" must not be a wildcard")),
        (with(json!({"Parents": [{"Kind": "ingress-gateway", "Name": "edge"}]})),
         Err("unsupported parent kind: \"ingress-gateway\", must be 'api-gateway'")),
        (with(json!({"Parents": [{"Name": "edge", "SectionName": "a"}, {"Kind": "api-gateway", "Name": "edge", "SectionName": "a"}]})),
         Err("route parents must be unique")),
        (with(json!({"Parents": [{"Name": "edge", "SectionName": "a"}, {"Name": "edge", "SectionName": "b"}]})), Ok(())),
        (with(json!({"Meta": {"k": "v".repeat(513)}})), Err("Meta value for key \"k\" exceeds maximum length 512")),
        (matches(json!({"Method": "FETCH"})), Err("Rule[0], Match[1], Method contains an invalid method \"FETCH\"")),
        (matches(json!({"Query": [{"Match": "exact", "Value": "v"}]})),
         Err("Rule[0], Match[1], Query[0], missing required Name field")),
        (matches(json!({"Query": [{"Match": "prefix", "Name": "q"}]})),
         Err("Rule[0], Match[1], Query[0], match type should be one of present, exact, or regex")),
        (matches(json!({"Headers": [{"Match": "exact", "Value": "v"}]})),
         Err("Rule[0], Match[1], Headers[0], missing required Name field")),
        (matches(json!({"Headers": [{"Match": "contains", "Name": "h"}]})),
         Err("Rule[0], Match[1], Headers[0], match type should be one of present, exact, prefix, suffix, or regex")),
        (matches(json!({"Path": {"Match": "prefix", "Value": "api"}})),
         Err("Rule[0], Match[1], Path, prefix type match doesn't start with '/': \"api\"")),
        (matches(json!({"Path": {"Match": "exact", "Value": ""}})),
         Err("Rule[0], Match[1], Path, exact type match doesn't start with '/': \"\"")),
        (matches(json!({"Path": {"Match": "glob", "Value": "/x"}})),
         Err("Rule[0], Match[1], Path, match type should be one of exact, prefix, or regex")),
        // An empty Match is normalised to prefix "/" before validation: the Value is lost.
        (matches(json!({"Path": {"Value": "no-slash"}})), Ok(())),
        // Checked in order: the method before the query, the query before the path.
        (matches(json!({"Method": "X", "Query": [{"Match": "exact"}]})),
         Err("Rule[0], Match[1], Method contains an invalid method \"X\"")),
        (matches(json!({"Query": [{"Match": "exact"}], "Path": {"Match": "prefix", "Value": "x"}})),
         Err("Query[0], missing required Name field")),
        // The hostnames are checked before the parents.
        (with(json!({"Hostnames": ["*"], "Parents": [{"Kind": "x", "Name": "edge"}]})),
         Err("host \"*\" must not be a wildcard")),
        // Not checked on write: the services, their protocols, the gateway.
        (with(json!({"Parents": [{"Name": "nowhere"}], "Rules": [{"Services": [{"Name": "ghost"}]}]})), Ok(())),
        // URLRewrite has no write-time rules.
        (with(json!({"Rules": [{"Filters": {"URLRewrite": {"Path": "/"}}, "Services": [{"Name": "web"}]}]})), Ok(())),
    ];
    for (body, want) in cases {
        let r = put_body(&sim, "/v1/config", &body).await;
        match want {
            Ok(()) => assert_eq!((r.status, r.body.as_str()), (200, "true"), "{body}"),
            Err(text) => {
                assert_eq!(r.status, 500, "{body}: {}", r.body);
                assert!(r.body.contains(text), "{body}: got {:?}", r.body);
            }
        }
    }
    let tcp = |services: Value| json!({"Kind": "tcp-route", "Name": "t", "Parents": [{"Name": "edge"}], "Services": services});
    let r = put_body(
        &sim,
        "/v1/config",
        &tcp(json!([{"Name": "a"}, {"Name": "b"}])),
    )
    .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (500, "tcp-route currently only supports one service")
    );
    let r = put_body(&sim, "/v1/config", &tcp(json!([{"Name": "db"}]))).await;
    assert_eq!((r.status, r.body.as_str()), (200, "true"));
}

// ------------------------------------------------------------------ reads, CAS, delete

#[tokio::test]
async fn routes_read_back_normalised_in_consul_shape() {
    let sim = sim();
    sim.pause_gateway_controller(true);
    let body = json!({"Kind": "http-route", "Name": "shop",
        "Meta": {"managed-by": "ingress-service-monitor"},
        "Parents": [{"Name": "edge", "SectionName": "http"}],
        "Hostnames": ["shop.example.com"],
        "Rules": [{"Matches": [{"Method": "get", "Path": {"Value": "/lost"}},
                               {"Path": {"Match": "exact", "Value": "/x"}}],
                   "Filters": {"URLRewrite": {"Path": "/"}},
                   "Services": [{"Name": "web", "Weight": 0}]}],
        "Status": {"Conditions": [{"Type": "Accepted", "Status": "True"}]}});
    let r = put_body(&sim, "/v1/config?cas=0", &body).await;
    assert_eq!((r.status, r.body.as_str()), (200, "true"));
    let r = get(sim.addr(), "/v1/config/http-route/shop").await;
    assert_eq!(r.status, 200);
    let got = r.json();
    let idx = got["CreateIndex"].clone();
    let filters_empty =
        json!({"Headers": null, "URLRewrite": null, "RetryFilter": null, "TimeoutFilter": null});
    assert_eq!(
        got,
        json!({"Kind": "http-route", "Name": "shop",
            "Meta": {"managed-by": "ingress-service-monitor"},
            "Parents": [{"Kind": "api-gateway", "Name": "edge", "SectionName": "http"}],
            "Hostnames": ["shop.example.com"],
            "Rules": [{
                "Filters": {"Headers": null, "URLRewrite": {"Path": "/"}, "RetryFilter": null, "TimeoutFilter": null},
                "Matches": [
                    {"Headers": null, "Method": "GET", "Path": {"Match": "prefix", "Value": "/"}, "Query": null},
                    {"Headers": null, "Method": "", "Path": {"Match": "exact", "Value": "/x"}, "Query": null}],
                "Services": [{"Name": "web", "Weight": 1, "Filters": filters_empty}]}],
            // A client's Status is never stored.
            "Status": {"Conditions": null},
            "CreateIndex": idx, "ModifyIndex": idx})
    );
    put_ok(&sim, gateway("edge", json!([http_listener("http", 8080)])));
    let gw = sim.config("api-gateway", "edge").unwrap_or_default();
    assert_eq!(
        gw["Listeners"],
        json!([{"Name": "http", "Hostname": "", "Port": 8080, "Protocol": "http",
                "TLS": {"Certificates": null, "MaxVersion": "", "MinVersion": "", "CipherSuites": null}}])
    );
    assert_eq!(gw["Status"], json!({"Conditions": null}));
    // Newer servers render a content hash on api-gateway: it follows the content only.
    let hash = gw["Hash"].as_u64();
    assert!(hash.is_some(), "Hash: {}", gw["Hash"]);
    sim.pause_gateway_controller(false);
    eventually("gateway status", || {
        has(&sim, "api-gateway", "edge", "Accepted", "True", "Accepted")
    })
    .await;
    let gw = sim.config("api-gateway", "edge").unwrap_or_default();
    assert_eq!(gw["Hash"].as_u64(), hash, "a status write keeps the hash");
    put_ok(&sim, gateway("edge", json!([http_listener("http", 8081)])));
    let gw = sim.config("api-gateway", "edge").unwrap_or_default();
    assert_ne!(gw["Hash"].as_u64(), hash, "new content, new hash");
    // Lists of one kind, and unknown names.
    let r = get(sim.addr(), "/v1/config/http-route").await;
    assert_eq!(r.json().as_array().map(Vec::len), Some(1));
    let r = get(sim.addr(), "/v1/config/http-route/nope").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (404, "Config entry not found for \"http-route\" / \"nope\"")
    );
}

#[tokio::test]
async fn create_only_cas_update_and_delete_follow_consul() {
    let sim = sim();
    http_service(&sim, "web");
    put_ok(&sim, gateway("edge", json!([http_listener("http", 8080)])));
    let body = route("shop", "edge", "http", "web");
    let r = put_body(&sim, "/v1/config?cas=0", &body).await;
    assert_eq!(r.body, "true");
    let created = sim.config("http-route", "shop").unwrap_or_default()["CreateIndex"]
        .as_u64()
        .unwrap_or(0);
    // Create-only again: false, whatever the content.
    let r = put_body(
        &sim,
        "/v1/config?cas=0",
        &route("shop", "edge", "http", "api"),
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, "false"));
    // The controller's Status write bumps the ModifyIndex: a CAS taken from the create
    // index now misses, and the current index wins.
    settled(&sim).await;
    let now = sim.config("http-route", "shop").unwrap_or_default();
    let modify = now["ModifyIndex"].as_u64().unwrap_or(0);
    assert!(
        modify > created,
        "status write bumped {created} -> {modify}"
    );
    assert_eq!(now["CreateIndex"].as_u64(), Some(created));
    let changed = route("shop", "edge", "http", "api");
    let r = put_body(&sim, &format!("/v1/config?cas={created}"), &changed).await;
    assert_eq!(r.body, "false");
    let r = put_body(&sim, &format!("/v1/config?cas={modify}"), &changed).await;
    assert_eq!(r.body, "true");
    let after = sim.config("http-route", "shop").unwrap_or_default();
    assert_eq!(after["Rules"][0]["Services"][0]["Name"], json!("api"));
    // An update keeps the stored Status until the controller rewrites it.
    assert!(after["Status"]["Conditions"].is_array());
    settled(&sim).await;
    let current = sim.config("http-route", "shop").unwrap_or_default()["ModifyIndex"]
        .as_u64()
        .unwrap_or(0);
    for (query, want) in [
        ("?cas=0".to_string(), "false"),
        (format!("?cas={}", current + 100), "false"),
        (format!("?cas={current}"), "true"),
        (format!("?cas={current}"), "false"),
    ] {
        let r = call(
            sim.addr(),
            "DELETE",
            format!("/v1/config/http-route/shop{query}"),
            &[],
            None,
        )
        .await;
        assert_eq!((r.status, r.body.as_str()), (200, want), "DELETE {query}");
    }
    assert!(sim.config("http-route", "shop").is_none());
    let r = call(
        sim.addr(),
        "DELETE",
        "/v1/config/http-route/shop",
        &[],
        None,
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, "{}"));
}

#[tokio::test]
async fn identical_writes_skip_even_with_the_status_read_back() {
    let sim = sim();
    http_service(&sim, "web");
    put_ok(&sim, gateway("edge", json!([http_listener("http", 8080)])));
    put_ok(&sim, route("shop", "edge", "http", "web"));
    eventually("bound", || {
        has(&sim, "http-route", "shop", "Bound", "True", "Bound")
    })
    .await;
    settled(&sim).await;
    let before = sim.config("http-route", "shop").unwrap_or_default();
    let writes = sim.entry_writes("http-route", "shop");
    let (_, config_index) = sim.indexes();
    // The GET result (Status and indexes included) and the plain desired entry both
    // count as identical, even with a stale CAS index.
    for body in [before.clone(), route("shop", "edge", "http", "web")] {
        let r = put_body(&sim, "/v1/config?cas=1", &body).await;
        assert_eq!((r.status, r.body.as_str()), (200, "true"));
    }
    assert_eq!(sim.entry_writes("http-route", "shop"), writes);
    assert_eq!(sim.indexes().1, config_index);
    assert_eq!(sim.config("http-route", "shop"), Some(before));
}

#[tokio::test]
async fn bound_api_gateway_is_written_by_the_controller_only() {
    let sim = sim();
    http_service(&sim, "web");
    http_service(&sim, "api");
    put_ok(
        &sim,
        gateway(
            "edge",
            json!([http_listener("http", 8080), http_listener("alt", 8081)]),
        ),
    );
    put_ok(&sim, route("shop", "edge", "http", "web"));
    put_ok(&sim, route("api", "edge", "", "api"));
    eventually("both routes bound", || {
        has(&sim, "http-route", "shop", "Bound", "True", "Bound")
            && has(&sim, "http-route", "api", "Bound", "True", "Bound")
    })
    .await;
    settled(&sim).await;
    let r = get(sim.addr(), "/v1/config/bound-api-gateway/edge").await;
    assert_eq!(r.status, 200);
    let bound = r.json();
    let http_route = |n: &str| json!({"Kind": "http-route", "Name": n, "SectionName": ""});
    assert_eq!(bound["Kind"], json!("bound-api-gateway"));
    assert_eq!(
        bound["Listeners"],
        json!([{"Name": "http", "Routes": [http_route("api"), http_route("shop")], "Certificates": null},
               {"Name": "alt", "Routes": [http_route("api")], "Certificates": null}])
    );
    assert_eq!(
        bound["Services"],
        json!({"api": [http_route("api")], "web": [http_route("shop")]})
    );
    // Clients may not write or delete it, ACLs or not.
    let r = put_body(
        &sim,
        "/v1/config",
        &json!({"Kind": "bound-api-gateway", "Name": "edge"}),
    )
    .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, "Permission denied: only writeable by controller")
    );
    let r = call(
        sim.addr(),
        "DELETE",
        "/v1/config/bound-api-gateway/edge",
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(sim.config("bound-api-gateway", "edge").is_some());
    // The controller's writes are not client writes.
    let client_writes = sim.state_changing_writes();
    assert_eq!(client_writes, 5);
    assert!(sim.gateway_status_writes() > 0);
    // Deleting the gateway deletes its bound entry; the routes lose their gateway.
    let r = call(
        sim.addr(),
        "DELETE",
        "/v1/config/api-gateway/edge",
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    eventually("bound entry deleted, routes GatewayNotFound", || {
        sim.config("bound-api-gateway", "edge").is_none()
            && has(
                &sim,
                "http-route",
                "shop",
                "Bound",
                "False",
                "GatewayNotFound",
            )
            && has(
                &sim,
                "http-route",
                "api",
                "Bound",
                "False",
                "GatewayNotFound",
            )
    })
    .await;
    assert_eq!(
        message(&sim, "http-route", "shop", "Bound"),
        "gateway was not found"
    );
}

// ------------------------------------------------------------------ the controller

#[tokio::test]
async fn status_follows_the_route_through_accept_bind_and_protocol_changes() {
    let sim = sim();
    put_ok(&sim, gateway("edge", json!([http_listener("http", 8080)])));
    eventually("gateway accepted", || {
        has(&sim, "api-gateway", "edge", "Accepted", "True", "Accepted")
    })
    .await;
    let gw = sim.conditions("api-gateway", "edge");
    let summary: Vec<(String, String, String, String)> = gw
        .iter()
        .map(|c| {
            (
                c.kind.clone(),
                c.status.clone(),
                c.reason.clone(),
                c.section.clone(),
            )
        })
        .collect();
    let t = |a: &str, b: &str, c: &str, d: &str| {
        (a.to_string(), b.to_string(), c.to_string(), d.to_string())
    };
    assert_eq!(
        summary,
        vec![
            t("ResolvedRefs", "True", "ResolvedRefs", "http"),
            t("Accepted", "True", "Accepted", ""),
            t("Conflicted", "False", "NoConflict", "http"),
        ]
    );
    assert_eq!(
        message(&sim, "api-gateway", "edge", "Accepted"),
        "gateway is valid"
    );

    // web has no service-defaults: protocol tcp, never Accepted.
    put_ok(&sim, route("shop", "edge", "http", "web"));
    eventually("protocol mismatch", || {
        has(
            &sim,
            "http-route",
            "shop",
            "Accepted",
            "False",
            "InvalidDiscoveryChain",
        ) && has(&sim, "http-route", "shop", "Bound", "False", "FailedToBind")
    })
    .await;
    assert_eq!(
        message(&sim, "http-route", "shop", "Accepted"),
        "route protocol does not match targeted service protocol"
    );
    assert_eq!(
        message(&sim, "http-route", "shop", "Bound"),
        "failed to bind route to gateway edge: route has not been accepted"
    );
    let bound_to = |sim: &Sim| {
        sim.conditions("http-route", "shop")
            .into_iter()
            .find(|c| c.kind == "Bound")
            .map(|c| (c.resource_name, c.section))
    };
    assert_eq!(
        bound_to(&sim),
        Some(("edge".to_string(), "http".to_string()))
    );

    // proxy-defaults makes it http: accepted, then bound one pass later.
    let before = sim.config("http-route", "shop").unwrap_or_default()["ModifyIndex"]
        .as_u64()
        .unwrap_or(0);
    put_ok(
        &sim,
        json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}}),
    );
    eventually("accepted and bound", || {
        has(&sim, "http-route", "shop", "Accepted", "True", "Accepted")
            && has(&sim, "http-route", "shop", "Bound", "True", "Bound")
    })
    .await;
    assert_eq!(
        message(&sim, "http-route", "shop", "Bound"),
        "successfully bound route"
    );
    let after = sim.config("http-route", "shop").unwrap_or_default()["ModifyIndex"]
        .as_u64()
        .unwrap_or(0);
    assert!(after > before, "status writes bump the ModifyIndex");
    settled(&sim).await;
    let routes = sim.config("bound-api-gateway", "edge").unwrap_or_default()["Listeners"][0]
        ["Routes"]
        .clone();
    assert_eq!(
        routes,
        json!([{"Kind": "http-route", "Name": "shop", "SectionName": ""}])
    );

    // A service-defaults entry wins over proxy-defaults: grpc is not http.
    put_ok(
        &sim,
        json!({"Kind": "service-defaults", "Name": "web", "Protocol": "grpc"}),
    );
    eventually("unbound again", || {
        has(
            &sim,
            "http-route",
            "shop",
            "Accepted",
            "False",
            "InvalidDiscoveryChain",
        ) && has(&sim, "http-route", "shop", "Bound", "False", "FailedToBind")
    })
    .await;
    settled(&sim).await;
    assert_eq!(
        sim.config("bound-api-gateway", "edge").unwrap_or_default()["Listeners"][0]["Routes"],
        Value::Null
    );

    // A discovery chain that fails to compile (a foreign resolver, say).
    http_service(&sim, "web");
    eventually("bound", || {
        has(&sim, "http-route", "shop", "Bound", "True", "Bound")
    })
    .await;
    sim.set_chain_error(
        "web",
        Some("detected circular resolver redirect: [web -> web]"),
    );
    eventually("chain error surfaces", || {
        message(&sim, "http-route", "shop", "Accepted")
            == "detected circular resolver redirect: [web -> web]"
            && has(&sim, "http-route", "shop", "Bound", "False", "FailedToBind")
    })
    .await;
    sim.set_chain_error("web", None);
    eventually("recovers", || {
        has(&sim, "http-route", "shop", "Accepted", "True", "Accepted")
            && has(&sim, "http-route", "shop", "Bound", "True", "Bound")
    })
    .await;
}

#[tokio::test]
async fn routes_to_missing_gateways_bind_once_the_gateway_appears() {
    let sim = sim();
    http_service(&sim, "web");
    put_ok(&sim, route("shop", "edge", "http", "web"));
    eventually("gateway not found", || {
        has(&sim, "http-route", "shop", "Accepted", "True", "Accepted")
            && has(
                &sim,
                "http-route",
                "shop",
                "Bound",
                "False",
                "GatewayNotFound",
            )
    })
    .await;
    put_ok(&sim, gateway("edge", json!([http_listener("http", 8080)])));
    eventually("bound", || {
        has(&sim, "http-route", "shop", "Bound", "True", "Bound")
    })
    .await;
}

#[tokio::test]
async fn listener_mismatches_fail_to_bind_with_consul_messages() {
    let sim = sim();
    for s in ["web", "api", "docs", "x"] {
        http_service(&sim, s);
    }
    put_ok(
        &sim,
        gateway(
            "edge",
            json!([http_listener("http", 8080),
                   {"Name": "tcp", "Port": 9000, "Protocol": "tcp"},
                   {"Name": "only-a", "Port": 8081, "Protocol": "http", "Hostname": "a.example.com"}]),
        ),
    );
    put_ok(&sim, route("to-tcp", "edge", "tcp", "web"));
    put_ok(&sim, route("to-nowhere", "edge", "nope", "api"));
    let mut hosts = route("to-only-a", "edge", "only-a", "docs");
    hosts["Hostnames"] = json!(["b.example.com"]);
    put_ok(&sim, hosts);
    let mut any = route("any", "edge", "", "x");
    any["Hostnames"] = json!(["b.example.com"]);
    put_ok(&sim, any);
    let cases = [
        ("to-tcp", "failed to bind route to-tcp to gateway edge: listener tcp is not a http listener"),
        ("to-nowhere", "failed to bind route to-nowhere to gateway edge with listener 'nope'"),
        ("to-only-a", "failed to bind route to gateway edge: listener only-a is does not have any hostnames that match the route"),
        // Bound to "http", but the hostname failure on "only-a" is the condition Consul keeps.
        ("any", "failed to bind route to gateway edge: listener only-a is does not have any hostnames that match the route"),
    ];
    for (name, want) in cases {
        eventually(name, || {
            has(&sim, "http-route", name, "Accepted", "True", "Accepted")
                && message(&sim, "http-route", name, "Bound") == want
        })
        .await;
    }
    settled(&sim).await;
    let bound = sim.config("bound-api-gateway", "edge").unwrap_or_default();
    assert_eq!(
        bound["Listeners"][0]["Routes"],
        json!([{"Kind": "http-route", "Name": "any", "SectionName": ""}])
    );
    assert_eq!(bound["Listeners"][1]["Routes"], Value::Null);
    assert_eq!(bound["Listeners"][2]["Routes"], Value::Null);
}

#[tokio::test]
async fn missing_certificates_and_tcp_conflicts_show_on_the_gateway() {
    let sim = sim();
    http_service(&sim, "web");
    put_ok(
        &sim,
        gateway(
            "edge",
            json!([{"Name": "https", "Port": 8443, "Protocol": "http",
                    "TLS": {"Certificates": [{"Name": "shop-cert"}]}}]),
        ),
    );
    put_ok(&sim, route("shop", "edge", "https", "web"));
    eventually("gateway rejected", || {
        has(
            &sim,
            "api-gateway",
            "edge",
            "Accepted",
            "False",
            "InvalidCertificates",
        ) && has(
            &sim,
            "api-gateway",
            "edge",
            "ResolvedRefs",
            "False",
            "InvalidCertificateRef",
        ) && message(&sim, "http-route", "shop", "Bound")
            == "failed to bind route to gateway edge: gateway has not been accepted"
    })
    .await;
    assert_eq!(
        message(&sim, "api-gateway", "edge", "ResolvedRefs"),
        "certificate \"shop-cert\" not found"
    );
    assert_eq!(
        message(&sim, "api-gateway", "edge", "Accepted"),
        "gateway references invalid certificates"
    );
    put_ok(
        &sim,
        json!({"Kind": "inline-certificate", "Name": "shop-cert", "Certificate": "x", "PrivateKey": "y"}),
    );
    eventually("accepted and bound", || {
        has(&sim, "api-gateway", "edge", "Accepted", "True", "Accepted")
            && has(&sim, "http-route", "shop", "Bound", "True", "Bound")
    })
    .await;
    settled(&sim).await;
    assert_eq!(
        sim.config("bound-api-gateway", "edge").unwrap_or_default()["Listeners"][0]["Certificates"],
        json!([{"Kind": "inline-certificate", "Name": "shop-cert", "SectionName": ""}])
    );

    // Two tcp routes on one tcp listener: Conflicted.
    for s in ["db", "cache"] {
        put_ok(
            &sim,
            json!({"Kind": "service-defaults", "Name": s, "Protocol": "tcp"}),
        );
    }
    put_ok(
        &sim,
        gateway(
            "tcpgw",
            json!([{"Name": "db", "Port": 9000, "Protocol": "tcp"}]),
        ),
    );
    for (name, svc) in [("db", "db"), ("cache", "cache")] {
        put_ok(
            &sim,
            json!({"Kind": "tcp-route", "Name": name, "Parents": [{"Name": "tcpgw"}], "Services": [{"Name": svc}]}),
        );
    }
    eventually("conflicted", || {
        has(
            &sim,
            "api-gateway",
            "tcpgw",
            "Conflicted",
            "True",
            "RouteConflict",
        ) && has(&sim, "tcp-route", "db", "Bound", "True", "Bound")
    })
    .await;
    assert_eq!(
        message(&sim, "api-gateway", "tcpgw", "Conflicted"),
        "TCP-based listeners currently only support binding a single route"
    );
    let r = call(
        sim.addr(),
        "DELETE",
        "/v1/config/tcp-route/cache",
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    eventually("no conflict", || {
        has(
            &sim,
            "api-gateway",
            "tcpgw",
            "Conflicted",
            "False",
            "NoConflict",
        )
    })
    .await;
    // A route with no services is never accepted.
    put_ok(
        &sim,
        json!({"Kind": "tcp-route", "Name": "empty", "Parents": [{"Name": "tcpgw"}]}),
    );
    eventually("no upstreams", || {
        has(
            &sim,
            "tcp-route",
            "empty",
            "Accepted",
            "False",
            "NoUpstreamServicesTargeted",
        )
    })
    .await;
    assert_eq!(
        message(&sim, "tcp-route", "empty", "Accepted"),
        "route must target at least one upstream service"
    );
}

#[tokio::test]
async fn status_writes_wake_blocking_lists_and_do_not_loop() {
    let sim = sim();
    http_service(&sim, "web");
    put_ok(&sim, gateway("edge", json!([http_listener("http", 8080)])));
    settled(&sim).await;
    sim.pause_gateway_controller(true);
    put_ok(&sim, route("shop", "edge", "http", "web"));
    let first = get(sim.addr(), "/v1/config/http-route").await;
    assert_eq!(first.json()[0]["Status"], json!({"Conditions": null}));
    let index = first.index();
    let addr = sim.addr();
    let mut waiting = Box::pin(get(
        addr,
        format!("/v1/config/http-route?index={index}&wait=10s"),
    ));
    // Parked while the controller is held...
    if tokio::time::timeout(Duration::from_millis(200), &mut waiting)
        .await
        .is_ok()
    {
        panic!("the list answered before any change");
    }
    sim.pause_gateway_controller(false);
    // ...and woken by its status write.
    let woken = match tokio::time::timeout(LIMIT, waiting).await {
        Ok(r) => r,
        Err(_) => panic!("the status write did not wake the list"),
    };
    assert!(woken.index() > index);
    assert!(woken.json()[0]["Status"]["Conditions"].is_array());
    // Once settled, nothing moves: a status write does not retrigger the controller.
    settled(&sim).await;
    let writes = sim.gateway_status_writes();
    let indexes = sim.indexes();
    let r = get(
        sim.addr(),
        format!("/v1/config/http-route?index={}&wait=300ms", indexes.1),
    )
    .await;
    assert_eq!(r.index(), indexes.1, "no write while idle");
    assert_eq!(sim.gateway_status_writes(), writes);
    assert!(sim.gateway_controller_idle());
}

#[tokio::test]
async fn gateway_kinds_need_mesh_write_and_reads_follow_can_read() {
    let sim = Sim::start(SimOptions {
        acl: true,
        ..quick_options()
    });
    sim.set_token(
        "writer",
        vec![
            Rule::Mesh(Access::Write),
            Rule::Service("edge".into(), Access::Read),
        ],
    );
    sim.set_token("meshread", vec![Rule::Mesh(Access::Read)]);
    sim.set_token(
        "svcread",
        vec![Rule::ServicePrefix(String::new(), Access::Read)],
    );
    let tok = |t: &'static str| [("X-Consul-Token", t)];
    for (token, body, status) in [
        (
            "svcread",
            gateway("edge", json!([http_listener("http", 1)])),
            403,
        ),
        ("svcread", route("shop", "edge", "http", "web"), 403),
        (
            "writer",
            gateway("edge", json!([http_listener("http", 1)])),
            200,
        ),
        ("writer", route("shop", "edge", "http", "web"), 200),
    ] {
        let r = call(
            sim.addr(),
            "PUT",
            "/v1/config",
            &tok(token),
            Some(&body.to_string()),
        )
        .await;
        assert_eq!(r.status, status, "{token}: {}", r.body);
        if status == 403 {
            assert!(
                r.body.contains("lacks permission 'mesh:write'"),
                "{}",
                r.body
            );
        }
    }
    // Routes: mesh:read. The gateway and its bound entry: service:read on the name.
    let cases = [
        ("meshread", "/v1/config/http-route/shop", 200),
        ("svcread", "/v1/config/http-route/shop", 403),
        ("svcread", "/v1/config/api-gateway/edge", 200),
        ("meshread", "/v1/config/api-gateway/edge", 403),
    ];
    for (token, path, status) in cases {
        let r = call(sim.addr(), "GET", path, &tok(token), None).await;
        assert_eq!(r.status, status, "{token} {path}: {}", r.body);
    }
    eventually("bound entry written", || {
        sim.config("bound-api-gateway", "edge").is_some()
    })
    .await;
    let r = call(
        sim.addr(),
        "GET",
        "/v1/config/bound-api-gateway/edge",
        &tok("svcread"),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    // The list drops what the token cannot read, and says so.
    let r = call(
        sim.addr(),
        "GET",
        "/v1/config/http-route",
        &tok("svcread"),
        None,
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, "[]"));
    assert_eq!(r.header("x-consul-results-filtered-by-acls"), Some("true"));
    let r = call(
        sim.addr(),
        "GET",
        "/v1/config/http-route",
        &tok("meshread"),
        None,
    )
    .await;
    assert_eq!(r.json().as_array().map(Vec::len), Some(1));
    // Deleting needs mesh:write too.
    let r = call(
        sim.addr(),
        "DELETE",
        "/v1/config/http-route/shop",
        &tok("meshread"),
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("lacks permission 'mesh:write'"));
}

#[tokio::test]
async fn a_new_route_reads_not_accepted_for_one_pass_before_it_binds() {
    let sim = sim();
    http_service(&sim, "web");
    put_ok(&sim, gateway("edge", json!([http_listener("http", 8080)])));
    settled(&sim).await;
    // Slow passes make the intermediate state observable.
    sim.set_gateway_controller_delay(Duration::from_secs(1));
    put_ok(&sim, route("shop", "edge", "http", "web"));
    let created = sim.config("http-route", "shop").unwrap_or_default()["CreateIndex"]
        .as_u64()
        .unwrap_or(0);
    eventually("accepted, not yet bound", || {
        has(&sim, "http-route", "shop", "Accepted", "True", "Accepted")
            && message(&sim, "http-route", "shop", "Bound")
                == "failed to bind route to gateway edge: route has not been accepted"
    })
    .await;
    let first = sim.config("http-route", "shop").unwrap_or_default()["ModifyIndex"]
        .as_u64()
        .unwrap_or(0);
    assert!(first > created);
    eventually("bound", || {
        has(&sim, "http-route", "shop", "Bound", "True", "Bound")
    })
    .await;
    let second = sim.config("http-route", "shop").unwrap_or_default()["ModifyIndex"]
        .as_u64()
        .unwrap_or(0);
    assert!(second > first, "each status write bumps the ModifyIndex");
}

#[tokio::test]
async fn a_blocking_read_of_one_route_wakes_on_its_status() {
    let sim = sim();
    http_service(&sim, "web");
    put_ok(&sim, gateway("edge", json!([http_listener("http", 8080)])));
    settled(&sim).await;
    let index = get(sim.addr(), "/v1/config/http-route").await.index();
    // Blocks while the route does not exist, then answers once it does.
    let addr = sim.addr();
    let mut waiting = Box::pin(get(
        addr,
        format!("/v1/config/http-route/shop?index={index}&wait=10s"),
    ));
    if tokio::time::timeout(Duration::from_millis(200), &mut waiting)
        .await
        .is_ok()
    {
        panic!("a missing route answered before it existed");
    }
    sim.pause_gateway_controller(true);
    put_ok(&sim, route("shop", "edge", "http", "web"));
    let r = match tokio::time::timeout(LIMIT, waiting).await {
        Ok(r) => r,
        Err(_) => panic!("the create did not wake the read"),
    };
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["Status"], json!({"Conditions": null}));
    let index = r.index();
    let waiting = get(
        addr,
        format!("/v1/config/http-route/shop?index={index}&wait=10s"),
    );
    sim.pause_gateway_controller(false);
    let r = match tokio::time::timeout(LIMIT, waiting).await {
        Ok(r) => r,
        Err(_) => panic!("the status write did not wake the read"),
    };
    assert!(r.index() > index);
    assert!(r.json()["Status"]["Conditions"].is_array());
}
