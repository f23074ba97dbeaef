//! Development certificates for the links between managers: one CA, and one certificate and
//! key per manager in a topology (`qmgr certs init`).
//!
//! Owns the layout of a certificate folder (`ca.pem`, `ca.key`, `<manager>.pem`,
//! `<manager>.key`) and how its files are made. It does not load them for TLS: `crate::tls`
//! does that, from the paths in `tls.*` settings.
//!
//! Invariants:
//! - a manager's certificate names the manager exactly once, as its only DNS subject
//!   alternative name (also its common name), and is valid for both ends of a link
//!   (serverAuth and clientAuth);
//! - every certificate this module issues or keeps chains to the folder's `ca.pem`: a leaf is
//!   checked with webpki right after it is signed, and a kept one right after it is read,
//!   together with its key;
//! - private keys are written owner-only (0600), the folder is created owner-only (0700), and
//!   a file is written under a temporary name and renamed, so a crash leaves no half file;
//! - an existing CA is never replaced, and an existing manager pair only with `force`.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use hopmq_routing::{ManagerName, Topology};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use time::{Duration, OffsetDateTime};

/// The CA's certificate in a certificate folder.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA's private key in a certificate folder.
pub const CA_KEY_FILE: &str = "ca.key";

/// How long issued certificates are valid: ten years, because these are development
/// certificates that nobody should have to renew mid-experiment. Production deployments bring
/// their own CA and point `tls.*` at its files.
pub const VALIDITY_DAYS: i64 = 3650;

/// How far back `not_before` is set, so that a peer whose clock is a little behind still
/// accepts a certificate made a moment ago.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::hours(1);

/// The CA's common name. [`ca_params`] must produce the same distinguished name every time:
/// a reused CA is rebuilt from it to sign new certificates (rcgen cannot parse a certificate
/// without its `x509-parser` feature), and the result is checked against `ca.pem`.
const CA_COMMON_NAME: &str = "hopmq development CA";

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// A file or folder could not be read or written.
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    /// A file exists but is not what it should be.
    #[error("{}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
    /// Only one file of a certificate and key pair exists.
    #[error(
        "{} exists but {} does not; {advice}",
        present.display(),
        missing.display()
    )]
    HalfPair {
        present: PathBuf,
        missing: PathBuf,
        advice: &'static str,
    },
    /// rcgen refused to make a key or a certificate.
    #[error("cannot make the certificate for {subject}: {error}")]
    Generate {
        subject: String,
        error: rcgen::Error,
    },
    /// A manager name that a certificate cannot carry as a DNS name.
    #[error(
        "manager `{manager}` cannot be named in a certificate: TLS needs a DNS name (labels \
         of letters, digits, `-` and `_`, not starting or ending with `-`, the last one not \
         all digits)"
    )]
    NotADnsName { manager: ManagerName },
    /// A certificate does not chain to the folder's CA.
    #[error("{} is not signed by {}: {reason}", cert.display(), ca.display())]
    NotIssuedByCa {
        cert: PathBuf,
        ca: PathBuf,
        reason: String,
    },
}

/// What happened to one pair of files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Made now.
    Created,
    /// Already there and still signed by the CA; left alone.
    Kept,
    /// Already there and made again because of `force`.
    Replaced,
}

impl fmt::Display for Fate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Created => "created",
            Self::Kept => "kept",
            Self::Replaced => "replaced",
        })
    }
}

/// What [`init`] did, in the order it did it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    /// The CA pair.
    pub ca: Fate,
    /// Each manager's pair, by name.
    pub managers: Vec<(ManagerName, Fate)>,
}

/// The files of one manager in a certificate folder.
pub fn manager_files(folder: &Path, manager: &ManagerName) -> (PathBuf, PathBuf) {
    (
        folder.join(format!("{manager}.pem")),
        folder.join(format!("{manager}.key")),
    )
}

/// Makes (or completes) a certificate folder for `topology`: a CA unless one is there, and a
/// certificate and key for every manager that has none (for every manager with `force`).
pub fn init(
    topology: &Topology,
    folder: &Path,
    force: bool,
    now: OffsetDateTime,
) -> Result<InitReport, CertsError> {
    create_folder(folder)?;
    let (ca, ca_fate) = load_or_create_ca(folder, now)?;
    let mut managers = Vec::with_capacity(topology.managers().len());
    for manager in topology.managers() {
        let fate = issue_or_keep(&ca, folder, &manager.name, force, now)?;
        managers.push((manager.name.clone(), fate));
    }
    Ok(InitReport {
        ca: ca_fate,
        managers,
    })
}

