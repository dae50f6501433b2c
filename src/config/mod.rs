//! Configuration: environment variables in, a valid [`Config`] out, once, at start.
//!
//! The table [`VARIABLES`] is the single source of truth: `--help` is generated from it,
//! the parser reads only names listed in it, and the Nomad job test checks the job's
//! `env` block against it. Every problem is collected (one [`ConfigError`] per variable)
//! so an operator fixes all of them in one go; `main` prints them and exits with 2.
//! Nothing is left to check later: TLS material is loaded and the rustls configuration
//! built while parsing ([`consul`]), so once a `Config` exists it is valid.
//!
//! Layout: [`vars`] holds the table, `--help` and the reader; this module the parts that
//! shape what the daemon does (gateway, ports, logging); [`consul`] the agent connection.

use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

mod consul;
mod vars;

pub use consul::{AgentAddress, ClientAuth, ConsulConfig, TlsConfig, Token, TOKEN_VARIABLES};
pub use vars::{help_text, parse_bool, Source, Var, VARIABLES};

use vars::Env;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayType {
    Traefik,
    Fabio,
}

/// Which Consul gateway the daemon configures (CONSULGATEWAY), named after
/// `consul connect envoy -gateway=<kind>`. [`GatewayType`] is the outer proxy instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayKind {
    /// An `ingress-gateway` config entry with one listener per protocol (the default).
    Ingress,
    /// An `api-gateway` config entry with one `http` listener, plus one `http-route`
    /// entry per exposed service.
    Api,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated configuration. Once it exists, it is valid.
