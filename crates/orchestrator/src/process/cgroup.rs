//! Per-runtime cgroups for memory, CPU and pids limits (executor-api §7.5),
//! on cgroup v1 or v2, detected at run time. File access goes through
//! [`CgroupFs`] so the logic is tested without root or a cgroup mount.

use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

/// CFS period; the quota is `cpus ×` this (executor-api §7.5).
pub const CPU_PERIOD_US: u64 = 100_000;
/// Folder under which per-runtime cgroups are created.
pub const DEFAULT_PARENT: &str = "opr";

/// The few file operations cgroups need.
pub trait CgroupFs: Send + Sync {
    /// Creates `p` and missing parents; fine when it exists.
    fn create_dir_all(&self, p: &Path) -> io::Result<()>;
    /// Creates `p`; `AlreadyExists` when it exists.
    fn create_dir(&self, p: &Path) -> io::Result<()>;
    fn remove_dir(&self, p: &Path) -> io::Result<()>;
    fn write(&self, p: &Path, value: &str) -> io::Result<()>;
    fn read(&self, p: &Path) -> io::Result<String>;
    fn exists(&self, p: &Path) -> bool;
}

/// The real file system.
pub struct HostFs;

impl CgroupFs for HostFs {
    fn create_dir_all(&self, p: &Path) -> io::Result<()> {
        std::fs::create_dir_all(p)
    }
    fn create_dir(&self, p: &Path) -> io::Result<()> {
        std::fs::create_dir(p)
    }
    fn remove_dir(&self, p: &Path) -> io::Result<()> {
        std::fs::remove_dir(p)
    }
    fn write(&self, p: &Path, value: &str) -> io::Result<()> {
        std::fs::write(p, value)
    }
    fn read(&self, p: &Path) -> io::Result<String> {
        std::fs::read_to_string(p)
    }
    fn exists(&self, p: &Path) -> bool {
        p.exists()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Version {
    V1,
    V2,
}

/// Limits of one runtime; `None` = unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub cpu_quota_us: Option<u64>,
    pub pids_max: Option<u64>,
}

impl Limits {
    /// Memory in decimal megabytes and CPUs in cores (executor-api §7.5);
    /// zero means unlimited.
    pub fn from_spec(cpus: f64, memory_mb: u64, pids_limit: u64) -> Self {
        let cpu_quota_us = (cpus.is_finite() && cpus > 0.0)
            // The kernel refuses quotas under 1 ms.
            .then(|| ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1_000));
        Limits {
            memory_bytes: (memory_mb > 0).then(|| memory_mb.saturating_mul(1_000_000)),
            cpu_quota_us,
            pids_max: (pids_limit > 0).then_some(pids_limit),
        }
    }
}

/// Where runtime cgroups are made: parent folders found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    V1 {
        memory: PathBuf,
        cpu: PathBuf,
        pids: PathBuf,
        /// Separate mount on some systems, co-mounted with cpu on others.
        cpuacct: Option<PathBuf>,
    },
    V2 {
        mount: PathBuf,
        parent: PathBuf,
    },
}

/// One runtime's cgroup, as recorded in its state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeCgroup {
    pub version: Version,
    pub memory: PathBuf,
    pub cpu: PathBuf,
    pub pids: PathBuf,
    pub cpuacct: Option<PathBuf>,
}

impl RuntimeCgroup {
    /// Distinct directories (one on v2, up to four on v1).
    pub fn dirs(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = Vec::with_capacity(4);
        for d in [
            Some(self.memory.as_path()),
            Some(self.cpu.as_path()),
            Some(self.pids.as_path()),
            self.cpuacct.as_deref(),
        ]
        .into_iter()
        .flatten()
        {
            if !v.contains(&d) {
                v.push(d);
            }
        }
        v
    }

    /// Files a new process writes `0` ("myself") into, before exec, to
    /// join this cgroup.
    ///
    /// v1: `tasks`, which moves one thread (the forked child has only one).
    /// The kernel then skips the global threadgroup lock that
    /// `cgroup.procs` takes, and with it an RCU grace period: measured
    /// 0.6 ms instead of 7 ms per start here. v2 has no such file for
    /// domain cgroups: `cgroup.procs`.
    pub fn join_files(&self) -> Vec<PathBuf> {
        let file = match self.version {
            Version::V1 => "tasks",
            Version::V2 => "cgroup.procs",
        };
        self.dirs().into_iter().map(|d| d.join(file)).collect()
    }
}

