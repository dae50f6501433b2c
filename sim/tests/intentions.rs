//! `service-intentions` entries: validation from `config_entry_intentions.go`, the L7
//! protocol check, CAS, reads, the blocking list and the intention ACL rules.

mod common;

use std::time::Duration;

use common::*;
use consul_sim::{Access, Rule, Sim, SimOptions};
use serde_json::{json, Value};

fn sim() -> Sim {
    Sim::start(quick_options())
}

fn intentions(name: &str, sources: Value) -> Value {
    json!({"Kind": "service-intentions", "Name": name, "Sources": sources})
}

fn allow(name: &str) -> Value {
    json!({"Name": name, "Action": "allow"})
}

async fn put_body(sim: &Sim, path: &str, body: &Value) -> Resp {
    put(sim.addr(), path, &body.to_string()).await
}

#[tokio::test]
async fn validation_errors_are_500_with_consul_texts() {
    let sim = sim();
    // Permissions need an HTTP destination (the graph check after validation).
    let web_http = json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"});
    assert_eq!(sim.put_config(web_http, None), Ok(true));
    let http = |perm: Value| intentions("web", json!([{"Name": "edge", "Permissions": [perm]}]));
    let cases: Vec<(Value, Result<(), &str>)> = vec![
        (intentions("web", json!([allow("edge"), {"Name": "*", "Action": "deny"}])), Ok(())),
        (intentions("*", json!([allow("edge")])), Ok(())),
        (intentions("web", json!([{"Name": "edge", "Action": "allow", "Description": "x".repeat(512)}])), Ok(())),
        (http(json!({"Action": "allow", "HTTP": {"PathPrefix": "/api", "Methods": ["get", "POST"],
                     "Header": [{"Name": "x", "Exact": "y"}]}})), Ok(())),
        (json!({"Kind": "service-intentions", "Sources": [allow("edge")]}), Err("Name is required")),
        (intentions("we*b", json!([allow("edge")])),
         Err("Name: wildcard character '*' cannot be used with partial values")),
        (json!({"Kind": "service-intentions", "Name": "web", "Sources": [allow("edge")],
                "JWT": {"Providers": [{"Name": ""}]}}), Err("JWT provider name is required")),
        (json!({"Kind": "service-intentions", "Name": "web", "Sources": [allow("edge")],
                "Meta": {"k": "v".repeat(513)}}), Err("Meta value for key \"k\" exceeds maximum length 512")),
        (intentions("web", json!([])), Err("At least one source is required")),
        (json!({"Kind": "service-intentions", "Name": "web"}), Err("At least one source is required")),
        (intentions("web", json!([{"Action": "allow"}])), Err("Sources[0].Name is required")),
        (intentions("web", json!([{"Name": "edge", "Action": "allow", "SamenessGroup": "g"}])),
         Err("Sources[0].SamenessGroup: Sameness groups are a Consul Enterprise feature. ")),
        (intentions("web", json!([{"Name": "ed*", "Action": "allow"}])),
         Err("Sources[0].Name: wildcard character '*' cannot be used with partial values")),
        (intentions("web", json!([{"Name": "edge", "Action": "allow", "Peer": "p*"}])),
         Err("Sources[0].Peer: cannot use wildcard '*' in peer")),
        (intentions("web", json!([{"Name": "edge", "Action": "allow", "Description": "x".repeat(513)}])),
         Err("Sources[0].Description exceeds maximum length 512")),
        (intentions("web", json!([{"Name": "edge", "Action": "allow", "LegacyMeta": {"a": "b"}}])),
         Err("Sources[0].LegacyMeta must be omitted")),
        // Legacy fields other than LegacyMeta are cleared before validation.
        (intentions("web", json!([{"Name": "edge", "Action": "allow", "LegacyID": "x"}])), Ok(())),
        (intentions("web", json!([{"Name": "edge"}])), Err("Sources[0].Action must be set to 'allow' or 'deny'")),
        (intentions("web", json!([{"Name": "edge", "Action": "Allow"}])),
         Err("Sources[0].Action must be set to 'allow' or 'deny'")),
        (intentions("web", json!([{"Name": "edge", "Action": "allow",
                                   "Permissions": [{"Action": "allow", "HTTP": {"PathExact": "/"}}]}])),
         Err("Sources[0].Action must be omitted if Permissions are specified")),
        (intentions("*", json!([{"Name": "edge", "Permissions": [{"Action": "allow", "HTTP": {"PathExact": "/"}}]}])),
         Err("Sources[0].Permissions cannot be specified on intentions with wildcarded destinations")),
        (intentions("web", json!([{"Name": "edge", "Action": "allow", "Type": "external"}])),
         Err("Sources[0].Type must be set to 'consul'")),
        (http(json!({"Action": "permit", "HTTP": {"PathExact": "/"}})),
         Err("Sources[0].Permissions[0].Action must be set to 'allow' or 'deny'")),
        (http(json!({"Action": "allow"})), Err("Sources[0].Permissions[0].HTTP is required")),
        (http(json!({"Action": "allow", "HTTP": {"PathExact": "x"}})),
         Err("Sources[0].Permissions[0].HTTP.PathExact doesn't start with '/': \"x\"")),
        (http(json!({"Action": "allow", "HTTP": {"PathPrefix": "x"}})),
         Err("Sources[0].Permissions[0].HTTP.PathPrefix doesn't start with '/': \"x\"")),
        (http(json!({"Action": "allow", "HTTP": {"PathExact": "/a", "PathRegex": ".*"}})),
         Err("Sources[0].Permissions[0].HTTP should only contain at most one of PathExact, PathPrefix, or PathRegex")),
        (http(json!({"Action": "allow", "HTTP": {"Header": [{"Exact": "y"}]}})),
         Err("Sources[0].Permissions[0].HTTP.Header[0] missing required Name field")),
        (http(json!({"Action": "allow", "HTTP": {"Header": [{"Name": "x"}]}})),
         Err("Sources[0].Permissions[0].HTTP.Header[0] should only contain one of Present, Exact, Prefix, Suffix, or Regex")),
        (http(json!({"Action": "allow", "HTTP": {"Header": [{"Name": "x", "Present": true, "Exact": "y"}]}})),
         Err("Sources[0].Permissions[0].HTTP.Header[0] should only contain one of Present, Exact, Prefix, Suffix, or Regex")),
        (http(json!({"Action": "allow", "HTTP": {"Methods": ["FETCH"]}})),
         Err("Sources[0].Permissions[0].HTTP.Methods contains an invalid method \"FETCH\"")),
        // Methods are upper-cased first, so get and GET are the same method.
        (http(json!({"Action": "allow", "HTTP": {"Methods": ["get", "GET"]}})),
         Err("Sources[0].Permissions[0].HTTP.Methods contains \"GET\" more than once")),
        (http(json!({"Action": "allow", "HTTP": {}})), Err("Sources[0].Permissions[0].HTTP should not be empty")),
        (intentions("web", json!([allow("edge"), {"Name": "edge", "Action": "deny"}])),
         Err("Sources[1] defines \"edge\" more than once")),
        (intentions("web", json!([{"Name": "edge", "Action": "allow", "Peer": "east"},
                                  {"Name": "edge", "Action": "deny", "Peer": "east"}])),
         Err("Sources[1] defines peer(\"east\") \"edge\" more than once")),
        // Peers make different sources.
        (intentions("web", json!([allow("edge"), {"Name": "edge", "Action": "deny", "Peer": "east"}])), Ok(())),
        // Sources are sorted by precedence before validation: the exact source comes
        // first, so the error names index 0.
        (intentions("web", json!([{"Name": "*", "Action": "deny"}, {"Name": "edge", "Action": "bogus"}])),
         Err("Sources[0].Action must be set to 'allow' or 'deny'")),
    ];
    for (body, want) in cases {
        let r = put_body(&sim, "/v1/config", &body).await;
        match want {
            Ok(()) => assert_eq!(
                (r.status, r.body.as_str()),
                (200, "true"),
                "{body}: {}",
                r.body
            ),
            Err(text) => {
                assert_eq!(r.status, 500, "{body}: {}", r.body);
                assert!(r.body.contains(text), "{body}: got {:?}", r.body);
            }
        }
    }
    // Enterprise fields are decode errors on CE.
    let r = put_body(
        &sim,
        "/v1/config",
        &intentions(
            "web",
            json!([{"Name": "edge", "Action": "allow", "Namespace": "x"}]),
        ),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r
        .body
        .contains("namespaces are a consul enterprise feature"));
}

