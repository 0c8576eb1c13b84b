//! `opr images build`: runtime images made locally, since no registry can
//! be pulled from (docs/docker.md).
//!
//! 1. `opr/base:bookworm`, when missing: `images/build-base.sh` makes (or
//!    finds cached) a debootstrap minbase tarball, imported through the API.
//! 2. For each `runtimes/<lang>/Dockerfile`: a build from the repository
//!    root with the files its `Dockerfile.dockerignore` lets through, tagged
//!    `opr/<lang>:latest`; the engine's layer cache makes a rebuild with
//!    nothing changed take seconds.
//! 3. The Open Runtimes names of each image ([`super::images`]).

use super::client::api_failed;
use super::context::{self, Ignore};
use super::images::{self, BASE_IMAGE};
use crate::{OrchestratorError, Result};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateImageOptionsBuilder, TagImageOptionsBuilder,
};
use bollard::{body_full, body_try_stream, Docker};
use bytes::Bytes;
use futures_util::StreamExt;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio::io::AsyncReadExt;

#[derive(Debug, Clone)]
pub struct BuildConfig {
    /// The build context of every runtime image: the repository root.
    pub context_dir: PathBuf,
    /// Holds `<lang>/Dockerfile`; inside `context_dir`.
    pub runtimes_dir: PathBuf,
    /// Makes the base rootfs tarball: `images/build-base.sh`.
    pub base_script: PathBuf,
    /// Where the base rootfs tarball is cached, named after a hash of the
    /// script so that a changed script makes a new one.
    pub base_dir: PathBuf,
    /// Languages to build; empty: every folder with a Dockerfile.
    pub languages: Vec<String>,
    /// Build without the layer cache.
    pub no_cache: bool,
}

#[derive(Debug, Clone)]
pub struct Built {
    pub language: String,
    pub image: String,
    pub id: String,
    pub aliases: Vec<String>,
    pub seconds: f64,
}

fn failed(msg: impl Into<String>) -> OrchestratorError {
    OrchestratorError::Failed(msg.into())
}

/// `repo:tag` → (`repo`, `tag`).
pub fn split_tag(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (image, "latest"),
    }
}

