//! `raftctl`: the command line of an httpraft cluster.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use raft_http_client::{Client, Consistency, Error, Event, Expect};
use serde_json::{json, Value};

/// Talks to an httpraft cluster through its HTTP API.
///
/// Exit status: 0 done; 1 the cluster refused or failed the request; 2 bad usage; 3 the key
/// does not exist (get); 4 a compare-and-swap's condition did not hold; 5 no endpoint could
/// serve the request, or a write's outcome is unknown (read before retrying it).
#[derive(Debug, Parser)]
#[command(name = "raftctl", version)]
struct Cli {
    /// Members' API addresses, comma-separated (any of them: writes follow the leader).
    #[arg(
        long,
        global = true,
        env = "RAFTCTL_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:9000"
    )]
    endpoints: Vec<String>,
    /// Print JSON (one object per line for streams) instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds a request may take.
    #[arg(long, global = true, default_value_t = 10)]
    timeout: u64,
    /// HTTPS: the cluster's CA certificate (PEM); endpoints without a scheme are reached
    /// over https.
    #[arg(long, global = true, env = "RAFTCTL_CACERT", value_name = "PEM")]
    cacert: Option<std::path::PathBuf>,
    /// HTTPS: a client certificate (PEM) to present, with --key.
    #[arg(
        long = "cert",
        global = true,
        env = "RAFTCTL_CERT",
        value_name = "PEM",
        requires = "key_file"
    )]
    cert_file: Option<std::path::PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(
        long = "key",
        global = true,
        env = "RAFTCTL_KEY",
        value_name = "PEM",
        requires = "cert_file"
    )]
    key_file: Option<std::path::PathBuf>,
    /// A bearer token for an API started with --tokens.
    #[arg(long, global = true, env = "RAFTCTL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Each endpoint's role, term, leader and indexes.
    Status,
    /// The members: id, role, addresses, lag.
    Members,
    /// Append an entry to the log; prints its index.
    Append {
        /// The entry's text.
        entry: String,
    },
    /// Print the committed log from an index.
    Log {
        /// The first index.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Entries at most (without --follow).
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Keep printing entries as they commit.
        #[arg(long)]
        follow: bool,
        /// Stop after this many entries.
        #[arg(long)]
        count: Option<usize>,
    },
    /// Set a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Read a key (linearizable unless --local).
    Get {
        /// The key.
        key: String,
        /// Read from the endpoint's own copy, possibly stale.
        #[arg(long)]
        local: bool,
    },
    /// Delete a key.
    Del {
        /// The key.
        key: String,
    },
    /// Set a key only if it holds a value (--expect), is absent (--absent) or is at a
    /// revision (--revision); exit status 4 when it does not.
    Cas {
        /// The key.
        key: String,
        /// The new value.
        value: String,
        /// The value the key must hold.
        #[arg(long, conflicts_with = "absent")]
        expect: Option<String>,
        /// The key must be absent.
        #[arg(long)]
        absent: bool,
        /// The revision the key must be at.
        #[arg(long)]
        revision: Option<u64>,
    },
    /// List keys under a prefix.
    Ls {
        /// The prefix.
        #[arg(default_value = "")]
        prefix: String,
        /// Keys at most.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Print puts and deletes of keys under a prefix as they happen.
    Watch {
        /// The prefix.
        #[arg(default_value = "")]
        prefix: String,
        /// Start at this revision (default: from now on).
        #[arg(long)]
        from_revision: Option<u64>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
    /// Move leadership to a node (default: the most caught-up voter).
    TransferLeader {
        /// The node to lead.
        to: Option<u64>,
    },
    /// Snapshots of a node's state.
    Snapshot {
        #[command(subcommand)]
        action: SnapshotCmd,
    },
}

#[derive(Debug, Subcommand)]
enum SnapshotCmd {
    /// Save a consistent copy of the first endpoint's state to a file (restore it with
    /// `httpraft restore`).
    Save {
        /// Where to write it.
        file: std::path::PathBuf,
    },
}

/// A failure, with its exit status.
struct Failure(u8, String);

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::NotFound => 3,
            Error::PreconditionFailed { .. } => 4,
            Error::Unavailable { .. } | Error::Unknown { .. } => 5,
            Error::Config(_) => 2,
            Error::Api { .. } | Error::Decode { .. } => 1,
        };
        Failure(code, e.to_string())
    }
}

