//! The pieces around the daemon in the end-to-end test: external processes (Traefik,
//! Envoy) under a guard that kills them, tiny HTTP backends, and a raw HTTP client that
//! sets the Host header.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Path of an external tool from the environment variable `var`. Panics when it is unset
/// or not a file: the test is ignored unless asked for, so a run that asks must have it.
pub fn tool(var: &str, what: &str) -> String {
    let path = match std::env::var(var) {
        Ok(p) if !p.is_empty() => p,
        _ => panic!(
            "{var} is not set: it must name the {what} binary. `bash .ci/run` installs it \
             into .tools/py and exports {var}; or set it by hand to run this test"
        ),
    };
    if !std::path::Path::new(&path).is_file() {
        panic!("{var}={path} is not a file: it must name the {what} binary");
    }
    path
}

/// A port the OS just chose as free. The daemon, Envoy's bootstrap and Traefik's flags
/// must all name a port before anything listens on it, so the test takes one up front
/// and closes it at once (another process could take it in between: the process using
/// it then fails to start, and the test with it, loudly).
/// Never the same port twice in this process (the OS readily gives a just-released port
/// again, and two of one run's ports must differ): the agent harness's chooser.
pub fn free_port() -> u16 {
    crate::common::consul::free_port()
}

/// An external process with its output collected. Killed (by PID) when dropped, on
/// every path out of the test; its output is printed when the test is failing.
pub struct Process {
    name: &'static str,
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Process {
    pub fn start(name: &'static str, program: &str, args: &[String]) -> Process {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({program}): {e}"));
        let output = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        collect(stdout, output.clone());
        collect(stderr, output.clone());
        Process {
            name,
            child,
            output,
        }
    }

    pub fn output(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Panics (with the output) when the process has exited: a condition being waited
    /// for will never hold then.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early ({status}); output:\n{}",
                self.name,
                self.output()
            );
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // It may have exited already; either way it is gone after `wait`.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} output ---\n{}--- end ---", self.name, self.output());
        }
    }
}

fn collect(stream: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if let Ok(mut out) = into.lock() {
                out.push_str(&line);
                out.push('\n');
            }
        }
    });
}

/// An HTTP server that answers every request with 200 and its service's name, so a
/// response tells which backend the chain reached. Stopped when dropped.
pub struct Backend {
    pub name: String,
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    pub fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let port = listener.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let body = name.to_string();
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(stream) = stream {
                    let body = body.clone();
                    std::thread::spawn(move || answer(stream, &body));
                }
            }
        });
        Backend {
            name: name.to_string(),
            port,
            stop,
            thread: Some(thread),
        }
    }
}

/// Reads one request head and answers it; one request per connection.
fn answer(mut stream: TcpStream, body: &str) {
    // Bounded so a stuck peer cannot keep the thread; errors just end the connection.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()); // the peer may have gone; nothing to do
    let _ = stream.shutdown(Shutdown::Write);
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag; failure means it is already gone.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port` with the given Host header ->
/// `Some((status, body))`, or `None` when nothing answered (not listening yet, reset).
pub fn request(port: u16, method: &str, host: &str, path: &str) -> Option<(u16, String)> {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    // Framing decides when a response is whole: a peer may keep the connection open
    // (Envoy does once draining), and waiting for it to close would stall each poll.
    loop {
        if let Some(whole) = complete(&response) {
            return Some(whole);
        }
        match stream.read(&mut buf) {
            // Closed, reset or timed out: what came is all there is.
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((status_of(head)?, body.to_string()))
}

fn status_of(head: &str) -> Option<u16> {
    head.split(' ').nth(1)?.parse().ok()
}

/// `(status, body)` once `response` holds a whole response, framed by Content-Length
/// or chunked encoding.
fn complete(response: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = status_of(head)?;
    let head = head.to_ascii_lowercase();
    if head.contains("transfer-encoding: chunked") {
        return dechunk(body).map(|body| (status, body));
    }
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))?
        .trim()
        .parse()
        .ok()?;
    Some((status, body.get(..length)?.to_string()))
}

/// `GET` with a Host header.
pub fn get(port: u16, host: &str, path: &str) -> Option<(u16, String)> {
    request(port, "GET", host, path)
}

/// The body of a chunked response, once its last (empty) chunk has arrived.
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}
