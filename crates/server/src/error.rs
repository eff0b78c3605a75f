//! Why the server could not start, or stopped with an error.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("{0}")]
    Startup(String),
    #[error(transparent)]
    Catalog(#[from] meterbase_catalog::CatalogError),
    #[error(transparent)]
    Storage(#[from] meterbase_storage::StorageError),
    #[error(transparent)]
    Query(#[from] meterbase_query::QueryError),
    #[error("I/O error on {0}: {1}")]
    Io(String, std::io::Error),
}
