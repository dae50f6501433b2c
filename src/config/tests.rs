use super::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;

use rustls_pki_types::ServerName;

fn name(v: &str) -> ServerName<'static> {
    ServerName::try_from(v.to_owned()).expect("valid name")
}

/// Throwaway self-signed P-256 CA made for these tests only (`openssl req -x509`).
const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBeTCCAR+gAwIBAgIUGsuV70L+ecwVX2BBSYYRtJHb+PkwCgYIKoZIzj0EAwIw
EjEQMA4GA1UEAwwHdGVzdC1jYTAeFw0yNjExMjIyMjEzMzZaFw0zNjExMTkyMjEz
MzZaMBIxEDAOBgNVBAMMB3Rlc3QtY2EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC
AASPzrI/7AuvI3A/6iEsgnU2S2xXu0zAcHKU+JVdvpKnK4yZrglneXc5aHegpm+R
9pq1agaL7QV53dACkEJjOeIyo1MwUTAdBgNVHQ4EFgQUXj/i1w+EBewFPKS12Z+k
RCi95BwwHwYDVR0jBBgwFoAUXj/i1w+EBewFPKS12Z+kRCi95BwwDwYDVR0TAQH/
BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiB+s0F1Dz5uEcaNcsOTbTGNaN/MCxuK
uEbziFXSypP1xAIhAP5aL+a7mJ39De/f+KoGWJpTMT5iJMhP+FoNrbR937tP
-----END CERTIFICATE-----
";
/// The key of [`TEST_CERT`], PKCS#8; it protects nothing.
const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgtNvK9KxcSMZQJnbM
U/58En23fXypHbgYMou1h2mvHpKhRANCAASPzrI/7AuvI3A/6iEsgnU2S2xXu0zA
cHKU+JVdvpKnK4yZrglneXc5aHegpm+R9pq1agaL7QV53dACkEJjOeIy
-----END PRIVATE KEY-----
";

/// A P-256 key that does not belong to [`TEST_CERT`]; it protects nothing.
const OTHER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgjvaa7pXfRu2ikSjH
eiUWBel07vDm/gOynGb38ycDmAmhRANCAAQWnPb1tZIcM1Kr73mNws0eCLJ/5DZ8
9Eoq4QgQkRimH0q2Si0eMvaTGNn/t2IUUPRraSrtIG7Zkak6b2hRwI6c
-----END PRIVATE KEY-----
";
/// Valid PEM whose contents are not DER a certificate or key parser accepts.
const GARBAGE_CERT: &str = "-----BEGIN CERTIFICATE-----\nAQIDBA==\n-----END CERTIFICATE-----\n";
const GARBAGE_KEY: &str = "-----BEGIN PRIVATE KEY-----\nAQIDBA==\n-----END PRIVATE KEY-----\n";

/// Environment variables of one test case.
type Pairs<'a> = &'a [(&'a str, &'a str)];

const REQUIRED: [(&str, &str); 2] = [
    ("TAGINGRESSSERVICE", "gw-us-east"),
    ("SERVICENAMEINGRESSGATEWAY", "edge"),
];

/// A per-test directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("ism-config-test-{}-{name}", std::process::id()));
        // A leftover from an aborted run would make the test see stale files.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        fs::write(&path, contents).unwrap();
        path.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a leftover temp dir is harmless and must not fail the test.
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn parse_with(pairs: &[(&str, &str)], bundles: &[&Path]) -> Result<Config, Vec<ConfigError>> {
    let map: HashMap<String, String> = REQUIRED
        .iter()
        .chain(pairs)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    from_env_with(&|name| map.get(name).map(OsString::from), bundles)
}

/// Parses with the required variables set and no system CA bundle.
fn parse(pairs: &[(&str, &str)]) -> Result<Config, Vec<ConfigError>> {
    parse_with(pairs, &[])
}

fn ok(pairs: &[(&str, &str)]) -> Config {
    match parse(pairs) {
        Ok(config) => config,
        Err(errors) => panic!("{pairs:?}: unexpected errors {errors:?}"),
    }
}

fn errors(pairs: &[(&str, &str)]) -> Vec<ConfigError> {
    match parse(pairs) {
        Ok(config) => panic!("{pairs:?}: expected errors, got {config:?}"),
        Err(errors) => errors,
    }
}

#[test]
fn defaults() {
    let config = ok(&[]);
    assert_eq!(config.gateway_type, GatewayType::Traefik);
    assert_eq!(config.gateway_kind, GatewayKind::Ingress);
    assert_eq!(config.tag_prefix, "gw-us-east-");
    assert_eq!(config.gateway_name, "edge");
    assert_eq!(config.ingress_service_name, "edge-ingress");
    assert_eq!(config.ingress_service_id, "edge-ingress");
    assert_eq!(config.ingress_port, 9997);
    assert_eq!(config.ingress_port_http2, None);
    assert_eq!(config.ingress_port_grpc, None);
    assert_eq!(config.health_check_port, 8443);
    assert_eq!(config.ingress_address, None);
    assert_eq!(config.health_port, 10000);
    assert!(!config.set_service_defaults);
    assert!(!config.set_intentions);
    assert_eq!(config.log_format, LogFormat::Text);
    assert!(config
        .log_filter
        .would_enable("ingress_service_monitor", &tracing::Level::INFO));
    assert!(!config
        .log_filter
        .would_enable("ingress_service_monitor", &tracing::Level::DEBUG));
    let consul = &config.consul;
    assert_eq!(
        consul.address,
        AgentAddress::Tcp {
            https: false,
            host: "127.0.0.1".into(),
            port: 8500,
            path_prefix: String::new(),
        }
    );
    assert!(consul.token.is_none());
    assert!(consul.basic_auth.is_none());
    assert!(consul.tls.is_none());
    assert_eq!(consul.namespace, None);
    assert_eq!(consul.partition, None);
}

