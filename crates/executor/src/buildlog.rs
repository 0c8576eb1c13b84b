//! Build commands run under util-linux `script`, which records output and
//! timing; this turns the two files into timestamped chunks (executor-api
//! §7.6–7.7, §7.12).

use serde::Serialize;
use std::time::{Duration, SystemTime};

/// The byte cap on build output (the message says 5.00MB; the cap is 1 MB).
pub const MAX_BUILD_LOG: usize = 1_000_000;
pub const TRUNCATED: &str = "Logs truncated due to size exceeding 5.00MB.";

/// The exec argv that runs `OPR_BUILD_COMMAND` under `script`. Passing the
/// command through the environment avoids any quoting of user text.
pub fn wrapper_argv() -> Vec<String> {
    let script = concat!(
        "mkdir -p /tmp/logging && : > /tmp/logging/logs.txt && : > /tmp/logging/timings.txt && ",
        "SHELL=/bin/bash script --quiet --flush --return --timing=/tmp/logging/timings.txt ",
        "--command 'bash -c \"$OPR_BUILD_COMMAND\"' /tmp/logging/logs.txt; ",
        "code=$?; if [ $code -ne 0 ]; then echo \"Build command exited with code $code.\"; exit $code; fi"
    );
    vec!["bash".into(), "-c".into(), script.into()]
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Chunk {
    pub timestamp: String,
    pub content: String,
}

/// `YYYY-MM-DDTHH:MM:SS.mmm+00:00`.
pub fn format_timestamp(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_millis(t).to_string();
    match s.strip_suffix('Z') {
        Some(base) => format!("{base}+00:00"),
        None => s,
    }
}

/// Keeps the valid UTF-8 of `bytes`, dropping invalid sequences.
pub fn valid_utf8(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
    }
    out
}

/// The log content after `script`'s header line.
pub fn log_body(logs: &[u8]) -> &[u8] {
    match memchr::memchr(b'\n', logs) {
        Some(i) => &logs[i + 1..],
        None => &[],
    }
}

/// Parses one timing line: `<delay seconds> <length>`.
pub fn parse_timing(line: &str) -> Option<(Duration, usize)> {
    let (delay, len) = line.trim().split_once(' ')?;
    let delay: f64 = delay.parse().ok()?;
    let micros = (delay.max(0.0) * 1_000_000.0).ceil() as u64;
    Some((Duration::from_micros(micros), len.trim().parse().ok()?))
}

/// Builds the chunks of §7.7 with the clock starting at `start`.
pub fn parse_chunks(logs: &[u8], timings: &str, start: SystemTime) -> Vec<Chunk> {
    let body = log_body(logs);
    let mut clock = start;
    let mut offset = 0usize;
    let mut chunks = Vec::new();
    for line in timings.lines() {
        if offset >= MAX_BUILD_LOG {
            chunks.push(Chunk {
                timestamp: format_timestamp(clock),
                content: TRUNCATED.to_string(),
            });
            break;
        }
        let Some((delay, len)) = parse_timing(line) else {
            continue;
        };
        clock += delay;
        let end = (offset + len).min(body.len());
        if offset >= end {
            break;
        }
        chunks.push(Chunk {
            timestamp: format_timestamp(clock),
            content: valid_utf8(&body[offset..end]),
        });
        offset = end;
    }
    chunks
}

/// Trims and cuts `text` to its first `max` bytes at a character boundary.
pub fn cut(text: &str, max: usize) -> String {
    let t = text.trim();
    if t.len() <= max {
        return t.to_string();
    }
    let mut end = max;
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    t[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_follow_timings_and_skip_the_header() {
        let logs = b"Script started on x\none\r\ntwo\r\n\nScript done";
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_751_364_000);
        let chunks = parse_chunks(logs, "0.010147 5\n0.104612 5\n", start);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].content, "one\r\n");
        assert_eq!(chunks[1].content, "two\r\n");
        assert_eq!(chunks[0].timestamp, "2025-07-01T10:00:00.010+00:00");
        assert_eq!(chunks[1].timestamp, "2025-07-01T10:00:00.114+00:00");
    }

    #[test]
    fn output_past_the_cap_is_truncated_with_a_notice() {
        let mut logs = b"header\n".to_vec();
        logs.extend(std::iter::repeat_n(b'x', 1_800_000));
        let timings: String = (0..18).map(|_| "0.001 100000\n").collect();
        let chunks = parse_chunks(&logs, &timings, SystemTime::now());
        let total: usize = chunks.iter().map(|c| c.content.len()).sum();
        assert_eq!(chunks.last().map(|c| c.content.as_str()), Some(TRUNCATED));
        assert!((1_000_000..1_100_000).contains(&total), "{total}");
    }

    #[test]
    fn invalid_utf8_is_dropped() {
        assert_eq!(valid_utf8(b"a\xffb"), "ab");
    }

    #[test]
    fn cut_respects_char_boundaries() {
        assert_eq!(cut("  ééé  ", 3), "é");
        assert_eq!(cut("abc", 10), "abc");
    }
}
