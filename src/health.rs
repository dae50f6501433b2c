//! `/health` and `/metrics` server: reads the daemon's state through a `tokio::sync::watch`
//! receiver, and its counters from a [`Metrics`] handle.
//!
//! `GET /health` -> 200 `{"status":"ok","last_sync":"<RFC 3339>","services_exposed":N,"warnings":M}`
//! when the last reconcile succeeded, else 503 `{"status":"failing","reason":"...",...}`.
//! `GET /metrics` -> 200, the Prometheus text format 0.0.4 ([`crate::metrics::render`]):
//! the state gauges come from the same [`HealthState`], so both always agree.
//! Other paths 404, other methods 405 (with `Allow: GET, HEAD`). Request bodies are never
//! read; headers must arrive within a timeout; concurrent connections are capped.
//!
//! Why newcomers are never queued: a health checker that waits behind idle or slow
//! clients misses its deadline and marks the daemon dead. Every connection is accepted
//! at once; when [`MAX_CONNECTIONS`] are already open, the one that has waited longest for
//! a request (accepted or last answered least recently: an idle keep-alive connection,
//! or a client trickling its headers) is closed to make room. A request received makes a
//! connection the most recently used, so a checker that just sent its request is the
//! last one to go. Memory and descriptors stay bounded by the cap.

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};

use crate::metrics::{self, Metrics, Process};

/// Connections open at most; a newcomer beyond it closes the least recently used one.
pub const MAX_CONNECTIONS: usize = 32;

/// A client must send its request headers within this time, and an idle keep-alive
/// connection is closed after it, so slow or idle clients do not linger even when
/// nobody needs their slot.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthState {
    /// `None` while healthy; the reason otherwise.
    pub problem: Option<String>,
    pub last_sync: Option<SystemTime>,
    pub services_exposed: usize,
    pub warnings: usize,
}

impl HealthState {
    pub fn starting() -> HealthState {
        HealthState {
            problem: Some("starting: first sync with Consul not done yet".into()),
            ..HealthState::default()
        }
    }
}

/// Serves until `shutdown` completes, with a registry of its own: `/metrics` then has the
/// state gauges and process figures, and every counter at 0. The daemon calls
/// [`serve_with_metrics`] with the registry its reconciler and client count into.
pub async fn serve(
    listener: TcpListener,
    state: watch::Receiver<HealthState>,
    shutdown: impl Future<Output = ()>,
) {
    serve_with_metrics(listener, state, Metrics::new(), shutdown).await
}

/// Serves `/health` and `/metrics` (counters from `metrics`) until `shutdown` completes.
/// Accept errors are logged and the loop goes on.
pub async fn serve_with_metrics(
    listener: TcpListener,
    state: watch::Receiver<HealthState>,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(
        listener,
        state,
        metrics,
        shutdown,
        Limits {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
        },
    )
    .await
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    max_connections: usize,
    header_read_timeout: Duration,
}

async fn serve_with(
    listener: TcpListener,
    state: watch::Receiver<HealthState>,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
    limits: Limits,
) {
    let slots = Arc::new(Mutex::new(Slots::new(limits.max_connections)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    // Dropping the set at return aborts the connections still open.
    let mut connections = JoinSet::new();
    let mut next_id: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let stream = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "/health: accept failed");
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                    }
                    continue;
                }
            },
        };
        let id = next_id;
        next_id = next_id.wrapping_add(1);
        let state = state.clone();
        let metrics = metrics.clone();
        let touched = slots.clone();
        let connection = builder.serve_connection(
            TokioIo::new(stream),
            hyper::service::service_fn(move |request: Request<Incoming>| {
                lock(&touched).used(id);
                let response = respond(&request, &state, &metrics);
                async move { Ok::<_, Infallible>(response) }
            }),
        );
        let leaving = Leaving {
            slots: slots.clone(),
            id,
        };
        let evicted = {
            // Held while spawning, so the task cannot end (and remove itself) before
            // it is admitted.
            let mut slots = lock(&slots);
            let handle = connections.spawn(async move {
                let _leaving = leaving;
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "/health connection ended with an error");
                }
            });
            slots.admit(id, handle)
        };
        if let Some(victim) = evicted {
            victim.abort();
            // Lets the aborted task drop its socket now, so a burst of accepts never
            // holds more than the cap plus one descriptor.
            tokio::task::yield_now().await;
        }
    }
}

