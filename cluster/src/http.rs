//! A blocking HTTP/1.0 client over loopback, enough for `/ready`, `/metrics` and a request
//! that must be refused. Blob transfers go through [`crate::registry`].

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long [`get`] and [`request`] wait to connect, and for each read and write.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// `GET http://{addr}{path}`: the status and the body, or why it could not be had.
pub fn get(addr: &str, path: &str) -> Result<(u16, String), String> {
    request_within(addr, "GET", path, &[], b"", TIMEOUT)
}

/// `method http://{addr}{path}` with `headers` and `body`: the status and the body.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, String), String> {
    request_within(addr, method, path, headers, body, TIMEOUT)
}

/// [`request`] with its own timeout.
pub fn request_within(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<(u16, String), String> {
    let sock: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| format!("{addr} is not an address: {e}"))?;
    let mut s = TcpStream::connect_timeout(&sock, timeout).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .and_then(|()| s.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body))
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("{addr}{path}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}{path}: no complete answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{addr}{path}: no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// Whether `addr` answers `GET /ready` with 200 within `timeout`.
pub fn ready(addr: &str, timeout: Duration) -> bool {
    request_within(addr, "GET", "/ready", &[], b"", timeout).is_ok_and(|(status, _)| status == 200)
}

/// `addr`'s `/metrics` text.
pub fn metrics(addr: &str) -> Result<String, String> {
    match get(addr, "/metrics")? {
        (200, body) => Ok(body),
        (status, body) => Err(format!("{addr}/metrics answered {status}: {body}")),
    }
}
