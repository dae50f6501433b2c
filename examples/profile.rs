//! Profiling driver: the benchmark's workload in the simulator, and the daemon run under
//! a command of your choice (a profiler), with the profile covering catalog changes only.
//!
//! ```text
//! cargo build --release --target x86_64-unknown-linux-musl   # unstripped: CARGO_PROFILE_RELEASE_STRIP=false
//! cargo run --release --example profile -- --services 10000 --changes 10 -- \
//!     valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!     target/x86_64-unknown-linux-musl/release/ingress-service-monitor
//! callgrind_annotate /tmp/cg.out | head -40
//! ```
//!
//! `--intentions` runs the daemon with `SETINTENTIONS=true`.
//!
//! The simulator is loaded as the benchmark loads it (`examples/bench.rs`, same mix).
//! Once the daemon has converged and settled, the profiler's counters are zeroed
//! (`callgrind_control -z`, when the command is valgrind's callgrind), then `--changes`
//! host edits are made one after the other, each waited for (both writes visible) and
//! followed by `--settle-ms` of quiet so the pass after our own write's echo is counted
//! too. The daemon is then stopped with SIGTERM, and callgrind writes its profile:
//! divide its total by `--changes` for the cost of one change.

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use consul_sim::{Sim, SimOptions};
use serde_json::json;

const GATEWAY: &str = "edge";

// ------------------------------------------------------------------ the workload

#[path = "common/workload.rs"]
mod workload;
use workload::{Workload, PREFIX};

struct Args {
    services: usize,
    changes: usize,
    settle: Duration,
    /// SETINTENTIONS=true: first convergence also creates each exposed service's
    /// service-intentions.
    intentions: bool,
    command: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        services: 10_000,
        changes: 10,
        settle: Duration::from_millis(3000),
        intentions: false,
        command: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{name} needs a number"))
        };
        match arg.as_str() {
            "--services" => args.services = number("--services")?.max(10) as usize,
            "--changes" => args.changes = number("--changes")?.max(1) as usize,
            "--settle-ms" => args.settle = Duration::from_millis(number("--settle-ms")?),
            "--intentions" => args.intentions = true,
            "--" => {
                args.command = it.by_ref().collect();
                break;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.command.is_empty() {
        return Err("no command after --".into());
    }
    Ok(args)
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("{what}: not within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("profile: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let sim = Sim::start(SimOptions::default());
    let mut workload = Workload::new(args.services);
    for (name, protocol) in &workload.defaults {
        sim.put_config(
            json!({"Kind": "service-defaults", "Name": name, "Protocol": protocol}),
            None,
        )
        .map_err(|e| format!("service-defaults {name} refused: {e:?}"))?;
    }
    for spec in &workload.specs {
        sim.add_service(spec.clone());
    }
    let base = sim.state_changing_writes();
    let mut child = Command::new(&args.command[0])
        .args(&args.command[1..])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TAGINGRESSSERVICE", PREFIX)
        .env("SERVICENAMEINGRESSGATEWAY", GATEWAY)
        .env("CONSULHTTPURL", sim.url())
        .env("HEALTHPORT", "0")
        .env("RUST_LOG", "info")
        .env("SETINTENTIONS", args.intentions.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", args.command))?;
    let pid = child.id().to_string();
    let result = (|| {
        let started = Instant::now();
        // The gateway's entry and the registration, and with intentions one entry per
        // exposed service.
        let first = 2 + if args.intentions {
            workload.tagged.len() as u64
        } else {
            0
        };
        wait_for("first convergence", Duration::from_secs(900), || {
            sim.state_changing_writes() >= base + first
        })?;
        eprintln!("profile: converged after {:?}", started.elapsed());
        std::thread::sleep(args.settle);
        let callgrind = args.command.iter().any(|a| a == "--tool=callgrind");
        if callgrind {
            let zeroed = Command::new("callgrind_control")
                .args(["-z", &pid])
                .stdout(Stdio::null())
                .status();
            if !zeroed.is_ok_and(|s| s.success()) {
                return Err("callgrind_control -z failed".into());
            }
        }
        let tagged = workload.tagged.len();
        for k in 0..args.changes {
            let which = (k * 7919) % tagged;
            let service = &mut workload.tagged[which];
            service.host = format!("{}-p{k}.example.com", service.name);
            let tags = service.tags();
            let tag_refs: Vec<&str> = tags.iter().map(String::as_str).collect();
            let before = sim.state_changing_writes();
            let edit = Instant::now();
            sim.set_service_tags(&service.node, &service.name, &tag_refs);
            wait_for(&format!("change {k}"), Duration::from_secs(300), || {
                sim.state_changing_writes() >= before + 2
            })?;
            eprintln!("profile: change {k} seen after {:?}", edit.elapsed());
            std::thread::sleep(args.settle);
        }
        Ok(())
    })();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let status = child.wait().map_err(|e| format!("wait: {e}"))?;
    eprintln!("profile: daemon exited: {status}");
    result
}
