//! Build contexts: the files of a folder that a `.dockerignore` lets
//! through, as the tar archive the build API takes. The engine's legacy
//! builder (the only one without buildx) leaves `.dockerignore` to the
//! client, so the patterns are applied here, with Docker's rules: `*`, `?`
//! and `**`, `!` re-includes, the last matching pattern wins, and a
//! pattern matching a folder matches everything in it.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
struct Rule {
    negate: bool,
    segments: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Ignore {
    rules: Vec<Rule>,
}

fn segments(path: &str) -> Vec<&str> {
    path.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect()
}

/// One path segment against one pattern segment (`*`, `?`, `\` escapes).
fn segment_matches(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            segment_matches(&pattern[1..], name)
                || (!name.is_empty() && segment_matches(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => segment_matches(&pattern[1..], &name[1..]),
        (Some(b'\\'), Some(c)) if pattern.len() > 1 => {
            pattern[1] == *c && segment_matches(&pattern[2..], &name[1..])
        }
        (Some(p), Some(c)) => p == c && segment_matches(&pattern[1..], &name[1..]),
        _ => false,
    }
}

fn path_matches(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p == "**" => {
            path_matches(rest, path) || (!path.is_empty() && path_matches(pattern, &path[1..]))
        }
        Some((p, rest)) => match path.split_first() {
            Some((name, path_rest)) => {
                segment_matches(p.as_bytes(), name.as_bytes()) && path_matches(rest, path_rest)
            }
            None => false,
        },
    }
}

impl Rule {
    /// Docker matches a pattern against a path and each of its parents.
    fn matches(&self, path: &[&str]) -> bool {
        (1..=path.len()).any(|n| path_matches(&self.segments, &path[..n]))
    }

    /// Could this pattern match something inside `dir`?
    fn may_reach_below(&self, dir: &[&str]) -> bool {
        for (i, name) in dir.iter().enumerate() {
            match self.segments.get(i) {
                None => return true,
                Some(p) if p == "**" => return true,
                Some(p) if !segment_matches(p.as_bytes(), name.as_bytes()) => return false,
                Some(_) => {}
            }
        }
        true
    }
}

impl Ignore {
    pub fn parse(text: &str) -> Self {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| {
                let (negate, pattern) = match l.strip_prefix('!') {
                    Some(p) => (true, p.trim()),
                    None => (false, l),
                };
                let segs: Vec<String> = segments(pattern).into_iter().map(str::to_owned).collect();
                (!segs.is_empty()).then_some(Rule {
                    negate,
                    segments: segs,
                })
            })
            .collect();
        Ignore { rules }
    }

    /// Is `path` (relative, `/`-separated) left out of the context?
    pub fn excluded(&self, path: &str) -> bool {
        let path = segments(path);
        let mut excluded = false;
        for rule in &self.rules {
            if rule.matches(&path) {
                excluded = !rule.negate;
            }
        }
        excluded
    }

    /// Must an excluded folder still be walked, because a `!` pattern may
    /// take something inside it back?
    pub fn may_include_below(&self, dir: &str) -> bool {
        let dir = segments(dir);
        self.rules
            .iter()
            .any(|r| r.negate && r.may_reach_below(&dir))
    }
}

/// The entries of `root` the rules let through, relative, sorted, folders
/// before what they hold. Symbolic links are entries, never followed.
pub fn collect(root: &Path, ignore: &Ignore) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    walk(root, Path::new(""), ignore, &mut out)?;
    Ok(out)
}

fn walk(root: &Path, rel: &Path, ignore: &Ignore, out: &mut Vec<PathBuf>) -> io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))?.collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = rel.join(entry.file_name());
        let Some(text) = path.to_str() else {
            continue;
        };
        let excluded = ignore.excluded(text);
        if entry.file_type()?.is_dir() {
            if !excluded {
                out.push(path.clone());
                walk(root, &path, ignore, out)?;
            } else if ignore.may_include_below(text) {
                walk(root, &path, ignore, out)?;
            }
        } else if !excluded {
            out.push(path);
        }
    }
    Ok(())
}

