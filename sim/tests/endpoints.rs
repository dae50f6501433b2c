//! Endpoint behaviour: routing, config entries (§5-§7), the agent (§4, §10) and the
//! catalog/health reads (§2, §3).

mod common;

use common::*;
use consul_sim::{Fault, ServiceSpec, Sim, SimOptions};
use serde_json::{json, Value};

fn sim() -> Sim {
    Sim::start(quick_options())
}

async fn put_json(sim: &Sim, path: &str, body: &Value) -> Resp {
    put(sim.addr(), path, &body.to_string()).await
}

fn sorted(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

// ------------------------------------------------------------------ routing and headers

#[tokio::test]
async fn unknown_paths_wrong_methods_and_options_follow_consul() {
    let sim = sim();
    let r = get(sim.addr(), "/v1/kv/foo").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            404,
            "Invalid URL path: not a recognized HTTP API endpoint\n"
        )
    );
    let r = get(sim.addr(), "/v1/catalog/services/extra").await;
    assert_eq!(r.status, 404);
    let r = get(sim.addr(), "/nope").await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("ensure the path starts with '/v1/'"));

    let cases = [
        ("POST", "/v1/catalog/services", "OPTIONS,GET"),
        ("GET", "/v1/agent/service/register", "OPTIONS,PUT"),
        ("POST", "/v1/config", "OPTIONS,PUT"),
        (
            "PUT",
            "/v1/config/service-defaults/web",
            "OPTIONS,GET,DELETE",
        ),
        ("DELETE", "/v1/agent/service/deregister/x", "OPTIONS,PUT"),
    ];
    for (method, path, allow) in cases {
        let r = call(sim.addr(), method, path, &[], None).await;
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.body, format!("method {method} not allowed"));
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
    }
    let r = call(sim.addr(), "OPTIONS", "/v1/config", &[], None).await;
    assert_eq!((r.status, r.header("allow")), (200, Some("OPTIONS,PUT")));
}

#[tokio::test]
async fn reads_carry_consul_headers() {
    let sim = sim();
    let r = get(sim.addr(), "/v1/catalog/services").await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-consul-knownleader"), Some("true"));
    assert_eq!(r.header("x-consul-lastcontact"), Some("0"));
    assert_eq!(r.header("x-consul-effective-consistency"), Some("leader"));
    assert_eq!(r.header("x-consul-default-acl-policy"), Some("allow"));
    let r = get(sim.addr(), "/v1/catalog/services?stale").await;
    assert_eq!(r.header("x-consul-effective-consistency"), Some("stale"));
    let r = get(sim.addr(), "/v1/config/service-defaults?consistent").await;
    assert_eq!(
        r.header("x-consul-effective-consistency"),
        Some("consistent")
    );
    // Agent endpoints are agent-local: no index.
    let r = get(sim.addr(), "/v1/agent/services").await;
    assert_eq!(r.header("x-consul-index"), None);
    assert_eq!(r.json(), json!({}));
    assert_eq!(
        get(sim.addr(), "/v1/status/leader").await.json(),
        json!("127.0.0.1:8300")
    );
    let me = get(sim.addr(), "/v1/agent/self").await.json();
    assert_eq!(me["Config"]["Datacenter"], json!("dc1"));
    assert_eq!(me["Config"]["NodeName"], json!("sim-agent"));
    let r = get(sim.addr(), "/v1/catalog/services?dc=dc2").await;
    assert_eq!(r.status, 500);
}

#[tokio::test]
async fn namespaces_and_partitions_are_rejected_on_ce_only() {
    let sim = sim();
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 5] = [
        (
            "/v1/catalog/services?ns=default",
            &[],
            "Invalid query parameter: \"ns\" - Namespaces are a Consul Enterprise feature",
        ),
        (
            "/v1/catalog/services?partition=default",
            &[],
            "Invalid query parameter: \"partition\" - Partitions are a Consul Enterprise feature",
        ),
        (
            "/v1/config/service-defaults",
            &[("X-Consul-Namespace", "team")],
            "Invalid header: \"X-Consul-Namespace\" - Namespaces are a Consul Enterprise feature",
        ),
        (
            "/v1/agent/services",
            &[("X-Consul-Partition", "p")],
            "Invalid header: \"X-Consul-Partition\" - Partitions are a Consul Enterprise feature",
        ),
        (
            "/v1/agent/service/x?ns=a",
            &[],
            "Invalid query parameter: \"ns\" - Namespaces are a Consul Enterprise feature",
        ),
    ];
    for (path, headers, want) in cases {
        let r = call(sim.addr(), "GET", path, headers, None).await;
        assert_eq!((r.status, r.body.as_str()), (400, want), "{path}");
    }
    let r = put_json(
        &sim,
        "/v1/agent/service/register?ns=default",
        &json!({"Name": "x"}),
    )
    .await;
    assert_eq!(r.status, 400);
    // Empty values are absent values.
    assert_eq!(
        get(sim.addr(), "/v1/catalog/services?ns=").await.status,
        200
    );
    sim.set_enterprise(true);
    for (path, headers, _) in cases {
        let r = call(sim.addr(), "GET", path, headers, None).await;
        assert_ne!(r.status, 400, "{path} with enterprise on");
    }
}

