//! Fabio `urlprefix-` tags: `urlprefix-[host[:port]]/path [key=value ...]`.

/// An HTTP route of a Fabio `urlprefix-` tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FabioRoute {
    /// The host before the path, lower-cased, port dropped; `None` for `urlprefix-/path`
    /// (every host). `Some("")` for `urlprefix-:port/path` (a port and no host).
    pub host: Option<String>,
    /// The port written after the host, if any (Fabio matches it; routes cannot).
    pub port: Option<String>,
    /// The path prefix, starting with `/` (Fabio's default `prefix` matcher).
    pub path: String,
    /// `strip=/p`: Fabio removes `/p` from the request path before forwarding.
    pub strip: Option<String>,
    /// `proto=...` (never `tcp...`: those are not HTTP routes).
    pub proto: Option<String>,
    /// Every other `key=value` option (or bare word), in order.
    pub options: Vec<(String, String)>,
}

/// The HTTP route of a Fabio `urlprefix-` tag, if it is one.
///
/// Fabio needs a `/` after the host of an HTTP route (it ignores `urlprefix-host`), and
/// `proto=tcp...` routes are TCP/SNI routes that an HTTP listener cannot serve: both give
/// `None`, as does a tag that is not `urlprefix-`.
pub fn fabio_route(tag: &str) -> Option<FabioRoute> {
    let spec = tag.strip_prefix("urlprefix-")?.trim_start();
    let mut fields = spec.split_whitespace();
    let route = fields.next()?;
    let mut parsed = FabioRoute {
        host: None,
        port: None,
        path: String::new(),
        strip: None,
        proto: None,
        options: Vec::new(),
    };
    for field in fields {
        let (key, value) = field.split_once('=').unwrap_or((field, ""));
        match key {
            "proto" if value.starts_with("tcp") => return None,
            "proto" => parsed.proto = Some(value.to_owned()),
            "strip" => parsed.strip = Some(value.to_owned()),
            _ => parsed.options.push((key.to_owned(), value.to_owned())),
        }
    }
    let (host_port, path) = route.split_once('/')?;
    parsed.path = format!("/{path}");
    if !host_port.is_empty() {
        let (host, port) = match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port.to_owned())),
            None => (host_port, None),
        };
        parsed.host = Some(host.to_lowercase());
        parsed.port = port;
    }
    Some(parsed)
}

/// Host of a Fabio `urlprefix-` tag, if it names one.
///
/// Fabio needs a `/` after the host of an HTTP route (it ignores `urlprefix-host`), and
/// `proto=tcp...` routes are TCP/SNI routes that an HTTP listener cannot serve.
pub fn fabio_host(tag: &str) -> Option<String> {
    fabio_route(tag)?.host.filter(|host| !host.is_empty())
}

/// The tag without its `strip=` option: what the outer Fabio must see when the gateway
/// does the stripping itself (api mode), or the prefix would be stripped twice.
pub fn fabio_tag_without_strip(tag: &str) -> String {
    match tag.strip_prefix("urlprefix-") {
        Some(spec) if fabio_route(tag).is_some_and(|r| r.strip.is_some()) => {
            let kept: Vec<&str> = spec
                .split_whitespace()
                .filter(|field| !field.starts_with("strip="))
                .collect();
            format!("urlprefix-{}", kept.join(" "))
        }
        _ => tag.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fabio_route_table() {
        // (tag, host, port, path, strip, proto, other options)
        type Want<'a> = Option<(Option<&'a str>, Option<&'a str>, &'a str, Option<&'a str>)>;
        let cases: &[(&str, Want)] = &[
            ("urlprefix-a.com/", Some((Some("a.com"), None, "/", None))),
            (
                "urlprefix-A.Com/Api",
                Some((Some("a.com"), None, "/Api", None)),
            ),
            (
                "urlprefix-a.com:8080/x",
                Some((Some("a.com"), Some("8080"), "/x", None)),
            ),
            ("urlprefix-/p", Some((None, None, "/p", None))),
            ("urlprefix-/", Some((None, None, "/", None))),
            ("urlprefix-:80/", Some((Some(""), Some("80"), "/", None))),
            (
                "urlprefix-a.com/x strip=/x",
                Some((Some("a.com"), None, "/x", Some("/x"))),
            ),
            (
                "urlprefix-  a.com/x   strip=/x ",
                Some((Some("a.com"), None, "/x", Some("/x"))),
            ),
            (
                "urlprefix-a.com/x/y/",
                Some((Some("a.com"), None, "/x/y/", None)),
            ),
            ("urlprefix-a.com", None),
            ("urlprefix-:3306 proto=tcp", None),
            ("urlprefix-a.com:443 proto=tcp+sni", None),
            ("urlprefix-a.com/ proto=tcp", None),
            ("urlprefix-", None),
            ("prefix-a.com/", None),
            ("traefik.http.routers.a.rule=Host(`a`)", None),
        ];
        for &(tag, want) in cases {
            let got = fabio_route(tag);
            let got = got.as_ref().map(|r| {
                (
                    r.host.as_deref(),
                    r.port.as_deref(),
                    r.path.as_str(),
                    r.strip.as_deref(),
                )
            });
            assert_eq!(got, want, "tag {tag:?}");
        }
        let route = fabio_route("urlprefix-a.com/ proto=https tlsskipverify=true weight=0.5 x")
            .expect("route");
        assert_eq!(route.proto.as_deref(), Some("https"));
        let options: Vec<(&str, &str)> = route
            .options
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            options,
            [("tlsskipverify", "true"), ("weight", "0.5"), ("x", "")]
        );
    }

    #[test]
    fn strip_leaves_the_tag_only_when_there_is_one() {
        let cases: &[(&str, &str)] = &[
            ("urlprefix-a.com/x strip=/x", "urlprefix-a.com/x"),
            (
                "urlprefix-a.com/x strip=/x proto=https",
                "urlprefix-a.com/x proto=https",
            ),
            (
                "urlprefix-a.com/x  proto=https",
                "urlprefix-a.com/x  proto=https",
            ),
            (
                "urlprefix-:3306 proto=tcp strip=/x",
                "urlprefix-:3306 proto=tcp strip=/x",
            ),
            ("traefik.enable=true", "traefik.enable=true"),
        ];
        for &(tag, want) in cases {
            assert_eq!(fabio_tag_without_strip(tag), want, "tag {tag:?}");
        }
    }

    /// The host-only reading `fabio_host` had before [`fabio_route`], as the oracle.
    fn host_only(tag: &str) -> Option<String> {
        let spec = tag.strip_prefix("urlprefix-")?.trim_start();
        let mut fields = spec.split_whitespace();
        let route = fields.next()?;
        if fields.any(|opt| {
            opt.split_once('=')
                .is_some_and(|(k, v)| k == "proto" && v.starts_with("tcp"))
        }) {
            return None;
        }
        let (host_port, _path) = route.split_once('/')?;
        let host = host_port.split(':').next().unwrap_or_default();
        (!host.is_empty()).then(|| host.to_lowercase())
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// The ingress backend's Fabio hosts are unchanged.
        #[test]
        fn fabio_host_is_unchanged(parts in prop::collection::vec(prop::sample::select(vec![
            "urlprefix-", "a.com", "A.b", ":", "8080", "/", "/x", " ", "  ", "proto=tcp",
            "proto=https", "proto", "=", "strip=/x", "tcp", "\t", "*.",
        ]), 0..10)) {
            for tag in [parts.concat(), format!("urlprefix-{}", parts.concat())] {
                prop_assert_eq!(fabio_host(&tag), host_only(&tag), "tag {:?}", tag);
            }
        }
    }
}
