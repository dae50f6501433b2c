//! ACLs (§8), TLS and mutual TLS, fault injection and listener control (§10, §11.7).

mod common;

use common::*;
use consul_sim::{Access, Fault, Rule, ServiceSpec, Sim, SimOptions, TestPki};
use serde_json::{json, Value};

fn acl_sim() -> Sim {
    Sim::start(SimOptions {
        acl: true,
        ..quick_options()
    })
}

async fn as_token(sim: &Sim, token: &str, method: &str, path: &str, body: Option<&Value>) -> Resp {
    let text = body.map(Value::to_string);
    call(
        sim.addr(),
        method,
        path,
        &[("X-Consul-Token", token)],
        text.as_deref(),
    )
    .await
}

fn denied(resp: &Resp, permission: &str) {
    assert_eq!(resp.status, 403, "{}", resp.body);
    let prefix = "Permission denied: token with AccessorID '";
    assert!(resp.body.starts_with(prefix), "{}", resp.body);
    let rest = &resp.body[prefix.len()..];
    let (accessor, tail) = rest.split_once('\'').expect("accessor quoted");
    assert_eq!(
        accessor.split('-').map(str::len).collect::<Vec<_>>(),
        vec![8, 4, 4, 4, 12]
    );
    assert_eq!(
        tail,
        format!(" lacks permission {permission}"),
        "{}",
        resp.body
    );
}

#[tokio::test]
async fn unknown_tokens_are_acl_not_found() {
    let sim = acl_sim();
    let cases = [
        ("GET", "/v1/catalog/services", None),
        ("GET", "/v1/config/service-defaults", None),
        ("GET", "/v1/agent/services", None),
        (
            "PUT",
            "/v1/agent/service/register",
            Some(json!({"Name": "web"})),
        ),
        (
            "PUT",
            "/v1/config",
            Some(json!({"Kind": "service-defaults", "Name": "web"})),
        ),
    ];
    for (method, path, body) in cases {
        let r = as_token(&sim, "no-such-token", method, path, body.as_ref()).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (403, "ACL not found"),
            "{method} {path}"
        );
        assert_eq!(r.header("x-consul-default-acl-policy"), Some("deny"));
    }
}

