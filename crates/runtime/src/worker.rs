//! One language worker process and the invocations in flight on it
//! (docs/worker-protocol.md).

use crate::frame::{self, kind, Frame, FrameReader};
use crate::logs::Stream;
use bytes::Bytes;
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};

/// Bodies up to this size are copied into the frame to send it in one write.
const SINGLE_WRITE_MAX: usize = 64 << 10;

/// How long a new worker may take to say `READY`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start a worker process.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub interpreter: PathBuf,
    pub script: PathBuf,
    pub cwd: PathBuf,
    /// `None` inherits the server's environment.
    pub env: Option<Vec<(String, String)>>,
}

/// What happened to the function's result.
#[derive(Debug)]
pub enum Outcome {
    Ok {
        status: u16,
        headers: Vec<(String, String)>,
        body: Bytes,
    },
    Exception(String),
    MissingReturn,
    LoadError {
        reason: String,
        detail: String,
    },
    Invalid(String),
}

/// What a request handler hears about its invocation.
#[derive(Debug)]
pub enum Event {
    Log(Stream, Bytes),
    Result(Outcome),
    Cancelled(bool),
    Died(String),
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot start worker {0}: {1}")]
    Spawn(String, std::io::Error),
    #[error("worker did not become ready: {0}")]
    NotReady(String),
    #[error("worker is gone")]
    Gone,
}

pub struct Worker {
    pid: u32,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    inflight: Mutex<HashMap<u32, mpsc::UnboundedSender<Event>>>,
    load: AtomicUsize,
    next_id: AtomicU32,
    dead: AtomicBool,
    /// Cancellations not yet confirmed: the worker may be stuck in a CPU
    /// loop, so new invocations go elsewhere or wait for its replacement.
    unconfirmed_cancels: AtomicUsize,
    /// Wakes the pool's dispatcher when this worker becomes usable again.
    on_change: Arc<tokio::sync::Notify>,
    configured: Mutex<Option<oneshot::Sender<()>>>,
}

