//! Differential test of the simulator: the requests the daemon makes, sent to the
//! simulator and to a real Consul 1.8.7 agent, answer by answer.
//!
//! Each step reduces an answer to what the daemon depends on (status, the body's
//! meaningful part, how `X-Consul-Index` behaves) and the two are compared. A step where
//! they differ must be in [`KNOWN`], with what each side answers, and in the README's
//! "simulator vs Consul 1.8.7" table; any other difference fails the test, and so does a
//! listed difference that went away (the table would then be wrong).
//!
//! `#[ignore]`d in a plain `cargo test` (it needs `CONSUL_BIN`); `.ci/run` runs it.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::consul::{call, Agent, AgentOptions, Consul, Reply, MASTER_TOKEN};
use common::*;
use consul_sim::{Access, Rule, ServiceSpec, Sim, SimOptions};
use serde_json::{json, Value};

/// A backend under comparison: where to send raw requests, and how to set it up.
struct Target<'a> {
    consul: &'a dyn Setup,
    port: u16,
    token: Option<&'a str>,
}

/// Set-up both backends provide.
trait Setup {
    fn add(&self, spec: ServiceSpec);
}

impl Setup for Sim {
    fn add(&self, spec: ServiceSpec) {
        self.add_service(spec);
    }
}

impl Setup for Agent {
    fn add(&self, spec: ServiceSpec) {
        Consul::add_service(self, spec);
    }
}

impl Target<'_> {
    fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        call(self.port, method, path, body, self.token)
    }
    fn with_token<'b>(&'b self, token: Option<&'b str>) -> Target<'b> {
        Target {
            consul: self.consul,
            port: self.port,
            token,
        }
    }
}

/// The differences found, as (step, what the simulator answers, what Consul 1.8.7
/// answers). The README's table says the same in prose, with the Consul version that
/// changed it.
const KNOWN: &[(&str, &str, &str)] = &[
    (
        "catalog services, daemon's filter",
        "[\"consul\", \"shop\"]",
        "[\"consul\", \"edge-ingress-gw\", \"shop\", \"shop-sidecar-proxy\"]",
    ),
    ("catalog services, malformed filter", "500", "200"),
    ("entry PUT cas=0, exists", "200 true", "200 false"),
    ("entry PUT cas=stale", "200 true", "200 false"),
    ("identical entry PUT moves ModifyIndex", "false", "true"),
    ("agent checks Definition", "HTTP set", "empty"),
    ("deregister an unknown service", "404", "200"),
    (
        "entry write denied: 403 text",
        "Permission denied: token with AccessorID '<id>' lacks permission 'mesh:write'",
        "Permission denied",
    ),
    (
        "register another service: 403 text",
        "Permission denied: token with AccessorID '<id>' lacks permission 'service:write' on \"other\"",
        "Permission denied: Missing service:write on other",
    ),
    ("entry write with mesh = write", "200 true", "403 Permission denied"),
];

const SHOP: &str = "gw-traefik.http.routers.shop.rule=Host(`shop.example.com`)";

fn encode(filter: &str) -> String {
    filter
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn names(reply: &Reply) -> String {
    let body = reply.json();
    let names: Vec<&String> = body
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    format!("{names:?}")
}

/// The entry without its indexes (which differ by construction).
fn without_indexes(mut entry: Value) -> Value {
    if let Some(object) = entry.as_object_mut() {
        object.remove("CreateIndex");
        object.remove("ModifyIndex");
    }
    entry
}

/// A blocking GET of `path` sent from another thread: joined, it gives how long the
/// answer took and the answer.
fn park(target: &Target, path: String) -> std::thread::JoinHandle<(Duration, Reply)> {
    let port = target.port;
    let token = target.token.map(String::from);
    let handle = std::thread::spawn(move || {
        let started = Instant::now();
        let reply = call(port, "GET", &path, None, token.as_deref());
        (started.elapsed(), reply)
    });
    std::thread::sleep(Duration::from_millis(300)); // let it park
    handle
}

/// Whether a blocking query that should wait out a 1s `wait` did.
fn waited_out(elapsed: Duration) -> String {
    (elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3)).to_string()
}

