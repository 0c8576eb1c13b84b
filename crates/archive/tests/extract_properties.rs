//! Property tests: whatever a hostile archive holds, extraction never
//! creates anything outside its folder and never panics.

use proptest::prelude::*;
use std::path::Path;

#[derive(Debug, Clone)]
enum Entry {
    File(String, Vec<u8>),
    Dir(String),
    Symlink(String, String),
    Hardlink(String, String),
}

fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("..".to_string()),
        Just(".".to_string()),
        Just("".to_string()),
        "[a-c]{1,2}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    (any::<bool>(), prop::collection::vec(component(), 1..4)).prop_map(|(absolute, parts)| {
        let joined = parts.join("/");
        if absolute {
            format!("/{joined}")
        } else {
            joined
        }
    })
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        (path(), prop::collection::vec(any::<u8>(), 0..16)).prop_map(|(p, d)| Entry::File(p, d)),
        path().prop_map(Entry::Dir),
        (path(), path()).prop_map(|(p, t)| Entry::Symlink(p, t)),
        (path(), path()).prop_map(|(p, t)| Entry::Hardlink(p, t)),
    ]
}

/// Writes raw header names so hostile paths survive (the tar crate's
/// setters refuse `..`).
fn build(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (name, link, kind, data): (&str, Option<&str>, tar::EntryType, &[u8]) = match e {
            Entry::File(p, d) => (p, None, tar::EntryType::Regular, d),
            Entry::Dir(p) => (p, None, tar::EntryType::Directory, &[]),
            Entry::Symlink(p, t) => (p, Some(t), tar::EntryType::Symlink, &[]),
            Entry::Hardlink(p, t) => (p, Some(t), tar::EntryType::Link, &[]),
        };
        if name.is_empty() || name.len() > 99 || link.is_some_and(|l| l.len() > 99) {
            continue;
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            old.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        b.append(&h, data).expect("append");
    }
    b.into_inner().expect("finish")
}

/// Resolves `.` and `..` lexically.
fn normalize(path: &Path) -> std::path::PathBuf {
    let mut out = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Everything under `root`, without following links.
fn snapshot(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            out.push(e.path());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn nothing_escapes_the_destination(entries in prop::collection::vec(entry(), 1..12), allow_abs in any::<bool>()) {
        let sandbox = tempfile::tempdir().expect("tempdir");
        // dest is nested two levels down so ".." escapes land in watched folders.
        let dest = sandbox.path().join("a/b/dest");
        std::fs::create_dir_all(&dest).expect("mkdir");
        let before: Vec<_> = snapshot(sandbox.path()).into_iter().filter(|p| !p.starts_with(&dest)).collect();
        let limits = opr_archive::Limits { allow_absolute_symlinks: allow_abs, ..opr_archive::Limits::default() };
        let _ = opr_archive::extract(&build(&entries)[..], &dest, limits);
        let after: Vec<_> = snapshot(sandbox.path()).into_iter().filter(|p| !p.starts_with(&dest)).collect();
        prop_assert_eq!(before, after);
        // No link inside may point outside, except absolute ones when allowed.
        for p in snapshot(&dest) {
            if let Ok(target) = std::fs::read_link(&p) {
                if target.is_absolute() {
                    prop_assert!(allow_abs, "absolute link kept: {:?} -> {:?}", p, target);
                } else {
                    let resolved = normalize(&p.parent().expect("parent").join(&target));
                    prop_assert!(resolved.starts_with(&dest), "link outside: {:?} -> {:?}", p, target);
                }
            }
        }
    }
}