#[test]
fn explicit_values() {
    let config = ok(&[
        ("TYPEGATEWAY", "Fabio"),
        ("INGRESSPORT", "8080"),
        ("INGRESSPORTHTTP2", "8081"),
        ("INGRESSPORTGRPC", "8082"),
        ("INGRESSHEALTHCHECKPORT", "21000"),
        ("HEALTHPORT", "0"),
        ("INGRESSADDRESS", "10.0.0.5"),
        ("SETSERVICEDEFAULTS", "T"),
        ("SETINTENTIONS", "true"),
        ("LOGFORMAT", "JSON"),
        ("RUST_LOG", "warn,ingress_service_monitor=debug"),
        ("CONSUL_NAMESPACE", "team-a"),
        ("CONSUL_PARTITION", "part1"),
        ("CONSUL_HTTP_AUTH", "user:pass"),
    ]);
    assert_eq!(config.gateway_type, GatewayType::Fabio);
    assert_eq!(config.ingress_port, 8080);
    assert_eq!(config.ingress_port_http2, Some(8081));
    assert_eq!(config.ingress_port_grpc, Some(8082));
    assert_eq!(config.health_check_port, 21000);
    assert_eq!(config.health_port, 0);
    assert_eq!(config.ingress_address.as_deref(), Some("10.0.0.5"));
    assert!(config.set_service_defaults);
    assert!(config.set_intentions);
    assert_eq!(config.log_format, LogFormat::Json);
    assert!(config
        .log_filter
        .would_enable("ingress_service_monitor", &tracing::Level::DEBUG));
    assert!(!config
        .log_filter
        .would_enable("hyper", &tracing::Level::INFO));
    assert_eq!(config.consul.namespace.as_deref(), Some("team-a"));
    assert_eq!(config.consul.partition.as_deref(), Some("part1"));
    assert_eq!(
        config.consul.basic_auth.as_ref().map(Token::secret),
        Some("user:pass")
    );
}

#[test]
fn empty_optional_values_mean_unset() {
    let config = ok(&[
        ("INGRESSPORTHTTP2", ""),
        ("INGRESSPORTGRPC", ""),
        ("INGRESSADDRESS", ""),
        ("INGRESSPORT", ""),
        ("CONSULHTTPURL", ""),
        ("CONSULTOKEN", ""),
        ("NOMAD_ALLOC_ID", ""),
        ("CONSUL_NAMESPACE", ""),
        ("RUST_LOG", ""),
    ]);
    assert_eq!(config.ingress_port_http2, None);
    assert_eq!(config.ingress_port_grpc, None);
    assert_eq!(config.ingress_address, None);
    assert_eq!(config.ingress_port, 9997);
    assert_eq!(config.ingress_service_id, "edge-ingress");
    assert!(config.consul.token.is_none());
    assert_eq!(config.consul.namespace, None);
    let errors = errors(&[("TAGINGRESSSERVICE", "")]);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].variable, "TAGINGRESSSERVICE");
    assert!(errors[0].message.contains("required"), "{errors:?}");
}

#[test]
fn tag_prefix_is_normalised_to_one_trailing_dash() {
    let cases = [
        ("gw-us-east", "gw-us-east-"),
        ("gw-us-east-", "gw-us-east-"),
        ("gw-", "gw-"),
        ("gw--", "gw-"),
        ("gw", "gw-"),
    ];
    for (value, want) in cases {
        assert_eq!(
            ok(&[("TAGINGRESSSERVICE", value)]).tag_prefix,
            want,
            "{value:?}"
        );
    }
}

#[test]
fn ingress_service_name_and_id_defaults() {
    #[rustfmt::skip]
    let cases: &[(Pairs, &str, &str)] = &[
        (&[], "edge-ingress", "edge-ingress"),
        (&[("NOMAD_ALLOC_ID", "5e1b9f7c-0a4e-4b4f-9d3c-1f2e3d4c5b6a")], "edge-ingress", "edge-ingress-5e1b9f7c-0a4e-4b4f-9d3c-1f2e3d4c5b6a"),
        (&[("INGRESSSERVICENAME", "web-in")], "web-in", "web-in"),
        (&[("INGRESSSERVICENAME", "web-in"), ("NOMAD_ALLOC_ID", "a1")], "web-in", "web-in-a1"),
        (&[("INGRESSSERVICEID", "my.id"), ("NOMAD_ALLOC_ID", "a1")], "edge-ingress", "my.id"),
    ];
    for &(pairs, name, id) in cases {
        let config = ok(pairs);
        assert_eq!(config.ingress_service_name, name, "{pairs:?}");
        assert_eq!(config.ingress_service_id, id, "{pairs:?}");
    }
}

#[test]
fn ingress_address_forms() {
    let cases = [
        ("10.0.0.5", "10.0.0.5"),
        ("fd00::5", "fd00::5"),
        ("gateway.example.com", "gateway.example.com"),
        ("gw-1", "gw-1"),
    ];
    for (value, want) in cases {
        let config = ok(&[("INGRESSADDRESS", value)]);
        assert_eq!(config.ingress_address.as_deref(), Some(want), "{value:?}");
    }
    assert_eq!(host_for_url("10.0.0.5"), "10.0.0.5");
    assert_eq!(host_for_url("fd00::5"), "[fd00::5]");
    assert_eq!(host_for_url("gw.example.com"), "gw.example.com");
}

#[test]
fn parse_bool_follows_go() {
    for v in ["1", "t", "T", "TRUE", "true", "True"] {
        assert_eq!(parse_bool(v), Some(true), "{v:?}");
    }
    for v in ["0", "f", "F", "FALSE", "false", "False"] {
        assert_eq!(parse_bool(v), Some(false), "{v:?}");
    }
    for v in ["yes", "no", "on", "tRUE", "", " true", "2"] {
        assert_eq!(parse_bool(v), None, "{v:?}");
    }
}

