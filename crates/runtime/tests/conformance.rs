//! Conformance of `opr-runtime` with runtime-protocol §3 and §4, run against
//! real Node, Python and Bun workers. Every behaviour below is a function
//! `fn behaviour(lang: Lang)`; `for_all_languages!` turns each into the
//! tests `node::behaviour`, `python::behaviour` and `bun::behaviour`.

#[macro_use]
mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

for_all_languages!(
    // §3.1 HTTP/1.1
    keep_alive_serves_several_requests_on_one_connection,
    // §3.3 reserved paths
    health_answers_ok_for_any_method_and_query_without_secret,
    health_is_checked_before_timeout_header_and_secret,
    timings_serves_the_file_content,
    timings_answers_500_empty_when_the_file_is_missing,
    // §3.5 timeout header
    invalid_timeout_header_gets_500_exact_body_without_log_id,
    empty_timeout_header_means_no_timeout,
    valid_timeout_with_correct_secret_runs_the_function,
    valid_timeout_with_bad_secret_gets_the_secret_error,
    bad_timeout_and_bad_secret_gets_the_timeout_error,
    // §3.6 authentication
    missing_secret_gets_500_exact_body_without_log_id_or_files,
    wrong_secret_gets_500_exact_body_without_log_id_or_files,
    basic_authorization_alone_does_not_authenticate,
    empty_secret_disables_authentication,
    unset_secret_disables_authentication,
    // §3.7 request body
    binary_bodies_round_trip_unchanged_whatever_the_content_type,
    body_of_17_mib_is_passed_unchanged,
    body_of_exactly_20_mib_is_accepted,
    body_over_20_mib_gets_413_with_log_id_and_error_log,
    body_over_20_mib_gets_413_when_client_sends_everything_before_reading,
    chunked_request_body_is_accepted,
    requests_without_a_body_work,
    common_methods_reach_the_function,
    // §4.2 request accessors
    body_text_decodes_invalid_utf8_lossily,
    body_raw_equals_body_text,
    body_json_parses_whatever_the_content_type,
    invalid_body_json_gets_500_with_json_in_errors_log,
    body_is_parsed_json_for_application_json_content_types,
    body_is_empty_object_for_empty_application_json,
    body_is_text_for_other_content_types,
    environment_variables_are_visible_and_unset_ones_read_as_null,
    // §3.8 request headers
    request_header_names_are_lower_cased,
    control_headers_are_hidden_from_the_function,
    enforced_headers_override_and_extend_request_headers,
    invalid_enforced_headers_json_means_no_enforced_headers,
    repeated_headers_are_joined_with_comma_and_cookies_with_semicolon,
    single_cookie_header_reaches_the_function_intact,
    // §3.9 URL decomposition
    url_decomposition_matches_every_spec_example_row,
    query_parsing_matches_the_spec_example,
    path_and_query_are_passed_raw_not_percent_decoded,
    // §4.3 / §3.12 responses
    text_response_is_utf8_with_text_plain_charset,
    json_response_is_compact_with_json_content_type,
    json_empty_object_and_empty_array_serialise_as_braces_and_brackets,
    json_response_overrides_the_user_content_type,
    binary_response_is_sent_unchanged,
    empty_response_is_204_without_body,
    redirect_is_301_with_location,
    redirect_keeps_custom_status_and_headers,
    send_sends_strings_and_numbers_as_text,
    send_of_png_bytes_is_byte_identical,
    content_type_rules_match_the_spec_table,
    control_response_headers_are_stripped_and_log_id_is_the_runtimes,
    list_header_values_and_newline_set_cookie_become_repeated_lines,
    custom_status_codes_are_sent_as_set,
    only_the_returned_output_counts,
    // §3.13 logging
    given_log_id_is_echoed_and_names_the_log_files,
    generated_log_ids_are_20_lower_hex_chars_and_unique,
    development_env_uses_dev_as_log_id,
    disabled_logging_sends_empty_log_id_and_writes_no_files,
    function_that_logs_nothing_creates_no_log_files,
    log_and_error_write_exact_lines,
    repeated_log_id_appends_to_the_same_files,
    log_values_render_as_compact_json_and_full_64_bit_integers,
    log_booleans_render_as_true_and_false,
    log_lines_of_1023_chars_give_files_of_exactly_1024_bytes_per_line,
    log_lines_over_8000_chars_are_truncated_with_suffix,
    native_output_goes_to_logs_after_the_banner,
    native_banner_appears_only_when_native_output_does,
    module_load_output_is_captured_in_the_first_request,
    // §3.10 / §3.11 guards
    missing_entrypoint_gets_503_empty_and_does_not_exist_error,
    syntax_error_gets_503_empty_and_syntax_error_message,
    module_without_function_gets_503_empty_and_signature_error,
    exception_gets_500_empty_with_stack_in_errors_log_only,
    async_exception_gets_500_empty_with_message_in_errors_log,
    missing_return_gets_500_empty_with_hint,
    // loading
    open_runtimes_file_overrides_the_entrypoint,
    failed_load_is_retried_on_the_next_request,
    async_function_is_supported,
    sync_function_is_supported,
);

// ---------------------------------------------------------------------------
// helpers

fn basic(lang: Lang) -> Runtime {
    Runtime::start(lang, "basic")
}

fn run(rt: &Runtime, action: &str) -> Resp {
    send(rt.action(action))
}

fn assert_no_log_id(resp: &Resp) {
    assert!(
        resp.header(LOG_ID_HEADER).is_none(),
        "expected no {LOG_ID_HEADER} header, got {:?}",
        resp.header(LOG_ID_HEADER)
    );
}

fn assert_no_log_files(rt: &Runtime) {
    assert_eq!(rt.log_files(), Vec::<String>::new(), "no log file expected");
}

fn request_json(builder: reqwest::blocking::RequestBuilder) -> serde_json::Value {
    let resp = send(builder.header("x-action", "request"));
    assert_eq!(resp.status, 200, "request echo failed: {}", resp.text());
    resp.json()
}

fn headers_seen(resp: &RawResponse) -> serde_json::Map<String, serde_json::Value> {
    assert_eq!(resp.status, 200, "headers echo failed: {}", resp.text());
    resp.json()
        .as_object()
        .expect("headers echo is an object")
        .clone()
}

fn normalise_content_type(value: &str) -> String {
    value.chars().filter(|c| !c.is_whitespace()).collect()
}

fn content_type(resp: &Resp) -> String {
    normalise_content_type(&resp.header("content-type").expect("content-type header"))
}

// ---------------------------------------------------------------------------
// §3.1 HTTP/1.1