fn ctx(e: io::Error, what: &str, p: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
}

fn write(fs: &dyn CgroupFs, p: &Path, v: &str) -> io::Result<()> {
    fs.write(p, v).map_err(|e| ctx(e, "cannot write", p))
}

/// Makes `dir`; an existing one (left by a crash) is reused.
fn make(fs: &dyn CgroupFs, dir: &Path) -> io::Result<()> {
    match fs.create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(ctx(e, "cannot create", dir)),
        _ => Ok(()),
    }
}

const V2_CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

impl Hierarchy {
    pub fn version(&self) -> Version {
        match self {
            Hierarchy::V1 { .. } => Version::V1,
            Hierarchy::V2 { .. } => Version::V2,
        }
    }

    /// The paths of runtime `name`'s cgroup (nothing is created).
    pub fn paths(&self, name: &str) -> RuntimeCgroup {
        match self {
            Hierarchy::V1 {
                memory,
                cpu,
                pids,
                cpuacct,
            } => RuntimeCgroup {
                version: Version::V1,
                memory: memory.join(name),
                cpu: cpu.join(name),
                pids: pids.join(name),
                cpuacct: cpuacct.as_ref().map(|p| p.join(name)),
            },
            Hierarchy::V2 { parent, .. } => {
                let d = parent.join(name);
                RuntimeCgroup {
                    version: Version::V2,
                    memory: d.clone(),
                    cpu: d.clone(),
                    pids: d,
                    cpuacct: None,
                }
            }
        }
    }

    /// Creates `<parent>/<name>` in every hierarchy and writes the limits.
    /// On failure, what was created is removed again.
    pub fn create(
        &self,
        fs: &dyn CgroupFs,
        name: &str,
        limits: &Limits,
    ) -> io::Result<RuntimeCgroup> {
        let cg = self.paths(name);
        let result = self.prepare_parents(fs).and_then(|()| {
            for d in cg.dirs() {
                make(fs, d)?;
            }
            write_limits(fs, &cg, limits)
        });
        match result {
            Ok(()) => Ok(cg),
            Err(e) => {
                let _ = remove(fs, &cg);
                Err(e)
            }
        }
    }

    fn prepare_parents(&self, fs: &dyn CgroupFs) -> io::Result<()> {
        match self {
            Hierarchy::V1 {
                memory,
                cpu,
                pids,
                cpuacct,
            } => {
                for p in [Some(memory), Some(cpu), Some(pids), cpuacct.as_ref()]
                    .into_iter()
                    .flatten()
                {
                    fs.create_dir_all(p)
                        .map_err(|e| ctx(e, "cannot create", p))?;
                }
                Ok(())
            }
            Hierarchy::V2 { mount, parent } => {
                // v2 hands a controller to children only when every
                // ancestor lists it in cgroup.subtree_control.
                let rel = parent.strip_prefix(mount).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{} is not under {}", parent.display(), mount.display()),
                    )
                })?;
                let mut dir = mount.clone();
                enable_controllers(fs, &dir)?;
                for part in rel.components() {
                    dir.push(part);
                    fs.create_dir_all(&dir)
                        .map_err(|e| ctx(e, "cannot create", &dir))?;
                    enable_controllers(fs, &dir)?;
                }
                Ok(())
            }
        }
    }
}

