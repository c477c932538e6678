//! HTTP/2 on the API port: cleartext with prior knowledge (h2c) beside HTTP/1.1, and chosen
//! by ALPN over HTTPS; one connection carries many concurrent requests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::Cluster;
use raft_http_client::{Client, ClientConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cleartext_http2_connection_carries_many_concurrent_appends() {
    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let url = c.url(leader, "/v1/status");

    // The same port speaks both: HTTP/2 to a client that knows it, HTTP/1.1 otherwise.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2.get(&url).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let r = c.http.get(&url).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 200);

    // 64 appends at once through one client (one connection per endpoint).
    let cfg = ClientConfig {
        http2: true,
        retries: 0,
        ..ClientConfig::default()
    };
    let client = Client::with_config([c.apis[leader].clone()], cfg).unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.append(&format!("h2 entry {i}")).await })
        })
        .collect();
    let mut indexes = BTreeSet::new();
    for t in tasks {
        indexes.insert(t.await.unwrap().unwrap().index);
    }
    assert_eq!(indexes.len(), 64, "every append got its own index");
    let texts = c.log_texts(leader).await.unwrap();
    for i in 0..64 {
        assert!(
            texts.contains(&format!("h2 entry {i}")),
            "entry {i} missing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_clients_that_offer_http2_get_it_by_alpn() {
    let c = Cluster::start_tls(3).await;
    let leader = c.leader().await;
    let r = c
        .http
        .get(c.url(leader, "/v1/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let ca = std::fs::read(c.certs_dir().join("ca.pem")).unwrap();
    let h1 = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .http1_only()
        .build()
        .unwrap();
    let r = h1.get(c.url(leader, "/v1/status")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 200);
}
