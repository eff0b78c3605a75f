//! meterbase-bench owns the benchmark tooling: a seeded data generator for the seed's
//! `compute_events` schema (written out, or streamed to a server by `stream`), an HTTP load
//! generator with its own minimal HTTP/1.1 client, a
//! no-op server to measure the ceiling, the decoder-only ceiling, and what exact summation
//! costs against DataFusion's float sum (`sum_cost`, in process). It talks to meterbase
//! only over HTTP (and calls the schema crate for the parse ceiling and the query crate's
//! aggregates for the sum cost); it must not be used by any other crate.

pub mod generate;
pub mod load;
pub mod noop;
pub mod proc_stats;
pub mod stream;
pub mod sum_cost;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum BenchError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("Arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("Parquet error: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("{0}")]
    Other(String),
}
