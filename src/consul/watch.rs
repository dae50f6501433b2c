//! Blocking-query watch (consul-api §1): one endpoint, one connection, Consul's index rules.
//!
//! - first request without an index (immediate answer), then `index=<last>&wait=<wait>`;
//! - index went backwards: reset to 0 and read again at once; never send 0 after the
//!   first answer (floor 1); an unchanged index (wait expired) is not reported;
//! - a token bucket limits how fast requests are re-issued under churn;
//! - after an error, the next request waits a jittered exponential backoff (cap 30 s);
//! - the client timeout is `wait + wait/16 + margin`.
//!
//! Rate limit choice: a bucket of 8 tokens refilled one per 250 ms. Consul's docs suggest
//! a burst of 2 degrading to one request per 15 s, but the daemon debounces changes
//! itself and must react to a tag edit within a second; at most 4 requests/s per watch
//! (a handful of watches) is negligible load for an agent, and it still turns a
//! misbehaving endpoint that answers at once with an unchanged index into a slow loop
//! rather than a hot one. The burst of 8 lets index resets and short bursts of changes
//! through without delay.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::consul::api::{decode_error, endpoint};
use crate::consul::client::{ApiPath, Client, Connection, ConsulError, Response, REQUEST_TIMEOUT};
use crate::consul::retry::{Backoff, ProblemLog};

/// Blocking wait asked of Consul.
pub const WAIT: Duration = Duration::from_secs(300);

/// Added to `wait + wait/16` (Consul's jitter) for the client timeout: network and
/// server scheduling slack.
const TIMEOUT_MARGIN: Duration = Duration::from_secs(10);

const BUCKET_BURST: u32 = 8;
const BUCKET_REFILL: Duration = Duration::from_millis(250);

pub struct BlockingWatch {
    connection: Connection,
    path: ApiPath,
    /// `GET /path`, for errors raised here.
    endpoint: String,
    wait: Duration,
    /// Index sent with the next request; 0 means a non-blocking read.
    index: u64,
    /// Index of the last answer returned by [`BlockingWatch::next`].
    reported: Option<u64>,
    bucket: TokenBucket,
    backoff: Backoff,
    /// Set by a failure: how long to wait before the next request.
    pending_backoff: Option<Duration>,
}

impl BlockingWatch {
    /// `path` is the endpoint with its own parameters, e.g.
    /// `/v1/catalog/services?filter=...`; `index`/`wait` are appended.
    pub fn new(connection: Connection, path: impl Into<ApiPath>) -> BlockingWatch {
        BlockingWatch::with_wait(connection, path, WAIT)
    }

    /// As [`BlockingWatch::new`] with another blocking wait (tests, short-lived reads).
    pub fn with_wait(
        connection: Connection,
        path: impl Into<ApiPath>,
        wait: Duration,
    ) -> BlockingWatch {
        let path = path.into();
        BlockingWatch {
            endpoint: endpoint(&hyper::Method::GET, path.as_str()),
            connection,
            path,
            wait,
            index: 0,
            reported: None,
            bucket: TokenBucket::new(BUCKET_BURST, BUCKET_REFILL, Instant::now()),
            backoff: Backoff::new(),
            pending_backoff: None,
        }
    }

    /// The next answer whose index differs from the last one reported (the first call
    /// answers at once), raw. See [`BlockingWatch::next_with`].
    pub async fn next(&mut self) -> Result<Response, ConsulError> {
        self.next_with(|response| Ok(response.clone()))
            .await
            .map(|(response, _)| response)
    }

