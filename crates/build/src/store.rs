//! The job table in SQLite (WAL mode: readers never block the writer, and a
//! committed transaction survives `kill -9`).

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::Value;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// A job that was running when the executor died is run once more; after a
/// second interruption it fails.
pub const MAX_ATTEMPTS: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("build store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("build store holds malformed data: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            other => return Err(StoreError::Corrupt(format!("unknown state {other:?}"))),
        })
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: String,
    pub state: JobState,
    pub request: Value,
    pub attempts: u32,
    pub created: f64,
    pub started: Option<f64>,
    pub finished: Option<f64>,
    pub result: Option<Value>,
    pub error: Option<Value>,
    /// Why the job ended as it did, when that is not the build's own doing.
    pub reason: Option<String>,
}

/// What start-up recovery did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub requeued: Vec<String>,
    pub failed: Vec<String>,
    pub queued: usize,
}

pub struct Store {
    conn: Mutex<Connection>,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// 20 hex characters: time, then randomness, so ids sort by submission.
fn new_id() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{:08x}{:05x}{:07x}",
        now.as_secs() as u32,
        now.subsec_micros(),
        fastrand::u32(..0x1000_0000)
    )
}

const COLUMNS: &str =
    "id, state, request, attempts, created, started, finished, result, error, reason";

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Every commit is durable against a process crash; NORMAL risks
        // only the last commits on power loss, which WAL then rolls back.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS jobs (
                id TEXT PRIMARY KEY,
                state TEXT NOT NULL,
                request TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                created REAL NOT NULL,
                started REAL,
                finished REAL,
                result TEXT,
                error TEXT,
                reason TEXT
             );
             CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, created);",
        )?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn submit(&self, request: &Value) -> Result<Job> {
        let id = new_id();
        let created = now();
        self.conn().execute(
            "INSERT INTO jobs (id, state, request, created) VALUES (?1, 'queued', ?2, ?3)",
            params![id, request.to_string(), created],
        )?;
        self.get(&id)?
            .ok_or_else(|| StoreError::Corrupt("job vanished after insert".into()))
    }

    /// Takes the oldest queued job and marks it running, atomically.
    pub fn claim(&self) -> Result<Option<Job>> {
        let conn = self.conn();
        let id: Option<String> = conn
            .query_row(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, started = ?1
                 WHERE id = (SELECT id FROM jobs WHERE state = 'queued' ORDER BY created, id LIMIT 1)
                 RETURNING id",
                params![now()],
                |r| r.get(0),
            )
            .optional()?;
        drop(conn);
        match id {
            Some(id) => self.get(&id),
            None => Ok(None),
        }
    }

    /// Records the end of a running job. Returns false when the job is no
    /// longer running (it was cancelled meanwhile): the outcome is dropped.
    pub fn finish(&self, id: &str, outcome: std::result::Result<Value, Value>) -> Result<bool> {
        let (state, result, error) = match outcome {
            Ok(v) => ("succeeded", Some(v.to_string()), None),
            Err(e) => ("failed", None, Some(e.to_string())),
        };
        let n = self.conn().execute(
            "UPDATE jobs SET state = ?2, finished = ?3, result = ?4, error = ?5 WHERE id = ?1 AND state = 'running'",
            params![id, state, now(), result, error],
        )?;
        Ok(n == 1)
    }

    /// Cancels a queued or running job; returns its state before.
    pub fn cancel(&self, id: &str) -> Result<Option<JobState>> {
        let conn = self.conn();
        let before: Option<String> = conn
            .query_row("SELECT state FROM jobs WHERE id = ?1", params![id], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(before) = before else {
            return Ok(None);
        };
        let before = JobState::parse(&before)?;
        if !before.is_final() {
            conn.execute(
                "UPDATE jobs SET state = 'cancelled', finished = ?2, reason = 'cancelled on request' WHERE id = ?1",
                params![id, now()],
            )?;
        }
        Ok(Some(before))
    }

    pub fn get(&self, id: &str) -> Result<Option<Job>> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"),
                params![id],
                read_row,
            )
            .optional()?;
        row.map(|r| r.into_job()).transpose()
    }

    /// The newest jobs first.
    pub fn list(&self, limit: usize) -> Result<Vec<Job>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM jobs ORDER BY created DESC, id DESC LIMIT ?1"
        ))?;
        let rows = stmt.query_map(params![limit as i64], read_row)?;
        rows.map(|r| r.map_err(StoreError::from).and_then(RawJob::into_job))
            .collect()
    }

    /// At start-up: jobs left running by a dead executor are queued again
    /// once, or failed with the reason.
    pub fn recover(&self) -> Result<Recovery> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let running: Vec<(String, u32)> = {
            let mut stmt = tx.prepare("SELECT id, attempts FROM jobs WHERE state = 'running'")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        let mut report = Recovery::default();
        for (id, attempts) in running {
            if attempts < MAX_ATTEMPTS {
                tx.execute(
                    "UPDATE jobs SET state = 'queued', reason = 'retried: the executor stopped while it was running' WHERE id = ?1",
                    params![id],
                )?;
                report.requeued.push(id);
            } else {
                tx.execute(
                    "UPDATE jobs SET state = 'failed', finished = ?2,
                     reason = 'failed: the executor stopped while it was running, twice',
                     error = ?3 WHERE id = ?1",
                    params![
                        id,
                        now(),
                        serde_json::json!({"type": "build_failed", "code": 500,
                            "message": "Build interrupted twice by an executor restart."})
                        .to_string()
                    ],
                )?;
                report.failed.push(id);
            }
        }
        report.queued = tx.query_row(
            "SELECT COUNT(*) FROM jobs WHERE state = 'queued'",
            [],
            |r| r.get::<_, i64>(0),
        )? as usize;
        tx.commit()?;
        Ok(report)
    }
}