fn status_and_text(reply: &Reply) -> String {
    format!("{} {}", reply.status, reply.body.trim())
}

/// The steps against one backend; (step, observation) in order.
fn observe(target: &Target) -> Vec<(String, String)> {
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut note = |step: &str, value: String| seen.push((step.to_string(), value));

    target.consul.add(service("shop", &[SHOP, "version=2"]));
    target.consul.add(ServiceSpec {
        kind: "connect-proxy".into(),
        port: 21000,
        ..service("shop-sidecar-proxy", &[SHOP])
    });
    target.consul.add(ServiceSpec {
        kind: "ingress-gateway".into(),
        port: 8888,
        ..service("edge-ingress-gw", &[])
    });

    // --- the catalog watch ---
    let filter = encode("ServiceKind == \"\" and ServiceName != \"edge-ingress\"");
    let filtered = target.send(
        "GET",
        &format!("/v1/catalog/services?filter={filter}"),
        None,
    );
    note(
        "catalog services, daemon's filter: status",
        filtered.status.to_string(),
    );
    note("catalog services, daemon's filter", names(&filtered));
    note(
        "catalog services, tags of shop (sorted: Consul 1.8.7's order varies)",
        {
            let mut tags: Vec<String> = filtered.json()["shop"]
                .as_array()
                .map(|t| t.iter().map(|t| t.to_string()).collect())
                .unwrap_or_default();
            tags.sort();
            tags.join(",")
        },
    );
    let malformed = target.send(
        "GET",
        &format!("/v1/catalog/services?filter={}", encode("((")),
        None,
    );
    note(
        "catalog services, malformed filter",
        malformed.status.to_string(),
    );
    // Where the filter is ignored the daemon reads the UI's summary for each kind.
    let summary = target.send("GET", "/v1/internal/ui/services", None);
    note("ui services: status", summary.status.to_string());
    note("ui services: (kind, name, tags)", {
        let mut seen: Vec<String> = summary
            .json()
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let mut tags: Vec<String> = s["Tags"]
                    .as_array()
                    .map(|t| t.iter().map(|t| t.to_string()).collect())
                    .unwrap_or_default();
                tags.sort();
                format!(
                    "{}:{}:{}",
                    s["Kind"].as_str().unwrap_or(""),
                    s["Name"],
                    tags.join(",")
                )
            })
            .collect();
        seen.sort();
        seen.join(" ")
    });
    note(
        "ui services X-Consul-Index present",
        summary.index.is_some().to_string(),
    );
    let all = target.send("GET", "/v1/catalog/services", None);
    note(
        "catalog lists the consul service",
        all.json().get("consul").is_some().to_string(),
    );
    let index = all.index.expect("X-Consul-Index on the catalog");
    note("catalog X-Consul-Index present", "true".into());

    // Blocking: an unchanged index waits out `wait` and answers the same index.
    let started = Instant::now();
    let blocked = target.send(
        "GET",
        &format!("/v1/catalog/services?index={index}&wait=1s"),
        None,
    );
    let waited = started.elapsed();
    note(
        "blocking on the current index waits about 1s",
        (waited >= Duration::from_millis(900) && waited < Duration::from_secs(3)).to_string(),
    );
    note(
        "blocking on the current index answers the same index",
        (blocked.index == Some(index)).to_string(),
    );
    // An index ahead of the catalog's waits too.
    let started = Instant::now();
    let path = format!("/v1/catalog/services?index={}&wait=1s", index + 1000);
    let _ = target.send("GET", &path, None);
    note(
        "blocking on an index ahead of the catalog's waits",
        waited_out(started.elapsed()),
    );
    // index=0 answers at once.
    let started = Instant::now();
    let _ = target.send("GET", "/v1/catalog/services?index=0&wait=2s", None);
    note(
        "index=0 answers at once",
        (started.elapsed() < Duration::from_millis(500)).to_string(),
    );
    // A change wakes the query, with a larger index.
    let port = target.port;
    let token = target.token.map(String::from);
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        let reply = call(
            port,
            "GET",
            &format!("/v1/catalog/services?index={index}&wait=10s"),
            None,
            token.as_deref(),
        );
        (started.elapsed(), reply)
    });
    std::thread::sleep(Duration::from_millis(300)); // let it park
    target.consul.add(service(
        "cart",
        &["gw-traefik.http.routers.cart.rule=Host(`cart.example.com`)"],
    ));
    let (woke_after, woke) = waiter.join().expect("blocking query");
    note(
        "a change wakes a blocking query at once",
        (woke_after < Duration::from_secs(3)).to_string(),
    );
    note(
        "the woken query's index is larger",
        (woke.index.unwrap_or(0) > index).to_string(),
    );
    note(
        "the woken query lists the change",
        woke.json().get("cart").is_some().to_string(),
    );

    // --- service-defaults and proxy-defaults ---
    let defaults = target.send("GET", "/v1/config/service-defaults", None);
    note(
        "service-defaults list, empty",
        format!(
            "{} {} index:{}",
            defaults.status,
            defaults.body.trim(),
            defaults.index.is_some()
        ),
    );
    let proxy = target.send("GET", "/v1/config/proxy-defaults/global", None);
    note("proxy-defaults, missing", status_and_text(&proxy));
    note(
        "proxy-defaults, missing: index",
        proxy.index.is_some().to_string(),
    );
    let put = target.send(
        "PUT",
        "/v1/config",
        Some(&json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}})),
    );
    note("proxy-defaults PUT", status_and_text(&put));
    let proxy = target.send("GET", "/v1/config/proxy-defaults/global", None);
    note(
        "proxy-defaults protocol",
        proxy.json()["Config"]["protocol"].to_string(),
    );
    let list_index = target
        .send("GET", "/v1/config/service-defaults", None)
        .index
        .unwrap_or(1);
    let waiter = park(
        target,
        format!("/v1/config/service-defaults?index={list_index}&wait=10s"),
    );
    let sd = target.send(
        "PUT",
        "/v1/config",
        Some(&json!({"Kind": "service-defaults", "Name": "shop", "Protocol": "http"})),
    );
    note("service-defaults PUT", status_and_text(&sd));
    let (woke_after, woke) = waiter.join().expect("blocking service-defaults query");
    note(
        "a service-defaults write wakes the list's blocking query",
        format!(
            "{} {}",
            woke_after < Duration::from_secs(3),
            woke.body.contains("\"shop\"")
        ),
    );
    let defaults = target.send("GET", "/v1/config/service-defaults", None);
    note(
        "service-defaults list: names and protocols",
        defaults
            .json()
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| format!("{}={}", e["Name"], e["Protocol"]))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default(),
    );

    // --- the ingress-gateway entry, with CAS ---
    let entry = json!({
        "Kind": "ingress-gateway", "Name": GATEWAY,
        "Meta": {"managed-by": "ingress-service-monitor"},
        "Listeners": [{"Port": 9997, "Protocol": "http", "Services": [
            {"Name": "shop", "Hosts": ["shop.example.com", "*.Wild.example.com"]}
        ]}]
    });
    let missing = target.send(
        "GET",
        &format!("/v1/config/ingress-gateway/{GATEWAY}"),
        None,
    );
    note("entry, missing", status_and_text(&missing));
    let missing_index = missing.index.unwrap_or(1);
    note(
        "entry, missing: index present",
        missing.index.is_some().to_string(),
    );
    let started = Instant::now();
    let path = format!("/v1/config/ingress-gateway/{GATEWAY}?index={missing_index}&wait=1s");
    let _ = target.send("GET", &path, None);
    note(
        "blocking on a missing entry waits",
        waited_out(started.elapsed()),
    );
    let path = format!("/v1/config/ingress-gateway/{GATEWAY}?index={missing_index}&wait=10s");
    let waiter = park(target, path);
    let first = target.send("PUT", "/v1/config?cas=0", Some(&entry));
    note("entry PUT cas=0, new", status_and_text(&first));
    let (woke_after, woke) = waiter.join().expect("blocking entry query");
    note(
        "the entry's creation wakes a blocking query at once",
        format!("{} {}", woke_after < Duration::from_secs(3), woke.status),
    );
    let again = target.send("PUT", "/v1/config?cas=0", Some(&entry));
    note("entry PUT cas=0, exists", status_and_text(&again));
    let read = target.send(
        "GET",
        &format!("/v1/config/ingress-gateway/{GATEWAY}"),
        None,
    );
    note("entry GET", without_indexes(read.json()).to_string());
    let current = read.json()["ModifyIndex"].as_u64().expect("ModifyIndex");
    note(
        "entry GET X-Consul-Index is its ModifyIndex or later",
        (read.index.unwrap_or(0) >= current).to_string(),
    );
    let stale = target.send(
        "PUT",
        &format!("/v1/config?cas={}", current - 1),
        Some(&entry),
    );
    note("entry PUT cas=stale", status_and_text(&stale));
    let mut changed = entry.clone();
    changed["Meta"]["note"] = json!("v2");
    let ok = target.send("PUT", &format!("/v1/config?cas={current}"), Some(&changed));
    note("entry PUT cas=current", status_and_text(&ok));
    let before = target
        .send(
            "GET",
            &format!("/v1/config/ingress-gateway/{GATEWAY}"),
            None,
        )
        .json()["ModifyIndex"]
        .clone();
    let identical = target.send("PUT", "/v1/config", Some(&changed));
    note("identical entry PUT", status_and_text(&identical));
    let after = target
        .send(
            "GET",
            &format!("/v1/config/ingress-gateway/{GATEWAY}"),
            None,
        )
        .json()["ModifyIndex"]
        .clone();
    note(
        "identical entry PUT moves ModifyIndex",
        (before != after).to_string(),
    );

    // --- validation the daemon relies on ---
    let with_hosts = |hosts: Value| {
        json!({"Kind": "ingress-gateway", "Name": "probe", "Listeners": [
            {"Port": 9997, "Protocol": "http", "Services": [{"Name": "shop", "Hosts": hosts}]}
        ]})
    };
    for host in [
        "example.*",
        "a.*.b.example.com",
        "bad_host!.example.com",
        "*",
    ] {
        let reply = target.send("PUT", "/v1/config", Some(&with_hosts(json!([host]))));
        note(&format!("entry with host {host}"), status_and_text(&reply));
    }
    let dup = json!({"Kind": "ingress-gateway", "Name": "probe", "Listeners": [
        {"Port": 9997, "Protocol": "http", "Services": [
            {"Name": "shop", "Hosts": ["a.example.com"]}, {"Name": "cart", "Hosts": ["a.example.com"]}
        ]}
    ]});
    note(
        "entry with a duplicate host",
        status_and_text(&target.send("PUT", "/v1/config", Some(&dup))),
    );
    let tcp = json!({"Kind": "service-defaults", "Name": "db", "Protocol": "tcp"});
    let _ = target.send("PUT", "/v1/config", Some(&tcp));
    let mismatch = json!({"Kind": "ingress-gateway", "Name": "probe", "Listeners": [
        {"Port": 9997, "Protocol": "http", "Services": [{"Name": "db", "Hosts": ["db.example.com"]}]}
    ]});
    note(
        "entry routing a tcp service on http",
        status_and_text(&target.send("PUT", "/v1/config", Some(&mismatch))),
    );
    let http2 = json!({"Kind": "ingress-gateway", "Name": "probe", "Listeners": [
        {"Port": 9998, "Protocol": "http2", "Services": [{"Name": "shop", "Hosts": ["shop.example.com"]}]}
    ]});
    note(
        "entry routing an http service on http2",
        status_and_text(&target.send("PUT", "/v1/config", Some(&http2))),
    );
    let unknown = json!({"Kind": "ingress-gateway", "Name": "probe", "Bogus": 1, "Listeners": []});
    note(
        "entry with an unknown field: status",
        target
            .send("PUT", "/v1/config", Some(&unknown))
            .status
            .to_string(),
    );
    let namespaced =
        json!({"Kind": "ingress-gateway", "Name": "probe", "Namespace": "team-a", "Listeners": []});
    note(
        "entry with Namespace on CE: status",
        target
            .send("PUT", "/v1/config", Some(&namespaced))
            .status
            .to_string(),
    );

    // --- the agent: register, read, deregister ---
    let registration = json!({
        "ID": INGRESS_ID, "Name": INGRESS_ID, "Tags": ["traefik.enable=true"], "Port": 9997,
        "Address": "127.0.0.1", "Meta": {"managed-by": "ingress-service-monitor"},
        "Check": {"CheckID": format!("{INGRESS_ID}:ready"), "Name": "ready",
                  "HTTP": "http://127.0.0.1:8443/ready", "Interval": "10s", "Timeout": "2s"}
    });
    let reg = target.send(
        "PUT",
        "/v1/agent/service/register?replace-existing-checks",
        Some(&registration),
    );
    note("agent register", status_and_text(&reg));
    let svc = target.send("GET", &format!("/v1/agent/service/{INGRESS_ID}"), None);
    let body = svc.json();
    note(
        "agent service fields",
        [
            "ID",
            "Service",
            "Tags",
            "Port",
            "Address",
            "Meta",
            "EnableTagOverride",
        ]
        .iter()
        .map(|k| format!("{k}={}", body[*k]))
        .collect::<Vec<_>>()
        .join(" "),
    );
    note(
        "agent service ContentHash header",
        common::consul::header(&svc.headers, "x-consul-contenthash")
            .is_some()
            .to_string(),
    );
    let unknown = target.send("GET", "/v1/agent/service/nope", None);
    note("agent service, unknown", status_and_text(&unknown));
    let checks = target.send("GET", "/v1/agent/checks", None).json();
    let check = &checks[format!("{INGRESS_ID}:ready")];
    note("agent check type", check["Type"].to_string());
    note(
        "agent checks Definition",
        if check["Definition"]["HTTP"].is_string() {
            "HTTP set"
        } else {
            "empty"
        }
        .to_string(),
    );
    let dereg = target.send(
        "PUT",
        &format!("/v1/agent/service/deregister/{INGRESS_ID}"),
        None,
    );
    note("agent deregister", status_and_text(&dereg));
    let gone = target.send("GET", &format!("/v1/agent/service/{INGRESS_ID}"), None);
    note(
        "agent service after deregister: status",
        gone.status.to_string(),
    );
    let unknown = target.send("PUT", "/v1/agent/service/deregister/nope", None);
    note("deregister an unknown service", unknown.status.to_string());
    seen
}

