//! Blocking-query semantics (consul-api.md §1, §11.2, §11.8, §11.10).

mod common;

use std::time::{Duration, Instant};

use common::*;
use consul_sim::{ServiceSpec, Sim, SimOptions};
use serde_json::json;

/// Asserts that `fut` is still pending after a short grace period, then returns it.
async fn still_pending<F: std::future::Future + Unpin>(fut: &mut F, what: &str) {
    if tokio::time::timeout(Duration::from_millis(300), fut)
        .await
        .is_ok()
    {
        panic!("{what}: answered, but should still block");
    }
}

async fn finish<F: std::future::Future<Output = Resp> + Unpin>(fut: F, what: &str) -> Resp {
    match tokio::time::timeout(LIMIT, fut).await {
        Ok(r) => r,
        Err(_) => panic!("{what}: still blocked after {LIMIT:?}"),
    }
}

fn ingress_tcp(name: &str, service: &str) -> String {
    json!({"Kind": "ingress-gateway", "Name": name,
           "Listeners": [{"Port": 9000, "Protocol": "tcp", "Services": [{"Name": service}]}]})
    .to_string()
}

#[tokio::test]
async fn absent_or_zero_index_answers_at_once_and_never_with_index_zero() {
    let sim = Sim::start(quick_options());
    for path in [
        "/v1/catalog/services",
        "/v1/catalog/services?index=0&wait=10s",
        "/v1/config/service-defaults",
        "/v1/config/service-defaults?index=0&wait=10s",
    ] {
        let started = Instant::now();
        let r = get(sim.addr(), path).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(started.elapsed() < Duration::from_secs(2), "{path} blocked");
        assert!(r.index() >= 1, "{path}: X-Consul-Index 0");
    }
    // The config table is still empty (index 0) and is reported as 1.
    assert_eq!(sim.indexes().1, 0);
    assert_eq!(
        get(sim.addr(), "/v1/config/service-defaults").await.index(),
        1
    );
}

#[tokio::test]
async fn bad_index_and_wait_are_400() {
    let sim = Sim::start(quick_options());
    let cases = [
        ("/v1/catalog/services?index=abc", "Invalid index"),
        ("/v1/catalog/services?index=-1", "Invalid index"),
        (
            "/v1/catalog/services?index=1&wait=soon",
            "Invalid wait time",
        ),
        ("/v1/catalog/services?wait=10", "Invalid wait time"),
        ("/v1/config/service-defaults?index=x", "Invalid index"),
        ("/v1/agent/service/x?hash=a&wait=5q", "Invalid wait time"),
        (
            "/v1/catalog/services?stale&consistent",
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        ),
    ];
    for (path, want) in cases {
        let r = get(sim.addr(), path).await;
        assert_eq!((r.status, r.body.as_str()), (400, want), "{path}");
    }
}

#[tokio::test]
async fn stale_index_answers_at_once_even_where_wakeups_are_suppressed() {
    let sim = Sim::start(quick_options());
    sim.add_service(ServiceSpec::new("web", &["a"]));
    sim.put_config(
        json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"}),
        None,
    )
    .expect("write");
    for path in [
        "/v1/catalog/services?index=1&wait=10s",
        "/v1/config/service-defaults?index=1&wait=10s",
        "/v1/config/service-defaults/web?index=1&wait=10s",
    ] {
        let started = Instant::now();
        let r = get(sim.addr(), path).await;
        assert!(started.elapsed() < Duration::from_secs(2), "{path} blocked");
        assert!(r.index() > 1, "{path}");
    }
}

#[tokio::test]
async fn catalog_query_blocks_until_a_service_change() {
    let sim = Sim::start(quick_options());
    let idx = get(sim.addr(), "/v1/catalog/services").await.index();
    let addr = sim.addr();
    let mut fut = Box::pin(get(
        addr,
        format!("/v1/catalog/services?index={idx}&wait=10s"),
    ));
    still_pending(&mut fut, "catalog watch").await;
    // A config write is another table: the catalog watcher must not wake.
    sim.put_config(json!({"Kind": "service-defaults", "Name": "x"}), None)
        .expect("write");
    still_pending(&mut fut, "catalog watch after config write").await;
    sim.add_service(ServiceSpec::new("web", &["b", "a", "a"]));
    let r = finish(fut, "catalog watch").await;
    assert!(r.index() > idx);
    assert_eq!(r.json()["web"], json!(["a", "b"]));
    assert_eq!(r.index(), sim.indexes().0);
}