/// A CA able to sign, with its certificate to check what it signs against.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
    cert_path: PathBuf,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The signing key stays out of logs.
        f.debug_struct("CertificateAuthority")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A new CA in memory, valid from `now` for [`VALIDITY_DAYS`]; returns it with its
    /// certificate and key in PEM.
    pub fn generate(now: OffsetDateTime) -> Result<(Self, String, String), CertsError> {
        let generate = |error| CertsError::Generate {
            subject: CA_COMMON_NAME.to_owned(),
            error,
        };
        let key = KeyPair::generate().map_err(generate)?;
        let params = validity(ca_params(), now);
        let cert = params.self_signed(&key).map_err(generate)?;
        let key_pem = key.serialize_pem();
        let authority = Self {
            issuer: Issuer::new(ca_params(), key),
            cert: cert.der().clone(),
            cert_path: PathBuf::from(CA_CERT_FILE),
        };
        Ok((authority, cert.pem(), key_pem))
    }

    /// The CA's certificate.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// A certificate and key for `manager`, valid from `now` for [`VALIDITY_DAYS`], checked to
    /// chain to this CA; both in PEM.
    pub fn issue(
        &self,
        manager: &ManagerName,
        now: OffsetDateTime,
    ) -> Result<(String, String), CertsError> {
        let generate = |error| CertsError::Generate {
            subject: format!("manager `{manager}`"),
            error,
        };
        if rustls_pki_types::DnsName::try_from(manager.as_str()).is_err() {
            return Err(CertsError::NotADnsName {
                manager: manager.clone(),
            });
        }
        let key = KeyPair::generate().map_err(generate)?;
        let params = validity(leaf_params(manager).map_err(generate)?, now);
        let cert = params.signed_by(&key, &self.issuer).map_err(generate)?;
        self.check_issued(cert.der(), Path::new(&format!("{manager}.pem")))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Fails unless `cert` chains to this CA and is valid now for both ends of a link.
    fn check_issued(&self, cert: &CertificateDer<'_>, path: &Path) -> Result<(), CertsError> {
        let not_issued = |reason: String| CertsError::NotIssuedByCa {
            cert: path.to_owned(),
            ca: self.cert_path.clone(),
            reason,
        };
        let anchor = webpki::anchor_from_trusted_cert(&self.cert)
            .map_err(|e| not_issued(format!("the CA certificate is unusable: {e}")))?;
        let leaf = webpki::EndEntityCert::try_from(cert).map_err(|e| not_issued(e.to_string()))?;
        let algorithms = rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .all;
        for usage in [
            webpki::KeyUsage::server_auth(),
            webpki::KeyUsage::client_auth(),
        ] {
            leaf.verify_for_usage(
                algorithms,
                std::slice::from_ref(&anchor),
                &[],
                UnixTime::now(),
                usage,
                None,
                None,
            )
            .map_err(|e| not_issued(e.to_string()))?;
        }
        Ok(())
    }
}

/// The CA's parameters, without validity dates: the same every time (see [`CA_COMMON_NAME`]).
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = name;
    // Constrained(0): the CA signs managers' certificates, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// A manager's parameters, without validity dates. The SAN is built as a DNS name explicitly:
/// `CertificateParams::new` would turn a name such as `10.0.0.1` into an IP address SAN.
fn leaf_params(manager: &ManagerName) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, manager.as_str());
    params.distinguished_name = name;
    params.subject_alt_names = vec![SanType::DnsName(manager.as_str().try_into()?)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn validity(mut params: CertificateParams, now: OffsetDateTime) -> CertificateParams {
    params.not_before = now - CLOCK_SKEW_ALLOWANCE;
    params.not_after = now + Duration::days(VALIDITY_DAYS);
    params
}

fn create_folder(folder: &Path) -> Result<(), CertsError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(folder)
        .map_err(|error| CertsError::Io {
            path: folder.to_owned(),
            error,
        })
}

fn load_or_create_ca(
    folder: &Path,
    now: OffsetDateTime,
) -> Result<(CertificateAuthority, Fate), CertsError> {
    let cert_path = folder.join(CA_CERT_FILE);
    let key_path = folder.join(CA_KEY_FILE);
    match (exists(&cert_path)?, exists(&key_path)?) {
        (false, false) => {
            let (mut ca, cert_pem, key_pem) = CertificateAuthority::generate(now)?;
            // The key first: a certificate without its key would be a half pair on retry.
            write_file(&key_path, key_pem.as_bytes(), 0o600)?;
            write_file(&cert_path, cert_pem.as_bytes(), 0o644)?;
            ca.cert_path = cert_path;
            Ok((ca, Fate::Created))
        }
        (true, true) => {
            let key_pem = read_to_string(&key_path)?;
            let key = KeyPair::from_pem(&key_pem).map_err(|e| CertsError::BadFile {
                path: key_path.clone(),
                reason: format!("not a private key in PEM: {e}"),
            })?;
            let cert =
                CertificateDer::from_pem_file(&cert_path).map_err(|e| CertsError::BadFile {
                    path: cert_path.clone(),
                    reason: format!("not a certificate in PEM: {e}"),
                })?;
            check_key_matches(cert.clone(), &cert_path, &key_path)?;
            let ca = CertificateAuthority {
                issuer: Issuer::new(ca_params(), key),
                cert,
                cert_path,
            };
            Ok((ca, Fate::Kept))
        }
        (true, false) => Err(CertsError::HalfPair {
            present: cert_path,
            missing: key_path,
            advice: "without its key the CA cannot sign; remove the folder to start over",
        }),
        (false, true) => Err(CertsError::HalfPair {
            present: key_path,
            missing: cert_path,
            advice: "remove the folder to start over",
        }),
    }
}