fn keep_alive_serves_several_requests_on_one_connection(lang: Lang) {
    let rt = basic(lang);
    let request = |action: &str, body: &str| {
        format!(
            "POST / HTTP/1.1\r\nHost: localhost\r\nx-open-runtimes-secret: {SECRET}\r\n\
             x-action: {action}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let responses = raw_keep_alive(
        rt.port,
        &[
            request("body-text", "first"),
            request("body-text", "second"),
            request("res-empty", ""),
            request("body-text", "third"),
        ],
    );
    let seen: Vec<(u16, String)> = responses.iter().map(|r| (r.status, r.text())).collect();
    assert_eq!(
        seen,
        vec![
            (200, "first".to_owned()),
            (200, "second".to_owned()),
            (204, String::new()),
            (200, "third".to_owned()),
        ]
    );
    // Reserved paths and rejections on a kept-alive connection too.
    let responses = raw_keep_alive(
        rt.port,
        &[
            b"GET /__opr/health HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            request("body-text", "after"),
        ],
    );
    let seen: Vec<(u16, String)> = responses.iter().map(|r| (r.status, r.text())).collect();
    assert_eq!(
        seen,
        vec![
            (200, "OK".to_owned()),
            (500, SECRET_ERROR.to_owned()),
            (200, "after".to_owned()),
        ]
    );
}

// ---------------------------------------------------------------------------
// §3.3 reserved paths

fn health_answers_ok_for_any_method_and_query_without_secret(lang: Lang) {
    let rt = basic(lang);
    for method in [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ] {
        for path in ["/__opr/health", "/__opr/health?x=1&y"] {
            let resp = send(rt.bare(method.clone(), path));
            assert_eq!(resp.status, 200, "{method} {path}");
            assert_eq!(resp.text(), "OK", "{method} {path}");
            assert!(
                resp.header("content-type")
                    .unwrap_or_default()
                    .starts_with("text/plain"),
                "{method} {path}: content-type {:?}",
                resp.header("content-type")
            );
            assert_no_log_id(&resp);
        }
    }
    let head = send(rt.bare(Method::HEAD, "/__opr/health"));
    assert_eq!(head.status, 200, "HEAD /__opr/health");
    assert_no_log_files(&rt);
}

fn health_is_checked_before_timeout_header_and_secret(lang: Lang) {
    let rt = basic(lang);
    let resp = send(
        rt.bare(Method::GET, "/__opr/health")
            .header("x-open-runtimes-timeout", "abcd")
            .header("x-open-runtimes-secret", "wrong"),
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "OK");
    assert_no_log_id(&resp);
}

fn timings_serves_the_file_content(lang: Lang) {
    let content = "local_download=0.012\nextract=0.100\nprepare=0.200\nstartup=0.345\n";
    let rt = Runtime::builder(lang, "basic").timings(content).start();
    for method in [Method::GET, Method::POST] {
        let resp = send(rt.bare(method.clone(), "/__opr/timings?q=1"));
        assert_eq!(resp.status, 200, "{method}");
        assert_eq!(resp.text(), content, "{method}");
        assert_eq!(content_type(&resp), "text/plain;charset=utf-8", "{method}");
        assert_no_log_id(&resp);
    }
    // The current contents, not a copy taken at start.
    std::fs::write(&rt.timings_file, "extract=1.000\n").expect("rewrite timings");
    let resp = send(rt.bare(Method::GET, "/__opr/timings"));
    assert_eq!(resp.text(), "extract=1.000\n");
}

fn timings_answers_500_empty_when_the_file_is_missing(lang: Lang) {
    let rt = basic(lang);
    let resp = send(rt.bare(Method::GET, "/__opr/timings"));
    assert_eq!(resp.status, 500);
    assert_eq!(resp.text(), "");
    assert_no_log_id(&resp);
}

// ---------------------------------------------------------------------------
// §3.5 timeout header

fn invalid_timeout_header_gets_500_exact_body_without_log_id(lang: Lang) {
    let rt = basic(lang);
    for value in ["0", "-1", "1.5", "abcd", "00"] {
        let resp = send(
            rt.action("log-engine")
                .header("x-open-runtimes-timeout", value)
                .header(LOG_ID_HEADER, "rejected-timeout"),
        );
        assert_eq!(resp.status, 500, "timeout {value:?}");
        assert_eq!(resp.text(), TIMEOUT_ERROR, "timeout {value:?}");
        assert_no_log_id(&resp);
    }
    assert_no_log_files(&rt);
}

fn empty_timeout_header_means_no_timeout(lang: Lang) {
    let rt = basic(lang);
    let resp = send(
        rt.action("sleep-short")
            .header("x-open-runtimes-timeout", ""),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), "slept");
}

fn valid_timeout_with_correct_secret_runs_the_function(lang: Lang) {
    let rt = basic(lang);
    let resp = send(
        rt.action("sleep-short")
            .header("x-open-runtimes-timeout", "10"),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), "slept");
    resp.log_id();
}

fn valid_timeout_with_bad_secret_gets_the_secret_error(lang: Lang) {
    let rt = basic(lang);
    let resp = send(
        rt.bare(Method::POST, "/")
            .header("x-open-runtimes-timeout", "5")
            .header("x-open-runtimes-secret", "wrong"),
    );
    assert_eq!(resp.status, 500);
    assert_eq!(resp.text(), SECRET_ERROR);
    assert_no_log_id(&resp);
}

fn bad_timeout_and_bad_secret_gets_the_timeout_error(lang: Lang) {
    let rt = basic(lang);
    let resp = send(
        rt.bare(Method::POST, "/")
            .header("x-open-runtimes-timeout", "abcd")
            .header("x-open-runtimes-secret", "wrong"),
    );
    assert_eq!(resp.status, 500);
    assert_eq!(resp.text(), TIMEOUT_ERROR);
    assert_no_log_id(&resp);
}

// ---------------------------------------------------------------------------
// §3.6 authentication

fn missing_secret_gets_500_exact_body_without_log_id_or_files(lang: Lang) {
    let rt = basic(lang);
    let resp = send(
        rt.bare(Method::POST, "/")
            .header("x-action", "log-engine")
            .header(LOG_ID_HEADER, "rejected-secret"),
    );
    assert_eq!(resp.status, 500);
    assert_eq!(resp.text(), SECRET_ERROR);
    assert_no_log_id(&resp);
    assert_no_log_files(&rt);
}

fn wrong_secret_gets_500_exact_body_without_log_id_or_files(lang: Lang) {
    let rt = basic(lang);
    let almost = format!("{SECRET}x");
    for secret in ["wrong", "", almost.as_str(), &SECRET.to_uppercase()] {
        let resp = send(
            rt.bare(Method::POST, "/")
                .header("x-action", "log-engine")
                .header("x-open-runtimes-secret", secret)
                .header(LOG_ID_HEADER, "rejected-secret"),
        );
        assert_eq!(resp.status, 500, "secret {secret:?}");
        assert_eq!(resp.text(), SECRET_ERROR, "secret {secret:?}");
        assert_no_log_id(&resp);
    }
    assert_no_log_files(&rt);
}

fn basic_authorization_alone_does_not_authenticate(lang: Lang) {
    let rt = basic(lang);
    let resp = send(
        rt.bare(Method::POST, "/")
            .basic_auth("opr", Some(SECRET))
            .header("x-action", "res-text"),
    );
    assert_eq!(resp.status, 500);
    assert_eq!(resp.text(), SECRET_ERROR);
    // With both headers (what the executor sends) the request passes.
    let resp = send(rt.action("res-text").basic_auth("opr", Some(SECRET)));
    assert_eq!(resp.status, 200, "{}", resp.text());
}

