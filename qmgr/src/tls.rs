//! TLS for the links between managers: loading the PEM files named by `tls.*` settings,
//! building rustls configurations for both ends of a link, and deciding which peers to admit.
//!
//! Owns the rules of mutual authentication; moves no bytes (the QUIC driver hands these
//! configurations to quinn and calls [`peer_manager_name`] and [`admit`] on each connection).
//!
//! Invariants:
//! - only the `ring` provider is used, built with `builder_with_provider`: nothing here relies
//!   on a process default, and [`install_default_provider`] makes ring that default too;
//! - TLS 1.3 only, ALPN [`ALPN`] only, 0-RTT off on both ends (early data can be replayed);
//! - authentication is mutual and always required: a server refuses a client without a
//!   certificate chaining to the configured CA, and a client refuses a server whose
//!   certificate does not chain to it or does not name the manager it dialled;
//! - a peer's identity is the single DNS subject alternative name of its end-entity
//!   certificate, compared byte-wise as a [`ManagerName`]; a chain proves the CA vouched for
//!   that name, and [`admit`] then decides whether that manager may talk to this one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hopmq_routing::{ManagerName, NameError, Topology};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::config::TlsSettings;

/// The application protocol both ends must offer: hopmq's link protocol, version 1. A peer
/// offering anything else fails the handshake.
pub const ALPN: &[u8] = b"hopmq/1";

/// The most certificates read from one PEM file: a leaf and a few intermediates, or a CA
/// bundle. A longer file is refused rather than read without bound.
pub const PEM_CERTS_MAX: usize = 16;

/// Why TLS could not be set up, or a peer could not be identified.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A `tls.*` setting is missing while the manager has links.
    #[error(
        "tls.{setting} is not set; a manager with links needs tls.ca, tls.cert and tls.key \
         (`qmgr certs init` makes development ones)"
    )]
    Missing { setting: &'static str },
    /// A PEM file could not be read or parsed.
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    /// rustls refused the files (e.g. the key does not match the certificate).
    #[error("cannot configure TLS: {error}")]
    Config { error: rustls::Error },
    /// The CA file cannot be used to verify clients.
    #[error("cannot verify clients with the CA: {error}")]
    Verifier {
        error: rustls::server::VerifierBuilderError,
    },
    /// The peer presented no certificate.
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    /// The peer's certificate cannot be parsed.
    #[error("the peer's certificate cannot be parsed: {error}")]
    BadPeerCertificate { error: webpki::Error },
    /// The peer's certificate does not carry exactly one DNS name.
    #[error("the peer's certificate names {count} DNS names; a manager's names exactly one")]
    PeerNameCount { count: usize },
    /// The peer's certificate names something that is not a manager name.
    #[error("the peer's certificate names `{name}`, which is not a manager name: {error}")]
    PeerNameInvalid { name: String, error: NameError },
    /// This manager's certificate names another manager.
    #[error("{} names manager `{named}`, but this manager is `{me}`", path.display())]
    NotMyCertificate {
        path: PathBuf,
        named: ManagerName,
        me: ManagerName,
    },
    /// A manager name that rustls cannot dial as a server name.
    #[error("manager name `{name}` cannot be used as a TLS server name")]
    ServerName { name: ManagerName },
}

/// Why an authenticated peer is not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The certificate names a manager the topology does not declare.
    #[error("`{peer}` is not a manager in the topology")]
    UnknownManager { peer: ManagerName },
    /// The certificate names this manager itself.
    #[error("the peer presents this manager's own name `{peer}`")]
    Myself { peer: ManagerName },
    /// The manager exists but has no link to this one.
    #[error("`{peer}` has no link to `{me}` in the topology")]
    NotLinked { peer: ManagerName, me: ManagerName },
}

