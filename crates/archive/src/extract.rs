//! Extraction with limits. Refused: absolute paths, `..`, links that leave
//! the folder, writing through a link, device files and FIFOs, and archives
//! past the size or entry-count limits. Every refusal names the entry.

use crate::format::{sniff, Format};
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Total bytes of file contents.
    pub max_bytes: u64,
    pub max_entries: u64,
    /// Keep symlinks with absolute targets (a virtualenv's
    /// `bin/python3 -> /usr/bin/python3`). Only for extraction inside a
    /// sandbox, whose root is the runtime's own: such a link is never
    /// followed while extracting, and resolves inside the sandbox later.
    pub allow_absolute_symlinks: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 4 << 30,
            max_entries: 200_000,
            allow_absolute_symlinks: false,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("archive entry {0:?} has an absolute path or '..' and would land outside the folder")]
    EscapingPath(String),
    #[error("archive link {0:?} points outside the folder")]
    EscapingLink(String),
    #[error("archive entry {0:?} would be written through a symbolic link")]
    ThroughLink(String),
    #[error("archive entry {0:?} is a device file or FIFO, which packages may not hold")]
    SpecialFile(String),
    #[error("archive holds more than {0} entries")]
    TooManyEntries(u64),
    #[error("archive unpacks to more than {0} bytes")]
    TooLarge(u64),
    #[error("squashfs packages are not supported here")]
    Squashfs,
    #[error("zip archives are not supported for packages")]
    Zip,
    #[error("archive is damaged or not a tar: {0}")]
    Corrupt(io::Error),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, io::Error),
}

/// Opens `archive`, sniffs its format and extracts it into `dest`.
pub fn extract_file(archive: &Path, dest: &Path, limits: Limits) -> Result<Stats, ExtractError> {
    let file =
        fs::File::open(archive).map_err(|e| ExtractError::Write(archive.to_path_buf(), e))?;
    extract(BufReader::with_capacity(256 << 10, file), dest, limits)
}

/// Extracts a tar stream, compressed or not, into `dest` (created if absent).
pub fn extract(
    mut input: impl BufRead,
    dest: &Path,
    limits: Limits,
) -> Result<Stats, ExtractError> {
    let head = input.fill_buf().map_err(ExtractError::Corrupt)?;
    match sniff(head) {
        Format::Gzip => unpack_tar(flate2::bufread::MultiGzDecoder::new(input), dest, limits),
        Format::Zstd => {
            let decoder =
                zstd::stream::read::Decoder::with_buffer(input).map_err(ExtractError::Corrupt)?;
            unpack_tar(decoder, dest, limits)
        }
        Format::Tar => unpack_tar(input, dest, limits),
        Format::Squashfs => Err(ExtractError::Squashfs),
        Format::Zip => Err(ExtractError::Zip),
    }
}