/// The ACL steps: a token with the README's read rules and the ingress service's write,
/// and the entry-write rule `mesh` / `operator` varied.
fn observe_acl(target: &Target, grant: &dyn Fn(&[&str])) -> Vec<(String, String)> {
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut note = |step: &str, value: String| seen.push((step.to_string(), value));
    let entry = json!({"Kind": "ingress-gateway", "Name": GATEWAY, "Listeners": []});
    let daemon = target.with_token(Some(TOKEN));

    grant(&[]);
    let denied = daemon.send("PUT", "/v1/config?cas=0", Some(&entry));
    note("entry write denied: status", denied.status.to_string());
    let text = denied.body.trim().to_string();
    let text = match text.split_once("AccessorID '") {
        Some((head, rest)) => format!(
            "{head}AccessorID '<id>'{}",
            rest.split_once('\'').map_or("", |r| r.1)
        ),
        None => text,
    };
    note("entry write denied: 403 text", text);
    let other = daemon.send(
        "PUT",
        "/v1/agent/service/register",
        Some(&json!({"ID": "other", "Name": "other", "Port": 1})),
    );
    let text = other.body.trim().to_string();
    let text = match text.split_once("AccessorID '") {
        Some((head, rest)) => format!(
            "{head}AccessorID '<id>'{}",
            rest.split_once('\'').map_or("", |r| r.1)
        ),
        None => text,
    };
    note("register another service: status", other.status.to_string());
    note("register another service: 403 text", text);
    let own = daemon.send(
        "PUT",
        "/v1/agent/service/register",
        Some(&json!({"ID": INGRESS_ID, "Name": INGRESS_ID, "Port": 1})),
    );
    note("register the ingress service", status_and_text(&own));
    let unknown = target.with_token(Some("00000000-dead-beef-0000-000000000000"));
    let reply = unknown.send("GET", "/v1/catalog/services", None);
    note("unknown token", status_and_text(&reply));
    let anonymous = target.with_token(None);
    let reply = anonymous.send("GET", "/v1/catalog/services", None);
    note("no token, catalog", status_and_text(&reply));
    let reply = daemon.send("GET", "/v1/catalog/services", None);
    note("read token, catalog", reply.status.to_string());

    grant(&["mesh"]);
    let reply = daemon.send("PUT", "/v1/config?cas=0", Some(&entry));
    note("entry write with mesh = write", status_and_text(&reply));
    grant(&["operator"]);
    let reply = daemon.send("PUT", "/v1/config", Some(&entry));
    note("entry write with operator = write", status_and_text(&reply));
    seen
}

