//! What the server reads from the environment (runtime-protocol §3.2) and the
//! `.open-runtimes` file (§5.9).

use std::collections::BTreeMap;
use std::path::Path;

/// The per-function settings. They change only when a standby runtime is
/// assigned a function.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Empty disables authentication (§3.6).
    pub secret: String,
    pub entrypoint: String,
    /// Lower-cased names with string values (§3.8).
    pub enforced_headers: Vec<(String, String)>,
    /// `OPEN_RUNTIMES_ENV=development`: default log id `dev` (§3.13).
    pub development: bool,
}

impl Settings {
    /// Reads the spec variables from `env`; `default_entrypoint` applies when
    /// `OPEN_RUNTIMES_ENTRYPOINT` is unset or empty.
    pub fn from_env(env: &BTreeMap<String, String>, default_entrypoint: &str) -> Self {
        let get = |k: &str| env.get(k).map(String::as_str).unwrap_or("");
        let entrypoint = match get("OPEN_RUNTIMES_ENTRYPOINT") {
            "" => default_entrypoint.to_string(),
            e => e.to_string(),
        };
        Self {
            secret: get("OPEN_RUNTIMES_SECRET").to_string(),
            entrypoint,
            enforced_headers: parse_enforced_headers(get("OPEN_RUNTIMES_HEADERS")),
            development: get("OPEN_RUNTIMES_ENV") == "development",
        }
    }
}

/// `OPEN_RUNTIMES_HEADERS`: a JSON object; anything else means no headers.
pub fn parse_enforced_headers(raw: &str) -> Vec<(String, String)> {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(raw) else {
        return Vec::new();
    };
    map.into_iter()
        .map(|(k, v)| {
            let value = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k.to_ascii_lowercase(), value)
        })
        .collect()
}

/// Reads a dotenv-style `.open-runtimes` file; a missing file yields nothing.
pub fn read_dotenv(path: &Path) -> BTreeMap<String, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return BTreeMap::new();
    };
    parse_dotenv(&text)
}

pub fn parse_dotenv(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        out.insert(key.trim().to_string(), value.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enforced_headers_lowercase_names_and_stringify_values() {
        let h = parse_enforced_headers(
            r#"{"x-custom":"value","X-CUSTOM-UPPERCASE":"Value2","x-open-runtimes-custom":248}"#,
        );
        assert!(h.contains(&("x-custom-uppercase".into(), "Value2".into())));
        assert!(h.contains(&("x-open-runtimes-custom".into(), "248".into())));
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn invalid_or_empty_enforced_headers_mean_none() {
        assert!(parse_enforced_headers("").is_empty());
        assert!(parse_enforced_headers("{oops").is_empty());
        assert!(parse_enforced_headers("[1,2]").is_empty());
    }

    #[test]
    fn dotenv_reads_quoted_and_plain_values() {
        let env = parse_dotenv(
            "OPEN_RUNTIMES_ENTRYPOINT=src/app.js\nexport A=\"b c\"\n# note\nOPEN_RUNTIMES_CLEANUP='none'\n",
        );
        assert_eq!(env["OPEN_RUNTIMES_ENTRYPOINT"], "src/app.js");
        assert_eq!(env["A"], "b c");
        assert_eq!(env["OPEN_RUNTIMES_CLEANUP"], "none");
    }

    #[test]
    fn entrypoint_falls_back_to_language_default() {
        let env = BTreeMap::from([("OPEN_RUNTIMES_ENV".to_string(), "development".to_string())]);
        let s = Settings::from_env(&env, "main.py");
        assert_eq!(s.entrypoint, "main.py");
        assert!(s.development);
        assert!(s.secret.is_empty());
    }
}
