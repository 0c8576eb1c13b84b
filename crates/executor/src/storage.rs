//! The local storage device (executor-api §13): `source`, `destination` and
//! a build's `path` are absolute paths on this filesystem.

use std::path::{Path, PathBuf};

/// 13 hex characters: 8 of seconds, 5 of microseconds (executor-api §7.8).
pub fn unique_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{:08x}{:05x}", now.as_secs() as u32, now.subsec_micros())
}

/// Copies `from` to `to` through a temporary name, so a reader never sees a
/// half-written file.
pub async fn copy_atomically(from: &Path, to: &Path) -> std::io::Result<u64> {
    if let Some(parent) = to.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let tmp = to.with_extension(format!("part-{}", fastrand::u32(..)));
    let copied = tokio::fs::copy(from, &tmp).await;
    match copied {
        Ok(n) => {
            tokio::fs::rename(&tmp, to).await?;
            Ok(n)
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            Err(e)
        }
    }
}

/// `destination`, one `/`, then `<id>.gz`.
pub fn build_path(destination: &str) -> PathBuf {
    PathBuf::from(format!(
        "{}/{}.gz",
        destination.trim_end_matches('/'),
        unique_id()
    ))
}