const TOKEN: &str = "6a1f0e2d-3c4b-4a59-8e7f-0123456789ab";

fn compare(sim: Vec<(String, String)>, real: Vec<(String, String)>) {
    let sim: BTreeMap<String, String> = sim.into_iter().collect();
    let mut problems = Vec::new();
    let mut table = String::new();
    for (step, real_seen) in &real {
        let sim_seen = sim.get(step).cloned().unwrap_or_else(|| "<missing>".into());
        table.push_str(&format!(
            "{step}\n    sim:  {sim_seen}\n    real: {real_seen}\n"
        ));
        let known = KNOWN.iter().find(|(s, _, _)| s == step);
        if let Some((_, k_sim, k_real)) = known {
            if sim_seen != *k_sim || real_seen != k_real {
                problems.push(format!(
                    "{step}: listed as sim {k_sim:?} / real {k_real:?}, seen sim {sim_seen:?} / real {real_seen:?}"
                ));
            }
        } else if sim_seen != *real_seen {
            problems.push(format!(
                "{step}: sim {sim_seen:?} but Consul 1.8.7 {real_seen:?}"
            ));
        }
    }
    eprintln!("--- observations ---\n{table}");
    assert!(
        problems.is_empty(),
        "differences not in KNOWN:\n{}",
        problems.join("\n")
    );
}

