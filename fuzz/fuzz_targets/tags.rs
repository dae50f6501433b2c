//! Tag parsing: Traefik rules, Fabio urlprefix tags, host checks and the tag → http-route
//! mapping never panic, and what they accept is consistent: the ingress hosts are the
//! positive hosts of the parsed rule, every host a rule yields either passes or fails
//! `check_host` without panicking, and every route group carries only hostnames an
//! http-route accepts, paths beginning with '/', and canonical (sorted, unique) matches.
#![no_main]

use ingress_service_monitor::config::GatewayType;
use ingress_service_monitor::{routes, tags};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let hosts = tags::parse_traefik_rule(text);
    let rule = tags::parse_rule(text);
    assert_eq!(
        hosts.as_ref().ok(),
        rule.as_ref().ok().map(|r| r.positive_hosts()).as_ref()
    );
    if let Ok(tags::Rule::Branches(branches)) = &rule {
        assert!(!branches.is_empty() && branches.len() <= tags::MAX_BRANCHES);
    }
    for gateway in [GatewayType::Traefik, GatewayType::Fabio] {
        let _ = tags::ingress_tag(gateway, text);
        if let Ok(hosts) = tags::tag_hosts(gateway, text) {
            for host in hosts {
                let _ = tags::check_host(&host.to_lowercase());
            }
        }
        let as_tag = match gateway {
            GatewayType::Traefik => format!("traefik.http.routers.r.rule={text}"),
            GatewayType::Fabio => text.to_owned(),
        };
        check_routes(&routes::tag_routes(gateway, "svc", &as_tag));
        // Several tags, one per line, merged for one service.
        let lines: Vec<&str> = text.lines().collect();
        check_routes(&routes::service_routes(gateway, "svc", &lines));
    }
    let _ = tags::fabio_host(text);
    let _ = tags::fabio_route(text);
    let _ = tags::fabio_tag_without_strip(text);
    let _ = tags::check_host(text);
    let _ = tags::check_route_hostname(text);
    let _ = tags::strip_prefix(text, "gw-");
});

fn check_routes(got: &routes::Routes) {
    assert!(got.groups.windows(2).all(|w| w[0] < w[1]));
    for group in &got.groups {
        assert!(!group.matches.is_empty());
        assert!(group.matches.windows(2).all(|w| w[0] < w[1]));
        for host in &group.hostnames {
            assert!(tags::check_route_hostname(host).is_ok(), "{host:?}");
        }
        for m in &group.matches {
            assert!(m.path.value.starts_with('/'), "{m:?}");
        }
        let _ = group.rule_json("svc");
    }
}
