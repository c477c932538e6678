//! Mutual TLS between members (rustls, with the `ring` provider), and the rule that binds a
//! member's identity to its certificate.
//!
//! Every member holds a certificate signed by the cluster's CA that names it twice: a URI
//! subject-alternative name `raft://<cluster>/node/<id>` ([`node_uri`]) and the DNS name
//! `node-<id>.raft` ([`peer_dns_name`]). Both sides of a connection present their
//! certificate and check the other's against the CA (and its validity dates) before any byte
//! of the Raft protocol flows:
//!
//! - the dialer asks for `node-<id>.raft` as the server name, so only the certificate of
//!   the node it means to reach passes, and then checks the URI names that node of its
//!   cluster;
//! - the acceptor reads the identity from the dialer's certificate, and the dialer's hello
//!   must claim exactly that cluster and node id, or the connection is refused.
//!
//! A certificate for node 2 can therefore only ever speak as node 2, in that cluster. The
//! material is reloaded by [`PeerTls::reload`] (on SIGHUP in `httpraft`): connections
//! opened after it use the new files; open ones go on with what they were opened with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use raft_core::NodeId;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Where a member's TLS material lives: its certificate chain, its private key, and the
/// cluster CA's certificate(s), all PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The member's certificate, then any intermediates.
    pub cert: PathBuf,
    /// The member's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA certificate(s) that sign the members' certificates.
    pub ca: PathBuf,
}

/// What is wrong with TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds nothing of what it should.
    #[error("{} holds no PEM {what}", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// What was expected in it.
        what: &'static str,
    },
    /// A certificate or key is not usable.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The certificate does not name this member: issue one with `httpraft certs node`.
    #[error("{} does not name node {id} of cluster {cluster:?} (it needs the URI SAN {uri}); issue one with `httpraft certs node {id}`", path.display(), uri = node_uri(cluster, *id))]
    WrongIdentity {
        /// The certificate file.
        path: PathBuf,
        /// This node's cluster.
        cluster: String,
        /// This node's id.
        id: NodeId,
    },
    /// rustls refused the combination (a key that does not match the certificate, say).
    #[error("TLS settings refused: {0}")]
    Settings(String),
}

/// The URI subject-alternative name of node `id` of `cluster`.
pub fn node_uri(cluster: &str, id: NodeId) -> String {
    format!("raft://{}/node/{id}", encode_cluster(cluster))
}

/// The DNS name a dialer asks for when it connects to node `id`.
pub fn peer_dns_name(id: NodeId) -> String {
    format!("node-{id}.raft")
}

/// Percent-encodes what a URI's host part cannot hold, so that any cluster id maps to one
/// URI and back.
fn encode_cluster(cluster: &str) -> String {
    let mut out = String::with_capacity(cluster.len());
    for b in cluster.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_' || b == b'~' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The URIs among a certificate's subject-alternative names (none if it cannot be parsed).
pub fn certificate_uris(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_string()),
            _ => None,
        })
        .collect()
}

/// The node of `cluster` a certificate names, if it names exactly one.
pub fn certificate_node(cert: &CertificateDer<'_>, cluster: &str) -> Option<NodeId> {
    let prefix = format!("raft://{}/node/", encode_cluster(cluster));
    let mut ids = certificate_uris(cert)
        .into_iter()
        .filter_map(|u| u.strip_prefix(&prefix).and_then(|id| id.parse().ok()));
    let first = ids.next()?;
    match ids.next() {
        None => Some(first),
        Some(_) => None,
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A certificate chain read from a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// A private key read from a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Missing {
            path: path.to_path_buf(),
            what: "private key",
        },
        e => TlsError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        },
    })
}

/// The CA certificates read from a PEM file, as a root store.
pub fn load_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Invalid {
            path: path.to_path_buf(),
            message: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(Arc::new(roots))
}

/// The cryptography every TLS configuration here uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn settings(e: impl std::fmt::Display) -> TlsError {
    TlsError::Settings(e.to_string())
}

/// What a reload swaps: readers take the current value, a reload replaces it.
struct Swappable<T>(RwLock<Arc<T>>);