#[tokio::test]
async fn writes_need_the_documented_permissions() {
    let sim = acl_sim();
    sim.set_token(
        "daemon",
        vec![
            Rule::Service("edge-ingress".into(), Access::Write),
            Rule::ServicePrefix(String::new(), Access::Read),
            Rule::ServicePrefix("web".into(), Access::Write),
            Rule::Service("web-admin".into(), Access::Read),
            Rule::NodePrefix(String::new(), Access::Read),
        ],
    );
    sim.set_token("operator", vec![Rule::Operator(Access::Write)]);
    sim.set_token(
        "mesh-reader",
        vec![Rule::Mesh(Access::Read), Rule::Operator(Access::Write)],
    );
    let reg = |name: &str| json!({"ID": name, "Name": name, "Port": 1});

    let r = as_token(
        &sim,
        "daemon",
        "PUT",
        "/v1/agent/service/register",
        Some(&reg("edge-ingress")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = as_token(
        &sim,
        "daemon",
        "PUT",
        "/v1/agent/service/register",
        Some(&reg("other")),
    )
    .await;
    denied(&r, "'service:write' on \"other\"");
    // The exact rule beats the longer-matching prefix.
    let r = as_token(
        &sim,
        "daemon",
        "PUT",
        "/v1/agent/service/register",
        Some(&reg("web-admin")),
    )
    .await;
    denied(&r, "'service:write' on \"web-admin\"");
    let r = as_token(
        &sim,
        "daemon",
        "PUT",
        "/v1/agent/service/register",
        Some(&reg("webshop")),
    )
    .await;
    assert_eq!(r.status, 200);
    // Re-using an ID under another name needs write on the old name too.
    sim.set_token(
        "edge-only",
        vec![Rule::Service("edge-ingress".into(), Access::Write)],
    );
    let moved = json!({"ID": "webshop", "Name": "edge-ingress", "Port": 1});
    let r = as_token(
        &sim,
        "edge-only",
        "PUT",
        "/v1/agent/service/register",
        Some(&moved),
    )
    .await;
    denied(&r, "'service:write' on \"webshop\"");
    let r = as_token(
        &sim,
        "operator",
        "PUT",
        "/v1/agent/service/register",
        Some(&reg("x")),
    )
    .await;
    denied(&r, "'service:write' on \"x\"");

    // Anonymous: the long text.
    let r = call(
        sim.addr(),
        "PUT",
        "/v1/agent/service/register",
        &[],
        Some(&reg("web").to_string()),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body, "Permission denied: anonymous token lacks permission 'service:write' on \"web\". The anonymous token is used implicitly when a request does not specify a token.");

    // Validation comes before ACLs.
    let r = as_token(
        &sim,
        "operator",
        "PUT",
        "/v1/agent/service/register",
        Some(&json!({"Name": "x", "Address": "::"})),
    )
    .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (400, "Invalid service address")
    );
    let bad_gateway = json!({"Kind": "ingress-gateway", "Name": "edge", "Listeners": [{"Port": 1, "Protocol": "http"}]});
    let r = as_token(&sim, "daemon", "PUT", "/v1/config", Some(&bad_gateway)).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (500, "No service declared for listener with port 1")
    );

    // ingress-gateway needs mesh:write; operator:write stands in only without a mesh rule.
    let gateway = json!({"Kind": "ingress-gateway", "Name": "edge", "Listeners": []});
    let r = as_token(&sim, "daemon", "PUT", "/v1/config", Some(&gateway)).await;
    denied(&r, "'mesh:write'");
    let r = as_token(&sim, "mesh-reader", "PUT", "/v1/config", Some(&gateway)).await;
    denied(&r, "'mesh:write'");
    let r = as_token(&sim, "operator", "PUT", "/v1/config", Some(&gateway)).await;
    assert_eq!((r.status, r.body.as_str()), (200, "true"));
    let r = as_token(
        &sim,
        "daemon",
        "DELETE",
        "/v1/config/ingress-gateway/edge",
        None,
    )
    .await;
    denied(&r, "'mesh:write'");

    // service-defaults needs service:write on its name.
    let sd = |name: &str| json!({"Kind": "service-defaults", "Name": name, "Protocol": "http"});
    let r = as_token(&sim, "daemon", "PUT", "/v1/config", Some(&sd("webshop"))).await;
    assert_eq!((r.status, r.body.as_str()), (200, "true"));
    let r = as_token(&sim, "daemon", "PUT", "/v1/config", Some(&sd("db"))).await;
    denied(&r, "'service:write' on \"db\"");

    // Deregistering an unknown ID is a 404 before any permission check.
    let r = as_token(
        &sim,
        "operator",
        "PUT",
        "/v1/agent/service/deregister/ghost",
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    let r = as_token(
        &sim,
        "operator",
        "PUT",
        "/v1/agent/service/deregister/webshop",
        None,
    )
    .await;
    denied(&r, "'service:write' on \"webshop\"");
    // Bearer tokens count like X-Consul-Token.
    let r = call(
        sim.addr(),
        "PUT",
        "/v1/agent/service/deregister/webshop",
        &[("Authorization", "Bearer daemon")],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn reads_filter_lists_and_deny_single_items() {
    let sim = acl_sim();
    sim.add_service(ServiceSpec::new("web", &["a"]));
    sim.add_service(ServiceSpec::new("secret", &["b"]));
    sim.set_token(
        "reader",
        vec![
            Rule::ServicePrefix("web".into(), Access::Read),
            Rule::Service("edge".into(), Access::Read),
            Rule::NodePrefix(String::new(), Access::Read),
        ],
    );
    sim.set_token(
        "no-nodes",
        vec![Rule::ServicePrefix(String::new(), Access::Read)],
    );
    for (kind, name) in [
        ("service-defaults", "web"),
        ("service-defaults", "secret"),
        ("ingress-gateway", "edge"),
    ] {
        let body = if kind == "ingress-gateway" {
            json!({"Kind": kind, "Name": name, "Listeners": []})
        } else {
            json!({"Kind": kind, "Name": name})
        };
        sim.put_config(body, None).expect("write");
    }
    sim.put_config(json!({"Kind": "proxy-defaults", "Name": "global"}), None)
        .expect("write");

    let r = as_token(&sim, "reader", "GET", "/v1/catalog/services", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"web": ["a"]}));
    assert_eq!(r.header("x-consul-results-filtered-by-acls"), Some("true"));
    // Anonymous sees nothing and is not told why.
    let r = get(sim.addr(), "/v1/catalog/services").await;
    assert_eq!((r.status, r.json()), (200, json!({})));
    assert_eq!(r.header("x-consul-results-filtered-by-acls"), None);
    // Catalog service reads need node:read too.
    let r = as_token(&sim, "no-nodes", "GET", "/v1/catalog/service/web", None).await;
    assert_eq!(r.json(), json!([]));
    let r = as_token(&sim, "reader", "GET", "/v1/catalog/service/web", None).await;
    assert_eq!(r.json().as_array().map(Vec::len), Some(1));

    let r = as_token(&sim, "reader", "GET", "/v1/config/service-defaults", None).await;
    let listed = r.json();
    let names: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["Name"].as_str())
        .collect();
    assert_eq!(names, vec!["web"]);
    assert_eq!(r.header("x-consul-results-filtered-by-acls"), Some("true"));
    let r = as_token(
        &sim,
        "reader",
        "GET",
        "/v1/config/service-defaults/secret",
        None,
    )
    .await;
    denied(&r, "'service:read' on \"secret\"");
    assert_eq!(
        as_token(
            &sim,
            "reader",
            "GET",
            "/v1/config/ingress-gateway/edge",
            None
        )
        .await
        .status,
        200
    );
    // proxy-defaults needs no permission at all.
    assert_eq!(
        get(sim.addr(), "/v1/config/proxy-defaults/global")
            .await
            .status,
        200
    );

    let reg = json!({"ID": "s1", "Name": "secret"});
    assert_eq!(sim_register(&sim, &reg).await, 200);
    let r = as_token(&sim, "reader", "GET", "/v1/agent/services", None).await;
    assert_eq!(r.json(), json!({}));
    assert_eq!(r.header("x-consul-results-filtered-by-acls"), Some("true"));
    let r = as_token(&sim, "reader", "GET", "/v1/agent/service/s1", None).await;
    denied(&r, "'service:read' on \"secret\"");
    let r = as_token(&sim, "reader", "GET", "/v1/agent/service/none", None).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (404, "unknown service ID: none")
    );
}