#[tokio::test]
async fn wait_expiry_returns_current_data_and_the_same_index() {
    let sim = Sim::start(quick_options());
    sim.add_service(ServiceSpec::new("web", &[]));
    let first = get(sim.addr(), "/v1/catalog/services").await;
    let started = Instant::now();
    let r = get(
        sim.addr(),
        format!("/v1/catalog/services?index={}&wait=300ms", first.index()),
    )
    .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300),
        "returned after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "returned after {elapsed:?}"
    );
    assert_eq!(r.index(), first.index());
    assert_eq!(r.body, first.body);
}

#[tokio::test]
async fn waits_are_clamped_to_max_and_default_when_absent() {
    let sim = Sim::start(SimOptions {
        jitter: false,
        default_wait: Duration::from_millis(300),
        max_wait: Duration::from_millis(700),
        ..SimOptions::default()
    });
    let idx = get(sim.addr(), "/v1/catalog/services").await.index();
    let cases = [
        // (wait parameter, lower bound)
        ("&wait=10m", 700),
        ("&wait=300000ms", 700),
        ("", 300),
        ("&wait=0s", 300),
        ("&wait=-5s", 300),
    ];
    for (wait, lower_ms) in cases {
        let started = Instant::now();
        let r = get(
            sim.addr(),
            format!("/v1/catalog/services?index={idx}{wait}"),
        )
        .await;
        let elapsed = started.elapsed();
        assert_eq!(r.status, 200);
        assert!(
            elapsed >= Duration::from_millis(lower_ms),
            "{wait}: {elapsed:?}"
        );
        // Well below the requested wait: the clamp or the default applied.
        assert!(
            elapsed < Duration::from_millis(lower_ms + 1500),
            "{wait}: {elapsed:?}"
        );
    }
}

#[tokio::test]
async fn config_list_keeps_blocking_when_its_result_is_unchanged() {
    let sim = Sim::start(quick_options());
    sim.put_config(
        json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"}),
        None,
    )
    .expect("write");
    let idx = get(sim.addr(), "/v1/config/service-defaults").await.index();
    let addr = sim.addr();
    let mut fut = Box::pin(get(
        addr,
        format!("/v1/config/service-defaults?index={idx}&wait=10s"),
    ));
    still_pending(&mut fut, "list watch").await;
    // Bumps the config-entries index without changing the service-defaults list.
    let r = put(addr, "/v1/config", &ingress_tcp("edge", "db")).await;
    assert_eq!((r.status, r.body.as_str()), (200, "true"));
    assert!(sim.indexes().1 > idx);
    still_pending(&mut fut, "list watch after unrelated write").await;
    sim.put_config(
        json!({"Kind": "service-defaults", "Name": "api", "Protocol": "grpc"}),
        None,
    )
    .expect("write");
    let r = finish(fut, "list watch").await;
    assert_eq!(r.index(), sim.indexes().1);
    let names: Vec<String> = r
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["Name"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(names, vec!["api", "web"]);
}

#[tokio::test]
async fn suppressed_list_watch_expires_with_the_current_index() {
    let sim = Sim::start(quick_options());
    let idx = get(sim.addr(), "/v1/config/service-defaults").await.index();
    let addr = sim.addr();
    let fut = Box::pin(get(
        addr,
        format!("/v1/config/service-defaults?index={idx}&wait=800ms"),
    ));
    let r0 = put(addr, "/v1/config", &ingress_tcp("edge", "db")).await;
    assert_eq!(r0.status, 200);
    let r = finish(fut, "expiring list watch").await;
    assert_eq!(r.json(), json!([]));
    assert_eq!(
        r.index(),
        sim.indexes().1,
        "expiry answers with the current index"
    );
}

#[tokio::test]
async fn single_entry_watch_wakes_only_for_that_entry() {
    let sim = Sim::start(quick_options());
    sim.put_config(
        json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"}),
        None,
    )
    .expect("write");
    let first = get(sim.addr(), "/v1/config/service-defaults/web").await;
    let addr = sim.addr();
    let mut fut = Box::pin(get(
        addr,
        format!(
            "/v1/config/service-defaults/web?index={}&wait=10s",
            first.index()
        ),
    ));
    still_pending(&mut fut, "entry watch").await;
    sim.put_config(json!({"Kind": "service-defaults", "Name": "other"}), None)
        .expect("write");
    still_pending(&mut fut, "entry watch after another entry changed").await;
    // An identical write changes nothing and must not wake it either.
    sim.put_config(
        json!({"Kind": "service-defaults", "Name": "web", "Protocol": "HTTP"}),
        None,
    )
    .expect("write");
    still_pending(&mut fut, "entry watch after identical write").await;
    sim.put_config(
        json!({"Kind": "service-defaults", "Name": "web", "Protocol": "grpc"}),
        None,
    )
    .expect("write");
    let r = finish(fut, "entry watch").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["Protocol"], json!("grpc"));
    assert!(r.index() > first.index());
}