impl<T> Swappable<T> {
    fn new(value: T) -> Self {
        Swappable(RwLock::new(Arc::new(value)))
    }

    fn get(&self) -> Arc<T> {
        match self.0.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, value: T) {
        match self.0.write() {
            Ok(mut c) => *c = Arc::new(value),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(value),
        }
    }
}

/// The node of `cluster` the peer's certificate on a TLS connection names, if any.
fn peer_node(conn: &rustls::CommonState, cluster: &str) -> Option<NodeId> {
    conn.peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| certificate_node(c, cluster))
}

/// The client and server configurations built from one reading of the files.
struct Configs {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

/// A member's TLS settings for peer connections: both sides authenticate with certificates
/// of the cluster's CA. Reloadable.
pub struct PeerTls {
    cluster: String,
    id: NodeId,
    files: TlsFiles,
    current: Swappable<Configs>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("cluster", &self.cluster)
            .field("id", &self.id)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl PeerTls {
    /// Reads the files of node `id` of `cluster`; refuses a certificate that does not name
    /// that node, a key that does not match it, or an unusable CA.
    pub fn load(cluster: &str, id: NodeId, files: TlsFiles) -> Result<PeerTls, TlsError> {
        let configs = Self::build(cluster, id, &files)?;
        Ok(PeerTls {
            cluster: cluster.to_string(),
            id,
            files,
            current: Swappable::new(configs),
        })
    }

    fn build(cluster: &str, id: NodeId, files: &TlsFiles) -> Result<Configs, TlsError> {
        let certs = load_certs(&files.cert)?;
        let key = load_key(&files.key)?;
        let roots = load_roots(&files.ca)?;
        if certificate_node(&certs[0], cluster) != Some(id) {
            return Err(TlsError::WrongIdentity {
                path: files.cert.clone(),
                cluster: cluster.to_string(),
                id,
            });
        }
        let client_verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .map_err(settings)?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(settings)?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(settings)?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(settings)?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(settings)?;
        Ok(Configs {
            client: Arc::new(client),
            server: Arc::new(server),
        })
    }

    /// Reads the files again; connections opened from now on use them. On error the
    /// material in use is kept.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.current
            .set(Self::build(&self.cluster, self.id, &self.files)?);
        Ok(())
    }

    /// Opens TLS to node `peer` over `tcp`, and checks that the certificate it presents
    /// names it.
    pub(crate) async fn connect(
        &self,
        peer: NodeId,
        tcp: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let name = ServerName::try_from(peer_dns_name(peer))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let connector = tokio_rustls::TlsConnector::from(self.current.get().client.clone());
        let tls = connector.connect(name, tcp).await?;
        if peer_node(tls.get_ref().1, &self.cluster) != Some(peer) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "the peer's certificate does not name node {peer} of cluster {:?}",
                    self.cluster
                ),
            ));
        }
        Ok(tls)
    }

    /// Accepts TLS from a dialer over `tcp`; the node its certificate names (`None` if it
    /// names none of this cluster, which the caller refuses).
    pub(crate) async fn accept(
        &self,
        tcp: tokio::net::TcpStream,
    ) -> std::io::Result<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        Option<NodeId>,
    )> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.current.get().server.clone());
        let tls = acceptor.accept(tcp).await?;
        let named = peer_node(tls.get_ref().1, &self.cluster);
        Ok((tls, named))
    }
}

/// TLS for a member's HTTP API: its node certificate (which names the hosts clients reach it
/// by), and client certificates of the cluster's CA (or of `client_ca`), required or
/// optional. Reloadable.
pub struct ServerTls {
    cluster: String,
    files: TlsFiles,
    client_ca: Option<PathBuf>,
    require_client_cert: bool,
    current: Swappable<ServerMaterial>,
}

