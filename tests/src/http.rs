//! A blocking HTTP/1.0 client over loopback, enough for `/ready`, `/metrics` and a
//! request that must be refused.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// `GET http://{addr}{path}`: the status and the body, or why it could not be had.
pub fn get(addr: &str, path: &str) -> Result<(u16, String), String> {
    request(addr, "GET", path, &[], b"")
}

/// `method http://{addr}{path}` with `headers` and `body`: the status and the body.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, String), String> {
    let timeout = Duration::from_secs(10);
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

/// The sum of every sample in Prometheus text `metrics` whose name is `name` and whose
/// labels contain each of `labels` (such as `source="peer"`); 0 when there is none.
pub fn metric_sum(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.find('{') {
                Some(i) => (&series[..i], &series[i..]),
                None => (series, ""),
            };
            (n == name && labels.iter().all(|want| rest.contains(want)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_samples_that_match() {
        let text = "# HELP x\nx_total{source=\"peer\"} 10\nx_total{source=\"origin\"} 5\n\
                    x_total_other 7\nx_total 1e3\n";
        assert_eq!(metric_sum(text, "x_total", &["source=\"peer\""]), 10.0);
        assert_eq!(metric_sum(text, "x_total", &[]), 1015.0);
        assert_eq!(metric_sum(text, "missing", &[]), 0.0);
    }
}
