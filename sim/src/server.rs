//! The network side: the listener (stoppable and restartable on the same address), TLS,
//! per-connection bookkeeping (open count, per-IP limit, forced close), and the hyper
//! HTTP/1.1 connection driver. Request semantics live in `http.rs`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, Notify};
use tokio_rustls::TlsAcceptor;

use crate::state::{Changes, State};

/// Options fixed at start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub acl: bool,
    pub max_wait: Duration,
    pub default_wait: Duration,
    pub jitter: bool,
    pub run_checks: bool,
    /// Overrides every HTTP check's interval (see `SimOptions::check_interval`).
    pub check_interval: Option<Duration>,
}

/// The tables a blocked query can wait on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    Services,
    Checks,
    Config,
    Agent,
}

#[derive(Default)]
struct ConnTable {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// State shared by the runtime thread and the synchronous control API.
pub struct Shared {
    state: Mutex<State>,
    pub settings: Settings,
    services_tx: watch::Sender<u64>,
    checks_tx: watch::Sender<u64>,
    config_tx: watch::Sender<u64>,
    agent_tx: watch::Sender<u64>,
    /// Bumped by a snapshot restore: every blocked query answers at once.
    pub abandon_tx: watch::Sender<u64>,
    /// Bumped by `stop_listening`: every open connection closes.
    epoch_tx: watch::Sender<u64>,
    conns: Mutex<ConnTable>,
    conn_closed: Notify,
}

impl Shared {
    pub fn new(settings: Settings) -> Shared {
        Shared {
            state: Mutex::new(State::new()),
            settings,
            services_tx: watch::channel(0).0,
            checks_tx: watch::channel(0).0,
            config_tx: watch::channel(0).0,
            agent_tx: watch::channel(0).0,
            abandon_tx: watch::channel(0).0,
            epoch_tx: watch::channel(0).0,
            conns: Mutex::new(ConnTable::default()),
            conn_closed: Notify::new(),
        }
    }

    /// The state lock. A panic while holding it cannot leave half-applied changes that
    /// matter to a test double, so poisoning is ignored.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn sender(&self, table: TableKind) -> &watch::Sender<u64> {
        match table {
            TableKind::Services => &self.services_tx,
            TableKind::Checks => &self.checks_tx,
            TableKind::Config => &self.config_tx,
            TableKind::Agent => &self.agent_tx,
        }
    }

    /// Wakes the watchers of the tables that changed, and only those.
    pub fn notify(&self, changes: Changes) {
        let bump = |tx: &watch::Sender<u64>| tx.send_modify(|v| *v = v.wrapping_add(1));
        if changes.services {
            bump(&self.services_tx);
        }
        if changes.checks {
            bump(&self.checks_tx);
        }
        if changes.config {
            bump(&self.config_tx);
        }
        if changes.agent {
            bump(&self.agent_tx);
        }
    }

    pub fn abandon(&self) {
        self.abandon_tx.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn conns(&self) -> MutexGuard<'_, ConnTable> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn open_connections(&self) -> usize {
        self.conns().total
    }

    /// Counts a new connection; `true` when it exceeds the per-client limit.
    fn open_conn(self: &Arc<Self>, ip: IpAddr) -> (ConnGuard, bool) {
        let limit = self.lock().max_conns_per_client;
        let mut conns = self.conns();
        conns.total += 1;
        let n = conns.per_ip.entry(ip).or_insert(0);
        *n += 1;
        let over = limit.is_some_and(|l| *n > l);
        (
            ConnGuard {
                shared: Arc::clone(self),
                ip,
            },
            over,
        )
    }
}

/// Uncounts a connection when its task ends, however it ends.
struct ConnGuard {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        {
            let mut conns = self.shared.conns();
            conns.total = conns.total.saturating_sub(1);
            if let Some(n) = conns.per_ip.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    conns.per_ip.remove(&self.ip);
                }
            }
        }
        self.shared.conn_closed.notify_one();
    }
}

/// Per-connection context handed to every request on it.
pub struct ConnCtx {
    pub over_limit: bool,
}

pub enum Cmd {
    StopListening(std::sync::mpsc::Sender<()>),
    StartListening(std::sync::mpsc::Sender<()>),
    Shutdown,
}

fn socket_for(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Rebinding the same port after a stop must not wait for TIME_WAIT to drain.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    socket_for(addr)?.listen(1024)
}

