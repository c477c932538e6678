//! The HTTP API against arbitrary bodies, paths and methods: a real node answers each with
//! a documented status and a JSON error, never a 500, and keeps serving.
//!
//! `RAFT_FUZZ_CASES=<n>` sends more requests: the long mode, see docs/testing.md (Fuzzing).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Cluster;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

fn cases() -> u32 {
    std::env::var("RAFT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500)
}

/// Bodies: JSON-looking text built from the fields the endpoints know, random values and
/// random bytes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let field = prop_oneof![
        Just("entry"),
        Just("value"),
        Just("expect"),
        Just("if_revision"),
        Just("key"),
        Just("id"),
        Just("raft"),
        Just("api"),
        Just("to"),
        Just("x"),
    ];
    let value = prop_oneof![
        Just("null".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        "[a-z0-9:.]{0,12}".prop_map(|s| format!("\"{s}\"")),
        Just("1e400".to_string()),
        Just("[1,2,{}]".to_string()),
        Just("{\"a\":{\"b\":[]}}".to_string()),
        Just("\"\\ud800\"".to_string()),
    ];
    let object = proptest::collection::vec((field, value), 0..5).prop_map(|fs| {
        let inner: Vec<String> = fs.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", inner.join(",")).into_bytes()
    });
    prop_oneof![
        4 => object,
        1 => proptest::collection::vec(any::<u8>(), 0..200),
        1 => Just(b"[".repeat(5000)),
    ]
}

fn target() -> impl Strategy<Value = (&'static str, &'static str)> {
    prop_oneof![
        Just(("POST", "/v1/log")),
        Just(("PUT", "/v1/kv/fuzz")),
        Just(("DELETE", "/v1/kv/fuzz")),
        Just(("POST", "/v1/members")),
        Just(("POST", "/v1/leader/transfer")),
        Just(("POST", "/request")),
        Just(("PUT", "/")),
        Just(("GET", "/v1/log?from=abc&limit=-1&wait=zz")),
        Just(("GET", "/v1/kv?prefix=%ff&limit=99999999999999999999")),
        Just(("PATCH", "/v1/log")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_requests_get_documented_answers_and_the_node_keeps_serving() {
    let c = Cluster::start(1).await;
    let base = format!("http://{}", c.apis[0]);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config::with_cases(cases()));
    let strategy = (target(), body());
    for _ in 0..cases() {
        let ((method, path), body) = strategy.new_tree(&mut runner).unwrap().current();
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = http
            .request(method.clone(), format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert!(
            status < 500 || status == 503,
            "{method} {path} {:?} → {status} {text}",
            String::from_utf8_lossy(&body)
        );
        if status >= 400 {
            let v: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method} {path} → {status}, not JSON ({e}): {text}"));
            assert!(v["error"]["code"].is_string(), "{text}");
        }
    }
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}
