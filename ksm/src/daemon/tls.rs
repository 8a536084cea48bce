//! TLS on the decode API (`--tls-cert`, `--tls-key`, `--tls-client-ca`), on rustls.
//!
//! yubikey-val calls its KSM URLs with curl, so an `https://` URL is all a validator needs;
//! with `--tls-client-ca`, only validators holding a certificate from that CA get past the
//! handshake (mutual TLS). Only TLS 1.2 and 1.3 are offered, and only HTTP/1.1 over them.
//!
//! The files are read once at start (a bad one stops the daemon there, with the file and the
//! reason) and again on SIGHUP: [`Tls::reload`] builds a whole new configuration and swaps it
//! in only if every file is good, so a renewal half written, or a key that does not match its
//! certificate, leaves the one in force serving. Connections already open keep the
//! configuration they were accepted with; only new handshakes see the new one, so a reload
//! drops nothing.
//!
//! The private key file follows the rule of every key file ([`keyfile::read_private`]):
//! refused unless only its owner may read it, never blocking on a FIFO, and its text wiped
//! once parsed. Errors name the file and say what is wrong; they never quote it.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, RwLock};

use otp_core::keyfile;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroize;

use crate::settings::http::TlsFiles;
use crate::Error;

/// Longest certificate or CA file read: a chain is a few kilobytes; this leaves room for a
/// CA bundle.
const MAX_CERT_FILE: u64 = 4 << 20;

/// The TLS configuration in force, and the files it is read from again on SIGHUP.
pub struct Tls {
    files: TlsFiles,
    /// Replaced whole by [`Tls::reload`]; each new connection takes the one in force when it
    /// is accepted.
    config: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Reads and checks `files`.
    pub fn load(files: TlsFiles) -> Result<Tls, Error> {
        let config = server_config(&files)?;
        Ok(Tls {
            files,
            config: RwLock::new(config),
        })
    }

    /// Reads the files again; on success new handshakes use them, on failure nothing
    /// changes and the error says why.
    pub fn reload(&self) -> Result<(), Error> {
        let config = server_config(&self.files)?;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }

    /// The acceptor for a connection accepted now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.config
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }

    /// The files it reads.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

