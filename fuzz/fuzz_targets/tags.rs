//! Tag parsing: Traefik rules, Fabio urlprefix tags and host checks never panic, and
//! what they accept is consistent (every host a rule yields is lower-case-able and
//! either passes or fails `check_host` without panicking).
#![no_main]

use ingress_service_monitor::config::GatewayType;
use ingress_service_monitor::tags;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = tags::parse_traefik_rule(text);
    for gateway in [GatewayType::Traefik, GatewayType::Fabio] {
        let _ = tags::ingress_tag(gateway, text);
        if let Ok(hosts) = tags::tag_hosts(gateway, text) {
            for host in hosts {
                let _ = tags::check_host(&host.to_lowercase());
            }
        }
    }
    let _ = tags::fabio_host(text);
    let _ = tags::check_host(text);
    let _ = tags::strip_prefix(text, "gw-");
});
