//! Two-way streams beside the message connections.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::Duration;

use bytes::Bytes;
use raft_core::{Message, MessageBody};
use raft_net::{NetConfig, Transport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_carries_frames_both_ways_beside_the_messages() {
    let l1 = TcpListener::bind("127.0.0.1:0").unwrap();
    let l2 = TcpListener::bind("127.0.0.1:0").unwrap();
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let c1 = NetConfig::new(1, "streams", a1, BTreeMap::from([(2, a2)]));
    let c2 = NetConfig::new(2, "streams", a2, BTreeMap::from([(1, a1)]));
    let (t1, _i1) = Transport::start_on(c1, l1).unwrap();
    let (t2, mut i2) = Transport::start_on(c2, l2).unwrap();
    let mut incoming = t2.take_streams().expect("the first take gets the receiver");
    assert!(t2.take_streams().is_none());

    let mut out = t1.open_stream(2).await.unwrap();
    let mut inn = tokio::time::timeout(Duration::from_secs(10), incoming.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inn.peer(), 1);
    let big = Bytes::from(vec![9u8; 1 << 20]);
    out.send(big.clone()).await.unwrap();
    assert_eq!(inn.recv().await.unwrap().unwrap(), big);
    inn.send(Bytes::from_static(b"ack")).await.unwrap();
    assert_eq!(&out.recv().await.unwrap().unwrap()[..], b"ack");

    // Messages flow as before.
    t1.send(Message {
        from: 1,
        to: 2,
        term: 3,
        body: MessageBody::Heartbeat {
            commit: 0,
            read_seq: 0,
        },
    });
    let (_, m) = tokio::time::timeout(Duration::from_secs(10), i2.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.term, 3);
    drop(out);
    assert!(inn.recv().await.is_none(), "closed by the other end");
    assert!(t1.open_stream(7).await.is_err(), "not a peer");
}
