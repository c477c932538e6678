//! End-to-end: three `httpraft` processes started from a `peers.json`, driven over HTTP
//! the way the original's Postman collection and key-value app drove them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cluster, DEADLINE};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_postman_flow_commits_entries_visible_on_every_node_in_order() {
    let c = Cluster::start(3).await;
    let mut api = c.apis[0].clone();
    let mut sent = Vec::new();
    for k in 0..20 {
        let text = format!("entry {k} with \"quotes\" and ünïcode");
        let (ok, leader) = c.post_entry(api.clone(), &text).await;
        assert!(ok, "entry {k} committed");
        api = leader;
        sent.push(text);
    }
    let logs = c.logs_containing(&sent).await;
    for log in logs {
        assert_eq!(
            log, sent,
            "every node returns the entries in order, as posted"
        );
    }
    // The response shape of a follower: success false and a bare host:port leader.
    let follower = (0..3).find(|&i| c.apis[i] != api).unwrap();
    let v: Value = c
        .http
        .post(c.url(follower, "/request"))
        .header("Host", "me")
        .body(r#"{"entry": "x"}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"success": false, "leader": api}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_value_flow_through_put_and_get() {
    let c = Cluster::start(3).await;
    let start = Instant::now();
    let leader = loop {
        let v: Value = c
            .http
            .put(c.url(0, "/"))
            .json(&json!({"key": "k", "value": "v1"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v.get("key").is_some() {
            assert_eq!(v["value"], "v1");
            break v["leader"].as_str().unwrap().to_string();
        }
        let l = v["leader"].as_str().unwrap_or_default().to_string();
        if !l.is_empty() {
            let v: Value = c
                .http
                .put(format!("http://{l}/"))
                .json(&json!({"key": "k", "value": "v1"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v.get("key").is_some() {
                break l;
            }
        }
        assert!(start.elapsed() < DEADLINE);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let v: Value = c
        .http
        .put(format!("http://{leader}/"))
        .json(&json!({"key": "k", "value": "v2"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"leader": leader, "key": "k", "value": "v2"}));
    for i in 0..3 {
        let start = Instant::now();
        loop {
            let v: Value = c
                .http
                .get(c.url(i, "/?key=k"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["value"] == "v2" {
                assert_eq!(v, json!({"leader": leader, "key": "k", "value": "v2"}));
                break;
            }
            assert!(start.elapsed() < DEADLINE, "node {i} never saw v2: {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let v: Value = c
        .http
        .get(c.url(1, "/?key=absent"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["value"], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_while_sixteen_clients_write_loses_no_acknowledged_entry() {
    let mut c = Cluster::start(3).await;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let http = c.http.clone();
    let apis = c.apis.clone();
    let mut writers = Vec::new();
    for w in 0..16 {
        let (http, apis, acked, stop) = (http.clone(), apis.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut api = apis[w % apis.len()].clone();
            let mut k = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Each text is posted once: an ambiguous failure is never retried, so no
                // entry can appear twice.
                let text = format!("writer {w} entry {k}");
                k += 1;
                let r = http
                    .post(format!("http://{api}/request"))
                    .json(&json!({"entry": text}))
                    .send()
                    .await;
                match r {
                    Ok(r) => match r.json::<Value>().await {
                        Ok(v) if v["success"] == true => acked.lock().unwrap().push(text),
                        Ok(v) => {
                            if let Some(l) = v["leader"].as_str().filter(|l| !l.is_empty()) {
                                api = l.to_string();
                            } else {
                                api = apis[(w + k) % apis.len()].clone();
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        Err(_) => api = apis[(w + k) % apis.len()].clone(),
                    },
                    Err(_) => {
                        api = apis[(w + k) % apis.len()].clone();
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }));
    }
    // Let some writes land, then SIGKILL the leader.
    let start = Instant::now();
    while acked.lock().unwrap().len() < 200 {
        assert!(start.elapsed() < DEADLINE, "writes are not landing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status: Value = c
        .http
        .get(c.url(0, "/v1/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let leader_api = status["leader_api"].as_str().unwrap().to_string();
    let leader = c.apis.iter().position(|a| *a == leader_api).unwrap();
    c.kill(leader);
    let before_kill = acked.lock().unwrap().len();
    let start = Instant::now();
    while acked.lock().unwrap().len() < before_kill + 200 {
        assert!(
            start.elapsed() < DEADLINE,
            "no new leader took over the writes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.spawn(leader);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let logs = c.logs_containing(&acked).await;
    assert_eq!(logs.len(), 3, "the killed node is back and caught up");
    let restarted = c.node_log(leader);
    assert!(
        !restarted.contains("not closed cleanly"),
        "the application store reopens after a crash without a full repair:\n{restarted}"
    );
    for log in &logs {
        let unique: BTreeSet<&String> = log.iter().collect();
        assert_eq!(unique.len(), log.len(), "every entry appears once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_and_restarting_the_whole_cluster_keeps_the_log_and_the_map() {
    let mut c = Cluster::start(3).await;
    let mut sent = Vec::new();
    let mut api = c.apis[0].clone();
    for k in 0..10 {
        let text = format!("durable {k}");
        let (ok, l) = c.post_entry(api.clone(), &text).await;
        assert!(ok);
        api = l;
        sent.push(text);
    }
    let v: Value = c
        .http
        .put(format!("http://{api}/v1/kv/color"))
        .json(&json!({"value": "blue"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["value"], "blue");
    let before = c.logs_containing(&sent).await;
    for i in 0..3 {
        c.stop(i); // SIGTERM: clean exit 0
    }
    for i in 0..3 {
        c.spawn(i);
    }
    c.wait_ready().await;
    let after = c.logs_containing(&sent).await;
    assert_eq!(before, after, "the log is intact after a full restart");
    for i in 0..3 {
        let start = Instant::now();
        loop {
            let v: Value = c
                .http
                .get(c.url(i, "/v1/kv/color?consistency=local"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap_or(Value::Null);
            if v["value"] == "blue" {
                break;
            }
            assert!(start.elapsed() < DEADLINE, "node {i} lost the key: {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_documented_status_codes_and_the_node_keeps_serving() {
    let c = Cluster::start(3).await;
    type Case = (
        reqwest::Method,
        &'static str,
        Option<Vec<u8>>,
        u16,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            reqwest::Method::POST,
            "/request",
            Some(b"{not json".to_vec()),
            400,
            "bad_request",
        ),
        (
            reqwest::Method::POST,
            "/request",
            Some(br#"{"entry": 5}"#.to_vec()),
            400,
            "bad_request",
        ),
        (
            reqwest::Method::GET,
            "/request",
            None,
            405,
            "method_not_allowed",
        ),
        (
            reqwest::Method::DELETE,
            "/log",
            None,
            405,
            "method_not_allowed",
        ),
        (
            reqwest::Method::POST,
            "/request",
            Some(vec![b'a'; 2 << 20]),
            413,
            "payload_too_large",
        ),
        (
            reqwest::Method::GET,
            "/no/such/path",
            None,
            404,
            "not_found",
        ),
        (
            reqwest::Method::GET,
            "/log?index=abc",
            None,
            400,
            "bad_request",
        ),
        (
            reqwest::Method::PUT,
            "/",
            Some(b"[]".to_vec()),
            400,
            "bad_request",
        ),
        (
            reqwest::Method::GET,
            "/v1/kv/x?consistency=maybe",
            None,
            400,
            "bad_request",
        ),
        (
            reqwest::Method::GET,
            "/v1/kv/%ff%fe?consistency=local",
            None,
            400,
            "bad_request",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let mut req = c.http.request(method.clone(), c.url(0, path));
        if let Some(b) = body {
            req = req.body(b);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        let text = r.text().await.unwrap();
        if !code.is_empty() {
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("{method} {path}: JSON error body, got {text:?}"));
            assert_eq!(v["error"]["code"], code, "{method} {path}");
        }
        // Still serving, through the same client: a too-large body was read and thrown away
        // before the 413, so the answer arrived (no broken pipe while the body was still
        // being sent) and the connection either carries the next request or was closed
        // with the answer saying so, so that the client's pool does not reuse it.
        let ok = c.http.get(c.url(0, "/healthz")).send().await.unwrap();
        assert!(ok.status().is_success(), "{method} {path}");
    }
    let (ok, _) = c.post_entry(c.apis[0].clone(), "still works").await;
    assert!(ok);

    // A client still sending a too-large body gets the 413, not a broken pipe: the node
    // reads the rest of the body (up to a bound) before it answers, so it never closes a
    // connection with the client's data unread, which would reset it and lose the answer.
    for round in 0..20 {
        let r = c
            .http
            .post(c.url(round % 3, "/v1/log"))
            .header("content-type", "application/json")
            .body(vec![b' '; 3 << 20])
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: no answer to a too-large body: {e:?}"));
        assert_eq!(r.status().as_u16(), 413, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_writes_on_a_follower_redirect_to_the_leader_and_ops_endpoints_report_state() {
    let c = Cluster::start(3).await;
    let status: Value = c
        .http
        .get(c.url(0, "/v1/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let leader_api = status["leader_api"].as_str().unwrap().to_string();
    let leader = c.apis.iter().position(|a| *a == leader_api).unwrap();
    let follower = (leader + 1) % 3;

    // A follower redirects writes (307 keeps method and body) to the same path on the leader.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects
        .put(c.url(follower, "/v1/kv/city?x=1"))
        .json(&json!({"value": "Oslo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 307);
    assert_eq!(
        r.headers()["location"],
        format!("http://{leader_api}/v1/kv/city?x=1").as_str()
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_leader");
    assert_eq!(v["error"]["leader"], leader_api.as_str());

    // A client that follows redirects just succeeds.
    let v: Value = c
        .http
        .put(c.url(follower, "/v1/kv/city"))
        .json(&json!({"value": "Oslo"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (v["key"].as_str(), v["value"].as_str()),
        (Some("city"), Some("Oslo"))
    );
    let index = v["index"].as_u64().unwrap();
    let v: Value = c
        .http
        .get(c.url(leader, "/v1/kv/city"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["value"], "Oslo");
    assert!(
        v["applied"].as_u64().unwrap() >= index,
        "a linearizable read sees the acknowledged write"
    );
    let r = c
        .http
        .get(c.url(leader, "/v1/kv/nowhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(
        v["revision"].as_u64(),
        Some(index),
        "a key's revision is its write's index"
    );

    // Compare-and-swap: on the value, on the revision, create-only; a failed condition
    // writes nothing and shows what the key holds.
    let put = |body: Value| c.http.put(c.url(leader, "/v1/kv/city")).json(&body).send();
    let r = put(json!({"value": "Rome", "expect": "Paris"}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 412);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "precondition_failed");
    assert_eq!(
        v["error"]["current"],
        json!({"value": "Oslo", "revision": index})
    );
    let r = put(json!({"value": "Rome", "expect": "Oslo", "if_revision": index}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (&v["previous"], &v["previous_revision"]),
        (&json!("Oslo"), &json!(index))
    );
    let rome = v["revision"].as_u64().unwrap();
    assert!(rome > index);
    let r = put(json!({"value": "Lima", "if_revision": index}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 412, "the revision moved on");
    let r = put(json!({"value": "Lima", "expect": null})).await.unwrap();
    assert_eq!(r.status().as_u16(), 412, "create-only on a present key");
    let r = c
        .http
        .put(c.url(leader, "/v1/kv/fresh"))
        .json(&json!({"value": "new", "expect": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "create-only on an absent key");
    let r = c
        .http
        .delete(c.url(leader, "/v1/kv/city"))
        .json(&json!({"expect": "Oslo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 412, "a conditional delete");
    let v = c.get_json(leader, "/v1/kv/city").await;
    assert_eq!(
        (&v["value"], &v["revision"]),
        (&json!("Rome"), &json!(rome))
    );

    let r = c
        .http
        .delete(c.url(leader, "/v1/kv/city"))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["previous"], "Rome");

    // Appends and paginated reads of the log.
    for k in 0..5 {
        let r = c
            .http
            .post(c.url(leader, "/v1/log"))
            .json(&json!({"entry": format!("v1-{k}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }
    let v: Value = c
        .http
        .get(c.url(leader, "/v1/log?from=1&limit=2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["entries"].as_array().unwrap().len(), 2);
    assert_eq!(v["next"], 3);

    // Readiness, health and metrics (waiting for readiness: a loaded machine can stall a
    // node past its election timeout, and a node without a leader is not ready).
    c.wait_ready().await;
    assert!(c
        .http
        .get(c.url(follower, "/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    assert!(c
        .http
        .get(c.url(follower, "/healthz"))
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    let m = c.metrics_text(leader).await;
    for name in [
        "raft_role 3",
        "raft_term ",
        "raft_commit_index ",
        "raft_applied_index ",
        "raft_proposals_total{result=\"committed\"} ",
        "raft_proposal_seconds_bucket",
        "raft_peer_replication_lag{peer=",
        "raft_net_messages_sent_total{peer=",
    ] {
        assert!(m.contains(name), "metrics lack {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httpraft_dev_starts_a_working_local_cluster_with_tls_and_stops_cleanly_on_ctrl_c() {
    use std::io::{BufRead, BufReader};
    let data = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(common::binary())
        .args(["dev", "--data-dir"])
        .arg(data.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let mut urls = Vec::new();
    let start = Instant::now();
    while urls.len() < 3 {
        let line = rx.recv_timeout(DEADLINE).expect("dev prints its nodes");
        if let Some(url) = line.split_whitespace().find(|w| w.starts_with("https://")) {
            if line.starts_with("node ") {
                urls.push(url.to_string());
            }
        }
        assert!(start.elapsed() < DEADLINE);
    }
    // HTTPS with the throwaway CA it wrote under the data directory.
    let ca = std::fs::read(data.path().join("certs").join("ca.pem")).unwrap();
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let plain = reqwest::Client::new()
        .get(urls[0].replace("https://", "http://") + "/healthz")
        .send()
        .await;
    assert!(
        plain.map(|r| !r.status().is_success()).unwrap_or(true),
        "plain HTTP must not work"
    );
    let start = Instant::now();
    let mut target = urls[0].trim_start_matches("https://").to_string();
    loop {
        let r = http
            .post(format!("https://{target}/request"))
            .json(&json!({"entry": "from dev"}))
            .send()
            .await;
        if let Ok(v) = r.unwrap().json::<Value>().await {
            if v["success"] == true {
                break;
            }
            if let Some(l) = v["leader"].as_str().filter(|l| !l.is_empty()) {
                target = l.to_string();
            }
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the dev cluster never committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ok = std::process::Command::new("sh")
        .args(["-c", &format!("kill -INT {}", child.id())])
        .status()
        .unwrap();
    assert!(ok.success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < DEADLINE, "dev did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "dev exits 0 on Ctrl-C, got {status}");
    assert!(
        data.path().join("node-0").join("meta.json").exists(),
        "data under the printed directory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_bench_drives_a_cluster_and_reports_what_it_measured() {
    let c = Cluster::start(3).await;
    let bench = common::bench_binary();
    // The highest term any node is in: it moves only with an election.
    let term = || async {
        let mut t = 0;
        for i in 0..3 {
            t = t.max(c.status(i).await["term"].as_u64().unwrap_or(0));
        }
        t
    };
    for op in ["request", "append", "kv-put", "kv-get"] {
        let term_before = term().await;
        let mut cmd = std::process::Command::new(&bench);
        for api in &c.apis {
            cmd.args(["--target", &format!("http://{api}")]);
        }
        let out = cmd
            .args([
                "--op",
                op,
                "--clients",
                "8",
                "--requests",
                "200",
                "--duration",
                "60",
                "--json",
                "--quiet",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{op}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["op"], op, "the report names the op as it was given");
        assert!(v["ok"].as_u64().unwrap() >= 200, "{op}: {v}");
        if term().await == term_before {
            assert_eq!(v["errors"], 0, "{op}: {v}");
        } else {
            // An election during the run (a loaded machine can delay heartbeats past the
            // election timeout): writes caught in it are reported failed, as they should
            // be; nothing else may fail.
            let kinds = v["errors_by_kind"].as_object().unwrap();
            assert!(
                kinds
                    .keys()
                    .all(|k| ["not-committed", "http-503"].contains(&k.as_str())),
                "{op}: {v}"
            );
        }
        assert!(v["throughput"].as_f64().unwrap() > 0.0);
        assert!(
            v["latency_ms"]["p50"].as_f64().unwrap() <= v["latency_ms"]["max"].as_f64().unwrap()
        );
    }
    // Entries written by `request` and `append` are in the leader's committed log.
    let status: Value = c
        .http
        .get(c.url(0, "/v1/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let leader = status["leader_api"].as_str().unwrap().to_string();
    let log: Value = c
        .http
        .get(format!("http://{leader}/v1/log?from=1&limit=10000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = log["entries"].as_array().unwrap();
    assert!(entries.iter().filter(|e| e["kind"] == "entry").count() >= 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_entries_posted_at_once_commits_in_order_at_consecutive_indexes() {
    let c = Cluster::start_with(3, &["--max-batch-entries", "100"]).await;
    let leader = c.leader().await;
    let follower = (0..3).find(|&i| i != leader).unwrap();
    let texts: Vec<String> = (0..100).map(|k| format!("batch-{k}")).collect();
    // Posted to a follower: redirected to the leader with the body, like a single entry.
    let api = raft_http_client::Client::new(&[c.url(follower, "")]).unwrap();
    let done = api.append_batch(texts.clone()).await.unwrap();
    assert_eq!(done.indexes.len(), 100);
    let first = done.indexes[0];
    assert_eq!(
        done.indexes,
        (first..first + 100).collect::<Vec<_>>(),
        "consecutive indexes, in order"
    );
    let page = api.read_log(first, 100).await.unwrap();
    let got: Vec<&str> = page
        .entries
        .iter()
        .map(|e| e.entry.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(got, texts.iter().map(String::as_str).collect::<Vec<_>>());

    // What is refused, with nothing appended.
    let last = c.status(leader).await["last_index"].as_u64().unwrap();
    for (body, code) in [
        (json!({"entries": []}), "bad_request"),
        (json!({"entry": "a", "entries": ["b"]}), "bad_request"),
        (json!({}), "bad_request"),
        (json!({"entries": vec!["x"; 101]}), "too_many_entries"),
        (json!({"entries": ["ok", 7]}), "bad_request"),
    ] {
        let r = c
            .http
            .post(c.url(leader, "/v1/log"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{body}: {v}");
    }
    assert_eq!(
        c.status(leader).await["last_index"].as_u64().unwrap(),
        last,
        "a refused batch appended nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_serve_linearizable_reads_themselves_and_see_every_acknowledged_write() {
    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for k in 0..30 {
        let r = c
            .http
            .put(c.url(leader, "/v1/kv/counter"))
            .json(&json!({"value": format!("{k}")}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let written: Value = r.json().await.unwrap();
        for f in (0..3).filter(|&i| i != leader) {
            let r = no_redirects
                .get(c.url(f, "/v1/kv/counter"))
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status().as_u16(),
                200,
                "follower {f} did not serve the read"
            );
            let v: Value = r.json().await.unwrap();
            assert_eq!(
                v["value"],
                format!("{k}"),
                "follower {f} served a stale value"
            );
            assert!(v["applied"].as_u64().unwrap() >= written["index"].as_u64().unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_applies_as_fast_as_it_commits_stays_ready_while_writes_stream_in() {
    // Readiness also needs a leader known. Elections and step-downs (a loaded machine can
    // stall a node past its election timeout) are another case, so a run that sees one is
    // repeated. The apply wait is generous for the same reason: without waiting at all,
    // about half of these probes found the follower not ready.
    let c = Cluster::start_with(
        3,
        &[
            "--election-ticks",
            "100",
            "--heartbeat-ticks",
            "10",
            "--ready-apply-wait-ms",
            "2000",
        ],
    )
    .await;
    let leadership = |v: Value| {
        (
            v["term"].as_u64().unwrap(),
            v["leader_changes"].as_u64().unwrap(),
        )
    };
    for attempt in 1..=5 {
        let leader = c.leader().await;
        let follower = (leader + 1) % 3;
        c.wait_ready().await;
        let before = leadership(c.status(follower).await);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (http, url, stop) = (c.http.clone(), c.url(leader, "/v1/log"), stop.clone());
                tokio::spawn(async move {
                    let mut written = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let r = http
                            .post(&url)
                            .json(&json!({"entry": format!("a{attempt} w{w} {written}")}))
                            .send()
                            .await;
                        if r.is_ok_and(|r| r.status().is_success()) {
                            written += 1;
                        }
                    }
                    written
                })
            })
            .collect();
        let mut probes = 0;
        let mut not_ready = Vec::new();
        let probing = Instant::now();
        while probing.elapsed() < Duration::from_secs(1) {
            let r = c.http.get(c.url(follower, "/readyz")).send().await.unwrap();
            probes += 1;
            if !r.status().is_success() {
                not_ready.push(r.json::<Value>().await.unwrap_or_default());
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut written = 0;
        for w in writers {
            written += w.await.unwrap();
        }
        eprintln!("attempt {attempt}: {probes} probes during {written} writes");
        let lost_leader = not_ready.iter().any(|b| b["leader"].is_null());
        if lost_leader || leadership(c.status(follower).await) != before {
            eprintln!("attempt {attempt}: the follower lost or changed its leader, again");
            continue;
        }
        assert!(written >= 20, "only {written} writes went through");
        assert!(
            not_ready.is_empty(),
            "{} of {probes} probes during {written} writes found the follower not ready, first: {}",
            not_ready.len(),
            not_ready[0]
        );
        return;
    }
    panic!("the follower lost or changed its leader during each of five attempts");
}