/// A tar of `entries` (relative to `root`) plus `extra` files
/// (name in the archive, path on disk). Ownership and times are left out
/// so that the archive depends only on names, contents and modes.
pub fn tar(root: &Path, entries: &[PathBuf], extra: &[(String, PathBuf)]) -> io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    // GNU sparse entries (type 'S') are refused by the engine.
    builder.sparse(false);
    for rel in entries {
        builder.append_path_with_name(root.join(rel), rel)?;
    }
    for (name, path) in extra {
        if !entries.iter().any(|e| e == Path::new(name)) {
            builder.append_path_with_name(path, name)?;
        }
    }
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = "# comment\n*\n!target/release/opr-runtime\n!runtimes/node/src\n\
                        !runtimes/node/helpers\nruntimes/node/src/function\n**/node_modules\n";

    #[test]
    fn last_match_wins_and_parents_match() {
        let ig = Ignore::parse(NODE);
        assert!(ig.excluded("Cargo.toml"));
        assert!(ig.excluded("target/release/deps/x"));
        assert!(!ig.excluded("target/release/opr-runtime"));
        assert!(!ig.excluded("runtimes/node/src/server.js"));
        assert!(!ig.excluded("runtimes/node/helpers/a/b.sh"));
        assert!(ig.excluded("runtimes/node/src/function/index.js"));
        assert!(ig.excluded("runtimes/node/src/x/node_modules/y.js"));
        assert!(ig.excluded("runtimes/python/src/a.py"));
        assert!(ig.excluded("runtimes/node/hooks/x"));
    }

    #[test]
    fn walking_only_where_a_negation_reaches() {
        let ig = Ignore::parse(NODE);
        assert!(ig.may_include_below("target"));
        assert!(ig.may_include_below("target/release"));
        assert!(!ig.may_include_below("target/debug"));
        assert!(!ig.may_include_below("target/release/deps"));
        assert!(ig.may_include_below("runtimes"));
        assert!(!ig.may_include_below("crates"));
        assert!(!Ignore::parse("*\n").may_include_below("x"));
        assert!(Ignore::parse("*\n!**/keep").may_include_below("x/y"));
    }

    #[test]
    fn globs() {
        assert!(segment_matches(b"*.rs", b"main.rs"));
        assert!(!segment_matches(b"*.rs", b"main.rc"));
        assert!(segment_matches(b"a?c", b"abc"));
        assert!(segment_matches(b"\\*", b"*"));
        assert!(!segment_matches(b"\\*", b"x"));
        let ig = Ignore::parse("**/*.log\n!keep/**/*.log");
        assert!(ig.excluded("a/b/c.log"));
        assert!(ig.excluded("c.log"));
        assert!(!ig.excluded("keep/x/c.log"));
        assert!(!ig.excluded("a/b/c.txt"));
    }

    #[test]
    fn collects_and_tars_what_is_let_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        for f in [
            "Cargo.toml",
            "target/release/opr-runtime",
            "target/release/deps/big",
            "runtimes/node/src/server.js",
            "runtimes/node/src/function/index.js",
            "runtimes/node/helpers/start.sh",
            "runtimes/node/Dockerfile",
        ] {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, f).expect("write");
        }
        let ig = Ignore::parse(NODE);
        let entries = collect(root, &ig).expect("collect");
        let names: Vec<String> = entries
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec![
                "runtimes/node/helpers",
                "runtimes/node/helpers/start.sh",
                "runtimes/node/src",
                "runtimes/node/src/server.js",
                "target/release/opr-runtime",
            ]
        );
        let data = tar(
            root,
            &entries,
            &[(
                "runtimes/node/Dockerfile".into(),
                root.join("runtimes/node/Dockerfile"),
            )],
        )
        .expect("tar");
        let mut archive = tar::Archive::new(&data[..]);
        let mut in_tar: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .to_string_lossy()
                    .trim_end_matches('/')
                    .to_owned()
            })
            .collect();
        in_tar.sort();
        let mut want = names.clone();
        want.push("runtimes/node/Dockerfile".into());
        want.sort();
        assert_eq!(in_tar, want);
    }
}
