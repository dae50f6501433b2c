//! A proxy between the daemon and the simulator that misbehaves on demand: the hostile
//! and broken agents of the hostile-input and fault tests. Plain threads and blocking
//! sockets, one thread per daemon connection; everything it does not intercept goes to
//! the simulator unchanged, one upstream connection per daemon connection.
//!
//! Apart from its [`Mode`], the proxy can spoil one answer of a watch: the first answer
//! to a blocking query on a given path that carries a change (a new `X-Consul-Index` and
//! a body that differs from the last one the simulator sent for that path) reaches the
//! daemon with its status and index but a body that does not decode.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does. All but `ResetWrites` concern `GET /v1/catalog/services` only;
/// every other request passes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Pass,
    /// Every write (any method but GET) is read and then the connection is closed with
    /// no answer, as when the agent dies mid-write.
    ResetWrites,
    /// A 200 of this many bytes of valid-looking JSON, chunked (no Content-Length), so
    /// only a cap while streaming can stop it.
    Huge(usize),
    /// Content-Length promises more than is sent, then the connection closes.
    Truncated,
    /// A 200 that is not JSON.
    NotJson,
    /// Headers at once, then the body a byte per second.
    Slow,
}

/// How a spoiled answer's body is replaced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Spoil {
    /// The first half of the real body, with a `Content-Length` that matches it: JSON
    /// cut short by a proxy, the connection intact. Status kept, so only for a 200.
    TruncatedJson,
    /// A proxy's HTML error page with status 200 (whatever the simulator answered).
    Html,
}

/// One spoiled answer: the path, its `X-Consul-Index` (kept) and the real body.
#[derive(Debug, Clone)]
pub struct Spoiled {
    pub path: String,
    pub index: u64,
    pub real_body: String,
}

#[derive(Default)]
struct Spoiler {
    /// The path whose next answer carrying a change is spoiled, and how.
    armed: Option<(String, Spoil)>,
    /// The last body the simulator sent for each path (any query), status included.
    last: HashMap<String, (String, Vec<u8>)>,
    spoiled: Vec<Spoiled>,
}

impl Spoiler {
    /// The answer to send the daemon for `request` (a request head) given the
    /// simulator's `head` and `body`.
    fn filter(&mut self, request: &str, head: String, body: Vec<u8>) -> (String, Vec<u8>) {
        let Some(path) = request_path(request) else {
            return (head, body);
        };
        let status = head.lines().next().unwrap_or_default().to_string();
        let previous = self
            .last
            .insert(path.to_string(), (status.clone(), body.clone()));
        let Some((armed, spoil)) = &self.armed else {
            return (head, body);
        };
        let asked = query_index(request);
        let answered = header(&head, "x-consul-index").and_then(|v| v.parse::<u64>().ok());
        let carries_change = matches!((asked, answered), (Some(a), Some(b)) if a != b)
            && previous.as_ref() != Some(&(status.clone(), body.clone()));
        if armed != path || !carries_change {
            return (head, body);
        }
        let spoil = *spoil;
        self.armed = None;
        self.spoiled.push(Spoiled {
            path: path.to_string(),
            index: answered.unwrap_or_default(),
            real_body: String::from_utf8_lossy(&body).into_owned(),
        });
        match spoil {
            Spoil::TruncatedJson => {
                let cut = body[..body.len() / 2].to_vec();
                (rewrite_head(&head, &status, None, cut.len()), cut)
            }
            Spoil::Html => {
                let page = b"<html><head><title>OK</title></head><body><h1>Welcome</h1>\
                             </body></html>"
                    .to_vec();
                (
                    rewrite_head(
                        &head,
                        "HTTP/1.1 200 OK",
                        Some("text/html; charset=utf-8"),
                        page.len(),
                    ),
                    page,
                )
            }
        }
    }
}

/// The path (without query) of a GET request head; None for other methods.
fn request_path(request: &str) -> Option<&str> {
    let target = request.strip_prefix("GET ")?.split(' ').next()?;
    Some(target.split('?').next().unwrap_or(target))
}

/// The `index` query parameter of a request head (a blocking query has one).
fn query_index(request: &str) -> Option<u64> {
    let target = request.split(' ').nth(1)?;
    let (_, query) = target.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("index="))
        .and_then(|v| v.parse().ok())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// `head` with another status line, Content-Length and (optionally) Content-Type;
