//! Is a runtime serving yet? A bare TCP connect (executor-api §8.3) is not
//! enough behind Docker's userland proxy, which accepts connections on the
//! published port before anything listens in the container and then resets
//! them. So the probe asks the runtime's reserved health path
//! (runtime-protocol §3.3, answered by every v5 server) and wants an HTTP
//! status line back.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const REQUEST: &[u8] = b"GET /__opr/health HTTP/1.1\r\nHost: opr\r\nConnection: close\r\n\r\n";
/// How long one probe may wait for an answer from a connected runtime.
const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// One attempt: connected, and an HTTP status line came back.
pub async fn probe(addr: SocketAddr, within: Duration) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream.write_all(REQUEST).await.ok()?;
        let mut head = [0u8; 8];
        stream.read_exact(&mut head).await.ok()?;
        (&head[..7] == b"HTTP/1.").then_some(())
    };
    tokio::time::timeout(within.min(ANSWER_WAIT), attempt)
        .await
        .ok()
        .flatten()
        .is_some()
}

/// Probes until the runtime answers or `deadline` passes; fast at first,
/// since a sandboxed runtime is up in milliseconds.
pub async fn wait_until_serving(addr: SocketAddr, deadline: Instant) -> bool {
    let mut delay = Duration::from_millis(1);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        if probe(addr, left).await {
            return true;
        }
        tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
        // Capped low: each millisecond of backoff is added to a cold start.
        delay = (delay * 2).min(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listener_that_resets_is_not_ready_and_an_http_server_is() {
        // Accepts and closes at once, like a proxy with nothing behind it.
        let closing = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let closing_addr = closing.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((s, _)) = closing.accept().await {
                drop(s);
            }
        });
        assert!(!probe(closing_addr, Duration::from_secs(1)).await);

        let http = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let http_addr = http.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = http.accept().await {
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nOK")
                    .await;
            }
        });
        assert!(wait_until_serving(http_addr, Instant::now() + Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn nothing_listening_times_out_at_the_deadline() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        let started = Instant::now();
        assert!(!wait_until_serving(addr, Instant::now() + Duration::from_millis(200)).await);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
