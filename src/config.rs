//! Configuration: environment variables in, a valid [`Config`] out, once, at start.
//!
//! The table [`VARIABLES`] is the single source of truth: `--help` is generated from it,
//! the parser reads only names listed in it, and the Nomad job test checks the job's
//! `env` block against it. Every problem is collected (one [`ConfigError`] per variable)
//! so an operator fixes all of them in one go; `main` prints them and exits with 2.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// One environment variable the daemon reads.
#[derive(Debug, Clone, Copy)]
pub struct Var {
    pub name: &'static str,
    /// Default as shown to users ("" when there is none / it is required).
    pub default: &'static str,
    pub help: &'static str,
}

/// Every variable the daemon reads, in the order `--help` lists them.
// One line per variable keeps the table readable as a table.
#[rustfmt::skip]
pub const VARIABLES: &[Var] = &[
    Var { name: "TYPEGATEWAY", default: "traefik", help: "outer proxy that reads the ingress service's tags: traefik or fabio" },
    Var { name: "TAGINGRESSSERVICE", default: "", help: "required; tag prefix selecting tags to expose, e.g. gw-us-east (a tag is selected when it starts with gw-us-east-)" },
    Var { name: "SERVICENAMEINGRESSGATEWAY", default: "", help: "required; the ingress gateway's service name, also the name of the ingress-gateway config entry" },
    Var { name: "INGRESSSERVICENAME", default: "<SERVICENAMEINGRESSGATEWAY>-ingress", help: "name of the ingress service registered for the outer proxy" },
    Var { name: "INGRESSSERVICEID", default: "<INGRESSSERVICENAME>[-<NOMAD_ALLOC_ID>]", help: "agent service ID of the ingress service (unique per agent)" },
    Var { name: "NOMAD_ALLOC_ID", default: "", help: "set by Nomad; suffixes the default INGRESSSERVICEID so several gateways can share a node" },
    Var { name: "INGRESSPORT", default: "9997", help: "gateway HTTP listener port: the ingress service's port and the config entry's http listener" },
    Var { name: "INGRESSPORTHTTP2", default: "", help: "optional gateway listener port for services whose protocol is http2" },
    Var { name: "INGRESSPORTGRPC", default: "", help: "optional gateway listener port for services whose protocol is grpc" },
    Var { name: "INGRESSHEALTHCHECKPORT", default: "8443", help: "gateway readiness port; the ingress service's check is GET http://<address>:<port>/ready" },
    Var { name: "INGRESSADDRESS", default: "", help: "address registered for the ingress service and used in its check URL (default: the agent's node address; the check uses 127.0.0.1)" },
    Var { name: "HEALTHPORT", default: "10000", help: "port of this daemon's /health endpoint (0: chosen by the OS, logged at start)" },
    Var { name: "CONSULHTTPURL", default: "$CONSUL_HTTP_ADDR, else http://127.0.0.1:8500", help: "agent address: http://host:port, https://host:port, host:port or unix:///path" },
    Var { name: "CONSUL_HTTP_ADDR", default: "", help: "fallback for CONSULHTTPURL (Consul's standard name)" },
    Var { name: "CONSUL_HTTP_SSL", default: "false", help: "with a bare host:port address, true selects https" },
    Var { name: "CONSULTOKEN", default: "$CONSUL_HTTP_TOKEN_FILE, else $CONSUL_HTTP_TOKEN", help: "ACL token (never logged)" },
    Var { name: "CONSUL_HTTP_TOKEN_FILE", default: "", help: "file holding the ACL token, read once at start (overrides CONSUL_HTTP_TOKEN)" },
    Var { name: "CONSUL_HTTP_TOKEN", default: "", help: "ACL token (Consul's standard name)" },
    Var { name: "CONSUL_HTTP_AUTH", default: "", help: "HTTP basic auth user[:password] for the agent" },
    Var { name: "CONSUL_CACERT", default: "", help: "PEM CA bundle to verify the agent's certificate (https)" },
    Var { name: "CONSUL_CAPATH", default: "", help: "directory of PEM CA certificates (https)" },
    Var { name: "CONSUL_CLIENT_CERT", default: "", help: "PEM client certificate for mutual TLS (with CONSUL_CLIENT_KEY)" },
    Var { name: "CONSUL_CLIENT_KEY", default: "", help: "PEM private key for mutual TLS (with CONSUL_CLIENT_CERT)" },
    Var { name: "CONSUL_TLS_SERVER_NAME", default: "", help: "name to verify the agent's certificate against (SNI); a :port suffix is ignored" },
    Var { name: "CONSUL_HTTP_SSL_VERIFY", default: "true", help: "false disables verification of the agent's certificate (not for production)" },
    Var { name: "CONSUL_NAMESPACE", default: "", help: "Consul Enterprise namespace sent with every request" },
    Var { name: "CONSUL_PARTITION", default: "", help: "Consul Enterprise admin partition sent with every request" },
    Var { name: "SETSERVICEDEFAULTS", default: "false", help: "true: create service-defaults Protocol=http (create-only) for exposed services that have none" },
    Var { name: "LOGFORMAT", default: "text", help: "log output: text or json" },
    Var { name: "RUST_LOG", default: "info", help: "log level filter, e.g. info or info,ingress_service_monitor=debug" },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayType {
    Traefik,
    Fabio,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated configuration. Once it exists, it is valid.
#[derive(Debug)]
pub struct Config {
    pub gateway_type: GatewayType,
    /// Tag prefix including its trailing `-` (`gw-us-east-`).
    pub tag_prefix: String,
    pub gateway_name: String,
    pub ingress_service_name: String,
    pub ingress_service_id: String,
    pub ingress_port: u16,
    pub ingress_port_http2: Option<u16>,
    pub ingress_port_grpc: Option<u16>,
    pub health_check_port: u16,
    pub ingress_address: Option<String>,
    /// 0 means "let the OS choose" (the bound port is logged).
    pub health_port: u16,
    pub consul: ConsulConfig,
    pub set_service_defaults: bool,
    pub log_format: LogFormat,
    /// RUST_LOG, already parsed.
    pub log_filter: tracing_subscriber::filter::Targets,
}

#[derive(Debug)]
pub struct ConsulConfig {
    pub address: AgentAddress,
    pub token: Option<Token>,
    /// `user[:password]` for HTTP basic auth.
    pub basic_auth: Option<Token>,
    /// TLS material, loaded and parsed at start; `Some` exactly when the address is https.
    pub tls: Option<TlsConfig>,
    pub namespace: Option<String>,
    pub partition: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentAddress {
    Tcp {
        https: bool,
        host: String,
        port: u16,
        /// "" or "/prefix" (no trailing slash): requests go to `<prefix>/v1/...`.
        path_prefix: String,
    },
    Unix {
        path: PathBuf,
    },
}

/// TLS to the agent, loaded from files at start.
#[derive(Debug)]
pub struct TlsConfig {
    /// Trust anchors: CONSUL_CACERT / CONSUL_CAPATH, else the system bundle.
    pub roots: Vec<CertificateDer<'static>>,
    pub client_auth: Option<ClientAuth>,
    /// Name verified and sent as SNI; defaults to the address's host.
    pub server_name: String,
    /// false only when CONSUL_HTTP_SSL_VERIFY says so.
    pub verify: bool,
}

#[derive(Debug)]
pub struct ClientAuth {
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// A secret: its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(secret: String) -> Token {
        Token(secret)
    }
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// One problem with one variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.message)
    }
}

/// `--help` text, generated from [`VARIABLES`].
pub fn help_text() -> String {
    let width = VARIABLES.iter().map(|v| v.name.len()).max().unwrap_or(0);
    let mut text = String::from(
        "Usage: ingress-service-monitor [--dry-run | --help | --version]\n\
         \n\
         Exposes Consul mesh services through a Consul Connect Envoy ingress gateway. It\n\
         watches the catalog for services tagged with the TAGINGRESSSERVICE prefix, registers\n\
         an ingress service on the gateway's port carrying those tags with the prefix stripped\n\
         (so Traefik or Fabio routes the hosts to the gateway), and writes the ingress-gateway\n\
         config entry so Envoy routes each host to the right service. It serves /health and\n\
         deregisters the ingress service on SIGTERM or SIGINT. Configuration is read from the\n\
         environment only.\n\
         \n\
         Flags:\n  \
           --dry-run   read Consul once, print the planned registration and config entry as JSON, write nothing, exit\n  \
           --help      print this help and exit\n  \
           --version   print the version and exit\n\
         \n\
         Environment variables:\n",
    );
    for var in VARIABLES {
        let default = if var.default.is_empty() {
            String::new()
        } else {
            format!(" (default: {})", var.default)
        };
        text.push_str(&format!("  {:width$}  {}{}\n", var.name, var.help, default));
    }
    text
}

/// Where a system CA bundle usually lives (Debian/Alpine, RHEL, BSD/macOS-like), tried in
/// order when an https agent is configured without CONSUL_CACERT or CONSUL_CAPATH.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Parses and validates every variable; all problems are returned together.
/// `get` reads one variable (tests pass a map; `main` passes `std::env::var`).
pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<Config, Vec<ConfigError>> {
    let bundles: Vec<&Path> = SYSTEM_CA_BUNDLES.iter().map(Path::new).collect();
    from_env_with(get, &bundles)
}

/// [`from_env`] with the system CA bundle locations injected, so tests do not depend
/// on the machine's trust store.
fn from_env_with(
    get: &dyn Fn(&str) -> Option<String>,
    system_bundles: &[&Path],
) -> Result<Config, Vec<ConfigError>> {
    let mut env = Env {
        get,
        errors: Vec::new(),
    };

    let gateway_type = env.parse("TYPEGATEWAY", Some(GatewayType::Traefik), |v| {
        match v.to_ascii_lowercase().as_str() {
            "traefik" => Ok(GatewayType::Traefik),
            "fabio" => Ok(GatewayType::Fabio),
            _ => Err(format!(
                "{v:?} is not a gateway type; expected traefik or fabio"
            )),
        }
    });
    let tag_prefix = env.parse("TAGINGRESSSERVICE", None, parse_tag_prefix);
    let gateway_name = env.parse("SERVICENAMEINGRESSGATEWAY", None, |v| {
        check_path_name(v).map(|()| v.to_owned())
    });
    let ingress_service_name = match env.value("INGRESSSERVICENAME") {
        Some(v) => env.check(
            "INGRESSSERVICENAME",
            check_path_name(&v).map(|()| v.clone()),
        ),
        None => gateway_name.as_ref().map(|g| format!("{g}-ingress")),
    };
    let ingress_service_id = match env.value("INGRESSSERVICEID") {
        Some(v) => env.check("INGRESSSERVICEID", check_path_name(&v).map(|()| v.clone())),
        None => match (&ingress_service_name, env.value("NOMAD_ALLOC_ID")) {
            (Some(name), Some(alloc)) => {
                let id = format!("{name}-{alloc}");
                env.check(
                    "NOMAD_ALLOC_ID",
                    check_path_name(&id).map(|()| id.clone()).map_err(|_| {
                        format!(
                            "{alloc:?} cannot suffix the ingress service ID; expected only \
                             letters, digits, '.', '_' and '-' (or set INGRESSSERVICEID)"
                        )
                    }),
                )
            }
            (name, _) => name.clone(),
        },
    };

    let ingress_port = env.parse("INGRESSPORT", Some(9997), |v| parse_port(v, 1));
    let ingress_port_http2 = env.parse_optional("INGRESSPORTHTTP2", |v| parse_port(v, 1));
    let ingress_port_grpc = env.parse_optional("INGRESSPORTGRPC", |v| parse_port(v, 1));
    let health_check_port = env.parse("INGRESSHEALTHCHECKPORT", Some(8443), |v| parse_port(v, 1));
    let health_port = env.parse("HEALTHPORT", Some(10000), |v| parse_port(v, 0));
    check_distinct_ports(
        &mut env,
        &[
            ("INGRESSPORT", ingress_port),
            ("INGRESSPORTHTTP2", ingress_port_http2.flatten()),
            ("INGRESSPORTGRPC", ingress_port_grpc.flatten()),
        ],
        ("INGRESSHEALTHCHECKPORT", health_check_port),
        ("HEALTHPORT", health_port),
    );
    let ingress_address = env.parse_optional("INGRESSADDRESS", parse_ingress_address);

    let consul = parse_consul(&mut env, system_bundles);
    let set_service_defaults = env.parse("SETSERVICEDEFAULTS", Some(false), |v| {
        parse_bool(v).ok_or_else(|| bool_error(v))
    });
    let log_format = env.parse("LOGFORMAT", Some(LogFormat::Text), |v| {
        match v.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("{v:?} is not a log format; expected text or json")),
        }
    });
    let default_filter = tracing_subscriber::filter::Targets::new()
        .with_default(tracing_subscriber::filter::LevelFilter::INFO);
    let log_filter = env.parse("RUST_LOG", Some(default_filter), |v| {
        v.parse().map_err(|err| {
            format!(
                "{v:?} is not a log filter ({err}); expected e.g. info or \
                 info,ingress_service_monitor=debug"
            )
        })
    });

    match (
        gateway_type,
        tag_prefix,
        gateway_name,
        ingress_service_name,
        ingress_service_id,
        ingress_port,
        ingress_port_http2,
        ingress_port_grpc,
        health_check_port,
        ingress_address,
        health_port,
        consul,
        set_service_defaults,
        log_format,
        log_filter,
    ) {
        (
            Some(gateway_type),
            Some(tag_prefix),
            Some(gateway_name),
            Some(ingress_service_name),
            Some(ingress_service_id),
            Some(ingress_port),
            Some(ingress_port_http2),
            Some(ingress_port_grpc),
            Some(health_check_port),
            Some(ingress_address),
            Some(health_port),
            Some(consul),
            Some(set_service_defaults),
            Some(log_format),
            Some(log_filter),
        ) if env.errors.is_empty() => Ok(Config {
            gateway_type,
            tag_prefix,
            gateway_name,
            ingress_service_name,
            ingress_service_id,
            ingress_port,
            ingress_port_http2,
            ingress_port_grpc,
            health_check_port,
            ingress_address,
            health_port,
            consul,
            set_service_defaults,
            log_format,
            log_filter,
        }),
        // Every `None` above was recorded as an error.
        _ => Err(env.errors),
    }
}

