//! Slow clients attacked against every TCP listener of the real tapd (web, federation on
//! its own listener, metrics): one that trickles its headers and one that trickles its
//! body, a byte per second, must both be disconnected within the configured deadlines
//! (2 s here, so the test takes seconds); and the per-address connection cap closes the
//! fifth connection from 127.0.0.1 while 127.0.0.2 still gets served.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::harness::{Options, Tapd, FEDERATION_TOKEN};

const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const BODY_TIMEOUT: Duration = Duration::from_secs(2);
/// Slack for scheduling on a busy machine.
const SLACK: Duration = Duration::from_millis(2500);

fn start() -> Tapd {
    Tapd::start_with(Options {
        web: "header_timeout = \"2s\"\nbody_timeout = \"2s\"\nrequest_timeout = \"20s\"\nmax_connections_per_address = 4\n".into(),
        federation: "listen = \"127.0.0.1:0\"\n".into(),
        admin: "connection_timeout = \"3s\"\n".into(),
        ..Options::default()
    })
}

/// Sends `head` at once, then `trickle` one byte a second from another thread, and returns
/// how long until the server closed the connection (reads see EOF or a reset).
fn time_until_closed(server: SocketAddr, head: &str, trickle: &'static [u8]) -> Duration {
    let stream = TcpStream::connect(server).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let writer = stream.try_clone().unwrap();
    time_until_stream_closed(stream, writer, head, trickle)
}

/// [`time_until_closed`] on a connected stream of any kind (TCP, Unix): `writer` is a clone of
/// `stream` for the trickling thread.
fn time_until_stream_closed<S: Read + Write + Send + 'static>(
    mut stream: S,
    mut writer: S,
    head: &str,
    trickle: &'static [u8],
) -> Duration {
    let started = Instant::now();
    stream.write_all(head.as_bytes()).unwrap();
    let trickler = std::thread::spawn(move || {
        for byte in trickle {
            std::thread::sleep(Duration::from_secs(1));
            if writer.write_all(&[*byte]).is_err() {
                return;
            }
        }
    });
    let mut buffer = [0u8; 4096];
    while let Ok(len) = stream.read(&mut buffer) {
        if len == 0 {
            break;
        }
    }
    let elapsed = started.elapsed();
    drop(stream);
    trickler.join().unwrap();
    elapsed
}

/// 30 bytes: at one a second, far longer than any deadline.
const SLOW: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123";

#[test]
fn slow_headers_and_slow_bodies_are_cut_off_on_every_tcp_listener() {
    let tapd = start();
    let federation = tapd.federation.unwrap();
    let listeners = [
        ("web", tapd.web, "/sign-in"),
        ("federation", federation, "/federation/v1/authenticate"),
        ("metrics", tapd.metrics, "/metrics"),
    ];
    for (what, addr, path) in listeners {
        // Headers that never end: "X-Slow: abc…" a byte a second.
        let head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nX-Slow: ");
        let elapsed = time_until_closed(addr, &head, SLOW);
        assert!(
            elapsed < HEADER_TIMEOUT + SLACK,
            "{what}: a trickled header kept the connection {elapsed:?}"
        );
        // Complete headers, then a body a byte a second, of the type the endpoint reads.
        let content_type = if what == "web" {
            "application/x-www-form-urlencoded"
        } else {
            "application/json"
        };
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {FEDERATION_TOKEN}\r\nContent-Type: {content_type}\r\nContent-Length: 30\r\n\r\n"
        );
        let elapsed = time_until_closed(addr, &head, SLOW);
        assert!(
            elapsed < BODY_TIMEOUT + SLACK,
            "{what}: a trickled body kept the connection {elapsed:?}"
        );
    }
}

fn healthz(from: &str, server: SocketAddr) -> String {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&format!("{from}:0").parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.connect(&server.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn the_per_address_cap_closes_the_fifth_connection_but_not_another_address() {
    let tapd = start();
    for (what, addr) in [("metrics", tapd.metrics), ("web", tapd.web)] {
        let held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
        // Let the server accept them all.
        std::thread::sleep(Duration::from_millis(300));
        let refused = healthz("127.0.0.1", addr);
        assert!(
            refused.is_empty(),
            "{what}: the fifth connection from 127.0.0.1 was served: {refused}"
        );
        let other = healthz("127.0.0.2", addr);
        assert!(
            other.starts_with("HTTP/1.1 200") || other.starts_with("HTTP/1.1 404"),
            "{what}: 127.0.0.2 was not served: {other:?}"
        );
        drop(held);
        std::thread::sleep(Duration::from_millis(300));
        let again = healthz("127.0.0.1", addr);
        assert!(
            again.starts_with("HTTP/1.1"),
            "{what}: 127.0.0.1 is served again once its connections closed: {again:?}"
        );
    }
}

#[test]
fn a_stalling_admin_client_is_disconnected_at_the_connection_deadline() {
    use std::os::unix::net::UnixStream;
    let tapd = start();
    let path = "/v1/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/temporaryAccessPass";
    for head in [
        // Headers that never end.
        format!("PATCH {path} HTTP/1.1\r\nHost: localhost\r\nX-Slow: "),
        // A body a byte a second.
        format!(
            "PATCH {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 30\r\n\r\n"
        ),
    ] {
        let stream = UnixStream::connect(tapd.socket()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let writer = stream.try_clone().unwrap();
        let elapsed = time_until_stream_closed(stream, writer, &head, SLOW);
        assert!(
            elapsed < Duration::from_secs(3) + SLACK,
            "the admin connection stayed {elapsed:?}: {head:?}"
        );
    }
}
