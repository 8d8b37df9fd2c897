//! Just enough HTTP/1.1 to approve a review over gatehouse's admin API on loopback.

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `http://127.0.0.1:9090` → `127.0.0.1:9090`.
pub fn host_port(url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("http://")
        .context("admin_url: http://HOST:PORT (the harness does not speak HTTPS to the admin API)")?;
    let hp = rest.split('/').next().unwrap_or(rest);
    if !hp.contains(':') {
        bail!("admin_url: a port is required");
    }
    Ok(hp.to_string())
}

/// POST /api/v1/reviews/{id}/approve as the bearer of `token`.
pub async fn approve(addr: &str, token: &str, id: &str) -> Result<()> {
    let mut s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("admin API at {addr}"))?;
    s.set_nodelay(true)?;
    let req = format!(
        "POST /api/v1/reviews/{id}/approve HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(2048);
    s.read_to_end(&mut buf).await?;
    let head = String::from_utf8_lossy(&buf);
    let status = status_code(&head).context("admin API: no HTTP status line")?;
    if status != 200 {
        let body = head.split("\r\n\r\n").nth(1).unwrap_or("").trim();
        bail!("admin API: approve {id}: HTTP {status}: {body}");
    }
    Ok(())
}

pub fn status_code(response: &str) -> Option<u16> {
    let line = response.lines().next()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_status_lines() {
        assert_eq!(host_port("http://127.0.0.1:9190").unwrap(), "127.0.0.1:9190");
        assert_eq!(host_port("http://127.0.0.1:9190/").unwrap(), "127.0.0.1:9190");
        assert!(host_port("https://127.0.0.1:9190").is_err());
        assert!(host_port("http://127.0.0.1").is_err());
        assert_eq!(status_code("HTTP/1.1 403 Forbidden\r\n\r\n{}"), Some(403));
        assert_eq!(status_code("garbage"), None);
    }
}
