//! Turning an HTTP request into what the function sees: timeout header
//! (runtime-protocol §3.5), headers (§3.8) and URL parts (§3.9).

use http::HeaderMap;
use serde::Serialize;
use std::collections::BTreeMap;

pub const TIMEOUT_ERROR: &str =
    "Header \"x-open-runtimes-timeout\" must be an integer greater than 0.";
pub const AUTH_ERROR: &str = "Unauthorized. Provide correct \"x-open-runtimes-secret\" header.";

/// The timeout header is not a positive integer.
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidTimeout;

/// `Ok(None)` when no timeout was asked for; digits only, value > 0.
pub fn parse_timeout(value: Option<&[u8]>) -> Result<Option<u64>, InvalidTimeout> {
    let Some(raw) = value else { return Ok(None) };
    if raw.is_empty() {
        return Ok(None);
    }
    if !raw.iter().all(u8::is_ascii_digit) {
        return Err(InvalidTimeout);
    }
    // Digits only, so this parses unless it overflows; a huge value is "forever".
    let secs = std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    if secs == 0 {
        return Err(InvalidTimeout);
    }
    Ok(Some(secs))
}

/// Constant-time comparison, so the secret cannot be guessed byte by byte.
pub fn secret_matches(given: Option<&[u8]>, expected: &str) -> bool {
    let Some(given) = given else { return false };
    let expected = expected.as_bytes();
    if given.len() != expected.len() {
        return false;
    }
    given
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// The headers map of §3.8.
pub fn function_headers(
    headers: &HeaderMap,
    enforced: &[(String, String)],
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let name = name.as_str();
        if name.starts_with("x-open-runtimes-") {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes());
        match out.get_mut(name) {
            Some(existing) => {
                existing.push_str(if name == "cookie" { "; " } else { ", " });
                existing.push_str(&value);
            }
            None => {
                out.insert(name.to_string(), value.into_owned());
            }
        }
    }
    for (name, value) in enforced {
        out.insert(name.clone(), value.clone());
    }
    out
}

/// URL parts of §3.9, serialised into the worker's `INVOKE` meta.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UrlParts {
    pub scheme: String,
    pub host: String,
    pub port: u64,
    pub path: String,
    pub query_string: String,
    pub query: BTreeMap<String, String>,
    pub url: String,
}

pub fn url_parts(host_header: &str, forwarded_proto: Option<&str>, target: &str) -> UrlParts {
    let scheme = forwarded_proto.unwrap_or("http").to_string();
    let default_port = if scheme == "https" { 443 } else { 80 };
    let (host, port) = match host_header.split_once(':') {
        Some((h, p)) => (
            h.to_string(),
            p.trim().parse::<u64>().unwrap_or(default_port),
        ),
        None => (host_header.to_string(), default_port),
    };
    let (path, query_string) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.to_string(), String::new()),
    };
    let mut query = BTreeMap::new();
    for part in query_string.split('&') {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        if !key.is_empty() {
            query.insert(key.to_string(), value.to_string());
        }
    }
    let mut url = format!("{scheme}://{host}");
    if port != default_port {
        url.push_str(&format!(":{port}"));
    }
    url.push_str(&path);
    if !query_string.is_empty() {
        url.push('?');
        url.push_str(&query_string);
    }
    UrlParts {
        scheme,
        host,
        port,
        path,
        query_string,
        query,
        url,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_accepts_only_positive_digit_strings() {
        assert_eq!(parse_timeout(None), Ok(None));
        assert_eq!(parse_timeout(Some(b"")), Ok(None));
        assert_eq!(parse_timeout(Some(b"15")), Ok(Some(15)));
        for bad in [&b"0"[..], b"-1", b"1.5", b"abcd", b" 1"] {
            assert_eq!(parse_timeout(Some(bad)), Err(InvalidTimeout), "{bad:?}");
        }
    }

    #[test]
    fn secret_compare_is_exact() {
        assert!(secret_matches(Some(b"abc"), "abc"));
        assert!(!secret_matches(Some(b"abd"), "abc"));
        assert!(!secret_matches(Some(b"ab"), "abc"));
        assert!(!secret_matches(None, "abc"));
    }

    #[test]
    fn url_examples_of_the_spec() {
        let cases = [
            (
                "www.mydomain.com:3001",
                Some("https"),
                "/a/b?c=d&e=f",
                3001,
                "https://www.mydomain.com:3001/a/b?c=d&e=f",
            ),
            (
                "www.mydomain.com:80",
                None,
                "/",
                80,
                "http://www.mydomain.com/",
            ),
            ("myapp.com", Some("https"), "/", 443, "https://myapp.com/"),
            (
                "myapp.com:443",
                Some("https"),
                "/",
                443,
                "https://myapp.com/",
            ),
            (
                "myapp.com:80",
                Some("https"),
                "/",
                80,
                "https://myapp.com:80/",
            ),
            ("myapp.com:80", None, "/", 80, "http://myapp.com/"),
        ];
        for (host, proto, target, port, url) in cases {
            let p = url_parts(host, proto, target);
            assert_eq!(
                (p.port, p.url.as_str()),
                (port, url),
                "{host} {proto:?} {target}"
            );
        }
    }

    #[test]
    fn query_parsing_keeps_later_equals_and_skips_empty_keys() {
        let p = url_parts("x", None, "/?a=b&c==d&e=f=g=&h&i=j&&k");
        let expected: BTreeMap<String, String> = [
            ("a", "b"),
            ("c", "=d"),
            ("e", "f=g="),
            ("h", ""),
            ("i", "j"),
            ("k", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(p.query, expected);
        assert_eq!(p.query_string, "a=b&c==d&e=f=g=&h&i=j&&k");
    }

    #[test]
    fn headers_are_filtered_joined_and_overlaid() {
        let mut h = HeaderMap::new();
        h.append("x-custom", "IS_IGNORED".parse().expect("value"));
        h.append("x-open-runtimes-secret", "s".parse().expect("value"));
        h.append("accept", "a".parse().expect("value"));
        h.append("accept", "b".parse().expect("value"));
        h.append("cookie", "c=1".parse().expect("value"));
        h.append("cookie", "d=2".parse().expect("value"));
        let enforced = vec![
            ("x-custom".to_string(), "value".to_string()),
            ("x-open-runtimes-custom".to_string(), "248".to_string()),
        ];
        let out = function_headers(&h, &enforced);
        assert_eq!(out["x-custom"], "value");
        assert_eq!(out["accept"], "a, b");
        assert_eq!(out["cookie"], "c=1; d=2");
        assert_eq!(out["x-open-runtimes-custom"], "248");
        assert!(!out.contains_key("x-open-runtimes-secret"));
    }
}
