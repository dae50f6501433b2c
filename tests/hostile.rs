//! Hostile responses: the daemon talks to the simulator through a proxy that, when told
//! to, answers the catalog watch with a huge body, a truncated one, one that is not JSON,
//! or one that trickles in a byte per second. Each time the daemon must stay up with
//! bounded memory and time, report the problem (in the log and on /health), and converge
//! again once the agent behaves.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use consul_sim::Sim;

/// What the proxy does with `GET /v1/catalog/services`; everything else passes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Pass,
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

struct HostileProxy {
    port: u16,
    mode: Arc<Mutex<Mode>>,
}

impl HostileProxy {
    fn start(upstream: u16) -> HostileProxy {
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

    fn set(&self, mode: Mode) {
        *self.mode.lock().expect("mode") = mode;
    }

    fn url(&self) -> String {
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

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .expect("VmHWM")
}

/// Converges through the proxy, turns `mode` on and triggers a new catalog read, waits
/// for `symptom` in the log and a 503 on /health, then turns it off and checks that the
/// daemon converges on the next change. Returns the daemon (still running).
fn survives(mode: Mode, symptom: &str) -> Daemon {
    let sim = sim_http();
    sim.add_service(service(
        "shop",
        &["gw-traefik.http.routers.shop.rule=Host(`shop.example.com`)"],
    ));
    let proxy = HostileProxy::start(sim.addr().port());
    let daemon = Daemon::start(&with(base_env(&sim), &[("CONSULHTTPURL", &proxy.url())]));
    wait_until(EVENTUALLY, "converged through the proxy", || {
        routes(&sim, 9997) == [route("shop", &["shop.example.com"])]
    });

    proxy.set(mode);
    // The catalog watch is parked in a blocking query; a change makes it ask again.
    sim.add_service(service(
        "cart",
        &["gw-traefik.http.routers.cart.rule=Host(`cart.example.com`)"],
    ));
    daemon.wait_output(Duration::from_secs(30), symptom);
    wait_until(EVENTUALLY, "/health reports the problem", || {
        daemon.health().0 == 503
    });

    proxy.set(Mode::Pass);
    recover(&sim, &daemon);
    daemon
}

fn recover(sim: &Sim, daemon: &Daemon) {
    sim.add_service(service(
        "blog",
        &["gw-traefik.http.routers.blog.rule=Host(`blog.example.com`)"],
    ));
    let all = vec![
        route("blog", &["blog.example.com"]),
        route("cart", &["cart.example.com"]),
        route("shop", &["shop.example.com"]),
    ];
    // The backoff after the failures is at most 30 s.
    wait_until(
        Duration::from_secs(45),
        "converged once the agent behaves",
        || routes(sim, 9997) == all,
    );
    wait_until(EVENTUALLY, "/health ok again", || daemon.health().0 == 200);
}

#[test]
fn a_huge_catalog_is_cut_at_the_cap_with_bounded_memory() {
    let daemon = survives(Mode::Huge(50 * 1024 * 1024), "over the 32 MiB cap");
    let peak = peak_rss_kib(daemon.pid());
    eprintln!("peak RSS with a 50 MB catalog offered: {peak} KiB");
    // The cap (32 MiB) plus what the daemon needs anyway; reading the whole 50 MB, or
    // decoding it, would be far above.
    assert!(peak < 48 * 1024, "peak RSS {peak} KiB");
}

#[test]
fn a_truncated_catalog_is_an_error_not_a_crash() {
    survives(
        Mode::Truncated,
        "GET /v1/catalog/services: connection broke",
    );
}

#[test]
fn a_catalog_that_is_not_json_is_an_error_not_a_crash() {
    survives(
        Mode::NotJson,
        "GET /v1/catalog/services: unexpected response body",
    );
}

#[test]
fn a_catalog_that_trickles_in_times_out() {
    survives(Mode::Slow, "did not arrive within 10s of its headers");
}