fn enable_controllers(fs: &dyn CgroupFs, dir: &Path) -> io::Result<()> {
    let file = dir.join("cgroup.subtree_control");
    let have = fs.read(&file).map_err(|e| ctx(e, "cannot read", &file))?;
    let missing: Vec<String> = V2_CONTROLLERS
        .iter()
        .filter(|c| !have.split_whitespace().any(|h| h == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write(fs, &file, &missing.join(" "))
}

fn write_limits(fs: &dyn CgroupFs, cg: &RuntimeCgroup, l: &Limits) -> io::Result<()> {
    match cg.version {
        Version::V1 => {
            let mem = l.memory_bytes.map_or("-1".to_owned(), |b| b.to_string());
            write(fs, &cg.memory.join("memory.limit_in_bytes"), &mem)?;
            write(
                fs,
                &cg.cpu.join("cpu.cfs_period_us"),
                &CPU_PERIOD_US.to_string(),
            )?;
            let quota = l.cpu_quota_us.map_or("-1".to_owned(), |q| q.to_string());
            write(fs, &cg.cpu.join("cpu.cfs_quota_us"), &quota)?;
        }
        Version::V2 => {
            let mem = l.memory_bytes.map_or("max".to_owned(), |b| b.to_string());
            write(fs, &cg.memory.join("memory.max"), &mem)?;
            let quota = l.cpu_quota_us.map_or("max".to_owned(), |q| q.to_string());
            write(
                fs,
                &cg.cpu.join("cpu.max"),
                &format!("{quota} {CPU_PERIOD_US}"),
            )?;
        }
    }
    let pids = l.pids_max.map_or("max".to_owned(), |p| p.to_string());
    write(fs, &cg.pids.join("pids.max"), &pids)
}

/// Changes memory and CPU of a live runtime (a warm-pool runtime taking a
/// function's limits); the process limit stays.
pub fn update(fs: &dyn CgroupFs, cg: &RuntimeCgroup, cpus: f64, memory_mb: u64) -> io::Result<()> {
    let l = Limits::from_spec(cpus, memory_mb, 0);
    match cg.version {
        Version::V1 => {
            let mem = l.memory_bytes.map_or("-1".to_owned(), |b| b.to_string());
            write(fs, &cg.memory.join("memory.limit_in_bytes"), &mem)?;
            let quota = l.cpu_quota_us.map_or("-1".to_owned(), |q| q.to_string());
            write(fs, &cg.cpu.join("cpu.cfs_quota_us"), &quota)
        }
        Version::V2 => {
            let mem = l.memory_bytes.map_or("max".to_owned(), |b| b.to_string());
            write(fs, &cg.memory.join("memory.max"), &mem)?;
            let quota = l.cpu_quota_us.map_or("max".to_owned(), |q| q.to_string());
            write(
                fs,
                &cg.cpu.join("cpu.max"),
                &format!("{quota} {CPU_PERIOD_US}"),
            )
        }
    }
}

/// Removes the runtime's cgroup directories; missing ones are fine. Fails
/// (`EBUSY`) while processes remain: kill them first.
pub fn remove(fs: &dyn CgroupFs, cg: &RuntimeCgroup) -> io::Result<()> {
    let mut first_err = None;
    for d in cg.dirs() {
        match fs.remove_dir(d) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                first_err.get_or_insert(ctx(e, "cannot remove", d));
            }
            _ => {}
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Every process in the cgroup (host pids).
pub fn procs(fs: &dyn CgroupFs, cg: &RuntimeCgroup) -> Vec<i32> {
    let mut out: Vec<i32> = Vec::new();
    for d in cg.dirs() {
        if let Ok(text) = fs.read(&d.join("cgroup.procs")) {
            for pid in text.lines().filter_map(|l| l.trim().parse().ok()) {
                if !out.contains(&pid) {
                    out.push(pid);
                }
            }
        }
    }
    out
}

/// v2's one-shot kill of the whole cgroup (kernel 5.14+). False when not
/// available; the caller then signals [`procs`] one by one.
pub fn kill_all(fs: &dyn CgroupFs, cg: &RuntimeCgroup) -> bool {
    let file = cg.pids.join("cgroup.kill");
    cg.version == Version::V2 && fs.exists(&file) && fs.write(&file, "1").is_ok()
}

/// CPU time used so far, in nanoseconds.
pub fn cpu_usage_ns(fs: &dyn CgroupFs, cg: &RuntimeCgroup) -> Option<u64> {
    match cg.version {
        Version::V1 => {
            let dir = cg.cpuacct.as_ref()?;
            fs.read(&dir.join("cpuacct.usage"))
                .ok()?
                .trim()
                .parse()
                .ok()
        }
        Version::V2 => {
            let stat = fs.read(&cg.cpu.join("cpu.stat")).ok()?;
            stat_value(&stat, "usage_usec").map(|us| us.saturating_mul(1_000))
        }
    }
}

/// Memory in use without the inactive page cache, as `docker stats` shows.
pub fn memory_bytes(fs: &dyn CgroupFs, cg: &RuntimeCgroup) -> Option<u64> {
    let (usage_file, inactive_key) = match cg.version {
        Version::V1 => ("memory.usage_in_bytes", "total_inactive_file"),
        Version::V2 => ("memory.current", "inactive_file"),
    };
    let usage: u64 = fs
        .read(&cg.memory.join(usage_file))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let inactive = fs
        .read(&cg.memory.join("memory.stat"))
        .ok()
        .and_then(|s| stat_value(&s, inactive_key))
        .unwrap_or(0);
    Some(usage.saturating_sub(inactive))
}

/// `key value` lines (cpu.stat, memory.stat, pids.events).
pub fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

// ------------------------------------------------------------ detection

struct Mount {
    root: String,
    point: PathBuf,
    fstype: String,
    superopts: String,
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = (b[i] == b'\\')
            .then(|| b.get(i + 1..i + 4))
            .flatten()
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        match octal {
            Some(v) => {
                out.push(v);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let mut post = post.split(' ');
            let fstype = post.next()?.to_owned();
            let _source = post.next()?;
            let superopts = post.next().unwrap_or("").to_owned();
            Some(Mount {
                root: unescape(pre.get(3)?),
                point: PathBuf::from(unescape(pre.get(4)?)),
                fstype,
                superopts,
            })
        })
        .collect()
}

/// `path` of the `/proc/self/cgroup` line whose controller list holds
/// `controller` (`""` = the v2 line).
fn own_path<'a>(self_cgroup: &'a str, controller: &str) -> Option<&'a str> {
    self_cgroup.lines().find_map(|l| {
        let mut it = l.splitn(3, ':');
        let _id = it.next()?;
        let ctrls = it.next()?;
        let path = it.next()?;
        let hit = if controller.is_empty() {
            ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == controller)
        };
        hit.then_some(path)
    })
}