fn show(json_out: bool, v: &Value, text: impl FnOnce() -> String) {
    if json_out {
        println!("{v}");
    } else {
        println!("{}", text());
    }
}

fn event_json(e: &Event) -> Value {
    match e {
        Event::Entry(entry) => json!(entry),
        Event::Put(kv) => {
            json!({"type": "put", "key": kv.key, "value": kv.value, "revision": kv.revision})
        }
        Event::Delete { key, revision } => {
            json!({"type": "delete", "key": key, "revision": revision})
        }
        Event::Compacted { first } => json!({"type": "compacted", "first": first}),
    }
}

fn event_text(e: &Event) -> String {
    match e {
        Event::Entry(entry) => {
            let what = match (&entry.entry, &entry.command, &entry.hex) {
                (Some(t), _, _) => t.clone(),
                (_, Some(c), _) => c.to_string(),
                (_, _, Some(h)) => format!("0x{h}"),
                _ => format!("({})", entry.kind),
            };
            format!("{}\t{}\t{}\t{what}", entry.index, entry.term, entry.kind)
        }
        Event::Put(kv) => format!("PUT\t{}\t{}\t{}", kv.revision, kv.key, kv.value),
        Event::Delete { key, revision } => format!("DELETE\t{revision}\t{key}"),
        Event::Compacted { first } => {
            format!(
                "COMPACTED\tthe history before index {first} was trimmed; start again from a read"
            )
        }
    }
}

