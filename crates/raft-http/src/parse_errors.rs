//! JSON bodies for the answers hyper writes on its own.
//!
//! A request hyper cannot parse (a request target over 65,534 bytes, headers over its buffer,
//! not HTTP/1.x at all) never reaches the router: hyper answers `414`, `431` or `400` with an
//! empty body and closes the connection. The connection wrapper in [`crate::server`] passes
//! such an answer through [`rewrite`], so every status this server emits carries the same
//! JSON error shape as the router's.

/// The longest answer [`rewrite`] looks at; hyper's are well under it.
pub(crate) const MAX_HEAD_BYTES: usize = 256;

/// What hyper writes for a parse error, between the status line and the date header.
const HYPER_ERROR_HEADERS: &[u8] = b"\r\nconnection: close\r\ncontent-length: 0\r\n";

/// If `head` is exactly one of hyper's automatic error answers, the same answer with a JSON
/// body; otherwise `None` (the bytes are passed on untouched).
pub(crate) fn rewrite(head: &[u8]) -> Option<Vec<u8>> {
    if head.len() > MAX_HEAD_BYTES
        || !head.starts_with(b"HTTP/1.1 ")
        || !head.ends_with(b"\r\n\r\n")
        || !head
            .windows(HYPER_ERROR_HEADERS.len())
            .any(|w| w == HYPER_ERROR_HEADERS)
    {
        return None;
    }
    let status = head.get(9..12)?;
    let (line, code, message) = match status {
        b"414" => (
            "414 URI Too Long",
            "uri_too_long",
            "the request target is longer than 65534 bytes, the most this server reads; keys of /v1/kv are limited by --max-key-bytes (default 4096)",
        ),
        b"431" => (
            "431 Request Header Fields Too Large",
            "headers_too_large",
            "the request has more than 100 headers, or headers larger than this server reads (about 1 MiB)",
        ),
        b"400" => (
            "400 Bad Request",
            "bad_request",
            "the request is not valid HTTP/1.1 (this server speaks HTTP/1.0 and HTTP/1.1)",
        ),
        _ => return None,
    };
    let body = format!("{{\"error\":{{\"code\":\"{code}\",\"message\":\"{message}\"}}}}");
    Some(
        format!(
            "HTTP/1.1 {line}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hyper_error(line: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {line}\r\nconnection: close\r\ncontent-length: 0\r\ndate: Fri, 27 Nov 2026 13:48:22 GMT\r\n\r\n"
        )
        .into_bytes()
    }

    fn body_of(response: &[u8]) -> serde_json::Value {
        let text = std::str::from_utf8(response).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, body.len(), "content-length matches the body");
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn each_automatic_error_gets_a_json_body_with_its_code() {
        for (line, code) in [
            ("414 URI Too Long", "uri_too_long"),
            ("431 Request Header Fields Too Large", "headers_too_large"),
            ("400 Bad Request", "bad_request"),
        ] {
            let out = rewrite(&hyper_error(line)).expect("rewritten");
            assert!(out.starts_with(format!("HTTP/1.1 {line}\r\n").as_bytes()));
            let v = body_of(&out);
            assert_eq!(v["error"]["code"], code);
            assert!(v["error"]["message"].as_str().unwrap().len() > 20);
        }
    }

    #[test]
    fn anything_else_is_left_alone() {
        // A normal response, a body that happens to look like a status line, another status.
        assert!(rewrite(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").is_none());
        assert!(rewrite(b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(rewrite(&hyper_error("500 Internal Server Error")).is_none());
        let mut long = hyper_error("400 Bad Request");
        long.splice(0..0, vec![b'x'; 300]);
        assert!(rewrite(&long).is_none());
        let mut chunk = hyper_error("400 Bad Request");
        chunk.extend_from_slice(b"more");
        assert!(
            rewrite(&chunk).is_none(),
            "must end where hyper's head ends"
        );
    }
}