/// every other header (X-Consul-Index among them) kept.
fn rewrite_head(head: &str, status: &str, content_type: Option<&str>, length: usize) -> String {
    let mut out = format!("{status}\r\n");
    for line in head.split("\r\n").skip(1).filter(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or_default().trim();
        let replaced = name.eq_ignore_ascii_case("content-length")
            || (content_type.is_some() && name.eq_ignore_ascii_case("content-type"));
        if !replaced {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    if let Some(content_type) = content_type {
        out.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    out.push_str(&format!("Content-Length: {length}\r\n\r\n"));
    out
}

pub struct HostileProxy {
    port: u16,
    mode: Arc<Mutex<Mode>>,
    spoiler: Arc<Mutex<Spoiler>>,
}

impl HostileProxy {
    pub fn start(upstream: u16) -> HostileProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mode = Arc::new(Mutex::new(Mode::Pass));
        let spoiler = Arc::new(Mutex::new(Spoiler::default()));
        let (shared_mode, shared_spoiler) = (mode.clone(), spoiler.clone());
        // The threads end with the test process; each serves one daemon connection.
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let mode = shared_mode.clone();
                let spoiler = shared_spoiler.clone();
                std::thread::spawn(move || serve(client, upstream, &mode, &spoiler));
            }
        });
        HostileProxy {
            port,
            mode,
            spoiler,
        }
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().expect("mode") = mode;
    }

    /// Spoils the next answer to a blocking `GET path` that carries a change, once.
    pub fn spoil_next_change(&self, path: &str, spoil: Spoil) {
        self.spoiler.lock().expect("spoiler").armed = Some((path.to_string(), spoil));
    }

    /// The answers spoiled so far.
    pub fn spoiled(&self) -> Vec<Spoiled> {
        self.spoiler.lock().expect("spoiler").spoiled.clone()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// One HTTP/1.1 message: head (up to and including the blank line) and body.
fn read_message(reader: &mut impl BufRead) -> Option<(String, Vec<u8>)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((head, body))
}

fn serve(client: TcpStream, upstream: u16, mode: &Mutex<Mode>, spoiler: &Mutex<Spoiler>) {
    let Ok(mut writer) = client.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(client);
    let Ok(sim) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let Ok(mut sim_writer) = sim.try_clone() else {
        return;
    };
    let mut sim_reader = BufReader::new(sim);
    while let Some((head, body)) = read_message(&mut reader) {
        let catalog = head.starts_with("GET /v1/catalog/services");
        let current = *mode.lock().expect("mode");
        let answered = match current {
            Mode::Pass => None,
            Mode::ResetWrites if head.starts_with("GET ") => None,
            Mode::ResetWrites => Some(false),
            _ if !catalog => None,
            Mode::Huge(bytes) => Some(huge(&mut writer, bytes)),
            Mode::Truncated => {
                let _ = writer.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Consul-Index: 7\r\n\
                      Content-Length: 1000\r\n\r\n{\"web\":[\"gw-traefik.http.rout",
                );
                Some(false)
            }
            Mode::NotJson => {
                let page = "<html><body>502 Bad Gateway</body></html>";
                let _ = write!(
                    writer,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nX-Consul-Index: 7\r\n\
                     Content-Length: {}\r\n\r\n{page}",
                    page.len()
                );
                Some(true)
            }
            Mode::Slow => {
                // Far longer than the body timeout at this pace.
                let body =
                    b"{\"web\":[\"gw-traefik.http.routers.web.rule=Host(`web.example.com`)\"]}";
                let _ = write!(
                    writer,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Consul-Index: 7\r\n\
                     Content-Length: {}\r\n\r\n",
                    body.len()
                );
                for byte in body {
                    if writer.write_all(&[*byte]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_secs(1)); // the trickle itself
                }
                Some(false)
            }
        };
        match answered {
            Some(true) => continue,
            Some(false) => {
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
            None => {}
        }
        if sim_writer.write_all(head.as_bytes()).is_err() || sim_writer.write_all(&body).is_err() {
            return;
        }
        let request = head;
        let Some((head, body)) = read_message(&mut sim_reader) else {
            return;
        };
        let (head, body) = spoiler
            .lock()
            .expect("spoiler")
            .filter(&request, head, body);
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&body).is_err() {
            return;
        }
    }
}

/// Streams `bytes` of a catalog-shaped JSON object, chunked. Returns whether the
/// connection can go on (it cannot when the daemon hung up, as it should).
fn huge(writer: &mut TcpStream, bytes: usize) -> bool {
    if writer
        .write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Consul-Index: 7\r\n\
              Transfer-Encoding: chunked\r\n\r\n",
        )
        .is_err()
    {
        return false;
    }
    let mut chunk = String::new();
    let mut sent = 0;
    let mut n = 0;
    while sent < bytes {
        chunk.clear();
        chunk.push_str(if n == 0 { "{" } else { "," });
        for _ in 0..100 {
            chunk.push_str(&format!(
                "\"s{n}\":[\"other-tag-{n}\",\"gw-traefik.http.routers.s{n}.rule=Host(`s{n}.example.com`)\"]"
            ));
            n += 1;
            chunk.push(',');
        }
        chunk.pop();
        let frame = format!("{:x}\r\n{chunk}\r\n", chunk.len());
        if writer.write_all(frame.as_bytes()).is_err() {
            return false;
        }
        sent += chunk.len();
    }
    writer.write_all(b"1\r\n}\r\n0\r\n\r\n").is_ok()
}
