//! Mutual TLS between members: a member's certificate binds its identity, and nothing but a
//! member of the cluster's CA, speaking as the node its certificate names, gets a message
//! through.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use raft_core::{Message, MessageBody, NodeId};
use raft_net::certs::{Ca, Issued, Validity};
use raft_net::tls::{load_certs, load_key, load_roots, peer_dns_name, provider};
use raft_net::{
    encode_message, FrameCodec, Hello, HelloReply, Inbound, NetConfig, PeerTls, TlsFiles,
    Transport, HANDSHAKE_FRAME_BYTES,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

const CLUSTER: &str = "tls-test";

/// A CA, with the certificate files of nodes 1, 2 and 3 written under a directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate(CLUSTER, Validity::days(1)).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
        let pki = Pki { dir, ca };
        for id in 1..=3 {
            let n = pki
                .ca
                .issue_node(CLUSTER, id, &[], Validity::days(1))
                .unwrap();
            pki.write(&format!("node-{id}"), &n);
        }
        pki
    }

    fn write(&self, name: &str, issued: &Issued) -> (PathBuf, PathBuf) {
        let cert = self.dir.path().join(format!("{name}.pem"));
        let key = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&cert, &issued.cert_pem).unwrap();
        std::fs::write(&key, &issued.key_pem).unwrap();
        (cert, key)
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn files(&self, name: &str) -> TlsFiles {
        TlsFiles {
            cert: self.dir.path().join(format!("{name}.pem")),
            key: self.dir.path().join(format!("{name}.key")),
            ca: self.ca_file(),
        }
    }

    fn tls(&self, id: NodeId) -> Arc<PeerTls> {
        Arc::new(PeerTls::load(CLUSTER, id, self.files(&format!("node-{id}"))).unwrap())
    }
}

/// Transports for the nodes `ids`, all with TLS, each knowing the others.
fn start(pki: &Pki, ids: &[NodeId]) -> Vec<(Transport, Inbound, SocketAddr)> {
    let listeners: Vec<TcpListener> = ids
        .iter()
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs: BTreeMap<NodeId, SocketAddr> = ids
        .iter()
        .zip(&listeners)
        .map(|(id, l)| (*id, l.local_addr().unwrap()))
        .collect();
    ids.iter()
        .zip(listeners)
        .map(|(id, l)| {
            let mut peers = addrs.clone();
            peers.remove(id);
            let mut cfg = NetConfig::new(*id, CLUSTER, addrs[id], peers);
            cfg.tls = Some(pki.tls(*id));
            let (t, i) = Transport::start_on(cfg, l).unwrap();
            (t, i, addrs[id])
        })
        .collect()
}

fn heartbeat(from: NodeId, to: NodeId, term: u64) -> Message {
    Message {
        from,
        to,
        term,
        body: MessageBody::Heartbeat {
            commit: 0,
            read_seq: 0,
        },
    }
}

/// The next message within `limit`, if any.
async fn recv_within(inbound: &mut Inbound, limit: Duration) -> Option<(NodeId, Message)> {
    tokio::time::timeout(limit, inbound.recv())
        .await
        .ok()
        .flatten()
}

/// Dials `addr` with TLS as the holder of `cert`/`key`, trusting `ca` for the server, which
/// must present `node-<to>.raft`; then says hello as node `from` and, if welcomed, sends a
/// heartbeat of term 999. Whether the hello was welcomed.
async fn speak_as(
    addr: SocketAddr,
    (cert, key): (&Path, &Path),
    ca: &Path,
    from: NodeId,
    to: NodeId,
) -> bool {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(load_roots(ca).unwrap())
        .with_client_auth_cert(load_certs(cert).unwrap(), load_key(key).unwrap())
        .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(peer_dns_name(to)).unwrap();
    let Ok(tls) = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
    else {
        return false;
    };
    hello_then_heartbeat(tls, from, to).await
}