    /// The next answer whose index differs from the last one reported (the first call
    /// answers at once), decoded by `decode`, with its index. On error, returns the
    /// error; the following call first waits the backoff. Never returns the same index
    /// twice in a row, except right after an error (see `failed`).
    ///
    /// Decoding is part of the answer: a body that does not decode (truncated JSON, an
    /// HTML page from a proxy) fails the request like a refused connection would. The
    /// index of that answer is not taken, so the change it carried is read again
    /// (non-blocking, after the backoff) instead of being waited past.
    pub async fn next_with<T>(
        &mut self,
        decode: impl Fn(&Response) -> Result<T, String>,
    ) -> Result<(T, u64), ConsulError> {
        loop {
            if let Some(delay) = self.pending_backoff.take() {
                tokio::time::sleep(delay).await;
            }
            self.bucket.take().await;
            let (url, timeout) = self.request_target();
            let url = ApiPath::new(self.path.template(), url);
            let response = match self.connection.get(url, timeout).await {
                Ok(response) => response,
                Err(e) => return Err(self.failed(e)),
            };
            let Some(index) = response.index else {
                // Without an index we could only poll in a loop: treat it as a fault.
                let message = format!(
                    "status {} without an X-Consul-Index header",
                    response.status
                );
                return Err(self.failed(decode_error(&self.endpoint, message)));
            };
            if index < self.index {
                // Snapshot restore or similar: the old index would block for a full wait
                // every time. Start over with a non-blocking read.
                tracing::debug!(endpoint = %self.endpoint, sent = self.index, got = index, "index went backwards; re-reading");
                self.backoff.reset();
                self.index = 0;
                continue;
            }
            if self.reported == Some(index) {
                // The wait expired with nothing new: nothing to decode.
                self.backoff.reset();
                self.index = index.max(1);
                continue;
            }
            let value = match decode(&response) {
                Ok(value) => value,
                Err(message) => return Err(self.failed(decode_error(&self.endpoint, message))),
            };
            self.backoff.reset();
            self.index = index.max(1);
            self.reported = Some(index);
            return Ok((value, index));
        }
    }

    /// The URL and client timeout of the next request.
    fn request_target(&self) -> (String, Duration) {
        if self.index == 0 {
            // Non-blocking: Consul answers at once, so the ordinary timeout applies.
            return (self.path.as_str().to_owned(), REQUEST_TIMEOUT);
        }
        let sep = if self.path.as_str().contains('?') {
            '&'
        } else {
            '?'
        };
        let url = format!(
            "{}{sep}index={}&wait={}",
            self.path.as_str(),
            self.index,
            go_duration(self.wait)
        );
        (url, self.wait + self.wait / 16 + TIMEOUT_MARGIN)
    }

    /// After a failure the caller holds an error, not the data: the next read is
    /// non-blocking and its answer is reported even when the index did not move, so the
    /// caller learns at once that the endpoint works again (otherwise it would wait for
    /// the next change, possibly for hours, before clearing the error).
    fn failed(&mut self, e: ConsulError) -> ConsulError {
        self.pending_backoff = Some(self.backoff.next_delay());
        self.index = 0;
        self.reported = None;
        e
    }
}

/// What one watch has seen: the latest decoded value (None until the first read) and
/// the current problem reading it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed<T> {
    pub value: Option<T>,
    pub problem: Option<String>,
    /// `X-Consul-Index` of the answer `value` came from. Updated silently: a new index
    /// with the same value wakes no one.
    pub index: Option<u64>,
}

impl<T> Default for Observed<T> {
    fn default() -> Self {
        Observed {
            value: None,
            problem: None,
            index: None,
        }
    }
}

/// Runs a blocking watch of `path` in a task: each answer is decoded, and published only
/// when the value or the problem changed, then `changed` is notified (one permit: any
/// number of changes before the reader looks are one wake-up). Each failed read counts
/// in `ism_watch_errors_total` under [`watch_name`] of `activity`.
pub fn spawn<T, D>(
    client: &Client,
    activity: &'static str,
    path: ApiPath,
    decode: D,
    changed: Arc<Notify>,
) -> (watch::Receiver<Observed<T>>, JoinHandle<()>)
where
    T: PartialEq + Send + Sync + 'static,
    D: Fn(&Response) -> Result<T, String> + Send + Sync + 'static,
{
    spawn_incremental(client, activity, path, move |r, _| decode(r), changed)
}

/// [`spawn`] with a decoder that also sees the value published before (None until the
/// first read), to share what did not change with it.
pub fn spawn_incremental<T, D>(
    client: &Client,
    activity: &'static str,
    path: ApiPath,
    decode: D,
    changed: Arc<Notify>,
) -> (watch::Receiver<Observed<T>>, JoinHandle<()>)
where
    T: PartialEq + Send + Sync + 'static,
    D: Fn(&Response, Option<&T>) -> Result<T, String> + Send + Sync + 'static,
{
    let (tx, rx) = watch::channel(Observed::default());
    let connection = client.connection(activity);
    let task = tokio::spawn(run(connection, activity, path, decode, tx, changed));
    (rx, task)
}

