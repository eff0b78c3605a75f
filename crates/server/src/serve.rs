//! The process: validate and bind, lock the data directory, open the catalog (creating the
//! first organisation), replay the log, serve until SIGTERM, then flush.

use std::fs::{self, File};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use meterbase_catalog::Catalog;
use meterbase_query::QueryEngine;
use meterbase_storage::{StorageConfig, Store, parse_object_store_url};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{error, info, warn};

use crate::app::{App, DecoderCache, Shared};
use crate::config::ServerConfig;
use crate::error::ServerError;
use crate::prometheus::Metrics;

fn lock_data_dir(dir: &std::path::Path) -> Result<File, ServerError> {
    fs::create_dir_all(dir).map_err(|e| ServerError::Io(dir.display().to_string(), e))?;
    let path = dir.join("LOCK");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| ServerError::Io(path.display().to_string(), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(_) => Err(ServerError::Startup(format!(
            "data directory {} is in use by another meterbase server (lock {} is held)",
            dir.display(),
            path.display()
        ))),
    }
}

fn write_default_key(dir: &std::path::Path, key: &str) -> Result<PathBuf, ServerError> {
    let path = dir.join("default-api-key");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| ServerError::Io(path.display().to_string(), e))?;
    writeln!(f, "{key}")
        .and_then(|()| f.sync_all())
        .map_err(|e| ServerError::Io(path.display().to_string(), e))?;
    Ok(path)
}

/// The listener, or why the address cannot be listened on, said the way the user can fix it.
async fn bind(listen: &str) -> Result<TcpListener, ServerError> {
    if listen.parse::<SocketAddr>().is_err() && !listen.contains(':') {
        return Err(ServerError::Startup(format!(
            "--listen {listen:?} has no port: give host:port, e.g. 127.0.0.1:8080"
        )));
    }
    TcpListener::bind(listen).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (another process listens there: stop it or choose another --listen)"
        } else {
            ""
        };
        ServerError::Startup(format!("cannot listen on {listen}: {e}{hint}"))
    })
}

