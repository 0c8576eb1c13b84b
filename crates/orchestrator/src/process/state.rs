//! The per-runtime record on disk, `<state_dir>/<name>/runtime.json`: what a
//! new backend needs to list, reach, exec into and clean up a runtime it did
//! not start (DESIGN §3: the orchestrator is the source of truth).

use super::cgroup::RuntimeCgroup;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const RECORD: &str = "runtime.json";
pub const OUTPUT_LOG: &str = "output.log";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeRecord {
    pub name: String,
    pub executor: String,
    pub labels: BTreeMap<String, String>,
    pub image: String,
    pub language: String,
    pub hostname: String,
    pub port: u16,
    /// `no`, `always`, `on-failure`, `unless-stopped`.
    pub restart: String,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// The current bwrap process (its own process group).
    pub pid: Option<i32>,
    /// Its start time (`/proc/<pid>/stat` field 22): tells our bwrap from
    /// an unrelated process that got the pid later.
    pub pid_start: Option<u64>,
    /// bwrap options (the layout); `execute` reuses them.
    pub sandbox: Vec<String>,
    pub command: Vec<String>,
    /// Full environment of the sandbox (base + spec). May hold secrets,
    /// hence the file's mode 0600.
    pub env: Vec<(String, String)>,
    pub cgroup: Option<RuntimeCgroup>,
}

impl RuntimeRecord {
    /// True when the recorded pid is still our bwrap.
    pub fn is_alive(&self) -> bool {
        match (self.pid, self.pid_start) {
            (Some(pid), Some(start)) => process_start_time(pid) == Some(start),
            _ => false,
        }
    }
}

/// Start time of `pid` in clock ticks since boot; `None` when it is gone
/// (or a zombie, which no longer runs anything).
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields
    // are counted after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // rest starts at field 3; field 22 is the 20th from here.
    fields.nth(18)?.parse().ok()
}

/// Detaches whatever is mounted on the folders directly inside `dir` (the
/// build tmpfs of the process backend), so the tree can be deleted; also
/// after a crash left the mount behind. A folder on another device than
/// `dir` is a mount point.
fn detach_mounts(dir: &Path) {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let Ok(parent) = fs::symlink_metadata(dir) else {
        return;
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || meta.dev() == parent.dev() {
            continue;
        }
        let Ok(target) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
            continue;
        };
        // SAFETY: a valid NUL-terminated path that outlives the call.
        let rc = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        if rc != 0 {
            tracing::warn!(
                "cannot detach {}: {}",
                path.display(),
                io::Error::last_os_error()
            );
        }
    }
}