/// Prints a stream's events (at most `count`) until it ends.
async fn print_stream(
    json_out: bool,
    stream: impl futures_util::Stream<Item = Result<Event, Error>>,
    count: Option<usize>,
) -> Result<(), Failure> {
    let mut stream = Box::pin(stream.take(count.unwrap_or(usize::MAX)));
    while let Some(e) = stream.next().await {
        let e = e?;
        show(json_out, &event_json(&e), || event_text(&e));
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let mut cfg = raft_http_client::ClientConfig {
        timeout: Duration::from_secs(cli.timeout.max(1)),
        token: cli.token.clone(),
        ..raft_http_client::ClientConfig::default()
    };
    if let Some(ca) = &cli.cacert {
        let identity = cli.cert_file.as_deref().zip(cli.key_file.as_deref());
        cfg = cfg.with_tls_files(ca, identity)?;
    }
    let c = Client::with_config(&cli.endpoints, cfg)?;
    let j = cli.json;
    match cli.command {
        Cmd::Status => {
            let mut failed = 0;
            if !j {
                println!("ENDPOINT\tID\tROLE\tTERM\tLEADER\tCOMMIT\tAPPLIED\tRELEASE\tCLUSTER");
            }
            for e in &cli.endpoints {
                match c.status(Some(e)).await {
                    Ok(s) => show(j, &json!({"endpoint": e, "status": s}), || {
                        format!(
                            "{e}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                            s["id"],
                            s["role"].as_str().unwrap_or("?"),
                            s["term"],
                            s["leader"],
                            s["commit_index"],
                            s["applied_index"],
                            // A node of release 0.1.0 does not say.
                            s["version"]["release"].as_str().unwrap_or("0.1.0"),
                            s["version"]["cluster"].as_str().unwrap_or("0.1"),
                        )
                    }),
                    Err(err) => {
                        failed += 1;
                        show(j, &json!({"endpoint": e, "error": err.to_string()}), || {
                            format!("{e}\t-\tunreachable: {err}")
                        });
                    }
                }
            }
            if failed == cli.endpoints.len() {
                return Err(Failure(5, "no endpoint answered".into()));
            }
        }
        Cmd::Members => {
            let members = c.members().await?;
            if j {
                println!("{}", json!(members));
            } else {
                println!("ID\tROLE\tRAFT\tAPI\tLAG\tREACHABLE");
                for m in members {
                    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        m.id,
                        m.role,
                        opt(m.raft),
                        opt(m.api),
                        opt(m.lag.map(|l| l.to_string())),
                        opt(m.reachable.map(|r| r.to_string()))
                    );
                }
            }
        }
        Cmd::Append { entry } => {
            let a = c.append(entry).await?;
            show(j, &json!(a), || format!("{}", a.index));
        }
        Cmd::Log {
            from,
            limit,
            follow,
            count,
        } => {
            if follow {
                print_stream(j, c.log_stream(Some(from)), count).await?;
            } else {
                let page = c.read_log(from, limit).await?;
                for e in page.entries.into_iter().take(count.unwrap_or(usize::MAX)) {
                    let ev = Event::Entry(e);
                    show(j, &event_json(&ev), || event_text(&ev));
                }
            }
        }
        Cmd::Put { key, value } => {
            let w = c.put(&key, value).await?;
            show(j, &json!(w), || format!("OK {}", w.index));
        }
        Cmd::Get { key, local } => {
            let consistency = if local {
                Consistency::Local
            } else {
                Consistency::Linearizable
            };
            match c.get_with(&key, consistency).await? {
                Some(kv) => show(j, &json!(kv), || kv.value.clone()),
                None => return Err(Failure(3, format!("no such key: {key}"))),
            }
        }
        Cmd::Del { key } => {
            let w = c.delete(&key).await?;
            show(j, &json!(w), || {
                if w.previous.is_some() {
                    format!("DELETED {}", w.index)
                } else {
                    format!("ABSENT {}", w.index)
                }
            });
        }
        Cmd::Cas {
            key,
            value,
            expect,
            absent,
            revision,
        } => {
            let mut e = Expect {
                value: expect.map(Some),
                revision,
            };
            if absent {
                e.value = Some(None);
            }
            if e == Expect::default() {
                return Err(Failure(
                    2,
                    "cas needs a condition: --expect <value>, --absent or --revision <n>".into(),
                ));
            }
            match c.put_if(&key, value, e).await {
                Ok(w) => show(j, &json!(w), || format!("OK {}", w.index)),
                Err(Error::PreconditionFailed { current }) => {
                    show(
                        j,
                        &json!({"precondition_failed": true, "current": current}),
                        || match &current {
                            Some(v) => format!(
                                "FAILED: {key} holds {:?} at revision {}",
                                v.value, v.revision
                            ),
                            None => format!("FAILED: {key} is absent"),
                        },
                    );
                    return Err(Failure(4, String::new()));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Cmd::Ls { prefix, limit } => {
            let page = c.list(&prefix, None, limit).await?;
            if j {
                println!("{}", json!(page));
            } else {
                for kv in &page.kvs {
                    println!("{}\t{}\t{}", kv.key, kv.revision, kv.value);
                }
                if page.more {
                    println!("(more; raise --limit)");
                }
            }
        }
        Cmd::Watch {
            prefix,
            from_revision,
            count,
        } => {
            print_stream(j, c.watch(&prefix, from_revision), count).await?;
        }
        Cmd::TransferLeader { to } => {
            let leader = c.transfer_leader(to).await?;
            show(j, &json!({ "leader": leader }), || {
                format!("node {leader} leads")
            });
        }
        Cmd::Snapshot {
            action: SnapshotCmd::Save { file },
        } => {
            let tmp = file.with_extension("part");
            // A backup holds every value: readable by its owner only, whatever the umask.
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut out = options
                .open(&tmp)
                .map_err(|e| Failure(1, format!("cannot create {}: {e}", tmp.display())))?;
            let bytes = c
                .snapshot_save(cli.endpoints.first().map(String::as_str), &mut out)
                .await?;
            out.sync_all()
                .and_then(|_| std::fs::rename(&tmp, &file))
                .map_err(|e| Failure(1, format!("cannot save {}: {e}", file.display())))?;
            show(j, &json!({"file": file, "bytes": bytes}), || {
                format!("saved {bytes} bytes to {}", file.display())
            });
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, message)) => {
            if !message.is_empty() {
                eprintln!("raftctl: {message}");
            }
            ExitCode::from(code)
        }
    }
}
