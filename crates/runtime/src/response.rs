//! Response header rules of runtime-protocol §3.12.

use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::HeaderMap;

/// Builds the wire headers from the function's `[name, value]` pairs.
/// Invalid names or values are reported back so they reach the errors log.
pub fn build_headers(pairs: &[(String, String)], invalid: &mut Vec<String>) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(pairs.len() + 2);
    let mut content_type: Option<&str> = None;
    for (name, value) in pairs {
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("x-open-runtimes-") {
            continue;
        }
        if lower == "content-type" {
            // Last one wins, as in a plain map.
            content_type = Some(value);
            continue;
        }
        let Ok(header_name) = HeaderName::from_bytes(lower.as_bytes()) else {
            invalid.push(format!("Invalid response header name ignored: {name}"));
            continue;
        };
        let mut push = |v: &str| match HeaderValue::from_str(v) {
            Ok(v) => {
                out.append(header_name.clone(), v);
            }
            Err(_) => invalid.push(format!(
                "Invalid value for response header {lower} ignored."
            )),
        };
        if lower == "set-cookie" && value.contains('\n') {
            value
                .split('\n')
                .filter(|v| !v.is_empty())
                .for_each(&mut push);
        } else {
            push(value);
        }
    }
    let ct = content_type_value(content_type.unwrap_or("text/plain"));
    match HeaderValue::from_str(&ct) {
        Ok(v) => {
            out.insert(CONTENT_TYPE, v);
        }
        Err(_) => {
            invalid.push("Invalid content-type ignored.".to_string());
            out.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
        }
    }
    out
}

/// The Content-Type rule: multipart and explicit charsets pass unchanged,
/// anything else is lower-cased and gets `; charset=utf-8`.
pub fn content_type_value(ct: &str) -> String {
    let lower = ct.to_ascii_lowercase();
    if lower.starts_with("multipart/") || lower.contains("charset=") {
        ct.to_string()
    } else {
        format!("{lower}; charset=utf-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_table_of_the_spec() {
        let cases = [
            ("text/plain", "text/plain; charset=utf-8"),
            ("application/json", "application/json; charset=utf-8"),
            (
                "text/plain; charset=iso-8859-1",
                "text/plain; charset=iso-8859-1",
            ),
            ("TEXT/PLAIN", "text/plain; charset=utf-8"),
            (
                "multipart/form-data; boundary=12345",
                "multipart/form-data; boundary=12345",
            ),
            ("image/png; charset=utf-8", "image/png; charset=utf-8"),
        ];
        for (given, sent) in cases {
            assert_eq!(content_type_value(given), sent);
        }
    }

    #[test]
    fn headers_are_lowercased_filtered_and_cookies_split() {
        let pairs = vec![
            ("Some-Header".to_string(), "some-value".to_string()),
            ("x-open-runtimes-log-id".to_string(), "forged".to_string()),
            (
                "set-cookie".to_string(),
                "cookie=value; path=/\ncookie2=value2; path=/".to_string(),
            ),
        ];
        let mut invalid = Vec::new();
        let h = build_headers(&pairs, &mut invalid);
        assert!(invalid.is_empty());
        assert_eq!(h["some-header"], "some-value");
        assert!(h.get("x-open-runtimes-log-id").is_none());
        let cookies: Vec<_> = h.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["cookie=value; path=/", "cookie2=value2; path=/"]);
        assert_eq!(h[CONTENT_TYPE], "text/plain; charset=utf-8");
    }

    #[test]
    fn invalid_header_is_reported_not_fatal() {
        let pairs = vec![("bad name".to_string(), "v".to_string())];
        let mut invalid = Vec::new();
        build_headers(&pairs, &mut invalid);
        assert_eq!(invalid.len(), 1);
    }
}