#[derive(Debug)]
pub struct Config {
    /// The outer proxy reading the ingress service's tags (TYPEGATEWAY).
    pub gateway_type: GatewayType,
    /// The Consul gateway whose entries the daemon writes (CONSULGATEWAY).
    pub gateway_kind: GatewayKind,
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
    /// SETINTENTIONS: allow the gateway in each exposed service's `service-intentions`.
    pub set_intentions: bool,
    pub log_format: LogFormat,
    /// RUST_LOG, already parsed.
    pub log_filter: tracing_subscriber::filter::Targets,
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

/// Parses and validates every variable; all problems are returned together. `main`
/// passes `std::env::var_os`, so a value that is not UTF-8 is an error naming it.
pub fn from_os_env(get: Source<'_>) -> Result<Config, Vec<ConfigError>> {
    let bundles: Vec<&Path> = consul::SYSTEM_CA_BUNDLES.iter().map(Path::new).collect();
    from_env_with(get, &bundles)
}

/// [`from_os_env`] for sources that hold only text (tests, the fuzzer, examples).
pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<Config, Vec<ConfigError>> {
    from_os_env(&|name| get(name).map(OsString::from))
}

/// [`from_os_env`] with the system CA bundle locations injected, so tests do not depend
/// on the machine's trust store.
fn from_env_with(get: Source<'_>, system_bundles: &[&Path]) -> Result<Config, Vec<ConfigError>> {
    let mut env = Env::new(get);
    let gateway = parse_gateway(&mut env);
    let ports = parse_ports(&mut env, gateway.as_ref().map(|g| g.gateway_kind));
    let consul = consul::parse_consul(&mut env, system_bundles);
    let logging = parse_logging(&mut env);
    match (gateway, ports, consul, logging) {
        (Some(gateway), Some(ports), Some(consul), Some(logging)) if env.errors.is_empty() => {
            Ok(Config {
                gateway_type: gateway.gateway_type,
                gateway_kind: gateway.gateway_kind,
                tag_prefix: gateway.tag_prefix,
                gateway_name: gateway.gateway_name,
                ingress_service_name: gateway.ingress_service_name,
                ingress_service_id: gateway.ingress_service_id,
                ingress_port: ports.ingress,
                ingress_port_http2: ports.http2,
                ingress_port_grpc: ports.grpc,
                health_check_port: ports.health_check,
                ingress_address: ports.address,
                health_port: ports.health,
                consul,
                set_service_defaults: gateway.set_service_defaults,
                set_intentions: gateway.set_intentions,
                log_format: logging.format,
                log_filter: logging.filter,
            })
        }
        // Every `None` above was recorded as an error.
        _ => Err(env.errors),
    }
}

/// What is exposed and under which names.
struct GatewaySettings {
    gateway_type: GatewayType,
    gateway_kind: GatewayKind,
    tag_prefix: String,
    gateway_name: String,
    ingress_service_name: String,
    ingress_service_id: String,
    set_service_defaults: bool,
    set_intentions: bool,
}

fn parse_gateway(env: &mut Env<'_>) -> Option<GatewaySettings> {
    let gateway_type = env.parse("TYPEGATEWAY", Some(GatewayType::Traefik), |v| {
        match v.to_ascii_lowercase().as_str() {
            "traefik" => Ok(GatewayType::Traefik),
            "fabio" => Ok(GatewayType::Fabio),
            _ => Err(format!(
                "{v:?} is not a gateway type; expected traefik or fabio"
            )),
        }
    });
    let gateway_kind = env.parse("CONSULGATEWAY", Some(GatewayKind::Ingress), |v| {
        match v.to_ascii_lowercase().as_str() {
            "ingress" => Ok(GatewayKind::Ingress),
            "api" => Ok(GatewayKind::Api),
            _ => Err(format!(
                "{v:?} is not a Consul gateway kind; expected ingress or api (as in consul \
                 connect envoy -gateway=<kind>)"
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
        None if env.has_error("INGRESSSERVICENAME") => None,
        None => gateway_name.as_ref().map(|g| format!("{g}-ingress")),
    };
    let ingress_service_id = parse_service_id(env, ingress_service_name.as_deref());
    let set_service_defaults = env.parse_bool("SETSERVICEDEFAULTS", false);
    let set_intentions = env.parse_bool("SETINTENTIONS", false);
    Some(GatewaySettings {
        gateway_type: gateway_type?,
        gateway_kind: gateway_kind?,
        tag_prefix: tag_prefix?,
        gateway_name: gateway_name?,
        ingress_service_name: ingress_service_name?,
        ingress_service_id: ingress_service_id?,
        set_service_defaults: set_service_defaults?,
        set_intentions: set_intentions?,
    })
}

/// INGRESSSERVICEID, else the ingress service's name suffixed with NOMAD_ALLOC_ID.
fn parse_service_id(env: &mut Env<'_>, name: Option<&str>) -> Option<String> {
    if let Some(v) = env.value("INGRESSSERVICEID") {
        return env.check("INGRESSSERVICEID", check_path_name(&v).map(|()| v.clone()));
    }
    if env.has_error("INGRESSSERVICEID") {
        return None;
    }
    match (name, env.value("NOMAD_ALLOC_ID")) {
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
        _ if env.has_error("NOMAD_ALLOC_ID") => None,
        (name, _) => name.map(str::to_owned),
    }
}

/// The gateway's listener ports, its readiness port, our /health port and the address
/// registered for the ingress service.
struct Ports {
    ingress: u16,
    http2: Option<u16>,
    grpc: Option<u16>,
    health_check: u16,
    health: u16,
    address: Option<String>,
}

/// `kind` is `None` when CONSULGATEWAY itself is wrong: the mode-specific checks wait.
fn parse_ports(env: &mut Env<'_>, kind: Option<GatewayKind>) -> Option<Ports> {
    let ingress = env.parse("INGRESSPORT", Some(9997), |v| parse_port(v, 1));
    let http2 = env.parse_optional("INGRESSPORTHTTP2", |v| parse_port(v, 1));
    let grpc = env.parse_optional("INGRESSPORTGRPC", |v| parse_port(v, 1));
    if kind == Some(GatewayKind::Api) {
        for (name, port) in [("INGRESSPORTHTTP2", http2), ("INGRESSPORTGRPC", grpc)] {
            if let Some(Some(port)) = port {
                env.error(
                    name,
                    format!(
                        "{port} is set, but with CONSULGATEWAY=api the gateway has only the \
                         http listener on INGRESSPORT (Consul binds http-routes only to \
                         services whose protocol is http); unset it, or use \
                         CONSULGATEWAY=ingress"
                    ),
                );
            }
        }
    }
    let health_check = env.parse("INGRESSHEALTHCHECKPORT", Some(8443), |v| parse_port(v, 1));
    let health = env.parse("HEALTHPORT", Some(10000), |v| parse_port(v, 0));
    check_distinct_ports(
        env,
        &[
            ("INGRESSPORT", ingress),
            ("INGRESSPORTHTTP2", http2.flatten()),
            ("INGRESSPORTGRPC", grpc.flatten()),
        ],
        ("INGRESSHEALTHCHECKPORT", health_check),
        ("HEALTHPORT", health),
    );
    let address = env.parse_optional("INGRESSADDRESS", parse_ingress_address);
    Some(Ports {
        ingress: ingress?,
        http2: http2?,
        grpc: grpc?,
        health_check: health_check?,
        health: health?,
        address: address?,
    })
}

struct Logging {
    format: LogFormat,
    filter: tracing_subscriber::filter::Targets,
}

fn parse_logging(env: &mut Env<'_>) -> Option<Logging> {
    let format = env.parse("LOGFORMAT", Some(LogFormat::Text), |v| {
        match v.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("{v:?} is not a log format; expected text or json")),
        }
    });
    let default_filter = tracing_subscriber::filter::Targets::new()
        .with_default(tracing_subscriber::filter::LevelFilter::INFO);
    let filter = env.parse("RUST_LOG", Some(default_filter), |v| {
        v.parse().map_err(|err| {
            format!(
                "{v:?} is not a log filter ({err}); expected e.g. info or \
                 info,ingress_service_monitor=debug"
            )
        })
    });
    Some(Logging {
        format: format?,
        filter: filter?,
    })
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

pub(super) fn parse_port(v: &str, min: u16) -> Result<u16, String> {
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
pub(super) fn is_hostname(v: &str) -> bool {
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

#[cfg(test)]
mod tests;