async fn hello_then_heartbeat(
    io: impl AsyncRead + AsyncWrite + Unpin,
    from: NodeId,
    to: NodeId,
) -> bool {
    let mut framed = Framed::new(io, FrameCodec::new(HANDSHAKE_FRAME_BYTES));
    let hello = Hello::new(CLUSTER, from, to);
    if framed
        .send(Bytes::from(postcard::to_allocvec(&hello).unwrap()))
        .await
        .is_err()
    {
        return false;
    }
    let welcomed = match tokio::time::timeout(Duration::from_secs(5), framed.next()).await {
        Ok(Some(Ok(reply))) => {
            postcard::from_bytes::<HelloReply>(&reply).ok() == Some(HelloReply::Welcome)
        }
        _ => false,
    };
    // Sent either way: a refused connection must not deliver it.
    let _ = framed
        .send(encode_message(heartbeat(from, to, 999)).unwrap())
        .await;
    welcomed
}

/// Asserts that node `to` receives no message of term 999 (the attacker's) for a while.
async fn nothing_forged_arrives(inbound: &mut Inbound) {
    while let Some((_, m)) = recv_within(inbound, Duration::from_millis(300)).await {
        assert_ne!(
            m.term, 999,
            "a refused dialer's message was delivered: {m:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_with_certificates_of_the_cluster_exchange_messages() {
    let pki = Pki::new();
    let mut nodes = start(&pki, &[1, 2]);
    assert!(nodes[0].0.send(heartbeat(1, 2, 5)));
    let (from, m) = recv_within(&mut nodes[1].1, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!((from, m.term), (1, 5));
    assert!(nodes[1].0.send(heartbeat(2, 1, 6)));
    let (from, m) = recv_within(&mut nodes[0].1, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!((from, m.term), (2, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_of_a_certificate_is_welcomed_as_the_node_it_names() {
    // The control for the refusals below: the same dialer, with node 1's own files.
    let pki = Pki::new();
    let mut nodes = start(&pki, &[1, 2]);
    let f = pki.files("node-1");
    assert!(speak_as(nodes[1].2, (&f.cert, &f.key), &pki.ca_file(), 1, 2).await);
    let (from, m) = recv_within(&mut nodes[1].1, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!((from, m.term), (1, 999));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_presenting_its_certificate_cannot_speak_as_another_member() {
    let pki = Pki::new();
    let mut nodes = start(&pki, &[1, 2, 3]);
    let refused_before = nodes[1].0.listener_stats().refused;
    // Node 3's genuine certificate, claiming to be node 1.
    let f = pki.files("node-3");
    assert!(!speak_as(nodes[1].2, (&f.cert, &f.key), &pki.ca_file(), 1, 2).await);
    nothing_forged_arrives(&mut nodes[1].1).await;
    assert!(nodes[1].0.listener_stats().refused > refused_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let mut nodes = start(&pki, &[1, 2]);
    let other = Ca::generate(CLUSTER, Validity::days(1)).unwrap();
    let forged = other
        .issue_node(CLUSTER, 1, &[], Validity::days(1))
        .unwrap();
    let (cert, key) = pki.write("forged-1", &forged);
    assert!(!speak_as(nodes[1].2, (&cert, &key), &pki.ca_file(), 1, 2).await);
    nothing_forged_arrives(&mut nodes[1].1).await;
    assert!(nodes[1].0.listener_stats().refused >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused() {
    let pki = Pki::new();
    let mut nodes = start(&pki, &[1, 2]);
    let day = Duration::from_secs(86_400);
    let expired = Validity {
        not_before: SystemTime::now() - 3 * day,
        not_after: SystemTime::now() - day,
    };
    let old = pki.ca.issue_node(CLUSTER, 1, &[], expired).unwrap();
    let (cert, key) = pki.write("expired-1", &old);
    assert!(!speak_as(nodes[1].2, (&cert, &key), &pki.ca_file(), 1, 2).await);
    nothing_forged_arrives(&mut nodes[1].1).await;
    assert!(nodes[1].0.listener_stats().refused >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_dialer_is_refused_before_any_message_is_read() {
    let pki = Pki::new();
    let mut nodes = start(&pki, &[1, 2]);
    let tcp = TcpStream::connect(nodes[1].2).await.unwrap();
    assert!(!hello_then_heartbeat(tcp, 1, 2).await);
    nothing_forged_arrives(&mut nodes[1].1).await;
    assert!(nodes[1].0.listener_stats().refused >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialer_refuses_a_peer_whose_certificate_names_another_node() {
    let pki = Pki::new();
    // Node 3 listens where node 1 believes node 2 is.
    let mut three = start(&pki, &[3]);
    let l1 = TcpListener::bind("127.0.0.1:0").unwrap();
    let a1 = l1.local_addr().unwrap();
    let mut cfg = NetConfig::new(1, CLUSTER, a1, BTreeMap::from([(2, three[0].2)]));
    cfg.tls = Some(pki.tls(1));
    let (one, _inbound) = Transport::start_on(cfg, l1).unwrap();
    assert!(one.send(heartbeat(1, 2, 999)));
    nothing_forged_arrives(&mut three[0].1).await;
    let stats = one.stats();
    let failures = stats.get(&2).map_or(0, |s| s.connect_failures);
    assert!(failures >= 1, "{stats:?}");
}

#[test]
fn a_certificate_that_names_another_node_is_not_loaded() {
    let pki = Pki::new();
    let err = PeerTls::load(CLUSTER, 1, pki.files("node-2")).unwrap_err();
    assert!(err.to_string().contains("does not name node 1"), "{err}");
    let err = PeerTls::load("another-cluster", 2, pki.files("node-2")).unwrap_err();
    assert!(err.to_string().contains("httpraft certs node 2"), "{err}");
}

/// The member a `ServerTls` (the HTTP API's TLS) names for a client presenting `cert`/`key`.
async fn api_member(
    server: Arc<raft_net::ServerTls>,
    ca: &Path,
    (cert, key): (&Path, &Path),
) -> Option<NodeId> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        server.accept(tcp).await.map(|(_, member)| member).unwrap()
    });
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(load_roots(ca).unwrap())
        .with_client_auth_cert(load_certs(cert).unwrap(), load_key(key).unwrap())
        .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(peer_dns_name(1)).unwrap();
    let _tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    accepted.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ca_signs_clients_but_cannot_mint_a_member_of_the_api() {
    let pki = Pki::new();
    // The extra CA the API accepts client certificates of.
    let clients = Ca::generate("clients", Validity::days(1)).unwrap();
    let client_ca = pki.dir.path().join("clients-ca.pem");
    std::fs::write(&client_ca, clients.cert_pem()).unwrap();
    let server = Arc::new(
        raft_net::ServerTls::load(CLUSTER, pki.files("node-1"), Some(client_ca), true).unwrap(),
    );
    // A member's certificate names its member.
    let member = pki.write(
        "member-2",
        &pki.ca
            .issue_node(CLUSTER, 2, &[], Validity::days(1))
            .unwrap(),
    );
    let (c, k) = (member.0.as_path(), member.1.as_path());
    assert_eq!(
        api_member(server.clone(), &pki.ca_file(), (c, k)).await,
        Some(2)
    );
    // The client CA's certificates are let in, as clients only, even one that claims a
    // member's identity.
    let plain = pki.write(
        "client",
        &clients.issue_client("alice", Validity::days(1)).unwrap(),
    );
    let (c, k) = (plain.0.as_path(), plain.1.as_path());
    assert_eq!(
        api_member(server.clone(), &pki.ca_file(), (c, k)).await,
        None
    );
    let forged = pki.write(
        "forged-2",
        &clients
            .issue_node(CLUSTER, 2, &[], Validity::days(1))
            .unwrap(),
    );
    let (c, k) = (forged.0.as_path(), forged.1.as_path());
    assert_eq!(
        api_member(server, &pki.ca_file(), (c, k)).await,
        None,
        "the client CA minted member 2"
    );
}