fn unpack_tar(input: impl Read, dest: &Path, limits: Limits) -> Result<Stats, ExtractError> {
    fs::create_dir_all(dest).map_err(|e| ExtractError::Write(dest.to_path_buf(), e))?;
    let mut archive = tar::Archive::new(input);
    let mut stats = Stats::default();
    for entry in archive.entries().map_err(ExtractError::Corrupt)? {
        let mut entry = entry.map_err(ExtractError::Corrupt)?;
        stats.entries += 1;
        if stats.entries > limits.max_entries {
            return Err(ExtractError::TooManyEntries(limits.max_entries));
        }
        let raw_path = entry.path().map_err(ExtractError::Corrupt)?.into_owned();
        let shown = raw_path.display().to_string();
        let Some(rel) = clean_relative(&raw_path) else {
            return Err(ExtractError::EscapingPath(shown));
        };
        if rel.as_os_str().is_empty() {
            continue; // "./" itself
        }
        let target = dest.join(&rel);
        refuse_links_on_the_way(dest, &rel, &shown)?;
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o644);
        match kind {
            tar::EntryType::Directory => {
                fs::create_dir_all(&target).map_err(|e| ExtractError::Write(target.clone(), e))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let remaining = limits.max_bytes - stats.bytes;
                if entry.size() > remaining {
                    return Err(ExtractError::TooLarge(limits.max_bytes));
                }
                make_parent(&target)?;
                remove_existing(&target)?;
                let mut out = fs::File::create(&target)
                    .map_err(|e| ExtractError::Write(target.clone(), e))?;
                let written = io::copy(&mut (&mut entry).take(remaining + 1), &mut out)
                    .map_err(ExtractError::Corrupt)?;
                stats.bytes += written;
                if stats.bytes > limits.max_bytes {
                    return Err(ExtractError::TooLarge(limits.max_bytes));
                }
                // Keep execute bits; drop setuid, setgid and sticky.
                let perm = fs::Permissions::from_mode((mode & 0o777) | 0o600);
                fs::set_permissions(&target, perm)
                    .map_err(|e| ExtractError::Write(target.clone(), e))?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(ExtractError::Corrupt)?
                    .ok_or_else(|| ExtractError::EscapingLink(shown.clone()))?
                    .into_owned();
                let parent = rel.parent().unwrap_or(Path::new(""));
                let escapes = if link.is_absolute() {
                    !limits.allow_absolute_symlinks
                } else {
                    clean_relative(&parent.join(&link)).is_none()
                };
                if escapes {
                    return Err(ExtractError::EscapingLink(shown));
                }
                make_parent(&target)?;
                remove_existing(&target)?;
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(|e| ExtractError::Write(target.clone(), e))?;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(ExtractError::Corrupt)?
                    .ok_or_else(|| ExtractError::EscapingLink(shown.clone()))?
                    .into_owned();
                let Some(src_rel) = clean_relative(&link) else {
                    return Err(ExtractError::EscapingLink(shown));
                };
                refuse_links_on_the_way(dest, &src_rel, &shown)?;
                let src = dest.join(&src_rel);
                let is_file = fs::symlink_metadata(&src)
                    .map(|m| m.is_file())
                    .unwrap_or(false);
                if !is_file {
                    return Err(ExtractError::EscapingLink(shown));
                }
                make_parent(&target)?;
                remove_existing(&target)?;
                fs::hard_link(&src, &target).map_err(|e| ExtractError::Write(target.clone(), e))?;
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => {}
            _ => return Err(ExtractError::SpecialFile(shown)),
        }
    }
    Ok(stats)
}

/// `path` without `.` parts, or `None` if it is absolute or climbs with `..`.
fn clean_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Every existing ancestor of `rel` inside `dest` must be a real directory,
/// so an earlier symlink entry cannot redirect a later file.
fn refuse_links_on_the_way(dest: &Path, rel: &Path, shown: &str) -> Result<(), ExtractError> {
    let mut at = dest.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for c in parts.iter().take(parts.len().saturating_sub(1)) {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(ExtractError::ThroughLink(shown.to_string()))
            }
            Ok(_) => {}
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

fn make_parent(target: &Path) -> Result<(), ExtractError> {
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(|e| ExtractError::Write(parent.to_path_buf(), e))?;
    }
    Ok(())
}