/// The API's TLS configuration from one reading of the files.
struct ServerMaterial {
    config: Arc<ServerConfig>,
    /// With an extra client CA: a verifier that trusts the cluster's CA alone. Only a
    /// certificate it accepts may speak as a member, whatever names it carries: the extra
    /// CA signs clients, and must not be able to mint members (who hold every role).
    members: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cluster", &self.cluster)
            .field("files", &self.files)
            .field("client_ca", &self.client_ca)
            .field("require_client_cert", &self.require_client_cert)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the files. Clients may present a certificate of the cluster's CA (a member's)
    /// or of `client_ca`; with `require_client_cert`, they must.
    pub fn load(
        cluster: &str,
        files: TlsFiles,
        client_ca: Option<PathBuf>,
        require_client_cert: bool,
    ) -> Result<ServerTls, TlsError> {
        let config = Self::build(&files, client_ca.as_deref(), require_client_cert)?;
        Ok(ServerTls {
            cluster: cluster.to_string(),
            files,
            client_ca,
            require_client_cert,
            current: Swappable::new(config),
        })
    }

    fn build(
        files: &TlsFiles,
        client_ca: Option<&Path>,
        require: bool,
    ) -> Result<ServerMaterial, TlsError> {
        let certs = load_certs(&files.cert)?;
        let key = load_key(&files.key)?;
        let add = |roots: &mut RootCertStore, path: &Path| -> Result<(), TlsError> {
            for ca in load_certs(path)? {
                roots.add(ca).map_err(|e| TlsError::Invalid {
                    path: path.to_path_buf(),
                    message: format!("not a usable CA certificate: {e}"),
                })?;
            }
            Ok(())
        };
        let mut cluster_roots = RootCertStore::empty();
        add(&mut cluster_roots, &files.ca)?;
        let mut roots = cluster_roots.clone();
        let members = match client_ca {
            Some(extra) => {
                add(&mut roots, extra)?;
                let only_members = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(cluster_roots),
                    provider(),
                )
                .build()
                .map_err(settings)?;
                Some(only_members)
            }
            None => None,
        };
        let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        );
        let verifier = if require {
            builder.build()
        } else {
            builder.allow_unauthenticated().build()
        }
        .map_err(settings)?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(settings)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(settings)?;
        // HTTP/2 when the client offers it, HTTP/1.1 otherwise.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ServerMaterial {
            config: Arc::new(config),
            members,
        })
    }

    /// Reads the files again; connections accepted from now on use them. On error the
    /// material in use is kept.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = Self::build(
            &self.files,
            self.client_ca.as_deref(),
            self.require_client_cert,
        )?;
        self.current.set(config);
        Ok(())
    }

    /// Accepts TLS over `tcp`; the member of this cluster the client's certificate names,
    /// if it presented one that does.
    pub async fn accept(
        &self,
        tcp: tokio::net::TcpStream,
    ) -> std::io::Result<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        Option<NodeId>,
    )> {
        let material = self.current.get();
        let tls = tokio_rustls::TlsAcceptor::from(material.config.clone())
            .accept(tcp)
            .await?;
        let conn = tls.get_ref().1;
        let of_cluster_ca = match &material.members {
            None => true,
            Some(verifier) => conn
                .peer_certificates()
                .and_then(|chain| chain.split_first())
                .is_some_and(|(cert, intermediates)| {
                    verifier
                        .verify_client_cert(cert, intermediates, rustls::pki_types::UnixTime::now())
                        .is_ok()
                }),
        };
        let member = if of_cluster_ca {
            peer_node(conn, &self.cluster)
        } else {
            None
        };
        Ok((tls, member))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_are_encoded_into_one_uri_each() {
        assert_eq!(node_uri("prod", 2), "raft://prod/node/2");
        assert_eq!(node_uri("a b/c", 0), "raft://a%20b%2Fc/node/0");
        assert_ne!(node_uri("a/node/1", 2), node_uri("a", 1));
    }

    #[test]
    fn files_that_are_not_pem_are_refused_with_the_path() {
        let dir = std::env::temp_dir().join(format!("raft-net-tls-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let f = dir.join("junk.pem");
        let _ = std::fs::write(&f, b"not pem at all");
        match load_certs(&f) {
            Err(TlsError::Missing { path, .. }) => assert_eq!(path, f),
            other => panic!("{other:?}"),
        }
        assert!(matches!(load_key(&f), Err(TlsError::Missing { .. })));
        assert!(matches!(
            load_certs(&dir.join("absent.pem")),
            Err(TlsError::Read { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
