//! The runtime files compiled into `opr` (see build.rs), written out once
//! per content hash: `<cache>/runtimes/<hash>/<language>/{helpers,hooks,src}`.

use opr_runtime::Language;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

include!(concat!(env!("OUT_DIR"), "/runtime_files.rs"));

fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("opr");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".cache/opr");
    }
    std::env::temp_dir().join("opr-cache")
}

/// The folder holding `node/` and `python/`, written if absent.
pub fn runtimes_dir() -> anyhow::Result<PathBuf> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    RUNTIME_FILES.hash(&mut h);
    let dir = cache_root().join(format!("runtimes/{:016x}", h.finish()));
    if dir.join(".complete").is_file() {
        return Ok(dir);
    }
    // Written beside and renamed, so a half-written tree is never used.
    let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    for (lang, rel, data, exec) in RUNTIME_FILES {
        let path = tmp.join(lang).join(rel);
        write_file(&path, data, *exec)?;
    }
    std::fs::write(tmp.join(".complete"), b"")?;
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        // Another process won the race; its copy is identical.
        Err(_) if dir.join(".complete").is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => Err(e.into()),
    }
}

/// The server folder of one language (holding `src/worker.*`).
pub fn server_dir(language: Language) -> anyhow::Result<PathBuf> {
    Ok(runtimes_dir()?.join(language.name()))
}

fn write_file(path: &Path, data: &[u8], exec: bool) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, data)?;
    let mode = if exec { 0o755 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}
