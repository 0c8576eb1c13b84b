//! The bubblewrap command line that presents a runtime container's layout
//! (runtime-protocol §5.1, executor-api §7.4) on the host. Pure: the caller
//! looks at the file system and hands the facts in, so the argv is tested
//! without bwrap.

use std::path::{Path, PathBuf};

pub const SERVER_DIR: &str = "/usr/local/server";
pub const FUNCTION_DIR: &str = "/usr/local/server/src/function";
pub const RUNTIME_BINARY: &str = "/usr/local/bin/opr-runtime";

/// Host directories presented read-only as the "image", when they exist.
pub const SYSTEM_DIRS: &[&str] = &["/usr", "/bin", "/lib", "/lib64", "/sbin", "/etc"];

/// Host files masked with an empty file inside the sandbox.
pub const HIDDEN_FILES: &[&str] = &[
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/shadow-",
    "/etc/gshadow-",
];

/// Capabilities kept inside the sandbox (root without them could not, for
/// example, extract a tarball owned by another uid). Docker's default set
/// minus what matters on a shared host: no MKNOD (there is no devices
/// cgroup to stop device nodes), no NET_RAW / NET_BIND_SERVICE (the network
/// is the host's), nothing that mounts or changes namespaces.
pub const KEPT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
];

/// One host system directory as found at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemEntry {
    /// `/bin -> usr/bin` on merged-/usr systems: reproduced as a symlink.
    Symlink {
        path: PathBuf,
        target: PathBuf,
    },
    Dir(PathBuf),
}

/// Per-runtime host directories the backend owns (under its state dir).
#[derive(Debug, Clone)]
pub struct RuntimeDirs {
    /// `/usr/local/server/src/function`
    pub function: PathBuf,
    /// `/usr/local/build`
    pub build: PathBuf,
    /// `/usr/local/cache`
    pub cache: PathBuf,
    /// `/mnt/telemetry`
    pub telemetry: PathBuf,
}

/// Everything the argv depends on.
#[derive(Debug, Clone)]
pub struct Layout<'a> {
    pub system: &'a [SystemEntry],
    /// `<runtimes_dir>/<language>`
    pub runtime_root: &'a Path,
    pub has_helpers: bool,
    pub has_hooks: bool,
    /// Names directly under `<runtime_root>/src`, without `function`.
    pub src_entries: &'a [String],
    pub runtime_binary: &'a Path,
    pub dirs: &'a RuntimeDirs,
    pub mounts: &'a crate::Mounts,
    pub hostname: &'a str,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SandboxError {
    #[error("path {0:?} is not valid UTF-8")]
    NotUtf8(PathBuf),
    #[error("src entry {0:?} is not a plain file name")]
    BadEntry(String),
}

fn s(p: &Path) -> Result<String, SandboxError> {
    p.to_str()
        .map(str::to_owned)
        .ok_or_else(|| SandboxError::NotUtf8(p.to_path_buf()))
}

struct Args(Vec<String>);

impl Args {
    fn flag(&mut self, f: &str) {
        self.0.push(f.to_owned());
    }
    fn op(&mut self, op: &str, src: &Path, dest: &str) -> Result<(), SandboxError> {
        self.0.push(op.to_owned());
        self.0.push(s(src)?);
        self.0.push(dest.to_owned());
        Ok(())
    }
    fn pair(&mut self, op: &str, value: &str) {
        self.0.push(op.to_owned());
        self.0.push(value.to_owned());
    }
}