/// The loop of a watch task (see [`spawn`]), for a watch that must first decide what to
/// watch on its own connection.
pub async fn run<T, D>(
    connection: Connection,
    activity: &'static str,
    path: ApiPath,
    decode: D,
    tx: watch::Sender<Observed<T>>,
    changed: Arc<Notify>,
) where
    T: PartialEq,
    D: Fn(&Response, Option<&T>) -> Result<T, String>,
{
    let (metrics, watch) = (connection.metrics().clone(), watch_name(activity));
    let mut blocking = BlockingWatch::new(connection, path);
    {
        let mut log = ProblemLog::new(activity);
        loop {
            let decode = |response: &Response| decode(response, tx.borrow().value.as_ref());
            let modified = match blocking.next_with(decode).await {
                Ok((value, index)) => {
                    log.ok();
                    tx.send_if_modified(|observed| {
                        observed.index = Some(index);
                        let mut modified = observed.problem.take().is_some();
                        if observed.value.as_ref() != Some(&value) {
                            observed.value = Some(value);
                            modified = true;
                        }
                        modified
                    })
                }
                Err(err) => {
                    log.failed(&err);
                    metrics.watch_error(watch);
                    let message = err.to_string();
                    tx.send_if_modified(|observed| {
                        if observed.problem.as_deref() == Some(message.as_str()) {
                            return false;
                        }
                        observed.problem = Some(message);
                        true
                    })
                }
            };
            if modified {
                changed.notify_one();
            }
        }
    }
}

/// The `watch` label of a watch's activity (`"watch catalog services"` -> `"catalog"`):
/// a fixed, small set whatever the activity's wording, `"other"` for one not known here.
pub fn watch_name(activity: &str) -> &'static str {
    // Most specific first: "http-route entries" is about routes, not the gateway's entry.
    const NAMES: [(&str, &str); 6] = [
        ("catalog", "catalog"),
        ("service-defaults", "service_defaults"),
        ("proxy-defaults", "proxy_defaults"),
        ("intentions", "intentions"),
        ("route", "routes"),
        ("entry", "entry"),
    ];
    NAMES
        .iter()
        .find(|(word, _)| activity.contains(word))
        .map_or("other", |(_, name)| name)
}

/// Consul parses `wait` with Go's `time.ParseDuration`.
fn go_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis().max(1))
    }
}

/// Requests allowed now: `burst` at once, then one per `refill`.
struct TokenBucket {
    tokens: u32,
    burst: u32,
    refill: Duration,
    /// When the last token was credited (the bucket is full when `tokens == burst`).
    last: Instant,
}

