//! multipart/form-data: parsing request bodies (executor-api §2.3) and
//! writing execution results (§8.8). Binary-safe both ways.

use memchr::memmem;

#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub name: String,
    pub content_type: Option<String>,
    pub data: Vec<u8>,
}

/// The `boundary` parameter of a multipart content type.
pub fn boundary_of(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let v = v.trim().trim_matches('"');
        (!v.is_empty() && v.len() <= 200).then(|| v.to_string())
    })
}

/// Splits a buffered body into parts. Malformed input yields the parts read
/// so far (an unparsable body means "no parameters", executor-api §2.3).
pub fn parse(body: &[u8], boundary: &str) -> Vec<Part> {
    let delim = format!("--{boundary}");
    let finder = memmem::Finder::new(delim.as_bytes());
    let mut parts = Vec::new();
    let Some(first) = finder.find(body) else {
        return parts;
    };
    let mut pos = first + delim.len();
    loop {
        // After a delimiter: "--" ends the body, otherwise CRLF then a part.
        if body[pos..].starts_with(b"--") {
            break;
        }
        let Some(line_end) = memmem::find(&body[pos..], b"\r\n") else {
            break;
        };
        pos += line_end + 2;
        let Some(head_end) = memmem::find(&body[pos..], b"\r\n\r\n") else {
            break;
        };
        let head = String::from_utf8_lossy(&body[pos..pos + head_end]).into_owned();
        let data_start = pos + head_end + 4;
        let Some(next) = finder.find(&body[data_start..]) else {
            break;
        };
        let mut data_end = data_start + next;
        // The CRLF before the delimiter belongs to the delimiter.
        if data_end >= data_start + 2 && &body[data_end - 2..data_end] == b"\r\n" {
            data_end -= 2;
        }
        if let Some(name) = header_param(&head, "content-disposition", "name") {
            parts.push(Part {
                name,
                content_type: header_value(&head, "content-type"),
                data: body[data_start..data_end].to_vec(),
            });
        }
        pos = data_start + next + delim.len();
    }
    parts
}

fn header_value(head: &str, name: &str) -> Option<String> {
    head.split("\r\n").find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

fn header_param(head: &str, header: &str, param: &str) -> Option<String> {
    let value = header_value(head, header)?;
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(param)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Writes parts in the exact layout of executor-api §8.8.
pub fn build(boundary: &str, fields: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let size: usize = fields.iter().map(|(_, _, d)| d.len() + 120).sum();
    let mut out = Vec::with_capacity(size + boundary.len() * (fields.len() + 2));
    out.extend_from_slice(b"--");
    out.extend_from_slice(boundary.as_bytes());
    for (name, content_type, data) in fields {
        out.extend_from_slice(b"\r\nContent-Disposition: form-data; name=\"");
        out.extend_from_slice(name.as_bytes());
        out.push(b'"');
        if let Some(ct) = content_type {
            out.extend_from_slice(b"\r\nContent-Type: ");
            out.extend_from_slice(ct.as_bytes());
        }
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n--");
        out.extend_from_slice(boundary.as_bytes());
    }
    out.extend_from_slice(b"--\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_binary_parts() {
        let body = build(
            "XyZ",
            &[
                ("statusCode", None, b"200"),
                ("headers", Some("application/json"), b"{}"),
                ("body", None, &[0, 0x0a, 0xff, b'\r', b'\n']),
            ],
        );
        let parts = parse(&body, "XyZ");
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].data, b"200");
        assert_eq!(parts[1].content_type.as_deref(), Some("application/json"));
        assert_eq!(parts[2].data, vec![0, 0x0a, 0xff, b'\r', b'\n']);
    }

    #[test]
    fn reads_client_style_bodies() {
        let body = b"--b\r\nContent-Disposition: form-data; name=\"timeout\"\r\n\r\n15\r\n--b\r\nContent-Disposition: form-data; name=\"headers\"\r\nContent-Type: application/json\r\n\r\n{\"a\":\"b\"}\r\n--b--\r\n";
        let parts = parse(body, "b");
        assert_eq!(
            parts[0],
            Part {
                name: "timeout".into(),
                content_type: None,
                data: b"15".to_vec()
            }
        );
        assert_eq!(parts[1].data, b"{\"a\":\"b\"}");
    }

    #[test]
    fn garbage_gives_no_parts_and_no_panic() {
        assert!(parse(b"nothing here", "b").is_empty());
        assert!(parse(
            b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nunterminated",
            "b"
        )
        .is_empty());
        assert!(parse(b"--b", "b").is_empty());
    }

    #[test]
    fn boundary_parameter() {
        assert_eq!(
            boundary_of("multipart/form-data; boundary=\"abc\"").as_deref(),
            Some("abc")
        );
        assert_eq!(boundary_of("multipart/form-data").as_deref(), None);
    }
}