struct RawJob {
    id: String,
    state: String,
    request: String,
    attempts: u32,
    created: f64,
    started: Option<f64>,
    finished: Option<f64>,
    result: Option<String>,
    error: Option<String>,
    reason: Option<String>,
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawJob> {
    Ok(RawJob {
        id: r.get(0)?,
        state: r.get(1)?,
        request: r.get(2)?,
        attempts: r.get(3)?,
        created: r.get(4)?,
        started: r.get(5)?,
        finished: r.get(6)?,
        result: r.get(7)?,
        error: r.get(8)?,
        reason: r.get(9)?,
    })
}

impl RawJob {
    fn into_job(self) -> Result<Job> {
        let json = |s: &str| {
            serde_json::from_str::<Value>(s).map_err(|e| StoreError::Corrupt(e.to_string()))
        };
        Ok(Job {
            state: JobState::parse(&self.state)?,
            request: json(&self.request)?,
            result: self.result.as_deref().map(json).transpose()?,
            error: self.error.as_deref().map(json).transpose()?,
            id: self.id,
            attempts: self.attempts,
            created: self.created,
            started: self.started,
            finished: self.finished,
            reason: self.reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(&dir.path().join("b.db")).expect("open");
        (dir, s)
    }

    #[test]
    fn jobs_are_claimed_oldest_first_and_once() {
        let (_d, s) = store();
        let a = s.submit(&json!({"n": 1})).expect("submit");
        let b = s.submit(&json!({"n": 2})).expect("submit");
        let first = s.claim().expect("claim").expect("job");
        assert_eq!(
            (first.id.as_str(), first.state, first.attempts),
            (a.id.as_str(), JobState::Running, 1)
        );
        assert_eq!(s.claim().expect("claim").expect("job").id, b.id);
        assert!(s.claim().expect("claim").is_none());
    }

    #[test]
    fn finish_records_outcomes_but_not_over_a_cancel() {
        let (_d, s) = store();
        let a = s.submit(&json!({})).expect("submit");
        s.claim().expect("claim");
        assert!(s.finish(&a.id, Ok(json!({"path": "/x"}))).expect("finish"));
        let done = s.get(&a.id).expect("get").expect("job");
        assert_eq!(done.state, JobState::Succeeded);
        assert_eq!(done.result, Some(json!({"path": "/x"})));
        let b = s.submit(&json!({})).expect("submit");
        s.claim().expect("claim");
        assert_eq!(s.cancel(&b.id).expect("cancel"), Some(JobState::Running));
        assert!(!s
            .finish(&b.id, Err(json!({"message": "killed"})))
            .expect("finish"));
        assert_eq!(
            s.get(&b.id).expect("get").expect("job").state,
            JobState::Cancelled
        );
    }

    #[test]
    fn recovery_requeues_once_then_fails_with_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.db");
        let id = {
            let s = Store::open(&path).expect("open");
            let j = s.submit(&json!({})).expect("submit");
            s.submit(&json!({"queued": true})).expect("submit");
            // Claim the first only; the second stays queued.
            assert_eq!(s.claim().expect("claim").expect("job").id, j.id);
            j.id
        };
        let s = Store::open(&path).expect("reopen");
        let r = s.recover().expect("recover");
        assert_eq!(r.requeued, vec![id.clone()]);
        assert_eq!(r.queued, 2);
        let again = s.claim().expect("claim").expect("job");
        assert_eq!((again.id.as_str(), again.attempts), (id.as_str(), 2));
        drop(s);
        let s = Store::open(&path).expect("reopen");
        let r = s.recover().expect("recover");
        assert_eq!(r.failed, vec![id.clone()]);
        let failed = s.get(&id).expect("get").expect("job");
        assert_eq!(failed.state, JobState::Failed);
        assert!(failed
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("twice")));
    }

    #[test]
    fn unknown_job_is_none() {
        let (_d, s) = store();
        assert!(s.get("nope").expect("get").is_none());
        assert_eq!(s.cancel("nope").expect("cancel"), None);
    }
}
