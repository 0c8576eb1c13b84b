//! The language workers are compiled into `opr`, so the binary works from any
//! folder; they are written out once per content hash.

use opr_runtime::Language;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

const NODE_WORKER: &str = include_str!("../../../runtimes/node/src/worker.js");
const PYTHON_WORKER: &str = include_str!("../../../runtimes/python/src/worker.py");

fn worker_source(language: Language) -> (&'static str, &'static str) {
    match language {
        Language::Node => ("worker.js", NODE_WORKER),
        Language::Python => ("worker.py", PYTHON_WORKER),
    }
}

fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("opr");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".cache/opr");
    }
    std::env::temp_dir().join("opr-cache")
}

/// The server folder for `language` (holding `src/worker.*`), written if absent.
pub fn server_dir(language: Language) -> anyhow::Result<PathBuf> {
    let (name, source) = worker_source(language);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    source.hash(&mut h);
    let dir = cache_root().join(format!("runtimes/{}-{:016x}", language.name(), h.finish()));
    let file = dir.join("src").join(name);
    if std::fs::read_to_string(&file).ok().as_deref() != Some(source) {
        write_atomically(&file, source)?;
    }
    Ok(dir)
}

fn write_atomically(path: &Path, contents: &str) -> anyhow::Result<()> {
    let parent = path
        .parent()
        .ok_or_else(|| anyhow::anyhow!("no parent for {}", path.display()))?;
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(".tmp-{}", std::process::id()));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