#[test]
fn every_error_names_its_variable() {
    // (environment, variable, text the message must contain)
    #[rustfmt::skip]
    let cases: &[(Pairs, &str, &str)] = &[
        (&[("TYPEGATEWAY", "nginx")], "TYPEGATEWAY", "\"nginx\" is not a gateway type; expected traefik or fabio"),
        (&[("CONSULGATEWAY", "terminating")], "CONSULGATEWAY", "\"terminating\" is not a Consul gateway kind; expected ingress or api"),
    (&[("CONSULGATEWAY", "api"), ("INGRESSPORTHTTP2", "9998")], "INGRESSPORTHTTP2", "9998 is set, but with CONSULGATEWAY=api the gateway has only the http listener"),
    (&[("CONSULGATEWAY", "api"), ("INGRESSPORTGRPC", "9999")], "INGRESSPORTGRPC", "binds http-routes only to services whose protocol is http"),
    (&[("TAGINGRESSSERVICE", "gw us")], "TAGINGRESSSERVICE", "\"gw us\" contains whitespace"),
        (&[("TAGINGRESSSERVICE", "---")], "TAGINGRESSSERVICE", "\"---\" has nothing before"),
        (&[("SERVICENAMEINGRESSGATEWAY", "")], "SERVICENAMEINGRESSGATEWAY", "required"),
        (&[("SERVICENAMEINGRESSGATEWAY", "edge/x")], "SERVICENAMEINGRESSGATEWAY", "\"edge/x\" is not usable in a Consul URL path; expected only letters, digits"),
        (&[("SERVICENAMEINGRESSGATEWAY", "..")], "SERVICENAMEINGRESSGATEWAY", "URL path"),
        (&[("INGRESSSERVICENAME", "a b")], "INGRESSSERVICENAME", "\"a b\" is not usable in a Consul URL path"),
        (&[("INGRESSSERVICEID", "a?b")], "INGRESSSERVICEID", "\"a?b\" is not usable in a Consul URL path"),
        (&[("NOMAD_ALLOC_ID", "x/y")], "NOMAD_ALLOC_ID", "\"x/y\" cannot suffix"),
        (&[("INGRESSPORT", "0")], "INGRESSPORT", "\"0\" is not a port; expected a number from 1 to 65535"),
        (&[("INGRESSPORT", "65536")], "INGRESSPORT", "\"65536\" is not a port"),
        (&[("INGRESSPORT", "http")], "INGRESSPORT", "\"http\" is not a port"),
        (&[("INGRESSPORT", "-1")], "INGRESSPORT", "\"-1\" is not a port"),
        (&[("INGRESSPORT", " 80")], "INGRESSPORT", "\" 80\" is not a port"),
        (&[("INGRESSPORTHTTP2", "0")], "INGRESSPORTHTTP2", "\"0\" is not a port"),
        (&[("INGRESSPORTGRPC", "x")], "INGRESSPORTGRPC", "\"x\" is not a port"),
        (&[("INGRESSHEALTHCHECKPORT", "0")], "INGRESSHEALTHCHECKPORT", "\"0\" is not a port"),
        (&[("HEALTHPORT", "65536")], "HEALTHPORT", "\"65536\" is not a port; expected a number from 0 to 65535"),
        (&[("INGRESSPORTHTTP2", "9997")], "INGRESSPORTHTTP2", "9997 is also INGRESSPORT"),
        (&[("INGRESSPORTGRPC", "9997")], "INGRESSPORTGRPC", "9997 is also INGRESSPORT"),
        (&[("INGRESSPORTHTTP2", "9000"), ("INGRESSPORTGRPC", "9000")], "INGRESSPORTGRPC", "9000 is also INGRESSPORTHTTP2"),
        (&[("INGRESSHEALTHCHECKPORT", "9997")], "INGRESSHEALTHCHECKPORT", "9997 is also INGRESSPORT"),
        (&[("HEALTHPORT", "9997")], "HEALTHPORT", "9997 is also INGRESSPORT"),
        (&[("HEALTHPORT", "8443")], "HEALTHPORT", "8443 is also INGRESSHEALTHCHECKPORT"),
        (&[("HEALTHPORT", "9100"), ("INGRESSPORTGRPC", "9100")], "HEALTHPORT", "9100 is also INGRESSPORTGRPC"),
        (&[("INGRESSADDRESS", "0.0.0.0")], "INGRESSADDRESS", "\"0.0.0.0\" is an unspecified address"),
        (&[("INGRESSADDRESS", "::")], "INGRESSADDRESS", "\"::\" is an unspecified address"),
        (&[("INGRESSADDRESS", "a b")], "INGRESSADDRESS", "\"a b\" is neither an IP address nor a hostname"),
        (&[("INGRESSADDRESS", "[::1]")], "INGRESSADDRESS", "no brackets"),
        (&[("INGRESSADDRESS", "gw/x")], "INGRESSADDRESS", "\"gw/x\" is neither"),
        (&[("CONSULHTTPURL", "ftp://consul:21")], "CONSULHTTPURL", "unknown protocol scheme: ftp"),
        (&[("CONSUL_HTTP_ADDR", "tcp://consul:8500")], "CONSUL_HTTP_ADDR", "unknown protocol scheme: tcp"),
        (&[("CONSULHTTPURL", "::1:8500")], "CONSULHTTPURL", "IPv6 address needs brackets"),
        (&[("CONSULHTTPURL", "http://consul:0")], "CONSULHTTPURL", "\"0\" is not a port"),
        (&[("CONSULHTTPURL", "http://consul:99999")], "CONSULHTTPURL", "\"99999\" is not a port"),
        (&[("CONSULHTTPURL", "http://user:pw@consul")], "CONSULHTTPURL", "CONSUL_HTTP_AUTH"),
        (&[("CONSULHTTPURL", "http://consul/v1?x=1")], "CONSULHTTPURL", "query"),
        (&[("CONSULHTTPURL", "unix://")], "CONSULHTTPURL", "names no socket"),
        (&[("CONSULHTTPURL", "http://[zz]:1")], "CONSULHTTPURL", "not an IPv6 address"),
        (&[("CONSULHTTPURL", "http://[::1")], "CONSULHTTPURL", "not closed"),
        (&[("CONSULHTTPURL", "http://:8500")], "CONSULHTTPURL", "\"\" is not a host name"),
        (&[("CONSULHTTPURL", "http://con sul")], "CONSULHTTPURL", "whitespace"),
        (&[("CONSUL_HTTP_SSL", "yes")], "CONSUL_HTTP_SSL", "\"yes\" is not a boolean"),
        (&[("CONSUL_HTTP_TOKEN_FILE", "/nonexistent/ism-token")], "CONSUL_HTTP_TOKEN_FILE", "cannot read the token file \"/nonexistent/ism-token\""),
        (&[("CONSUL_HTTP_TOKEN", "line1\nline2")], "CONSUL_HTTP_TOKEN", "not allowed in an HTTP header"),
    (&[("CONSUL_TOKEN", "line1\nline2")], "CONSUL_TOKEN", "not allowed in an HTTP header"),
    (&[("CONSUL_HTTP_AUTH", "user:pa\nss")], "CONSUL_HTTP_AUTH", "which an HTTP header cannot carry"),
        (&[("CONSUL_NAMESPACE", "a b")], "CONSUL_NAMESPACE", "\"a b\" is not a Consul namespace name"),
        (&[("CONSUL_PARTITION", "a/b")], "CONSUL_PARTITION", "\"a/b\" is not a Consul partition name"),
        (&[("SETSERVICEDEFAULTS", "yes")], "SETSERVICEDEFAULTS", "\"yes\" is not a boolean"),
    (&[("SETINTENTIONS", "on")], "SETINTENTIONS", "\"on\" is not a boolean; expected true or false"),
        (&[("LOGFORMAT", "xml")], "LOGFORMAT", "\"xml\" is not a log format; expected text or json"),
        (&[("RUST_LOG", "foo=loud")], "RUST_LOG", "\"foo=loud\" is not a log filter"),
        (&[("CONSULHTTPURL", "https://consul:8501")], "CONSUL_CACERT", "needs a CA bundle"),
        (&[("CONSULHTTPURL", "https://consul:8501"), ("CONSUL_CACERT", "/nonexistent/ca.pem")], "CONSUL_CACERT", "cannot read /nonexistent/ca.pem"),
        (&[("CONSULHTTPURL", "https://consul:8501"), ("CONSUL_CAPATH", "/nonexistent/cas")], "CONSUL_CAPATH", "cannot read directory /nonexistent/cas"),
        (&[("CONSULHTTPURL", "https://consul:8501"), ("CONSUL_HTTP_SSL_VERIFY", "false"), ("CONSUL_CLIENT_CERT", "/x.pem")], "CONSUL_CLIENT_KEY", "both client cert and client key must be provided"),
        (&[("CONSULHTTPURL", "https://consul:8501"), ("CONSUL_HTTP_SSL_VERIFY", "false"), ("CONSUL_CLIENT_KEY", "/x.pem")], "CONSUL_CLIENT_CERT", "both client cert and client key must be provided"),
        (&[("CONSULHTTPURL", "https://consul:8501"), ("CONSUL_HTTP_SSL_VERIFY", "false"), ("CONSUL_TLS_SERVER_NAME", "bad name!")], "CONSUL_TLS_SERVER_NAME", "\"bad name!\" is not a valid TLS server name"),
    ];
    for &(pairs, variable, text) in cases {
        let errors = errors(pairs);
        assert_eq!(errors.len(), 1, "{pairs:?}: {errors:?}");
        assert_eq!(errors[0].variable, variable, "{pairs:?}: {errors:?}");
        assert!(
            errors[0].message.contains(text),
            "{pairs:?}: {:?} lacks {text:?}",
            errors[0].message
        );
        assert!(errors[0].to_string().starts_with(&format!("{variable}: ")));
    }
}

