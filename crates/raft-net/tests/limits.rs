//! The transport's limits: handshakes in progress, one live connection per peer, idle
//! connections, and queues bounded in bytes on both sides.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use raft_core::{Entry, Message, MessageBody, NodeId};
use raft_net::{FrameCodec, Hello, HelloReply, NetConfig, Transport, HANDSHAKE_FRAME_BYTES};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

const CLUSTER: &str = "limits-test";

fn pair(
    tweak: impl Fn(&mut NetConfig),
) -> (
    Transport,
    raft_net::Inbound,
    Transport,
    raft_net::Inbound,
    SocketAddr,
) {
    let l1 = TcpListener::bind("127.0.0.1:0").unwrap();
    let l2 = TcpListener::bind("127.0.0.1:0").unwrap();
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let mut c1 = NetConfig::new(1, CLUSTER, a1, BTreeMap::from([(2, a2)]));
    let mut c2 = NetConfig::new(2, CLUSTER, a2, BTreeMap::from([(1, a1)]));
    tweak(&mut c1);
    tweak(&mut c2);
    let (t1, i1) = Transport::start_on(c1, l1).unwrap();
    let (t2, i2) = Transport::start_on(c2, l2).unwrap();
    (t1, i1, t2, i2, a2)
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

fn big(from: NodeId, to: NodeId, term: u64, bytes: usize) -> Message {
    Message {
        from,
        to,
        term,
        body: MessageBody::AppendEntries {
            prev_index: 0,
            prev_term: 0,
            entries: vec![Entry::normal(term, 1, vec![7u8; bytes])],
            commit: 0,
        },
    }
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < Duration::from_secs(20), "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Completes a handshake as node 1 toward `addr`.
async fn handshake_as_1(addr: SocketAddr) -> Framed<TcpStream, FrameCodec> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut framed = Framed::new(stream, FrameCodec::new(HANDSHAKE_FRAME_BYTES));
    let hello = Hello::new(CLUSTER, 1, 2);
    framed
        .send(Bytes::from(postcard::to_allocvec(&hello).unwrap()))
        .await
        .unwrap();
    let reply = framed.next().await.unwrap().unwrap();
    assert_eq!(
        postcard::from_bytes::<HelloReply>(&reply).unwrap(),
        HelloReply::Welcome
    );
    framed
}

async fn closed_by_peer(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// A connection to `addr` from the loopback address `from` (any 127.x.y.z works on Linux).
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("a loopback source address");
    socket.connect(addr).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_past_the_handshake_limits_are_closed_at_once_and_peers_still_get_in() {
    let (t1, _i1, t2, mut i2, a2) = pair(|c| {
        c.max_pending_handshakes = 4;
        c.max_handshakes_per_ip = 3;
        c.handshake_timeout = Duration::from_secs(30);
    });
    // Three silent strangers from one address hold that address's share...
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(connect_from([127, 0, 0, 2], a2).await);
    }
    let mut fourth = connect_from([127, 0, 0, 2], a2).await;
    assert!(closed_by_peer(&mut fourth, Duration::from_secs(5)).await);
    // ...one from another address fills the strangers' slots...
    silent.push(connect_from([127, 0, 0, 3], a2).await);
    wait_until("the per-address refusal counted", || {
        t2.listener_stats().over_limit >= 1
    })
    .await;
    let mut fifth = connect_from([127, 0, 0, 4], a2).await;
    assert!(closed_by_peer(&mut fifth, Duration::from_secs(5)).await);
    wait_until("counted", || t2.listener_stats().over_limit >= 2).await;
    // ...and the real peer, from its own address, still gets in.
    let start = Instant::now();
    loop {
        t1.send(heartbeat(1, 2, 7));
        if let Ok(Some((1, m))) = tokio::time::timeout(Duration::from_millis(200), i2.recv()).await
        {
            assert_eq!(m.term, 7);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "peer never got in"
        );
    }
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_connection_from_a_peer_replaces_its_old_one() {
    let (_t1, _i1, t2, mut i2, a2) = pair(|_| {});
    let mut first = handshake_as_1(a2).await;
    let mut second = handshake_as_1(a2).await;
    // The first is closed; the second carries messages.
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(5), first.next()).await,
        Ok(None) | Ok(Some(Err(_)))
    ));
    assert_eq!(t2.listener_stats().replaced, 1);
    let frame = raft_net::encode_message(heartbeat(1, 2, 9)).unwrap();
    second.send(frame).await.unwrap();
    let (from, m) = tokio::time::timeout(Duration::from_secs(5), i2.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((from, m.term), (1, 9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_and_the_peer_reconnects_at_its_next_message() {
    let (t1, _i1, t2, mut i2, _) = pair(|c| c.idle_timeout = Duration::from_millis(300));
    t1.send(heartbeat(1, 2, 1));
    assert_eq!(i2.recv().await.unwrap().1.term, 1);
    wait_until("idle connection closed", || {
        t2.listener_stats().idle_closed >= 1
    })
    .await;
    // A message racing the close may be lost (Raft resends); the next ones get through
    // on a new connection.
    let start = Instant::now();
    loop {
        t1.send(heartbeat(1, 2, 2));
        if let Ok(Some((_, m))) = tokio::time::timeout(Duration::from_millis(200), i2.recv()).await
        {
            assert_eq!(m.term, 2);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never reconnected"
        );
    }
    assert!(t1.stats()[&2].connects >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_waits_for_the_node_is_bounded_in_bytes() {
    let (t1, _i1, t2, mut i2, _) = pair(|c| {
        c.max_frame_bytes = 1 << 20;
        c.recv_queue_bytes = 2 << 20;
    });
    for term in 1..=20 {
        t1.send(big(1, 2, term, 400 << 10));
    }
    // The node does not read: at most the byte budget (plus the frame being decoded)
    // is taken in; the rest waits in TCP and in the sender's queue.
    wait_until("some messages taken in", || {
        t2.stats()[&1].msgs_received >= 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let taken = t2.stats()[&1].msgs_received;
    // (Waiting is the point here: nothing may arrive however long the node does not read.)
    assert!(
        taken <= 6,
        "{taken} messages of 400 KiB taken into a 2 MiB budget"
    );
    // Reading frees the budget: everything arrives, in order.
    for term in 1..=20 {
        let (_, m) = tokio::time::timeout(Duration::from_secs(10), i2.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.term, term);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_send_queue_is_bounded_in_bytes() {
    // Peer 2 does not exist: everything queues.
    let l1 = TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut c = NetConfig::new(
        1,
        CLUSTER,
        l1.local_addr().unwrap(),
        BTreeMap::from([(2, nowhere)]),
    );
    c.send_queue_bytes = 3 << 20;
    let (t1, _i1) = Transport::start_on(c, l1).unwrap();
    let sent: Vec<bool> = (1..=8)
        .map(|t| t1.send(big(1, 2, t, (1 << 20) - 100)))
        .collect();
    let accepted = sent.iter().filter(|&&ok| ok).count();
    assert!(sent[0], "a message always fits an empty queue");
    // Three fit the bound; a fourth if the writer already took the first out to connect.
    assert!(
        (3..=4).contains(&accepted),
        "about 3 MiB of 1 MiB messages accepted: {sent:?}"
    );
    assert_eq!(t1.stats()[&2].msgs_dropped, (8 - accepted) as u64);
}
