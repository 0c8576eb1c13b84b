//! The build cache's size cap: artifacts are kept per key (never shared
//! across keys) and the least recently used are evicted past the cap.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Every `<key>/lz4-b1M/stores.sqfs` under `root`, with size and last use.
fn artifacts(root: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    let mut out = Vec::new();
    let Ok(keys) = std::fs::read_dir(root) else {
        return out;
    };
    for key in keys.flatten() {
        let artifact = key.path().join("lz4-b1M/stores.sqfs");
        if let Ok(meta) = std::fs::metadata(&artifact) {
            let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            out.push((artifact, meta.len(), used));
        }
    }
    out
}

/// Marks an artifact as used now (its modification time is the LRU clock).
pub fn touch(artifact: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(artifact) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Deletes least recently used artifacts until the total is at most
/// `max_bytes`. Returns the keys' folders that were removed.
pub fn evict(root: &Path, max_bytes: u64) -> Vec<PathBuf> {
    let mut all = artifacts(root);
    let mut total: u64 = all.iter().map(|a| a.1).sum();
    all.sort_by_key(|a| a.2);
    let mut removed = Vec::new();
    for (artifact, size, _) in all {
        if total <= max_bytes {
            break;
        }
        // <root>/<key>/lz4-b1M/stores.sqfs → <root>/<key>
        if let Some(key_dir) = artifact.parent().and_then(Path::parent) {
            if std::fs::remove_dir_all(key_dir).is_ok() {
                total = total.saturating_sub(size);
                removed.push(key_dir.to_path_buf());
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn put(root: &Path, key: &str, size: usize, age_secs: u64) {
        let dir = root.join(key).join("lz4-b1M");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let p = dir.join("stores.sqfs");
        std::fs::write(&p, vec![0u8; size]).expect("write");
        let f = std::fs::File::options()
            .append(true)
            .open(&p)
            .expect("open");
        f.set_modified(SystemTime::now() - Duration::from_secs(age_secs))
            .expect("mtime");
    }

    #[test]
    fn evicts_oldest_until_under_the_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        put(dir.path(), "old", 100, 300);
        put(dir.path(), "mid", 100, 200);
        put(dir.path(), "new", 100, 100);
        let removed = evict(dir.path(), 150);
        assert_eq!(
            removed,
            vec![dir.path().join("old"), dir.path().join("mid")]
        );
        assert!(dir.path().join("new/lz4-b1M/stores.sqfs").exists());
    }

    #[test]
    fn touch_makes_an_artifact_recent() {
        let dir = tempfile::tempdir().expect("tempdir");
        put(dir.path(), "a", 100, 300);
        put(dir.path(), "b", 100, 200);
        touch(&dir.path().join("a/lz4-b1M/stores.sqfs"));
        assert_eq!(evict(dir.path(), 100), vec![dir.path().join("b")]);
    }
}