fn lock<H>(slots: &Mutex<Slots<H>>) -> std::sync::MutexGuard<'_, Slots<H>> {
    // The table is consistent after every method, so a panic elsewhere leaves it usable.
    slots.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes a connection from the table when its task ends, however it ends.
struct Leaving {
    slots: Arc<Mutex<Slots<AbortHandle>>>,
    id: u64,
}

impl Drop for Leaving {
    fn drop(&mut self) {
        lock(&self.slots).remove(self.id);
    }
}

/// The open connections, in the order they were last used (accepted, or a request
/// received). Pure: the caller closes the connection whose handle `admit` returns.
#[derive(Debug)]
struct Slots<H> {
    capacity: usize,
    /// A logical clock: bumped on every admit and use, so "least recently used" needs
    /// no wall time and is exact.
    clock: u64,
    open: Vec<Slot<H>>,
}

#[derive(Debug)]
struct Slot<H> {
    id: u64,
    last_used: u64,
    handle: H,
}

impl<H> Slots<H> {
    fn new(capacity: usize) -> Slots<H> {
        Slots {
            capacity: capacity.max(1),
            clock: 0,
            open: Vec::with_capacity(capacity.max(1)),
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Takes connection `id` in as the most recently used. When the table is full, the
    /// least recently used connection leaves it and its handle is returned.
    fn admit(&mut self, id: u64, handle: H) -> Option<H> {
        let evicted = if self.open.len() >= self.capacity {
            self.open
                .iter()
                .enumerate()
                .min_by_key(|(_, slot)| slot.last_used)
                .map(|(i, _)| i)
                .map(|i| self.open.swap_remove(i).handle)
        } else {
            None
        };
        let last_used = self.tick();
        self.open.push(Slot {
            id,
            last_used,
            handle,
        });
        evicted
    }

    /// Connection `id` received a request: it becomes the most recently used.
    fn used(&mut self, id: u64) {
        let now = self.tick();
        if let Some(slot) = self.open.iter_mut().find(|slot| slot.id == id) {
            slot.last_used = now;
        }
    }

    /// Connection `id` ended (no-op when it was already evicted).
    fn remove(&mut self, id: u64) {
        self.open.retain(|slot| slot.id != id);
    }

    #[cfg(test)]
    fn ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.open.iter().map(|slot| slot.id).collect();
        ids.sort_unstable();
        ids
    }
}

#[derive(Serialize)]
struct Healthy {
    status: &'static str,
    last_sync: Option<String>,
    services_exposed: usize,
    warnings: usize,
}

#[derive(Serialize)]
struct Failing<'a> {
    status: &'static str,
    reason: &'a str,
    last_sync: Option<String>,
    services_exposed: usize,
    warnings: usize,
}

#[derive(Serialize)]
struct ErrorBody {
    error: &'static str,
}

fn respond(
    request: &Request<Incoming>,
    state: &watch::Receiver<HealthState>,
    metrics: &Metrics,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let readable = request.method() == Method::GET || request.method() == Method::HEAD;
    if path == "/metrics" && readable {
        // /proc is read before the state is borrowed, so the watch is held only to copy it.
        let process = Process::read();
        let health = state.borrow().clone();
        let text = metrics::render(&metrics.snapshot(), &health, &process);
        return finish(
            request,
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            Bytes::from(text),
        );
    }
    let (status, body) = if path != "/health" && path != "/metrics" {
        (
            StatusCode::NOT_FOUND,
            json(&ErrorBody { error: "not found" }),
        )
    } else if !readable {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            json(&ErrorBody {
                error: "method not allowed",
            }),
        )
    } else {
        let state = state.borrow();
        let last_sync = state.last_sync.map(rfc3339);
        match &state.problem {
            None => (
                StatusCode::OK,
                json(&Healthy {
                    status: "ok",
                    last_sync,
                    services_exposed: state.services_exposed,
                    warnings: state.warnings,
                }),
            ),
            Some(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json(&Failing {
                    status: "failing",
                    reason,
                    last_sync,
                    services_exposed: state.services_exposed,
                    warnings: state.warnings,
                }),
            ),
        }
    };
    finish(request, status, "application/json", body)
}

