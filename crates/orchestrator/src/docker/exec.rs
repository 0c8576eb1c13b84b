//! `execute` through the exec API (executor-api §19.3): create an exec with
//! stdout and stderr attached, read the demultiplexed stream, take the exit
//! code from the exec's inspect. On timeout the exec's process tree is
//! killed from the host and the outcome is `Timeout`.

use super::client::{api_failed, status_of};
use crate::process::exec::OUTPUT_CAP;
use crate::{ExecOutcome, OrchestratorError, Result};
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// How long to wait for the engine to report an exec finished after its
/// output ended.
const EXIT_REPORT_WAIT: Duration = Duration::from_secs(5);

/// stdout and stderr of one exec, each kept up to the cap.
#[derive(Default)]
struct Captured {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Captured {
    fn push(&mut self, chunk: LogOutput) {
        let (buf, bytes) = match chunk {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                (&mut self.stdout, message)
            }
            LogOutput::StdErr { message } => (&mut self.stderr, message),
            LogOutput::StdIn { .. } => return,
        };
        let room = OUTPUT_CAP.saturating_sub(buf.len());
        buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// stdout followed by stderr, capped as a whole.
    fn into_output(self) -> String {
        let mut output = String::from_utf8_lossy(&self.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&self.stderr));
        if output.len() > OUTPUT_CAP {
            let mut end = OUTPUT_CAP;
            while !output.is_char_boundary(end) {
                end -= 1;
            }
            output.truncate(end);
        }
        output
    }
}

/// Runs `argv` in `container` from its working directory, with the
/// container's environment plus `env`.
pub async fn run(
    docker: &Docker,
    container: &str,
    argv: &[String],
    env: &[(String, String)],
    timeout: Option<Duration>,
) -> Result<ExecOutcome> {
    if argv.is_empty() {
        return Err(OrchestratorError::Failed("empty command".into()));
    }
    let created = docker
        .create_exec(
            container,
            CreateExecOptions {
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                attach_stdin: Some(false),
                tty: Some(false),
                cmd: Some(argv.to_vec()),
                env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| match status_of(&e) {
            Some(404) => OrchestratorError::NotFound(container.to_owned()),
            Some(409) => OrchestratorError::Failed(format!("runtime {container} is not running")),
            _ => api_failed(&format!("exec in {container}"), &e),
        })?;
    let exec_id = created.id;
    let started = docker
        .start_exec(
            &exec_id,
            Some(StartExecOptions {
                detach: false,
                tty: false,
                output_capacity: Some(64 << 10),
            }),
        )
        .await
        .map_err(|e| api_failed(&format!("start exec in {container}"), &e))?;
    let StartExecResults::Attached { mut output, input } = started else {
        return Err(OrchestratorError::Failed("exec started detached".into()));
    };
    drop(input);

    let mut captured = Captured::default();
    let read_all = async {
        while let Some(chunk) = output.next().await {
            match chunk {
                Ok(c) => captured.push(c),
                Err(_) => break,
            }
        }
    };
    let finished = match timeout {
        Some(t) => tokio::time::timeout(t, read_all).await.is_ok(),
        None => {
            read_all.await;
            true
        }
    };
    if !finished {
        drop(output);
        kill_exec(docker, &exec_id).await;
        return Err(OrchestratorError::Timeout);
    }
    let mut exit_code = exit_code(docker, &exec_id).await?;
    let output = captured.into_output();
    // The engine reports a missing executable as 126; shells and `docker
    // run` say 127 (command not found).
    if exit_code == 126 && output.contains("executable file not found") {
        exit_code = 127;
    }
    Ok(ExecOutcome { exit_code, output })
}

/// The exit code once the engine reports the exec ended (its output can
/// end a moment before).
async fn exit_code(docker: &Docker, exec_id: &str) -> Result<i32> {
    let deadline = Instant::now() + EXIT_REPORT_WAIT;
    let mut pause = Duration::from_millis(1);
    loop {
        let info = docker
            .inspect_exec(exec_id)
            .await
            .map_err(|e| api_failed("inspect exec", &e))?;
        if info.running != Some(true) {
            let code = info.exit_code.unwrap_or(-1);
            return Ok(i32::try_from(code).unwrap_or(-1));
        }
        if Instant::now() >= deadline {
            return Err(OrchestratorError::Failed(
                "exec output ended but the engine still reports it running".into(),
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Kills the process tree of a timed-out exec. The engine has no call for
/// that: the exec's host pid comes from its inspect and the tree from the
/// host's /proc (the engine runs on this host: runtimes are reached on
/// 127.0.0.1).
async fn kill_exec(docker: &Docker, exec_id: &str) {
    let pid = match docker.inspect_exec(exec_id).await {
        Ok(info) => info.pid.and_then(|p| i32::try_from(p).ok()),
        Err(_) => None,
    };
    let Some(pid) = pid.filter(|p| *p > 1) else {
        tracing::warn!(exec = exec_id, "timed-out exec has no pid to kill");
        return;
    };
    let _ = tokio::task::spawn_blocking(move || kill_tree(pid)).await;
}

/// Parent of every process, from /proc/<pid>/stat.
fn parents() -> HashMap<i32, i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    dir.filter_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) state ppid …": comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some((pid, ppid))
    })
    .collect()
}

/// `root` and every process below it.
pub fn descendants(root: i32, parents: &HashMap<i32, i32>) -> HashSet<i32> {
    let mut tree = HashSet::from([root]);
    loop {
        let before = tree.len();
        for (pid, ppid) in parents {
            if tree.contains(ppid) {
                tree.insert(*pid);
            }
        }
        if tree.len() == before {
            return tree;
        }
    }
}

/// Stops the whole tree first (a stopped process cannot fork, and its
/// children stay its children), then kills it.
fn kill_tree(root: i32) {
    let mut stopped: HashSet<i32> = HashSet::new();
    for _ in 0..50 {
        let tree: HashSet<i32> = descendants(root, &parents())
            .into_iter()
            .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
            .collect();
        let fresh: Vec<i32> = tree.difference(&stopped).copied().collect();
        if fresh.is_empty() {
            break;
        }
        for pid in fresh {
            // SAFETY: kill(2) with a pid and a signal number has no memory
            // effects.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            stopped.insert(pid);
        }
    }
    for pid in &stopped {
        // SAFETY: as above.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn stdout_then_stderr() {
        let mut c = Captured::default();
        c.push(LogOutput::StdErr {
            message: Bytes::from_static(b"err1\n"),
        });
        c.push(LogOutput::StdOut {
            message: Bytes::from_static(b"out1\n"),
        });
        c.push(LogOutput::StdOut {
            message: Bytes::from_static(b"out2\n"),
        });
        assert_eq!(c.into_output(), "out1\nout2\nerr1\n");
    }

    #[test]
    fn tree_below_a_root() {
        let parents = HashMap::from([(2, 1), (10, 2), (11, 10), (12, 10), (20, 1), (21, 20)]);
        let mut t: Vec<i32> = descendants(10, &parents).into_iter().collect();
        t.sort();
        assert_eq!(t, vec![10, 11, 12]);
        assert_eq!(descendants(99, &parents), HashSet::from([99]));
    }
}
