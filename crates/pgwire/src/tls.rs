//! TLS for the listener (PEM certificate chain and key), and the rule that a password never
//! crosses a network in clear text unless the operator says so.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use pgwire::tokio::TlsAcceptor;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;

use crate::config::PgConfig;
use crate::error::PgError;

/// The acceptor for `--pg-tls-cert/--pg-tls-key`, or `None` when neither is given and every
/// address the listener would bind is loopback (or cleartext is waived).
pub(crate) fn acceptor(
    config: &PgConfig,
    addrs: &[SocketAddr],
) -> Result<Option<TlsAcceptor>, PgError> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => load(cert, key).map(Some),
        (None, None) => {
            if addrs.iter().all(|a| a.ip().is_loopback()) || config.allow_cleartext {
                Ok(None)
            } else {
                Err(PgError::CleartextOffLoopback {
                    addr: config.listen.clone(),
                })
            }
        }
        _ => Err(PgError::HalfTls),
    }
}

fn load(cert: &Path, key: &Path) -> Result<TlsAcceptor, PgError> {
    let tls =
        |what: &Path, e: &dyn std::fmt::Display| PgError::Tls(format!("{}: {e}", what.display()));
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(cert, &e))?;
    if chain.is_empty() {
        return Err(tls(cert, &"no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| tls(key, &e))?;
    let mut server = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| PgError::Tls(e.to_string()))?;
    // Clients that connect with direct TLS (Postgres 17+) name this protocol.
    server.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}
