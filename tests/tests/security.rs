//! Security of a running cluster: mutual TLS between members, with certificates made by
//! `httpraft certs`; forged or unauthenticated peers are refused while the cluster goes on
//! committing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use common::Cluster;
use futures_util::{SinkExt, StreamExt};
use raft_net::certs::{Ca, Validity};
use raft_net::tls::{load_certs, load_key, load_roots, peer_dns_name, provider};
use raft_net::{FrameCodec, Hello, HelloReply, HANDSHAKE_FRAME_BYTES};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// Says hello as node `from` to node `to` over `io`; whether it was welcomed.
async fn hello(io: impl AsyncRead + AsyncWrite + Unpin, from: u64, to: u64) -> bool {
    let mut framed = Framed::new(io, FrameCodec::new(HANDSHAKE_FRAME_BYTES));
    let h = Hello::new("httpraft", from, to);
    if framed
        .send(Bytes::from(postcard::to_allocvec(&h).unwrap()))
        .await
        .is_err()
    {
        return false;
    }
    match tokio::time::timeout(Duration::from_secs(5), framed.next()).await {
        Ok(Some(Ok(reply))) => {
            postcard::from_bytes::<HelloReply>(&reply).ok() == Some(HelloReply::Welcome)
        }
        _ => false,
    }
}

/// Dials node `to` at `addr` with TLS, presenting `cert`, and says hello as node `from`.
/// A TLS client trusting the cluster's CA and presenting `certs/<cert>.pem`.
fn client_config(certs: &Path, cert: &str) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(load_roots(&certs.join("ca.pem")).unwrap())
        .with_client_auth_cert(
            load_certs(&certs.join(format!("{cert}.pem"))).unwrap(),
            load_key(&certs.join(format!("{cert}.key"))).unwrap(),
        )
        .unwrap()
}

async fn tls_hello(addr: SocketAddr, certs: &Path, cert: &str, from: u64, to: u64) -> bool {
    let config = client_config(certs, cert);
    let name = rustls::pki_types::ServerName::try_from(peer_dns_name(to)).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    match tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
    {
        Ok(tls) => hello(tls, from, to).await,
        Err(_) => false,
    }
}