/// The CA, certificate chain and key of one manager, read from PEM files.
pub struct TlsFiles {
    /// The certificates trusted as roots: every peer must chain to one.
    pub ca: Vec<CertificateDer<'static>>,
    /// This manager's certificate first, then any intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// This manager's private key.
    pub key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("TlsFiles")
            .field("ca", &self.ca.len())
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl TlsFiles {
    /// Reads the files named by `settings`; each missing setting or bad file is an error
    /// naming it.
    pub fn from_settings(settings: &TlsSettings) -> Result<Self, TlsError> {
        let ca = settings
            .ca
            .as_deref()
            .ok_or(TlsError::Missing { setting: "ca" })?;
        let cert = settings
            .cert
            .as_deref()
            .ok_or(TlsError::Missing { setting: "cert" })?;
        let key = settings
            .key
            .as_deref()
            .ok_or(TlsError::Missing { setting: "key" })?;
        Self::load(ca, cert, key)
    }

    /// Reads a CA file, a certificate file and a key file in PEM, and checks that the key is
    /// the certificate's.
    pub fn load(ca: &Path, cert: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let files = Self {
            ca: load_certs(ca)?,
            chain: load_certs(cert)?,
            key: load_key(key_path)?,
        };
        // rustls would find a mismatch too, but could not say which files are at fault.
        rustls::sign::CertifiedKey::from_der(
            files.chain.clone(),
            files.key.clone_key(),
            &rustls::crypto::ring::default_provider(),
        )
        .map_err(|e| TlsError::File {
            path: key_path.to_owned(),
            reason: format!("not the key of {}: {e}", cert.display()),
        })?;
        Ok(files)
    }
}

/// The TLS configurations of a manager's links, built once at start.
#[derive(Debug, Clone)]
pub struct LinkTls {
    /// For connections other managers dial to this one.
    pub server: Arc<ServerConfig>,
    /// For connections this manager dials.
    pub client: Arc<ClientConfig>,
    /// The key of QUIC stateless resets, derived from this manager's private key: the same
    /// across restarts, so a restarted manager resets its peers' stale connections at once
    /// instead of leaving them to time out.
    pub reset_secret: [u8; 32],
}

/// What a manager called `me` needs for its links: `None` when the topology gives it none,
/// otherwise configurations built from `settings`. There is no plaintext mode: a manager with
/// links and without usable TLS files must not start, and this is the error it reports. The
/// certificate must name `me`, so a manager started with another's files stops here rather
/// than being refused by every peer.
pub fn for_manager(
    settings: &TlsSettings,
    topology: &Topology,
    me: &ManagerName,
) -> Result<Option<LinkTls>, TlsError> {
    if topology.neighbours(me).next().is_none() {
        return Ok(None);
    }
    load_for(settings, me).map(Some)
}

/// True when the settings name any TLS file. A manager without links yet loads them anyway
/// when they are named, so an edit of its topology that gives it links can take effect
/// without a restart.
pub fn configured(settings: &TlsSettings) -> bool {
    settings.ca.is_some() || settings.cert.is_some() || settings.key.is_some()
}

/// The TLS configurations of manager `me`'s links, built from the files `settings` names,
/// whatever its topology says: every missing setting or unusable file is an error, and the
/// certificate must name `me`.
pub fn load_for(settings: &TlsSettings, me: &ManagerName) -> Result<LinkTls, TlsError> {
    install_default_provider();
    let files = TlsFiles::from_settings(settings)?;
    let named = peer_manager_name(&files.chain).map_err(|e| TlsError::File {
        path: settings.cert.clone().unwrap_or_default(),
        reason: e.to_string(),
    })?;
    if named != *me {
        return Err(TlsError::NotMyCertificate {
            path: settings.cert.clone().unwrap_or_default(),
            named,
            me: me.clone(),
        });
    }
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(b"hopmq stateless reset key v1\0");
    context.update(files.key.secret_der());
    let mut reset_secret = [0u8; 32];
    reset_secret.copy_from_slice(context.finish().as_ref());
    Ok(LinkTls {
        server: server_config(&files)?,
        client: client_config(&files)?,
        reset_secret,
    })
}

/// Every certificate in a PEM file; at least one, at most [`PEM_CERTS_MAX`].
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::File {
        path: path.to_owned(),
        reason,
    };
    let mut certs = Vec::new();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(pem_reason(e)))? {
        if certs.len() == PEM_CERTS_MAX {
            return Err(bad(format!("more than {PEM_CERTS_MAX} certificates")));
        }
        certs.push(cert.map_err(|e| bad(pem_reason(e)))?);
    }
    if certs.is_empty() {
        return Err(bad(
            "no certificate (no `BEGIN CERTIFICATE` section)".to_owned()
        ));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        path: path.to_owned(),
        reason: match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no private key (no `BEGIN PRIVATE KEY` section)".to_owned()
            }
            other => pem_reason(other),
        },
    })
}

