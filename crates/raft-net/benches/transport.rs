//! Messages per second and MB/s between two transports on loopback, for ~100-byte and
//! 64 KiB messages. Run with `cargo bench -p raft-net`. `RAFT_BENCH_SECS` sets each trial's
//! length (default 2); the median of 3 trials is printed.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use raft_core::{Entry, Message, MessageBody};
use raft_net::{encode_message, NetConfig, Transport};

fn message(payload: usize) -> Message {
    Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::AppendEntries {
            prev_index: 0,
            prev_term: 0,
            entries: vec![Entry::normal(1, 1, vec![0x42; payload])],
            commit: 0,
        },
    }
}

async fn trial(payload: usize, secs: f64) -> (f64, f64, f64) {
    let l1 = TcpListener::bind("127.0.0.1:0").unwrap();
    let l2 = TcpListener::bind("127.0.0.1:0").unwrap();
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let (t1, _in1) = Transport::start_on(
        NetConfig::new(1, "bench", a1, BTreeMap::from([(2, a2)])),
        l1,
    )
    .unwrap();
    let (t2, mut in2) = Transport::start_on(
        NetConfig::new(2, "bench", a2, BTreeMap::from([(1, a1)])),
        l2,
    )
    .unwrap();
    let m = message(payload);
    let frame = encode_message(m.clone()).unwrap().len() as f64 + 4.0;
    let receiver = tokio::spawn(async move {
        let mut n = 0u64;
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(secs);
        while let Ok(Some(_)) = tokio::time::timeout_at(deadline.into(), in2.recv()).await {
            n += 1;
        }
        (n, start.elapsed().as_secs_f64())
    });
    let sender = tokio::spawn(async move {
        let stop = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < stop {
            for _ in 0..64 {
                if !t1.send(m.clone()) {
                    tokio::task::yield_now().await;
                }
            }
            tokio::task::yield_now().await;
        }
        t1
    });
    let (n, elapsed) = receiver.await.unwrap();
    let t1 = sender.await.unwrap();
    t1.shutdown().await;
    t2.shutdown().await;
    let mps = n as f64 / elapsed;
    (mps, mps * frame / 1e6, frame)
}

fn main() {
    let secs: f64 = std::env::var("RAFT_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("raft-net loopback, two transports in one process (median of 3 trials of {secs} s)");
    println!("{:>14} {:>14} {:>10}", "frame bytes", "messages/s", "MB/s");
    // Payloads chosen so that whole frames are 100 bytes and just over 64 KiB.
    for payload in [83usize, 64 << 10] {
        let mut runs: Vec<(f64, f64, f64)> =
            (0..3).map(|_| rt.block_on(trial(payload, secs))).collect();
        runs.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        let (mps, mbs, frame) = runs[1];
        println!("{frame:>14.0} {mps:>14.0} {mbs:>10.1}");
    }
}
