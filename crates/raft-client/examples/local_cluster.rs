//! A local 3-node cluster in one process: real TCP on loopback, real files (in a directory
//! it prints). It elects a leader, commits entries from many tasks, stops the leader, shows
//! a new one taking over, restarts the old one and shows it catching up.
//!
//! `cargo run --release -p raft-client --example local_cluster`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::Duration;

use raft_client::{NodeConfig, Peer, RaftNode, ReplicatedLog};
use raft_core::{LogIndex, NodeId};

async fn wait_leader(nodes: &BTreeMap<NodeId, RaftNode<LogIndex>>) -> NodeId {
    loop {
        let first = nodes.values().next().and_then(|n| n.leader().leader);
        if let Some(l) = first {
            if nodes.contains_key(&l) && nodes.values().all(|n| n.leader().leader == Some(l)) {
                return l;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() {
    let data = std::env::temp_dir().join(format!("raft-local-cluster-{}", std::process::id()));
    println!("data directory: {}", data.display());
    let peers: BTreeMap<NodeId, Peer> = (1..=3)
        .map(|id| {
            let raft = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            (id, Peer { raft, api: None })
        })
        .collect();
    let config =
        |id: NodeId| NodeConfig::new(id, "local", peers.clone(), data.join(format!("node-{id}")));
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        println!("node {id}: raft on {}", peers[&id].raft);
        nodes.insert(
            id,
            RaftNode::start(config(id), ReplicatedLog::new())
                .await
                .unwrap(),
        );
    }
    let leader = wait_leader(&nodes).await;
    println!(
        "node {leader} is the leader (term {})",
        nodes[&leader].leader().term
    );

    let mut tasks = Vec::new();
    for t in 0..8 {
        let node = nodes[&leader].clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..125 {
                node.submit(format!("task {t} entry {k}").into_bytes())
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let status = nodes[&leader].status().await.unwrap();
    println!(
        "1000 entries committed; leader commit index {}",
        status.commit
    );

    println!("stopping node {leader}");
    nodes.remove(&leader).unwrap().shutdown().await;
    let new_leader = wait_leader(&nodes).await;
    println!(
        "node {new_leader} took over (term {})",
        nodes[&new_leader].leader().term
    );
    let c = nodes[&new_leader]
        .submit(&b"written while a node was down"[..])
        .await
        .unwrap();
    println!("committed at index {}", c.index);

    println!("restarting node {leader} from its directory");
    nodes.insert(
        leader,
        RaftNode::start(config(leader), ReplicatedLog::new())
            .await
            .unwrap(),
    );
    loop {
        let tail = nodes[&leader].retrieve(c.index, 1).await.unwrap();
        if let Some(e) = tail.first() {
            println!(
                "node {leader} caught up: entry {} = {:?}",
                e.index,
                String::from_utf8_lossy(&e.data)
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (_, n) in nodes {
        n.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&data);
    println!("done");
}