/// Binds the listener (the caller learns the address or the error), then serves until
/// shutdown, obeying listen/stop commands.
pub async fn run(
    shared: Arc<Shared>,
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    ready: std::sync::mpsc::Sender<Result<SocketAddr, String>>,
) {
    let listener = match bind_listener(addr) {
        Ok(l) => l,
        Err(e) => {
            // `Sim::start` waits on `ready`; if it is gone, no one is left to tell.
            let _ = ready.send(Err(format!("bind {addr}: {e}")));
            return;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            let _ = ready.send(Err(format!("local_addr: {e}")));
            return;
        }
    };
    if shared.settings.run_checks {
        tokio::spawn(crate::checks::run(Arc::clone(&shared)));
    }
    let mut accept = Some(tokio::spawn(accept_loop(
        Arc::clone(&shared),
        listener,
        tls.clone(),
    )));
    // The caller may have gone; nothing to do about it here.
    let _ = ready.send(Ok(addr));
    // Holds the port while not listening, so connections are refused, not stolen.
    let mut reserved: Option<TcpSocket> = None;
    while let Some(cmd) = cmds.recv().await {
        match cmd {
            Cmd::StopListening(ack) => {
                if let Some(task) = accept.take() {
                    task.abort();
                    // Only waits for the abort (the listener is dropped with the task).
                    let _ = task.await;
                }
                shared.epoch_tx.send_modify(|v| *v = v.wrapping_add(1));
                wait_for_no_connections(&shared, Duration::from_secs(5)).await;
                reserved = socket_for(addr).ok();
                // The caller may have timed out waiting; the stop happened anyway.
                let _ = ack.send(());
            }
            Cmd::StartListening(ack) => {
                if accept.is_none() {
                    reserved = None;
                    match bind_with_retry(addr).await {
                        Some(listener) => {
                            accept = Some(tokio::spawn(accept_loop(
                                Arc::clone(&shared),
                                listener,
                                tls.clone(),
                            )));
                        }
                        None => eprintln!("consul-sim: could not listen again on {addr}"),
                    }
                }
                // As above: the caller may have stopped waiting.
                let _ = ack.send(());
            }
            Cmd::Shutdown => break,
        }
    }
    drop(reserved);
}

async fn bind_with_retry(addr: SocketAddr) -> Option<TcpListener> {
    // The port was held by this process a moment ago; a few short retries cover the
    // kernel releasing the reserved socket.
    for _ in 0..50 {
        if let Ok(listener) = bind_listener(addr) {
            return Some(listener);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

async fn wait_for_no_connections(shared: &Shared, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while shared.open_connections() > 0 {
        if tokio::time::timeout_at(deadline, shared.conn_closed.notified())
            .await
            .is_err()
        {
            break;
        }
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Transient (EMFILE, ECONNABORTED): keep serving, without spinning.
                eprintln!("consul-sim: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // One write per response is not enough without this: Nagle + delayed ACK.
        // Best effort: a socket that refuses it still works, only slower.
        let _ = stream.set_nodelay(true);
        let (guard, over_limit) = shared.open_conn(peer.ip());
        tokio::spawn(serve_conn(
            Arc::clone(&shared),
            stream,
            over_limit,
            guard,
            tls.clone(),
        ));
    }
}

async fn serve_conn(
    shared: Arc<Shared>,
    stream: TcpStream,
    over_limit: bool,
    _guard: ConnGuard,
    tls: Option<TlsAcceptor>,
) {
    let mut epoch = shared.epoch_tx.subscribe();
    let ctx = Arc::new(ConnCtx { over_limit });
    let serve = async {
        match tls {
            Some(acceptor) => {
                let handshake =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await;
                if let Ok(Ok(tls_stream)) = handshake {
                    serve_io(Arc::clone(&shared), Arc::clone(&ctx), tls_stream).await;
                }
            }
            None => serve_io(Arc::clone(&shared), Arc::clone(&ctx), stream).await,
        }
    };
    tokio::select! {
        _ = serve => {}
        _ = epoch.changed() => {}
    }
}

async fn serve_io<I>(shared: Arc<Shared>, ctx: Arc<ConnCtx>, io: I)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let shared = Arc::clone(&shared);
        let ctx = Arc::clone(&ctx);
        async move { Ok::<_, Infallible>(crate::http::handle(shared, ctx, req).await) }
    });
    // writev(false): hyper flattens head and body into one buffer, so each response
    // leaves in a single write.
    let conn = http1::Builder::new()
        .keep_alive(true)
        .writev(false)
        .serve_connection(TokioIo::new(io), service);
    // Connection errors (resets, garbage) end the connection; nothing else to do.
    let _ = conn.await;
}