fn pem_reason(error: rustls_pki_types::pem::Error) -> String {
    match error {
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("not valid PEM: {other}"),
    }
}

/// The crypto provider every TLS configuration here is built with: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process-wide default provider, for code (such as quinn's defaults) that
/// asks for one. Calling it again, or after ring was installed elsewhere, does nothing.
pub fn install_default_provider() {
    // An error means a default is already installed; ours are always built with
    // `builder_with_provider`, so whichever default won does not change them.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn roots(ca: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in ca {
        roots
            .add(cert.clone())
            .map_err(|error| TlsError::Config { error })?;
    }
    Ok(Arc::new(roots))
}

/// The configuration for accepting links: TLS 1.3, a client certificate chaining to the CA
/// required, ALPN [`ALPN`], no early data. Whether the client is admitted is decided after the
/// handshake by [`peer_manager_name`] and [`admit`].
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(&files.ca)?, provider.clone())
        .build()
        .map_err(|error| TlsError::Verifier { error })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| TlsError::Config { error })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(files.chain.clone(), files.key.clone_key())
        .map_err(|error| TlsError::Config { error })?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}

/// The configuration for dialling links: TLS 1.3, the server's certificate must chain to the
/// CA and name the manager dialled (see [`server_name`]), this manager's certificate
/// presented, ALPN [`ALPN`], no early data.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| TlsError::Config { error })?
        .with_root_certificates(roots(&files.ca)?)
        .with_client_auth_cert(files.chain.clone(), files.key.clone_key())
        .map_err(|error| TlsError::Config { error })?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.enable_early_data = false;
    Ok(Arc::new(config))
}

/// The server name to dial `manager` by: its name as a DNS name. rustls matches DNS names
/// without regard to case, so the dialler should also compare [`peer_manager_name`] with
/// `manager` exactly once connected.
pub fn server_name(manager: &ManagerName) -> Result<ServerName<'static>, TlsError> {
    match ServerName::try_from(manager.as_str().to_owned()) {
        Ok(name @ ServerName::DnsName(_)) => Ok(name),
        // A name such as `10.0.0.1` parses as an IP address, which our certificates do not
        // carry.
        _ => Err(TlsError::ServerName {
            name: manager.clone(),
        }),
    }
}

