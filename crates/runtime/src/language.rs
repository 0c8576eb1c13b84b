//! The languages `opr-runtime` has workers for, and their defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Node,
    Python,
    /// Bun runs the Node worker (`runtimes/bun/src/worker.js` links to it).
    Bun,
}

impl Language {
    pub fn parse(name: &str) -> Option<Language> {
        match name {
            "node" | "nodejs" | "javascript" => Some(Language::Node),
            "python" | "python3" => Some(Language::Python),
            "bun" => Some(Language::Bun),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Language::Node => "node",
            Language::Python => "python",
            Language::Bun => "bun",
        }
    }

    /// runtime-protocol §5.14.
    pub fn default_entrypoint(self) -> &'static str {
        match self {
            Language::Node => "index.js",
            Language::Python => "main.py",
            // As Open Runtimes' Bun runtime: Bun runs TypeScript as it is.
            Language::Bun => "index.ts",
        }
    }

    /// The worker program inside a runtime's server folder.
    pub fn worker_file(self, server_dir: &Path) -> PathBuf {
        server_dir.join("src").join(match self {
            Language::Node | Language::Bun => "worker.js",
            Language::Python => "worker.py",
        })
    }

    pub fn default_interpreter(self) -> PathBuf {
        match self {
            Language::Node => PathBuf::from("node"),
            Language::Bun => PathBuf::from("bun"),
            // Not a pyenv shim: those add 100 ms to every start.
            Language::Python => PathBuf::from("/usr/bin/python3"),
        }
    }

    /// Node and Bun serve many requests on one event loop; Python runs
    /// `ceil(OPEN_RUNTIMES_CPUS)` workers (runtime-protocol §3.14).
    pub fn default_workers(self, env: &BTreeMap<String, String>) -> usize {
        if let Some(n) = env
            .get("OPR_RUNTIME_WORKERS")
            .and_then(|v| v.parse::<usize>().ok())
        {
            return n.clamp(1, 64);
        }
        match self {
            Language::Node | Language::Bun => 1,
            Language::Python => env
                .get("OPEN_RUNTIMES_CPUS")
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v > 0.0)
                .map(|v| (v.ceil() as usize).clamp(1, 64))
                .unwrap_or(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_workers_follow_cpus() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            Language::Python.default_workers(&env(&[("OPEN_RUNTIMES_CPUS", "1.5")])),
            2
        );
        assert_eq!(
            Language::Python.default_workers(&env(&[("OPEN_RUNTIMES_CPUS", "junk")])),
            1
        );
        assert_eq!(Language::Python.default_workers(&env(&[])), 1);
        assert_eq!(
            Language::Node.default_workers(&env(&[("OPEN_RUNTIMES_CPUS", "4")])),
            1
        );
        assert_eq!(
            Language::Node.default_workers(&env(&[("OPR_RUNTIME_WORKERS", "3")])),
            3
        );
        assert_eq!(
            Language::Bun.default_workers(&env(&[("OPEN_RUNTIMES_CPUS", "4")])),
            1
        );
    }

    #[test]
    fn bun_runs_the_node_worker_on_typescript_by_default() {
        let bun = Language::parse("bun").expect("bun is known");
        assert_eq!(bun, Language::Bun);
        assert_eq!(bun.name(), "bun");
        assert_eq!(bun.default_entrypoint(), "index.ts");
        assert_eq!(bun.default_interpreter(), PathBuf::from("bun"));
        assert_eq!(
            bun.worker_file(Path::new("/srv")),
            PathBuf::from("/srv/src/worker.js")
        );
    }
}
