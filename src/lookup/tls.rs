//! TLS for `rediss://` stores: rustls (with the `ring` provider), the server's certificate
//! checked against Mozilla's roots (`webpki-roots`) or against a private CA given as a PEM
//! file (`--tls-ca`), for the host name of the URL.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};

/// How a connection checks its server: the roots and the name its certificate must carry.
#[derive(Clone)]
pub struct TlsSettings {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("server_name", &self.server_name)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl PartialEq for TlsSettings {
    fn eq(&self, other: &Self) -> bool {
        self.server_name == other.server_name && self.ca_file == other.ca_file
    }
}

impl Eq for TlsSettings {}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The CA file could not be read.
    #[error("cannot read the CA file {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// The CA file holds no usable certificate.
    #[error("{path} holds no PEM certificate that can be trusted{detail}")]
    NoCertificate {
        /// The file.
        path: PathBuf,
        /// What rustls said, if anything.
        detail: String,
    },
    /// The host is not a valid name or address for a certificate check.
    #[error("{0:?} is not a host name a certificate can be checked against")]
    Name(String),
}

impl TlsSettings {
    /// Settings that check the server `host` against the certificates of `ca_file` (PEM),
    /// or against Mozilla's roots when there is none.
    pub fn new(host: &str, ca_file: Option<&Path>) -> Result<TlsSettings, TlsSetupError> {
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|_| TlsSetupError::Name(host.to_string()))?;
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Some(path) => {
                for cert in read_certificates(path)? {
                    roots.add(cert).map_err(|e| TlsSetupError::NoCertificate {
                        path: path.to_path_buf(),
                        detail: format!(": {e}"),
                    })?;
                }
            }
        }
        // ring, not aws-lc-rs: it builds with the C compiler alone (no cmake, a fraction of
        // the build time). rustls marks it deprecated because it lacks the post-quantum
        // key exchange (X25519MLKEM768); the classic suites it offers are the ones Redis's
        // OpenSSL negotiates by default.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsSettings {
            config: Arc::new(config),
            server_name,
            ca_file: ca_file.map(Path::to_path_buf),
        })
    }

    /// The rustls configuration.
    pub fn config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }

    /// The name the certificate is checked against.
    pub fn server_name(&self) -> ServerName<'static> {
        self.server_name.clone()
    }
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    use rustls::pki_types::pem::PemObject;
    let text = std::fs::read(path).map_err(|cause| TlsSetupError::Read {
        path: path.to_path_buf(),
        cause,
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsSetupError::NoCertificate {
            path: path.to_path_buf(),
            detail: format!(": {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate {
            path: path.to_path_buf(),
            detail: String::new(),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ca_files_and_names_are_refused_clearly() {
        let dir = std::env::temp_dir().join(format!("ringwait-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = TlsSettings::new("localhost", Some(&empty)).unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        let missing = dir.join("missing.pem");
        let e = TlsSettings::new("localhost", Some(&missing)).unwrap_err();
        assert!(e.to_string().starts_with("cannot read the CA file"), "{e}");
        assert!(TlsSettings::new("", None).is_err());
        assert!(TlsSettings::new("127.0.0.1", None).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