/// The manager a peer's certificate chain names: the single DNS subject alternative name of
/// its end-entity (first) certificate. Call it only on a chain rustls has verified.
pub fn peer_manager_name(certs: &[CertificateDer<'_>]) -> Result<ManagerName, TlsError> {
    let leaf = certs.first().ok_or(TlsError::NoPeerCertificate)?;
    let leaf = webpki::EndEntityCert::try_from(leaf)
        .map_err(|error| TlsError::BadPeerCertificate { error })?;
    let mut names = leaf.valid_dns_names();
    match (names.next(), names.next()) {
        (Some(name), None) => ManagerName::new(name).map_err(|error| TlsError::PeerNameInvalid {
            name: name.to_owned(),
            error,
        }),
        (None, _) => Err(TlsError::PeerNameCount { count: 0 }),
        (Some(_), Some(_)) => Err(TlsError::PeerNameCount {
            count: 2 + names.count(),
        }),
    }
}

/// Admits an authenticated `peer` only if the topology links it to `me`.
pub fn admit(peer: &ManagerName, topology: &Topology, me: &ManagerName) -> Result<(), Refusal> {
    if peer == me {
        return Err(Refusal::Myself { peer: peer.clone() });
    }
    if topology.manager(peer.as_str()).is_none() {
        return Err(Refusal::UnknownManager { peer: peer.clone() });
    }
    match topology.link(peer, me) {
        Some(_) => Ok(()),
        None => Err(Refusal::NotLinked {
            peer: peer.clone(),
            me: me.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rustls::{ClientConnection, ConnectionCommon, ServerConnection};
    use time::OffsetDateTime;

    use super::*;
    use crate::certs::CertificateAuthority;

    /// Enough round trips for a TLS 1.3 handshake with client authentication (it needs two).
    const HANDSHAKE_ROUNDS_MAX: usize = 10;

    fn name(s: &str) -> ManagerName {
        ManagerName::new(s).unwrap()
    }

    fn files(ca: &CertificateAuthority, manager: &str) -> TlsFiles {
        let now = OffsetDateTime::now_utc();
        let (cert, key) = ca.issue(&name(manager), now).unwrap();
        TlsFiles {
            ca: vec![ca.cert().clone()],
            chain: vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
            key: PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        }
    }

    fn new_ca() -> CertificateAuthority {
        CertificateAuthority::generate(OffsetDateTime::now_utc())
            .unwrap()
            .0
    }

    /// Which side failed the handshake, and why.
    #[derive(Debug)]
    enum Failure {
        Server(rustls::Error),
        Client(rustls::Error),
    }

    /// Moves every byte `from` has to send into `to`.
    fn transfer<A, B>(from: &mut ConnectionCommon<A>, to: &mut ConnectionCommon<B>) {
        let mut bytes = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut bytes).unwrap();
        }
        let mut slice = &bytes[..];
        while !slice.is_empty() {
            to.read_tls(&mut slice).unwrap();
        }
    }

    /// Runs a handshake in memory until both sides finish or one fails.
    fn handshake(
        client: &mut ClientConnection,
        server: &mut ServerConnection,
    ) -> Result<(), Failure> {
        for _ in 0..HANDSHAKE_ROUNDS_MAX {
            transfer(&mut **client, &mut **server);
            server.process_new_packets().map_err(Failure::Server)?;
            transfer(&mut **server, &mut **client);
            client.process_new_packets().map_err(Failure::Client)?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the handshake did not finish in {HANDSHAKE_ROUNDS_MAX} rounds");
    }

    fn connect(
        client_files: &TlsFiles,
        server_files: &TlsFiles,
        dial: &str,
    ) -> (ClientConnection, ServerConnection, Result<(), Failure>) {
        let mut client = ClientConnection::new(
            client_config(client_files).unwrap(),
            server_name(&name(dial)).unwrap(),
        )
        .unwrap();
        let mut server = ServerConnection::new(server_config(server_files).unwrap()).unwrap();
        let outcome = handshake(&mut client, &mut server);
        (client, server, outcome)
    }

    #[test]
    fn managers_with_one_ca_authenticate_each_other() {
        let ca = new_ca();
        let (client, server, outcome) =
            connect(&files(&ca, "bravo"), &files(&ca, "alpha"), "alpha");
        outcome.unwrap();
        assert_eq!(server.alpn_protocol(), Some(ALPN));
        assert_eq!(client.alpn_protocol(), Some(b"hopmq/1".as_slice()));
        assert_eq!(
            server.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        let peer = peer_manager_name(server.peer_certificates().unwrap()).unwrap();
        assert_eq!(peer, name("bravo"));
        let dialled = peer_manager_name(client.peer_certificates().unwrap()).unwrap();
        assert_eq!(dialled, name("alpha"));
    }

    #[test]
    fn a_client_certificate_from_another_ca_is_refused() {
        let ours = new_ca();
        let theirs = new_ca();
        let mut intruder = files(&theirs, "bravo");
        // The intruder trusts our CA, so only the server's check can stop it.
        intruder.ca = vec![ours.cert().clone()];
        let (_, _, outcome) = connect(&intruder, &files(&ours, "alpha"), "alpha");
        match outcome {
            // Both development CAs have the same name, so webpki finds "the issuer" and then
            // fails its signature.
            Err(Failure::Server(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature,
            ))) => {}
            other => panic!("expected the server to refuse the certificate, got {other:?}"),
        }
    }

    #[test]
    fn a_client_without_a_certificate_is_refused() {
        let ca = new_ca();
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots(&[ca.cert().clone()]).unwrap())
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN.to_vec()];
        let mut client =
            ClientConnection::new(Arc::new(config), server_name(&name("alpha")).unwrap()).unwrap();
        let mut server =
            ServerConnection::new(server_config(&files(&ca, "alpha")).unwrap()).unwrap();
        match handshake(&mut client, &mut server) {
            Err(Failure::Server(rustls::Error::NoCertificatesPresented)) => {}
            other => panic!("expected the server to demand a certificate, got {other:?}"),
        }
    }

    #[test]
    fn a_server_from_another_ca_or_with_another_name_is_refused() {
        let ours = new_ca();
        let theirs = new_ca();
        let mut impostor = files(&theirs, "alpha");
        impostor.ca = vec![ours.cert().clone()];
        let (_, _, outcome) = connect(&files(&ours, "bravo"), &impostor, "alpha");
        assert!(
            matches!(
                outcome,
                Err(Failure::Client(rustls::Error::InvalidCertificate(_)))
            ),
            "{outcome:?}"
        );
        // charlie's genuine certificate does not make it alpha.
        let (_, _, outcome) = connect(&files(&ours, "bravo"), &files(&ours, "charlie"), "alpha");
        assert!(
            matches!(
                outcome,
                Err(Failure::Client(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName
                        | rustls::CertificateError::NotValidForNameContext { .. }
                )))
            ),
            "{outcome:?}"
        );
    }

    #[test]
    fn a_peer_offering_another_protocol_is_refused() {
        let ca = new_ca();
        let mut config = (*client_config(&files(&ca, "bravo")).unwrap()).clone();
        config.alpn_protocols = vec![b"h3".to_vec()];
        let mut client =
            ClientConnection::new(Arc::new(config), server_name(&name("alpha")).unwrap()).unwrap();
        let mut server =
            ServerConnection::new(server_config(&files(&ca, "alpha")).unwrap()).unwrap();
        assert!(
            matches!(
                handshake(&mut client, &mut server),
                Err(Failure::Server(rustls::Error::NoApplicationProtocol))
            ),
            "the server must refuse a client without hopmq/1"
        );
    }

    #[test]
    fn early_data_is_off() {
        let ca = new_ca();
        let alpha = files(&ca, "alpha");
        assert_eq!(server_config(&alpha).unwrap().max_early_data_size, 0);
        assert!(!client_config(&alpha).unwrap().enable_early_data);
    }

    #[test]
    fn files_written_by_certs_init_load() {
        let folder = tempfile::tempdir().unwrap();
        let topology =
            hopmq_routing::parse("[managers.alpha]\naddress = \"127.0.0.1:7401\"\n", "t.toml")
                .unwrap()
                .topology;
        crate::certs::init(&topology, folder.path(), false, OffsetDateTime::now_utc()).unwrap();
        let loaded = TlsFiles::from_settings(&TlsSettings {
            ca: Some(folder.path().join("ca.pem")),
            cert: Some(folder.path().join("alpha.pem")),
            key: Some(folder.path().join("alpha.key")),
        })
        .unwrap();
        server_config(&loaded).unwrap();
        client_config(&loaded).unwrap();
        assert_eq!(peer_manager_name(&loaded.chain).unwrap(), name("alpha"));
    }

    #[test]
    fn bad_files_are_named_in_the_error() {
        let folder = tempfile::tempdir().unwrap();
        let missing = folder.path().join("missing.pem");
        let error = load_certs(&missing).unwrap_err().to_string();
        assert!(error.contains("missing.pem"), "{error}");
        let garbage = folder.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let error = load_certs(&garbage).unwrap_err().to_string();
        assert!(
            error.contains("garbage.pem") && error.contains("no certificate"),
            "{error}"
        );
        let error = load_key(&garbage).unwrap_err().to_string();
        assert!(
            error.contains("garbage.pem") && error.contains("no private key"),
            "{error}"
        );
        let certs = tempfile::tempdir().unwrap();
        let topology = diamond();
        crate::certs::init(&topology, certs.path(), false, OffsetDateTime::now_utc()).unwrap();
        let error = TlsFiles::load(
            &certs.path().join("ca.pem"),
            &certs.path().join("alpha.pem"),
            &certs.path().join("bravo.key"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("bravo.key: not the key of") && error.contains("alpha.pem"),
            "{error}"
        );
        let error = TlsFiles::from_settings(&TlsSettings::default()).unwrap_err();
        assert!(
            matches!(error, TlsError::Missing { setting: "ca" }),
            "{error}"
        );
    }

    #[test]
    fn only_the_single_dns_name_identifies_a_peer() {
        assert!(matches!(
            peer_manager_name(&[]),
            Err(TlsError::NoPeerCertificate)
        ));
        let key = rcgen::KeyPair::generate().unwrap();
        let two = rcgen::CertificateParams::new(vec!["alpha".to_owned(), "bravo".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert!(matches!(
            peer_manager_name(&[two.der().clone()]),
            Err(TlsError::PeerNameCount { count: 2 })
        ));
        let wildcard = rcgen::CertificateParams::new(vec!["*.example.com".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let outcome = peer_manager_name(&[wildcard.der().clone()]);
        assert!(
            matches!(outcome, Err(TlsError::PeerNameInvalid { .. })),
            "{outcome:?}"
        );
    }

    fn diamond() -> Topology {
        hopmq_routing::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../topology.toml"
        )))
        .unwrap()
        .topology
    }

    #[test]
    fn admit_accepts_only_linked_managers() {
        let topology = diamond();
        let alpha = name("alpha");
        assert_eq!(admit(&name("bravo"), &topology, &alpha), Ok(()));
        assert_eq!(admit(&name("charlie"), &topology, &alpha), Ok(()));
        assert_eq!(admit(&alpha, &topology, &name("bravo")), Ok(()));
        assert_eq!(
            admit(&name("delta"), &topology, &alpha),
            Err(Refusal::NotLinked {
                peer: name("delta"),
                me: alpha.clone()
            })
        );
        assert_eq!(
            admit(&name("mallory"), &topology, &alpha),
            Err(Refusal::UnknownManager {
                peer: name("mallory")
            })
        );
        assert_eq!(
            admit(&alpha, &topology, &alpha),
            Err(Refusal::Myself {
                peer: alpha.clone()
            })
        );
        let standalone = Topology::standalone(alpha.clone());
        assert!(admit(&name("bravo"), &standalone, &alpha).is_err());
    }

    #[test]
    fn a_manager_with_links_needs_its_own_certificate() {
        let folder = tempfile::tempdir().unwrap();
        let topology = diamond();
        crate::certs::init(&topology, folder.path(), false, OffsetDateTime::now_utc()).unwrap();
        let settings = |manager: &str| TlsSettings {
            ca: Some(folder.path().join("ca.pem")),
            cert: Some(folder.path().join(format!("{manager}.pem"))),
            key: Some(folder.path().join(format!("{manager}.key"))),
        };
        let alpha = name("alpha");
        assert!(
            for_manager(&settings("alpha"), &topology, &alpha)
                .unwrap()
                .is_some()
        );
        let error = for_manager(&TlsSettings::default(), &topology, &alpha).unwrap_err();
        assert!(matches!(error, TlsError::Missing { .. }), "{error}");
        let error = for_manager(&settings("bravo"), &topology, &alpha).unwrap_err();
        assert!(
            matches!(error, TlsError::NotMyCertificate { .. }),
            "{error}"
        );
        // Named files are loaded without links too, and checked just as strictly.
        assert!(configured(&settings("alpha")));
        assert!(!configured(&TlsSettings::default()));
        load_for(&settings("alpha"), &alpha).unwrap();
        let error = load_for(&settings("bravo"), &alpha).unwrap_err();
        assert!(
            matches!(error, TlsError::NotMyCertificate { .. }),
            "{error}"
        );
        // A standalone manager has no links and needs nothing.
        let standalone = Topology::standalone(alpha.clone());
        assert!(
            for_manager(&TlsSettings::default(), &standalone, &alpha)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn install_default_provider_is_idempotent() {
        install_default_provider();
        install_default_provider();
        assert!(CryptoProvider::get_default().is_some());
    }
}
