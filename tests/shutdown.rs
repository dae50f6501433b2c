//! Shutdown with a write in flight: the registration already sent must not land after
//! the deregistration, or the ingress service stays registered after the daemon exits
//! (and the outer proxy keeps sending traffic to a gateway whose daemon is gone).

mod common;

use std::time::{Duration, Instant};

use common::*;

const SHOP: &str = "gw-traefik.http.routers.shop.rule=Host(`shop.example.com`)";
const SHOP_V2: &str = "gw-traefik.http.routers.shop.rule=Host(`shop2.example.com`)";
/// How late the simulator acts on the held registration (an agent may take a second or
/// more under load); the daemon's whole shutdown stays within 5 s.
const HELD_FOR: Duration = Duration::from_millis(1500);

#[test]
fn a_registration_in_flight_at_sigterm_does_not_outlive_the_deregistration() {
    let sim = sim_http();
    sim.add_service(service("shop", &[SHOP]));
    let mut daemon = Daemon::start(&base_env(&sim));
    wait_until(EVENTUALLY, "registered", || {
        ingress_tags(&sim).is_some_and(|tags| tags.iter().any(|t| t.contains("shop.example.com")))
    });

    // The next registration is received at once and acted on late.
    sim.hold_next("PUT", "/v1/agent/service/register", HELD_FOR);
    sim.set_service_tags("node-1", "shop", &[SHOP_V2]);
    wait_until(EVENTUALLY, "the registration is in flight", || {
        sim.in_flight()
            .iter()
            .any(|(_, method, path, _)| method == "PUT" && path == "/v1/agent/service/register")
    });
    let writes = sim.state_changing_writes();
    let sent = Instant::now();
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(6));
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "exited within 5 s, took {:?}",
        sent.elapsed()
    );
    assert_eq!(status.code(), Some(0), "output:\n{}", daemon.output());

    // Both the held registration and the deregistration have been applied, in whatever
    // order the daemon sent them.
    wait_until(EVENTUALLY, "both writes applied", || {
        sim.state_changing_writes() >= writes + 2
    });
    assert!(
        sim.agent_service(INGRESS_ID).is_none(),
        "the ingress service is still registered after exit:\n{}",
        daemon.output()
    );
}