#[test]
fn unparsable_ssl_verify_is_an_error_not_off() {
    let errors = errors(&[
        ("CONSULHTTPURL", "https://consul:8501"),
        ("CONSUL_HTTP_SSL_VERIFY", "maybe"),
    ]);
    let verify = errors
        .iter()
        .find(|e| e.variable == "CONSUL_HTTP_SSL_VERIFY")
        .expect("SSL_VERIFY error");
    assert!(
        verify.message.contains("\"maybe\" is not a boolean"),
        "{errors:?}"
    );
    // Verification is assumed on, so the missing CA bundle is reported in the same run.
    assert!(
        errors.iter().any(|e| e.variable == "CONSUL_CACERT"),
        "{errors:?}"
    );
}

#[test]
fn several_errors_are_reported_together() {
    let map: HashMap<&str, &str> = [
        ("TYPEGATEWAY", "nginx"),
        ("INGRESSPORT", "x"),
        ("HEALTHPORT", "-5"),
        ("CONSULHTTPURL", "ftp://a"),
        ("LOGFORMAT", "xml"),
        ("RUST_LOG", "a=b=c"),
    ]
    .into_iter()
    .collect();
    let errors =
        from_env_with(&|name| map.get(name).map(OsString::from), &[]).expect_err("bad config");
    let mut variables: Vec<&str> = errors.iter().map(|e| e.variable).collect();
    variables.sort_unstable();
    assert_eq!(
        variables,
        [
            "CONSULHTTPURL",
            "HEALTHPORT",
            "INGRESSPORT",
            "LOGFORMAT",
            "RUST_LOG",
            "SERVICENAMEINGRESSGATEWAY",
            "TAGINGRESSSERVICE",
            "TYPEGATEWAY",
        ]
    );
}

#[test]
fn reads_only_listed_variables() {
    let dir = TempDir::new("listed");
    let ca = dir.write("ca.pem", TEST_CERT);
    let key = dir.write("key.pem", TEST_KEY);
    let token_file = dir.write("token", "from-file\n");
    let envs: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![
            ("NOMAD_ALLOC_ID", "a1"),
            ("CONSUL_HTTP_TOKEN_FILE", &token_file),
        ],
        vec![
            ("CONSUL_HTTP_ADDR", "consul:8501"),
            ("CONSUL_HTTP_SSL", "true"),
            ("CONSUL_CACERT", &ca),
            ("CONSUL_CLIENT_CERT", &ca),
            ("CONSUL_CLIENT_KEY", &key),
            ("CONSUL_TLS_SERVER_NAME", "consul"),
        ],
        vec![
            ("CONSULHTTPURL", "https://consul"),
            ("CONSUL_CAPATH", dir.0.to_str().unwrap()),
        ],
    ];
    for pairs in envs {
        let read = RefCell::new(Vec::new());
        let map: HashMap<&str, &str> = REQUIRED.iter().chain(&pairs).copied().collect();
        let get = |name: &str| {
            read.borrow_mut().push(name.to_owned());
            map.get(name).map(OsString::from)
        };
        let result = from_env_with(&get, &[]);
        assert!(result.is_ok(), "{pairs:?}: {result:?}");
        for name in read.borrow().iter() {
            assert!(
                VARIABLES.iter().any(|v| v.name == name),
                "{name} is not in VARIABLES"
            );
        }
    }
}

