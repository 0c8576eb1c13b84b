//! The languages `opr-runtime` has workers for, and their defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Node,
    Python,
}

impl Language {
    pub fn parse(name: &str) -> Option<Language> {
        match name {
            "node" | "nodejs" | "javascript" => Some(Language::Node),
            "python" | "python3" => Some(Language::Python),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Language::Node => "node",
            Language::Python => "python",
        }
    }

    /// runtime-protocol §5.14.
    pub fn default_entrypoint(self) -> &'static str {
        match self {
            Language::Node => "index.js",
            Language::Python => "main.py",
        }
    }

    /// The worker program inside a runtime's server folder.
    pub fn worker_file(self, server_dir: &Path) -> PathBuf {
        server_dir.join("src").join(match self {
            Language::Node => "worker.js",
            Language::Python => "worker.py",
        })
    }

    pub fn default_interpreter(self) -> PathBuf {
        match self {
            Language::Node => PathBuf::from("node"),
            // Not a pyenv shim: those add 100 ms to every start.
            Language::Python => PathBuf::from("/usr/bin/python3"),
        }
    }

    /// Node serves many requests on one event loop; Python runs
    /// `ceil(OPEN_RUNTIMES_CPUS)` workers (runtime-protocol §3.14).
    pub fn default_workers(self, env: &BTreeMap<String, String>) -> usize {
        if let Some(n) = env
            .get("OPR_RUNTIME_WORKERS")
            .and_then(|v| v.parse::<usize>().ok())
        {
            return n.clamp(1, 64);
        }
        match self {
            Language::Node => 1,
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
    }
}
