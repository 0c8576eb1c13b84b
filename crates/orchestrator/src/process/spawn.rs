//! Starting bwrap: a clean environment, its own process group, the
//! runtime's cgroup joined before bwrap runs, and every start made from one
//! long-lived thread.
//!
//! Why a thread: `--die-with-parent` is `PR_SET_PDEATHSIG`, which fires
//! when the *thread* that forked exits, not the process. A start made from a
//! tokio blocking thread would be killed when that thread retires after 10 s
//! idle. The spawner thread lives exactly as long as the backend, so
//! runtimes die with the backend (and with the executor), never earlier.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// A bwrap command line: `argv` after the program name, the whole
/// environment, and the cgroup files to join
/// ([`RuntimeCgroup::join_files`](super::cgroup::RuntimeCgroup::join_files)).
pub fn bwrap_command(
    bwrap: &Path,
    argv: &[String],
    env: &[(String, String)],
    cgroup_files: &[PathBuf],
) -> io::Result<Command> {
    let procs: Vec<CString> = cgroup_files
        .iter()
        .map(|p| CString::new(p.as_os_str().as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut cmd = Command::new(bwrap);
    cmd.args(argv)
        // Nothing of the executor's environment leaks in (NODE_EXTRA_CA_CERTS
        // and the like); bwrap hands this environment to the command.
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        // Own process group: one kill(-pgid) reaches bwrap and its pid-1.
        .process_group(0)
        .kill_on_drop(true);
    if !procs.is_empty() {
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe calls (open, write, close) on strings prepared
        // before the fork; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || join_cgroups(&procs));
        }
    }
    Ok(cmd)
}

/// Moves the calling process into each cgroup. Writing `0` means "the
/// writer" (to `tasks` and `cgroup.procs` alike), so no pid formatting.
fn join_cgroups(files: &[CString]) -> io::Result<()> {
    for f in files {
        // SAFETY: `f` is a valid NUL-terminated path.
        let fd = unsafe { libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is open; the buffer is one static byte.
        let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        let err = io::Error::last_os_error();
        // SAFETY: `fd` is ours and closed once.
        unsafe { libc::close(fd) };
        if n != 1 {
            return Err(err);
        }
    }
    Ok(())
}

struct Request {
    cmd: Command,
    reply: oneshot::Sender<io::Result<Child>>,
}

/// Handle to the spawner thread. The thread ends when every handle is gone.
#[derive(Clone)]
pub struct Spawner {
    tx: mpsc::Sender<Request>,
}

impl Spawner {
    /// Starts the thread; `handle` is the runtime the children are
    /// registered with (tokio reaps them through its signal driver).
    pub fn start(handle: tokio::runtime::Handle) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("opr-sandbox-spawner".into())
            .spawn(move || {
                let _guard = handle.enter();
                for mut req in rx {
                    let _ = req.reply.send(req.cmd.spawn());
                    // `req.cmd` drops here, closing the parent's copies of
                    // the child's pipe ends.
                }
            })?;
        Ok(Spawner { tx })
    }

    pub async fn spawn(&self, cmd: Command) -> io::Result<Child> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { cmd, reply })
            .map_err(|_| io::Error::other("sandbox spawner thread is gone"))?;
        rx.await
            .map_err(|_| io::Error::other("sandbox spawner thread is gone"))?
    }
}

/// SIGKILL to a whole process group; false when there was none.
pub fn kill_group(pgid: i32) -> bool {
    // pid 0 / -1 would mean "our group" / "everything": never.
    if pgid <= 1 {
        return false;
    }
    // SAFETY: plain syscall, no memory involved.
    unsafe { libc::kill(-pgid, libc::SIGKILL) == 0 }
}

/// SIGKILL to one process.
pub fn kill_pid(pid: i32) {
    if pid > 1 {
        // SAFETY: plain syscall, no memory involved.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}
