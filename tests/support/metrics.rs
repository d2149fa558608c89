//! The Prometheus side: one plain HTTP/1.1 GET on the metrics listener, and the value of one
//! series in the text it returns.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use super::daemon::DAEMON_TIMEOUT;

/// One `GET path` on `addr` (`Connection: close`); returns the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DAEMON_TIMEOUT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status_code(&response), body)
}

/// The status code of a raw HTTP/1.1 response.
pub fn status_code(response: &str) -> u16 {
    response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

/// `GET /metrics` on `addr`, asserting 200: the Prometheus text body.
pub fn scrape(addr: SocketAddr) -> String {
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200, "GET /metrics: {body}");
    body
}

/// The value of one series (`name{labels}` exactly as exported) in a scraped body.
#[track_caller]
pub fn metric(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("series {series} missing from\n{body}"))
        .trim()
        .parse()
        .unwrap()
}