/// Reads variables and collects problems, at most one per variable (the first found:
/// later ones are usually consequences of it).
struct Env<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
}

impl Env<'_> {
    /// The variable's value; empty means unset.
    fn value(&self, name: &'static str) -> Option<String> {
        debug_assert!(
            VARIABLES.iter().any(|v| v.name == name),
            "{name} is read but not listed in VARIABLES"
        );
        (self.get)(name).filter(|v| !v.is_empty())
    }

    fn error(&mut self, variable: &'static str, message: String) {
        if !self.errors.iter().any(|e| e.variable == variable) {
            self.errors.push(ConfigError { variable, message });
        }
    }

    /// `Some` on success, `None` after recording the error.
    fn check<T>(&mut self, variable: &'static str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.error(variable, message)).ok()
    }

    /// Required when `default` is `None`.
    fn parse<T>(
        &mut self,
        name: &'static str,
        default: Option<T>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match (self.value(name), default) {
            (Some(v), _) => {
                let parsed = parse(&v);
                self.check(name, parsed)
            }
            (None, Some(default)) => Some(default),
            (None, None) => {
                self.error(name, "is required but not set".into());
                None
            }
        }
    }

    /// `Some(None)` when unset, `None` after recording an error.
    fn parse_optional<T>(
        &mut self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<Option<T>> {
        self.parse(name, Some(None), |v| parse(v).map(Some))
    }
}