impl TokenBucket {
    fn new(burst: u32, refill: Duration, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: burst,
            burst,
            refill,
            last: now,
        }
    }

    /// Takes a token, or says how long until the next one.
    fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let earned = now.saturating_duration_since(self.last).as_nanos() / self.refill.as_nanos();
        let missing = self.burst - self.tokens;
        if earned >= u128::from(missing) {
            self.tokens = self.burst;
            self.last = now;
        } else if earned > 0 {
            // earned < missing <= burst: the cast and the multiplication are small.
            let earned = earned as u32;
            self.tokens += earned;
            self.last += self.refill * earned;
        }
        if self.tokens > 0 {
            self.tokens -= 1;
            Ok(())
        } else {
            Err((self.last + self.refill).saturating_duration_since(now))
        }
    }

    async fn take(&mut self) {
        while let Err(wait) = self.try_take(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consul::client::test_server::{reply, tcp_config, Step, TestServer};
    use crate::consul::client::{Client, ErrorKind};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    async fn watch(script: Vec<Step>, path: &'static str) -> (TestServer, BlockingWatch) {
        let server = TestServer::start(script).await;
        let client = Client::new(&tcp_config(server.addr)).expect("client");
        let watch = BlockingWatch::new(client.connection("test"), path);
        (server, watch)
    }

    fn uris(server: &mut TestServer) -> Vec<String> {
        server.drain().into_iter().map(|s| s.uri).collect()
    }

    #[test]
    fn first_answer_at_once_even_404_then_blocking_and_unchanged_index_skipped() {
        rt().block_on(async {
            let (mut server, mut w) = watch(
                vec![
                    reply(404, Some(5), "Config entry not found"),
                    reply(200, Some(5), "{}"),
                    reply(200, Some(6), "{\"Config\":{}}"),
                ],
                "/v1/config/proxy-defaults/global",
            )
            .await;
            let first = w.next().await.expect("first");
            assert_eq!((first.status, first.index), (404, Some(5)));
            let second = w.next().await.expect("second");
            assert_eq!((second.status, second.index), (200, Some(6)));
            assert_eq!(&second.body[..], b"{\"Config\":{}}");
            assert_eq!(
                uris(&mut server),
                vec![
                    "/v1/config/proxy-defaults/global",
                    "/v1/config/proxy-defaults/global?index=5&wait=300s",
                    "/v1/config/proxy-defaults/global?index=5&wait=300s",
                ]
            );
        });
    }

    #[test]
    fn index_going_backwards_resets_and_re_reads_at_once() {
        rt().block_on(async {
            let (mut server, mut w) = watch(
                vec![
                    reply(200, Some(10), "a"),
                    reply(200, Some(4), "stale"),
                    reply(200, Some(4), "b"),
                    reply(200, Some(5), "c"),
                ],
                "/v1/catalog/services?filter=ServiceKind%20%3D%3D%20%22%22",
            )
            .await;
            assert_eq!(w.next().await.expect("first").index, Some(10));
            let after_reset = w.next().await.expect("after reset");
            assert_eq!(
                (after_reset.index, &after_reset.body[..]),
                (Some(4), &b"b"[..])
            );
            assert_eq!(w.next().await.expect("third").index, Some(5));
            let f = "/v1/catalog/services?filter=ServiceKind%20%3D%3D%20%22%22";
            assert_eq!(
                uris(&mut server),
                vec![
                    f.to_string(),
                    format!("{f}&index=10&wait=300s"),
                    f.to_string(),
                    format!("{f}&index=4&wait=300s"),
                ]
            );
        });
    }

    #[test]
    fn index_zero_is_never_sent_after_the_first_answer() {
        rt().block_on(async {
            let (mut server, mut w) = watch(
                vec![reply(200, Some(0), "a"), reply(200, Some(1), "b")],
                "/v1/config/service-defaults",
            )
            .await;
            assert_eq!(w.next().await.expect("first").index, Some(0));
            assert_eq!(w.next().await.expect("second").index, Some(1));
            assert_eq!(
                uris(&mut server),
                vec![
                    "/v1/config/service-defaults",
                    "/v1/config/service-defaults?index=1&wait=300s",
                ]
            );
        });
    }

    #[test]
    fn after_an_error_the_unchanged_answer_is_reported_at_once() {
        rt().block_on(async {
            let (mut server, mut w) = watch(
                vec![
                    reply(200, Some(7), "a"),
                    reply(500, None, "No cluster leader"),
                    reply(200, Some(7), "a"),
                ],
                "/v1/catalog/services",
            )
            .await;
            assert_eq!(w.next().await.expect("first").index, Some(7));
            w.next().await.expect_err("500");
            // Same index as before the error: still an answer, so the error clears.
            assert_eq!(w.next().await.expect("recovered").index, Some(7));
            let uris = uris(&mut server);
            assert_eq!(
                uris.last().map(String::as_str),
                Some("/v1/catalog/services"),
                "the read after an error does not block: {uris:?}"
            );
        });
    }

    #[test]
    fn error_then_backoff_then_success() {
        rt().block_on(async {
            let (mut server, mut w) = watch(
                vec![
                    reply(500, None, "No cluster leader"),
                    reply(200, Some(3), "a"),
                    reply(200, Some(4), "b"),
                ],
                "/v1/catalog/services",
            )
            .await;
            let err = w.next().await.expect_err("500");
            assert_eq!(
                err.to_string(),
                "GET /v1/catalog/services: 500 No cluster leader"
            );
            let started = Instant::now();
            assert_eq!(w.next().await.expect("recovered").index, Some(3));
            let waited = started.elapsed();
            // First backoff: nominal 250 ms with equal jitter, so at least 125 ms.
            assert!(
                waited >= Duration::from_millis(125) && waited < Duration::from_secs(5),
                "{waited:?}"
            );
            // Success reset the backoff: the next request is not delayed by it.
            assert!(w.pending_backoff.is_none());
            assert_eq!(w.backoff.attempt, 0);
            assert_eq!(w.next().await.expect("next").index, Some(4));
            assert_eq!(uris(&mut server).len(), 3);
        });
    }

    #[test]
    fn unchanged_answers_are_rate_limited_by_the_bucket() {
        rt().block_on(async {
            // A server that ignores `wait` and answers at once with the same index.
            let mut script = vec![reply(200, Some(5), "a"); 11];
            script.push(reply(200, Some(6), "b"));
            let (mut server, mut w) = watch(script, "/v1/catalog/services").await;
            let started = Instant::now();
            assert_eq!(w.next().await.expect("first").index, Some(5));
            assert_eq!(w.next().await.expect("changed").index, Some(6));
            let took = started.elapsed();
            // 12 requests, 8 from the burst: the other 4 wait a refill each.
            assert_eq!(server.drain().len(), 12);
            assert!(
                took >= Duration::from_millis(950) && took < Duration::from_secs(5),
                "{took:?}"
            );
        });
    }

    #[test]
    fn answer_without_index_is_an_error_not_a_poll_loop() {
        rt().block_on(async {
            let (_server, mut w) =
                watch(vec![reply(404, None, "Invalid URL path")], "/v1/nope?x=1").await;
            let err = w.next().await.expect_err("no index");
            assert_eq!(err.endpoint, "GET /v1/nope");
            assert!(matches!(err.kind, ErrorKind::Decode(_)), "{err:?}");
            assert!(w.pending_backoff.is_some());
        });
    }

    #[test]
    fn request_target_and_timeout_follow_the_index() {
        rt().block_on(async {
            let server = TestServer::start(vec![]).await;
            let client = Client::new(&tcp_config(server.addr)).expect("client");
            let mut w = BlockingWatch::new(client.connection("t"), "/v1/catalog/services");
            assert_eq!(
                w.request_target(),
                ("/v1/catalog/services".to_string(), REQUEST_TIMEOUT)
            );
            w.index = 42;
            assert_eq!(
                w.request_target(),
                (
                    "/v1/catalog/services?index=42&wait=300s".to_string(),
                    Duration::from_millis(300_000 + 18_750 + 10_000)
                )
            );
            let mut short = BlockingWatch::with_wait(
                client.connection("t"),
                "/v1/x?a=b",
                Duration::from_millis(1500),
            );
            short.index = 7;
            assert_eq!(short.request_target().0, "/v1/x?a=b&index=7&wait=1500ms");
        });
    }

    #[test]
    fn watch_names_are_a_small_fixed_set() {
        let cases = [
            ("watch catalog services", "catalog"),
            ("watch service-defaults", "service_defaults"),
            ("watch proxy-defaults", "proxy_defaults"),
            ("watch ingress-gateway entry", "entry"),
            ("watch api-gateway entry", "entry"),
            ("watch http-route entries", "routes"),
            ("watch service-intentions", "intentions"),
            ("something else", "other"),
        ];
        for (activity, want) in cases {
            assert_eq!(watch_name(activity), want, "{activity}");
        }
    }

    #[test]
    fn token_bucket_bursts_then_refills_one_per_period() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut b = TokenBucket::new(8, ms(250), t0);
        for i in 0..8 {
            assert_eq!(b.try_take(t0), Ok(()), "burst token {i}");
        }
        assert_eq!(b.try_take(t0), Err(ms(250)));
        assert_eq!(b.try_take(t0 + ms(100)), Err(ms(150)));
        assert_eq!(b.try_take(t0 + ms(250)), Ok(()));
        assert_eq!(b.try_take(t0 + ms(260)), Err(ms(240)));
        // Two periods idle earn two tokens, not more.
        assert_eq!(b.try_take(t0 + ms(750)), Ok(()));
        assert_eq!(b.try_take(t0 + ms(750)), Ok(()));
        assert_eq!(b.try_take(t0 + ms(750)), Err(ms(250)));
        // A long idle time refills to the burst and no further.
        let later = t0 + Duration::from_secs(3600);
        for i in 0..8 {
            assert_eq!(b.try_take(later), Ok(()), "refilled token {i}");
        }
        assert!(b.try_take(later).is_err());
    }
}