/// Names become directory and cgroup names: keep them to a safe alphabet.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens (creating, mode 0700) the state folder.
    pub fn open(root: &Path) -> io::Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)?;
        Ok(StateDir {
            root: root.to_path_buf(),
        })
    }

    pub fn runtime_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.root.join(name).join(OUTPUT_LOG)
    }

    /// Creates the runtime's folder and its writable sub-folders.
    pub fn create_runtime_dirs(&self, name: &str, subdirs: &[&str]) -> io::Result<PathBuf> {
        let dir = self.runtime_dir(name);
        fs::DirBuilder::new().mode(0o700).create(&dir)?;
        for sub in subdirs {
            // Inside the sandbox these are the image's folders: world
            // readable like in a container image.
            fs::DirBuilder::new().mode(0o755).create(dir.join(sub))?;
        }
        Ok(dir)
    }

    /// Writes the record atomically (temporary file + rename).
    pub fn save(&self, rec: &RuntimeRecord) -> io::Result<()> {
        let dir = self.runtime_dir(&rec.name);
        let tmp = dir.join(".runtime.json.tmp");
        let json = serde_json::to_vec_pretty(rec).map_err(io::Error::other)?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&json)?;
        drop(f);
        fs::rename(&tmp, dir.join(RECORD))
    }

    pub fn load(&self, name: &str) -> io::Result<RuntimeRecord> {
        let bytes = fs::read(self.runtime_dir(name).join(RECORD))?;
        serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Every readable record, and the names of folders without one (a crash
    /// between creating the folder and writing the record).
    pub fn load_all(&self) -> io::Result<(Vec<RuntimeRecord>, Vec<String>)> {
        let mut records = Vec::new();
        let mut broken = Vec::new();
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            if !entry.file_type()?.is_dir() {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !valid_name(&name) {
                continue;
            }
            match self.load(&name) {
                Ok(rec) if rec.name == name => records.push(rec),
                _ => broken.push(name),
            }
        }
        records.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((records, broken))
    }

    /// Deletes the runtime's folder; a missing one is fine.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        let dir = self.runtime_dir(name);
        detach_mounts(&dir);
        let mut attempts = 0;
        loop {
            match fs::remove_dir_all(&dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                // A last write of a dying supervisor (log rotation, record)
                // can land while the tree is deleted: go again.
                Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty && attempts < 5 => {
                    attempts += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> RuntimeRecord {
        RuntimeRecord {
            name: name.into(),
            executor: "ex".into(),
            labels: BTreeMap::from([("k".into(), "v".into())]),
            image: "node".into(),
            language: "node".into(),
            hostname: "h".into(),
            port: 4000,
            restart: "no".into(),
            created_ms: 1,
            pid: None,
            pid_start: None,
            sandbox: vec!["--unshare-pid".into()],
            command: vec!["true".into()],
            env: vec![("A".into(), "B".into())],
            cgroup: None,
        }
    }

    #[test]
    fn remove_detaches_a_mounted_build_folder() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(&tmp.path().join("s")).expect("open");
        let dir = state.create_runtime_dirs("m", &["build"]).expect("dirs");
        let build =
            std::ffi::CString::new(dir.join("build").to_str().expect("utf-8")).expect("path");
        // SAFETY: valid NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                build.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                c"size=1m".as_ptr().cast(),
            )
        };
        if rc != 0 {
            eprintln!(
                "skipped: cannot mount a tmpfs here: {}",
                io::Error::last_os_error()
            );
            return;
        }
        fs::write(dir.join("build/file"), b"x").expect("write");
        state
            .remove("m")
            .expect("remove a folder with a mount in it");
        assert!(!dir.exists());
        let mounts = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(
            !mounts.contains(dir.to_str().expect("utf-8")),
            "mount left behind"
        );
    }

    #[test]
    fn save_load_and_list() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(&tmp.path().join("s")).expect("open");
        state.create_runtime_dirs("a", &["function"]).expect("dirs");
        state.create_runtime_dirs("b", &[]).expect("dirs");
        let rec = record("a");
        state.save(&rec).expect("save");
        assert_eq!(state.load("a").expect("load"), rec);
        let (recs, broken) = state.load_all().expect("all");
        assert_eq!(recs, vec![rec]);
        assert_eq!(broken, vec!["b".to_owned()]);
        let mode = |p: &Path| {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(p).expect("meta").permissions().mode() & 0o777
        };
        assert_eq!(mode(&state.runtime_dir("a").join(RECORD)), 0o600);
        assert_eq!(mode(&tmp.path().join("s")), 0o700);
        state.remove("a").expect("remove");
        state.remove("a").expect("remove twice");
        assert!(!state.runtime_dir("a").exists());
    }

    #[test]
    fn names() {
        assert!(valid_name("exec-1_a.b"));
        for bad in ["", ".", "..", ".x", "a/b", "a b", "ä"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn start_time_of_self_and_of_nothing() {
        let me = std::process::id() as i32;
        assert!(process_start_time(me).is_some());
        assert_eq!(process_start_time(i32::MAX), None);
        let mut rec = record("x");
        rec.pid = Some(me);
        rec.pid_start = process_start_time(me);
        assert!(rec.is_alive());
        rec.pid_start = rec.pid_start.map(|s| s + 1);
        assert!(!rec.is_alive());
    }
}