// ------------------------------------------------------------------ config entries

#[tokio::test]
async fn config_decode_errors_are_400() {
    let sim = sim();
    let cases: Vec<(&str, &str)> = vec![
        ("", "Request decoding failed: EOF"),
        ("{not json", "Request decoding failed: "),
        (r#"{"Name":"x"}"#, "Request decoding failed: Payload does not contain a kind/Kind key at the top level"),
        (r#"{"Kind":"foo","Name":"x"}"#, "Request decoding failed: invalid config entry kind: foo"),
        (r#"{"Kind":"service-defaults","Name":"x","Bogus":1}"#, "invalid config key \"Bogus\""),
        (r#"{"Kind":"service-defaults","Name":"x","Namespace":"default"}"#,
         "invalid config key \"Namespace\", namespaces are a consul enterprise feature"),
        (r#"{"Kind":"ingress-gateway","Name":"x","Listeners":[{"Port":1,"Services":[{"Name":"a","Namespace":"n"}]}]}"#,
         "invalid config key \"Listeners[0].Services[0].Namespace\", namespaces are a consul enterprise feature"),
    ];
    for (body, want) in cases {
        let r = put(sim.addr(), "/v1/config", body).await;
        assert_eq!(r.status, 400, "{body}");
        assert!(
            r.body.starts_with("Request decoding failed: "),
            "{body}: {}",
            r.body
        );
        assert!(r.body.contains(want), "{body}: got {:?}", r.body);
    }
    assert_eq!(sim.state_changing_writes(), 0);
}

#[tokio::test]
async fn ingress_validation_errors_are_500_with_consul_texts() {
    let sim = sim();
    let listeners = |l: Value| json!({"Kind": "ingress-gateway", "Name": "edge", "Listeners": l});
    let cases: Vec<(Value, &str)> = vec![
        (listeners(json!([{"Port": 80, "Protocol": "http", "Services": [{"Name": "a"}]},
                          {"Port": 80, "Protocol": "http", "Services": [{"Name": "b"}]}])),
         "port 80 declared on two listeners"),
        (listeners(json!([{"Port": 80, "Protocol": "udp", "Services": [{"Name": "a"}]}])),
         "protocol must be 'tcp', 'http', 'http2', or 'grpc'. 'udp' is an unsupported protocol"),
        (listeners(json!([{"Port": 80, "Protocol": "http", "Services": []}])),
         "No service declared for listener with port 80"),
        (listeners(json!([{"Port": 81, "Protocol": "tcp", "Services": [{"Name": "a"}, {"Name": "b"}]}])),
         "Multiple services per listener are only supported for L7 protocols, 'http', 'grpc' and 'http2' (listener on port 81)"),
        (listeners(json!([{"Port": 82, "Services": [{"Name": "*"}]}])),
         "Wildcard service name is only valid for protocol = 'http' (listener on port 82)"),
        (listeners(json!([{"Port": 83, "Protocol": "TCP", "Services": [{"Name": "a", "Hosts": ["a.example.com"]}]}])),
         "Associating hosts to a service is not supported for the tcp protocol (listener on port 83)"),
        (listeners(json!([{"Port": 84, "Protocol": "http", "Services": [{"Name": ""}]}])),
         "Service name cannot be blank (listener on port 84)"),
        (listeners(json!([{"Port": 85, "Protocol": "http", "Services": [{"Name": "*", "Hosts": ["x.example.com"]}]}])),
         "Associating hosts to a wildcard service is not supported (listener on port 85)"),
        (listeners(json!([{"Port": 86, "Protocol": "http", "Services": [{"Name": "a"}, {"Name": "a"}]}])),
         "Service a cannot be added multiple times (listener on port 86)"),
        (listeners(json!([{"Port": 87, "Protocol": "http", "Services": [{"Name": "a", "Hosts": ["x.example.com"]},
                                                                        {"Name": "b", "Hosts": ["x.example.com"]}]}])),
         "Hosts must be unique within a specific listener (listener on port 87)"),
        (listeners(json!([{"Port": 88, "Protocol": "http", "Services": [{"Name": "a", "Hosts": ["bad..host"]}]}])),
         "Host \"bad..host\" must be a valid DNS hostname"),
        (listeners(json!([{"Port": 89, "Protocol": "http", "Services": [{"Name": "a", "Hosts": ["a.*.example.com"]}]}])),
         "Host \"a.*.example.com\" is not valid, a wildcard specifier is only allowed as the leftmost label"),
        (json!({"Kind": "ingress-gateway", "Name": "edge", "TLS": {"Enabled": true},
                "Listeners": [{"Port": 90, "Protocol": "http", "Services": [{"Name": "a", "Hosts": ["*"]}]}]}),
         "Host '*' is not allowed when TLS is enabled, all hosts must be valid DNS records to add as a DNSSAN"),
        (json!({"Kind": "service-defaults", "Name": "*"}),
         "service-defaults name must be the name of a service, and not a wildcard"),
        (json!({"Kind": "service-defaults", "Name": ""}), "Name is required"),
        (json!({"Kind": "proxy-defaults", "Name": "mine"}), "invalid name (\"mine\"), only \"global\" is supported"),
    ];
    for (body, want) in cases {
        let r = put_json(&sim, "/v1/config", &body).await;
        assert_eq!((r.status, r.body.as_str()), (500, want), "{body}");
    }
    assert_eq!(sim.state_changing_writes(), 0);
    assert_eq!(sim.indexes().1, 0, "rejected writes leave the index alone");
}

#[tokio::test]
async fn cas_identical_writes_and_readback() {
    let sim = sim();
    let web = json!({"Kind": "service-defaults", "Name": "web", "Protocol": "HTTP"});
    let r = put_json(&sim, "/v1/config?cas=0", &web).await;
    assert_eq!((r.status, r.body.as_str()), (200, "true"));
    let got = get(sim.addr(), "/v1/config/service-defaults/web").await;
    let entry = got.json();
    assert_eq!(entry["Protocol"], json!("http"), "protocol is lower-cased");
    let modify = entry["ModifyIndex"].as_u64().expect("ModifyIndex");
    assert_eq!(entry["CreateIndex"].as_u64(), Some(modify));
    assert_eq!(got.index(), sim.indexes().1);
    let writes = sim.state_changing_writes();

    // Identical content: `true`, no index bump, even with a create-only or stale CAS,
    // and also when the GET result (with its indexes) is written back.
    for (path, body) in [
        ("/v1/config", web.clone()),
        ("/v1/config?cas=0", web.clone()),
        ("/v1/config?cas=999", web.clone()),
        ("/v1/config", entry.clone()),
    ] {
        let r = put_json(&sim, path, &body).await;
        assert_eq!((r.status, r.body.as_str()), (200, "true"), "{path}");
        assert_eq!(sim.indexes().1, modify, "{path} bumped the index");
    }
    assert_eq!(sim.state_changing_writes(), writes);

    let grpc = json!({"Kind": "service-defaults", "Name": "web", "Protocol": "grpc"});
    for path in [
        "/v1/config?cas=0",
        &format!("/v1/config?cas={}", modify + 7),
    ] {
        let r = put_json(&sim, path, &grpc).await;
        assert_eq!((r.status, r.body.as_str()), (200, "false"), "{path}");
    }
    let r = put_json(&sim, "/v1/config?cas=abc", &grpc).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.body, "strconv.ParseUint: parsing \"abc\": invalid syntax");
    let r = put_json(&sim, &format!("/v1/config?cas={modify}"), &grpc).await;
    assert_eq!((r.status, r.body.as_str()), (200, "true"));
    let entry = get(sim.addr(), "/v1/config/service-defaults/web")
        .await
        .json();
    assert_eq!(entry["CreateIndex"].as_u64(), Some(modify));
    assert!(entry["ModifyIndex"].as_u64() > Some(modify));
    assert_eq!(sim.state_changing_writes(), writes + 1);
    assert_eq!(
        sim.config("service-defaults", "web"),
        Some(entry),
        "control API and GET agree"
    );
}

#[tokio::test]
async fn ingress_reads_back_with_consul_shape() {
    let sim = sim();
    sim.put_config(
        json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}}),
        None,
    )
    .expect("proxy-defaults");
    let body = json!({"kind": "ingress-gateway", "name": "edge", "meta": {"managed-by": "x"},
        "listeners": [{"port": 8080, "protocol": "HTTP",
                       "services": [{"name": "web", "hosts": ["web.example.com"]}, {"name": "api"}]}]});
    let r = put_json(&sim, "/v1/config", &body).await;
    assert_eq!((r.status, r.body.as_str()), (200, "true"), "{}", r.body);
    let e = get(sim.addr(), "/v1/config/ingress-gateway/edge")
        .await
        .json();
    assert_eq!(e["Kind"], json!("ingress-gateway"));
    assert_eq!(e["TLS"], json!({"Enabled": false}));
    assert_eq!(e["Meta"], json!({"managed-by": "x"}));
    assert_eq!(e["Listeners"][0]["Protocol"], json!("http"));
    assert_eq!(
        e["Listeners"][0]["Services"][0],
        json!({"Name": "web", "Hosts": ["web.example.com"]})
    );
    assert_eq!(
        e["Listeners"][0]["Services"][1],
        json!({"Name": "api", "Hosts": null})
    );
    let list = get(sim.addr(), "/v1/config/ingress-gateway").await.json();
    assert_eq!(list.as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn listener_protocols_must_match_effective_service_protocols() {
    let sim = sim();
    let gateway = json!({"Kind": "ingress-gateway", "Name": "edge",
        "Listeners": [{"Port": 8080, "Protocol": "http", "Services": [{"Name": "web"}, {"Name": "*"}]},
                      {"Port": 9000, "Protocol": "tcp", "Services": [{"Name": "db"}]}]});
    let mismatch = "service \"web\" has protocol \"tcp\", which does not match defined listener protocol \"http\"";
    let r = put_json(&sim, "/v1/config", &gateway).await;
    assert_eq!((r.status, r.body.as_str()), (500, mismatch));
    // An empty service-defaults Protocol means tcp, whatever proxy-defaults says.
    sim.put_config(
        json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}}),
        None,
    )
    .expect("proxy-defaults");
    sim.put_config(json!({"Kind": "service-defaults", "Name": "web"}), None)
        .expect("sd");
    let r = put_json(&sim, "/v1/config", &gateway).await;
    assert_eq!((r.status, r.body.as_str()), (500, mismatch));
    sim.put_config(
        json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"}),
        None,
    )
    .expect("sd");
    // db now resolves to http through proxy-defaults: the tcp listener is strict on write.
    let r = put_json(&sim, "/v1/config", &gateway).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (500, "service \"db\" has protocol \"http\", which does not match defined listener protocol \"tcp\"")
    );
    sim.put_config(
        json!({"Kind": "service-defaults", "Name": "db", "Protocol": "tcp"}),
        None,
    )
    .expect("sd");
    let r = put_json(&sim, "/v1/config", &gateway).await;
    assert_eq!((r.status, r.body.as_str()), (200, "true"));
    // The control API judges the same way.
    let bad = json!({"Kind": "ingress-gateway", "Name": "other",
        "Listeners": [{"Port": 1, "Protocol": "grpc", "Services": [{"Name": "web"}]}]});
    assert_eq!(
        sim.put_config(bad, None),
        Err((500, "service \"web\" has protocol \"http\", which does not match defined listener protocol \"grpc\"".to_string()))
    );
}