async fn sim_register(sim: &Sim, body: &Value) -> u16 {
    sim.set_token(
        "root",
        vec![
            Rule::ServicePrefix(String::new(), Access::Write),
            Rule::NodePrefix(String::new(), Access::Write),
            Rule::Operator(Access::Write),
        ],
    );
    as_token(sim, "root", "PUT", "/v1/agent/service/register", Some(body))
        .await
        .status
}

#[tokio::test]
async fn injected_faults_hit_the_next_matching_requests_only() {
    let sim = Sim::start(quick_options());
    sim.inject(Fault {
        method: Some("GET".into()),
        path_prefix: "/v1/catalog/".into(),
        status: 503,
        body: "No cluster leader".into(),
        count: 2,
    });
    assert_eq!(
        put(
            sim.addr(),
            "/v1/config",
            r#"{"Kind":"service-defaults","Name":"x"}"#
        )
        .await
        .status,
        200
    );
    for _ in 0..2 {
        let r = get(sim.addr(), "/v1/catalog/services").await;
        assert_eq!((r.status, r.body.as_str()), (503, "No cluster leader"));
    }
    assert_eq!(get(sim.addr(), "/v1/catalog/services").await.status, 200);
    sim.inject(Fault {
        method: None,
        path_prefix: "/v1/".into(),
        status: 500,
        body: "boom".into(),
        count: 10,
    });
    assert_eq!(get(sim.addr(), "/v1/agent/self").await.status, 500);
    sim.clear_faults();
    assert_eq!(get(sim.addr(), "/v1/agent/self").await.status, 200);

    let log = sim.requests();
    let statuses: Vec<(String, String, u16)> = log
        .iter()
        .map(|r| (r.method.clone(), r.path.clone(), r.status))
        .collect();
    assert_eq!(
        statuses[1],
        ("GET".to_string(), "/v1/catalog/services".to_string(), 503)
    );
    assert_eq!(statuses.len(), 6);
    assert!(log.iter().all(|r| !r.had_token));
    assert_eq!(log[1].response_bytes, "No cluster leader".len());
}