fn parse_tag_prefix(v: &str) -> Result<String, String> {
    if v.chars().any(char::is_whitespace) {
        return Err(format!(
            "{v:?} contains whitespace; expected a tag prefix such as gw-us-east"
        ));
    }
    let stem = v.trim_end_matches('-');
    if stem.is_empty() {
        return Err(format!(
            "{v:?} has nothing before its '-'; expected a tag prefix such as gw-us-east"
        ));
    }
    Ok(format!("{stem}-"))
}

/// Names that end up in URL paths (`/v1/config/ingress-gateway/<name>`,
/// `/v1/agent/service/<id>`): a conservative set that needs no escaping.
fn check_path_name(v: &str) -> Result<(), String> {
    let charset = v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if charset && v != "." && v != ".." {
        Ok(())
    } else {
        Err(format!(
            "{v:?} is not usable in a Consul URL path; expected only letters, digits, '.', '_' \
             and '-'"
        ))
    }
}

fn parse_port(v: &str, min: u16) -> Result<u16, String> {
    match v.parse::<u16>() {
        Ok(port) if port >= min => Ok(port),
        _ => Err(format!(
            "{v:?} is not a port; expected a number from {min} to 65535"
        )),
    }
}

/// Consul refuses two listeners on one port, Envoy cannot bind its readiness listener
/// on a listener's port, and our /health cannot share a port with the gateway.
fn check_distinct_ports(
    env: &mut Env<'_>,
    listeners: &[(&'static str, Option<u16>)],
    readiness: (&'static str, Option<u16>),
    health: (&'static str, Option<u16>),
) {
    for (i, &(name, port)) in listeners.iter().enumerate() {
        let Some(port) = port else { continue };
        if let Some(&(other, _)) = listeners[..i].iter().find(|(_, p)| *p == Some(port)) {
            env.error(
                name,
                format!(
                    "{port} is also {other}; each gateway listener needs its own port (Consul \
                     rejects two listeners on one port)"
                ),
            );
        }
    }
    let (name, readiness_port) = readiness;
    if let Some(port) = readiness_port {
        if let Some(&(other, _)) = listeners.iter().find(|(_, p)| *p == Some(port)) {
            env.error(
                name,
                format!(
                    "{port} is also {other}; the gateway's readiness port must differ from its \
                     listener ports"
                ),
            );
        }
    }
    let (name, health_port) = health;
    if let Some(port) = health_port.filter(|&p| p != 0) {
        let gateway_ports = listeners.iter().chain(std::iter::once(&readiness));
        if let Some(&(other, _)) = gateway_ports.clone().find(|(_, p)| *p == Some(port)) {
            env.error(
                name,
                format!(
                    "{port} is also {other}; this daemon's /health port must differ from every \
                     gateway port"
                ),
            );
        }
    }
}

fn parse_ingress_address(v: &str) -> Result<String, String> {
    if let Ok(ip) = v.parse::<IpAddr>() {
        if ip.is_unspecified() {
            return Err(format!(
                "{v:?} is an unspecified address, which Consul rejects for a service; expected \
                 the address the outer proxy can reach the gateway on"
            ));
        }
        return Ok(ip.to_string());
    }
    if is_hostname(v) {
        Ok(v.to_owned())
    } else {
        Err(format!(
            "{v:?} is neither an IP address nor a hostname; expected e.g. 10.0.0.5, fd00::5 \
             (no brackets) or gateway.example.com"
        ))
    }
}

/// A host name as the agent address or INGRESSADDRESS may give it (`_` allowed: node
/// names such as `consul_agent` resolve in practice).
fn is_hostname(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 253
        && v.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A host as it goes into a URL: IPv6 literals need brackets.
pub fn host_for_url(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// Go's `strconv.ParseBool`, which Consul's own variables follow.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn bool_error(v: &str) -> String {
    format!("{v:?} is not a boolean; expected true or false (or 1, t, T, TRUE, True, 0, f, F, FALSE, False)")
}

fn parse_consul(env: &mut Env<'_>, system_bundles: &[&Path]) -> Option<ConsulConfig> {
    let ssl = env.parse("CONSUL_HTTP_SSL", Some(false), |v| {
        parse_bool(v).ok_or_else(|| bool_error(v))
    });
    // Bare, like the Go client's default, so CONSUL_HTTP_SSL=true alone selects https.
    let (address_var, raw) = match (env.value("CONSULHTTPURL"), env.value("CONSUL_HTTP_ADDR")) {
        (Some(v), _) => ("CONSULHTTPURL", v),
        (None, Some(v)) => ("CONSUL_HTTP_ADDR", v),
        (None, None) => ("CONSULHTTPURL", "127.0.0.1:8500".to_owned()),
    };
    let address = ssl.and_then(|ssl| {
        let parsed = parse_agent_address(&raw, ssl);
        env.check(address_var, parsed)
    });
    let token = parse_token(env);
    let basic_auth = env.value("CONSUL_HTTP_AUTH").map(Token::new);
    // TLS variables only matter for an https agent; otherwise they are not even read.
    let tls = match &address {
        Some(AgentAddress::Tcp {
            https: true, host, ..
        }) => load_tls(env, host, system_bundles).map(Some),
        _ => Some(None),
    };
    let namespace = env.parse_optional("CONSUL_NAMESPACE", |v| enterprise_name(v, "namespace"));
    let partition = env.parse_optional("CONSUL_PARTITION", |v| enterprise_name(v, "partition"));
    Some(ConsulConfig {
        address: address?,
        token: token?,
        basic_auth,
        tls: tls?,
        namespace: namespace?,
        partition: partition?,
    })
}

fn enterprise_name(v: &str, what: &str) -> Result<String, String> {
    if is_name(v) {
        Ok(v.to_owned())
    } else {
        Err(format!(
            "{v:?} is not a Consul {what} name; expected only letters, digits, '.', '_' and '-'"
        ))
    }
}

fn is_name(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

const ADDRESS_FORMS: &str = "expected http://host[:port][/prefix], https://host[:port][/prefix], \
                             host:port or unix:///path/to/socket";

/// The agent address, in the forms the Go client accepts (consul-api §9). Unlike the Go
/// client, an explicit `http://` stays plain http even with CONSUL_HTTP_SSL=true: the
/// variable only chooses the scheme of a bare `host:port`.
fn parse_agent_address(v: &str, ssl: bool) -> Result<AgentAddress, String> {
    let (https, rest) = match v.split_once("://") {
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "http" => (false, rest),
            "https" => (true, rest),
            "unix" if rest.is_empty() => {
                return Err(format!("{v:?} names no socket; {ADDRESS_FORMS}"));
            }
            "unix" => {
                return Ok(AgentAddress::Unix {
                    path: PathBuf::from(rest),
                })
            }
            _ => {
                return Err(format!(
                    "unknown protocol scheme: {scheme} (in {v:?}); {ADDRESS_FORMS}"
                ))
            }
        },
        None => (ssl, v),
    };
    if rest.contains(['?', '#']) || rest.chars().any(char::is_whitespace) {
        return Err(format!(
            "{v:?} contains a query, a fragment or whitespace; {ADDRESS_FORMS}"
        ));
    }
    let (authority, prefix) = match rest.split_once('/') {
        Some((authority, prefix)) => (authority, prefix.trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(format!(
            "{v:?} carries user information; put it in CONSUL_HTTP_AUTH instead"
        ));
    }
    let (host, port) =
        parse_host_port(authority).map_err(|why| format!("{v:?}: {why}; {ADDRESS_FORMS}"))?;
    Ok(AgentAddress::Tcp {
        https,
        host,
        port: port.unwrap_or(if https { 443 } else { 80 }),
        path_prefix: if prefix.is_empty() {
            String::new()
        } else {
            format!("/{prefix}")
        },
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; the host comes back without brackets.
fn parse_host_port(authority: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| "'[' is not closed by ']'".to_owned())?;
            if inside.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("{inside:?} in brackets is not an IPv6 address"));
            }
            let port = match after {
                "" => None,
                after => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| format!("unexpected {after:?} after ']'"))?,
                ),
            };
            (inside, port)
        }
        None => {
            let (host, port) = match authority.split_once(':') {
                Some((_, port)) if port.contains(':') => {
                    return Err("an IPv6 address needs brackets, e.g. [::1]:8500".to_owned())
                }
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            };
            if !is_hostname(host) {
                return Err(format!("{host:?} is not a host name or IP address"));
            }
            (host, port)
        }
    };
    let port = port.map(|p| parse_port(p, 1)).transpose()?;
    Ok((host.to_owned(), port))
}

/// CONSULTOKEN, else a non-empty CONSUL_HTTP_TOKEN_FILE, else CONSUL_HTTP_TOKEN. The
/// secret never appears in an error message.
fn parse_token(env: &mut Env<'_>) -> Option<Option<Token>> {
    let from_env_var = |env: &Env<'_>| {
        env.value("CONSUL_HTTP_TOKEN")
            .map(|secret| ("CONSUL_HTTP_TOKEN", secret))
    };
    let found = match (
        env.value("CONSULTOKEN"),
        env.value("CONSUL_HTTP_TOKEN_FILE"),
    ) {
        (Some(secret), _) => Some(("CONSULTOKEN", secret)),
        (None, Some(path)) => match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => {
                Some(("CONSUL_HTTP_TOKEN_FILE", text.trim().to_owned()))
            }
            Ok(_) => from_env_var(env),
            Err(err) => {
                env.error(
                    "CONSUL_HTTP_TOKEN_FILE",
                    format!(
                        "cannot read the token file {path:?}: {err}; expected a readable file \
                         holding the ACL token"
                    ),
                );
                return None;
            }
        },
        (None, None) => from_env_var(env),
    };
    let Some((variable, secret)) = found else {
        return Some(None);
    };
    if !is_header_value(&secret) {
        env.error(
            variable,
            "the token contains characters not allowed in an HTTP header (control characters, \
             line breaks or non-ASCII); the value is not shown"
                .to_owned(),
        );
        return None;
    }
    Some(Some(Token::new(secret)))
}