fn empty_secret_disables_authentication(lang: Lang) {
    let rt = Runtime::builder(lang, "basic").secret(Some("")).start();
    for secret in [None, Some("anything"), Some("")] {
        let mut builder = rt.bare(Method::POST, "/").header("x-action", "res-text");
        if let Some(secret) = secret {
            builder = builder.header("x-open-runtimes-secret", secret);
        }
        let resp = send(builder);
        assert_eq!(
            resp.status,
            200,
            "secret header {secret:?}: {}",
            resp.text()
        );
        assert_eq!(resp.text(), "Hello, World! ✓");
    }
}

fn unset_secret_disables_authentication(lang: Lang) {
    let rt = Runtime::builder(lang, "basic").secret(None).start();
    let resp = send(rt.bare(Method::GET, "/").header("x-action", "res-text"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = send(
        rt.bare(Method::GET, "/")
            .header("x-action", "res-text")
            .header("x-open-runtimes-secret", "whatever"),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
}

// ---------------------------------------------------------------------------
// §3.7 request body

fn binary_bodies_round_trip_unchanged_whatever_the_content_type(lang: Lang) {
    let rt = basic(lang);
    let bodies: [&[u8]; 3] = [
        &[0x00, 0x0a, 0xff],
        &[0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef],
        &[
            0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00,
        ],
    ];
    for body in bodies {
        for content_type in [
            None,
            Some("application/octet-stream"),
            Some("text/plain"),
            Some("application/json"),
        ] {
            let mut builder = rt.action("binary-echo").body(body.to_vec());
            if let Some(ct) = content_type {
                builder = builder.header("content-type", ct);
            }
            let resp = send(builder);
            assert_eq!(resp.status, 200, "{content_type:?}: {}", resp.text());
            assert_eq!(
                resp.body, body,
                "body {body:02x?} with content type {content_type:?}"
            );
        }
    }
}

fn patterned(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn body_of_17_mib_is_passed_unchanged(lang: Lang) {
    let rt = basic(lang);
    let body = patterned(17 * 1024 * 1024);
    let resp = send(rt.action("binary-echo").body(body.clone()));
    assert_eq!(
        resp.status,
        200,
        "{}",
        String::from_utf8_lossy(&resp.body[..resp.body.len().min(200)])
    );
    assert_eq!(resp.body.len(), body.len());
    assert!(resp.body == body, "17 MiB body changed on the way");
}

fn body_of_exactly_20_mib_is_accepted(lang: Lang) {
    let rt = basic(lang);
    let body = patterned(20 * 1024 * 1024);
    let resp = send(rt.action("body-length").body(body));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), (20 * 1024 * 1024).to_string());
}

fn body_over_20_mib_gets_413_with_log_id_and_error_log(lang: Lang) {
    let rt = basic(lang);
    let body = patterned(20 * 1024 * 1024 + 1);
    let resp = send(
        rt.action("body-length")
            .header(LOG_ID_HEADER, "oversized")
            .body(body),
    );
    assert_eq!(resp.status, 413);
    assert_eq!(resp.text(), BODY_LIMIT_ERROR);
    assert_eq!(resp.log_id(), "oversized");
    assert!(
        rt.errors("oversized").contains(BODY_LIMIT_ERROR),
        "errors log: {:?}",
        rt.errors("oversized")
    );
    // The server is still serving.
    assert_eq!(run(&rt, "res-text").status, 200);
}

fn body_over_20_mib_gets_413_when_client_sends_everything_before_reading(lang: Lang) {
    let rt = basic(lang);
    let body = patterned(21 * 1024 * 1024);
    let resp = rt.raw_action(
        "body-length",
        "POST",
        "/",
        &[("x-open-runtimes-log-id", "curl-style")],
        &body,
    );
    assert_eq!(resp.status, 413);
    assert_eq!(resp.text(), BODY_LIMIT_ERROR);
    assert_eq!(resp.header(LOG_ID_HEADER), Some("curl-style"));
    assert!(rt.errors("curl-style").contains(BODY_LIMIT_ERROR));
    assert_eq!(run(&rt, "res-text").status, 200);
}

fn chunked_request_body_is_accepted(lang: Lang) {
    let rt = basic(lang);
    let mut chunked = Vec::new();
    let parts: [&[u8]; 3] = [b"Hello, ", &[0x00, 0x0a, 0xff], b" chunked world"];
    for part in parts {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let resp = rt.raw_action(
        "binary-echo",
        "POST",
        "/",
        &[("Transfer-Encoding", "chunked")],
        &chunked,
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.body, parts.concat());
}

fn requests_without_a_body_work(lang: Lang) {
    let rt = basic(lang);
    // GET with no body at all.
    let resp = rt.raw_action("body-length", "GET", "/", &[], b"");
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (200, "0"),
        "GET without body"
    );
    // POST without Content-Length.
    let resp = rt.raw_action("body-length", "POST", "/", &[], b"");
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (200, "0"),
        "POST without Content-Length"
    );
    // POST with Content-Length: 0.
    let resp = rt.raw_action("body-length", "POST", "/", &[("Content-Length", "0")], b"");
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (200, "0"),
        "POST with Content-Length 0"
    );
    // HEAD.
    let resp = send(rt.request(Method::HEAD, "/").header("x-action", "res-text"));
    assert_eq!(resp.status, 200, "HEAD");
    assert!(resp.body.is_empty(), "HEAD response has a body");
}

fn common_methods_reach_the_function(lang: Lang) {
    let rt = basic(lang);
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let json =
            request_json(rt.request(Method::from_bytes(method.as_bytes()).expect("method"), "/"));
        assert_eq!(json["method"], method);
    }
}

// ---------------------------------------------------------------------------
// §4.2 request accessors

fn body_text_decodes_invalid_utf8_lossily(lang: Lang) {
    let rt = basic(lang);
    let resp = send(rt.action("body-text").body(b"hello \xff world".to_vec()));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), "hello \u{fffd} world");
    let resp = send(rt.action("body-text").body("grüße ✓".as_bytes().to_vec()));
    assert_eq!(resp.text(), "grüße ✓");
}

