//! Image names map to languages by repository name, so
//! `openruntimes/node:v5-22`, `node-22` and `node` all mean Node, and
//! `openruntimes/bun:v5-1.1` and `bun-1.1` mean Bun.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageLanguage {
    Node,
    Python,
    Bun,
}

impl ImageLanguage {
    pub fn name(self) -> &'static str {
        match self {
            ImageLanguage::Node => "node",
            ImageLanguage::Python => "python",
            ImageLanguage::Bun => "bun",
        }
    }
}

pub fn language_of_image(image: &str) -> Option<ImageLanguage> {
    // Drop a registry/owner prefix and the tag: "openruntimes/node:v5-22" → "node".
    let repo = image.rsplit('/').next().unwrap_or(image);
    let repo = repo.split([':', '@']).next().unwrap_or(repo);
    // "node-22" and "python-3.12" name a version after a dash.
    let base = match repo.split_once('-') {
        Some((b, rest)) if rest.starts_with(|c: char| c.is_ascii_digit()) => b,
        _ => repo,
    };
    match base {
        "node" => Some(ImageLanguage::Node),
        "python" => Some(ImageLanguage::Python),
        "bun" => Some(ImageLanguage::Bun),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_by_repository() {
        for (image, lang) in [
            ("openruntimes/node:v5-22", Some(ImageLanguage::Node)),
            ("node-22", Some(ImageLanguage::Node)),
            ("node", Some(ImageLanguage::Node)),
            (
                "registry.local:5000/openruntimes/node:v5-18.0",
                Some(ImageLanguage::Node),
            ),
            ("openruntimes/python:v5-3.12", Some(ImageLanguage::Python)),
            ("python-3.12", Some(ImageLanguage::Python)),
            ("openruntimes/bun:v5-1.1", Some(ImageLanguage::Bun)),
            ("bun-1.1", Some(ImageLanguage::Bun)),
            ("bun", Some(ImageLanguage::Bun)),
            ("openruntimes/python-ml:v5-3.12", None),
            ("openruntimes/php:v5-8.3", None),
            ("", None),
        ] {
            assert_eq!(language_of_image(image), lang, "{image}");
        }
    }
}
