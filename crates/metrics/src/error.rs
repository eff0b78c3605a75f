//! `MetricError`: a metric that cannot be created or evaluated as asked, or the query failing.

use meterbase_query::QueryError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum MetricError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Query(#[from] QueryError),
}
