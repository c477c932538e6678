//! Transports on loopback: ordered, lossless delivery while queues have room; reconnection
//! to a restarted peer; refusal of bad peers and bad bytes; large messages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use raft_core::{Entry, Message, MessageBody, NodeId, PROTOCOL_VERSION};
use raft_net::{Hello, HelloReply, Inbound, NetConfig, Transport, REFUSED};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

const CLUSTER: &str = "net-test";

fn listeners(n: u64) -> (Vec<TcpListener>, BTreeMap<NodeId, SocketAddr>) {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs = ls
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.local_addr().unwrap()))
        .collect();
    (ls, addrs)
}

fn config(id: NodeId, addrs: &BTreeMap<NodeId, SocketAddr>) -> NetConfig {
    let peers = addrs
        .iter()
        .filter(|(&p, _)| p != id)
        .map(|(&p, &a)| (p, a))
        .collect();
    let mut c = NetConfig::new(id, CLUSTER, addrs[&id], peers);
    c.backoff_max = Duration::from_millis(200);
    c
}

fn start_all(
    n: u64,
    tweak: impl Fn(&mut NetConfig),
) -> (Vec<Transport>, Vec<Inbound>, BTreeMap<NodeId, SocketAddr>) {
    let (ls, addrs) = listeners(n);
    let mut ts = Vec::new();
    let mut ins = Vec::new();
    for (i, l) in ls.into_iter().enumerate() {
        let mut c = config(i as u64 + 1, &addrs);
        tweak(&mut c);
        let (t, inbound) = Transport::start_on(c, l).unwrap();
        ts.push(t);
        ins.push(inbound);
    }
    (ts, ins, addrs)
}

fn numbered(from: NodeId, to: NodeId, seq: u64) -> Message {
    Message {
        from,
        to,
        term: seq,
        body: MessageBody::Heartbeat {
            commit: seq,
            read_seq: 0,
        },
    }
}