#[tokio::test]
async fn reads_back_normalised_with_precedence_and_sorted_sources() {
    let sim = sim();
    let body = json!({"Kind": "service-intentions", "Name": "web",
        "Meta": {"managed-by": "ingress-service-monitor"},
        "Sources": [
            {"Name": "*", "Action": "deny"},
            {"Name": "edge", "Action": "allow", "Description": "managed by ingress-service-monitor"}]});
    let r = put_body(&sim, "/v1/config?cas=0", &body).await;
    assert_eq!(r.body, "true");
    let r = get(sim.addr(), "/v1/config/service-intentions/web").await;
    let mut got = r.json();
    let idx = got["CreateIndex"].clone();
    // Newer servers add a content hash; clients must ignore it.
    let hash = got.as_object_mut().and_then(|o| o.remove("Hash"));
    assert!(hash.as_ref().is_some_and(Value::is_u64), "Hash: {hash:?}");
    assert_eq!(
        got,
        json!({"Kind": "service-intentions", "Name": "web",
            "Meta": {"managed-by": "ingress-service-monitor"},
            "Sources": [
                {"Name": "edge", "Action": "allow", "Precedence": 9, "Type": "consul",
                 "Description": "managed by ingress-service-monitor"},
                {"Name": "*", "Action": "deny", "Precedence": 8, "Type": "consul"}],
            "CreateIndex": idx, "ModifyIndex": idx})
    );
    let wild = intentions("*", json!([allow("edge"), {"Name": "*", "Action": "deny"}]));
    assert_eq!(sim.put_config(wild, None), Ok(true));
    let w = sim.config("service-intentions", "*").unwrap_or_default();
    let precedences: Vec<i64> = w["Sources"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["Precedence"].as_i64()).collect())
        .unwrap_or_default();
    assert_eq!(precedences, vec![6, 5]);
    let l7 = json!({"Kind": "service-defaults", "Name": "api", "Protocol": "http"});
    assert_eq!(sim.put_config(l7, None), Ok(true));
    let perm = intentions(
        "api",
        json!([{"Name": "edge", "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/v1", "Methods": ["get"]}}]}]),
    );
    assert_eq!(sim.put_config(perm, None), Ok(true));
    let p = sim.config("service-intentions", "api").unwrap_or_default();
    assert_eq!(
        p["Sources"][0],
        json!({"Name": "edge", "Precedence": 9, "Type": "consul",
               "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/v1", "Methods": ["GET"]}}]})
    );
}