#[tokio::test]
async fn protocol_sources_cannot_break_referencing_gateways() {
    let sim = sim();
    sim.put_config(
        json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"}),
        None,
    )
    .expect("sd");
    sim.put_config(
        json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}}),
        None,
    )
    .expect("pd");
    sim.put_config(json!({"Kind": "ingress-gateway", "Name": "edge",
        "Listeners": [{"Port": 8080, "Protocol": "http", "Services": [{"Name": "web"}, {"Name": "api"}]}]}), None)
        .expect("ingress");
    let web_tcp = "service \"web\" has protocol \"tcp\", which does not match defined listener protocol \"http\"";
    let r = put_json(
        &sim,
        "/v1/config",
        &json!({"Kind": "service-defaults", "Name": "web", "Protocol": "tcp"}),
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (500, web_tcp));
    // api has no service-defaults: it depends on proxy-defaults.
    let r = put_json(
        &sim,
        "/v1/config",
        &json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "grpc"}}),
    )
    .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (500, "service \"api\" has protocol \"grpc\", which does not match defined listener protocol \"http\"")
    );
    let r = call(
        sim.addr(),
        "DELETE",
        "/v1/config/proxy-defaults/global",
        &[],
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (500, "service \"api\" has protocol \"tcp\", which does not match defined listener protocol \"http\"")
    );
    // Deleting web's entry is fine while proxy-defaults still resolves it to http.
    let r = call(
        sim.addr(),
        "DELETE",
        "/v1/config/service-defaults/web",
        &[],
        None,
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, "{}"));
    // Removing the gateway (no protocol check on its delete) frees the sources.
    let r = call(
        sim.addr(),
        "DELETE",
        "/v1/config/ingress-gateway/edge",
        &[],
        None,
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, "{}"));
    let r = call(
        sim.addr(),
        "DELETE",
        "/v1/config/proxy-defaults/global",
        &[],
        None,
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, "{}"));
}