#[test]
#[ignore = "needs a Consul agent (CONSUL_BIN): run .ci/run"]
fn the_simulator_answers_the_daemons_requests_as_consul_1_8_7_does() {
    let agent = Agent::start(AgentOptions::default());
    let sim = Sim::start(SimOptions::default());
    let real_seen = observe(&Target {
        consul: &agent,
        port: agent.http_port(),
        token: None,
    });
    let sim_seen = observe(&Target {
        consul: &sim,
        port: sim.addr().port(),
        token: None,
    });
    compare(sim_seen, real_seen);
}

#[test]
#[ignore = "needs a Consul agent (CONSUL_BIN): run .ci/run"]
fn the_simulator_denies_as_consul_1_8_7_does() {
    let agent = Agent::start(AgentOptions {
        acl: true,
        ..AgentOptions::default()
    });
    let base = "service \"edge-ingress\" { policy = \"write\" }\n\
                service_prefix \"\" { policy = \"read\" }\n\
                node_prefix \"\" { policy = \"read\" }\n";
    let real_grant = |extra: &[&str]| {
        let mut rules = base.to_string();
        for resource in extra {
            rules.push_str(&format!("{resource} = \"write\"\n"));
        }
        agent.set_policy(TOKEN, &rules);
    };
    let real_seen = observe_acl(
        &Target {
            consul: &agent,
            port: agent.http_port(),
            token: Some(MASTER_TOKEN),
        },
        &real_grant,
    );

    let sim = Sim::start(SimOptions {
        acl: true,
        ..SimOptions::default()
    });
    let sim_grant = |extra: &[&str]| {
        let mut rules = vec![
            Rule::Service(INGRESS_ID.into(), Access::Write),
            Rule::ServicePrefix(String::new(), Access::Read),
            Rule::NodePrefix(String::new(), Access::Read),
        ];
        for resource in extra {
            rules.push(match *resource {
                "mesh" => Rule::Mesh(Access::Write),
                _ => Rule::Operator(Access::Write),
            });
        }
        sim.set_token(TOKEN, rules);
    };
    let sim_seen = observe_acl(
        &Target {
            consul: &sim,
            port: sim.addr().port(),
            token: None,
        },
        &sim_grant,
    );
    compare(sim_seen, real_seen);
}