#[tokio::test]
async fn missing_entry_watch_blocks_until_created_or_expires_with_404() {
    let sim = Sim::start(quick_options());
    let miss = get(sim.addr(), "/v1/config/proxy-defaults/global").await;
    assert_eq!(miss.status, 404);
    assert_eq!(
        miss.body,
        "Config entry not found for \"proxy-defaults\" / \"global\""
    );
    let idx = miss.index();
    let addr = sim.addr();
    let mut fut = Box::pin(get(
        addr,
        format!("/v1/config/proxy-defaults/global?index={idx}&wait=10s"),
    ));
    still_pending(&mut fut, "missing-entry watch").await;
    sim.put_config(json!({"Kind": "service-defaults", "Name": "web"}), None)
        .expect("write");
    still_pending(&mut fut, "missing-entry watch after unrelated write").await;
    sim.put_config(
        json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}}),
        None,
    )
    .expect("write");
    let r = finish(fut, "missing-entry watch").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["Config"]["protocol"], json!("http"));

    // Expiry while still missing: 404 with the (current) index.
    let idx = get(sim.addr(), "/v1/config/ingress-gateway/edge")
        .await
        .index();
    let started = Instant::now();
    let r = get(
        sim.addr(),
        format!("/v1/config/ingress-gateway/edge?index={idx}&wait=300ms"),
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.status, 404);
    assert_eq!(r.index(), idx);
}

#[tokio::test]
async fn index_reset_wakes_watchers_with_a_lower_index() {
    let sim = Sim::start(quick_options());
    for i in 0..5 {
        sim.add_service(ServiceSpec::new(&format!("svc-{i}"), &[]));
    }
    sim.put_config(json!({"Kind": "service-defaults", "Name": "web"}), None)
        .expect("write");
    let before = get(sim.addr(), "/v1/catalog/services").await;
    let entry_before = get(sim.addr(), "/v1/config/service-defaults/web").await;
    let addr = sim.addr();
    let mut catalog = Box::pin(get(
        addr,
        format!("/v1/catalog/services?index={}&wait=10s", before.index()),
    ));
    let mut entry = Box::pin(get(
        addr,
        format!(
            "/v1/config/service-defaults/web?index={}&wait=10s",
            entry_before.index()
        ),
    ));
    still_pending(&mut catalog, "catalog watch").await;
    still_pending(&mut entry, "entry watch").await;
    sim.reset_index();
    let r = finish(catalog, "catalog watch").await;
    assert!(
        r.index() < before.index(),
        "index went backwards: {} -> {}",
        before.index(),
        r.index()
    );
    assert!(r.index() >= 1);
    assert_eq!(r.body, before.body, "data is kept");
    let r = finish(entry, "entry watch").await;
    assert!(r.index() < entry_before.index());
    assert!(
        r.json()["ModifyIndex"].as_u64().unwrap_or(u64::MAX)
            < entry_before.json()["ModifyIndex"].as_u64().unwrap_or(0)
    );
    // Writes continue from the small index.
    sim.add_service(ServiceSpec::new("after", &[]));
    let after = get(sim.addr(), "/v1/catalog/services").await;
    assert!(after.index() > r.index() && after.index() < before.index());
}

#[tokio::test]
async fn a_client_leaving_a_blocking_query_frees_its_connection() {
    let sim = Sim::start(quick_options());
    let idx = get(sim.addr(), "/v1/catalog/services").await.index();
    let mut conn = Conn::open(sim.addr()).await;
    let path = format!("/v1/catalog/services?index={idx}&wait=60s");
    let mut fut = Box::pin(conn.send("GET", &path, &[], None));
    if tokio::time::timeout(Duration::from_millis(300), &mut fut)
        .await
        .is_ok()
    {
        panic!("blocking query answered early");
    }
    let sim_ref = &sim;
    eventually("the blocked connection is counted", || {
        sim_ref.open_connections() == 1
    })
    .await;
    drop(fut);
    drop(conn);
    eventually("the connection closes long before the wait ends", || {
        sim_ref.open_connections() == 0
    })
    .await;
}