#[test]
fn secrets_never_appear_in_errors_or_debug() {
    let dir = TempDir::new("secrets");
    let bad_file = dir.write("token", "s3cr3t-file\u{1}\n");
    let good = ok(&[
        ("CONSULTOKEN", "s3cr3t-token"),
        ("CONSUL_HTTP_AUTH", "user:s3cr3t-pass"),
    ]);
    assert_eq!(
        good.consul.token.as_ref().map(Token::secret),
        Some("s3cr3t-token")
    );
    let debug = format!("{good:?}");
    assert!(!debug.contains("s3cr3t"), "{debug}");
    let bad_envs: &[&[(&str, &str)]] = &[
        &[("CONSULTOKEN", "s3cr3t\u{7}token"), ("INGRESSPORT", "x")],
        &[("CONSUL_HTTP_TOKEN", "s3cr3t\r\nX-Injected: 1")],
        &[("CONSUL_HTTP_TOKEN", "s3cr3t-é")],
        &[("CONSUL_HTTP_TOKEN_FILE", &bad_file)],
    ];
    for &pairs in bad_envs {
        let errors = errors(pairs);
        let text = format!(
            "{errors:?} {}",
            errors.iter().map(|e| e.to_string()).collect::<String>()
        );
        assert!(
            text.contains("not allowed in an HTTP header"),
            "{pairs:?}: {text}"
        );
        assert!(!text.contains("s3cr3t"), "{pairs:?}: {text}");
    }
}

#[test]
fn agent_address_forms() {
    let tcp = |https: bool, host: &str, port: u16, prefix: &str| AgentAddress::Tcp {
        https,
        host: host.into(),
        port,
        path_prefix: prefix.into(),
    };
    let dir = TempDir::new("addresses");
    let ca = dir.write("ca.pem", TEST_CERT);
    #[rustfmt::skip]
    let cases: Vec<(Vec<(&str, &str)>, AgentAddress)> = vec![
        (vec![], tcp(false, "127.0.0.1", 8500, "")),
        (vec![("CONSUL_HTTP_SSL", "true")], tcp(true, "127.0.0.1", 8500, "")),
        (vec![("CONSULHTTPURL", "http://consul:8500")], tcp(false, "consul", 8500, "")),
        (vec![("CONSULHTTPURL", "http://consul")], tcp(false, "consul", 80, "")),
        (vec![("CONSULHTTPURL", "https://consul")], tcp(true, "consul", 443, "")),
        (vec![("CONSULHTTPURL", "HTTPS://consul:8501")], tcp(true, "consul", 8501, "")),
        (vec![("CONSULHTTPURL", "https://consul:8501/prefix/")], tcp(true, "consul", 8501, "/prefix")),
        (vec![("CONSULHTTPURL", "http://consul:8500/a/b")], tcp(false, "consul", 8500, "/a/b")),
        (vec![("CONSULHTTPURL", "http://consul:8500/")], tcp(false, "consul", 8500, "")),
        (vec![("CONSULHTTPURL", "consul.service:8500")], tcp(false, "consul.service", 8500, "")),
        (vec![("CONSULHTTPURL", "consul:8501"), ("CONSUL_HTTP_SSL", "1")], tcp(true, "consul", 8501, "")),
        (vec![("CONSULHTTPURL", "http://consul:8500"), ("CONSUL_HTTP_SSL", "true")], tcp(false, "consul", 8500, "")),
        (vec![("CONSULHTTPURL", "[::1]:8500")], tcp(false, "::1", 8500, "")),
        (vec![("CONSULHTTPURL", "http://[::1]")], tcp(false, "::1", 80, "")),
        (vec![("CONSULHTTPURL", "https://[fd00::1]:8501")], tcp(true, "fd00::1", 8501, "")),
        (vec![("CONSULHTTPURL", "10.1.2.3:8500")], tcp(false, "10.1.2.3", 8500, "")),
        (vec![("CONSULHTTPURL", "unix:///var/run/consul.sock")], AgentAddress::Unix { path: "/var/run/consul.sock".into() }),
        (vec![("CONSUL_HTTP_ADDR", "http://fallback:1")], tcp(false, "fallback", 1, "")),
        (vec![("CONSULHTTPURL", "http://first:1"), ("CONSUL_HTTP_ADDR", "http://second:2")], tcp(false, "first", 1, "")),
        (vec![("CONSULHTTPURL", ""), ("CONSUL_HTTP_ADDR", "http://second:2")], tcp(false, "second", 2, "")),
    ];
    for (mut pairs, want) in cases {
        pairs.push(("CONSUL_CACERT", &ca));
        let config = ok(&pairs);
        assert_eq!(config.consul.address, want, "{pairs:?}");
        let https = matches!(want, AgentAddress::Tcp { https: true, .. });
        assert_eq!(config.consul.tls.is_some(), https, "{pairs:?}");
    }
}

#[test]
fn token_precedence() {
    let dir = TempDir::new("tokens");
    let file = dir.write("token", "  from-file \n");
    let blank = dir.write("blank", " \n\t");
    #[rustfmt::skip]
    let cases: &[(Pairs, Option<&str>)] = &[
        (&[], None),
        (&[("CONSUL_HTTP_TOKEN", "from-env")], Some("from-env")),
        (&[("CONSUL_HTTP_TOKEN_FILE", &file), ("CONSUL_HTTP_TOKEN", "from-env")], Some("from-file")),
        (&[("CONSUL_HTTP_TOKEN_FILE", &blank), ("CONSUL_HTTP_TOKEN", "from-env")], Some("from-env")),
        (&[("CONSUL_HTTP_TOKEN_FILE", &blank)], None),
        (&[("CONSULTOKEN", "seed"), ("CONSUL_HTTP_TOKEN_FILE", &file), ("CONSUL_HTTP_TOKEN", "from-env")], Some("seed")),
        (&[("CONSULTOKEN", ""), ("CONSUL_HTTP_TOKEN", "from-env")], Some("from-env")),
        // Nomad 1.7 gives a task's Consul token as CONSUL_TOKEN; 1.8 also as CONSUL_HTTP_TOKEN.
        (&[("CONSUL_TOKEN", "from-nomad")], Some("from-nomad")),
        (&[("CONSUL_HTTP_TOKEN", "from-env"), ("CONSUL_TOKEN", "from-nomad")], Some("from-env")),
        (&[("CONSUL_HTTP_TOKEN_FILE", &file), ("CONSUL_TOKEN", "from-nomad")], Some("from-file")),
        (&[("CONSULTOKEN", "seed"), ("CONSUL_TOKEN", "from-nomad")], Some("seed")),
        // The file is not read when CONSULTOKEN wins, so it cannot fail.
        (&[("CONSULTOKEN", "seed"), ("CONSUL_HTTP_TOKEN_FILE", "/nonexistent/token")], Some("seed")),
    ];
    for &(pairs, want) in cases {
        let config = ok(pairs);
        assert_eq!(
            config.consul.token.as_ref().map(Token::secret),
            want,
            "{pairs:?}"
        );
    }
}

