//! `logs`: what a container printed, stdout and stderr in order.

use super::client::{api_failed, status_of};
use crate::{OrchestratorError, Result};
use bollard::query_parameters::LogsOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;

/// The last `max_bytes` of `container`'s output. Every line is at least one
/// byte, so the last `max_bytes` lines hold them: the engine is asked for
/// no more.
pub async fn tail(docker: &Docker, container: &str, max_bytes: usize) -> Result<String> {
    if max_bytes == 0 {
        return Ok(String::new());
    }
    let lines = if max_bytes >= 1 << 30 {
        "all".to_string()
    } else {
        max_bytes.to_string()
    };
    let options = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .follow(false)
        .tail(&lines)
        .build();
    let mut stream = docker.logs(container, Some(options));
    let mut kept: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| match status_of(&e) {
            Some(404) => OrchestratorError::NotFound(container.to_owned()),
            _ => api_failed(&format!("logs of {container}"), &e),
        })?;
        kept.extend_from_slice(&chunk.into_bytes());
        if kept.len() > max_bytes.saturating_mul(2).max(64 << 10) {
            kept.drain(..kept.len() - max_bytes);
        }
    }
    let start = kept.len().saturating_sub(max_bytes);
    let mut text = String::from_utf8_lossy(&kept[start..]).into_owned();
    // A cut through a multi-byte character shows as U+FFFD: drop it.
    if start > 0 && text.starts_with('\u{FFFD}') {
        text.remove(0);
    }
    Ok(text)
}
