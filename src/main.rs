//! `ingress-service-monitor`: parse flags and configuration, start logging, run the
//! daemon on a current_thread runtime, and turn the outcome into an exit status
//! (0 ok, 1 runtime failure such as a failed deregistration, 2 bad configuration).

use std::process::ExitCode;

use ingress_service_monitor::config::{self, Config, LogFormat};
use ingress_service_monitor::daemon::{self, EXIT_CONFIG, EXIT_FAILURE};

fn main() -> ExitCode {
    let mut dry_run = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--help" | "-h" => {
                print!("{}", config::help_text());
                return ExitCode::SUCCESS;
            }
            "--version" | "-V" => {
                println!("ingress-service-monitor {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "--dry-run" => dry_run = true,
            other => {
                eprintln!("ingress-service-monitor: unknown argument {other:?}; see --help");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    }
    let config = match config::from_os_env(&|name| std::env::var_os(name)) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!(
                "ingress-service-monitor: invalid configuration ({} problems):",
                errors.len()
            );
            for error in errors {
                eprintln!("  {error}");
            }
            eprintln!("see --help for every variable");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(&config);
    if let Some(tls) = config.consul.tls.as_ref().filter(|t| t.ignored_roots > 0) {
        tracing::warn!(
            ignored = tls.ignored_roots,
            used = tls.roots,
            "some certificates of the CA bundle could not be parsed and are ignored"
        );
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("ingress-service-monitor: cannot start the runtime: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    ExitCode::from(runtime.block_on(daemon::main(config, dry_run)))
}

fn init_logging(config: &Config) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(config.log_filter.clone());
    match config.log_format {
        LogFormat::Text => registry.with(fmt.with_ansi(false)).init(),
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).init(),
    }
}