#[test]
fn tls_material_is_loaded_for_https() {
    let dir = TempDir::new("tls");
    let ca = dir.write("ca.pem", TEST_CERT);
    let two = dir.write("two.pem", &format!("{TEST_CERT}{TEST_KEY}{TEST_CERT}"));
    let key = dir.write("key.pem", TEST_KEY);
    let base = [("CONSULHTTPURL", "https://consul.example:8501")];
    let with = |extra: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        base.iter()
            .chain(extra)
            .map(|(k, v)| (*k, v.to_string()))
            .collect()
    };
    let run = |pairs: Vec<(&'static str, String)>| {
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        ok(&pairs).consul.tls.expect("https has TLS")
    };

    let tls = run(with(&[("CONSUL_CACERT", &ca)]));
    assert_eq!(tls.roots, 1);
    assert_eq!(tls.server_name, name("consul.example"));
    assert!(tls.verify);
    assert!(!tls.client_auth);

    let tls = run(with(&[("CONSUL_CACERT", &two)]));
    assert_eq!(
        tls.roots, 2,
        "every certificate of the bundle, keys skipped"
    );

    let tls = run(with(&[
        ("CONSUL_CACERT", &ca),
        ("CONSUL_CLIENT_CERT", &ca),
        ("CONSUL_CLIENT_KEY", &key),
        ("CONSUL_TLS_SERVER_NAME", "agent.consul:8501"),
        ("CONSUL_HTTP_SSL_VERIFY", "0"),
    ]));
    assert!(tls.client_auth);
    assert_eq!(tls.server_name, name("agent.consul"));
    assert!(!tls.verify);

    // CONSUL_CACERT wins: the CAPATH is not even looked at.
    let tls = run(with(&[
        ("CONSUL_CACERT", &ca),
        ("CONSUL_CAPATH", "/nonexistent"),
    ]));
    assert_eq!(tls.roots, 1);

    let cases = [
        ("[::1]:8501", "::1"),
        ("10.0.0.1", "10.0.0.1"),
        ("consul", "consul"),
    ];
    for (value, want) in cases {
        let tls = run(with(&[
            ("CONSUL_CACERT", &ca),
            ("CONSUL_TLS_SERVER_NAME", value),
        ]));
        assert_eq!(tls.server_name, name(want), "{value:?}");
    }
    let tls = ok(&[
        ("CONSULHTTPURL", "https://[::1]:8501"),
        ("CONSUL_CACERT", &ca),
    ])
    .consul
    .tls
    .expect("tls");
    assert_eq!(tls.server_name, name("::1"));
}

#[test]
fn ca_path_loads_pem_and_crt_files_only() {
    let dir = TempDir::new("capath");
    dir.write("a.pem", TEST_CERT);
    dir.write("b.CRT", TEST_CERT);
    dir.write("c.txt", TEST_CERT);
    dir.write("key.key", TEST_KEY);
    let path = dir.0.display().to_string();
    let pairs = [
        ("CONSULHTTPURL", "https://consul"),
        ("CONSUL_CAPATH", path.as_str()),
    ];
    let tls = ok(&pairs).consul.tls.expect("tls");
    assert_eq!(tls.roots, 2);

    let empty = TempDir::new("capath-empty");
    empty.write("notes.txt", TEST_CERT);
    let path = empty.0.display().to_string();
    let errors = errors(&[
        ("CONSULHTTPURL", "https://consul"),
        ("CONSUL_CAPATH", &path),
    ]);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].variable, "CONSUL_CAPATH");
    assert!(
        errors[0].message.contains("holds no certificate"),
        "{errors:?}"
    );
}

#[test]
fn bad_tls_files_are_errors() {
    let dir = TempDir::new("badtls");
    let ca = dir.write("ca.pem", TEST_CERT);
    let key = dir.write("key.pem", TEST_KEY);
    let text = dir.write("text.pem", "not a certificate\n");
    let broken = dir.write("broken.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n");
    #[rustfmt::skip]
    let cases: &[(Pairs, &str, &str)] = &[
        (&[("CONSUL_CACERT", &text)], "CONSUL_CACERT", "contains no PEM certificate"),
        (&[("CONSUL_CACERT", &key)], "CONSUL_CACERT", "contains no PEM certificate"),
        (&[("CONSUL_CACERT", &broken)], "CONSUL_CACERT", "is not valid PEM"),
        (&[("CONSUL_CACERT", &ca), ("CONSUL_CLIENT_CERT", &key), ("CONSUL_CLIENT_KEY", &key)], "CONSUL_CLIENT_CERT", "contains no PEM certificate"),
        (&[("CONSUL_CACERT", &ca), ("CONSUL_CLIENT_CERT", &ca), ("CONSUL_CLIENT_KEY", &ca)], "CONSUL_CLIENT_KEY", "contains no private key"),
        (&[("CONSUL_CACERT", &ca), ("CONSUL_CLIENT_CERT", &ca), ("CONSUL_CLIENT_KEY", "/nonexistent/key.pem")], "CONSUL_CLIENT_KEY", "cannot read \"/nonexistent/key.pem\""),
    ];
    for &(pairs, variable, text) in cases {
        let mut pairs = pairs.to_vec();
        pairs.push(("CONSULHTTPURL", "https://consul"));
        let errors = errors(&pairs);
        assert_eq!(errors.len(), 1, "{pairs:?}: {errors:?}");
        assert_eq!(errors[0].variable, variable, "{pairs:?}: {errors:?}");
        assert!(errors[0].message.contains(text), "{pairs:?}: {errors:?}");
    }
}