fn body_raw_equals_body_text(lang: Lang) {
    let rt = basic(lang);
    let resp = send(
        rt.action("body-raw")
            .header("content-type", "application/json")
            .body(r#"{"a": 1}"#),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), r#"{"a": 1}"#);
}

fn body_json_parses_whatever_the_content_type(lang: Lang) {
    let rt = basic(lang);
    for content_type in [None, Some("text/plain"), Some("application/json")] {
        let mut builder = rt.action("body-json").body(r#"{"key":"value","n":[1,2]}"#);
        if let Some(ct) = content_type {
            builder = builder.header("content-type", ct);
        }
        let resp = send(builder);
        assert_eq!(resp.status, 200, "{content_type:?}: {}", resp.text());
        assert_eq!(
            resp.json(),
            json!({"parsed": {"key": "value", "n": [1, 2]}}),
            "{content_type:?}"
        );
    }
}

fn invalid_body_json_gets_500_with_json_in_errors_log(lang: Lang) {
    let rt = basic(lang);
    for (id, body) in [("invalid-json", "this is not json"), ("empty-json", "")] {
        let resp = send(
            rt.action("body-json")
                .header(LOG_ID_HEADER, id)
                .header("content-type", "application/json")
                .body(body),
        );
        assert_eq!(resp.status, 500, "body {body:?}");
        assert_eq!(resp.text(), "", "body {body:?}");
        assert_eq!(resp.log_id(), id);
        let errors = rt.errors(id);
        assert!(
            errors.contains("JSON"),
            "errors log for {body:?} must mention JSON: {errors:?}"
        );
    }
}

fn body_is_parsed_json_for_application_json_content_types(lang: Lang) {
    let rt = basic(lang);
    for ct in [
        "application/json",
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
    ] {
        let resp = send(
            rt.action("body")
                .header("content-type", ct)
                .body(r#"{"a":[1,"b"]}"#),
        );
        assert_eq!(resp.status, 200, "{ct}: {}", resp.text());
        assert_eq!(
            resp.json(),
            json!({"kind": "object", "value": {"a": [1, "b"]}}),
            "{ct}"
        );
    }
}

fn body_is_empty_object_for_empty_application_json(lang: Lang) {
    let rt = basic(lang);
    let resp = send(rt.action("body").header("content-type", "application/json"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json(), json!({"kind": "object", "value": {}}));
}

fn body_is_text_for_other_content_types(lang: Lang) {
    let rt = basic(lang);
    let text = r#"{"looks":"like json"}"#;
    for ct in [
        None,
        Some("text/plain"),
        Some("application/xhtml+xml"),
        Some("not-application/json"),
        Some("application/octet-stream"),
        Some("image/png"),
        Some("video/mp4"),
    ] {
        let mut builder = rt.action("body").body(text);
        if let Some(ct) = ct {
            builder = builder.header("content-type", ct);
        }
        let resp = send(builder);
        assert_eq!(resp.status, 200, "{ct:?}: {}", resp.text());
        assert_eq!(
            resp.json(),
            json!({"kind": "string", "value": text}),
            "{ct:?}"
        );
    }
}

fn environment_variables_are_visible_and_unset_ones_read_as_null(lang: Lang) {
    let rt = Runtime::builder(lang, "basic")
        .env("CUSTOM_VARIABLE", "custom value")
        .start();
    let resp = run(&rt, "env");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.json(),
        json!({"custom": "custom value", "missing": null})
    );
}

// ---------------------------------------------------------------------------
// §3.8 request headers

fn request_header_names_are_lower_cased(lang: Lang) {
    let rt = basic(lang);
    let resp = rt.raw_action(
        "headers",
        "GET",
        "/",
        &[
            ("X-Mixed-CASE", "Value With CASE"),
            ("ACCEPT", "Text/Plain"),
        ],
        b"",
    );
    let headers = headers_seen(&resp);
    assert_eq!(headers.get("x-mixed-case"), Some(&json!("Value With CASE")));
    assert_eq!(headers.get("accept"), Some(&json!("Text/Plain")));
    for name in headers.keys() {
        assert_eq!(name, &name.to_lowercase(), "header name not lower-cased");
    }
}

fn control_headers_are_hidden_from_the_function(lang: Lang) {
    let rt = basic(lang);
    let resp = rt.raw_action(
        "headers",
        "GET",
        "/",
        &[
            ("x-open-runtimes-timeout", "30"),
            ("x-open-runtimes-logging", "enabled"),
            ("x-open-runtimes-log-id", "hidden-id"),
            ("x-open-runtimes-custom", "hidden"),
            ("X-Open-Runtimes-Mixed-Case", "hidden"),
            ("x-visible", "yes"),
        ],
        b"",
    );
    let headers = headers_seen(&resp);
    let leaked: Vec<&String> = headers
        .keys()
        .filter(|name| name.to_lowercase().starts_with("x-open-runtimes-"))
        .collect();
    assert!(
        leaked.is_empty(),
        "control headers visible to the function: {leaked:?}"
    );
    assert_eq!(headers.get("x-visible"), Some(&json!("yes")));
}

const SPEC_ENFORCED_HEADERS: &str =
    r#"{"x-custom":"value","X-CUSTOM-UPPERCASE":"Value2","x-open-runtimes-custom":248}"#;

fn enforced_headers_override_and_extend_request_headers(lang: Lang) {
    let rt = Runtime::builder(lang, "basic")
        .env("OPEN_RUNTIMES_HEADERS", SPEC_ENFORCED_HEADERS)
        .start();
    let resp = rt.raw_action(
        "headers",
        "GET",
        "/",
        &[
            ("x-custom", "IS_IGNORED"),
            ("x-open-runtimes-custom", "forged"),
            ("x-other", "kept"),
        ],
        b"",
    );
    let headers = headers_seen(&resp);
    assert_eq!(headers.get("x-custom"), Some(&json!("value")));
    assert_eq!(headers.get("x-custom-uppercase"), Some(&json!("Value2")));
    assert_eq!(headers.get("x-open-runtimes-custom"), Some(&json!("248")));
    assert_eq!(headers.get("x-other"), Some(&json!("kept")));
    assert!(headers.get("X-CUSTOM-UPPERCASE").is_none());
}

fn invalid_enforced_headers_json_means_no_enforced_headers(lang: Lang) {
    let rt = Runtime::builder(lang, "basic")
        .env("OPEN_RUNTIMES_HEADERS", "{not json")
        .start();
    let resp = rt.raw_action("headers", "GET", "/", &[("x-custom", "client")], b"");
    let headers = headers_seen(&resp);
    assert_eq!(headers.get("x-custom"), Some(&json!("client")));
}

fn repeated_headers_are_joined_with_comma_and_cookies_with_semicolon(lang: Lang) {
    let rt = basic(lang);
    let resp = rt.raw_action(
        "headers",
        "GET",
        "/",
        &[
            ("x-multi", "first"),
            ("x-multi", "second"),
            ("X-Multi", "third"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
        ],
        b"",
    );
    let headers = headers_seen(&resp);
    assert_eq!(headers.get("x-multi"), Some(&json!("first, second, third")));
    assert_eq!(headers.get("cookie"), Some(&json!("a=1; b=2")));
}

fn single_cookie_header_reaches_the_function_intact(lang: Lang) {
    let rt = basic(lang);
    let cookie =
        "cookieName=cookieValue; cookie2=value2; cookie3=value=3; cookie4=val:ue4; cookie5=value5";
    let resp = rt.raw_action("headers", "GET", "/", &[("Cookie", cookie)], b"");
    let headers = headers_seen(&resp);
    assert_eq!(headers.get("cookie"), Some(&json!(cookie)));
}

// ---------------------------------------------------------------------------
// §3.9 URL decomposition

/// One row of the §3.9 examples table and what the function must see.
struct UrlRow {
    host_header: &'static str,
    proto: Option<&'static str>,
    target: &'static str,
    scheme: &'static str,
    host: &'static str,
    port: u16,
    url: &'static str,
    query_string: &'static str,
    query: serde_json::Value,
}

fn url_decomposition_matches_every_spec_example_row(lang: Lang) {
    let rt = basic(lang);
    let row = |host_header, proto, target, scheme, host, port, url| UrlRow {
        host_header,
        proto,
        target,
        scheme,
        host,
        port,
        url,
        query_string: "",
        query: json!({}),
    };
    let rows = [
        UrlRow {
            query_string: "c=d&e=f",
            query: json!({"c": "d", "e": "f"}),
            ..row(
                "www.mydomain.com:3001",
                Some("https"),
                "/a/b?c=d&e=f",
                "https",
                "www.mydomain.com",
                3001,
                "https://www.mydomain.com:3001/a/b?c=d&e=f",
            )
        },
        row(
            "www.mydomain.com:80",
            None,
            "/",
            "http",
            "www.mydomain.com",
            80,
            "http://www.mydomain.com/",
        ),
        row(
            "myapp.com",
            Some("https"),
            "/",
            "https",
            "myapp.com",
            443,
            "https://myapp.com/",
        ),
        row(
            "myapp.com:443",
            Some("https"),
            "/",
            "https",
            "myapp.com",
            443,
            "https://myapp.com/",
        ),
        row(
            "myapp.com:80",
            Some("https"),
            "/",
            "https",
            "myapp.com",
            80,
            "https://myapp.com:80/",
        ),
        row(
            "myapp.com:80",
            None,
            "/",
            "http",
            "myapp.com",
            80,
            "http://myapp.com/",
        ),
        // No port and no proto: plain http on port 80.
        row(
            "example.org",
            None,
            "/x",
            "http",
            "example.org",
            80,
            "http://example.org/x",
        ),
    ];
    for expected in rows {
        let mut headers = vec![("Host", expected.host_header)];
        if let Some(proto) = expected.proto {
            headers.push(("x-forwarded-proto", proto));
        }
        let resp = rt.raw_action("request", "GET", expected.target, &headers, b"");
        let what = format!(
            "Host={} proto={:?} target={}",
            expected.host_header, expected.proto, expected.target
        );
        assert_eq!(resp.status, 200, "{what}: {}", resp.text());
        let seen = resp.json();
        assert_eq!(seen["scheme"], expected.scheme, "{what}");
        assert_eq!(seen["host"], expected.host, "{what}");
        assert_eq!(
            seen["port"],
            json!(expected.port),
            "{what}: port must be a JSON number"
        );
        assert_eq!(seen["url"], expected.url, "{what}");
        let path = expected.target.split('?').next().expect("path");
        assert_eq!(seen["path"], path, "{what}");
        assert_eq!(seen["queryString"], expected.query_string, "{what}");
        assert_eq!(seen["query"], expected.query, "{what}");
        assert_eq!(seen["method"], "GET", "{what}");
    }
}

fn query_parsing_matches_the_spec_example(lang: Lang) {
    let rt = basic(lang);
    let target = "/?a=b&c==d&e=f=g=&h&i=j&&k";
    let resp = rt.raw_action("request", "GET", target, &[("Host", "localhost:3000")], b"");
    let seen = resp.json();
    assert_eq!(seen["queryString"], "a=b&c==d&e=f=g=&h&i=j&&k");
    assert_eq!(
        seen["query"],
        json!({"a": "b", "c": "=d", "e": "f=g=", "h": "", "i": "j", "k": ""})
    );
    assert_eq!(
        seen["url"],
        "http://localhost:3000/?a=b&c==d&e=f=g=&h&i=j&&k"
    );
    // Repeated key: last value wins; empty key skipped.
    let resp = rt.raw_action("request", "GET", "/p?x=1&x=2&=skipped", &[], b"");
    assert_eq!(resp.json()["query"], json!({"x": "2"}));
}

fn path_and_query_are_passed_raw_not_percent_decoded(lang: Lang) {
    let rt = basic(lang);
    let target = "/some%20path/caf%C3%A9/a+b?name=a%20b&slash=%2F&plus=1+2";
    let resp = rt.raw_action("request", "GET", target, &[("Host", "example.com")], b"");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = resp.json();
    assert_eq!(seen["path"], "/some%20path/caf%C3%A9/a+b");
    assert_eq!(seen["queryString"], "name=a%20b&slash=%2F&plus=1+2");
    assert_eq!(
        seen["query"],
        json!({"name": "a%20b", "slash": "%2F", "plus": "1+2"})
    );
    assert_eq!(seen["url"], format!("http://example.com{target}"));
}

// ---------------------------------------------------------------------------
// §4.3 / §3.12 responses

fn text_response_is_utf8_with_text_plain_charset(lang: Lang) {
    let rt = basic(lang);
    let resp = run(&rt, "res-text");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, "Hello, World! ✓".as_bytes());
    assert_eq!(content_type(&resp), "text/plain;charset=utf-8");
    resp.log_id();
}

fn json_response_is_compact_with_json_content_type(lang: Lang) {
    let rt = basic(lang);
    let resp = run(&rt, "res-json");
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.text(),
        r#"{"a":1,"b":[1,2,"x y"],"c":{"d":null,"e":true},"f":"two words"}"#
    );
    assert_eq!(content_type(&resp), "application/json;charset=utf-8");
}

fn json_empty_object_and_empty_array_serialise_as_braces_and_brackets(lang: Lang) {
    let rt = basic(lang);
    assert_eq!(run(&rt, "res-json-empty-object").text(), "{}");
    assert_eq!(run(&rt, "res-json-empty-array").text(), "[]");
}

fn json_response_overrides_the_user_content_type(lang: Lang) {
    let rt = basic(lang);
    let resp = run(&rt, "res-json-overrides-content-type");
    assert_eq!(resp.text(), r#"{"ok":true}"#);
    assert_eq!(content_type(&resp), "application/json;charset=utf-8");
}

fn binary_response_is_sent_unchanged(lang: Lang) {
    let rt = basic(lang);
    let resp = run(&rt, "res-binary");
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.body,
        [0x00, 0x0a, 0xff, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]
    );
}

fn empty_response_is_204_without_body(lang: Lang) {
    let rt = basic(lang);
    let resp = run(&rt, "res-empty");
    assert_eq!(resp.status, 204);
    assert!(resp.body.is_empty());
    resp.log_id();
}

fn redirect_is_301_with_location(lang: Lang) {
    let rt = basic(lang);
    let resp = run(&rt, "res-redirect");
    assert_eq!(resp.status, 301);
    assert_eq!(
        resp.header("location").as_deref(),
        Some("https://example.com/target")
    );
    assert!(resp.body.is_empty());
}

fn redirect_keeps_custom_status_and_headers(lang: Lang) {
    let rt = basic(lang);
    let resp = run(&rt, "res-redirect-custom");
    assert_eq!(resp.status, 307);
    assert_eq!(
        resp.header("location").as_deref(),
        Some("https://example.com/moved")
    );
    assert_eq!(resp.header("x-extra").as_deref(), Some("yes"));
    assert!(resp.body.is_empty());
}

fn send_sends_strings_and_numbers_as_text(lang: Lang) {
    let rt = basic(lang);
    let resp = run(&rt, "res-send-text");
    assert_eq!((resp.status, resp.text().as_str()), (200, "sent text"));
    let resp = run(&rt, "res-send-number");
    assert_eq!((resp.status, resp.text().as_str()), (200, "50"));
}

fn send_of_png_bytes_is_byte_identical(lang: Lang) {
    let rt = basic(lang);
    let mut png = vec![
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d,
    ];
    png.extend(patterned(4096));
    let resp = send(rt.action("res-send-png").body(png.clone()));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.body == png, "PNG bytes changed");
    assert_eq!(content_type(&resp), "image/png;charset=utf-8");
}

fn content_type_rules_match_the_spec_table(lang: Lang) {
    let rt = basic(lang);
    let table: [(Option<&str>, &str); 8] = [
        (None, "text/plain; charset=utf-8"),
        (Some("TEXT/PLAIN"), "text/plain; charset=utf-8"),
        (
            Some("text/plain; charset=iso-8859-1"),
            "text/plain; charset=iso-8859-1",
        ),
        (
            Some("multipart/form-data; boundary=12345"),
            "multipart/form-data; boundary=12345",
        ),
        (
            Some("multipart/form-data; boundary=AbCdEf12345"),
            "multipart/form-data; boundary=AbCdEf12345",
        ),
        (
            Some("Multipart/Mixed; boundary=XyZ"),
            "Multipart/Mixed; boundary=XyZ",
        ),
        (Some("image/png; charset=utf-8"), "image/png; charset=utf-8"),
        (Some("Application/XML"), "application/xml; charset=utf-8"),
    ];
    for (set, expected) in table {
        let mut builder = rt.action("res-content-type");
        if let Some(set) = set {
            builder = builder.header("x-content-type", set);
        }
        let resp = send(builder);
        assert_eq!(resp.status, 200, "{set:?}: {}", resp.text());
        assert_eq!(
            content_type(&resp),
            normalise_content_type(expected),
            "function set {set:?}"
        );
    }
}

fn control_response_headers_are_stripped_and_log_id_is_the_runtimes(lang: Lang) {
    let rt = basic(lang);
    let resp = send(rt.action("res-headers").header(LOG_ID_HEADER, "real-id"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.header("x-custom-header").as_deref(),
        Some("custom-value")
    );
    assert!(resp.header("x-open-runtimes-custom").is_none());
    assert!(resp.header("x-open-runtimes-upper").is_none());
    assert_eq!(resp.header_all(LOG_ID_HEADER), vec!["real-id".to_owned()]);
    let control: Vec<&str> = resp
        .headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.starts_with("x-open-runtimes-") && *k != LOG_ID_HEADER)
        .collect();
    assert!(control.is_empty(), "control headers leaked: {control:?}");
}

fn list_header_values_and_newline_set_cookie_become_repeated_lines(lang: Lang) {
    let rt = basic(lang);
    let resp = run(&rt, "res-headers");
    assert_eq!(
        resp.header_all("set-cookie"),
        vec![
            "cookie=value; path=/".to_owned(),
            "cookie2=value2; path=/".to_owned()
        ]
    );
    assert_eq!(
        resp.header_all("x-list"),
        vec!["first".to_owned(), "second".to_owned()]
    );
    assert_eq!(
        resp.header_all("some-header"),
        vec!["some-value".to_owned()]
    );
}

fn custom_status_codes_are_sent_as_set(lang: Lang) {
    let rt = basic(lang);
    for status in [200u16, 201, 202, 400, 404, 418, 500, 503] {
        let resp = send(
            rt.action("res-status")
                .header("x-status", status.to_string()),
        );
        assert_eq!(resp.status, status);
        assert_eq!(resp.text(), "custom status", "status {status}");
        resp.log_id();
    }
}

fn only_the_returned_output_counts(lang: Lang) {
    let rt = basic(lang);
    let resp = run(&rt, "res-two-calls");
    assert_eq!((resp.status, resp.text().as_str()), (202, "returned"));
}

// ---------------------------------------------------------------------------
// §3.13 logging

fn given_log_id_is_echoed_and_names_the_log_files(lang: Lang) {
    let rt = basic(lang);
    let resp = send(
        rt.action("log-engine")
            .header(LOG_ID_HEADER, "my-log-id_123"),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.log_id(), "my-log-id_123");
    assert_eq!(
        rt.log_files(),
        vec![
            "my-log-id_123_errors.log".to_owned(),
            "my-log-id_123_logs.log".to_owned()
        ]
    );
}

fn generated_log_ids_are_20_lower_hex_chars_and_unique(lang: Lang) {
    let rt = basic(lang);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let mut ids = std::collections::HashSet::new();
    for _ in 0..20 {
        let resp = run(&rt, "log-engine");
        assert_eq!(resp.status, 200, "{}", resp.text());
        let id = resp.log_id();
        assert_eq!(id.len(), 20, "log id {id:?}");
        assert!(
            id.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "log id {id:?} is not lower-case hex"
        );
        let seconds = u64::from_str_radix(&id[..8], 16).expect("hex seconds");
        assert!(
            seconds.abs_diff(now) < 300,
            "log id {id:?} does not start with the Unix time"
        );
        let millis = u64::from_str_radix(&id[8..13], 16).expect("hex sub-second part");
        assert!(
            millis < 1000,
            "log id {id:?}: sub-second part {millis} is not milliseconds"
        );
        assert_eq!(rt.logs(&id), "engine: open-runtimes\n", "log file of {id}");
        assert!(ids.insert(id.clone()), "log id {id} repeated");
    }
    // An empty log id header also means "generate one".
    let resp = send(rt.action("res-text").header(LOG_ID_HEADER, ""));
    assert_eq!(resp.log_id().len(), 20);
}

fn development_env_uses_dev_as_log_id(lang: Lang) {
    let rt = Runtime::builder(lang, "basic")
        .env("OPEN_RUNTIMES_ENV", "development")
        .start();
    let resp = run(&rt, "log-engine");
    assert_eq!(resp.log_id(), "dev");
    assert_eq!(rt.logs("dev"), "engine: open-runtimes\n");
    // A given id still wins.
    let resp = send(rt.action("res-text").header(LOG_ID_HEADER, "given"));
    assert_eq!(resp.log_id(), "given");
}

fn disabled_logging_sends_empty_log_id_and_writes_no_files(lang: Lang) {
    let rt = basic(lang);
    for action in ["log-engine", "native-log", "exception"] {
        let resp = send(
            rt.action(action)
                .header("x-open-runtimes-logging", "disabled")
                .header(LOG_ID_HEADER, "should-not-exist"),
        );
        assert_eq!(
            resp.header(LOG_ID_HEADER).as_deref(),
            Some(""),
            "{action}: log id header must be present and empty"
        );
    }
    assert_no_log_files(&rt);
    // `enabled` and empty mean enabled.
    for value in ["enabled", ""] {
        let resp = send(
            rt.action("log-engine")
                .header("x-open-runtimes-logging", value)
                .header(LOG_ID_HEADER, "on"),
        );
        assert_eq!(resp.log_id(), "on", "logging header {value:?}");
    }
    assert_eq!(
        rt.logs("on"),
        "engine: open-runtimes\nengine: open-runtimes\n"
    );
}

fn function_that_logs_nothing_creates_no_log_files(lang: Lang) {
    let rt = basic(lang);
    let resp = send(rt.action("res-text").header(LOG_ID_HEADER, "quiet"));
    assert_eq!(resp.log_id(), "quiet");
    assert_no_log_files(&rt);
}

fn log_and_error_write_exact_lines(lang: Lang) {
    let rt = basic(lang);
    let resp = send(rt.action("log-engine").header(LOG_ID_HEADER, "engine"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let logs = std::fs::read(rt.log_path("engine")).expect("logs file exists");
    let errors = std::fs::read(rt.errors_path("engine")).expect("errors file exists");
    assert_eq!(String::from_utf8_lossy(&logs), "engine: open-runtimes\n");
    assert_eq!(String::from_utf8_lossy(&errors), "engine: open-runtimes\n");
}

fn repeated_log_id_appends_to_the_same_files(lang: Lang) {
    let rt = basic(lang);
    for _ in 0..3 {
        let resp = send(rt.action("log-engine").header(LOG_ID_HEADER, "again"));
        assert_eq!(resp.status, 200);
    }
    assert_eq!(rt.logs("again"), "engine: open-runtimes\n".repeat(3));
    assert_eq!(rt.errors("again"), "engine: open-runtimes\n".repeat(3));
}

fn log_values_render_as_compact_json_and_full_64_bit_integers(lang: Lang) {
    let rt = basic(lang);
    let resp = send(rt.action("log-values").header(LOG_ID_HEADER, "values"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        rt.logs("values"),
        concat!(
            "{\"objectKey\":\"objectValue\"}\n",
            "[\"arrayValue\"]\n",
            "9223372036854775807\n",
            "-9223372036854775808\n",
            "{\"big\":9223372036854775807,\"list\":[-9223372036854775808]}\n",
            "42 4.2 text\n",
        )
    );
}

fn log_booleans_render_as_true_and_false(lang: Lang) {
    let rt = basic(lang);
    let resp = send(rt.action("log-booleans").header(LOG_ID_HEADER, "booleans"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(rt.logs("booleans"), "true false\n");
}

fn log_lines_of_1023_chars_give_files_of_exactly_1024_bytes_per_line(lang: Lang) {
    let rt = basic(lang);
    let count = 100;
    let resp = send(
        rt.action("log-lines")
            .header("x-count", count.to_string())
            .header(LOG_ID_HEADER, "sizes"),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let size = std::fs::metadata(rt.log_path("sizes"))
        .expect("logs file")
        .len();
    assert_eq!(size, count * 1024);
    assert_eq!(
        rt.logs("sizes"),
        format!("{}\n", "a".repeat(1023)).repeat(count as usize)
    );
}

fn log_lines_over_8000_chars_are_truncated_with_suffix(lang: Lang) {
    let rt = basic(lang);
    let resp = send(rt.action("log-long").header(LOG_ID_HEADER, "long"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let expected_logs = format!(
        "{}{TRUNCATION_SUFFIX}\n{}\n",
        "x".repeat(8000),
        "z".repeat(8000)
    );
    assert_eq!(rt.logs("long"), expected_logs);
    assert_eq!(
        rt.errors("long"),
        format!("{}{TRUNCATION_SUFFIX}\n", "y".repeat(8000))
    );
}

fn native_output_goes_to_logs_after_the_banner(lang: Lang) {
    let rt = basic(lang);
    let resp = send(rt.action("native-log").header(LOG_ID_HEADER, "native"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        rt.logs("native"),
        format!("{NATIVE_BANNER}\nnative stdout line\nnative stderr line\n")
    );
    assert_eq!(rt.errors("native"), "", "native stderr goes to _logs.log");
}

fn native_banner_appears_only_when_native_output_does(lang: Lang) {
    let rt = basic(lang);
    let resp = send(rt.action("log-and-native").header(LOG_ID_HEADER, "mixed"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        rt.logs("mixed"),
        format!("from context.log\n{NATIVE_BANNER}\nfrom console.log\n")
    );
    let resp = send(rt.action("log-engine").header(LOG_ID_HEADER, "no-native"));
    assert_eq!(resp.status, 200);
    assert!(!rt.logs("no-native").contains(NATIVE_BANNER));
}

fn module_load_output_is_captured_in_the_first_request(lang: Lang) {
    let rt = Runtime::start(lang, "load-output");
    let resp = send(rt.request(Method::GET, "/").header(LOG_ID_HEADER, "first"));
    assert_eq!((resp.status, resp.text().as_str()), (200, "loaded"));
    assert_eq!(
        rt.logs("first"),
        format!("{NATIVE_BANNER}\nprinted while loading\n")
    );
}

// ---------------------------------------------------------------------------
// §3.10 / §3.11 guards

fn assert_guard(rt: &Runtime, status: u16, error: &str) {
    let resp = send(rt.request(Method::POST, "/").header(LOG_ID_HEADER, "guard"));
    assert_eq!(resp.status, status, "body {:?}", resp.text());
    assert_eq!(resp.text(), "", "guard responses have an empty body");
    assert_eq!(resp.log_id(), "guard");
    let errors = rt.errors("guard");
    assert!(
        errors.contains(error),
        "errors log must contain {error:?}, got {errors:?}"
    );
}

fn missing_entrypoint_gets_503_empty_and_does_not_exist_error(lang: Lang) {
    let entrypoint = match lang {
        Lang::Node => "missing.js",
        Lang::Python => "missing.py",
        Lang::Bun => "missing.ts",
    };
    let rt = Runtime::builder(lang, "basic")
        .entrypoint(entrypoint)
        .start();
    assert_guard(
        &rt,
        503,
        &format!("Failed to load entrypoint, file {entrypoint} does not exist."),
    );
}

fn syntax_error_gets_503_empty_and_syntax_error_message(lang: Lang) {
    let rt = Runtime::start(lang, "syntax-error");
    assert_guard(&rt, 503, &format!("Syntax error in {}", lang.entrypoint()));
}

fn module_without_function_gets_503_empty_and_signature_error(lang: Lang) {
    let rt = Runtime::start(lang, "no-export");
    assert_guard(
        &rt,
        503,
        "Function signature invalid. Did you forget to export a 'main' function?",
    );
}

fn exception_gets_500_empty_with_stack_in_errors_log_only(lang: Lang) {
    let rt = basic(lang);
    let resp = send(rt.action("exception").header(LOG_ID_HEADER, "thrown"));
    assert_eq!(resp.status, 500);
    assert_eq!(resp.text(), "");
    assert_eq!(resp.log_id(), "thrown");
    let errors = rt.errors("thrown");
    assert!(
        errors.contains("conformance exception message"),
        "errors: {errors:?}"
    );
    assert!(
        errors.contains(lang.entrypoint()),
        "stack must name the entrypoint {}: {errors:?}",
        lang.entrypoint()
    );
    assert_eq!(
        rt.logs("thrown"),
        "before the exception\n",
        "exception adds nothing to _logs.log"
    );
    // The server keeps serving.
    assert_eq!(run(&rt, "res-text").status, 200);
}

fn async_exception_gets_500_empty_with_message_in_errors_log(lang: Lang) {
    let rt = basic(lang);
    let resp = send(
        rt.action("async-exception")
            .header(LOG_ID_HEADER, "async-thrown"),
    );
    assert_eq!(resp.status, 500);
    assert_eq!(resp.text(), "");
    let errors = rt.errors("async-thrown");
    assert!(
        errors.contains("async conformance exception"),
        "errors: {errors:?}"
    );
    assert_eq!(rt.logs("async-thrown"), "");
}

fn missing_return_gets_500_empty_with_hint(lang: Lang) {
    let rt = basic(lang);
    let resp = send(
        rt.action("missing-return")
            .header(LOG_ID_HEADER, "no-return"),
    );
    assert_eq!(resp.status, 500);
    assert_eq!(resp.text(), "");
    assert_eq!(resp.log_id(), "no-return");
    assert!(
        rt.errors("no-return").contains(MISSING_RETURN_ERROR),
        "errors: {:?}",
        rt.errors("no-return")
    );
    assert_eq!(rt.logs("no-return"), "no return follows\n");
}

// ---------------------------------------------------------------------------
// loading

fn open_runtimes_file_overrides_the_entrypoint(lang: Lang) {
    let rt = Runtime::builder(lang, "entrypoint-override")
        .entrypoint(lang.entrypoint())
        .start();
    let resp = send(rt.request(Method::GET, "/"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let expected = match lang {
        Lang::Node | Lang::Bun => "from custom.js",
        Lang::Python => "from custom.py",
    };
    assert_eq!(resp.text(), expected);
}

/// §3.10: "a load that failed SHOULD be retried on the next request".
fn failed_load_is_retried_on_the_next_request(lang: Lang) {
    let (entrypoint, source) = match lang {
        Lang::Node => (
            "later.js",
            "module.exports = async (context) => context.res.text('loaded later');\n",
        ),
        Lang::Python => (
            "later.py",
            "async def main(context):\n    return context.res.text(\"loaded later\")\n",
        ),
        Lang::Bun => (
            "later.ts",
            "export default async (context: any): Promise<unknown> =>\n  context.res.text('loaded later');\n",
        ),
    };
    let rt = Runtime::builder(lang, "basic")
        .entrypoint(entrypoint)
        .start();
    let resp = send(rt.request(Method::GET, "/"));
    assert_eq!(resp.status, 503, "{}", resp.text());
    std::fs::write(rt.function_dir.join(entrypoint), source).expect("write entrypoint");
    let resp = send(rt.request(Method::GET, "/"));
    assert_eq!((resp.status, resp.text().as_str()), (200, "loaded later"));
}

fn async_function_is_supported(lang: Lang) {
    let rt = basic(lang);
    let resp = run(&rt, "sleep-short");
    assert_eq!((resp.status, resp.text().as_str()), (200, "slept"));
}

fn sync_function_is_supported(lang: Lang) {
    let rt = Runtime::start(lang, "sync");
    for _ in 0..3 {
        let resp = send(rt.request(Method::PUT, "/"));
        assert_eq!((resp.status, resp.text().as_str()), (200, "sync PUT"));
    }
}

// ---------------------------------------------------------------------------
// Node and Bun (the JavaScript worker): module formats

mod javascript {
    use super::*;

    for_javascript_runtimes!(
        commonjs_module_exports_function_is_loaded,
        esm_mjs_default_export_is_loaded,
        web_headers_object_gives_repeated_set_cookie_lines,
        esm_package_type_module_default_export_is_loaded,
        binary_bodies_of_every_byte_type_are_sent,
    );

    /// `res.binary` takes a Uint8Array, a Buffer, an ArrayBuffer or a web
    /// Blob, as the official test functions use them.
    fn binary_bodies_of_every_byte_type_are_sent(lang: Lang) {
        let rt = Runtime::start(lang, "basic");
        for kind in ["uint8array", "buffer", "arraybuffer", "blob"] {
            let resp = send(
                rt.request(Method::GET, &format!("/?kind={kind}"))
                    .header("x-action", "res-binary-kinds"),
            );
            assert_eq!(resp.status, 200, "{kind}: {}", resp.text());
            assert_eq!(resp.body, [0x00, 0x0a, 0xff], "{kind}");
        }
    }

    fn commonjs_module_exports_function_is_loaded(lang: Lang) {
        let rt = Runtime::start(lang, "sync");
        let resp = send(rt.request(Method::GET, "/"));
        assert_eq!((resp.status, resp.text().as_str()), (200, "sync GET"));
    }

    fn esm_mjs_default_export_is_loaded(lang: Lang) {
        let rt = Runtime::builder(lang, "esm-mjs")
            .entrypoint("index.mjs")
            .start();
        let resp = send(rt.request(Method::GET, "/"));
        assert_eq!((resp.status, resp.text().as_str()), (200, "esm mjs"));
    }

    fn web_headers_object_gives_repeated_set_cookie_lines(lang: Lang) {
        let rt = basic(lang);
        let resp = run(&rt, "res-headers-object");
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.header_all("set-cookie"),
            vec![
                "cookie=value; path=/".to_owned(),
                "cookie2=value2; path=/".to_owned()
            ]
        );
        assert_eq!(
            resp.header_all("some-header"),
            vec!["some-value".to_owned()]
        );
    }

    fn esm_package_type_module_default_export_is_loaded(lang: Lang) {
        let rt = Runtime::start(lang, "esm-package");
        let resp = send(rt.request(Method::GET, "/"));
        assert_eq!((resp.status, resp.text().as_str()), (200, "esm package"));
    }
}

// ---------------------------------------------------------------------------
// Bun only: TypeScript entrypoints (fixtures/bun), run as they are

mod bun_only {
    use super::*;

    /// No `OPEN_RUNTIMES_ENTRYPOINT`: Bun's default `index.ts` is served,
    /// with its types, enum and TypeScript import.
    #[test]
    fn typescript_entrypoint_is_the_default_and_runs_without_a_build() {
        let rt = Runtime::start(Lang::Bun, "typescript");
        let resp = send(
            rt.request(Method::GET, "/?name=Bun")
                .header(LOG_ID_HEADER, "ts"),
        );
        assert_eq!(
            (resp.status, resp.text().as_str()),
            (200, "Hello, Bun!"),
            "errors log: {:?}",
            rt.errors("ts")
        );
        assert_eq!(
            rt.logs("ts"),
            format!("mode text\n{NATIVE_BANNER}\nnative from typescript\n")
        );
        let resp = send(rt.request(Method::GET, "/?mode=json"));
        assert_eq!(resp.status, 200);
        assert!(content_type(&resp).starts_with("application/json"));
        assert_eq!(
            resp.json(),
            json!({"text": "Hello, TypeScript!", "language": "typescript"})
        );
    }

    #[test]
    fn typescript_exception_stack_names_the_ts_file() {
        let rt = Runtime::start(Lang::Bun, "typescript");
        let resp = send(
            rt.request(Method::GET, "/throw")
                .header(LOG_ID_HEADER, "ts-throw"),
        );
        assert_eq!((resp.status, resp.text().as_str()), (500, ""));
        let errors = rt.errors("ts-throw");
        assert!(
            errors.contains("typescript exception"),
            "errors: {errors:?}"
        );
        assert!(errors.contains("index.ts"), "errors: {errors:?}");
    }

    #[test]
    fn typescript_syntax_error_gets_503_with_the_location() {
        let rt = Runtime::start(Lang::Bun, "typescript-syntax-error");
        assert_guard(&rt, 503, "Syntax error in index.ts");
        let errors = rt.errors("guard");
        assert!(errors.contains("index.ts:2\n"), "errors: {errors:?}");
        assert!(errors.contains("const answer: = 42;"), "errors: {errors:?}");
        assert!(errors.contains("SyntaxError: "), "errors: {errors:?}");
    }

    /// Without the file, the guard names Bun's default entrypoint.
    #[test]
    fn missing_default_entrypoint_names_index_ts() {
        let rt = Runtime::start(Lang::Bun, "typescript");
        std::fs::remove_file(rt.function_dir.join("index.ts")).expect("remove index.ts");
        assert_guard(
            &rt,
            503,
            "Failed to load entrypoint, file index.ts does not exist.",
        );
    }
}