async fn commits(c: &Cluster, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let l = c.leader().await;
        let (ok, _) = c.post_entry(c.apis[l].clone(), what).await;
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "{what} never committed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_refuses_forged_and_plaintext_peers_and_keeps_committing() {
    let c = Cluster::start_tls(3).await;
    for i in 0..3 {
        assert!(
            c.node_log(i).contains("peer_traffic=\"mutual TLS\""),
            "{}",
            c.node_log(i)
        );
        assert!(!c.node_log(i).contains("PLAINTEXT"));
    }
    commits(&c, "before").await;
    let target: SocketAddr = c.peers[0].parse().unwrap();
    let certs = c.certs_dir();
    // The control: node 1's own certificate is welcomed as node 1.
    assert!(tls_hello(target, &certs, "node-1", 1, 0).await);
    // Node 1's genuine certificate cannot speak as node 2.
    assert!(!tls_hello(target, &certs, "node-1", 2, 0).await);
    // Plain TCP gets nowhere, whatever it claims.
    let tcp = TcpStream::connect(target).await.unwrap();
    assert!(!hello(tcp, 1, 0).await);
    // A certificate for node 1 from another CA, and an expired one from the cluster's CA.
    let write = |name: &str, issued: raft_net::certs::Issued| {
        std::fs::write(certs.join(format!("{name}.pem")), issued.cert_pem).unwrap();
        std::fs::write(certs.join(format!("{name}.key")), issued.key_pem).unwrap();
    };
    let other = Ca::generate("httpraft", Validity::days(1)).unwrap();
    write(
        "other-ca-1",
        other
            .issue_node("httpraft", 1, &[], Validity::days(1))
            .unwrap(),
    );
    assert!(!tls_hello(target, &certs, "other-ca-1", 1, 0).await);
    let ca = Ca::from_pem(
        &std::fs::read_to_string(certs.join("ca.pem")).unwrap(),
        &std::fs::read_to_string(certs.join("ca.key")).unwrap(),
    )
    .unwrap();
    let day = Duration::from_secs(86_400);
    let expired = Validity {
        not_before: SystemTime::now() - 3 * day,
        not_after: SystemTime::now() - day,
    };
    write(
        "expired-1",
        ca.issue_node("httpraft", 1, &[], expired).unwrap(),
    );
    assert!(!tls_hello(target, &certs, "expired-1", 1, 0).await);
    commits(&c, "after").await;
    let refused = c.metric(0, "raft_net_handshakes_refused_total").await;
    assert!(refused >= 4.0, "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_cluster_says_so_loudly_when_it_starts() {
    let c = Cluster::start(3).await;
    let log = c.node_log(0);
    assert!(log.contains("peer_traffic=\"PLAINTEXT\""), "{log}");
    assert!(log.contains("peer traffic is PLAINTEXT"), "{log}");
}

#[test]
fn certs_refuse_to_overwrite_and_name_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let httpraft = common::binary();
    let run = |args: &[&str]| {
        std::process::Command::new(&httpraft)
            .args(args)
            .arg("--dir")
            .arg(&certs)
            .output()
            .unwrap()
    };
    let no_ca = run(&["certs", "node", "0"]);
    assert!(!no_ca.status.success());
    assert!(String::from_utf8_lossy(&no_ca.stderr).contains("httpraft certs init"));
    assert!(run(&["certs", "init"]).status.success());
    let again = run(&["certs", "init"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not overwriting"));
    assert!(run(&["certs", "node", "0", "--host", "db0.example"])
        .status
        .success());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(certs.join("node-0.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key is readable by others: {mode:o}");
    }
}

/// Status of `method path` sent to node `i` with `token` (and a JSON body for writes).
async fn status_of(
    c: &Cluster,
    token: Option<&str>,
    method: reqwest::Method,
    i: usize,
    path: &str,
    body: Option<serde_json::Value>,
) -> u16 {
    let client = c.client_with(token);
    let mut req = client.request(method, c.url(i, path));
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_each_role_can_do_exactly_what_the_role_allows() {
    let mut c = Cluster::new(3, &[]);
    c.enable_tls();
    let t = c.enable_tokens();
    c.launch().await;
    let l = c.leader().await;
    for i in 0..3 {
        assert!(c.node_log(i).contains("api_access=\"tokens\""));
        assert!(c.node_log(i).contains("api_scheme=\"https\""));
    }
    use reqwest::Method as M;
    let put = || Some(serde_json::json!({"value": "v"}));
    // No token: only health, readiness, the dashboard's page and the API description.
    assert_eq!(status_of(&c, None, M::GET, l, "/healthz", None).await, 200);
    assert_eq!(status_of(&c, None, M::GET, l, "/ui", None).await, 200);
    assert_eq!(
        status_of(&c, None, M::GET, l, "/v1/openapi.json", None).await,
        200
    );
    assert_eq!(
        status_of(&c, None, M::GET, l, "/v1/status", None).await,
        401
    );
    assert_eq!(status_of(&c, None, M::GET, l, "/metrics", None).await, 401);
    assert_eq!(status_of(&c, None, M::PUT, l, "/v1/kv/k", put()).await, 401);
    assert_eq!(
        status_of(&c, Some("rt_forged"), M::GET, l, "/v1/status", None).await,
        401
    );
    // read: reads, streams' handshakes and metrics; no writes.
    let r = Some(t.read.as_str());
    assert_eq!(status_of(&c, r, M::GET, l, "/v1/status", None).await, 200);
    assert_eq!(status_of(&c, r, M::GET, l, "/metrics", None).await, 200);
    assert_eq!(status_of(&c, r, M::GET, l, "/v1/kv/k", None).await, 404);
    assert_eq!(status_of(&c, r, M::PUT, l, "/v1/kv/k", put()).await, 403);
    assert_eq!(
        status_of(
            &c,
            r,
            M::POST,
            l,
            "/v1/log",
            Some(serde_json::json!({"entry": "x"}))
        )
        .await,
        403
    );
    // write: also writes; no membership, transfers or backups.
    let w = Some(t.write.as_str());
    assert_eq!(status_of(&c, w, M::PUT, l, "/v1/kv/k", put()).await, 200);
    assert_eq!(status_of(&c, w, M::GET, l, "/v1/kv/k", None).await, 200);
    assert_eq!(
        status_of(
            &c,
            w,
            M::POST,
            l,
            "/v1/log",
            Some(serde_json::json!({"entry": "x"}))
        )
        .await,
        201
    );
    assert_eq!(
        status_of(&c, w, M::DELETE, l, "/v1/members/2", None).await,
        403
    );
    assert_eq!(status_of(&c, w, M::GET, l, "/v1/snapshot", None).await, 403);
    assert_eq!(
        status_of(&c, w, M::POST, l, "/v1/leader/transfer", None).await,
        403
    );
    // admin: everything.
    let a = Some(t.admin.as_str());
    assert_eq!(status_of(&c, a, M::GET, l, "/v1/snapshot", None).await, 200);
    assert_eq!(
        status_of(&c, a, M::POST, l, "/v1/leader/transfer", None).await,
        200
    );
    // A 403 names the token and the role it lacks, as JSON.
    let resp = c
        .client_with(r)
        .put(c.url(l, "/v1/kv/k"))
        .json(&serde_json::json!({"value": "v"}))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden", "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("reader"));
    // A 401 is JSON too.
    let resp = c
        .client_with(None)
        .get(c.url(l, "/v1/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    // Membership needs admin: a write token may not add or remove a member, an admin
    // token may (last: it leaves two members).
    let l = c.leader().await;
    let learner = Some(serde_json::json!({"id": 7, "raft": "127.0.0.1:9"}));
    assert_eq!(
        status_of(&c, w, M::POST, l, "/v1/members", learner).await,
        403
    );
    let other = (0..3).find(|&i| i != l).unwrap();
    let path = format!("/v1/members/{other}");
    assert_eq!(status_of(&c, w, M::DELETE, l, &path, None).await, 403);
    assert_eq!(status_of(&c, a, M::DELETE, l, &path, None).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_https_and_members_sample_each_other_with_their_certificates() {
    let mut c = Cluster::new(3, &[]);
    c.enable_tls();
    let t = c.enable_tokens();
    c.launch().await;
    // Plain HTTP to the HTTPS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", c.apis[0]))
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
    // The dashboard's sampler on node 0 reads the other members' status over HTTPS,
    // authenticated by node 0's certificate (no token).
    let mut resp = c
        .client_with(Some(&t.read))
        .get(c.url(0, "/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut text = String::new();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
        let reachable = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .rfind(|v| v["members"].is_array())
            .map(|v| {
                v["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|m| m["reachable"] == true)
                    .count()
            });
        if reachable == Some(3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "members never all reachable: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotation_keeps_a_writing_client_running_without_errors() {
    let mut c = Cluster::new(3, &[]);
    c.enable_tls();
    let t = c.enable_tokens();
    c.launch().await;
    let l = c.leader().await;
    // A client writing without pause, over HTTPS with the write token.
    let client = raft_http_client::Client::with_config(
        &c.apis,
        raft_http_client::ClientConfig {
            token: Some(t.write.clone()),
            ..raft_http_client::ClientConfig::default()
        }
        .with_tls_files(&c.certs_dir().join("ca.pem"), None)
        .unwrap(),
    )
    .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut ok, mut errors) = (0u64, Vec::new());
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                match client
                    .put(&format!("rot/{}", n % 50), format!("v{n}"))
                    .await
                {
                    Ok(_) => ok += 1,
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (ok, errors)
        })
    };
    // New certificates for every node from the same CA, written over the files in use; a
    // new token; then SIGHUP everywhere.
    let certs = c.certs_dir();
    let fresh = c.dir.path().join("fresh");
    for i in 0..3 {
        std::fs::create_dir_all(&fresh).unwrap();
        std::fs::copy(certs.join("ca.pem"), fresh.join("ca.pem")).unwrap();
        std::fs::copy(certs.join("ca.key"), fresh.join("ca.key")).unwrap();
        common::run_ok(
            std::process::Command::new(common::binary())
                .args([
                    "certs",
                    "node",
                    &i.to_string(),
                    "--host",
                    "127.0.0.1",
                    "--dir",
                ])
                .arg(&fresh),
        );
        for ext in ["pem", "key"] {
            std::fs::copy(
                fresh.join(format!("node-{i}.{ext}")),
                certs.join(format!("node-{i}.{ext}")),
            )
            .unwrap();
        }
        std::fs::remove_dir_all(&fresh).unwrap();
    }
    let out = common::run_ok(
        std::process::Command::new(common::binary())
            .args(["tokens", "add", "late", "--role", "read", "--file"])
            .arg(&t.file),
    );
    let late = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(
        status_of(&c, Some(&late), reqwest::Method::GET, l, "/v1/status", None).await,
        401,
        "a token is not accepted before the file is reloaded"
    );
    for i in 0..3 {
        c.signal(i, "HUP");
    }
    // Reloaded: the new token works, and new connections see the new certificates.
    let deadline = Instant::now() + Duration::from_secs(30);
    while status_of(&c, Some(&late), reqwest::Method::GET, l, "/v1/status", None).await != 200 {
        assert!(
            Instant::now() < deadline,
            "the token file was never reloaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Each node reloads on its own signal: the one above answered, the others may still
    // be at it.
    for i in 0..3 {
        loop {
            let log = c.node_log(i);
            if log.contains("SIGHUP: reloaded the peer TLS material")
                && log.contains("SIGHUP: reloaded the API's TLS material")
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} never reloaded its TLS material: {log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let served = served_certificate(&c.apis[l], &certs).await;
    let expected = load_certs(&certs.join(format!("node-{l}.pem"))).unwrap();
    assert_eq!(
        served,
        expected[0].as_ref(),
        "the API still serves the old certificate"
    );
    // The Raft port too: a new peer connection gets the new certificate (the test dials as
    // another member, with that member's new certificate).
    let dialer = (l + 1) % 3;
    let peer_served = served_peer_certificate(&c.peers[l], &certs, dialer, l).await;
    assert_eq!(
        peer_served,
        expected[0].as_ref(),
        "the Raft port still serves the old certificate"
    );
    // The peers reconnect with the new material: writes keep committing.
    commits(&c, "after rotation").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, errors) = writer.await.unwrap();
    assert!(
        errors.is_empty(),
        "the writer saw errors ({ok} writes went through): {:?}",
        &errors[..errors.len().min(5)]
    );
    assert!(ok > 10, "only {ok} writes");
}

/// The certificate the API at `api` presents to a new connection (DER).
async fn served_certificate(api: &str, certs: &Path) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(load_roots(&certs.join("ca.pem")).unwrap())
        .with_no_client_auth();
    let host = api.rsplit_once(':').unwrap().0.to_string();
    let name = rustls::pki_types::ServerName::try_from(host).unwrap();
    presented_certificate(api, config, name).await
}

/// The certificate the server at `addr` presents when dialed with `config` as `name` (DER).
async fn presented_certificate(
    addr: &str,
    config: rustls::ClientConfig,
    name: rustls::pki_types::ServerName<'static>,
) -> Vec<u8> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

/// The certificate a member's Raft port presents to member `from` (mutual TLS, with
/// `from`'s certificate) dialing member `to`.
async fn served_peer_certificate(addr: &str, certs: &Path, from: usize, to: usize) -> Vec<u8> {
    let config = client_config(certs, &format!("node-{from}"));
    let name = rustls::pki_types::ServerName::try_from(peer_dns_name(to as u64)).unwrap();
    presented_certificate(addr, config, name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_required_client_certificates_a_client_needs_one_and_still_a_token() {
    // A client certificate, as an operator issues one: from the clients' own CA, which the
    // nodes are given.
    let certs_dir = tempfile::tempdir().unwrap();
    let client_certs = certs_dir.path().join("clients");
    common::run_ok(
        std::process::Command::new(common::binary())
            .args(["certs", "client", "alice", "--dir"])
            .arg(&client_certs),
    );
    // It is not the cluster's CA: a client's certificate must not chain to the CA whose
    // certificates name members.
    let cluster_ca = tempfile::tempdir().unwrap();
    common::run_ok(
        std::process::Command::new(common::binary())
            .args(["certs", "client", "bob", "--dir"])
            .arg(cluster_ca.path()),
    );
    assert!(!cluster_ca.path().join("ca.pem").exists());
    assert!(cluster_ca.path().join("client-ca.pem").exists());
    let client_ca = client_certs.join("client-ca.pem").display().to_string();
    let mut c = Cluster::new(
        3,
        &["--api-require-client-cert", "--api-client-ca", &client_ca],
    );
    c.enable_tls();
    let t = c.enable_tokens();
    let certs = c.certs_dir();
    for name in ["client-alice.pem", "client-alice.key"] {
        std::fs::copy(client_certs.join(name), certs.join(name)).unwrap();
    }
    let mut pem = std::fs::read(certs.join("client-alice.pem")).unwrap();
    pem.extend(std::fs::read(certs.join("client-alice.key")).unwrap());
    let ca = std::fs::read(certs.join("ca.pem")).unwrap();
    let alice = |token: Option<&str>| {
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .identity(reqwest::Identity::from_pem(&pem).unwrap());
        if let Some(t) = token {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {t}").parse().unwrap(),
            );
            b = b.default_headers(h);
        }
        b.build().unwrap()
    };
    c.http = alice(Some(&t.admin));
    c.launch().await;
    let l = c.leader().await;
    // Without a certificate there is no answer at all, token or not: the handshake fails.
    let bare = c
        .client_with(Some(&t.read))
        .get(c.url(l, "/healthz"))
        .send()
        .await;
    assert!(bare.is_err(), "{bare:?}");
    // A client certificate lets a client in, and grants nothing: the token decides.
    let status = |r: Result<reqwest::Response, reqwest::Error>| r.unwrap().status().as_u16();
    assert_eq!(
        status(alice(None).get(c.url(l, "/healthz")).send().await),
        200
    );
    assert_eq!(
        status(alice(None).get(c.url(l, "/v1/status")).send().await),
        401
    );
    let read = alice(Some(&t.read));
    assert_eq!(status(read.get(c.url(l, "/v1/status")).send().await), 200);
    let put = read
        .put(c.url(l, "/v1/kv/k"))
        .json(&serde_json::json!({"value": "v"}))
        .send()
        .await;
    assert_eq!(status(put), 403);
}

/// Every answer to `method path` with `body`, by `client`, from node `i`: the status.
async fn status_as(
    c: &Cluster,
    client: &reqwest::Client,
    method: reqwest::Method,
    i: usize,
    path: &str,
    body: Option<serde_json::Value>,
) -> u16 {
    let mut r = client.request(method, c.url(i, path));
    if let Some(b) = body {
        r = r.json(&b);
    }
    r.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_certificate_grants_members_reads_only_and_a_removed_or_unknown_node_nothing() {
    use reqwest::Method as M;
    let mut c = Cluster::new(3, &[]);
    c.enable_tls();
    let t = c.enable_tokens();
    c.launch().await;
    c.issue_cert(9);
    let l = c.leader().await;
    let gone = (l + 1) % 3;
    let stays = (l + 2) % 3;
    let as_gone = c.client_presenting(Some(&format!("node-{gone}")), None);
    let as_nine = c.client_presenting(Some("node-9"), None);
    let kv = Some(serde_json::json!({"value": "v"}));
    let itself = Some(serde_json::json!({"id": gone, "raft": c.peers[gone]}));
    // A member's certificate reads (what members need from each other), and no more.
    assert_eq!(
        status_as(&c, &as_gone, M::GET, stays, "/v1/status", None).await,
        200
    );
    assert_eq!(
        status_as(&c, &as_gone, M::PUT, l, "/v1/kv/k", kv.clone()).await,
        403
    );
    assert_eq!(
        status_as(&c, &as_gone, M::GET, l, "/v1/snapshot", None).await,
        403
    );
    assert_eq!(
        status_as(&c, &as_gone, M::POST, l, "/v1/leader/transfer", None).await,
        403
    );
    // Node `gone` is removed (by an admin token); from then on its certificate grants
    // nothing anywhere, and it cannot add itself back.
    let path = format!("/v1/members/{gone}");
    assert_eq!(status_as(&c, &c.http, M::DELETE, l, &path, None).await, 200);
    c.stop(gone);
    let deadline = Instant::now() + Duration::from_secs(30);
    while status_as(&c, &as_gone, M::GET, stays, "/v1/status", None).await != 401 {
        assert!(
            Instant::now() < deadline,
            "node {stays} still lets node {gone} read"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in [l, stays] {
        assert_eq!(
            status_as(&c, &as_gone, M::GET, i, "/v1/status", None).await,
            401
        );
        assert_eq!(
            status_as(&c, &as_gone, M::GET, i, "/v1/snapshot", None).await,
            401
        );
        assert_eq!(
            status_as(&c, &as_gone, M::PUT, i, "/v1/kv/k", kv.clone()).await,
            401
        );
        assert_eq!(
            status_as(&c, &as_gone, M::POST, i, "/v1/members", itself.clone()).await,
            401
        );
    }
    let refused = as_gone.get(c.url(l, "/v1/status")).send().await.unwrap();
    let body: serde_json::Value = refused.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("names node {gone}, which is not a member")),
        "{message}"
    );
    // A certificate of the cluster's CA for a node that never was a member: nothing.
    let to = Some(serde_json::json!({"to": stays}));
    assert_eq!(
        status_as(&c, &as_nine, M::POST, l, "/v1/leader/transfer", to).await,
        401
    );
    assert_eq!(
        status_as(&c, &as_nine, M::GET, l, "/v1/members", None).await,
        401
    );
    // The members left are two, as the admin made them.
    let members = c.get_json(l, "/v1/members").await;
    let ids: Vec<u64> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{members}");
    assert!(!ids.contains(&(gone as u64)));
    // An admin token with a removed node's certificate still works: the token decides.
    let admin_as_gone = c.client_presenting(Some(&format!("node-{gone}")), Some(&t.admin));
    assert_eq!(
        status_as(&c, &admin_as_gone, M::GET, l, "/v1/status", None).await,
        200
    );
}

/// Reads `resp`'s server-sent events until `done` holds for the text so far, or the
/// stream ends; the text. Fails past the deadline.
async fn read_events(resp: &mut reqwest::Response, done: impl Fn(&str) -> bool) -> (String, bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut text = String::new();
    loop {
        if done(&text) {
            return (text, false);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no end in sight: {text}");
        match tokio::time::timeout(left, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(Ok(None)) | Ok(Err(_)) => return (text, true),
            Err(_) => panic!("no end in sight: {text}"),
        }
    }
}

/// Waits until node `i` logged `what` at least `times` times.
async fn logged(c: &Cluster, i: usize, what: &str, times: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.node_log(i).matches(what).count() < times {
        assert!(Instant::now() < deadline, "node {i} never logged {what:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_when_their_token_is_revoked_and_see_nothing_written_after() {
    let mut c = Cluster::new(3, &[]);
    let t = c.enable_tokens();
    let temp = String::from_utf8(
        common::run_ok(
            std::process::Command::new(common::binary())
                .args(["tokens", "add", "contractor", "--role", "read", "--file"])
                .arg(&t.file),
        )
        .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    c.launch().await;
    let l = c.leader().await;
    let watcher = c.client_with(Some(&temp));
    let mut watch = watcher
        .get(c.url(l, "/v1/kv/watch?prefix="))
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status(), 200);
    let mut events = watcher.get(c.url(l, "/v1/events")).send().await.unwrap();
    assert_eq!(events.status(), 200);
    // A reader of another token keeps streaming.
    let mut kept = c
        .client_with(Some(&t.read))
        .get(c.url(l, "/v1/kv/watch?prefix="))
        .send()
        .await
        .unwrap();
    let put = |key: &'static str| {
        let http = c.http.clone();
        let url = c.url(l, &format!("/v1/kv/{key}"));
        async move {
            let r = http
                .put(url)
                .json(&serde_json::json!({"value": "v"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    put("before").await;
    let (seen, _) = read_events(&mut watch, |t| t.contains("\"before\"")).await;
    assert!(seen.contains("event: put"), "{seen}");
    // The token is removed and every node reloads its token file.
    common::run_ok(
        std::process::Command::new(common::binary())
            .args(["tokens", "remove", "contractor", "--file"])
            .arg(&t.file),
    );
    for i in 0..3 {
        c.signal(i, "HUP");
    }
    for i in 0..3 {
        logged(&c, i, "SIGHUP: reloaded the token file", 1).await;
    }
    put("after").await;
    let (rest, ended) = read_events(&mut watch, |_| false).await;
    assert!(ended);
    assert!(rest.contains("event: revoked"), "{rest}");
    assert!(rest.contains("contractor"), "{rest}");
    assert!(
        !rest.contains("\"after\""),
        "a revoked watch saw a later write: {rest}"
    );
    let (dash, ended) = read_events(&mut events, |_| false).await;
    assert!(ended && dash.contains("event: revoked"), "{dash}");
    // The other token's stream goes on and sees the write.
    let (other, ended) = read_events(&mut kept, |t| t.contains("\"after\"")).await;
    assert!(!ended, "{other}");
    // And the revoked token opens nothing new.
    let again = watcher.get(c.url(l, "/v1/kv/watch")).send().await.unwrap();
    assert_eq!(again.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_at_its_longest_life_and_a_client_resumes_it_without_a_gap() {
    let c = Cluster::start_with(1, &["--max-stream-lifetime-ms", "700"]).await;
    let mut resp = c
        .http
        .get(c.url(0, "/v1/log/stream?from=1"))
        .send()
        .await
        .unwrap();
    let t0 = Instant::now();
    let (text, ended) = read_events(&mut resp, |_| false).await;
    assert!(ended && text.contains("event: closing"), "{text}");
    assert!(text.contains("\"lifetime\""), "{text}");
    assert!(
        t0.elapsed() >= Duration::from_millis(600),
        "{:?}",
        t0.elapsed()
    );
    // The typed client follows the log across those ends, missing nothing.
    let client = raft_http_client::Client::new([c.apis[0].clone()]).unwrap();
    let mut follow = std::pin::pin!(client.log_stream(Some(1)));
    let mut written = Vec::new();
    let mut seen = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        let index = client
            .append(format!("e{}", written.len()))
            .await
            .unwrap()
            .index;
        written.push(index);
        while seen.last() != Some(&index) {
            let e = tokio::time::timeout(Duration::from_secs(10), follow.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if let raft_http_client::Event::Entry(e) = e {
                if e.kind == "entry" {
                    seen.push(e.index);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_cannot_take_every_stream_slot_and_admins_keep_a_reserve() {
    let mut c = Cluster::new(
        1,
        &[
            "--max-watchers",
            "8",
            "--stream-reserve",
            "2",
            "--max-streams-per-token",
            "4",
        ],
    );
    let t = c.enable_tokens();
    c.launch().await;
    let open = |token: &str| {
        let client = c.client_with(Some(token));
        let url = c.url(0, "/v1/kv/watch");
        async move { client.get(url).send().await.unwrap() }
    };
    let mut held = Vec::new();
    for _ in 0..4 {
        let r = open(&t.read).await;
        assert_eq!(r.status(), 200);
        held.push(r);
    }
    let refused = open(&t.read).await;
    assert_eq!(refused.status(), 429);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_watchers");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-streams-per-token"),
        "{body}"
    );
    // Another token takes what is left but the reserve.
    for _ in 0..2 {
        let r = open(&t.write).await;
        assert_eq!(r.status(), 200);
        held.push(r);
    }
    let reserved = open(&t.write).await;
    assert_eq!(reserved.status(), 429);
    let body: serde_json::Value = reserved.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--stream-reserve"),
        "{body}"
    );
    // The admin still gets in: its dashboard and its watch.
    let dash = c
        .client_with(Some(&t.admin))
        .get(c.url(0, "/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(dash.status(), 200);
    assert_eq!(open(&t.admin).await.status(), 200);
    // A slot given back is free again.
    held.truncate(3);
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if open(&t.read).await.status() == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
}

/// `POST /v1/log` to node 0 with `headers` and `body`: the status and the error code.
async fn post_log(c: &Cluster, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut r = c.http.post(c.url(0, "/v1/log")).body(body.to_string());
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_from_another_sites_pages_change_nothing_and_bodies_must_be_json() {
    // An open cluster: no token is needed, so only the origin checks stand in the way.
    let c = Cluster::start_with(1, &["--api-allowed-origins", "https://admin.example:8443"]).await;
    let json = ("content-type", "application/json");
    let entry = r#"{"entry": "x"}"#;
    // What a page elsewhere can make a browser send: refused.
    let evil = ("origin", "http://evil.example");
    assert_eq!(
        post_log(&c, &[json, evil], entry).await,
        (403, "cross_origin".into())
    );
    let form = ("content-type", "application/x-www-form-urlencoded");
    assert_eq!(
        post_log(&c, &[form, evil], entry).await,
        (403, "cross_origin".into())
    );
    assert_eq!(
        post_log(&c, &[("origin", "null"), json], entry).await,
        (403, "cross_origin".into())
    );
    assert_eq!(
        post_log(&c, &[("sec-fetch-site", "cross-site"), json], entry).await,
        (403, "cross_origin".into())
    );
    let text = ("content-type", "text/plain");
    assert_eq!(
        post_log(&c, &[text], entry).await,
        (415, "unsupported_media_type".into())
    );
    assert_eq!(
        post_log(
            &c,
            &[("content-type", "multipart/form-data; boundary=b")],
            entry
        )
        .await,
        (415, "unsupported_media_type".into())
    );
    // A form from a browser, even on this node's own page: not JSON.
    let own = format!("http://{}", c.apis[0]);
    let own = own.as_str();
    assert_eq!(
        post_log(&c, &[form, ("origin", own)], entry).await,
        (415, "unsupported_media_type".into())
    );
    // Membership changes are guarded the same way.
    let add = c
        .http
        .post(c.url(0, "/v1/members"))
        .header("origin", "http://evil.example")
        .json(&serde_json::json!({"id": 7, "raft": "127.0.0.1:9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(add.status(), 403);
    // This node's own pages, the allowed origin, and command-line clients (curl -d sends
    // a form type and no Origin) are served.
    assert_eq!(post_log(&c, &[json, ("origin", own)], entry).await.0, 201);
    assert_eq!(
        post_log(&c, &[json, ("origin", "https://admin.example:8443")], entry)
            .await
            .0,
        201
    );
    assert_eq!(post_log(&c, &[form], entry).await.0, 201);
    assert_eq!(post_log(&c, &[], entry).await.0, 201);
    // Only the four accepted writes are in the log.
    let log = c.get_json(0, "/v1/log?from=1").await;
    let written = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "entry")
        .count();
    assert_eq!(written, 4, "{log}");
    let members = c.get_json(0, "/v1/members").await;
    assert_eq!(members.as_array().unwrap().len(), 1, "{members}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_slow_tls_handshakes_from_one_address_leave_other_clients_served() {
    // More slow handshakes than the node takes connections.
    let mut c = Cluster::new(1, &["--http-max-connections", "1000"]);
    c.enable_tls();
    c.launch().await;
    // One client (from 127.0.0.2) opens connection after connection and never says hello.
    let target: SocketAddr = c.apis[0].parse().unwrap();
    let mut slow = Vec::new();
    for _ in 0..1500 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        if let Ok(s) = socket.connect(target).await {
            slow.push(s);
        }
    }
    // Everyone else (from 127.0.0.1), each request on a new connection with its own
    // handshake, is served.
    for i in 0..8 {
        let fresh = c.client_with(None);
        let r = fresh.get(c.url(0, "/healthz")).send().await;
        assert!(
            r.as_ref().is_ok_and(|r| r.status() == 200),
            "request {i} failed: {r:?}"
        );
    }
    let over = c
        .metric(0, "raft_http_tls_handshakes_over_limit_total")
        .await;
    assert!(over >= 1400.0, "{over} handshakes refused over the limit");
    drop(slow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_that_fails_to_reload_is_reported_until_it_is_fixed() {
    let mut c = Cluster::new(1, &[]);
    let t = c.enable_tokens();
    c.launch().await;
    // Tokens over plain HTTP: said at start.
    assert!(
        c.node_log(0).contains("tokens travel in the clear"),
        "{}",
        c.node_log(0)
    );
    let good = std::fs::read(&t.file).unwrap();
    std::fs::write(&t.file, b"{\"tokens\": [").unwrap();
    c.signal(0, "HUP");
    logged(&c, 0, "SIGHUP: the token file did not load", 1).await;
    let status = c.status(0).await;
    assert!(
        status["access"]["token_reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("not valid")),
        "{status}"
    );
    assert_eq!(status["access"]["token_reload_failures"], 1);
    assert_eq!(c.metric(0, "raft_http_token_file_stale").await, 1.0);
    assert_eq!(
        c.metric(0, "raft_http_token_reload_failures_total").await,
        1.0
    );
    // The node keeps saying so.
    logged(&c, 0, "the token file still does not load", 1).await;
    // Fixed and reloaded: all clear.
    std::fs::write(&t.file, good).unwrap();
    c.signal(0, "HUP");
    logged(&c, 0, "SIGHUP: reloaded the token file", 1).await;
    let status = c.status(0).await;
    assert!(status["access"]["token_reload_error"].is_null(), "{status}");
    assert_eq!(c.metric(0, "raft_http_token_file_stale").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_api_address_must_be_a_host_and_port() {
    let c = Cluster::start(1).await;
    for api in [
        "http://127.0.0.1:9",
        "127.0.0.1:9/\"><script>x()</script>",
        "a\r\nb:1",
        "x",
    ] {
        let r = c
            .http
            .post(c.url(0, "/v1/members"))
            .json(&serde_json::json!({"id": 5, "raft": "127.0.0.1:9", "api": api}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{api:?}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("host:port"),
            "{body}"
        );
    }
    let members = c.get_json(0, "/v1/members").await;
    assert_eq!(members.as_array().unwrap().len(), 1, "{members}");
}

/// Every path under `dir` whose mode is not `0700` (directories) or `0600` (files).
fn loose_paths(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        if mode != want {
            out.push(format!("{} {mode:o}", p.display()));
        }
        if meta.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_umask_000_every_file_a_node_or_an_operator_makes_is_private() {
    let mut c = Cluster::new(
        3,
        &["--snapshot-entries", "50", "--snapshot-tail-entries", "5"],
    );
    // Certificates made with `httpraft certs` under umask 000.
    let certs = c.certs_dir();
    let umask_000 = |args: &[&str]| {
        let mut sh = std::process::Command::new("sh");
        sh.arg("-c")
            .arg("umask 000 && exec \"$0\" \"$@\"")
            .arg(common::binary())
            .args(args);
        common::run_ok(&mut sh);
    };
    let certs_arg = certs.display().to_string();
    umask_000(&["certs", "init", "--dir", &certs_arg]);
    umask_000(&["certs", "client", "ops", "--dir", &certs_arg]);
    assert_eq!(loose_paths(&certs), Vec::<String>::new());
    std::fs::remove_dir_all(&certs).unwrap();
    c.enable_tls();
    c.set_umask(0o000);
    c.launch().await;
    for i in 0..120 {
        commits(&c, &format!("e{i}")).await;
    }
    // Snapshots were taken (so their files exist too).
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.status(0).await["snapshot_index"].as_u64().unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "no snapshot was taken");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..3 {
        let loose = loose_paths(&c.data_dir(i));
        assert!(loose.is_empty(), "node {i}: {loose:?}");
    }
    // A backup saved by raftctl under umask 000 is its owner's only.
    let raftctl = common::build_with("raftctl", &[]);
    let backup = c.dir.path().join("backup.snap");
    let mut sh = std::process::Command::new("sh");
    sh.arg("-c")
        .arg("umask 000 && exec \"$0\" \"$@\"")
        .arg(&raftctl)
        .args(["--endpoints", &c.apis.join(",")])
        .arg("--cacert")
        .arg(c.certs_dir().join("ca.pem"))
        .args(["snapshot", "save"])
        .arg(&backup);
    common::run_ok(&mut sh);
    assert_eq!(loose_paths(&backup), Vec::<String>::new());
    // A data directory an older version left open to everyone is closed at the next start.
    use std::os::unix::fs::PermissionsExt;
    c.stop(2);
    let dir = c.data_dir(2);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(dir.join("app.redb"), std::fs::Permissions::from_mode(0o666)).unwrap();
    c.set_umask(0o022);
    c.spawn(2);
    c.wait_ready().await;
    assert_eq!(loose_paths(&dir), Vec::<String>::new());
}