/// bwrap's options, without the command. Append `--` and the argv with
/// [`with_command`].
pub fn sandbox_args(l: &Layout<'_>) -> Result<Vec<String>, SandboxError> {
    let mut a = Args(Vec::with_capacity(96));
    // Namespaces: pid/ipc/uts like a container; the network stays the
    // host's so the runtime is reachable on 127.0.0.1.
    for f in [
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--share-net",
        // Dies with the thread that spawned it: no runtime outlives the
        // executor (adoption then only has to clean up).
        "--die-with-parent",
        "--new-session",
    ] {
        a.flag(f);
    }
    a.pair("--cap-drop", "ALL");
    for cap in KEPT_CAPS {
        a.pair("--cap-add", cap);
    }
    a.pair("--hostname", l.hostname);

    for entry in l.system {
        match entry {
            SystemEntry::Symlink { path, target } => {
                a.0.push("--symlink".to_owned());
                a.0.push(s(target)?);
                a.0.push(s(path)?);
            }
            SystemEntry::Dir(path) => a.op("--ro-bind", path, &s(path)?)?,
        }
    }
    // The host's password hashes are no business of a function: the sandbox
    // is root with DAC_OVERRIDE, so hide the files rather than rely on modes.
    if l.system
        .iter()
        .any(|e| matches!(e, SystemEntry::Dir(p) if p.as_path() == std::path::Path::new("/etc")))
    {
        for secret in HIDDEN_FILES {
            if std::path::Path::new(secret).exists() {
                a.pair("--ro-bind", "/dev/null");
                a.0.push((*secret).to_owned());
            }
        }
    }
    a.pair("--proc", "/proc");
    a.pair("--dev", "/dev");

    // /usr/local is built on a tmpfs (hiding the host's) and made read-only
    // once populated; the writable dirs in it are bind mounts, which the
    // remount leaves alone.
    a.pair("--tmpfs", "/usr/local");
    a.op("--ro-bind", l.runtime_binary, RUNTIME_BINARY)?;
    if l.has_helpers {
        a.op(
            "--ro-bind",
            &l.runtime_root.join("helpers"),
            &format!("{SERVER_DIR}/helpers"),
        )?;
    }
    if l.has_hooks {
        a.op(
            "--ro-bind",
            &l.runtime_root.join("hooks"),
            &format!("{SERVER_DIR}/hooks"),
        )?;
    }
    // src/ entry by entry: binding src/ whole would leave no writable place
    // to create the function mount point in.
    a.pair("--dir", &format!("{SERVER_DIR}/src"));
    for name in l.src_entries {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err(SandboxError::BadEntry(name.clone()));
        }
        a.op(
            "--ro-bind",
            &l.runtime_root.join("src").join(name),
            &format!("{SERVER_DIR}/src/{name}"),
        )?;
    }
    a.op("--bind", &l.dirs.function, FUNCTION_DIR)?;
    a.op("--bind", &l.dirs.build, "/usr/local/build")?;
    a.op("--bind", &l.dirs.cache, "/usr/local/cache")?;
    a.pair("--remount-ro", "/usr/local");

    // The executor's folders (executor-api §7.4). /tmp first: /tmp/logging
    // is mounted inside it.
    a.op("--bind", &l.mounts.tmp, "/tmp")?;
    a.op("--bind", &l.mounts.logging, "/tmp/logging")?;
    a.op("--bind", &l.mounts.code, "/mnt/code")?;
    a.op("--bind", &l.mounts.logs, "/mnt/logs")?;
    a.op("--bind", &l.dirs.telemetry, "/mnt/telemetry")?;
    if let Some(cache) = &l.mounts.cache {
        a.op("--bind", cache, "/cache")?;
    }
    a.pair("--chdir", SERVER_DIR);
    Ok(a.0)
}

/// The full bwrap argv (after the program name) running `command`.
pub fn with_command(sandbox: &[String], command: &[String]) -> Vec<String> {
    let mut v = Vec::with_capacity(sandbox.len() + 1 + command.len());
    v.extend_from_slice(sandbox);
    // `--` so a command starting with a dash is not read as an option.
    v.push("--".to_owned());
    v.extend_from_slice(command);
    v
}