/// Runs the server until SIGTERM/SIGINT, then flushes and returns.
pub async fn run(config: ServerConfig) -> Result<(), ServerError> {
    // What the configuration can get wrong is found before anything is written: a failed
    // start leaves no catalog, API key or organisation behind.
    let listener = bind(&config.listen).await?;
    let pg = match &config.pg {
        Some(pg) => Some(
            meterbase_pgwire::bind(pg)
                .await
                .map_err(|e| ServerError::Startup(e.to_string()))?,
        ),
        None => None,
    };
    let object_store_url = config.object_store.clone().unwrap_or_else(|| {
        format!(
            "file://{}",
            absolute(&config.data_dir.join("store")).display()
        )
    });
    let mut handle = parse_object_store_url(&object_store_url)?;
    let _lock = lock_data_dir(&config.data_dir)?;
    let catalog = Catalog::open(config.data_dir.join("catalog.json"))?;
    if !catalog.has_organisations() {
        let (org, key) = catalog.create_organisation("default")?;
        let path = write_default_key(&config.data_dir, &key.key)?;
        info!(organisation = %org.id, key_file = %path.display(), "first start: created organisation 'default'; its API key is in the key file");
    }
    let faults = config.fault_injection.then(|| {
        warn!("fault injection is on (POST /admin/faults): for tests only");
        let faults = Arc::new(meterbase_storage::Faults::default());
        handle.store = Arc::new(meterbase_storage::FaultyStore::new(
            handle.store.clone(),
            faults.clone(),
        ));
        faults
    });

    let local: SocketAddr = listener
        .local_addr()
        .map_err(|e| ServerError::Io(config.listen.clone(), e))?;
    fs::write(config.data_dir.join("listen-addr"), local.to_string())
        .map_err(|e| ServerError::Io("listen-addr".into(), e))?;
    info!(address = %local, object_store = %handle.url, data_dir = %config.data_dir.display(), "listening (replaying the write-ahead log before serving)");
    if let Some(pg) = &pg {
        // Connections wait in the backlog until replay is done.
        fs::write(
            config.data_dir.join("pg-listen-addr"),
            pg.local_addr().to_string(),
        )
        .map_err(|e| ServerError::Io("pg-listen-addr".into(), e))?;
    }

    let shared = Arc::new(Shared {
        app: std::sync::OnceLock::new(),
        ready: AtomicBool::new(false),
        metrics: Arc::new(Metrics::new()),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let accept = tokio::spawn(accept_loop(
        listener,
        shared.clone(),
        config.clone(),
        stop_rx.clone(),
    ));

    let mut storage = StorageConfig::new(config.data_dir.join("wal"));
    storage.wal.sync = config.sync;
    storage.wal.preallocate = config.wal_preallocate;
    storage.flush_bytes = config.flush_bytes;
    storage.flush_age = config.flush_age;
    storage.max_buffer_bytes = config.max_buffer_bytes;
    storage.buffer_wait = config.buffer_wait;
    storage.skip_wal_corruption = config.skip_wal_corruption;
    storage.compaction = config.compaction.clone();
    // Delta versions stay readable for their retention: garbage collection asks the
    // publisher before deleting a file one of them lists.
    storage.compaction.outside_retention = config.open_tables.as_ref().map(|d| d.retention);
    let store = match Store::open(handle.clone(), storage, catalog.all_event_types()).await {
        Ok(s) => s,
        Err(e) => {
            let _ = stop_tx.send(true);
            return Err(e.into());
        }
    };
    let engine = QueryEngine::new(
        config.query.clone(),
        handle.store.clone(),
        shared.metrics.clone(),
    )?;
    let open_tables = config.open_tables.clone().map(|delta| {
        let publisher = meterbase_delta::Publisher::new(store.clone(), delta);
        store.set_outside_readers(publisher.clone());
        publisher
    });
    let app = Arc::new(App {
        config: config.clone(),
        catalog,
        store: store.clone(),
        engine,
        metrics: shared.metrics.clone(),
        decoders: DecoderCache::default(),
        faults,
        open_tables: open_tables.clone(),
    });
    let _ = shared.app.set(app.clone());
    shared.ready.store(true, Ordering::SeqCst);
    info!("ready");
    let persister = tokio::spawn(store.clone().run_persister(stop_rx.clone()));
    let compactor = tokio::spawn(store.clone().run_compactor(stop_rx.clone()));
    let pg = pg.map(|pg| tokio::spawn(pg.serve(app.clone(), stop_rx.clone())));
    let publisher = open_tables
        .clone()
        .map(|p| tokio::spawn(p.run(stop_rx.clone())));

    wait_for_signal().await;
    info!("shutting down: no new connections, finishing requests in flight");
    let _ = stop_tx.send(true);
    if let Ok(Ok(graceful)) = tokio::time::timeout(Duration::from_secs(30), accept).await {
        let _ = tokio::time::timeout(Duration::from_secs(30), graceful.shutdown()).await;
    }
    if let Some(pg) = pg {
        let _ = pg.await;
    }
    let _ = persister.await;
    let _ = compactor.await;
    info!("persisting buffered events");
    store.shutdown().await?;
    if let (Some(task), Some(open_tables)) = (publisher, open_tables) {
        let _ = task.await;
        // The final flush's files, so a clean stop leaves the open tables current.
        open_tables.publish_all().await;
    }
    info!("stopped cleanly");
    Ok(())
}

fn absolute(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot listen for SIGTERM: {e}");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    config: ServerConfig,
    mut stop: watch::Receiver<bool>,
) -> hyper_util::server::graceful::GracefulShutdown {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let router = crate::routes::router(shared);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => break,
        };
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        // Our accept loop, not `axum::serve`: it keeps the header read timeout, the
        // connection cap and graceful shutdown, and serves the same router.
        let service = TowerToHyperService::new(router.clone());
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    graceful
}