/// `<mount point>/<own cgroup relative to the mount root>`.
fn under_mount(m: &Mount, own: &str) -> PathBuf {
    let rel = own.strip_prefix(m.root.as_str()).unwrap_or(own);
    let mut p = m.point.clone();
    for part in rel.split('/').filter(|s| !s.is_empty()) {
        p.push(part);
    }
    p
}

fn join_rel(base: PathBuf, rel: &str) -> PathBuf {
    let mut p = base;
    for part in rel
        .split('/')
        .filter(|s| !s.is_empty() && *s != "." && *s != "..")
    {
        p.push(part);
    }
    p
}

/// Picks the hierarchy from `/proc/self/mountinfo` and `/proc/self/cgroup`.
///
/// v1 (memory, cpu and pids mounted): runtimes go under the executor's own
/// cgroup of each controller, so they stay inside whatever encloses the
/// executor; default `<own>/opr`. v2 (memory, cpu and pids available at the
/// root): `<root>/opr` by default, because v2 forbids enabling controllers
/// for children of a cgroup that itself holds processes (the executor's).
/// `parent` overrides the folder, relative to each hierarchy's root.
pub fn detect(
    fs: &dyn CgroupFs,
    mountinfo: &str,
    self_cgroup: &str,
    parent: Option<&str>,
) -> Option<Hierarchy> {
    let mounts = parse_mounts(mountinfo);
    let v1 = |ctrl: &str| -> Option<PathBuf> {
        let m = mounts
            .iter()
            .find(|m| m.fstype == "cgroup" && m.superopts.split(',').any(|o| o == ctrl))?;
        Some(match parent {
            Some(p) => join_rel(m.point.clone(), p),
            None => under_mount(m, own_path(self_cgroup, ctrl).unwrap_or("/")).join(DEFAULT_PARENT),
        })
    };
    if let (Some(memory), Some(cpu), Some(pids)) = (v1("memory"), v1("cpu"), v1("pids")) {
        return Some(Hierarchy::V1 {
            memory,
            cpu,
            pids,
            cpuacct: v1("cpuacct"),
        });
    }
    let m = mounts.iter().find(|m| m.fstype == "cgroup2")?;
    let controllers = fs.read(&m.point.join("cgroup.controllers")).ok()?;
    if !V2_CONTROLLERS
        .iter()
        .all(|c| controllers.split_whitespace().any(|h| h == *c))
    {
        return None;
    }
    Some(Hierarchy::V2 {
        mount: m.point.clone(),
        parent: join_rel(m.point.clone(), parent.unwrap_or(DEFAULT_PARENT)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// In-memory cgroup file system: directories and files.
    #[derive(Default)]
    struct FakeFs {
        dirs: Mutex<Vec<PathBuf>>,
        files: Mutex<BTreeMap<PathBuf, String>>,
        /// Writes that fail, to test rollback.
        fail_on: Option<&'static str>,
    }

    impl FakeFs {
        fn file(&self, p: &str) -> Option<String> {
            self.files.lock().expect("lock").get(Path::new(p)).cloned()
        }
        fn has_dir(&self, p: &str) -> bool {
            self.dirs
                .lock()
                .expect("lock")
                .iter()
                .any(|d| d == Path::new(p))
        }
        fn set(&self, p: &str, v: &str) {
            self.files.lock().expect("lock").insert(p.into(), v.into());
        }
    }

    impl CgroupFs for FakeFs {
        fn create_dir_all(&self, p: &Path) -> io::Result<()> {
            let mut d = self.dirs.lock().expect("lock");
            if !d.iter().any(|x| x == p) {
                d.push(p.to_path_buf());
            }
            Ok(())
        }
        fn create_dir(&self, p: &Path) -> io::Result<()> {
            let mut d = self.dirs.lock().expect("lock");
            if d.iter().any(|x| x == p) {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            d.push(p.to_path_buf());
            Ok(())
        }
        fn remove_dir(&self, p: &Path) -> io::Result<()> {
            let mut d = self.dirs.lock().expect("lock");
            let before = d.len();
            d.retain(|x| x != p);
            if d.len() == before {
                return Err(io::ErrorKind::NotFound.into());
            }
            Ok(())
        }
        fn write(&self, p: &Path, v: &str) -> io::Result<()> {
            if self.fail_on.is_some_and(|f| p.ends_with(f)) {
                return Err(io::ErrorKind::PermissionDenied.into());
            }
            self.files
                .lock()
                .expect("lock")
                .insert(p.to_path_buf(), v.to_owned());
            Ok(())
        }
        fn read(&self, p: &Path) -> io::Result<String> {
            self.files
                .lock()
                .expect("lock")
                .get(p)
                .cloned()
                .ok_or_else(|| io::ErrorKind::NotFound.into())
        }
        fn exists(&self, p: &Path) -> bool {
            self.files.lock().expect("lock").contains_key(p)
        }
    }

    const HYBRID_MOUNTINFO: &str = "\
31 25 0:28 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_SELF: &str = "8:pids:/\n4:memory:/session/abc\n2:cpuacct:/\n1:cpu:/\n0::/\n";

    #[test]
    fn limits_follow_the_spec_units() {
        let l = Limits::from_spec(1.5, 64, 100);
        assert_eq!(l.memory_bytes, Some(64_000_000));
        assert_eq!(l.cpu_quota_us, Some(150_000));
        assert_eq!(l.pids_max, Some(100));
        let none = Limits::from_spec(0.0, 0, 0);
        assert_eq!(
            none,
            Limits {
                memory_bytes: None,
                cpu_quota_us: None,
                pids_max: None
            }
        );
        assert_eq!(Limits::from_spec(0.001, 1, 1).cpu_quota_us, Some(1_000));
    }

    #[test]
    fn detects_v1_under_own_cgroup() {
        let fs = FakeFs::default();
        let h = detect(&fs, HYBRID_MOUNTINFO, HYBRID_SELF, None).expect("v1");
        assert_eq!(
            h,
            Hierarchy::V1 {
                memory: "/sys/fs/cgroup/memory/session/abc/opr".into(),
                cpu: "/sys/fs/cgroup/cpu/opr".into(),
                pids: "/sys/fs/cgroup/pids/opr".into(),
                cpuacct: Some("/sys/fs/cgroup/cpuacct/opr".into()),
            }
        );
        let h = detect(&fs, HYBRID_MOUNTINFO, HYBRID_SELF, Some("x/y")).expect("v1");
        assert!(
            matches!(h, Hierarchy::V1 { memory, .. } if memory == Path::new("/sys/fs/cgroup/memory/x/y"))
        );
    }

    #[test]
    fn detects_comounted_cpu_and_container_roots() {
        let mi = "\
1 0 0:1 /docker/x /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
2 0 0:2 /docker/x /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
3 0 0:3 /docker/x /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
";
        let own = "3:pids:/docker/x\n2:memory:/docker/x\n1:cpu,cpuacct:/docker/x/sub\n";
        let h = detect(&FakeFs::default(), mi, own, None).expect("v1");
        assert_eq!(
            h,
            Hierarchy::V1 {
                memory: "/sys/fs/cgroup/memory/opr".into(),
                cpu: "/sys/fs/cgroup/cpu,cpuacct/sub/opr".into(),
                pids: "/sys/fs/cgroup/pids/opr".into(),
                cpuacct: Some("/sys/fs/cgroup/cpu,cpuacct/sub/opr".into()),
            }
        );
    }

    #[test]
    fn v2_only_when_controllers_are_there() {
        let mi = "1 0 0:1 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let fs = FakeFs::default();
        fs.set("/sys/fs/cgroup/cgroup.controllers", "hugetlb\n");
        assert_eq!(detect(&fs, mi, "0::/user.slice\n", None), None);
        fs.set(
            "/sys/fs/cgroup/cgroup.controllers",
            "cpuset cpu io memory hugetlb pids\n",
        );
        assert_eq!(
            detect(&fs, mi, "0::/user.slice\n", None),
            Some(Hierarchy::V2 {
                mount: "/sys/fs/cgroup".into(),
                parent: "/sys/fs/cgroup/opr".into()
            })
        );
        // The hybrid machine: v1 wins, the v2 mount with hugetlb only is ignored.
        assert_eq!(detect(&fs, "", "", None), None);
    }

    #[test]
    fn v1_create_writes_limits_and_remove_cleans() {
        let fs = FakeFs::default();
        let h = detect(&fs, HYBRID_MOUNTINFO, HYBRID_SELF, None).expect("v1");
        let cg = h
            .create(&fs, "rt1", &Limits::from_spec(0.5, 64, 32))
            .expect("create");
        assert_eq!(
            fs.file("/sys/fs/cgroup/memory/session/abc/opr/rt1/memory.limit_in_bytes")
                .as_deref(),
            Some("64000000")
        );
        assert_eq!(
            fs.file("/sys/fs/cgroup/cpu/opr/rt1/cpu.cfs_period_us")
                .as_deref(),
            Some("100000")
        );
        assert_eq!(
            fs.file("/sys/fs/cgroup/cpu/opr/rt1/cpu.cfs_quota_us")
                .as_deref(),
            Some("50000")
        );
        assert_eq!(
            fs.file("/sys/fs/cgroup/pids/opr/rt1/pids.max").as_deref(),
            Some("32")
        );
        assert!(fs.has_dir("/sys/fs/cgroup/cpuacct/opr/rt1"));
        assert_eq!(
            cg.join_files(),
            [
                "/sys/fs/cgroup/memory/session/abc/opr/rt1/tasks",
                "/sys/fs/cgroup/cpu/opr/rt1/tasks",
                "/sys/fs/cgroup/pids/opr/rt1/tasks",
                "/sys/fs/cgroup/cpuacct/opr/rt1/tasks"
            ]
            .map(PathBuf::from)
        );
        // A leftover directory of the same name is reused.
        h.create(&fs, "rt1", &Limits::from_spec(0.0, 0, 0))
            .expect("again");
        assert_eq!(
            fs.file("/sys/fs/cgroup/cpu/opr/rt1/cpu.cfs_quota_us")
                .as_deref(),
            Some("-1")
        );
        assert_eq!(
            fs.file("/sys/fs/cgroup/pids/opr/rt1/pids.max").as_deref(),
            Some("max")
        );
        remove(&fs, &cg).expect("remove");
        assert!(!fs.has_dir("/sys/fs/cgroup/memory/session/abc/opr/rt1"));
        assert!(fs.has_dir("/sys/fs/cgroup/memory/session/abc/opr"));
        remove(&fs, &cg).expect("remove twice is fine");
    }

    #[test]
    fn failed_limit_write_rolls_back() {
        let fs = FakeFs {
            fail_on: Some("pids.max"),
            ..FakeFs::default()
        };
        let h = detect(&fs, HYBRID_MOUNTINFO, HYBRID_SELF, None).expect("v1");
        let err = h
            .create(&fs, "rt", &Limits::from_spec(1.0, 1, 1))
            .expect_err("fails");
        assert!(err.to_string().contains("pids.max"), "{err}");
        assert!(!fs.has_dir("/sys/fs/cgroup/cpu/opr/rt"));
    }

    #[test]
    fn v2_enables_controllers_down_the_tree() {
        let fs = FakeFs::default();
        fs.set("/cg/cgroup.controllers", "cpu memory pids");
        fs.set("/cg/cgroup.subtree_control", "memory");
        fs.set("/cg/a/cgroup.subtree_control", "");
        fs.set("/cg/a/b/cgroup.subtree_control", "cpu memory pids");
        let h = Hierarchy::V2 {
            mount: "/cg".into(),
            parent: "/cg/a/b".into(),
        };
        let cg = h
            .create(&fs, "rt", &Limits::from_spec(2.0, 128, 0))
            .expect("create");
        assert_eq!(
            fs.file("/cg/cgroup.subtree_control").as_deref(),
            Some("+cpu +pids")
        );
        assert_eq!(
            fs.file("/cg/a/cgroup.subtree_control").as_deref(),
            Some("+memory +cpu +pids")
        );
        // Already enabled: left as it was.
        assert_eq!(
            fs.file("/cg/a/b/cgroup.subtree_control").as_deref(),
            Some("cpu memory pids")
        );
        assert_eq!(
            fs.file("/cg/a/b/rt/memory.max").as_deref(),
            Some("128000000")
        );
        assert_eq!(
            fs.file("/cg/a/b/rt/cpu.max").as_deref(),
            Some("200000 100000")
        );
        assert_eq!(fs.file("/cg/a/b/rt/pids.max").as_deref(), Some("max"));
        assert_eq!(cg.dirs(), vec![Path::new("/cg/a/b/rt")]);
        assert_eq!(
            cg.join_files(),
            vec![PathBuf::from("/cg/a/b/rt/cgroup.procs")]
        );
    }

    #[test]
    fn usage_reads_both_versions() {
        let fs = FakeFs::default();
        let v1 = RuntimeCgroup {
            version: Version::V1,
            memory: "/m".into(),
            cpu: "/c".into(),
            pids: "/p".into(),
            cpuacct: Some("/a".into()),
        };
        fs.set("/a/cpuacct.usage", "123456\n");
        fs.set("/m/memory.usage_in_bytes", "1000\n");
        fs.set("/m/memory.stat", "cache 5\ntotal_inactive_file 300\n");
        assert_eq!(cpu_usage_ns(&fs, &v1), Some(123456));
        assert_eq!(memory_bytes(&fs, &v1), Some(700));
        let v2 = RuntimeCgroup {
            version: Version::V2,
            memory: "/x".into(),
            cpu: "/x".into(),
            pids: "/x".into(),
            cpuacct: None,
        };
        fs.set("/x/cpu.stat", "usage_usec 42\nuser_usec 40\n");
        fs.set("/x/memory.current", "2000");
        fs.set("/x/memory.stat", "anon 1\ninactive_file 500\n");
        assert_eq!(cpu_usage_ns(&fs, &v2), Some(42_000));
        assert_eq!(memory_bytes(&fs, &v2), Some(1500));
        fs.set("/x/cgroup.procs", "10\n11\n");
        assert_eq!(procs(&fs, &v2), vec![10, 11]);
        assert!(!kill_all(&fs, &v2));
        fs.set("/x/cgroup.kill", "");
        assert!(kill_all(&fs, &v2));
        assert!(!kill_all(&fs, &v1));
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/a\04"), r"/a\04");
    }
}