/// Every listed difference is in the README's table.
#[test]
fn every_known_difference_is_in_the_readme() {
    let readme = include_str!("../README.md");
    let table = readme
        .split("### Simulator vs Consul 1.8.7")
        .nth(1)
        .expect("README has a \"Simulator vs Consul 1.8.7\" section");
    for (step, _, _) in KNOWN {
        assert!(table.contains(step), "README table lacks {step:?}");
    }
}

/// The endpoints the steps above compare, as (method, path without query).
const COMPARED: &[(&str, &str)] = &[
    ("GET", "/v1/catalog/services"),
    ("GET", "/v1/internal/ui/services"),
    ("GET", "/v1/config/service-defaults"),
    ("GET", "/v1/config/proxy-defaults/global"),
    ("GET", "/v1/config/ingress-gateway/edge"),
    ("PUT", "/v1/config"),
    ("PUT", "/v1/agent/service/register"),
    ("GET", "/v1/agent/service/edge-ingress"),
    ("GET", "/v1/agent/checks"),
    ("PUT", "/v1/agent/service/deregister/edge-ingress"),
];

/// The daemon's own run against the agent (converge, create a service-defaults entry,
/// SIGTERM) calls no endpoint the steps above leave out: a new call in the daemon makes
/// this fail until the differential test compares it too.
#[test]
#[ignore = "needs a Consul agent (CONSUL_BIN): run .ci/run"]
fn every_endpoint_the_daemon_calls_is_compared() {
    let agent = Agent::start(AgentOptions::default());
    agent.add_service(service(
        "web",
        &["gw-traefik.http.routers.web.rule=Host(`web.example.com`)"],
    ));
    let mut daemon = Daemon::start(&with(base_env(&agent), &[("SETSERVICEDEFAULTS", "true")]));
    wait_until(EVENTUALLY, "web routed", || {
        routes(&agent, 9997) == [route("web", &["web.example.com"])]
    });
    wait_until(EVENTUALLY, "/health ok", || daemon.health().0 == 200);
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(6)).code(), Some(0));
    let called: std::collections::BTreeSet<(String, String)> = agent
        .requests()
        .into_iter()
        .map(|(method, url)| {
            let path = url.split('?').next().unwrap_or_default().to_string();
            (method, path)
        })
        .collect();
    let missing: Vec<&(String, String)> = called
        .iter()
        .filter(|(m, p)| !COMPARED.iter().any(|(cm, cp)| cm == m && cp == p))
        .collect();
    assert!(
        missing.is_empty(),
        "the daemon calls endpoints the differential test does not compare: {missing:?} (all: {called:?})"
    );
    for expected in [("PUT", "/v1/config"), ("PUT", "/v1/agent/service/register")] {
        assert!(
            called.contains(&(expected.0.to_string(), expected.1.to_string())),
            "the run made no {expected:?}: {called:?}"
        );
    }
}
