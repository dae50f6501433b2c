//! The agent's HTTP check runner (consul-api.md §10): for every agent-registered check
//! with an `HTTP` URL, GET it every `Interval` (at least 1s); 2xx is passing, 429 warning,
//! anything else or a timeout critical. Only `http://` URLs are supported; redirects are
//! not followed. The first run happens at once rather than after Consul's random stagger,
//! so tests see a status quickly; `SimOptions::check_interval` (a test speed-up) replaces
//! every check's interval, below Consul's 1s minimum too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

use crate::agent::CheckDef;
use crate::server::{Shared, TableKind};

const MIN_INTERVAL: Duration = Duration::from_secs(1);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_OUTPUT: usize = 4096;

/// Keeps one task per HTTP check in step with the agent's registrations.
pub async fn run(shared: Arc<Shared>) {
    let mut agent_rx = shared.sender(TableKind::Agent).subscribe();
    let mut checks_rx = shared.sender(TableKind::Checks).subscribe();
    let mut running: HashMap<String, (CheckDef, AbortHandle)> = HashMap::new();
    loop {
        let wanted: Vec<(String, CheckDef)> = {
            let state = shared.lock();
            agent_rx.borrow_and_update();
            checks_rx.borrow_and_update();
            state
                .agent_checks
                .values()
                .filter(|c| !c.def.http.is_empty() && c.def.interval_ns > 0)
                .map(|c| (c.check_id.clone(), c.def.clone()))
                .collect()
        };
        running.retain(|id, (def, handle)| {
            let keep = wanted.iter().any(|(w, d)| w == id && d == def);
            if !keep {
                handle.abort();
            }
            keep
        });
        for (id, def) in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(id) {
                let task = tokio::spawn(check_loop(
                    Arc::clone(&shared),
                    slot.key().clone(),
                    def.clone(),
                ));
                slot.insert((def, task.abort_handle()));
            }
        }
        tokio::select! {
            r = agent_rx.changed() => if r.is_err() { return },
            r = checks_rx.changed() => if r.is_err() { return },
        }
    }
}

fn nanos(ns: i64) -> Duration {
    Duration::from_nanos(ns.max(0).unsigned_abs())
}

async fn check_loop(shared: Arc<Shared>, check_id: String, def: CheckDef) {
    let interval = match shared.settings.check_interval {
        Some(fixed) => fixed,
        None => nanos(def.interval_ns).max(MIN_INTERVAL),
    };
    let timeout = if def.timeout_ns > 0 {
        nanos(def.timeout_ns)
    } else {
        DEFAULT_TIMEOUT
    };
    loop {
        let (status, output) = probe(&def, timeout).await;
        let changes = shared.lock().set_check_result(&check_id, status, &output);
        shared.notify(changes);
        // Consul schedules the next run one interval after the previous one finished.
        tokio::time::sleep(interval).await;
    }
}

/// `(host:port, path-and-query)` of an `http://` URL.
fn split_url(url: &str) -> Option<(String, String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    let has_port = match authority.rfind(']') {
        Some(bracket) => authority[bracket..].contains(':'),
        None => authority.contains(':'),
    };
    let target = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Some((target, authority.to_string(), path))
}

async fn probe(def: &CheckDef, timeout: Duration) -> (&'static str, String) {
    let method = if def.method.is_empty() {
        "GET"
    } else {
        def.method.as_str()
    };
    match tokio::time::timeout(timeout, request(def, method)).await {
        Ok(Ok((code, reason, body))) => {
            let status = match code {
                200..=299 => "passing",
                429 => "warning",
                _ => "critical",
            };
            let body = String::from_utf8_lossy(&body[..body.len().min(MAX_OUTPUT)]).into_owned();
            (
                status,
                format!("HTTP {method} {}: {code} {reason} Output: {body}", def.http),
            )
        }
        Ok(Err(e)) => ("critical", format!("{method} {}: {e}", crate::util::go_quote(&def.http))),
        Err(_) => (
            "critical",
            format!(
                "{method} {}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
                crate::util::go_quote(&def.http)
            ),
        ),
    }
}

async fn request(def: &CheckDef, method: &str) -> Result<(u16, String, Bytes), String> {
    let (target, authority, path) = split_url(&def.http)
        .ok_or_else(|| "only http:// URLs are supported by consul-sim".to_string())?;
    let stream = TcpStream::connect(&target)
        .await
        .map_err(|e| format!("dial tcp {target}: {e}"))?;
    // Latency tuning only; the probe works without it.
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        // The connection ends with the request; its errors surface through `send_request`.
        let _ = conn.await;
    });
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority)
        .header("user-agent", "Consul Health Check")
        .header("accept", "text/plain, text/*, */*");
    for (name, values) in &def.header {
        for value in values {
            builder = builder.header(name.as_str(), value.as_str());
        }
    }
    let request = builder
        .body(Full::new(Bytes::from(def.body.clone())))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let code = response.status().as_u16();
    let reason = response
        .status()
        .canonical_reason()
        .unwrap_or("")
        .to_string();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok((code, reason, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_target_host_and_path() {
        type Case = (
            &'static str,
            Option<(&'static str, &'static str, &'static str)>,
        );
        let cases: &[Case] = &[
            (
                "http://127.0.0.1:8443/ready",
                Some(("127.0.0.1:8443", "127.0.0.1:8443", "/ready")),
            ),
            (
                "http://localhost/health?x=1",
                Some(("localhost:80", "localhost", "/health?x=1")),
            ),
            ("http://[::1]:9/", Some(("[::1]:9", "[::1]:9", "/"))),
            (
                "http://example.com?q",
                Some(("example.com:80", "example.com", "/?q")),
            ),
            ("https://x/", None),
        ];
        for (url, want) in cases {
            let got = split_url(url);
            let want = want.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()));
            assert_eq!(got, want, "{url}");
        }
    }
}
