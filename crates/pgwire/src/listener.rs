//! The listener: bound (and its TLS rule checked) before the server writes anything, then
//! serving once the server is ready, one task per connection, until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pgwire::tokio::{TlsAcceptor, process_socket};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{info, warn};

use crate::catalog::PgCatalog;
use crate::config::{PgConfig, Tenants};
use crate::error::PgError;
use crate::handler::Handlers;
use crate::tls::acceptor;

pub struct PgListener {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    catalog: Arc<PgCatalog>,
    config: PgConfig,
    local: SocketAddr,
}

/// Binds `config.listen`; refuses cleartext passwords off loopback unless waived, and
/// unreadable certificates, before anything else starts.
pub async fn bind(config: &PgConfig) -> Result<PgListener, PgError> {
    let listen_error = |reason: String| PgError::Listen {
        addr: config.listen.clone(),
        reason,
    };
    if !config.listen.contains(':') {
        return Err(listen_error(
            "no port: give host:port, e.g. 127.0.0.1:5433".into(),
        ));
    }
    // Checked before binding: a refused configuration never opens the port.
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&config.listen)
        .await
        .map_err(|e| listen_error(e.to_string()))?
        .collect();
    let tls = acceptor(config, &addrs)?;
    let listener = TcpListener::bind(addrs.as_slice())
        .await
        .map_err(|e| listen_error(e.to_string()))?;
    let local = listener
        .local_addr()
        .map_err(|e| listen_error(e.to_string()))?;
    if tls.is_none() && !local.ip().is_loopback() {
        warn!(address = %local, "postgres protocol without TLS off loopback (--pg-allow-cleartext): API keys cross the network in clear text");
    }
    Ok(PgListener {
        listener,
        tls,
        catalog: Arc::new(PgCatalog::new()?),
        config: config.clone(),
        local,
    })
}

impl PgListener {
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Accepts connections until `stop` turns true; connections in flight end with the
    /// process.
    pub async fn serve(self, tenants: Arc<dyn Tenants>, mut stop: watch::Receiver<bool>) {
        let handlers = Arc::new(Handlers::new(
            tenants,
            self.catalog.clone(),
            self.config.allow_cleartext,
        ));
        let permits = Arc::new(Semaphore::new(self.config.max_connections.max(1)));
        info!(address = %self.local, tls = self.tls.is_some(), "postgres protocol listening");
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = stop.changed() => break,
            };
            let (socket, peer) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        warn!("postgres accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stop.changed() => break,
            };
            let _ = socket.set_nodelay(true);
            let tls = self.tls.clone();
            let handlers = handlers.clone();
            tokio::spawn(async move {
                if let Err(e) = process_socket(socket, tls, handlers).await {
                    tracing::debug!(peer = %peer, "postgres connection ended: {e}");
                }
                drop(permit);
            });
        }
    }
}