#[test]
fn system_bundle_is_the_fallback() {
    let dir = TempDir::new("system");
    let bundle = dir.0.join("bundle.crt");
    fs::write(&bundle, TEST_CERT).unwrap();
    let missing = dir.0.join("missing.crt");
    let https = [("CONSULHTTPURL", "https://consul")];

    let config = parse_with(&https, &[&missing, &bundle]).expect("bundle found");
    assert_eq!(config.consul.tls.expect("tls").roots, 1);

    let errors = parse_with(&https, &[&missing]).expect_err("no bundle");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].variable, "CONSUL_CACERT");
    assert!(errors[0].message.contains("missing.crt"), "{errors:?}");

    let unverified = [
        ("CONSULHTTPURL", "https://consul"),
        ("CONSUL_HTTP_SSL_VERIFY", "false"),
    ];
    let tls = parse_with(&unverified, &[&missing])
        .expect("verification off")
        .consul
        .tls;
    assert!(tls.expect("tls").roots == 0);
}

#[test]
fn tls_variables_are_ignored_without_https() {
    let broken_tls = [
        ("CONSUL_CACERT", "/nonexistent/ca.pem"),
        ("CONSUL_CAPATH", "/nonexistent"),
        ("CONSUL_CLIENT_CERT", "/nonexistent/cert.pem"),
        ("CONSUL_TLS_SERVER_NAME", "bad name!"),
        ("CONSUL_HTTP_SSL_VERIFY", "maybe"),
    ];
    for address in [
        "http://consul:8500",
        "consul:8500",
        "unix:///run/consul.sock",
    ] {
        let mut pairs = broken_tls.to_vec();
        pairs.push(("CONSULHTTPURL", address));
        assert!(ok(&pairs).consul.tls.is_none(), "{address}");
    }
}

#[test]
fn help_lists_every_variable_aligned() {
    let help = help_text();
    assert!(help.starts_with("Usage: ingress-service-monitor [--dry-run | --help | --version]\n"));
    for flag in ["--dry-run ", "--help ", "--version "] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(flag)),
            "{flag}"
        );
    }
    let mut columns = Vec::new();
    for var in VARIABLES {
        let line = help
            .lines()
            .find(|l| l.split_whitespace().next() == Some(var.name))
            .unwrap_or_else(|| panic!("{} missing from help", var.name));
        assert!(line.contains(var.help), "{line}");
        if !var.default.is_empty() {
            assert!(
                line.contains(&format!("(default: {})", var.default)),
                "{line}"
            );
        }
        columns.push(line.find(var.help).unwrap());
    }
    assert!(
        columns.windows(2).all(|w| w[0] == w[1]),
        "help column not aligned: {columns:?}"
    );
}

#[test]
fn tls_material_rustls_refuses_is_a_configuration_error() {
    let dir = TempDir::new("rustls");
    let ca = dir.write("ca.pem", TEST_CERT);
    let key = dir.write("key.pem", TEST_KEY);
    let other_key = dir.write("other.pem", OTHER_KEY);
    let garbage_cert = dir.write("garbage.pem", GARBAGE_CERT);
    let garbage_key = dir.write("garbage-key.pem", GARBAGE_KEY);
    let capath = TempDir::new("rustls-capath");
    capath.write("garbage.crt", GARBAGE_CERT);
    let capath_dir = capath.0.display().to_string();
    #[rustfmt::skip]
    let cases: &[(Pairs, &str, &str)] = &[
        (&[("CONSUL_CACERT", &garbage_cert)], "CONSUL_CACERT", "none of its 1 certificate(s) is a usable CA certificate"),
        (&[("CONSUL_CAPATH", &capath_dir)], "CONSUL_CAPATH", "none of its 1 certificate(s) is a usable CA certificate"),
        (&[("CONSUL_CACERT", &ca), ("CONSUL_CLIENT_CERT", &ca), ("CONSUL_CLIENT_KEY", &garbage_key)], "CONSUL_CLIENT_KEY", "not a usable private key"),
        (&[("CONSUL_CACERT", &ca), ("CONSUL_CLIENT_CERT", &ca), ("CONSUL_CLIENT_KEY", &other_key)], "CONSUL_CLIENT_KEY", "does not belong to the certificate in CONSUL_CLIENT_CERT"),
        // Without verification the CA is not used, but a bad client key still is an error.
        (&[("CONSUL_HTTP_SSL_VERIFY", "false"), ("CONSUL_CLIENT_CERT", &ca), ("CONSUL_CLIENT_KEY", &other_key)], "CONSUL_CLIENT_KEY", "does not belong"),
    ];
    for &(pairs, variable, text) in cases {
        let mut pairs = pairs.to_vec();
        pairs.push(("CONSULHTTPURL", "https://consul"));
        let errors = errors(&pairs);
        assert_eq!(errors.len(), 1, "{pairs:?}: {errors:?}");
        assert_eq!(errors[0].variable, variable, "{pairs:?}: {errors:?}");
        assert!(errors[0].message.contains(text), "{pairs:?}: {errors:?}");
        assert!(!errors[0].message.contains("BEGIN"), "{errors:?}");
    }
    // The matching key is accepted, which is what makes the mismatch case meaningful.
    let tls = ok(&[
        ("CONSULHTTPURL", "https://consul"),
        ("CONSUL_CACERT", &ca),
        ("CONSUL_CLIENT_CERT", &ca),
        ("CONSUL_CLIENT_KEY", &key),
    ])
    .consul
    .tls
    .expect("tls");
    assert!(tls.client_auth);
    assert_eq!(tls.client_config.alpn_protocols, [b"http/1.1".to_vec()]);
}

#[test]
fn unusable_certificates_beside_usable_ones_are_counted_not_fatal() {
    let dir = TempDir::new("mixed");
    let mixed = dir.write("mixed.pem", &format!("{TEST_CERT}{GARBAGE_CERT}"));
    let tls = ok(&[
        ("CONSULHTTPURL", "https://consul"),
        ("CONSUL_CACERT", &mixed),
    ])
    .consul
    .tls
    .expect("tls");
    assert_eq!((tls.roots, tls.ignored_roots), (1, 1));
}