#[tokio::test]
async fn deletes_and_reads_follow_consul() {
    let sim = sim();
    let r = call(
        sim.addr(),
        "DELETE",
        "/v1/config/service-defaults/none",
        &[],
        None,
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, "{}"));
    assert_eq!(sim.indexes().1, 0, "deleting nothing moves nothing");
    sim.put_config(json!({"Kind": "service-defaults", "Name": "web"}), None)
        .expect("sd");
    let idx = sim.indexes().1;
    let cases = [
        ("/v1/config/service-defaults/web?cas=0", 200, "false"),
        (
            &format!("/v1/config/service-defaults/web?cas={}", idx + 1) as &str,
            200,
            "false",
        ),
        (
            "/v1/config/service-defaults/web?cas=x",
            400,
            "Failed to parse CAS value: strconv.ParseUint: parsing \"x\": invalid syntax",
        ),
        (
            "/v1/config/bogus/web",
            400,
            "invalid config entry kind: bogus",
        ),
        (
            "/v1/config/service-defaults",
            404,
            "Must provide both a kind and name to delete",
        ),
        (
            &format!("/v1/config/service-defaults/web?cas={idx}") as &str,
            200,
            "true",
        ),
        ("/v1/config/service-defaults/web?cas=1", 200, "false"),
    ];
    for (path, status, body) in cases {
        let r = call(sim.addr(), "DELETE", path, &[], None).await;
        assert_eq!((r.status, r.body.as_str()), (status, body), "DELETE {path}");
    }
    assert_eq!(
        get(sim.addr(), "/v1/config/service-defaults/web")
            .await
            .status,
        404
    );
    let cases = [
        (
            "/v1/config/bogus/x",
            500,
            "invalid config entry kind: bogus",
        ),
        ("/v1/config/bogus", 500, "invalid config entry kind: bogus"),
        (
            "/v1/config/a/b/c",
            404,
            "Must provide either a kind or both kind and name",
        ),
        (
            "/v1/config/ingress-gateway?filter=Name%20%3D%3D%20%22x%22",
            500,
            "filtering not supported for config entry kind=ingress-gateway",
        ),
    ];
    for (path, status, body) in cases {
        let r = get(sim.addr(), path).await;
        assert_eq!((r.status, r.body.as_str()), (status, body), "GET {path}");
    }
}