#[tokio::test]
async fn rpc_prefixes_mark_server_side_errors() {
    let sim = acl_sim();
    sim.set_token("t", vec![Rule::Operator(Access::Write)]);
    sim.set_rpc_error_prefix(true);
    let bad = json!({"Kind": "ingress-gateway", "Name": "e", "Listeners": [{"Port": 1}]});
    let r = as_token(&sim, "t", "PUT", "/v1/config", Some(&bad)).await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.body,
        "rpc error making call: No service declared for listener with port 1"
    );
    let r = as_token(
        &sim,
        "t",
        "PUT",
        "/v1/config",
        Some(&json!({"Kind": "service-defaults", "Name": "w"})),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(
        r.body
            .starts_with("rpc error making call: Permission denied"),
        "{}",
        r.body
    );
    let r = as_token(
        &sim,
        "t",
        "GET",
        "/v1/config/service-defaults?index=x",
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (400, "Invalid index"),
        "HTTP-layer errors stay bare"
    );
    assert!(r.header("x-consul-index").is_none());
    let r = as_token(&sim, "t", "GET", "/v1/config/service-defaults", None).await;
    assert_eq!(r.status, 200);
    sim.set_rpc_error_prefix(false);
    let r = as_token(&sim, "t", "PUT", "/v1/config", Some(&bad)).await;
    assert_eq!(r.body, "No service declared for listener with port 1");
}

#[tokio::test]
async fn excess_connections_from_one_client_get_429() {
    let sim = Sim::start(quick_options());
    sim.set_max_conns_per_client(Some(2));
    let mut a = Conn::open(sim.addr()).await;
    let mut b = Conn::open(sim.addr()).await;
    assert_eq!(
        a.send("GET", "/v1/status/leader", &[], None)
            .await
            .expect("a")
            .status,
        200
    );
    assert_eq!(
        b.send("GET", "/v1/status/leader", &[], None)
            .await
            .expect("b")
            .status,
        200
    );
    let mut c = Conn::open(sim.addr()).await;
    let r = c
        .send("GET", "/v1/status/leader", &[], None)
        .await
        .expect("c answered");
    assert_eq!(r.status, 429);
    assert_eq!(
        r.body,
        "Your IP is issuing too many concurrent connections, please rate limit your calls"
    );
    assert!(
        c.send("GET", "/v1/status/leader", &[], None).await.is_err(),
        "the excess connection is closed"
    );
    let sim_ref = &sim;
    eventually("the refused connection is gone", || {
        sim_ref.open_connections() == 2
    })
    .await;
    drop(a);
    eventually("a closed", || sim_ref.open_connections() == 1).await;
    let mut d = Conn::open(sim.addr()).await;
    assert_eq!(
        d.send("GET", "/v1/status/leader", &[], None)
            .await
            .expect("d")
            .status,
        200
    );
    sim.set_max_conns_per_client(None);
    drop(b);
}

#[tokio::test]
async fn listening_can_stop_and_resume_on_the_same_port() {
    let sim = Sim::start(quick_options());
    let addr = sim.addr();
    let mut idle = Conn::open(addr).await;
    assert_eq!(
        idle.send("GET", "/v1/status/leader", &[], None)
            .await
            .expect("idle")
            .status,
        200
    );
    let idx = get(addr, "/v1/catalog/services").await.index();
    let mut blocked = Conn::open(addr).await;
    let path = format!("/v1/catalog/services?index={idx}&wait=60s");
    let blocked_fut = blocked.send("GET", &path, &[], None);
    let sim_ref = &sim;
    let stopper = async {
        eventually("both connections open", || sim_ref.open_connections() == 2).await;
        sim_ref.stop_listening();
    };
    let (result, ()) = tokio::join!(blocked_fut, stopper);
    assert!(result.is_err(), "the blocked query's connection was closed");
    assert_eq!(sim.open_connections(), 0);
    assert!(idle
        .send("GET", "/v1/status/leader", &[], None)
        .await
        .is_err());
    assert!(
        Conn::try_open(addr, None).await.is_err(),
        "connections are refused while stopped"
    );
    sim.start_listening();
    assert_eq!(get(addr, "/v1/status/leader").await.status, 200);
}

