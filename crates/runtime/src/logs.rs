//! Log ids and per-request log files (runtime-protocol §3.13).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub const NATIVE_BANNER: &str =
    "Native logs detected. Use context.log() or context.error() for better experience.";
pub const TRUNCATION_SUFFIX: &str = "... Log truncated due to size limit (8000 characters)";
pub const MAX_LINE_CHARS: usize = 8000;
/// Buffered bytes per file before they are appended to disk.
const FLUSH_AT: usize = 256 << 10;

/// A fresh 20-character id: 8 hex digits of Unix seconds, 5 of milliseconds,
/// 7 random.
pub fn generate_log_id() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{:08x}{:05x}{:07x}",
        now.as_secs() as u32,
        now.subsec_millis(),
        fastrand::u32(..0x1000_0000)
    )
}

/// Which file a line goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Log,
    Error,
    /// Native stdout/stderr: goes to the logs file after a one-time banner.
    Native,
}

/// The two log files of one request. Files are created on first write only;
/// everything is appended (a `dev` or repeated id shares files).
pub struct LogSink {
    paths: Option<(PathBuf, PathBuf)>,
    logs: Vec<u8>,
    errors: Vec<u8>,
    native_seen: bool,
}

impl LogSink {
    /// `id == None` means logging is disabled: everything is dropped.
    pub fn new(dir: &Path, id: Option<&str>) -> Self {
        let paths = id.map(|id| {
            // A client-chosen id must not name a file outside the logs folder.
            let safe: String = id
                .chars()
                .map(|c| {
                    if c == '/' || c == '\\' || c == '\0' {
                        '_'
                    } else {
                        c
                    }
                })
                .collect();
            let safe = if safe == "." || safe == ".." {
                "_".to_string()
            } else {
                safe
            };
            (
                dir.join(format!("{safe}_logs.log")),
                dir.join(format!("{safe}_errors.log")),
            )
        });
        Self {
            paths,
            logs: Vec::new(),
            errors: Vec::new(),
            native_seen: false,
        }
    }

    pub fn enabled(&self) -> bool {
        self.paths.is_some()
    }

    /// One `context.log`/`context.error` line, or a chunk of native output.
    pub fn write(&mut self, stream: Stream, text: &str) {
        if !self.enabled() {
            return;
        }
        match stream {
            Stream::Log => push_line(&mut self.logs, text),
            Stream::Error => push_line(&mut self.errors, text),
            Stream::Native => {
                if !self.native_seen {
                    self.native_seen = true;
                    self.logs.extend_from_slice(NATIVE_BANNER.as_bytes());
                    self.logs.push(b'\n');
                }
                self.logs.extend_from_slice(text.as_bytes());
            }
        }
        if self.logs.len() >= FLUSH_AT || self.errors.len() >= FLUSH_AT {
            self.flush();
        }
    }

    pub fn error(&mut self, text: &str) {
        self.write(Stream::Error, text);
    }

    /// Appends buffered text to the files. Failures go to the server's own
    /// stderr: a full disk must not turn into a failed execution.
    pub fn flush(&mut self) {
        let Some((logs_path, errors_path)) = &self.paths else {
            return;
        };
        for (path, buf) in [(logs_path, &mut self.logs), (errors_path, &mut self.errors)] {
            if buf.is_empty() {
                continue;
            }
            let result = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(buf));
            if let Err(e) = result {
                eprintln!("opr-runtime: cannot write {}: {e}", path.display());
            }
            buf.clear();
        }
    }
}

impl Drop for LogSink {
    fn drop(&mut self) {
        self.flush();
    }
}

fn push_line(buf: &mut Vec<u8>, text: &str) {
    match text.char_indices().nth(MAX_LINE_CHARS) {
        Some((cut, _)) => {
            buf.extend_from_slice(&text.as_bytes()[..cut]);
            buf.extend_from_slice(TRUNCATION_SUFFIX.as_bytes());
        }
        None => buf.extend_from_slice(text.as_bytes()),
    }
    buf.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_20_hex_and_differ() {
        let a = generate_log_id();
        let b = generate_log_id();
        assert_eq!(a.len(), 20);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn lines_are_exact_truncated_and_banner_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sink = LogSink::new(dir.path(), Some("abc"));
        sink.write(Stream::Log, "engine: open-runtimes");
        sink.write(Stream::Log, &"é".repeat(8001));
        sink.write(Stream::Native, "a\n");
        sink.write(Stream::Native, "b\n");
        sink.error("boom");
        drop(sink);
        let logs = std::fs::read_to_string(dir.path().join("abc_logs.log")).expect("logs");
        let expected = format!(
            "engine: open-runtimes\n{}{TRUNCATION_SUFFIX}\n{NATIVE_BANNER}\na\nb\n",
            "é".repeat(8000)
        );
        assert_eq!(logs, expected);
        let errors = std::fs::read_to_string(dir.path().join("abc_errors.log")).expect("errors");
        assert_eq!(errors, "boom\n");
    }

    #[test]
    fn nothing_written_means_no_files_and_ids_cannot_escape() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(LogSink::new(dir.path(), Some("quiet")));
        assert!(!dir.path().join("quiet_logs.log").exists());
        let mut sink = LogSink::new(dir.path(), Some("../escape"));
        sink.error("x");
        drop(sink);
        assert!(dir.path().join(".._escape_errors.log").exists());
    }

    #[test]
    fn disabled_sink_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sink = LogSink::new(dir.path(), None);
        sink.error("x");
        drop(sink);
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }
}