#[tokio::test]
async fn service_defaults_list_supports_filters() {
    let sim = sim();
    for (name, protocol) in [("a", "http"), ("b", "grpc"), ("c", "http")] {
        sim.put_config(
            json!({"Kind": "service-defaults", "Name": name, "Protocol": protocol}),
            None,
        )
        .expect("sd");
    }
    let r = get(
        sim.addr(),
        format!(
            "/v1/config/service-defaults?filter={}",
            enc("Protocol == \"http\"")
        ),
    )
    .await;
    let names: Vec<String> = r
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["Name"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(names, vec!["a", "c"]);
    let r = get(
        sim.addr(),
        format!("/v1/config/service-defaults?filter={}", enc("Protocol ==")),
    )
    .await;
    assert_eq!(r.status, 500);
    assert!(
        r.body
            .starts_with("Failed to create boolean expression evaluator: "),
        "{}",
        r.body
    );
}

// ------------------------------------------------------------------ catalog

#[tokio::test]
async fn catalog_services_filters_instances_before_grouping() {
    let sim = sim();
    sim.add_service(ServiceSpec::new("web", &["gw-a", "v1", "gw-a"]));
    let mut web2 = ServiceSpec::new("web", &["gw-b"]);
    web2.node = "node-2".into();
    sim.add_service(web2);
    let mut proxy = ServiceSpec::new("web-sidecar-proxy", &["gw-a"]);
    proxy.kind = "connect-proxy".into();
    sim.add_service(proxy);
    let mut gateway = ServiceSpec::new("edge", &[]);
    gateway.kind = "ingress-gateway".into();
    sim.add_service(gateway);
    let mut mixed = ServiceSpec::new("mixed", &["typical"]);
    mixed.id = "mixed-1".into();
    sim.add_service(mixed);
    let mut mixed_proxy = ServiceSpec::new("mixed", &["from-proxy"]);
    mixed_proxy.id = "mixed-2".into();
    mixed_proxy.kind = "connect-proxy".into();
    sim.add_service(mixed_proxy);

    let all = get(sim.addr(), "/v1/catalog/services").await.json();
    assert_eq!(
        sorted(&all["web"]),
        vec!["gw-a", "gw-b", "v1"],
        "tag union, de-duplicated"
    );
    assert_eq!(
        all["consul"],
        json!([]),
        "the server's own service, tagless as []"
    );
    assert_eq!(all["edge"], json!([]));

    type Expected<'a> = Vec<(&'a str, Vec<&'a str>)>;
    let cases: Vec<(&str, Expected)> = vec![
        (
            "ServiceKind == \"\"",
            vec![
                ("consul", vec![]),
                ("mixed", vec!["typical"]),
                ("web", vec!["gw-a", "gw-b", "v1"]),
            ],
        ),
        (
            "ServiceKind != \"connect-proxy\"",
            vec![
                ("consul", vec![]),
                ("edge", vec![]),
                ("mixed", vec!["typical"]),
                ("web", vec!["gw-a", "gw-b", "v1"]),
            ],
        ),
        (
            "ServiceKind == \"connect-proxy\"",
            vec![
                ("mixed", vec!["from-proxy"]),
                ("web-sidecar-proxy", vec!["gw-a"]),
            ],
        ),
        (
            "\"gw-a\" in ServiceTags and ServiceKind == \"\"",
            vec![("web", vec!["gw-a", "v1"])],
        ),
        (
            "ServiceName == \"web\" and Node == \"node-2\"",
            vec![("web", vec!["gw-b"])],
        ),
        (
            "ServiceName != \"web\" and ServiceKind == \"\"",
            vec![("consul", vec![]), ("mixed", vec!["typical"])],
        ),
    ];
    for (expr, want) in cases {
        let r = get(
            sim.addr(),
            format!("/v1/catalog/services?filter={}", enc(expr)),
        )
        .await;
        assert_eq!(r.status, 200, "{expr}: {}", r.body);
        let got = r.json();
        let obj = got.as_object().expect("object");
        let mut names: Vec<&str> = obj.keys().map(String::as_str).collect();
        names.sort();
        let want_names: Vec<&str> = want.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, want_names, "{expr}");
        for (name, tags) in want {
            assert_eq!(sorted(&got[name]), tags, "{expr}: tags of {name}");
        }
    }
    for expr in [
        "ServiceKind = \"\"",
        "Bogus == \"x\"",
        "ServiceTags == \"x\"",
        "ServiceKind == \"\" and",
    ] {
        let r = get(
            sim.addr(),
            format!("/v1/catalog/services?filter={}", enc(expr)),
        )
        .await;
        assert_eq!(r.status, 500, "{expr}");
        assert!(
            r.body
                .starts_with("Failed to create boolean expression evaluator: "),
            "{expr}: {}",
            r.body
        );
    }
}