/// What `http::HeaderValue::from_str` accepts: visible ASCII, space and tab.
fn is_header_value(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

fn load_tls(env: &mut Env<'_>, host: &str, system_bundles: &[&Path]) -> Option<TlsConfig> {
    let verify = env.parse("CONSUL_HTTP_SSL_VERIFY", Some(true), |v| {
        parse_bool(v).ok_or_else(|| bool_error(v))
    });
    let roots = load_roots(env, verify.unwrap_or(true), system_bundles);
    let client_auth = load_client_auth(env);
    let server_name = tls_server_name(env, host);
    Some(TlsConfig {
        roots: roots?,
        client_auth: client_auth?,
        server_name: server_name?,
        verify: verify?,
    })
}

/// CONSUL_CACERT wins over CONSUL_CAPATH, as in the Go client; the system bundle is the
/// fallback. Without verification the roots are unused, so a missing bundle is fine.
fn load_roots(
    env: &mut Env<'_>,
    verify: bool,
    system_bundles: &[&Path],
) -> Option<Vec<CertificateDer<'static>>> {
    if let Some(file) = env.value("CONSUL_CACERT") {
        let certs = load_certs(Path::new(&file)).and_then(|certs| {
            non_empty(certs, || {
                format!("{file:?} contains no PEM certificate; expected a PEM CA bundle")
            })
        });
        return env.check("CONSUL_CACERT", certs);
    }
    if let Some(dir) = env.value("CONSUL_CAPATH") {
        let certs = load_cert_dir(Path::new(&dir));
        return env.check("CONSUL_CAPATH", certs);
    }
    let system = system_bundles
        .iter()
        .find_map(|bundle| load_certs(bundle).ok().filter(|certs| !certs.is_empty()));
    match system {
        Some(certs) => Some(certs),
        None if !verify => Some(Vec::new()),
        None => {
            let tried: Vec<String> = system_bundles
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            env.error(
                "CONSUL_CACERT",
                format!(
                    "the agent address is https, which needs a CA bundle, and no system bundle \
                     was found (tried {}); set CONSUL_CACERT or CONSUL_CAPATH",
                    tried.join(", ")
                ),
            );
            None
        }
    }
}

