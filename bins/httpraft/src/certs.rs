//! `httpraft certs`: a cluster's certificates in one command each.
//!
//! - `httpraft certs init` writes the cluster CA (`ca.pem`, `ca.key`);
//! - `httpraft certs node <id> --host <name>...` writes `node-<id>.pem` and `node-<id>.key`,
//!   signed by it, naming node `<id>` of the cluster (for peer traffic) and the hosts
//!   clients reach its API by (for HTTPS);
//! - `httpraft certs client <name>` writes `client-<name>.pem` and `.key`, for an API that
//!   asks clients for certificates, signed by a CA of the clients' own (`client-ca.pem`,
//!   made the first time, given to the nodes with `--api-client-ca`), never by the
//!   cluster's: a client's certificate must not chain to the CA whose certificates name
//!   members.
//!
//! Every file is written with mode 0600, and no file is ever overwritten.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use raft_net::certs::{Ca, Issued, Validity};

/// What `httpraft certs` makes.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create the cluster's certificate authority: ca.pem (give it to every member and
    /// client) and ca.key (keep it safe, ideally off the members).
    Init {
        /// Where to write [default: ./certs].
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// The cluster id the certificates are for [default: "httpraft"].
        #[arg(long, default_value = "httpraft")]
        cluster_id: String,
        /// Days the CA is valid.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue node <id>'s certificate, for its peer connections and its HTTPS API.
    Node {
        /// The node's id.
        id: u64,
        /// A DNS name or IP address clients reach the node's API by (repeat for several).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Where ca.pem and ca.key are, and where to write [default: ./certs].
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// The cluster id (as given to `httpraft --cluster-id`) [default: "httpraft"].
        #[arg(long, default_value = "httpraft")]
        cluster_id: String,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Issue a client certificate named <name>, for an API started with --api-client-ca,
    /// signed by the clients' CA (client-ca.pem and client-ca.key, made the first time; not
    /// the cluster's CA).
    Client {
        /// The client's name (its certificate's common name).
        name: String,
        /// Where client-ca.pem and client-ca.key are (or are made), and where to write
        /// [default: ./certs].
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
}

/// Writes a new file (never overwriting one), readable by its owner only whatever the
/// umask: a key is secret, and a certificate others could replace (the CA's above all)
/// would let them in.
fn write_new(path: &Path, text: &str) -> Result<(), String> {
    let mut options = raft_storage::private::file_options();
    options.write(true).create_new(true);
    let mut f = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!("{} exists; not overwriting it", path.display())
        } else {
            format!("cannot create {}: {e}", path.display())
        }
    })?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Writes `<name>.pem` and `<name>.key` (mode 0600) under `dir`, refusing to overwrite.
pub(crate) fn write_pair(
    dir: &Path,
    name: &str,
    issued: &Issued,
) -> Result<(PathBuf, PathBuf), String> {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    for p in [&cert, &key] {
        if p.exists() {
            return Err(format!("{} exists; not overwriting it", p.display()));
        }
    }
    write_new(&cert, &issued.cert_pem)?;
    write_new(&key, &issued.key_pem)?;
    Ok((cert, key))
}

/// The clients' CA in `dir` (`client-ca.pem`, `client-ca.key`), made if there is none.
fn client_ca(dir: &Path) -> Result<Ca, String> {
    if dir.join("client-ca.key").exists() {
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read_to_string(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        };
        return Ca::from_pem(&read("client-ca.pem")?, &read("client-ca.key")?)
            .map_err(|e| e.to_string());
    }
    raft_storage::private::create_dir_all(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let ca = Ca::generate("clients", Validity::days(3650)).map_err(|e| e.to_string())?;
    let issued = Issued {
        cert_pem: ca.cert_pem().to_string(),
        key_pem: ca.key_pem().to_string(),
    };
    let (cert, key) = write_pair(dir, "client-ca", &issued)?;
    println!(
        "wrote the clients' CA {} (give it to every node: --api-client-ca {}) and {} (keep it secret)",
        cert.display(),
        cert.display(),
        key.display()
    );
    Ok(ca)
}

fn load_ca(dir: &Path) -> Result<Ca, String> {
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read_to_string(&p).map_err(|e| {
            format!(
                "cannot read {}: {e} (run `httpraft certs init --dir {}` first)",
                p.display(),
                dir.display()
            )
        })
    };
    Ca::from_pem(&read("ca.pem")?, &read("ca.key")?).map_err(|e| e.to_string())
}

/// Runs one `httpraft certs` command; prints what it wrote.
pub fn run(cmd: CertsCommand) -> Result<(), String> {
    match cmd {
        CertsCommand::Init {
            dir,
            cluster_id,
            days,
        } => {
            raft_storage::private::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let ca = Ca::generate(&cluster_id, Validity::days(days)).map_err(|e| e.to_string())?;
            let issued = Issued {
                cert_pem: ca.cert_pem().to_string(),
                key_pem: ca.key_pem().to_string(),
            };
            let (cert, key) = write_pair(&dir, "ca", &issued)?;
            println!(
                "wrote {} (give it to every member and client) and {} (keep it secret)",
                cert.display(),
                key.display()
            );
            println!(
                "next: httpraft certs node <id> --host <name or ip> --dir {} --cluster-id {cluster_id}",
                dir.display()
            );
        }
        CertsCommand::Node {
            id,
            hosts,
            dir,
            cluster_id,
            days,
        } => {
            let ca = load_ca(&dir)?;
            let issued = ca
                .issue_node(&cluster_id, id, &hosts, Validity::days(days))
                .map_err(|e| e.to_string())?;
            let (cert, key) = write_pair(&dir, &format!("node-{id}"), &issued)?;
            println!(
                "wrote {} and {} for node {id} of cluster {cluster_id:?}; start it with --tls-cert {} --tls-key {} --tls-ca {}",
                cert.display(),
                key.display(),
                cert.display(),
                key.display(),
                dir.join("ca.pem").display()
            );
        }
        CertsCommand::Client { name, dir, days } => {
            let ca = client_ca(&dir)?;
            let issued = ca
                .issue_client(&name, Validity::days(days))
                .map_err(|e| e.to_string())?;
            let (cert, key) = write_pair(&dir, &format!("client-{name}"), &issued)?;
            println!("wrote {} and {}", cert.display(), key.display());
        }
    }
    Ok(())
}