fn issue_or_keep(
    ca: &CertificateAuthority,
    folder: &Path,
    manager: &ManagerName,
    force: bool,
    now: OffsetDateTime,
) -> Result<Fate, CertsError> {
    let (cert_path, key_path) = manager_files(folder, manager);
    let fate = match (exists(&cert_path)?, exists(&key_path)?) {
        (false, false) => Fate::Created,
        _ if force => Fate::Replaced,
        (true, true) => {
            let cert =
                CertificateDer::from_pem_file(&cert_path).map_err(|e| CertsError::BadFile {
                    path: cert_path.clone(),
                    reason: format!("not a certificate in PEM: {e}"),
                })?;
            ca.check_issued(&cert, &cert_path)?;
            check_key_matches(cert, &cert_path, &key_path)?;
            return Ok(Fate::Kept);
        }
        (true, false) => {
            return Err(CertsError::HalfPair {
                present: cert_path,
                missing: key_path,
                advice: "run again with --force to make both again",
            });
        }
        (false, true) => {
            return Err(CertsError::HalfPair {
                present: key_path,
                missing: cert_path,
                advice: "run again with --force to make both again",
            });
        }
    };
    let (cert_pem, key_pem) = ca.issue(manager, now)?;
    write_file(&key_path, key_pem.as_bytes(), 0o600)?;
    write_file(&cert_path, cert_pem.as_bytes(), 0o644)?;
    Ok(fate)
}

/// Fails unless the key in `key_path` is the private half of `cert`'s public key.
fn check_key_matches(
    cert: CertificateDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), CertsError> {
    let mismatch = |reason: String| CertsError::BadFile {
        path: key_path.to_owned(),
        reason,
    };
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| mismatch(format!("not a private key in PEM: {e}")))?;
    rustls::sign::CertifiedKey::from_der(vec![cert], key, &rustls::crypto::ring::default_provider())
        .map(drop)
        .map_err(|e| mismatch(format!("not the key of {}: {e}", cert_path.display())))
}

fn exists(path: &Path) -> Result<bool, CertsError> {
    path.try_exists().map_err(|error| CertsError::Io {
        path: path.to_owned(),
        error,
    })
}

fn read_to_string(path: &Path) -> Result<String, CertsError> {
    fs::read_to_string(path).map_err(|error| CertsError::Io {
        path: path.to_owned(),
        error,
    })
}

/// Writes `bytes` to a temporary file created with `mode`, syncs it, and renames it over
/// `path`: readers see the old file or the whole new one, and a key is never readable by
/// others, not even for a moment.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertsError> {
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |error| CertsError::Io { path, error }
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    // A temporary file left by an interrupted run may have any mode: start afresh.
    match fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&temporary)(e)),
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .map_err(io_error(&temporary))?;
    file.write_all(bytes).map_err(io_error(&temporary))?;
    file.sync_all().map_err(io_error(&temporary))?;
    fs::rename(&temporary, path).map_err(io_error(path))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn name(s: &str) -> ManagerName {
        ManagerName::new(s).unwrap()
    }

    #[test]
    fn an_issued_certificate_names_its_manager_and_chains_to_the_ca() {
        let now = OffsetDateTime::now_utc();
        let (ca, _, _) = CertificateAuthority::generate(now).unwrap();
        for manager in ["alpha", "node_7", "10.0.0.a"] {
            let (cert_pem, _) = ca.issue(&name(manager), now).unwrap();
            let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
            ca.check_issued(&cert, Path::new("x.pem")).unwrap();
            let leaf = webpki::EndEntityCert::try_from(&cert).unwrap();
            let names: Vec<&str> = leaf.valid_dns_names().collect();
            assert_eq!(names, [manager]);
        }
    }

    #[test]
    fn a_manager_name_that_is_no_dns_name_gets_no_certificate() {
        let now = OffsetDateTime::now_utc();
        let (ca, _, _) = CertificateAuthority::generate(now).unwrap();
        for manager in ["10.0.0.1", "-alpha", "alpha..bravo", "7"] {
            let error = ca.issue(&name(manager), now).unwrap_err();
            assert!(
                matches!(error, CertsError::NotADnsName { .. }),
                "{manager}: {error}"
            );
        }
    }

    #[test]
    fn a_certificate_from_another_ca_is_not_kept() {
        let now = OffsetDateTime::now_utc();
        let (ours, _, _) = CertificateAuthority::generate(now).unwrap();
        let (theirs, _, _) = CertificateAuthority::generate(now).unwrap();
        let (cert_pem, _) = theirs.issue(&name("alpha"), now).unwrap();
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let error = ours
            .check_issued(&cert, Path::new("alpha.pem"))
            .unwrap_err();
        assert!(matches!(error, CertsError::NotIssuedByCa { .. }), "{error}");
    }
}