#[tokio::test]
async fn l7_permissions_need_an_http_destination_both_ways() {
    let sim = sim();
    let perm = intentions(
        "web",
        json!([{"Name": "edge", "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/"}}]}]),
    );
    let incompatible = |p: &str| {
        format!("service \"web\" has protocol \"{p}\", which is incompatible with L7 intentions permissions")
    };
    // No protocol source: tcp.
    let r = put_body(&sim, "/v1/config", &perm).await;
    assert_eq!((r.status, r.body), (500, incompatible("tcp")));
    // Plain allow/deny sources need nothing.
    let plain = intentions("web", json!([allow("edge")]));
    assert_eq!(put_body(&sim, "/v1/config", &plain).await.body, "true");
    for protocol in ["http", "http2", "grpc"] {
        let sd = json!({"Kind": "service-defaults", "Name": "web", "Protocol": protocol});
        assert_eq!(sim.put_config(sd, None), Ok(true));
        let r = put_body(&sim, "/v1/config", &perm).await;
        assert_eq!((r.status, r.body.as_str()), (200, "true"), "{protocol}");
    }
    // Downgrading or deleting the protocol source now fails.
    let tcp = json!({"Kind": "service-defaults", "Name": "web", "Protocol": "tcp"});
    let r = put_body(&sim, "/v1/config", &tcp).await;
    assert_eq!((r.status, r.body), (500, incompatible("tcp")));
    let r = call(
        sim.addr(),
        "DELETE",
        "/v1/config/service-defaults/web",
        &[],
        None,
    )
    .await;
    assert_eq!((r.status, r.body), (500, incompatible("tcp")));
    // proxy-defaults only matters without a service-defaults entry.
    let r = put_body(
        &sim,
        "/v1/config",
        &json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "tcp"}}),
    )
    .await;
    assert_eq!(r.body, "true");
    sim.delete_config("service-defaults", "web");
    let r = put_body(
        &sim,
        "/v1/config",
        &json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "tcp"}, "Meta": {"x": "y"}}),
    )
    .await;
    assert_eq!((r.status, r.body), (500, incompatible("tcp")));
    let r = put_body(
        &sim,
        "/v1/config",
        &json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}}),
    )
    .await;
    assert_eq!(r.body, "true");
    // Deleting the intentions themselves is never blocked.
    let r = call(
        sim.addr(),
        "DELETE",
        "/v1/config/service-intentions/web",
        &[],
        None,
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, "{}"));
}