fn non_empty<T>(items: Vec<T>, why: impl FnOnce() -> String) -> Result<Vec<T>, String> {
    if items.is_empty() {
        Err(why())
    } else {
        Ok(items)
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| pem_error(path, &err))
}

fn pem_error(path: &Path, err: &pem::Error) -> String {
    match err {
        pem::Error::Io(io) => format!("cannot read {}: {io}", path.display()),
        other => format!("{} is not valid PEM: {other}", path.display()),
    }
}

/// Every `*.pem` / `*.crt` file of the directory, in name order.
fn load_cert_dir(dir: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let cannot = |err: std::io::Error| format!("cannot read directory {}: {err}", dir.display());
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(cannot)? {
        let path = entry.map_err(cannot)?.path();
        let wanted = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("pem") || e.eq_ignore_ascii_case("crt"));
        if wanted && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    let mut certs = Vec::new();
    for file in &files {
        certs.extend(load_certs(file)?);
    }
    non_empty(certs, || {
        format!(
            "{} holds no certificate in *.pem or *.crt files; expected a directory of PEM CA \
             certificates",
            dir.display()
        )
    })
}

fn load_client_auth(env: &mut Env<'_>) -> Option<Option<ClientAuth>> {
    const BOTH: &str = "both client cert and client key must be provided";
    match (
        env.value("CONSUL_CLIENT_CERT"),
        env.value("CONSUL_CLIENT_KEY"),
    ) {
        (None, None) => Some(None),
        (Some(_), None) => {
            env.error(
                "CONSUL_CLIENT_KEY",
                format!("{BOTH}: CONSUL_CLIENT_CERT is set but CONSUL_CLIENT_KEY is not"),
            );
            None
        }
        (None, Some(_)) => {
            env.error(
                "CONSUL_CLIENT_CERT",
                format!("{BOTH}: CONSUL_CLIENT_KEY is set but CONSUL_CLIENT_CERT is not"),
            );
            None
        }
        (Some(cert), Some(key)) => {
            let chain = load_certs(Path::new(&cert)).and_then(|certs| {
                non_empty(certs, || {
                    format!("{cert:?} contains no PEM certificate; expected the client certificate")
                })
            });
            let chain = env.check("CONSUL_CLIENT_CERT", chain);
            let key = PrivateKeyDer::from_pem_file(&key).map_err(|err| key_error(&key, &err));
            let key = env.check("CONSUL_CLIENT_KEY", key);
            Some(Some(ClientAuth {
                cert_chain: chain?,
                key: key?,
            }))
        }
    }
}

