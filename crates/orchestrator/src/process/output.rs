//! A runtime's output (stdout and stderr of its sandbox, one pipe so the
//! order is kept) appended to `output.log`, with one rotated generation
//! `output.log.1`: at most 2 × [`ROTATE_AT`] on disk.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

pub const ROTATE_AT: u64 = 4 << 20;

fn rotated(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

async fn open_append(path: &Path) -> io::Result<(tokio::fs::File, u64)> {
    let f = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await?;
    let len = f.metadata().await?.len();
    Ok((f, len))
}

/// Opens (creating) the log for appending. Done before the sandbox starts,
/// so the pump never creates files in a folder `remove` may be deleting.
pub fn open_log(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new().create(true).append(true).open(path)
}

/// Copies `rx` into `log` (opened on `path`) until end of file (every
/// process holding the pipe's write end has exited). Never stops reading
/// early: a runtime must not block on a full pipe because its log cannot
/// be written.
pub async fn pump(mut rx: pipe::Receiver, log: fs::File, path: PathBuf, rotate_at: u64) {
    let mut file = match log.metadata() {
        Ok(m) => Some((tokio::fs::File::from_std(log), m.len())),
        Err(_) => None,
    };
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match rx.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if file
            .as_ref()
            .is_some_and(|(_, len)| *len > 0 && *len + n as u64 > rotate_at)
        {
            // Rotation failing (folder removed) just stops the log.
            file = match tokio::fs::rename(&path, rotated(&path)).await {
                Ok(()) => open_append(&path).await.ok(),
                Err(_) => None,
            };
        }
        if let Some((f, len)) = file.as_mut() {
            if !write_chunk(f, len, &buf[..n]).await {
                file = None;
            }
        }
    }
}

/// Appends and flushes (so `logs` sees it); false on a write error.
async fn write_chunk(f: &mut tokio::fs::File, len: &mut u64, data: &[u8]) -> bool {
    let ok = f.write_all(data).await.is_ok() && f.flush().await.is_ok();
    *len += data.len() as u64;
    ok
}

/// The last `max_bytes` of the output (rotated generation first), decoded
/// lossily; a character cut at the start is dropped. Blocking.
pub fn tail(path: &Path, max_bytes: usize) -> io::Result<String> {
    let mut out = Vec::new();
    let current = read_tail(path, max_bytes)?;
    if current.len() < max_bytes {
        out = read_tail(&rotated(path), max_bytes - current.len())?;
    }
    out.extend_from_slice(&current);
    // Skip UTF-8 continuation bytes of a character cut by the window.
    let start = out
        .iter()
        .take(3)
        .take_while(|b| (**b & 0b1100_0000) == 0b1000_0000)
        .count();
    Ok(String::from_utf8_lossy(&out[start..]).into_owned())
}

fn read_tail(path: &Path, max_bytes: usize) -> io::Result<Vec<u8>> {
    let mut f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let want = len.min(max_bytes as u64);
    f.seek(SeekFrom::Start(len - want))?;
    let mut buf = Vec::with_capacity(want as usize);
    f.take(want).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn pumps_rotates_and_tails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("output.log");
        let (mut tx, rx) = pipe::pipe().expect("pipe");
        let log = open_log(&path).expect("open");
        let task = tokio::spawn(pump(rx, log, path.clone(), 10));
        let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut total = 0;
        for chunk in ["aaaa\n", "bbbb\n", "cccc\n"] {
            tx.write_all(chunk.as_bytes()).await.expect("write");
            total += chunk.len() as u64;
            // One read per chunk: wait until the pump has written it.
            while size(&path) + size(&rotated(&path)) < total {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
        drop(tx);
        task.await.expect("pump");
        assert_eq!(
            fs::read_to_string(rotated(&path)).expect("rotated"),
            "aaaa\nbbbb\n"
        );
        assert_eq!(fs::read_to_string(&path).expect("current"), "cccc\n");
        assert_eq!(tail(&path, 1000).expect("tail"), "aaaa\nbbbb\ncccc\n");
        assert_eq!(tail(&path, 7).expect("tail"), "b\ncccc\n");
        assert_eq!(tail(&path, 3).expect("tail"), "cc\n");
        assert_eq!(tail(&dir.path().join("none"), 10).expect("tail"), "");
    }

    #[test]
    fn tail_drops_a_cut_character() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("output.log");
        fs::write(&path, "é!").expect("write");
        assert_eq!(tail(&path, 2).expect("tail"), "!");
        assert_eq!(tail(&path, 3).expect("tail"), "é!");
    }
}
