//! Several gateway instances: three daemons (as three allocations of one gateway group)
//! against one agent. Each registers its own ingress service; they share the config
//! entry, and under churn the number of writes that change it stays the number of real
//! changes: no flapping between instances, CAS races resolved.

mod common;

use std::time::Duration;

use common::*;

const INSTANCES: [&str; 3] = ["a1", "a2", "a3"];
const SERVICES: usize = 20;
const CHANGES: usize = 30;

fn host_tag(service: usize, version: usize) -> String {
    format!("gw-traefik.http.routers.s{service}.rule=Host(`s{service}-v{version}.example.com`)")
}

fn expected(versions: &[usize]) -> Vec<(String, Vec<String>)> {
    let mut routes: Vec<(String, Vec<String>)> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("svc{i:02}"), vec![format!("s{i}-v{v}.example.com")]))
        .collect();
    routes.sort();
    routes
}

#[test]
fn three_instances_share_the_entry_without_flapping() {
    let sim = sim_http();
    let mut versions = vec![0; SERVICES];
    for (i, v) in versions.iter().enumerate() {
        sim.add_service(service(&format!("svc{i:02}"), &[host_tag(i, *v).as_str()]));
    }
    let daemons: Vec<Daemon> = INSTANCES
        .iter()
        .map(|alloc| Daemon::start(&with(base_env(&sim), &[("NOMAD_ALLOC_ID", alloc)])))
        .collect();

    wait_until(EVENTUALLY, "entry converged", || {
        routes(&sim, 9997) == expected(&versions)
    });
    for alloc in INSTANCES {
        let id = format!("edge-ingress-{alloc}");
        wait_until(EVENTUALLY, "each instance registered its own ID", || {
            sim.agent_service(&id).is_some()
        });
    }
    let writes_before = sim.entry_writes("ingress-gateway", GATEWAY);
    let puts_before = config_put_sizes(&sim).len();

    for change in 0..CHANGES {
        let i = (change * 7) % SERVICES;
        versions[i] += 1;
        sim.set_service_tags(
            "node-1",
            &format!("svc{i:02}"),
            &[host_tag(i, versions[i]).as_str()],
        );
        wait_until(EVENTUALLY, "change reflected in the entry", || {
            routes(&sim, 9997) == expected(&versions)
        });
    }
    // Let every instance see the last change; then nothing more may be written.
    for alloc in INSTANCES {
        let id = format!("edge-ingress-{alloc}");
        let last = format!(
            "s{0}-v{1}.example.com",
            (CHANGES - 1) * 7 % SERVICES,
            versions[(CHANGES - 1) * 7 % SERVICES]
        );
        wait_until(EVENTUALLY, "each instance's tags follow", || {
            sim.agent_service(&id)
                .is_some_and(|s| s["Tags"].to_string().contains(&last))
        });
    }
    let writes = sim.entry_writes("ingress-gateway", GATEWAY) - writes_before;
    let puts = config_put_sizes(&sim).len() - puts_before;
    // CAS misses: PUTs answered `false` (5 bytes).
    let misses = config_put_sizes(&sim)
        .iter()
        .filter(|&&size| size == 5)
        .count();
    eprintln!(
        "{} instances, {CHANGES} catalog changes: {writes} entry writes that changed it, \
         {puts} PUT /v1/config requests in all, {misses} CAS misses",
        INSTANCES.len()
    );
    assert_eq!(writes as usize, CHANGES, "one entry change per real change");
    // Each instance may send its own (identical) write for a change; more means flapping.
    assert!(
        puts <= CHANGES * INSTANCES.len() + misses,
        "{puts} PUTs for {CHANGES} changes"
    );
    // Quiet again: no instance undoes another's write.
    let quiet_writes = sim.entry_writes("ingress-gateway", GATEWAY);
    let quiet_puts = config_put_sizes(&sim).len();
    std::thread::sleep(Duration::from_secs(2)); // the window measured, not a synchronisation
    assert_eq!(
        sim.entry_writes("ingress-gateway", GATEWAY),
        quiet_writes,
        "writes while idle"
    );
    assert_eq!(config_put_sizes(&sim).len(), quiet_puts, "PUTs while idle");
    drop(daemons);
}

#[test]
fn an_entry_planned_from_a_newer_catalog_is_not_overwritten_at_once() {
    let sim = sim_http();
    sim.add_service(service("shop", &[host_tag(0, 1).as_str()]));
    // Another instance wrote this from a catalog far ahead of ours: as after a snapshot
    // restore, our watch never catches up, so the daemon writes after its limit.
    sim.put_config(
        serde_json::json!({
            "Kind": "ingress-gateway", "Name": GATEWAY,
            "Meta": {
                "managed-by": "ingress-service-monitor",
                "ingress-service-monitor-catalog-index": "1000000"
            },
            "Listeners": [{"Port": 9997, "Protocol": "http",
                "Services": [{"Name": "shop", "Hosts": ["s0-v0.example.com"]}]}]
        }),
        None,
    )
    .expect("entry accepted");
    let started = std::time::Instant::now();
    let daemon = Daemon::start(&base_env(&sim));
    wait_until(EVENTUALLY, "registered at once", || {
        sim.agent_service(INGRESS_ID).is_some()
    });
    wait_until(EVENTUALLY, "our plan written in the end", || {
        routes(&sim, 9997) == [route("shop", &["s0-v1.example.com"])]
    });
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(4),
        "wrote over a newer plan after {took:?}, without waiting"
    );
    daemon.wait_output(EVENTUALLY, "stayed ahead of ours");
    // The written entry records the catalog index it was planned from.
    let stamp =
        entry(&sim).expect("entry")["Meta"]["ingress-service-monitor-catalog-index"].clone();
    let ours: u64 = stamp
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("numeric stamp");
    assert!(ours > 0 && ours < 1_000_000, "stamp {stamp}");
}
