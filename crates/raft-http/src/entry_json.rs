//! How log entries look in JSON (`GET /log`, `GET /v1/log`).
//!
//! - a submitted text: `{"index": 3, "term": 1, "kind": "entry", "entry": "<text as posted>"}`
//! - a leader's no-op: `{"index": 1, "term": 1, "kind": "noop"}`
//! - a key-value command: `{"index": 5, "term": 1, "kind": "kv", "command": {"op": "put", "key": "k", "value": "v"}}`
//!   (or `{"op": "delete", "key": "k"}`); a command entry that does not decode is shown as
//!   bytes
//!
//! An entry's kind decides its shape: a submitted text is always an `entry`, whatever it
//! holds.
//! - a payload that is not UTF-8 text: `{"index": 7, "term": 1, "kind": "bytes", "hex": "00ff..."}`
//! - a configuration entry: `{"index": 9, "term": 2, "kind": "config"}`
//! - a raise of the cluster version: `{"index": 12, "term": 2, "kind": "cluster_version", "version": "0.2"}`

use raft_client::KvCommand;
use raft_core::{Entry, EntryKind};
use serde_json::{json, Value};

/// The JSON form of one entry.
pub fn entry_to_json(e: &Entry) -> Value {
    match e.kind {
        EntryKind::Noop => json!({"index": e.index, "term": e.term, "kind": "noop"}),
        EntryKind::Config => json!({"index": e.index, "term": e.term, "kind": "config"}),
        EntryKind::ClusterVersion => {
            let mut v = json!({"index": e.index, "term": e.term, "kind": "cluster_version"});
            if let Some(version) = raft_core::ClusterVersion::decode(&e.data) {
                v["version"] = json!(version.to_string());
            }
            v
        }
        EntryKind::Command => match KvCommand::from_entry(e) {
            Some(cmd) => {
                let mut command = match &cmd {
                    KvCommand::Put { key, value, .. }
                    | KvCommand::PutUnversioned { key, value } => {
                        json!({"op": "put", "key": key, "value": value})
                    }
                    KvCommand::Delete { key, .. } | KvCommand::DeleteUnversioned { key } => {
                        json!({"op": "delete", "key": key})
                    }
                };
                if let KvCommand::Put {
                    expect: Some(x), ..
                }
                | KvCommand::Delete {
                    expect: Some(x), ..
                } = &cmd
                {
                    if let Some(v) = &x.value {
                        command["expect"] = json!(v);
                    }
                    if let Some(r) = x.revision {
                        command["if_revision"] = json!(r);
                    }
                }
                json!({"index": e.index, "term": e.term, "kind": "kv", "command": command})
            }
            None => bytes_json(e),
        },
        EntryKind::Normal => match std::str::from_utf8(&e.data) {
            Ok(text) => {
                json!({"index": e.index, "term": e.term, "kind": "entry", "entry": text})
            }
            Err(_) => bytes_json(e),
        },
    }
}

fn bytes_json(e: &Entry) -> Value {
    let hex: String = e.data.iter().map(|b| format!("{b:02x}")).collect();
    json!({"index": e.index, "term": e.term, "kind": "bytes", "hex": hex})
}
