//! Image names: what `opr images build` makes, the Open Runtimes names it
//! tags them with so clients work unchanged, and warm-pool keys.

/// The base every runtime image starts FROM: Debian 12 minbase from
/// debootstrap, imported (no registry can be pulled from).
pub const BASE_IMAGE: &str = "opr/base:bookworm";

/// The image must exist on this engine already: nothing can be pulled here
/// (`opr images build` makes the images and their Open Runtimes names).
/// Known images are remembered, so a cold start inspects at most once.
pub async fn ensure_local(
    docker: &bollard::Docker,
    known: &std::sync::Mutex<std::collections::HashSet<String>>,
    image: &str,
) -> crate::Result<()> {
    let is_known = |k: &std::sync::Mutex<std::collections::HashSet<String>>| {
        k.lock().unwrap_or_else(|p| p.into_inner()).contains(image)
    };
    if is_known(known) {
        return Ok(());
    }
    match docker.inspect_image(image).await {
        Ok(_) => {
            known
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(image.to_owned());
            Ok(())
        }
        Err(e) if super::client::status_of(&e) == Some(404) => {
            Err(crate::OrchestratorError::MissingImage(image.to_owned()))
        }
        Err(e) => Err(super::client::api_failed(
            &format!("inspect image {image}"),
            &e,
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeImage {
    /// The folder under `runtimes/` and the `opr-runtime` language.
    pub language: &'static str,
    /// What `opr images build` builds.
    pub image: &'static str,
    /// Other names of the same image, tagged after the build.
    pub aliases: &'static [&'static str],
}

/// Debian 12 ships Node 18 and Python 3.11, and the Bun image holds the
/// host's Bun: the aliases name the versions Open Runtimes clients ask for,
/// not the versions inside (docs/docker.md).
pub const RUNTIME_IMAGES: &[RuntimeImage] = &[
    RuntimeImage {
        language: "node",
        image: "opr/node:latest",
        aliases: &[
            "openruntimes/node:v5-22",
            "openruntimes/node:v5-21",
            "openruntimes/node:v5-20",
            "openruntimes/node:v5-19",
            "openruntimes/node:v5-18",
            "node-22:latest",
            "node-20:latest",
            "node-18:latest",
        ],
    },
    RuntimeImage {
        language: "python",
        image: "opr/python:latest",
        aliases: &[
            "openruntimes/python:v5-3.12",
            "openruntimes/python:v5-3.11",
            "openruntimes/python:v5-3.10",
            "python-3.12:latest",
            "python-3.11:latest",
        ],
    },
    RuntimeImage {
        language: "bun",
        image: "opr/bun:latest",
        aliases: &[
            "openruntimes/bun:v5-1.1",
            "openruntimes/bun:v5-1.0",
            "bun-1.1:latest",
            "bun-1.0:latest",
        ],
    },
];

/// The image built from `runtimes/<language>/Dockerfile`, with its aliases
/// (none for a language this table does not know).
pub fn runtime_image(language: &str) -> (String, Vec<String>) {
    match RUNTIME_IMAGES.iter().find(|r| r.language == language) {
        Some(r) => (
            r.image.to_owned(),
            r.aliases.iter().map(|a| (*a).to_owned()).collect(),
        ),
        None => (format!("opr/{language}:latest"), Vec::new()),
    }
}

/// `docker.io/library/x` → `x:latest`: the form the engine lists.
pub fn normalize(image: &str) -> String {
    let mut name = image.trim();
    for prefix in ["docker.io/", "index.docker.io/"] {
        if let Some(rest) = name.strip_prefix(prefix) {
            name = rest;
        }
    }
    if let Some(rest) = name.strip_prefix("library/") {
        name = rest;
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || last.contains('@') || name.is_empty() {
        name.to_owned()
    } else {
        format!("{name}:latest")
    }
}

/// The runtime image `image` names, when it is one `opr images build`
/// makes or tags.
pub fn built_runtime(image: &str) -> Option<&'static RuntimeImage> {
    let image = normalize(image);
    RUNTIME_IMAGES
        .iter()
        .find(|r| r.image == image || r.aliases.contains(&image.as_str()))
}

/// Warm-pool key. The names `opr images build` gives one image (say
/// `openruntimes/node:v5-22` and `opr/node:latest`) are the same image by
/// construction, so they share a pool. Any other image pools only with
/// itself: two different names may hold different contents, and a
/// container cannot change its image the way a process runtime can pick
/// its language.
pub fn pool_key(image: &str) -> String {
    match built_runtime(image) {
        Some(r) => r.image.to_owned(),
        None => normalize(image),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize() {
        assert_eq!(normalize("node-22"), "node-22:latest");
        assert_eq!(normalize("docker.io/library/debian"), "debian:latest");
        assert_eq!(
            normalize("openruntimes/node:v5-22"),
            "openruntimes/node:v5-22"
        );
        assert_eq!(
            normalize("registry.local:5000/x/y"),
            "registry.local:5000/x/y:latest"
        );
        assert_eq!(normalize("x@sha256:ab"), "x@sha256:ab");
    }

    #[test]
    fn pool_keys() {
        let node = pool_key("opr/node:latest");
        assert_eq!(node, "opr/node:latest");
        for alias in [
            "openruntimes/node:v5-22",
            "openruntimes/node:v5-18",
            "node-22",
            "opr/node",
        ] {
            assert_eq!(pool_key(alias), node, "{alias}");
        }
        assert_eq!(pool_key("openruntimes/python:v5-3.12"), "opr/python:latest");
        assert_ne!(pool_key("python-3.11"), node);
        assert_eq!(pool_key("openruntimes/bun:v5-1.1"), "opr/bun:latest");
        assert_eq!(pool_key("bun-1.1"), "opr/bun:latest");
        // Not ours: pooled alone, whatever language the name suggests.
        assert_eq!(pool_key("myorg/node:v5-22"), "myorg/node:v5-22");
        assert_eq!(pool_key("node"), "node:latest");
    }

    #[test]
    fn images_per_language() {
        let (image, aliases) = runtime_image("node");
        assert_eq!(image, "opr/node:latest");
        assert!(aliases.contains(&"openruntimes/node:v5-22".to_string()));
        let (image, aliases) = runtime_image("python");
        assert_eq!(image, "opr/python:latest");
        assert!(aliases.contains(&"openruntimes/python:v5-3.12".to_string()));
        let (image, aliases) = runtime_image("bun");
        assert_eq!(image, "opr/bun:latest");
        assert!(aliases.contains(&"openruntimes/bun:v5-1.1".to_string()));
        assert!(aliases.contains(&"bun-1.1:latest".to_string()));
        assert_eq!(runtime_image("php"), ("opr/php:latest".into(), vec![]));
        // Every alias is known to language_of_image as the same language.
        for r in RUNTIME_IMAGES {
            for a in r.aliases {
                assert_eq!(
                    crate::language_of_image(a).map(|l| l.name()),
                    Some(r.language),
                    "{a}"
                );
            }
        }
    }
}