/// The languages with a Dockerfile, sorted.
pub fn languages(runtimes_dir: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(runtimes_dir)
        .map_err(|e| failed(format!("cannot read {}: {e}", runtimes_dir.display())))?;
    let mut out: Vec<String> = rd
        .filter_map(|e| {
            let e = e.ok()?;
            e.path()
                .join("Dockerfile")
                .is_file()
                .then(|| e.file_name().into_string().ok())
                .flatten()
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Builds the base (when missing) and the runtime images, then tags them.
/// `log` gets progress lines; the engine's build output comes as
/// `[<lang>] | <line>`.
pub async fn build_all(
    docker: &Docker,
    cfg: &BuildConfig,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Vec<Built>> {
    let mut wanted = languages(&cfg.runtimes_dir)?;
    if !cfg.languages.is_empty() {
        for l in &cfg.languages {
            if !wanted.contains(l) {
                return Err(failed(format!(
                    "no Dockerfile for {l} in {}",
                    cfg.runtimes_dir.display()
                )));
            }
        }
        wanted.retain(|l| cfg.languages.contains(l));
    }
    ensure_base(docker, cfg, log).await?;
    // Independent builds: run them together (downloads overlap unpacking).
    let builds = wanted
        .iter()
        .map(|lang| build_runtime(docker, cfg, lang, log));
    let results = futures_util::future::join_all(builds).await;
    results.into_iter().collect()
}

/// FNV-1a, 64 bits: a stable name for the script's content.
pub fn content_hash(data: &[u8]) -> String {
    let h = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{h:016x}")
}

/// The comment an imported base carries: which script made it.
fn base_comment(hash: &str) -> String {
    format!("opr-base {hash}")
}

/// Imports `opr/base:bookworm` from the cached tarball unless the image
/// exists and was made by the current script; makes the tarball first when
/// it is not cached. Returns whether the image was imported.
pub async fn ensure_base(
    docker: &Docker,
    cfg: &BuildConfig,
    log: &(dyn Fn(&str) + Sync),
) -> Result<bool> {
    let script = std::fs::read(&cfg.base_script)
        .map_err(|e| failed(format!("cannot read {}: {e}", cfg.base_script.display())))?;
    let hash = content_hash(&script);
    match docker.inspect_image(BASE_IMAGE).await {
        Ok(i) if i.comment.as_deref() == Some(base_comment(&hash).as_str()) => {
            log(&format!("{BASE_IMAGE}: present"));
            return Ok(false);
        }
        Ok(_) => log(&format!(
            "{BASE_IMAGE}: made by another version of {}, replacing it",
            cfg.base_script.display()
        )),
        Err(_) => {}
    }
    let t = Instant::now();
    let tarball = cfg
        .base_dir
        .join(format!("debian-bookworm-minbase-{hash}.tar"));
    if !tarball.is_file() {
        // Tarballs of earlier scripts are of no more use.
        if let Ok(rd) = std::fs::read_dir(&cfg.base_dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with("debian-bookworm-minbase-") && n.ends_with(".tar") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        log(&format!(
            "{BASE_IMAGE}: making the root filesystem with {} (debootstrap, about a minute)",
            cfg.base_script.display()
        ));
        let status = tokio::process::Command::new("bash")
            .arg(&cfg.base_script)
            .arg(&tarball)
            .stdin(std::process::Stdio::null())
            .status()
            .await
            .map_err(|e| failed(format!("cannot run {}: {e}", cfg.base_script.display())))?;
        if !status.success() || !tarball.is_file() {
            return Err(failed(format!(
                "{} failed ({status})",
                cfg.base_script.display()
            )));
        }
    }
    log(&format!("{BASE_IMAGE}: importing {}", tarball.display()));
    let file = tokio::fs::File::open(&tarball)
        .await
        .map_err(|e| failed(format!("cannot open {}: {e}", tarball.display())))?;
    let chunks = futures_util::stream::try_unfold(file, |mut f| async move {
        let mut buf = vec![0u8; 1 << 20];
        let n = f.read(&mut buf).await?;
        buf.truncate(n);
        Ok::<_, std::io::Error>((n > 0).then(|| (Bytes::from(buf), f)))
    });
    let (repo, tag) = split_tag(BASE_IMAGE);
    let options = CreateImageOptionsBuilder::new()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .changes(vec![r#"CMD ["bash"]"#.to_owned()])
        .message(&base_comment(&hash))
        .build();
    let mut progress = docker.create_image(Some(options), Some(body_try_stream(chunks)), None);
    while let Some(item) = progress.next().await {
        let item = item.map_err(|e| api_failed(&format!("import {BASE_IMAGE}"), &e))?;
        if let Some(detail) = item.error_detail {
            return Err(failed(format!(
                "import {BASE_IMAGE}: {}",
                detail.message.unwrap_or_default()
            )));
        }
    }
    log(&format!(
        "{BASE_IMAGE}: imported in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    Ok(true)
}

/// Context folder of host programs. No registry can be reached, so a
/// runtime whose toolchain Debian does not ship (Bun) copies the one
/// installed on the host: `COPY .opr-host/<name> …` in a Dockerfile puts the
/// file `PATH` resolves `<name>` to (links followed) into the context there.
pub const HOST_PROGRAMS: &str = ".opr-host/";

/// The host programs a Dockerfile's `COPY` lines ask for, as
/// `(context path, host file)`, looked up in `path_var` (a `PATH` value).
pub fn host_programs(dockerfile: &str, path_var: &str) -> Result<Vec<(String, PathBuf)>> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    let copies = dockerfile
        .lines()
        .map(str::trim_start)
        .filter(|l| l.get(..5).is_some_and(|w| w.eq_ignore_ascii_case("copy ")));
    for line in copies {
        for (i, _) in line.match_indices(HOST_PROGRAMS) {
            let name: String = line[i + HOST_PROGRAMS.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                .collect();
            let rel = format!("{HOST_PROGRAMS}{name}");
            if name.is_empty() || name.starts_with('.') || out.iter().any(|(r, _)| *r == rel) {
                continue;
            }
            let found = path_var
                .split(':')
                .filter(|d| !d.is_empty())
                .map(|d| Path::new(d).join(&name))
                .find(|p| is_executable(p))
                .ok_or_else(|| {
                    failed(format!(
                        "the Dockerfile copies the host's {name} ({rel}), which is not on \
                         PATH: install it first (scripts/setup.sh)"
                    ))
                })?;
            let real = std::fs::canonicalize(&found)
                .map_err(|e| failed(format!("cannot resolve {}: {e}", found.display())))?;
            out.push((rel, real));
        }
    }
    Ok(out)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The context archive of one runtime image: what the Dockerfile's
/// `.dockerignore` lets through, the host programs it copies, and the
/// Dockerfile.
fn context_archive(cfg: &BuildConfig, dockerfile: &Path) -> Result<(Vec<u8>, String)> {
    let context_dir = &cfg.context_dir;
    let rel = dockerfile
        .strip_prefix(context_dir)
        .map_err(|_| {
            failed(format!(
                "{} is not inside the build context {}",
                dockerfile.display(),
                context_dir.display()
            ))
        })?
        .to_string_lossy()
        .into_owned();
    let own_ignore = PathBuf::from(format!("{}.dockerignore", dockerfile.display()));
    let ignore_file = [own_ignore, context_dir.join(".dockerignore")]
        .into_iter()
        .find(|p| p.is_file());
    let ignore = match &ignore_file {
        Some(p) => Ignore::parse(
            &std::fs::read_to_string(p)
                .map_err(|e| failed(format!("cannot read {}: {e}", p.display())))?,
        ),
        None => Ignore::default(),
    };
    let text = std::fs::read_to_string(dockerfile)
        .map_err(|e| failed(format!("cannot read {}: {e}", dockerfile.display())))?;
    for needed in ["target/release/opr-runtime"] {
        if text.contains(needed) && !context_dir.join(needed).is_file() {
            return Err(failed(format!(
                "{} copies {needed}, which is missing: run `cargo build --release -p \
                 opr-runtime` first",
                rel
            )));
        }
    }
    let path_var = std::env::var("PATH").unwrap_or_default();
    let mut extra = host_programs(&text, &path_var)?;
    extra.push((rel.clone(), dockerfile.to_owned()));
    let entries = context::collect(context_dir, &ignore)
        .map_err(|e| failed(format!("cannot read the build context: {e}")))?;
    let tar = context::tar(context_dir, &entries, &extra)
        .map_err(|e| failed(format!("cannot pack the build context: {e}")))?;
    Ok((tar, rel))
}

async fn build_runtime(
    docker: &Docker,
    cfg: &BuildConfig,
    language: &str,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Built> {
    let t = Instant::now();
    let (image, aliases) = images::runtime_image(language);
    let dockerfile = cfg.runtimes_dir.join(language).join("Dockerfile");
    let (tar, rel) = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || context_archive(&cfg, &dockerfile))
            .await
            .map_err(|e| failed(format!("context task: {e}")))??
    };
    log(&format!(
        "[{language}] building {image} from {rel} (context {} kB)",
        tar.len() / 1024
    ));
    let options = BuildImageOptionsBuilder::new()
        .dockerfile(&rel)
        .t(&image)
        .rm(true)
        .forcerm(true)
        .nocache(cfg.no_cache)
        .build();
    let mut stream = docker.build_image(options, None, Some(body_full(Bytes::from(tar))));
    let mut id = String::new();
    let mut last_lines: Vec<String> = Vec::new();
    while let Some(item) = stream.next().await {
        let item = item.map_err(|e| {
            failed(format!(
                "[{language}] build failed: {e}\n{}",
                last_lines.join("\n")
            ))
        })?;
        if let Some(detail) = item.error_detail {
            return Err(failed(format!(
                "[{language}] build failed: {}\n{}",
                detail.message.unwrap_or_default(),
                last_lines.join("\n")
            )));
        }
        if let Some(text) = item.stream {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                log(&format!("[{language}] | {line}"));
                last_lines.push(line.to_owned());
                if last_lines.len() > 20 {
                    last_lines.remove(0);
                }
            }
        }
        if let Some(aux_id) = item.aux.and_then(|a| a.id) {
            id = aux_id;
        }
    }
    if id.is_empty() {
        id = docker
            .inspect_image(&image)
            .await
            .map_err(|e| api_failed(&format!("inspect {image}"), &e))?
            .id
            .unwrap_or_default();
    }
    for alias in &aliases {
        let (repo, tag) = split_tag(alias);
        let options = TagImageOptionsBuilder::new().repo(repo).tag(tag).build();
        docker
            .tag_image(&image, Some(options))
            .await
            .map_err(|e| api_failed(&format!("tag {image} as {alias}"), &e))?;
    }
    let seconds = t.elapsed().as_secs_f64();
    log(&format!(
        "[{language}] {image} {} in {seconds:.1} s; also tagged {}",
        short_id(&id),
        if aliases.is_empty() {
            "(no aliases)".to_string()
        } else {
            aliases.join(", ")
        }
    ));
    Ok(Built {
        language: language.to_owned(),
        image,
        id,
        aliases,
        seconds,
    })
}

fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split() {
        assert_eq!(
            split_tag("openruntimes/node:v5-22"),
            ("openruntimes/node", "v5-22")
        );
        assert_eq!(split_tag("node-22"), ("node-22", "latest"));
        assert_eq!(
            split_tag("registry:5000/x/y"),
            ("registry:5000/x/y", "latest")
        );
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(content_hash(b""), "cbf29ce484222325");
        assert_ne!(content_hash(b"a"), content_hash(b"b"));
    }

    #[test]
    fn host_programs_come_from_path_for_copy_lines_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        let real = dir.path().join("tool-1.0");
        std::fs::write(&real, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&real, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        std::os::unix::fs::symlink(&real, bin.join("tool")).expect("symlink");
        std::fs::write(bin.join("plain"), "not executable").expect("write");
        let path_var = format!("/nonexistent:{}", bin.display());
        let dockerfile = "# COPY .opr-host/ghost is only a comment\n\
                          FROM x\n\
                          RUN echo .opr-host/ghost\n\
                          COPY .opr-host/tool /usr/local/bin/tool\n\
                          copy .opr-host/tool /again\n";
        let found = host_programs(dockerfile, &path_var).expect("found");
        let real = std::fs::canonicalize(&real).expect("canonical");
        assert_eq!(found, vec![(".opr-host/tool".to_string(), real)]);
        assert!(host_programs("FROM x\n", &path_var)
            .expect("none")
            .is_empty());
        let missing = host_programs("COPY .opr-host/plain /p\n", &path_var);
        assert!(
            matches!(&missing, Err(OrchestratorError::Failed(m)) if m.contains("not on PATH")),
            "{missing:?}"
        );
    }

    #[test]
    fn languages_with_a_dockerfile() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (d, f) in [("node", true), ("python", true), ("docs", false)] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
            if f {
                std::fs::write(dir.path().join(d).join("Dockerfile"), "FROM x\n").expect("write");
            }
        }
        assert_eq!(
            languages(dir.path()).expect("languages"),
            vec!["node".to_string(), "python".to_string()]
        );
    }
}