async fn recv_within(inbound: &mut Inbound, limit: Duration) -> Option<(NodeId, Message)> {
    tokio::time::timeout(limit, inbound.recv())
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_transports_exchange_100k_messages_in_order_without_loss() {
    const N: u64 = 100_000;
    let (ts, mut ins, _) = start_all(2, |c| c.send_queue = N as usize);
    for seq in 1..=N {
        assert!(ts[0].send(numbered(1, 2, seq)), "queue has room");
    }
    for seq in 1..=N {
        let (from, m) = recv_within(&mut ins[1], Duration::from_secs(30))
            .await
            .expect("message arrives");
        assert_eq!((from, m.term), (1, seq), "order is kept");
    }
    let s = ts[0].stats()[&2];
    assert_eq!((s.msgs_sent, s.msgs_dropped), (N, 0));
    assert_eq!(ts[1].stats()[&1].msgs_received, N);
    assert_eq!(s.bytes_sent, ts[1].stats()[&1].bytes_received);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_transports_exchange_messages_in_order_on_every_link() {
    const N: u64 = 34_000; // over 100,000 messages in all
    let (ts, ins, _) = start_all(3, |c| c.send_queue = N as usize);
    for (i, t) in ts.iter().enumerate() {
        let from = i as u64 + 1;
        for seq in 1..=N {
            for to in (1..=3).filter(|&to| to != from) {
                assert!(t.send(numbered(from, to, seq)));
            }
        }
    }
    for (i, mut inbound) in ins.into_iter().enumerate() {
        let me = i as u64 + 1;
        let mut next: BTreeMap<NodeId, u64> =
            (1..=3).filter(|&p| p != me).map(|p| (p, 1)).collect();
        for _ in 0..2 * N {
            let (from, m) = recv_within(&mut inbound, Duration::from_secs(30))
                .await
                .expect("arrives");
            assert_eq!(m.to, me);
            let want = next.get_mut(&from).unwrap();
            assert_eq!(m.term, *want, "order from {from} to {me}");
            *want += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_is_reconnected_and_receives_later_messages() {
    let (ts, mut ins, addrs) = start_all(2, |_| {});
    assert!(ts[0].send(numbered(1, 2, 1)));
    assert_eq!(
        recv_within(&mut ins[1], Duration::from_secs(10))
            .await
            .unwrap()
            .1
            .term,
        1
    );

    // Node 2 goes away and comes back on the same address.
    let mut ts = ts;
    let old = ts.pop().unwrap();
    old.shutdown().await;
    drop(old);
    drop(ins.pop());
    let (t2, mut in2) = Transport::start(config(2, &addrs)).await.unwrap();
    let restarted = Instant::now();
    let mut seq = 2;
    let got = loop {
        ts[0].send(numbered(1, 2, seq));
        seq += 1;
        if let Some((_, m)) = recv_within(&mut in2, Duration::from_millis(50)).await {
            break m;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "no reconnection"
        );
    };
    assert!(got.term >= 2);
    assert!(
        ts[0].stats()[&2].connects >= 2,
        "a second connection was made"
    );
    t2.shutdown().await;
}

/// Connects to `addr` and sends `hello`; returns the reply and whether the connection then
/// closed.
async fn try_hello(addr: SocketAddr, hello: &Hello) -> (Option<HelloReply>, bool) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut framed = Framed::new(stream, LengthDelimitedCodec::new());
    framed
        .send(Bytes::from(postcard::to_allocvec(hello).unwrap()))
        .await
        .unwrap();
    let reply = match tokio::time::timeout(Duration::from_secs(5), framed.next()).await {
        Ok(Some(Ok(b))) => postcard::from_bytes(&b).ok(),
        _ => None,
    };
    let closed = matches!(
        tokio::time::timeout(Duration::from_secs(5), framed.next()).await,
        Ok(None) | Ok(Some(Err(_)))
    );
    (reply, closed)
}

/// Node 1 still reaches node 2. The transport may lose a message sent while a connection
/// is being replaced (a forged hello as node 1 replaces node 1's live connection, and the
/// message may go out on the one being closed; Raft sends again), so this sends again until
/// one arrives, within a deadline.
async fn assert_good_peer_still_served(ts: &[Transport], ins: &mut [Inbound], seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(ts[0].send(numbered(1, 2, seq)));
        // Earlier calls' extra copies may arrive first: passed over.
        while let Some((from, m)) = recv_within(&mut ins[1], Duration::from_millis(200)).await {
            assert_eq!(from, 1);
            assert!(m.term <= seq, "{m:?} was never sent");
            if m.term == seq {
                return;
            }
        }
        assert!(Instant::now() < deadline, "good peer not served");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_handshakes_are_refused_without_a_reason_and_the_listener_keeps_serving() {
    let (ts, mut ins, addrs) = start_all(2, |_| {});
    let target = addrs[&2];
    let cases: Vec<(Hello, &str)> = vec![
        (
            {
                let mut h = Hello::new("other-cluster", 1, 2);
                h.cluster_id = "other-cluster".into();
                h
            },
            "cluster",
        ),
        (Hello::new(CLUSTER, 9, 2), "not a known peer"),
        (
            {
                let mut h = Hello::new(CLUSTER, 1, 2);
                h.version = PROTOCOL_VERSION + 1;
                h
            },
            "version",
        ),
        (Hello::new(CLUSTER, 1, 3), "meant for node 3"),
        (
            {
                let mut h = Hello::new(CLUSTER, 1, 2);
                h.magic = *b"HTTP/1.1";
                h
            },
            "magic",
        ),
    ];
    for (i, (hello, why)) in cases.iter().enumerate() {
        let (reply, closed) = try_hello(target, hello).await;
        match reply {
            // The dialer learns it was refused, never why: the reason would tell an
            // outsider the cluster id and node ids (it goes to the acceptor's log).
            Some(HelloReply::Refused(reason)) => {
                assert_eq!(reason, REFUSED, "case {i} ({why})");
                assert!(!reason.contains(CLUSTER) && !reason.contains('2'));
            }
            other => panic!("case {i}: expected a refusal, got {other:?}"),
        }
        assert_eq!(ts[1].listener_stats().refused, i as u64 + 1);
        assert!(
            closed,
            "case {i}: the connection is closed after the refusal"
        );
        assert_good_peer_still_served(&ts, &mut ins, 100 + i as u64).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_huge_length_prefixes_close_only_that_connection() {
    let (ts, mut ins, addrs) = start_all(2, |_| {});
    let target = addrs[&2];
    let payloads: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: me\r\n\r\n".to_vec(),
        vec![0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3], // a 4 GiB length prefix
        vec![0, 0, 0, 5, 1, 2, 3, 4, 5],       // a well-framed non-hello
    ];
    for (i, bytes) in payloads.iter().enumerate() {
        let mut s = TcpStream::connect(target).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        assert!(
            matches!(n, Ok(Ok(0)) | Ok(Err(_))),
            "case {i}: closed without a reply, got {n:?}"
        );
        assert_good_peer_still_served(&ts, &mut ins, 200 + i as u64).await;
    }

    // After a valid handshake, a malformed frame closes that connection too.
    let stream = TcpStream::connect(target).await.unwrap();
    let mut framed = Framed::new(stream, LengthDelimitedCodec::new());
    let hello = Hello::new(CLUSTER, 1, 2);
    framed
        .send(Bytes::from(postcard::to_allocvec(&hello).unwrap()))
        .await
        .unwrap();
    let welcome = framed.next().await.unwrap().unwrap();
    assert_eq!(
        postcard::from_bytes::<HelloReply>(&welcome).unwrap(),
        HelloReply::Welcome
    );
    framed
        .send(Bytes::from_static(b"\xff\xff\xff not postcard"))
        .await
        .unwrap();
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(5), framed.next()).await,
        Ok(None) | Ok(Some(Err(_)))
    ));
    assert_good_peer_still_served(&ts, &mut ins, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_and_ten_mebibyte_messages_cross_intact() {
    let (ts, mut ins, _) = start_all(2, |_| {});
    for (seq, size) in [(1u64, 1usize << 20), (2, 10 << 20)] {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let m = Message {
            from: 1,
            to: 2,
            term: seq,
            body: MessageBody::AppendEntries {
                prev_index: 0,
                prev_term: 0,
                entries: vec![Entry::normal(seq, 1, data.clone())],
                commit: 0,
            },
        };
        assert!(ts[0].send(m.clone()));
        let (_, got) = recv_within(&mut ins[1], Duration::from_secs(30))
            .await
            .expect("arrives");
        assert_eq!(got, m, "{size}-byte message intact");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_frame_limit_is_dropped_and_counted_not_sent() {
    let (ts, mut ins, _) = start_all(2, |c| c.max_frame_bytes = 64 << 10);
    let big = Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::AppendEntries {
            prev_index: 0,
            prev_term: 0,
            entries: vec![Entry::normal(1, 1, vec![7u8; 128 << 10])],
            commit: 0,
        },
    };
    assert!(ts[0].send(big));
    assert!(ts[0].send(numbered(1, 2, 2)));
    let (_, m) = recv_within(&mut ins[1], Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        m.term, 2,
        "the oversized message was skipped, the next one delivered"
    );
    assert_eq!(ts[0].stats()[&2].msgs_dropped, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_listener() {
    let (ts, _ins, addrs) = start_all(2, |_| {});
    ts[1].shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(addrs[&2]).await {
            Err(_) => break,
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "listener still accepting after shutdown"
                );
                tokio::task::yield_now().await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_completes_while_a_peer_has_stopped_reading() {
    // A fake peer 2: completes the handshake, then never reads again.
    let fake = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_addr = fake.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let (stream, _) = fake.accept().await.unwrap();
        let mut framed = Framed::new(stream, LengthDelimitedCodec::new());
        let _hello = framed.next().await.unwrap().unwrap();
        framed
            .send(Bytes::from(
                postcard::to_allocvec(&HelloReply::Welcome).unwrap(),
            ))
            .await
            .unwrap();
        framed // keep the connection open, unread
    });
    let l1 = TcpListener::bind("127.0.0.1:0").unwrap();
    let a1 = l1.local_addr().unwrap();
    let cfg = NetConfig::new(1, CLUSTER, a1, BTreeMap::from([(2, fake_addr)]));
    let (t1, _in1) = Transport::start_on(cfg, l1).unwrap();
    let big = Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::AppendEntries {
            prev_index: 0,
            prev_term: 0,
            entries: vec![Entry::normal(1, 1, vec![1u8; 1 << 20])],
            commit: 0,
        },
    };
    for _ in 0..64 {
        t1.send(big.clone());
    }
    // Wait until the writer is stuck: bytes sent stop growing.
    let start = Instant::now();
    let mut last = u64::MAX;
    let mut still = 0;
    while still < 5 {
        let now = t1.stats()[&2].bytes_sent;
        still = if now == last && now > 0 { still + 1 } else { 0 };
        last = now;
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "writer never stalled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        last < 64 << 20,
        "the peer is not reading, so not everything was written"
    );
    tokio::time::timeout(Duration::from_secs(10), t1.shutdown())
        .await
        .expect("shutdown must not wait for a peer that stopped reading");
    drop(held);
}

/// Sends `seq` from `t` until `inbound` receives it from `from` (a new peer's writer
/// connects on its first message), or fails after a deadline.
async fn delivered(t: &Transport, inbound: &mut Inbound, from: NodeId, to: NodeId) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seq = 0;
    while Instant::now() < deadline {
        seq += 1;
        t.send(numbered(from, to, seq));
        if let Some((f, _)) = recv_within(inbound, Duration::from_millis(100)).await {
            if f == from {
                return true;
            }
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_added_at_runtime_are_reached_and_removed_ones_are_cut_off() {
    let (ls, addrs) = listeners(3);
    let mut it = ls.into_iter();
    // 1 and 2 start as a pair; 3 knows them all.
    let pair: BTreeMap<NodeId, SocketAddr> = addrs
        .iter()
        .filter(|(&id, _)| id != 3)
        .map(|(&i, &a)| (i, a))
        .collect();
    let (t1, mut in1) = Transport::start_on(config(1, &pair), it.next().unwrap()).unwrap();
    let (_t2, _in2) = Transport::start_on(config(2, &pair), it.next().unwrap()).unwrap();
    let (t3, mut in3) = Transport::start_on(config(3, &addrs), it.next().unwrap()).unwrap();
    assert!(!t1.send(numbered(1, 3, 1)), "3 is not a peer of 1 yet");

    t1.set_peers(&addrs);
    assert_eq!(t1.peers().keys().copied().collect::<Vec<_>>(), vec![2, 3]);
    assert!(
        delivered(&t1, &mut in3, 1, 3).await,
        "1 reaches its new peer 3"
    );
    assert!(
        delivered(&t3, &mut in1, 3, 1).await,
        "1 accepts its new peer 3"
    );

    // Messages sent while the connection came up may still be on their way: take them.
    while recv_within(&mut in1, Duration::from_millis(300))
        .await
        .is_some()
    {}

    t1.set_peers(&pair);
    assert!(!t1.send(numbered(1, 3, 1)), "3 is no longer a peer of 1");
    assert!(!t1.stats().contains_key(&3));
    // 3's connection to 1 is closed, and its new ones are refused: nothing more arrives.
    for seq in 0..20 {
        t3.send(numbered(3, 1, 1000 + seq));
    }
    let late = recv_within(&mut in1, Duration::from_millis(1500)).await;
    assert!(late.is_none(), "a removed peer's message arrived: {late:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_learn_each_others_versions_and_an_older_release_is_refused_once_the_cluster_moves_on(
) {
    use raft_core::{ClusterVersion, Release};
    use raft_net::{PeerVersion, VersionFloor};
    let floor = VersionFloor::default();
    let (ts, mut ins, addrs) = start_all(2, |c| c.version_floor = floor.clone());
    assert_good_peer_still_served(&ts, &mut ins, 1).await;
    let ours = Some(PeerVersion {
        protocol: PROTOCOL_VERSION,
        release: Release::CURRENT,
    });
    assert_eq!(
        ts[0].stats()[&2].version,
        ours,
        "told by the acceptor's welcome"
    );
    assert_eq!(
        ts[1].stats()[&1].version,
        ours,
        "told by the dialer's hello"
    );

    // A hello of release 0.1.0 (nothing after it) is welcomed, in protocol 4, and read
    // as 0.1.0 reads it.
    let (reply, _) = try_hello(addrs[&2], &Hello::new(CLUSTER, 1, 2)).await;
    assert_eq!(reply, Some(HelloReply::Welcome));
    assert_eq!(ts[1].stats()[&1].version, Some(PeerVersion::UNSAID));

    // Once the cluster version is past 0.1, such a node is refused; this build is not.
    if ClusterVersion::CURRENT > ClusterVersion::INITIAL {
        floor.raise(ClusterVersion::CURRENT);
        let refused_before = ts[1].listener_stats().refused;
        let (reply, _) = try_hello(addrs[&2], &Hello::new(CLUSTER, 1, 2)).await;
        assert!(matches!(reply, Some(HelloReply::Refused(_))), "{reply:?}");
        assert_eq!(ts[1].listener_stats().refused, refused_before + 1);
        assert_good_peer_still_served(&ts, &mut ins, 2).await;
    }
}