/// A whole server configuration from `files`: TLS 1.3 and 1.2 on ring, HTTP/1.1, the
/// certificate and key checked to match, and client certificates required if a CA is given.
fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = read_certificates(&files.cert)?;
    let key = read_key(&files.key)?;
    let certified = CertifiedKey::new(chain, key);
    certified.keys_match().map_err(|e| {
        config_error(
            &files.key,
            format!("is not the key of {}: {e}", files.cert.display()),
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Usage(format!("TLS: {e}")))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certificates(ca)? {
                roots.add(cert).map_err(|e| {
                    config_error(
                        ca,
                        format!("holds a certificate that is not a usable CA: {e}"),
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| config_error(ca, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn config_error(path: &Path, reason: String) -> Error {
    Error::Config {
        path: path.to_path_buf(),
        reason,
    }
}

/// Every certificate of a PEM file (at least one).
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = read_public(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| config_error(path, "is not a PEM certificate file".into()))?;
    if certs.is_empty() {
        return Err(config_error(
            path,
            "holds no certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file that only its owner may read. The file's text and the
/// decoded key are wiped here (the PEM decoder's own scratch buffer is not ours to wipe);
/// from then on the key lives only in the signing key ring makes of it.
fn read_key(path: &Path) -> Result<Arc<dyn rustls::sign::SigningKey>, Error> {
    let text = keyfile::read_private(path).map_err(|e| match e {
        otp_core::Error::KeyFile { path, reason } => Error::Config { path, reason },
        other => Error::from(other),
    })?;
    // The parser's errors are not shown: they can quote a line of the file.
    let mut der = PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|_| {
        config_error(
            path,
            "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".into(),
        )
    })?;
    let key = rustls::crypto::ring::sign::any_supported_type(&der);
    der.zeroize();
    key.map_err(|_| config_error(path, "holds a private key of a kind TLS cannot use".into()))
}

/// A file that holds nothing secret, read without blocking on a FIFO and bounded in size.
fn read_public(path: &Path) -> Result<Vec<u8>, Error> {
    let io = |e: std::io::Error| config_error(path, e.to_string());
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(config_error(path, "not a regular file".into()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CERT_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_CERT_FILE {
        return Err(config_error(
            path,
            format!("longer than {MAX_CERT_FILE} bytes: not a certificate file"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A self-signed certificate for localhost and its key, written as `cert.pem` and
    /// `key.pem` (mode 0600) in `dir`; returns the key's PEM text.
    fn write_pair(dir: &Path, name: &str) -> (TlsFiles, String) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let files = TlsFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
            client_ca: None,
        };
        std::fs::write(&files.cert, made.cert.pem()).unwrap();
        let key = made.signing_key.serialize_pem();
        std::fs::write(&files.key, &key).unwrap();
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600)).unwrap();
        (files, key)
    }

    /// The base64 body of a PEM text: what an error must never show.
    fn body_lines(pem: &str) -> Vec<&str> {
        pem.lines().filter(|l| !l.starts_with("-----")).collect()
    }

    #[test]
    fn a_certificate_and_its_private_key_load() {
        let dir = tempfile::tempdir().unwrap();
        let (files, _) = write_pair(dir.path(), "a");
        let tls = Tls::load(files.clone()).unwrap();
        let config = tls.acceptor().config().clone();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        // A client CA: the certificate itself will do as one.
        let mtls = TlsFiles {
            client_ca: Some(files.cert.clone()),
            ..files
        };
        Tls::load(mtls).unwrap();
    }

    #[test]
    fn a_key_file_others_may_read_is_refused_and_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let (files, key) = write_pair(dir.path(), "a");
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = Tls::load(files.clone()).err().expect("refused");
        let text = err.to_string();
        assert!(
            text.contains("mode 0640") && text.contains("chmod 600"),
            "{text}"
        );
        assert!(text.contains(files.key.to_str().unwrap()), "{text}");
        assert_eq!(err.exit_code(), 2);
        for line in body_lines(&key) {
            assert!(!text.contains(line), "{text}");
        }
    }

    #[test]
    fn unusable_files_are_named_and_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let (files, key) = write_pair(dir.path(), "a");
        let (other, _) = write_pair(dir.path(), "b");

        // Another certificate's key.
        let mismatched = TlsFiles {
            key: other.key.clone(),
            ..files.clone()
        };
        let err = Tls::load(mismatched).err().expect("refused").to_string();
        assert!(err.contains("is not the key of"), "{err}");

        // A key file whose PEM is damaged: a line of it must not reach the error.
        let mut damaged = key.clone();
        damaged.insert_str(damaged.find('\n').unwrap() + 1, "%%not base64%%\n");
        std::fs::write(&files.key, &damaged).unwrap();
        let err = Tls::load(files.clone()).err().expect("refused");
        let text = err.to_string();
        assert!(text.contains("no PEM private key"), "{text}");
        assert_eq!(err.exit_code(), 2);
        for line in body_lines(&key) {
            assert!(!text.contains(line), "{text}");
        }
        assert!(!text.contains("not base64"), "{text}");

        // The certificate's file holding a key, or nothing.
        std::fs::write(&files.key, &key).unwrap();
        std::fs::write(&files.cert, &key).unwrap();
        let err = Tls::load(files.clone()).err().expect("refused").to_string();
        assert!(err.contains("holds no certificate"), "{err}");
        assert!(!body_lines(&key).iter().any(|l| err.contains(l)), "{err}");
        let missing = TlsFiles {
            cert: dir.path().join("none.crt"),
            ..files
        };
        let err = Tls::load(missing).err().expect("refused").to_string();
        assert!(err.contains("none.crt"), "{err}");
    }

    #[test]
    fn a_reload_swaps_in_good_files_and_keeps_the_old_ones_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let (files, _) = write_pair(dir.path(), "a");
        let tls = Tls::load(files.clone()).unwrap();
        let first = tls.acceptor().config().clone();

        // A renewal half written: the new certificate, the old key.
        let (renewed, _) = write_pair(dir.path(), "b");
        std::fs::copy(&renewed.cert, &files.cert).unwrap();
        assert!(tls.reload().is_err());
        assert!(Arc::ptr_eq(&first, tls.acceptor().config()));

        // And now its key.
        std::fs::copy(&renewed.key, &files.key).unwrap();
        tls.reload().unwrap();
        assert!(!Arc::ptr_eq(&first, tls.acceptor().config()));
    }
}