/// A later entry replaces an earlier one; a link is removed, not followed.
fn remove_existing(target: &Path) -> Result<(), ExtractError> {
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(target).map_err(|e| ExtractError::Write(target.to_path_buf(), e))
        }
        Ok(_) => fs::remove_file(target).map_err(|e| ExtractError::Write(target.to_path_buf(), e)),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().expect("tar")
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_entry_type(tar::EntryType::Regular);
        // set_path refuses "..", so write the raw name like a hostile archive would.
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, data).expect("append");
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, path: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_entry_type(kind);
        h.set_path(path).expect("path");
        h.set_link_name(target).expect("link");
        h.set_cksum();
        b.append(&h, &[][..]).expect("append");
    }

    fn run(bytes: &[u8]) -> (tempfile::TempDir, Result<Stats, ExtractError>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("out");
        let r = extract(bytes, &dest, Limits::default());
        (dir, r)
    }

    #[test]
    fn extracts_plain_gzip_and_zstd_alike() {
        let tar = tar_with(|b| {
            file(b, "index.js", b"module.exports = 1");
            file(b, "lib/a.js", b"a");
        });
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &tar).expect("gz");
        let gz = gz.finish().expect("gz");
        let zst = zstd::encode_all(&tar[..], 1).expect("zstd");
        for bytes in [&tar, &gz, &zst] {
            let (dir, r) = run(bytes);
            assert_eq!(
                r.expect("extract"),
                Stats {
                    entries: 2,
                    bytes: 19
                }
            );
            let js = fs::read_to_string(dir.path().join("out/index.js")).expect("read");
            assert_eq!(js, "module.exports = 1");
            let mode = fs::metadata(dir.path().join("out/lib/a.js"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o755);
        }
    }

    #[test]
    fn refuses_parent_and_absolute_paths() {
        for bad in ["../evil", "a/../../evil", "/etc/evil"] {
            let (dir, r) = run(&tar_with(|b| file(b, bad, b"x")));
            assert!(
                matches!(r, Err(ExtractError::EscapingPath(_))),
                "{bad}: {r:?}"
            );
            assert!(!dir.path().join("evil").exists());
        }
    }

    #[test]
    fn refuses_escaping_symlinks_and_writes_through_links() {
        let (_d, r) = run(&tar_with(|b| link(b, tar::EntryType::Symlink, "l", "/etc")));
        assert!(matches!(r, Err(ExtractError::EscapingLink(_))));
        let (_d, r) = run(&tar_with(|b| {
            link(b, tar::EntryType::Symlink, "a/l", "../../x")
        }));
        assert!(matches!(r, Err(ExtractError::EscapingLink(_))));
        let (dir, r) = run(&tar_with(|b| {
            link(b, tar::EntryType::Symlink, "l", "sub");
            file(b, "l/x", b"x");
        }));
        assert!(matches!(r, Err(ExtractError::ThroughLink(_))), "{r:?}");
        assert!(!dir.path().join("out/sub/x").exists());
        let (_d, r) = run(&tar_with(|b| {
            link(b, tar::EntryType::Link, "h", "../../etc/passwd")
        }));
        assert!(matches!(r, Err(ExtractError::EscapingLink(_))));
    }

    #[test]
    fn keeps_links_that_stay_inside() {
        let (dir, r) = run(&tar_with(|b| {
            file(b, "a/real.txt", b"data");
            link(b, tar::EntryType::Symlink, "a/alias.txt", "real.txt");
            link(b, tar::EntryType::Link, "hard.txt", "a/real.txt");
        }));
        r.expect("extract");
        assert_eq!(
            fs::read_to_string(dir.path().join("out/a/alias.txt")).expect("read"),
            "data"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("out/hard.txt")).expect("read"),
            "data"
        );
    }

    #[test]
    fn absolute_symlinks_only_when_allowed_and_never_written_through() {
        let tar = tar_with(|b| {
            link(
                b,
                tar::EntryType::Symlink,
                "env/bin/python3",
                "/usr/bin/python3",
            )
        });
        let (_d, r) = run(&tar);
        assert!(matches!(r, Err(ExtractError::EscapingLink(_))));
        let dir = tempfile::tempdir().expect("tempdir");
        let allow = Limits {
            allow_absolute_symlinks: true,
            ..Limits::default()
        };
        extract(&tar[..], dir.path(), allow).expect("allowed");
        let target = fs::read_link(dir.path().join("env/bin/python3")).expect("link");
        assert_eq!(target, Path::new("/usr/bin/python3"));
        let through = tar_with(|b| {
            link(b, tar::EntryType::Symlink, "etc", "/tmp");
            file(b, "etc/evil", b"x");
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let r = extract(&through[..], dir.path(), allow);
        assert!(matches!(r, Err(ExtractError::ThroughLink(_))), "{r:?}");
    }

    #[test]
    fn refuses_devices() {
        let tar = tar_with(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_entry_type(tar::EntryType::Char);
            h.set_path("null").expect("path");
            h.set_cksum();
            b.append(&h, &[][..]).expect("append");
        });
        let (_d, r) = run(&tar);
        assert!(matches!(r, Err(ExtractError::SpecialFile(_))));
    }

    #[test]
    fn enforces_size_and_count_limits() {
        let tar = tar_with(|b| {
            for i in 0..5 {
                file(b, &format!("f{i}"), &[b'x'; 100]);
            }
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let r = extract(
            &tar[..],
            dir.path(),
            Limits {
                max_bytes: 250,
                max_entries: 100,
                ..Limits::default()
            },
        );
        assert!(matches!(r, Err(ExtractError::TooLarge(250))));
        let r = extract(
            &tar[..],
            dir.path(),
            Limits {
                max_bytes: 1 << 20,
                max_entries: 3,
                ..Limits::default()
            },
        );
        assert!(matches!(r, Err(ExtractError::TooManyEntries(3))));
    }

    #[test]
    fn garbage_is_a_clear_error_not_a_panic() {
        let (_d, r) = run(&[0x1f, 0x8b, 1, 2, 3]);
        assert!(r.is_err());
        let (_d, r) = run(&[7u8; 1000]);
        assert!(r.is_err());
    }
}