impl Worker {
    /// Starts the process and waits for `READY`. The returned receiver
    /// fires with a description once the process has exited.
    /// `standby`: no function is known yet; the worker gets
    /// `OPR_WORKER_STANDBY=1` and may preload what a function will likely
    /// need while it waits (docs/worker-protocol.md).
    pub async fn spawn(
        spec: &WorkerSpec,
        worker_id: usize,
        standby: bool,
        on_change: Arc<tokio::sync::Notify>,
    ) -> Result<(Arc<Worker>, oneshot::Receiver<String>), WorkerError> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| WorkerError::Spawn("socketpair".into(), e))?;
        ours.set_nonblocking(true)
            .map_err(|e| WorkerError::Spawn("socketpair".into(), e))?;
        let mut cmd = tokio::process::Command::new(&spec.interpreter);
        cmd.arg(&spec.script)
            .current_dir(&spec.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(env) = &spec.env {
            cmd.env_clear();
            cmd.envs(env.iter().map(|(k, v)| (k, v)));
        }
        cmd.env("OPR_WORKER_ID", worker_id.to_string());
        if standby {
            cmd.env("OPR_WORKER_STANDBY", "1");
        }
        let child_fd = theirs.as_raw_fd();
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(child_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Own process group, so a kill reaches anything the function
                // started; and die with the server.
                libc::setpgid(0, 0);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| WorkerError::Spawn(spec.interpreter.display().to_string(), e))?;
        drop(theirs);
        let pid = child.id().unwrap_or(0);
        let stream = tokio::net::UnixStream::from_std(ours)
            .map_err(|e| WorkerError::Spawn("socket".into(), e))?;
        let (read_half, write_half) = stream.into_split();
        let mut reader = FrameReader::new(read_half);

        let ready = tokio::time::timeout(READY_TIMEOUT, reader.next()).await;
        match ready {
            Ok(Ok(Frame {
                kind: kind::READY, ..
            })) => {}
            Ok(Ok(f)) => {
                kill_group(pid);
                return Err(WorkerError::NotReady(format!(
                    "first frame was kind {}",
                    f.kind
                )));
            }
            Ok(Err(e)) => {
                kill_group(pid);
                let status = child.wait().await.map(describe_exit).unwrap_or_default();
                return Err(WorkerError::NotReady(format!("{e} ({status})")));
            }
            Err(_) => {
                kill_group(pid);
                return Err(WorkerError::NotReady("timed out".into()));
            }
        }

        let worker = Arc::new(Worker {
            pid,
            writer: tokio::sync::Mutex::new(write_half),
            inflight: Mutex::new(HashMap::new()),
            load: AtomicUsize::new(0),
            next_id: AtomicU32::new(1),
            dead: AtomicBool::new(false),
            unconfirmed_cancels: AtomicUsize::new(0),
            on_change,
            configured: Mutex::new(None),
        });
        let (exit_tx, exit_rx) = oneshot::channel();
        let w = worker.clone();
        tokio::spawn(async move {
            let why = loop {
                match reader.next().await {
                    Ok(frame) => w.dispatch(frame),
                    Err(e) => break e,
                }
            };
            w.dead.store(true, Ordering::SeqCst);
            kill_group(w.pid);
            let status = match child.wait().await {
                Ok(s) => describe_exit(s),
                Err(_) => why.to_string(),
            };
            let waiting: Vec<_> = w.lock_inflight().drain().collect();
            for (_, tx) in waiting {
                let _ = tx.send(Event::Died(status.clone()));
            }
            let _ = exit_tx.send(status);
        });
        Ok((worker, exit_rx))
    }

    fn lock_inflight(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u32, mpsc::UnboundedSender<Event>>> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dispatch(&self, frame: Frame) {
        let event = match frame.kind {
            kind::LOG => {
                let Some((&stream, text)) = frame.payload.split_first() else {
                    return;
                };
                let stream = match stream {
                    1 => Stream::Log,
                    2 => Stream::Error,
                    _ => Stream::Native,
                };
                Event::Log(
                    stream,
                    frame.payload.slice(frame.payload.len() - text.len()..),
                )
            }
            kind::RESULT => Event::Result(parse_result(frame.payload)),
            kind::CANCELLED => Event::Cancelled(frame.payload.first() == Some(&1)),
            kind::CONFIGURED => {
                if let Some(tx) = self
                    .configured
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                {
                    let _ = tx.send(());
                }
                return;
            }
            _ => return,
        };
        if let Some(tx) = self.lock_inflight().get(&frame.id) {
            let _ = tx.send(event);
        }
    }

    pub fn load(&self) -> usize {
        self.load.load(Ordering::Relaxed)
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    /// Live and not suspected of being stuck.
    pub fn is_usable(&self) -> bool {
        !self.is_dead() && self.unconfirmed_cancels.load(Ordering::SeqCst) == 0
    }

    /// Sends an invocation. The guard ends it (and frees its slot) on drop.
    pub async fn invoke(
        self: &Arc<Self>,
        meta: &[u8],
        body: Bytes,
    ) -> Result<(InvocationGuard, mpsc::UnboundedReceiver<Event>), WorkerError> {
        if self.is_dead() {
            return Err(WorkerError::Gone);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed).max(1);
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock_inflight().insert(id, tx);
        self.load.fetch_add(1, Ordering::Relaxed);
        let guard = InvocationGuard {
            worker: self.clone(),
            id,
        };
        let prefix = frame::meta_prefix(kind::INVOKE, id, meta, body.len());
        // Small frames go out in one write (one syscall, one wake-up of the
        // worker); large bodies are not copied.
        let single = (body.len() <= SINGLE_WRITE_MAX).then(|| [&prefix[..], &body[..]].concat());
        let mut w = self.writer.lock().await;
        let sent = async {
            match &single {
                Some(frame) => w.write_all(frame).await,
                None => {
                    w.write_all(&prefix).await?;
                    w.write_all(&body).await
                }
            }
        }
        .await;
        drop(w);
        sent.map_err(|_| WorkerError::Gone)?;
        Ok((guard, rx))
    }

    async fn send(&self, kind: u8, id: u32, payload: &[u8]) -> std::io::Result<()> {
        let mut w = self.writer.lock().await;
        w.write_all(&frame::header(kind, id, payload.len())).await?;
        w.write_all(payload).await
    }

    /// Sends `CONFIGURE` and waits for `CONFIGURED`.
    pub async fn configure(&self, payload: &[u8], within: Duration) -> Result<(), WorkerError> {
        let (tx, rx) = oneshot::channel();
        *self.configured.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        self.send(kind::CONFIGURE, 0, payload)
            .await
            .map_err(|_| WorkerError::Gone)?;
        match tokio::time::timeout(within, rx).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(WorkerError::Gone),
            Err(_) => Err(WorkerError::NotReady("no CONFIGURED answer".into())),
        }
    }

    /// Kills the process group; the reader task then reports the exit.
    pub fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
        kill_group(self.pid);
    }
}