/// The environment of every process in the sandbox: a fixed base, then the
/// spec's variables (later wins). Passed as bwrap's own environment rather
/// than `--setenv`, so secrets do not show in the world-readable
/// `/proc/<pid>/cmdline`.
pub fn base_env(port: u16, language: &str) -> Vec<(String, String)> {
    vec![
        ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
        ("HOME".into(), "/tmp".into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("OPR_RUNTIME_LISTEN".into(), format!("127.0.0.1:{port}")),
        ("OPR_RUNTIME_LANGUAGE".into(), language.into()),
    ]
}

/// `base` overridden by `extra`, keeping first-seen order.
pub fn merge_env(base: &[(String, String)], extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = base.to_vec();
    for (k, v) in extra {
        match out.iter_mut().find(|(ek, _)| ek == k) {
            Some(slot) => slot.1 = v.clone(),
            None => out.push((k.clone(), v.clone())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Mounts;

    fn fixture(cache: Option<PathBuf>) -> (Vec<SystemEntry>, RuntimeDirs, Mounts) {
        let system = vec![
            SystemEntry::Dir("/usr".into()),
            SystemEntry::Symlink {
                path: "/bin".into(),
                target: "usr/bin".into(),
            },
            SystemEntry::Dir("/etc".into()),
        ];
        let dirs = RuntimeDirs {
            function: "/s/r/function".into(),
            build: "/s/r/build".into(),
            cache: "/s/r/cache".into(),
            telemetry: "/s/r/telemetry".into(),
        };
        let mounts = Mounts {
            tmp: "/w/src".into(),
            code: "/w/builds".into(),
            logs: "/w/logs".into(),
            logging: "/w/logging".into(),
            cache,
        };
        (system, dirs, mounts)
    }

    /// Index of the triple `op src dest` in `args`.
    fn find3(args: &[String], op: &str, src: &str, dest: &str) -> Option<usize> {
        args.windows(3)
            .position(|w| w[0] == op && w[1] == src && w[2] == dest)
    }

    #[test]
    fn presents_the_container_layout() {
        let (system, dirs, mounts) = fixture(None);
        let entries = vec!["worker.js".to_owned()];
        let layout = Layout {
            system: &system,
            runtime_root: Path::new("/rt/node"),
            has_helpers: true,
            has_hooks: false,
            src_entries: &entries,
            runtime_binary: Path::new("/bin/opr"),
            dirs: &dirs,
            mounts: &mounts,
            hostname: "abc123",
        };
        let a = sandbox_args(&layout).expect("args");
        let has = |op: &str, src: &str, dest: &str| find3(&a, op, src, dest).is_some();
        assert!(has("--ro-bind", "/usr", "/usr"));
        assert!(has("--symlink", "usr/bin", "/bin"));
        assert!(has("--ro-bind", "/etc", "/etc"));
        assert!(has(
            "--ro-bind",
            "/rt/node/helpers",
            "/usr/local/server/helpers"
        ));
        assert!(!a.iter().any(|x| x.contains("hooks")));
        assert!(has(
            "--ro-bind",
            "/rt/node/src/worker.js",
            "/usr/local/server/src/worker.js"
        ));
        assert!(has("--ro-bind", "/bin/opr", RUNTIME_BINARY));
        assert!(has("--bind", "/s/r/function", FUNCTION_DIR));
        assert!(has("--bind", "/s/r/build", "/usr/local/build"));
        assert!(has("--bind", "/w/src", "/tmp"));
        assert!(has("--bind", "/w/logging", "/tmp/logging"));
        assert!(has("--bind", "/w/builds", "/mnt/code"));
        assert!(has("--bind", "/w/logs", "/mnt/logs"));
        assert!(has("--bind", "/s/r/telemetry", "/mnt/telemetry"));
        assert!(!a.iter().any(|x| x == "/cache"));
        for f in [
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--share-net",
            "--die-with-parent",
            "--new-session",
        ] {
            assert!(a.iter().any(|x| x == f), "{f}");
        }
        // No environment on the command line: it is world-readable.
        assert!(!a.iter().any(|x| x == "--setenv"));
        let pos = |x: &str| a.iter().position(|y| y == x).expect(x);
        assert_eq!(a[pos("--hostname") + 1], "abc123");
        assert_eq!(a[pos("--chdir") + 1], SERVER_DIR);
        // Ordering that bwrap needs: the tmpfs before what goes in it, the
        // remount after; /tmp before /tmp/logging.
        let tmpfs = pos("--tmpfs");
        let remount = pos("--remount-ro");
        let func = find3(&a, "--bind", "/s/r/function", FUNCTION_DIR).expect("function");
        assert!(tmpfs < func && func < remount);
        assert!(
            find3(&a, "--bind", "/w/src", "/tmp")
                < find3(&a, "--bind", "/w/logging", "/tmp/logging")
        );
    }

    #[test]
    fn cache_mount_only_when_set() {
        let (system, dirs, mounts) = fixture(Some("/w/cache".into()));
        let layout = Layout {
            system: &system,
            runtime_root: Path::new("/rt/python"),
            has_helpers: false,
            has_hooks: true,
            src_entries: &[],
            runtime_binary: Path::new("/bin/opr"),
            dirs: &dirs,
            mounts: &mounts,
            hostname: "h",
        };
        let a = sandbox_args(&layout).expect("args");
        assert!(find3(&a, "--bind", "/w/cache", "/cache").is_some());
        assert!(find3(
            &a,
            "--ro-bind",
            "/rt/python/hooks",
            "/usr/local/server/hooks"
        )
        .is_some());
    }

    #[test]
    fn rejects_odd_entries_and_paths() {
        let (system, dirs, mounts) = fixture(None);
        let bad = vec!["../x".to_owned()];
        let layout = Layout {
            system: &system,
            runtime_root: Path::new("/rt/node"),
            has_helpers: false,
            has_hooks: false,
            src_entries: &bad,
            runtime_binary: Path::new("/bin/opr"),
            dirs: &dirs,
            mounts: &mounts,
            hostname: "h",
        };
        assert_eq!(
            sandbox_args(&layout),
            Err(SandboxError::BadEntry("../x".into()))
        );
    }

    #[test]
    fn command_follows_a_separator() {
        let argv = with_command(&["--a".into()], &["-x".into(), "y".into()]);
        assert_eq!(argv, ["--a", "--", "-x", "y"]);
    }

    #[test]
    fn env_merges_later_wins() {
        let base = base_env(4000, "node");
        let merged = merge_env(
            &base,
            &[("HOME".into(), "/root2".into()), ("K".into(), "V".into())],
        );
        assert!(merged.contains(&("OPR_RUNTIME_LISTEN".into(), "127.0.0.1:4000".into())));
        assert!(merged.contains(&("HOME".into(), "/root2".into())));
        assert!(merged.contains(&("K".into(), "V".into())));
        assert_eq!(merged.iter().filter(|(k, _)| k == "HOME").count(), 1);
    }
}