/// Only I/O errors are detailed: a PEM parse error may quote lines of the key file.
fn key_error(path: &str, err: &pem::Error) -> String {
    match err {
        pem::Error::Io(io) => format!("cannot read {path:?}: {io}"),
        pem::Error::NoItemsFound => {
            format!("{path:?} contains no private key; expected a PEM PKCS#8, PKCS#1 or SEC1 key")
        }
        _ => format!("{path:?} is not valid PEM; expected a PEM PKCS#8, PKCS#1 or SEC1 key"),
    }
}

fn tls_server_name(env: &mut Env<'_>, host: &str) -> Option<String> {
    let (name, why) = match env.value("CONSUL_TLS_SERVER_NAME") {
        Some(v) => {
            let name = strip_port(&v);
            let why = format!("{v:?} is not a valid TLS server name; expected a DNS name or IP");
            (name, why)
        }
        None => (
            host.to_owned(),
            format!(
                "the agent host {host:?} is not a valid TLS server name; set \
                 CONSUL_TLS_SERVER_NAME to the name in the agent's certificate"
            ),
        ),
    };
    let valid = ServerName::try_from(name.as_str()).is_ok();
    env.check(
        "CONSUL_TLS_SERVER_NAME",
        if valid { Ok(name) } else { Err(why) },
    )
}

