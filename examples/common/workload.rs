//! The benchmark's workload, shared by `bench.rs` and `profile.rs` (each includes it with
//! `#[path]`): N services, 20% of them tagged for this gateway with 6 to 10 tags, the rest
//! untagged, with ordinary tags, or tagged for another gateway.

use consul_sim::ServiceSpec;

/// The tag prefix the daemon runs with.
pub const PREFIX: &str = "gw-us-east";

/// One tagged service: its instance and the host its rule currently names.
pub struct Tagged {
    pub name: String,
    pub node: String,
    pub index: usize,
    pub host: String,
    /// How many extra (non-rule) tags it carries, to vary the count between 6 and 10.
    pub variant: usize,
}

impl Tagged {
    pub fn tags(&self) -> Vec<String> {
        let (i, p) = (self.index, PREFIX);
        let r = &self.name;
        let mut tags = vec![
            format!("{p}-traefik.http.routers.{r}.rule=Host(`{}`)", self.host),
            format!("{p}-traefik.http.routers.{r}.tls=true"),
            format!("{p}-traefik.http.routers.{r}.entrypoints=websecure"),
            format!("{p}-traefik.http.routers.{r}.middlewares={r}-headers@consulcatalog"),
            "version=v1.4.2".to_string(),
            format!("team=team-{}", i % 17),
        ];
        let extra = [
            format!("{p}-traefik.http.middlewares.{r}-headers.headers.customrequestheaders.X-Service={r}"),
            format!("{p}-traefik.http.routers.{r}.tls.certresolver=letsencrypt"),
            format!("{p}-traefik.http.services.{r}.loadbalancer.passhostheader=true"),
            format!("{p}-traefik.enable=true"),
        ];
        tags.extend(extra.into_iter().take(self.variant));
        tags
    }
}

pub struct Workload {
    pub tagged: Vec<Tagged>,
    pub specs: Vec<ServiceSpec>,
    /// service-defaults to create: (name, protocol).
    pub defaults: Vec<(String, &'static str)>,
}

impl Workload {
    pub fn new(n: usize) -> Workload {
        let mut tagged = Vec::new();
        let mut specs = Vec::new();
        let mut defaults = Vec::new();
        for i in 0..n {
            let name = format!("s{i}");
            let node = format!("node-{}", i % 50);
            let tags: Vec<String> = match i % 10 {
                // 20%: exposed through this gateway.
                0 | 5 => {
                    let t = Tagged {
                        name: name.clone(),
                        node: node.clone(),
                        index: i,
                        host: format!("{name}.example.com"),
                        variant: i % 5,
                    };
                    let tags = t.tags();
                    tagged.push(t);
                    defaults.push((name.clone(), "http"));
                    tags
                }
                // 40% untagged.
                1 | 2 | 3 | 6 => Vec::new(),
                // 20% with ordinary tags.
                4 | 7 => vec![
                    "v2".to_string(),
                    "primary".to_string(),
                    format!("team=team-{}", i % 17),
                ],
                // 20% exposed through another gateway (a prefix that must not match).
                _ => {
                    if i % 20 == 8 {
                        defaults.push((name.clone(), if i % 40 == 8 { "grpc" } else { "tcp" }));
                    }
                    vec![
                        format!("gw-eu-west-traefik.http.routers.{name}.rule=Host(`{name}.eu.example.com`)"),
                        "gw-eu-west-traefik.enable=true".to_string(),
                        format!("{PREFIX}2-traefik.http.routers.{name}.rule=Host(`{name}.other.example.com`)"),
                        "metrics".to_string(),
                    ]
                }
            };
            let tag_refs: Vec<&str> = tags.iter().map(String::as_str).collect();
            let mut spec = ServiceSpec::new(&name, &tag_refs);
            spec.node = node;
            spec.port = 20_000 + (i % 10_000) as u16;
            specs.push(spec);
        }
        Workload {
            tagged,
            specs,
            defaults,
        }
    }
}