#[tokio::test]
async fn catalog_and_health_service_reads() {
    let sim = sim();
    sim.add_service(ServiceSpec::new("web", &["a", "b"]));
    let mut other = ServiceSpec::new("web", &["a"]);
    other.node = "node-2".into();
    other.port = 9090;
    sim.add_service(other);
    let r = get(sim.addr(), "/v1/catalog/service/web").await;
    assert_eq!(r.index(), sim.indexes().0);
    let rows = r.json();
    assert_eq!(rows.as_array().map(Vec::len), Some(2));
    assert_eq!(rows[0]["ServiceName"], json!("web"));
    assert_eq!(rows[0]["Node"], json!("node-1"));
    assert_eq!(rows[0]["ServiceKind"], json!(""));
    assert_eq!(rows[1]["ServicePort"], json!(9090));
    assert_eq!(
        get(sim.addr(), "/v1/catalog/service/web?tag=b")
            .await
            .json()
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(
        get(sim.addr(), "/v1/catalog/service/nope").await.json(),
        json!([])
    );
    let health = get(sim.addr(), "/v1/health/service/web?passing")
        .await
        .json();
    assert_eq!(health.as_array().map(Vec::len), Some(2));
    assert_eq!(health[0]["Service"]["Service"], json!("web"));
    assert_eq!(health[0]["Node"]["Node"], json!("node-1"));
    assert_eq!(health[0]["Checks"][0]["CheckID"], json!("serfHealth"));
    sim.remove_service("node-2", "web");
    assert_eq!(
        get(sim.addr(), "/v1/health/service/web")
            .await
            .json()
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

// ------------------------------------------------------------------ agent

#[tokio::test]
async fn register_and_deregister_with_consul_semantics() {
    let sim = sim();
    let reg = json!({"ID": "ing-1", "Name": "edge-ingress", "Port": 9997, "Address": "10.0.0.5",
        "Tags": ["traefik.enable=true"], "Meta": {"managed-by": "ism"},
        "Check": {"CheckID": "ing-1-ready", "HTTP": "http://10.0.0.5:8443/ready", "Interval": "10s", "Timeout": "2s"}});
    let (services_before, _) = sim.indexes();
    let r = put_json(
        &sim,
        "/v1/agent/service/register?replace-existing-checks",
        &reg,
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    assert_eq!(sim.state_changing_writes(), 1);
    let (services_after, _) = sim.indexes();
    assert!(services_after > services_before);
    // At once in the catalog, on the agent's node.
    let row = get(sim.addr(), "/v1/catalog/service/edge-ingress")
        .await
        .json();
    assert_eq!(row[0]["Node"], json!("sim-agent"));
    assert_eq!(row[0]["ServiceTags"], json!(["traefik.enable=true"]));
    // Same registration again: nothing changes.
    let r = put_json(
        &sim,
        "/v1/agent/service/register?replace-existing-checks",
        &reg,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(sim.indexes().0, services_after);
    assert_eq!(sim.state_changing_writes(), 1);

    let svc = get(sim.addr(), "/v1/agent/service/ing-1").await;
    let body = svc.json();
    assert_eq!(
        svc.header("x-consul-contenthash"),
        body["ContentHash"].as_str()
    );
    assert_eq!(body["Service"], json!("edge-ingress"));
    assert_eq!(body["Meta"], json!({"managed-by": "ism"}));
    assert!(body.get("Kind").is_none(), "Kind omitted when empty");
    assert_eq!(sim.agent_service("ing-1"), Some(body));
    assert_eq!(sim.check_status("ing-1-ready").as_deref(), Some("critical"));
    let checks = get(sim.addr(), "/v1/agent/checks").await.json();
    assert_eq!(checks["ing-1-ready"]["ServiceID"], json!("ing-1"));
    assert_eq!(
        checks["ing-1-ready"]["Definition"]["HTTP"],
        json!("http://10.0.0.5:8443/ready")
    );
    assert_eq!(checks["ing-1-ready"]["Interval"], json!("10s"));
    assert_eq!(checks, sim.agent_checks());

    let r = get(sim.addr(), "/v1/agent/service/nope").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (404, "unknown service ID: nope")
    );
    let r = put(sim.addr(), "/v1/agent/service/deregister/edge-ingress", "").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (404, "Unknown service ID \"edge-ingress\". Ensure that the service ID is passed, not the service name.")
    );
    let r = put(sim.addr(), "/v1/agent/service/deregister/ing-1", "").await;
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    assert_eq!(
        get(sim.addr(), "/v1/catalog/service/edge-ingress")
            .await
            .json(),
        json!([])
    );
    assert_eq!(sim.agent_checks(), json!({}));
    assert_eq!(get(sim.addr(), "/v1/agent/service/ing-1").await.status, 404);
}

#[tokio::test]
async fn registration_errors_are_400_with_consul_texts() {
    let sim = sim();
    let cases: Vec<(Value, &str)> = vec![
        (json!({"Port": 1}), "Missing service name"),
        (json!({"Name": "a", "Address": "0.0.0.0"}), "Invalid service address"),
        (json!({"Name": "a", "Check": {"ID": "x", "TTL": "10s"}}), "Request decode failed: json: unknown field \"ID\""),
        (json!({"Name": "a", "Meta": {"consul-owner": "x"}}),
         "Invalid Service Meta: Couldn't load metadata pair ('consul-owner', 'x'): Key prefix 'consul-' is reserved for internal use"),
        (json!({"Name": "a", "Check": {"HTTP": "http://x/"}}),
         "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks"),
        (json!({"Name": "a", "Check": {"TTL": "1s", "Status": "fine"}}),
         "Status for checks must 'passing', 'warning', 'critical'"),
    ];
    for (body, want) in cases {
        let r = put_json(&sim, "/v1/agent/service/register", &body).await;
        assert_eq!((r.status, r.body.as_str()), (400, want), "{body}");
    }
    let r = put(sim.addr(), "/v1/agent/service/register", "{").await;
    assert_eq!(r.status, 400);
    assert!(r.body.starts_with("Request decode failed: "));
    assert_eq!(sim.state_changing_writes(), 0);
}

#[tokio::test]
async fn checks_keep_status_and_replace_existing_checks_prunes() {
    let sim = sim();
    let reg = |checks: Value| json!({"ID": "s1", "Name": "svc", "Checks": checks});
    let r = put_json(
        &sim,
        "/v1/agent/service/register",
        &reg(json!([{"TTL": "30s", "Status": "passing"}, {"CheckID": "extra", "TTL": "30s"}])),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(sim.check_status("service:s1:1").as_deref(), Some("passing"));
    assert_eq!(sim.check_status("extra").as_deref(), Some("critical"));
    assert_eq!(
        sim.agent_checks()["service:s1:1"]["Name"],
        json!("Service 'svc' check")
    );
    // Re-registering without `Status` keeps the previous status; unlisted checks stay.
    let r = put_json(
        &sim,
        "/v1/agent/service/register",
        &reg(json!([{"CheckID": "service:s1:1", "TTL": "30s"}])),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(sim.check_status("service:s1:1").as_deref(), Some("passing"));
    assert_eq!(sim.check_status("extra").as_deref(), Some("critical"));
    for query in [
        "?replace-existing-checks=false",
        "?replace-existing-checks=true",
    ] {
        let r = put_json(
            &sim,
            &format!("/v1/agent/service/register{query}"),
            &reg(json!([{"CheckID": "service:s1:1", "TTL": "30s"}])),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        sim.check_status("extra"),
        None,
        "pruned by replace-existing-checks=true"
    );
    assert_eq!(sim.check_status("service:s1:1").as_deref(), Some("passing"));
}

#[tokio::test]
async fn agent_service_hash_blocking() {
    let sim = sim();
    let reg = json!({"ID": "s1", "Name": "svc", "Tags": ["a"]});
    assert_eq!(
        put_json(&sim, "/v1/agent/service/register", &reg)
            .await
            .status,
        200
    );
    let first = get(sim.addr(), "/v1/agent/service/s1").await;
    let hash = first
        .header("x-consul-contenthash")
        .expect("hash")
        .to_string();
    // A stale hash answers at once.
    let r = get(sim.addr(), "/v1/agent/service/s1?hash=stale&wait=10s").await;
    assert_eq!(r.header("x-consul-contenthash"), Some(hash.as_str()));
    // The current hash blocks until the service changes.
    let addr = sim.addr();
    let mut fut = Box::pin(get(
        addr,
        format!("/v1/agent/service/s1?hash={hash}&wait=10s"),
    ));
    if tokio::time::timeout(std::time::Duration::from_millis(300), &mut fut)
        .await
        .is_ok()
    {
        panic!("hash watch answered without a change");
    }
    let changed = json!({"ID": "s1", "Name": "svc", "Tags": ["b"]});
    assert_eq!(
        put_json(&sim, "/v1/agent/service/register", &changed)
            .await
            .status,
        200
    );
    let r = tokio::time::timeout(LIMIT, fut)
        .await
        .expect("hash watch woke");
    assert_ne!(r.header("x-consul-contenthash"), Some(hash.as_str()));
    assert_eq!(r.json()["Tags"], json!(["b"]));
    // Losing the registration wakes a hash watcher with the 404.
    let hash = r.header("x-consul-contenthash").expect("hash").to_string();
    let mut fut = Box::pin(get(
        addr,
        format!("/v1/agent/service/s1?hash={hash}&wait=10s"),
    ));
    if tokio::time::timeout(std::time::Duration::from_millis(300), &mut fut)
        .await
        .is_ok()
    {
        panic!("hash watch answered without a change");
    }
    sim.agent_forget_services();
    let r = tokio::time::timeout(LIMIT, fut)
        .await
        .expect("hash watch woke");
    assert_eq!((r.status, r.body.as_str()), (404, "unknown service ID: s1"));
    assert_eq!(
        get(sim.addr(), "/v1/catalog/service/svc").await.json(),
        json!([])
    );
}

#[tokio::test]
async fn http_checks_run_against_their_urls() {
    let sim = Sim::start(SimOptions {
        run_checks: true,
        ..quick_options()
    });
    let base = sim.url();
    sim.inject(Fault {
        method: None,
        path_prefix: "/v1/agent/self".into(),
        status: 429,
        body: "slow down".into(),
        count: usize::MAX,
    });
    let reg = json!({"ID": "s1", "Name": "svc", "Checks": [
        {"CheckID": "ok", "HTTP": format!("{base}/v1/status/leader"), "Interval": "1s"},
        {"CheckID": "missing", "HTTP": format!("{base}/v1/nope"), "Interval": "1s"},
        {"CheckID": "limited", "HTTP": format!("{base}/v1/agent/self"), "Interval": "100ms"}]});
    assert_eq!(
        put_json(&sim, "/v1/agent/service/register", &reg)
            .await
            .status,
        200
    );
    let sim_ref = &sim;
    eventually("checks ran", || {
        sim_ref.check_status("ok").as_deref() == Some("passing")
            && sim_ref.check_status("limited").as_deref() == Some("warning")
    })
    .await;
    assert_eq!(sim.check_status("missing").as_deref(), Some("critical"));
    let checks = sim.agent_checks();
    assert!(
        checks["ok"]["Output"]
            .as_str()
            .unwrap_or("")
            .contains("200 OK"),
        "{}",
        checks["ok"]
    );
    // Health reads see the statuses; `passing` filters on them.
    let health = get(sim.addr(), "/v1/health/service/svc").await.json();
    let statuses: Vec<&str> = health[0]["Checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| c["Status"].as_str().unwrap_or(""))
        .collect();
    assert!(
        statuses.contains(&"warning") && statuses.contains(&"critical"),
        "{statuses:?}"
    );
    assert_eq!(
        get(sim.addr(), "/v1/health/service/svc?passing")
            .await
            .json(),
        json!([])
    );
    let r = put_json(&sim, "/v1/agent/service/register?replace-existing-checks",
        &json!({"ID": "s1", "Name": "svc", "Check": {"CheckID": "ok", "HTTP": format!("{base}/v1/status/leader"), "Interval": "1s"}})).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        get(sim.addr(), "/v1/health/service/svc?passing")
            .await
            .json()
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}
