//! The runtime registry (executor-api §12): an in-memory table, in creation
//! order, with per-runtime coordination so cold starts coalesce and idle
//! reaping never takes a runtime with an execution in flight.

use crate::error::ApiError;
use indexmap::IndexMap;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Where a runtime is in its life (executor-api §12.2).
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    Pending,
    Ready,
    /// Creation failed or the runtime was removed.
    Gone(Option<ApiError>),
}

/// The runtime object of executor-api §6.3, plus what the executor needs.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeView {
    pub version: String,
    pub created: f64,
    pub updated: f64,
    pub name: String,
    pub hostname: String,
    pub status: String,
    pub key: String,
    pub listening: u8,
    pub image: String,
    pub initialised: u8,
}

#[derive(Debug)]
pub struct Runtime {
    pub id: String,
    pub name: String,
    /// The backend's name for it (a warm-pool runtime keeps its own).
    pub container: Mutex<String>,
    pub work_dir: PathBuf,
    pub view: Mutex<RuntimeView>,
    pub address: Mutex<Option<SocketAddr>>,
    phase: watch::Sender<Phase>,
    in_flight: AtomicUsize,
}

impl Runtime {
    pub fn view(&self) -> RuntimeView {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn update<R>(&self, f: impl FnOnce(&mut RuntimeView) -> R) -> R {
        f(&mut self.view.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn touch(&self) {
        self.update(|v| v.updated = now());
    }

    pub fn container(&self) -> String {
        self.container
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// Counts an execution in flight for as long as it lives.
pub struct InFlight(Arc<Runtime>);

impl InFlight {
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Default)]
pub struct Registry {
    table: Mutex<IndexMap<String, Arc<Runtime>>>,
}

pub enum Insert {
    Inserted(Arc<Runtime>),
    Exists(Arc<Runtime>),
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, IndexMap<String, Arc<Runtime>>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub fn all(&self) -> Vec<Arc<Runtime>> {
        self.lock().values().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Runtime>> {
        self.lock().get(name).cloned()
    }

    /// Looks a runtime up and counts an execution on it, atomically with
    /// respect to reaping.
    pub fn enter(&self, name: &str) -> Option<InFlight> {
        let table = self.lock();
        let rt = table.get(name)?.clone();
        rt.in_flight.fetch_add(1, Ordering::SeqCst);
        Some(InFlight(rt))
    }

    /// Inserts a pending runtime unless the name is taken.
    pub fn insert_pending(
        &self,
        id: &str,
        name: &str,
        work_dir: PathBuf,
        view: RuntimeView,
    ) -> Insert {
        let mut table = self.lock();
        if let Some(existing) = table.get(name) {
            return Insert::Exists(existing.clone());
        }
        let rt = Arc::new(Runtime {
            id: id.to_string(),
            name: name.to_string(),
            container: Mutex::new(name.to_string()),
            work_dir,
            view: Mutex::new(view),
            address: Mutex::new(None),
            phase: watch::channel(Phase::Pending).0,
            in_flight: AtomicUsize::new(0),
        });
        table.insert(name.to_string(), rt.clone());
        Insert::Inserted(rt)
    }

    /// Drops an entry if it is still this runtime.
    pub fn remove(&self, rt: &Arc<Runtime>) -> bool {
        let mut table = self.lock();
        match table.get(&rt.name) {
            Some(current) if Arc::ptr_eq(current, rt) => {
                table.shift_remove(&rt.name);
                true
            }
            _ => false,
        }
    }

    /// Removes and returns ready runtimes idle since before `cutoff` with
    /// nothing in flight (executor-api §12.3; pending ones are skipped).
    pub fn take_idle(&self, cutoff: f64) -> Vec<Arc<Runtime>> {
        let mut table = self.lock();
        let idle: Vec<String> = table
            .values()
            .filter(|rt| {
                *rt.phase.borrow() == Phase::Ready
                    && rt.in_flight() == 0
                    && rt.view().updated < cutoff
            })
            .map(|rt| rt.name.clone())
            .collect();
        idle.iter()
            .filter_map(|name| table.shift_remove(name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str) -> RuntimeView {
        RuntimeView {
            version: "v5".into(),
            created: now(),
            updated: now(),
            name: name.into(),
            hostname: "h".into(),
            status: "pending".into(),
            key: "k".into(),
            listening: 0,
            image: "i".into(),
            initialised: 0,
        }
    }

    #[test]
    fn second_insert_sees_the_first() {
        let r = Registry::default();
        assert!(matches!(
            r.insert_pending("a", "x-a", PathBuf::new(), view("x-a")),
            Insert::Inserted(_)
        ));
        assert!(matches!(
            r.insert_pending("a", "x-a", PathBuf::new(), view("x-a")),
            Insert::Exists(_)
        ));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn idle_reaping_skips_in_flight_and_pending() {
        let r = Registry::default();
        let Insert::Inserted(busy) = r.insert_pending("b", "x-b", PathBuf::new(), view("x-b"))
        else {
            panic!()
        };
        let Insert::Inserted(idle) = r.insert_pending("i", "x-i", PathBuf::new(), view("x-i"))
        else {
            panic!()
        };
        let Insert::Inserted(_pending) = r.insert_pending("p", "x-p", PathBuf::new(), view("x-p"))
        else {
            panic!()
        };
        busy.set_phase(Phase::Ready);
        idle.set_phase(Phase::Ready);
        let guard = r.enter("x-b").expect("entered");
        let taken = r.take_idle(now() + 10.0);
        assert_eq!(
            taken.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["x-i"]
        );
        drop(guard);
        assert_eq!(r.take_idle(now() + 10.0).len(), 1);
        assert_eq!(r.len(), 1, "the pending one stays");
    }
}
