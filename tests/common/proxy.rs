//! A proxy between the daemon and the simulator that misbehaves on demand: the hostile
//! and broken agents of the hostile-input and fault tests. Plain threads and blocking
//! sockets, one thread per daemon connection; everything it does not intercept goes to
//! the simulator unchanged, one upstream connection per daemon connection.

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

pub struct HostileProxy {
    port: u16,
    mode: Arc<Mutex<Mode>>,
}

impl HostileProxy {
    pub fn start(upstream: u16) -> HostileProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mode = Arc::new(Mutex::new(Mode::Pass));
        let shared = mode.clone();
        // The threads end with the test process; each serves one daemon connection.
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let mode = shared.clone();
                std::thread::spawn(move || serve(client, upstream, &mode));
            }
        });
        HostileProxy { port, mode }
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().expect("mode") = mode;
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

fn serve(client: TcpStream, upstream: u16, mode: &Mutex<Mode>) {
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
        let Some((head, body)) = read_message(&mut sim_reader) else {
            return;
        };
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