#[tokio::test]
async fn create_only_cas_and_delete_with_cas() {
    let sim = sim();
    let ours = intentions(
        "web",
        json!([{"Name": "edge", "Action": "allow", "Description": "managed by ingress-service-monitor"}]),
    );
    assert_eq!(put_body(&sim, "/v1/config?cas=0", &ours).await.body, "true");
    assert_eq!(
        put_body(
            &sim,
            "/v1/config?cas=0",
            &intentions("web", json!([allow("other")]))
        )
        .await
        .body,
        "false"
    );
    let idx = sim.config("service-intentions", "web").unwrap_or_default()["ModifyIndex"]
        .as_u64()
        .unwrap_or(0);
    // Adding a source with CAS: a stale index misses, the current one wins.
    let both = intentions(
        "web",
        json!([{"Name": "edge", "Action": "allow", "Description": "managed by ingress-service-monitor"},
               {"Name": "api", "Action": "deny"}]),
    );
    assert_eq!(
        put_body(&sim, &format!("/v1/config?cas={}", idx + 7), &both)
            .await
            .body,
        "false"
    );
    assert_eq!(
        put_body(&sim, &format!("/v1/config?cas={idx}"), &both)
            .await
            .body,
        "true"
    );
    let now = sim.config("service-intentions", "web").unwrap_or_default();
    assert_eq!(now["Sources"].as_array().map(Vec::len), Some(2));
    let current = now["ModifyIndex"].as_u64().unwrap_or(0);
    assert!(current > idx);
    // Identical content is skipped even with a stale CAS.
    assert_eq!(
        put_body(&sim, &format!("/v1/config?cas={idx}"), &both)
            .await
            .body,
        "true"
    );
    // So is the GET result put back (Hash and indexes included).
    let read_back = get(sim.addr(), "/v1/config/service-intentions/web")
        .await
        .json();
    assert_eq!(put_body(&sim, "/v1/config", &read_back).await.body, "true");
    assert_eq!(sim.entry_writes("service-intentions", "web"), 2);
    for (cas, want) in [(idx, "false"), (0, "false"), (current, "true")] {
        let r = call(
            sim.addr(),
            "DELETE",
            format!("/v1/config/service-intentions/web?cas={cas}"),
            &[],
            None,
        )
        .await;
        assert_eq!((r.status, r.body.as_str()), (200, want), "cas {cas}");
    }
    assert!(sim.config("service-intentions", "web").is_none());
}