fn finish(
    request: &Request<Incoming>,
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<Full<Bytes>> {
    // hyper sends the headers of a HEAD answer (Content-Length included) but no body.
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    if !request.body().is_end_stream() {
        // The body is never read; closing spares hyper from draining it to find the
        // next request.
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn json<T: Serialize>(value: &T) -> Bytes {
    match serde_json::to_vec(value) {
        Ok(mut v) => {
            v.push(b'\n');
            Bytes::from(v)
        }
        // Our types only hold strings and numbers, so this cannot happen; stay valid JSON.
        Err(_) => Bytes::from_static(b"{\"status\":\"failing\"}\n"),
    }
}

/// RFC 3339 UTC with seconds (`2026-11-22T20:15:00Z`), without a date crate.
pub fn rfc3339(t: SystemTime) -> String {
    let secs: i64 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        // Before the epoch: round down to the whole second.
        Err(e) => {
            let before = e.duration();
            let whole = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            -whole - i64::from(before.subsec_nanos() > 0)
        }
    };
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Days since 1970-01-01 -> (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;

    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    struct Server {
        addr: SocketAddr,
        state: watch::Sender<HealthState>,
        metrics: Metrics,
        stop: Option<oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<()>,
    }

    async fn start(initial: HealthState, limits: Limits) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (state, rx) = watch::channel(initial);
        let (stop, stopped) = oneshot::channel::<()>();
        let metrics = Metrics::new();
        let task = tokio::spawn(serve_with(
            listener,
            rx,
            metrics.clone(),
            async move {
                let _ = stopped.await;
            },
            limits,
        ));
        Server {
            addr,
            state,
            metrics,
            stop: Some(stop),
            task,
        }
    }

    const DEFAULT_LIMITS: Limits = Limits {
        max_connections: MAX_CONNECTIONS,
        header_read_timeout: HEADER_READ_TIMEOUT,
    };

    struct Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Answer {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// Sends `request` raw and reads until the server closes (requests say `Connection: close`).
    async fn exchange(addr: SocketAddr, request: &str) -> Answer {
        let run = async {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(request.as_bytes()).await.expect("write");
            let mut raw = Vec::new();
            s.read_to_end(&mut raw).await.expect("read");
            raw
        };
        let raw = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("answered in time");
        let text = String::from_utf8(raw).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        let mut lines = head.split("\r\n");
        let status = lines.next().expect("status line")[9..12]
            .parse()
            .expect("status");
        let headers = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Answer {
            status,
            headers,
            body: body.to_string(),
        }
    }

    fn get(path: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    }

    #[test]
    fn healthy_and_failing_bodies() {
        rt().block_on(async {
            let server = start(HealthState::starting(), DEFAULT_LIMITS).await;
            let a = exchange(server.addr, &get("/health")).await;
            assert_eq!(a.status, 503);
            assert_eq!(a.header("content-type"), Some("application/json"));
            assert_eq!(
                a.body,
                "{\"status\":\"failing\",\"reason\":\"starting: first sync with Consul not done yet\",\"last_sync\":null,\"services_exposed\":0,\"warnings\":0}\n"
            );

            let synced = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            server.state.send_replace(HealthState {
                problem: None,
                last_sync: Some(synced),
                services_exposed: 3,
                warnings: 1,
            });
            let a = exchange(server.addr, &get("/health?verbose")).await;
            assert_eq!(a.status, 200);
            assert_eq!(
                a.body,
                "{\"status\":\"ok\",\"last_sync\":\"2023-11-14T22:13:20Z\",\"services_exposed\":3,\"warnings\":1}\n"
            );

            server.state.send_replace(HealthState {
                problem: Some("PUT /v1/config: 403 Permission denied".into()),
                last_sync: Some(synced),
                services_exposed: 3,
                warnings: 0,
            });
            let a = exchange(server.addr, &get("/health")).await;
            assert_eq!(a.status, 503);
            assert_eq!(
                a.body,
                "{\"status\":\"failing\",\"reason\":\"PUT /v1/config: 403 Permission denied\",\"last_sync\":\"2023-11-14T22:13:20Z\",\"services_exposed\":3,\"warnings\":0}\n"
            );
        });
    }

    #[test]
    fn other_paths_404_other_methods_405_head_has_no_body() {
        rt().block_on(async {
            let healthy = HealthState {
                problem: None,
                last_sync: Some(UNIX_EPOCH),
                services_exposed: 0,
                warnings: 0,
            };
            let server = start(healthy, DEFAULT_LIMITS).await;
            let cases = [
                ("GET /", 404, None, "{\"error\":\"not found\"}\n"),
                ("GET /healthz", 404, None, "{\"error\":\"not found\"}\n"),
                (
                    "POST /health",
                    405,
                    Some("GET, HEAD"),
                    "{\"error\":\"method not allowed\"}\n",
                ),
                (
                    "DELETE /health",
                    405,
                    Some("GET, HEAD"),
                    "{\"error\":\"method not allowed\"}\n",
                ),
                ("HEAD /health", 200, None, ""),
            ];
            for (line, status, allow, body) in cases {
                let a = exchange(
                    server.addr,
                    &format!("{line} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
                )
                .await;
                assert_eq!(a.status, status, "{line}");
                assert_eq!(a.header("allow"), allow, "{line}");
                assert_eq!(a.body, body, "{line}");
            }
        });
    }

    #[test]
    fn metrics_in_the_text_format_from_the_state_and_the_registry() {
        rt().block_on(async {
            let server = start(HealthState::starting(), DEFAULT_LIMITS).await;
            let a = exchange(server.addr, &get("/metrics")).await;
            assert_eq!(a.status, 200);
            assert_eq!(
                a.header("content-type"),
                Some("text/plain; version=0.0.4; charset=utf-8")
            );
            assert_eq!(a.header("cache-control"), Some("no-store"));
            assert!(a.body.contains("\nism_up 0\n"), "{}", a.body);
            assert!(a.body.contains("\nism_reconciles_total{result=\"ok\"} 0\n"));
            assert!(a.body.contains("\nprocess_open_fds "), "{}", a.body);

            server.state.send_replace(HealthState {
                problem: None,
                last_sync: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
                services_exposed: 4,
                warnings: 1,
            });
            server.metrics.reconciled(true);
            server.metrics.watch_error("catalog");
            let a = exchange(server.addr, &get("/metrics")).await;
            for line in [
                "\nism_up 1\n",
                "\nism_exposed_services 4\n",
                "\nism_warnings 1\n",
                "\nism_last_sync_timestamp_seconds 1700000000\n",
                "\nism_reconciles_total{result=\"ok\"} 1\n",
                "\nism_watch_errors_total{watch=\"catalog\"} 1\n",
            ] {
                assert!(a.body.contains(line), "{line:?} missing:\n{}", a.body);
            }

            let cases = [
                ("HEAD /metrics", 200, None, ""),
                (
                    "POST /metrics",
                    405,
                    Some("GET, HEAD"),
                    "{\"error\":\"method not allowed\"}\n",
                ),
                ("GET /metrics/x", 404, None, "{\"error\":\"not found\"}\n"),
            ];
            for (line, status, allow, body) in cases {
                let a = exchange(
                    server.addr,
                    &format!("{line} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
                )
                .await;
                assert_eq!(a.status, status, "{line}");
                assert_eq!(a.header("allow"), allow, "{line}");
                assert_eq!(a.body, body, "{line}");
            }
        });
    }

    #[test]
    fn request_with_a_body_is_answered_unread_and_closed() {
        rt().block_on(async {
            let server = start(HealthState::starting(), DEFAULT_LIMITS).await;
            // Claims a large body and sends only part of it, without closing: the server
            // must answer without waiting for it, and close.
            let run = async {
                let mut s = TcpStream::connect(server.addr).await.expect("connect");
                s.write_all(
                    b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\npartial",
                )
                .await
                .expect("write");
                let mut raw = Vec::new();
                s.read_to_end(&mut raw).await.expect("read");
                String::from_utf8(raw).expect("utf-8")
            };
            let text = tokio::time::timeout(Duration::from_secs(10), run)
                .await
                .expect("answered and closed without reading the body");
            assert!(text.starts_with("HTTP/1.1 405"), "{text}");
            assert!(
                text.to_ascii_lowercase().contains("connection: close"),
                "{text}"
            );
        });
    }

    #[test]
    fn keep_alive_serves_several_requests_on_one_connection() {
        rt().block_on(async {
            let server = start(HealthState::starting(), DEFAULT_LIMITS).await;
            let mut s = TcpStream::connect(server.addr).await.expect("connect");
            let req = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
            let mut seen = String::new();
            let mut buf = vec![0u8; 4096];
            for i in 1..=2 {
                s.write_all(req.as_bytes()).await.expect("write");
                let read = async {
                    while seen.matches("HTTP/1.1 503").count() < i || !seen.ends_with("}\n") {
                        let n = s.read(&mut buf).await.expect("read");
                        assert!(n > 0, "closed early: {seen}");
                        seen.push_str(std::str::from_utf8(&buf[..n]).expect("utf-8"));
                    }
                };
                tokio::time::timeout(Duration::from_secs(10), read)
                    .await
                    .expect("answer");
            }
            assert_eq!(seen.matches("HTTP/1.1 503").count(), 2);
        });
    }

    /// Waits until the server closes `s` (EOF or reset), within 5 s.
    async fn closed_by_server(s: &mut TcpStream) -> bool {
        let mut buf = [0u8; 1024];
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }

    /// Opens a connection, asks for /health on it (keep-alive) and reads the answer; the
    /// connection is returned still open, so it keeps its slot.
    async fn ask(addr: SocketAddr) -> TcpStream {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        ask_again(&mut s).await;
        s
    }

    /// Asks for /health on `s` and reads the whole (503, JSON) answer.
    async fn ask_again(s: &mut TcpStream) {
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let read = async {
            while !seen.ends_with(b"}\n") {
                let n = s.read(&mut buf).await.expect("read");
                assert!(n > 0, "closed before the answer");
                seen.extend_from_slice(&buf[..n]);
            }
        };
        tokio::time::timeout(Duration::from_secs(1), read)
            .await
            .expect("answered within 1 s");
        assert!(seen.starts_with(b"HTTP/1.1 503"));
    }

    #[test]
    fn slow_clients_time_out_when_nobody_needs_their_slot() {
        rt().block_on(async {
            let limits = Limits {
                max_connections: 4,
                header_read_timeout: Duration::from_millis(300),
            };
            let server = start(HealthState::starting(), limits).await;
            let mut slow = TcpStream::connect(server.addr).await.expect("connect");
            slow.write_all(b"GET /hea").await.expect("write");
            let started = Instant::now();
            assert!(
                closed_by_server(&mut slow).await,
                "slow client still connected"
            );
            assert!(started.elapsed() >= Duration::from_millis(200));
        });
    }

    #[test]
    fn a_newcomer_at_a_full_server_is_answered_at_once_and_the_oldest_waiter_goes() {
        rt().block_on(async {
            let limits = Limits {
                max_connections: 2,
                // Long enough that only eviction can explain what follows.
                header_read_timeout: Duration::from_secs(60),
            };
            let server = start(HealthState::starting(), limits).await;
            // Fill every slot: an idle connection first, then one trickling its headers.
            let mut idle = TcpStream::connect(server.addr).await.expect("connect");
            let mut slow = TcpStream::connect(server.addr).await.expect("connect");
            slow.write_all(b"GET /hea").await.expect("write");
            // Each newcomer is answered at once (within 1 s), and stays connected...
            let _first = ask(server.addr).await;
            // ...having taken the idle connection's slot (the oldest)...
            assert!(closed_by_server(&mut idle).await, "idle connection kept");
            // ...then the slow client's.
            let _second = ask(server.addr).await;
            assert!(closed_by_server(&mut slow).await, "slow client kept");
        });
    }

    #[test]
    fn a_keep_alive_client_that_just_asked_outlives_older_idle_ones() {
        rt().block_on(async {
            let limits = Limits {
                max_connections: 3,
                header_read_timeout: Duration::from_secs(60),
            };
            let server = start(HealthState::starting(), limits).await;
            let mut checker = TcpStream::connect(server.addr).await.expect("connect");
            let mut idle = Vec::new();
            for _ in 0..2 {
                idle.push(TcpStream::connect(server.addr).await.expect("connect"));
            }
            // The checker, the oldest connection, asks: now it is the most recent.
            ask_again(&mut checker).await;
            // Two newcomers that stay: the two idle connections go, the checker stays.
            let _newcomers = [ask(server.addr).await, ask(server.addr).await];
            for mut s in idle {
                assert!(closed_by_server(&mut s).await, "idle connection kept");
            }
            ask_again(&mut checker).await;
        });
    }

    #[test]
    fn a_flood_of_idle_connections_does_not_delay_a_newcomer() {
        rt().block_on(async {
            let server = start(HealthState::starting(), DEFAULT_LIMITS).await;
            let mut idle = Vec::new();
            for _ in 0..200 {
                idle.push(TcpStream::connect(server.addr).await.expect("connect"));
            }
            let started = Instant::now();
            let a = exchange(server.addr, &get("/health")).await;
            assert_eq!(a.status, 503);
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{:?}",
                started.elapsed()
            );
        });
    }

    #[test]
    fn slots_evict_the_least_recently_used() {
        enum Op {
            Admit(u64),
            Used(u64),
            Remove(u64),
        }
        use Op::*;
        /// (capacity, operations, ids left open, handles evicted in order)
        type Case = (usize, Vec<Op>, Vec<u64>, Vec<u64>);
        let cases: Vec<Case> = vec![
            (2, vec![Admit(1), Admit(2)], vec![1, 2], vec![]),
            // Full: the oldest admitted goes.
            (2, vec![Admit(1), Admit(2), Admit(3)], vec![2, 3], vec![1]),
            // A request makes a connection the most recent.
            (
                2,
                vec![Admit(1), Admit(2), Used(1), Admit(3)],
                vec![1, 3],
                vec![2],
            ),
            // A removed connection frees its slot: nobody is evicted.
            (
                2,
                vec![Admit(1), Admit(2), Remove(1), Admit(3)],
                vec![2, 3],
                vec![],
            ),
            // Using or removing an unknown (already evicted) id changes nothing.
            (
                2,
                vec![Admit(1), Admit(2), Admit(3), Used(1), Remove(1), Admit(4)],
                vec![3, 4],
                vec![1, 2],
            ),
            // A stream of newcomers rotates through in arrival order.
            (
                2,
                vec![Admit(1), Admit(2), Admit(3), Admit(4), Admit(5)],
                vec![4, 5],
                vec![1, 2, 3],
            ),
            // Capacity 0 is taken as 1: the newcomer always gets in.
            (0, vec![Admit(1), Admit(2)], vec![2], vec![1]),
        ];
        for (n, (capacity, ops, open, evicted)) in cases.into_iter().enumerate() {
            let mut slots = Slots::new(capacity);
            let mut gone = Vec::new();
            for op in ops {
                match op {
                    Admit(id) => gone.extend(slots.admit(id, id)),
                    Used(id) => slots.used(id),
                    Remove(id) => slots.remove(id),
                }
            }
            assert_eq!(slots.ids(), open, "case {n}");
            assert_eq!(gone, evicted, "case {n}");
        }
    }

    #[test]
    fn one_slow_client_does_not_delay_others() {
        rt().block_on(async {
            let server = start(HealthState::starting(), DEFAULT_LIMITS).await;
            let mut slow = TcpStream::connect(server.addr).await.expect("connect");
            slow.write_all(b"GET /health HTTP/1.1\r\nHo")
                .await
                .expect("write");
            let started = Instant::now();
            let a = exchange(server.addr, &get("/health")).await;
            assert_eq!(a.status, 503);
            assert!(
                started.elapsed() < HEADER_READ_TIMEOUT,
                "waited for the slow client"
            );
        });
    }

    #[test]
    fn serve_returns_on_shutdown_and_stops_accepting() {
        rt().block_on(async {
            let mut server = start(HealthState::starting(), DEFAULT_LIMITS).await;
            // An idle keep-alive connection must not keep serve from returning.
            let _idle = TcpStream::connect(server.addr).await.expect("connect");
            let _ = server.stop.take().expect("stop").send(());
            tokio::time::timeout(Duration::from_secs(5), &mut server.task)
                .await
                .expect("serve returned")
                .expect("no panic");
            assert!(TcpStream::connect(server.addr).await.is_err());
        });
    }

    #[test]
    fn rfc3339_of_known_instants() {
        let at = |secs: i64| {
            if secs >= 0 {
                UNIX_EPOCH + Duration::from_secs(secs as u64)
            } else {
                UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            }
        };
        let cases = [
            (at(0), "1970-01-01T00:00:00Z"),
            (at(951_782_400), "2000-02-29T00:00:00Z"),
            (at(951_782_400 - 1), "2000-02-28T23:59:59Z"),
            (at(1_700_000_000), "2023-11-14T22:13:20Z"),
            (at(1_795_378_500), "2026-11-22T20:15:00Z"),
            (at(4_107_542_400), "2100-03-01T00:00:00Z"),
            (at(4_107_542_400 - 86_400), "2100-02-28T00:00:00Z"),
            (at(-1), "1969-12-31T23:59:59Z"),
            (at(-2_208_988_800), "1900-01-01T00:00:00Z"),
            (
                at(1_700_000_000) + Duration::from_millis(999),
                "2023-11-14T22:13:20Z",
            ),
            (
                UNIX_EPOCH - Duration::from_millis(500),
                "1969-12-31T23:59:59Z",
            ),
        ];
        for (t, want) in cases {
            assert_eq!(rfc3339(t), want);
        }
    }
}