#[tokio::test]
async fn agent_restart_forgets_registrations_and_comes_back() {
    let sim = Sim::start(quick_options());
    let reg = json!({"ID": "s1", "Name": "svc", "Check": {"TTL": "30s"}});
    assert_eq!(
        put(sim.addr(), "/v1/agent/service/register", &reg.to_string())
            .await
            .status,
        200
    );
    let (services, _) = sim.indexes();
    sim.restart_agent();
    assert_eq!(get(sim.addr(), "/v1/agent/service/s1").await.status, 404);
    assert_eq!(
        get(sim.addr(), "/v1/catalog/service/svc").await.json(),
        json!([])
    );
    assert_eq!(sim.agent_checks(), json!({}));
    assert!(sim.indexes().0 > services);
    assert_eq!(
        get(sim.addr(), "/v1/catalog/services").await.json(),
        json!({"consul": []})
    );
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).expect("PEM file")
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("consul-sim-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[tokio::test]
async fn tls_serves_https_and_refuses_the_wrong_ca() {
    let pki = TestPki::generate(temp_dir("tls"));
    let sim = Sim::start(SimOptions {
        tls: Some(pki.server_tls(false)),
        ..quick_options()
    });
    assert!(sim.url().starts_with("https://127.0.0.1:"));
    let good = TlsClient {
        ca_pem: read(&pki.ca_cert),
        ..TlsClient::default()
    };
    let mut conn = Conn::try_open(sim.addr(), Some(&good))
        .await
        .expect("TLS connect");
    let r = conn
        .send("GET", "/v1/status/leader", &[], None)
        .await
        .expect("request");
    assert_eq!(r.status, 200);
    let wrong = TlsClient {
        ca_pem: read(&pki.other_ca_cert),
        ..TlsClient::default()
    };
    assert!(
        Conn::try_open(sim.addr(), Some(&wrong)).await.is_err(),
        "a CA that did not sign the server is refused"
    );
    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut plain = Conn::open(sim.addr()).await;
    let outcome =
        tokio::time::timeout(LIMIT, plain.send("GET", "/v1/status/leader", &[], None)).await;
    assert!(
        matches!(outcome, Ok(Err(_))),
        "plaintext must fail: {outcome:?}"
    );
    let _ = std::fs::remove_dir_all(&pki.dir);
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let pki = TestPki::generate(temp_dir("mtls"));
    let sim = Sim::start(SimOptions {
        tls: Some(pki.server_tls(true)),
        ..quick_options()
    });
    let without = TlsClient {
        ca_pem: read(&pki.ca_cert),
        ..TlsClient::default()
    };
    let refused = async {
        let mut conn = Conn::try_open(sim.addr(), Some(&without)).await?;
        conn.send("GET", "/v1/status/leader", &[], None).await
    };
    match tokio::time::timeout(LIMIT, refused).await {
        Ok(Err(_)) => {}
        other => panic!("a client without a certificate was served: {other:?}"),
    }
    let with = TlsClient {
        ca_pem: read(&pki.ca_cert),
        client_cert_pem: Some(read(&pki.client_cert)),
        client_key_pem: Some(read(&pki.client_key)),
    };
    let mut conn = Conn::try_open(sim.addr(), Some(&with))
        .await
        .expect("mTLS connect");
    let r = conn
        .send("GET", "/v1/agent/self", &[], None)
        .await
        .expect("request");
    assert_eq!(r.status, 200);
    let _ = std::fs::remove_dir_all(&pki.dir);
}

#[tokio::test]
async fn dropping_the_simulator_closes_every_connection() {
    let sim = Sim::start(quick_options());
    let addr = sim.addr();
    let mut conn = Conn::open(addr).await;
    assert_eq!(
        conn.send("GET", "/v1/status/leader", &[], None)
            .await
            .expect("served")
            .status,
        200
    );
    drop(sim);
    assert!(
        conn.send("GET", "/v1/status/leader", &[], None)
            .await
            .is_err(),
        "the open connection was closed"
    );
    assert!(
        Conn::try_open(addr, None).await.is_err(),
        "nothing listens any more"
    );
}