#[tokio::test]
async fn the_blocking_list_wakes_on_intention_writes_only_when_they_change() {
    let sim = sim();
    let r = get(sim.addr(), "/v1/config/service-intentions").await;
    assert_eq!(r.body, "[]");
    let index = r.index();
    let addr = sim.addr();
    let mut waiting = Box::pin(get(
        addr,
        format!("/v1/config/service-intentions?index={index}&wait=10s"),
    ));
    if tokio::time::timeout(Duration::from_millis(200), &mut waiting)
        .await
        .is_ok()
    {
        panic!("answered before any change");
    }
    let entry = intentions("web", json!([allow("edge")]));
    assert_eq!(sim.put_config(entry.clone(), None), Ok(true));
    let woken = match tokio::time::timeout(LIMIT, waiting).await {
        Ok(r) => r,
        Err(_) => panic!("the write did not wake the list"),
    };
    assert_eq!(woken.json().as_array().map(Vec::len), Some(1));
    let index = woken.index();
    // An identical write changes nothing: the next wait runs to its end.
    assert_eq!(sim.put_config(entry, None), Ok(true));
    let r = get(
        sim.addr(),
        format!("/v1/config/service-intentions?index={index}&wait=300ms"),
    )
    .await;
    assert_eq!(r.index(), index);
}

#[tokio::test]
async fn writes_need_intention_write_on_the_destination() {
    let sim = Sim::start(SimOptions {
        acl: true,
        ..quick_options()
    });
    let prefix_write = vec![
        Rule::ServicePrefix(String::new(), Access::Read),
        Rule::IntentionsPrefix(String::new(), Access::Write),
    ];
    // The exact rule the service-defaults writes need, without `intentions`.
    let mut shadowed = prefix_write.clone();
    shadowed.push(Rule::Service("web".into(), Access::Write));
    let mut fixed = shadowed.clone();
    fixed.push(Rule::Intentions("web".into(), Access::Write));
    sim.set_token("prefix", prefix_write);
    sim.set_token("shadowed", shadowed);
    sim.set_token("fixed", fixed);
    sim.set_token(
        "read",
        vec![Rule::ServicePrefix(String::new(), Access::Write)],
    );
    sim.set_token("none", vec![Rule::Mesh(Access::Write)]);
    let body = |name: &str| intentions(name, json!([allow("edge")])).to_string();
    let cases = [
        ("prefix", "web", 200),
        ("prefix", "api", 200),
        ("shadowed", "web", 403),
        ("shadowed", "api", 200),
        ("fixed", "web", 200),
        // service write alone grants intention read only.
        ("read", "web", 403),
        ("none", "web", 403),
    ];
    for (token, name, status) in cases {
        let r = call(
            sim.addr(),
            "PUT",
            "/v1/config",
            &[("X-Consul-Token", token)],
            Some(&body(name)),
        )
        .await;
        assert_eq!(r.status, status, "{token} on {name}: {}", r.body);
        if status == 403 {
            assert!(
                r.body
                    .contains(&format!("lacks permission 'intention:write' on \"{name}\"")),
                "{}",
                r.body
            );
        }
    }
    // Deleting needs the same; reading needs intention read.
    let r = call(
        sim.addr(),
        "DELETE",
        "/v1/config/service-intentions/web",
        &[("X-Consul-Token", "shadowed")],
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    for (token, status) in [("shadowed", 200), ("read", 200), ("none", 403)] {
        let r = call(
            sim.addr(),
            "GET",
            "/v1/config/service-intentions/web",
            &[("X-Consul-Token", token)],
            None,
        )
        .await;
        assert_eq!(r.status, status, "{token}: {}", r.body);
        if status == 403 {
            assert!(r
                .body
                .contains("lacks permission 'intention:read' on \"web\""));
        }
    }
    let r = call(
        sim.addr(),
        "GET",
        "/v1/config/service-intentions",
        &[("X-Consul-Token", "none")],
        None,
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, "[]"));
    assert_eq!(r.header("x-consul-results-filtered-by-acls"), Some("true"));
    let r = call(
        sim.addr(),
        "GET",
        "/v1/config/service-intentions",
        &[("X-Consul-Token", "read")],
        None,
    )
    .await;
    assert_eq!(r.json().as_array().map(Vec::len), Some(2));
}
