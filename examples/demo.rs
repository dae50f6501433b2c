//! Demo: the daemon's main job on the bundled Consul simulator.
//!
//! `cargo run --example demo` starts the simulator with a few tagged services (one of
//! them badly tagged, one speaking tcp), runs the daemon against it until the gateway
//! converges, prints the `ingress-gateway` config entry and the ingress service's tags,
//! then stops the daemon the way SIGTERM does (it deregisters its service).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use consul_sim::{ServiceSpec, Sim, SimOptions};
use ingress_service_monitor::{config, consul, daemon};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sim = Sim::start(SimOptions::default());
    for (name, protocol) in [("shop", "http"), ("blog", "http"), ("legacy", "http")] {
        sim.put_config(
            json!({"Kind": "service-defaults", "Name": name, "Protocol": protocol}),
            None,
        )
        .map_err(|(code, text)| format!("simulator refused service-defaults: {code} {text}"))?;
    }
    let services: [(&str, &[&str]); 5] = [
        ("shop", &["gw-us-east-traefik.http.routers.shop.rule=Host(`shop.example.com`) || Host(`www.shop.example.com`)", "gw-us-east-traefik.http.routers.shop.tls=true"]),
        ("blog", &["gw-us-east-traefik.http.routers.blog.rule=Host('blog.example.com') && PathPrefix('/')"]),
        ("legacy", &["gw-us-east-traefik.http.routers.legacy.rule=Host(`legacy_app.example.com`)"]),
        ("db", &["gw-us-east-traefik.http.routers.db.rule=Host(`db.example.com`)"]),
        ("billing", &["internal"]),
    ];
    for (name, tags) in services {
        sim.add_service(ServiceSpec::new(name, tags));
    }
    println!("Consul simulator on {}; catalog:", sim.url());
    for (name, tags) in services {
        println!("  {name:8} {tags:?}");
    }

    let env: HashMap<&str, String> = HashMap::from([
        ("TAGINGRESSSERVICE", "gw-us-east".to_string()),
        ("SERVICENAMEINGRESSGATEWAY", "edge".to_string()),
        ("CONSULHTTPURL", sim.url()),
        ("HEALTHPORT", "0".to_string()),
    ]);
    let config =
        config::from_env(&|name| env.get(name).cloned()).map_err(|errors| format!("{errors:?}"))?;
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = std::thread::spawn(move || -> Result<u8, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async move {
            let client = consul::Client::new(&config.consul)?;
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
                .await
                .map_err(|e| e.to_string())?;
            let shutdown = async move {
                let _ = stopped.await; // a dropped sender also means stop
            };
            Ok(daemon::run(Arc::new(config), client, listener, shutdown).await)
        })
    });

    // Converged: both http services routed, and the ingress service carries their tags.
    let converged = || {
        let routed = sim.config("ingress-gateway", "edge").is_some_and(|e| {
            e["Listeners"][0]["Services"]
                .as_array()
                .is_some_and(|s| s.len() == 2)
        });
        let tagged = sim
            .agent_service("edge-ingress")
            .is_some_and(|s| s["Tags"].to_string().contains("db.example.com"));
        routed && tagged
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while !converged() {
        if Instant::now() > deadline {
            return Err("the daemon did not converge within 15 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let entry = sim
        .config("ingress-gateway", "edge")
        .ok_or("no config entry")?;
    println!(
        "\ningress-gateway config entry \"edge\" (what Envoy routes):\n{}",
        serde_json::to_string_pretty(&entry)?
    );
    let registration = sim
        .agent_service("edge-ingress")
        .ok_or("no ingress service")?;
    println!("\ningress service \"edge-ingress\" tags (what Traefik reads):");
    for tag in registration["Tags"].as_array().into_iter().flatten() {
        println!("  {}", tag.as_str().unwrap_or_default());
    }

    println!("\nstopping the daemon (as on SIGTERM)...");
    let _ = stop.send(());
    let status = daemon.join().map_err(|_| "daemon thread panicked")??;
    println!(
        "daemon exited with status {status}; ingress service registered: {}; config entry kept: {}",
        sim.agent_service("edge-ingress").is_some(),
        sim.config("ingress-gateway", "edge").is_some()
    );
    Ok(())
}
