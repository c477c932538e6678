//! Issuing a cluster's certificates (rcgen): a CA, member certificates that name their node
//! the way [`crate::tls`] checks, and client certificates for the HTTP API. Keys are ECDSA
//! P-256, written as PKCS#8 PEM.

use std::time::{Duration, SystemTime};

use raft_core::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::tls::{node_uri, peer_dns_name};

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the request (a host name that is not valid, say).
    #[error("cannot make the certificate: {0}")]
    Make(String),
    /// The CA's certificate or key could not be read.
    #[error("cannot use the CA: {0}")]
    Ca(String),
}

fn make(e: impl std::fmt::Display) -> CertError {
    CertError::Make(e.to_string())
}

/// When a certificate is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// Not before.
    pub not_before: SystemTime,
    /// Not after.
    pub not_after: SystemTime,
}

impl Validity {
    /// From an hour ago (clocks differ a little) to `days` days from now.
    pub fn days(days: u32) -> Validity {
        let now = SystemTime::now();
        Validity {
            not_before: now.checked_sub(Duration::from_secs(3600)).unwrap_or(now),
            not_after: now
                .checked_add(Duration::from_secs(u64::from(days) * 86_400))
                .unwrap_or(now),
        }
    }

    fn apply(&self, p: &mut CertificateParams) {
        p.not_before = self.not_before.into();
        p.not_after = self.not_after.into();
    }
}

/// A certificate and its private key, PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (keep it secret: mode 0600).
    pub key_pem: String,
}

/// A cluster's certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A new CA for `cluster`.
    pub fn generate(cluster: &str, validity: Validity) -> Result<Ca, CertError> {
        let key = KeyPair::generate().map_err(make)?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(make)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("raft cluster {cluster} CA"));
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity.apply(&mut p);
        let cert = p.self_signed(&key).map_err(make)?;
        let key_pem = key.serialize_pem();
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(p, key),
        })
    }

    /// The CA saved by [`Ca::generate`] (its certificate and key, PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, CertError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| CertError::Ca(e.to_string()))?;
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| CertError::Ca(e.to_string()))?;
        let key_pem = key_pem.to_string();
        Ok(Ca {
            issuer,
            cert_pem: cert_pem.to_string(),
            key_pem,
        })
    }

    /// The CA's certificate, PEM: every member and client trusts it.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PEM: keep it off the members if you can.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A certificate for node `id` of `cluster`, for its peer connections and its HTTP API:
    /// it names the node ([`node_uri`], [`peer_dns_name`]) and `hosts` (DNS names or IP
    /// addresses clients reach its API by).
    pub fn issue_node(
        &self,
        cluster: &str,
        id: NodeId,
        hosts: &[String],
        validity: Validity,
    ) -> Result<Issued, CertError> {
        let mut names = vec![peer_dns_name(id)];
        names.extend(hosts.iter().cloned());
        let mut p = CertificateParams::new(names).map_err(make)?;
        let uri = node_uri(cluster, id).try_into().map_err(make)?;
        p.subject_alt_names.push(SanType::URI(uri));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("node {id} of {cluster}"));
        p.distinguished_name = dn;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        validity.apply(&mut p);
        self.sign(&p)
    }

    /// A client certificate named `name`, for the HTTP API when it asks for one.
    pub fn issue_client(&self, name: &str, validity: Validity) -> Result<Issued, CertError> {
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(make)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        p.distinguished_name = dn;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        validity.apply(&mut p);
        self.sign(&p)
    }

    fn sign(&self, p: &CertificateParams) -> Result<Issued, CertError> {
        let key = KeyPair::generate().map_err(make)?;
        let cert = p.signed_by(&key, &self.issuer).map_err(make)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    use super::*;
    use crate::tls::{certificate_node, certificate_uris};

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_node_certificate_names_its_node_of_its_cluster_only() {
        let ca = Ca::generate("prod", Validity::days(1)).unwrap_or_else(|e| panic!("{e}"));
        let n = ca
            .issue_node(
                "prod",
                2,
                &["db2.example".into(), "10.0.0.2".into()],
                Validity::days(1),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let cert = der(&n.cert_pem);
        assert_eq!(certificate_node(&cert, "prod"), Some(2));
        assert_eq!(certificate_node(&cert, "staging"), None);
        assert_eq!(certificate_uris(&cert), vec![node_uri("prod", 2)]);
    }

    #[test]
    fn a_saved_ca_issues_certificates_that_chain_to_it() {
        let ca = Ca::generate("c", Validity::days(1)).unwrap_or_else(|e| panic!("{e}"));
        let again = Ca::from_pem(ca.cert_pem(), ca.key_pem()).unwrap_or_else(|e| panic!("{e}"));
        let n = again
            .issue_node("c", 1, &[], Validity::days(1))
            .unwrap_or_else(|e| panic!("{e}"));
        // Verified as a client certificate by the CA's root store, as an acceptor does.
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(der(ca.cert_pem()))
            .unwrap_or_else(|e| panic!("{e}"));
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            crate::tls::provider(),
        )
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
        let now = rustls::pki_types::UnixTime::now();
        assert!(verifier
            .verify_client_cert(&der(&n.cert_pem), &[], now)
            .is_ok());
        assert!(Ca::from_pem("junk", ca.key_pem()).is_err());
    }
}