/// One invocation in flight; dropping it forgets the invocation.
pub struct InvocationGuard {
    worker: Arc<Worker>,
    id: u32,
}

impl InvocationGuard {
    pub fn worker(&self) -> &Arc<Worker> {
        &self.worker
    }

    /// After a deadline: ask the worker to stop the invocation; kill the
    /// worker if it cannot or does not answer (a blocked event loop).
    pub async fn cancel(self, mut rx: mpsc::UnboundedReceiver<Event>, grace: Duration) {
        self.worker
            .unconfirmed_cancels
            .fetch_add(1, Ordering::SeqCst);
        let stopped = async {
            if self.worker.send(kind::CANCEL, self.id, &[]).await.is_err() {
                return true;
            }
            while let Some(ev) = rx.recv().await {
                match ev {
                    Event::Cancelled(ok) => return ok,
                    Event::Result(_) | Event::Died(_) => return true,
                    Event::Log(..) => {}
                }
            }
            true
        };
        if !tokio::time::timeout(grace, stopped).await.unwrap_or(false) {
            self.worker.kill();
        }
        self.worker
            .unconfirmed_cancels
            .fetch_sub(1, Ordering::SeqCst);
        self.worker.on_change.notify_waiters();
    }
}

impl Drop for InvocationGuard {
    fn drop(&mut self) {
        self.worker.lock_inflight().remove(&self.id);
        self.worker.load.fetch_sub(1, Ordering::Relaxed);
    }
}

fn kill_group(pid: u32) {
    if pid > 0 {
        // SAFETY: plain syscall; a negative pid names the process group.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    match status.signal() {
        Some(sig) => format!("was killed by signal {sig} ({})", signal_name(sig)),
        None => "exited".to_string(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGKILL => "SIGKILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGTERM => "SIGTERM",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        _ => "signal",
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResultMeta {
    status: String,
    #[serde(default)]
    status_code: Option<u16>,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    detail: Option<String>,
}

fn parse_result(payload: Bytes) -> Outcome {
    let Ok((meta, body)) = frame::split_meta(payload) else {
        return Outcome::Invalid("worker sent a malformed RESULT frame".into());
    };
    let meta: ResultMeta = match serde_json::from_slice(&meta) {
        Ok(m) => m,
        Err(e) => return Outcome::Invalid(format!("worker sent malformed RESULT meta: {e}")),
    };
    match meta.status.as_str() {
        "ok" => Outcome::Ok {
            status: meta.status_code.unwrap_or(200),
            headers: meta.headers,
            body,
        },
        "exception" => Outcome::Exception(meta.message.unwrap_or_default()),
        "missing_return" => Outcome::MissingReturn,
        "load_error" => Outcome::LoadError {
            reason: meta.reason.unwrap_or_else(|| "other".into()),
            detail: meta.detail.unwrap_or_default(),
        },
        _ => Outcome::Invalid(
            meta.detail
                .unwrap_or_else(|| format!("unknown result status {}", meta.status)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(meta: &str, body: &[u8]) -> Bytes {
        let mut v = (meta.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(meta.as_bytes());
        v.extend_from_slice(body);
        Bytes::from(v)
    }

    #[test]
    fn result_meta_maps_to_outcomes() {
        match parse_result(payload(
            r#"{"status":"ok","statusCode":201,"headers":[["a","b"]]}"#,
            b"hi",
        )) {
            Outcome::Ok {
                status,
                headers,
                body,
            } => {
                assert_eq!(status, 201);
                assert_eq!(headers, vec![("a".to_string(), "b".to_string())]);
                assert_eq!(&body[..], b"hi");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse_result(payload(r#"{"status":"missing_return"}"#, b"")),
            Outcome::MissingReturn
        ));
        assert!(matches!(
            parse_result(payload(r#"{"status":"load_error","reason":"syntax","detail":"x"}"#, b"")),
            Outcome::LoadError { ref reason, .. } if reason == "syntax"
        ));
        assert!(matches!(
            parse_result(payload("not json", b"")),
            Outcome::Invalid(_)
        ));
    }

    #[test]
    fn exit_descriptions_name_code_or_signal() {
        assert_eq!(
            describe_exit(std::process::ExitStatus::from_raw(1 << 8)),
            "exited with code 1"
        );
        assert_eq!(
            describe_exit(std::process::ExitStatus::from_raw(libc::SIGSEGV)),
            "was killed by signal 11 (SIGSEGV)"
        );
    }
}
