//! A blocking HTTP/1.0 client over loopback, enough for `/ready`, `/metrics` and a request
//! that must be refused, in plain HTTP or over TLS ([`Target`]). Blob transfers go through
//! [`crate::registry`].

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use shoal_core::tls::rustls;

/// A server to ask: its address, and how to verify it if it serves HTTPS. An address alone
/// (`"127.0.0.1:9000"`) is plain HTTP.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Target {
    pub fn plain(addr: &str) -> Target {
        Target {
            addr: addr.to_owned(),
            tls: None,
        }
    }

    /// HTTPS to `addr`, its certificate verified by `tls` for the address's IP.
    pub fn https(addr: &str, tls: Arc<rustls::ClientConfig>) -> Target {
        Target {
            addr: addr.to_owned(),
            tls: Some(tls),
        }
    }

    pub fn is_https(&self) -> bool {
        self.tls.is_some()
    }
}

impl From<&str> for Target {
    fn from(addr: &str) -> Target {
        Target::plain(addr)
    }
}

impl From<&String> for Target {
    fn from(addr: &String) -> Target {
        Target::plain(addr)
    }
}

impl From<&Target> for Target {
    fn from(t: &Target) -> Target {
        t.clone()
    }
}

/// How long [`get`] and [`request`] wait to connect, and for each read and write.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// `GET {target}{path}`: the status and the body, or why it could not be had.
pub fn get(target: impl Into<Target>, path: &str) -> Result<(u16, String), String> {
    request_within(target, "GET", path, &[], b"", TIMEOUT)
}

/// `method {target}{path}` with `headers` and `body`: the status and the body.
pub fn request(
    target: impl Into<Target>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, String), String> {
    request_within(target, method, path, headers, body, TIMEOUT)
}

/// [`request`] with its own timeout.
pub fn request_within(
    target: impl Into<Target>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<(u16, String), String> {
    let target = target.into();
    let addr = target.addr.as_str();
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
    let mut raw = Vec::new();
    match &target.tls {
        None => exchange(&mut s, head.as_bytes(), body, &mut raw),
        Some(cfg) => {
            let conn = rustls::ClientConnection::new(cfg.clone(), sock.ip().into())
                .map_err(|e| format!("{addr}: {e}"))?;
            exchange(
                &mut rustls::StreamOwned::new(conn, s),
                head.as_bytes(),
                body,
                &mut raw,
            )
        }
    }
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

/// Writes the request and reads the answer until the server closes. A TLS server that
/// closes without saying so first still gave a whole HTTP/1.0 answer.
fn exchange(
    s: &mut (impl Read + Write),
    head: &[u8],
    body: &[u8],
    raw: &mut Vec<u8>,
) -> std::io::Result<()> {
    s.write_all(head)?;
    s.write_all(body)?;
    s.flush()?;
    match s.read_to_end(raw) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(()),
        r => r.map(|_| ()),
    }
}

/// Whether `target` answers `GET /ready` with 200 within `timeout`.
pub fn ready(target: impl Into<Target>, timeout: Duration) -> bool {
    request_within(target, "GET", "/ready", &[], b"", timeout)
        .is_ok_and(|(status, _)| status == 200)
}

/// `target`'s `/metrics` text.
pub fn metrics(target: impl Into<Target>) -> Result<String, String> {
    let target = target.into();
    match get(&target, "/metrics")? {
        (200, body) => Ok(body),
        (status, body) => Err(format!("{}/metrics answered {status}: {body}", target.addr)),
    }
}