/// `name:port` -> `name`, `[v6]:port` -> `v6`; a bare IPv6 literal is left alone.
fn strip_port(v: &str) -> String {
    if let Some((inside, _)) = v.strip_prefix('[').and_then(|rest| rest.split_once(']')) {
        return inside.to_owned();
    }
    match v.split_once(':') {
        Some((name, port)) if !port.contains(':') => name.to_owned(),
        _ => v.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::fs;

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
        from_env_with(&|name| map.get(name).cloned(), bundles)
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
            (&[("CONSUL_NAMESPACE", "a b")], "CONSUL_NAMESPACE", "\"a b\" is not a Consul namespace name"),
            (&[("CONSUL_PARTITION", "a/b")], "CONSUL_PARTITION", "\"a/b\" is not a Consul partition name"),
            (&[("SETSERVICEDEFAULTS", "yes")], "SETSERVICEDEFAULTS", "\"yes\" is not a boolean"),
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
        let errors = from_env_with(&|name| map.get(name).map(|v| v.to_string()), &[])
            .expect_err("bad config");
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
                map.get(name).map(|v| v.to_string())
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
        assert_eq!(tls.roots.len(), 1);
        assert_eq!(tls.server_name, "consul.example");
        assert!(tls.verify);
        assert!(tls.client_auth.is_none());

        let tls = run(with(&[("CONSUL_CACERT", &two)]));
        assert_eq!(
            tls.roots.len(),
            2,
            "every certificate of the bundle, keys skipped"
        );

        let tls = run(with(&[
            ("CONSUL_CACERT", &ca),
            ("CONSUL_CLIENT_CERT", &ca),
            ("CONSUL_CLIENT_KEY", &key),
            ("CONSUL_TLS_SERVER_NAME", "agent.consul:8501"),
            ("CONSUL_HTTP_SSL_VERIFY", "0"),
        ]));
        let client = tls.client_auth.expect("client auth");
        assert_eq!(client.cert_chain.len(), 1);
        assert!(matches!(client.key, PrivateKeyDer::Pkcs8(_)));
        assert_eq!(tls.server_name, "agent.consul");
        assert!(!tls.verify);

        // CONSUL_CACERT wins: the CAPATH is not even looked at.
        let tls = run(with(&[
            ("CONSUL_CACERT", &ca),
            ("CONSUL_CAPATH", "/nonexistent"),
        ]));
        assert_eq!(tls.roots.len(), 1);

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
            assert_eq!(tls.server_name, want, "{value:?}");
        }
        let tls = ok(&[
            ("CONSULHTTPURL", "https://[::1]:8501"),
            ("CONSUL_CACERT", &ca),
        ])
        .consul
        .tls
        .expect("tls");
        assert_eq!(tls.server_name, "::1");
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
        assert_eq!(tls.roots.len(), 2);

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
        assert_eq!(config.consul.tls.expect("tls").roots.len(), 1);

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
        assert!(tls.expect("tls").roots.is_empty());
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
        assert!(
            help.starts_with("Usage: ingress-service-monitor [--dry-run | --help | --version]\n")
        );
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
}