#[test]
fn bad_tls_files_are_reported_with_the_other_errors() {
    let dir = TempDir::new("together");
    let ca = dir.write("ca.pem", TEST_CERT);
    let garbage_cert = dir.write("garbage.pem", GARBAGE_CERT);
    let other_key = dir.write("other.pem", OTHER_KEY);
    let errors = errors(&[
        ("CONSULHTTPURL", "https://consul"),
        ("CONSUL_CACERT", &garbage_cert),
        ("CONSUL_CLIENT_CERT", &ca),
        ("CONSUL_CLIENT_KEY", &other_key),
        ("INGRESSPORT", "http"),
        ("LOGFORMAT", "xml"),
    ]);
    let mut variables: Vec<&str> = errors.iter().map(|e| e.variable).collect();
    variables.sort_unstable();
    assert_eq!(
        variables,
        [
            "CONSUL_CACERT",
            "CONSUL_CLIENT_KEY",
            "INGRESSPORT",
            "LOGFORMAT"
        ],
        "{errors:?}"
    );
    let errors = self::errors(&[
        ("CONSULHTTPURL", "https://consul"),
        ("CONSUL_CACERT", &ca),
        ("CONSUL_CLIENT_CERT", &ca),
        ("CONSUL_CLIENT_KEY", &other_key),
        ("INGRESSPORT", "http"),
    ]);
    let mut variables: Vec<&str> = errors.iter().map(|e| e.variable).collect();
    variables.sort_unstable();
    assert_eq!(
        variables,
        ["CONSUL_CLIENT_KEY", "INGRESSPORT"],
        "{errors:?}"
    );
}

#[test]
fn a_value_that_is_not_utf8_is_an_error_naming_its_variable() {
    use std::os::unix::ffi::OsStringExt;
    let not_utf8 = || OsString::from_vec(vec![b's', b'3', 0xff, b'x']);
    for variable in [
        "TAGINGRESSSERVICE",
        "INGRESSPORT",
        "INGRESSSERVICENAME",
        "INGRESSSERVICEID",
        "NOMAD_ALLOC_ID",
        "CONSULHTTPURL",
        "CONSULTOKEN",
        "CONSUL_HTTP_TOKEN",
        "CONSUL_TOKEN",
        "CONSUL_HTTP_AUTH",
        "SETSERVICEDEFAULTS",
        "RUST_LOG",
    ] {
        let map: HashMap<&str, OsString> = REQUIRED
            .iter()
            .map(|&(k, v)| (k, OsString::from(v)))
            .chain([(variable, not_utf8())])
            .collect();
        let errors = from_env_with(&|name| map.get(name).cloned(), &[]).expect_err(variable);
        assert_eq!(errors.len(), 1, "{variable}: {errors:?}");
        assert_eq!(errors[0].variable, variable, "{errors:?}");
        assert!(errors[0].message.contains("not valid UTF-8"), "{errors:?}");
        // Neither the bytes nor a lossy rendering of them: it may be a secret.
        assert!(!errors[0].message.contains("s3"), "{errors:?}");
    }
    // The https-only variables are read, and so checked, only for an https agent.
    let dir = TempDir::new("utf8");
    let ca = dir.write("ca.pem", TEST_CERT);
    for variable in [
        "CONSUL_CACERT",
        "CONSUL_CLIENT_KEY",
        "CONSUL_TLS_SERVER_NAME",
    ] {
        let map: HashMap<&str, OsString> = REQUIRED
            .iter()
            .map(|&(k, v)| (k, OsString::from(v)))
            .chain([
                ("CONSULHTTPURL", OsString::from("https://consul")),
                ("CONSUL_CACERT", OsString::from(&ca)),
                ("CONSUL_CLIENT_CERT", OsString::from(&ca)),
                ("CONSUL_CLIENT_KEY", OsString::from(&ca)),
                (variable, not_utf8()),
            ])
            .collect();
        let errors = from_env_with(&|name| map.get(name).cloned(), &[]).expect_err(variable);
        assert!(
            errors
                .iter()
                .any(|e| e.variable == variable && e.message.contains("UTF-8")),
            "{variable}: {errors:?}"
        );
    }
}

#[test]
fn consul_gateway_kinds() {
    #[rustfmt::skip]
    let cases: &[(Pairs, GatewayKind)] = &[
        (&[], GatewayKind::Ingress),
        (&[("CONSULGATEWAY", "")], GatewayKind::Ingress),
        (&[("CONSULGATEWAY", "ingress")], GatewayKind::Ingress),
        (&[("CONSULGATEWAY", "api")], GatewayKind::Api),
        (&[("CONSULGATEWAY", "API")], GatewayKind::Api),
        // The extra listeners stay an ingress-mode feature.
        (&[("INGRESSPORTHTTP2", "9998"), ("INGRESSPORTGRPC", "9999")], GatewayKind::Ingress),
        // Empty means unset, also in api mode.
        (&[("CONSULGATEWAY", "api"), ("INGRESSPORTHTTP2", ""), ("INGRESSPORTGRPC", "")], GatewayKind::Api),
    ];
    for &(pairs, want) in cases {
        assert_eq!(ok(pairs).gateway_kind, want, "{pairs:?}");
    }
    // Both extra ports in api mode: both named, with any other problem.
    let errors = errors(&[
        ("CONSULGATEWAY", "api"),
        ("INGRESSPORTHTTP2", "9998"),
        ("INGRESSPORTGRPC", "9999"),
        ("LOGFORMAT", "xml"),
    ]);
    let variables: Vec<&str> = errors.iter().map(|e| e.variable).collect();
    assert_eq!(
        variables,
        ["INGRESSPORTHTTP2", "INGRESSPORTGRPC", "LOGFORMAT"],
        "{errors:?}"
    );
}

#[test]
fn set_intentions_is_a_strict_boolean_off_by_default() {
    #[rustfmt::skip]
    let cases: &[(Pairs, bool)] = &[
        (&[], false),
        (&[("SETINTENTIONS", "")], false),
        (&[("SETINTENTIONS", "false")], false),
        (&[("SETINTENTIONS", "0")], false),
        (&[("SETINTENTIONS", "true")], true),
        (&[("SETINTENTIONS", "True")], true),
        (&[("SETINTENTIONS", "1")], true),
        (&[("SETINTENTIONS", "true"), ("CONSULGATEWAY", "api")], true),
    ];
    for &(pairs, want) in cases {
        assert_eq!(ok(pairs).set_intentions, want, "{pairs:?}");
    }
    for bad in ["yes", "no", "enabled", " true"] {
        let errors = errors(&[("SETINTENTIONS", bad)]);
        assert_eq!(errors.len(), 1, "{bad:?}: {errors:?}");
        assert_eq!(errors[0].variable, "SETINTENTIONS");
    }
}
