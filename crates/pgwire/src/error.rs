//! Why the Postgres listener cannot start (`PgError`), and how a query's failure is told to
//! a client: the SQLSTATE a Postgres client knows what to do with.

use meterbase_query::QueryError;
use pgwire::error::{ErrorInfo, PgWireError};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PgError {
    #[error("cannot listen on --pg-listen {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error(
        "--pg-listen {addr} is not a loopback address: API keys would cross the network in clear text; give --pg-tls-cert and --pg-tls-key, or --pg-allow-cleartext to accept that"
    )]
    CleartextOffLoopback { addr: String },
    #[error("--pg-tls-cert and --pg-tls-key go together: give both or neither")]
    HalfTls,
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the pg_catalog tables could not be loaded: {0}")]
    Catalog(String),
}

/// An `ERROR` with its SQLSTATE.
pub(crate) fn user_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_owned(),
        code.to_owned(),
        message.into(),
    )))
}

/// The class a Postgres client reacts to: 42xxx is the statement's fault, 22xxx the data's,
/// 53xxx resources (retry later or ask less), 57014 a cancelled statement, XX000 ours.
pub(crate) fn query_error(e: QueryError) -> PgWireError {
    let code = match &e {
        QueryError::Invalid(text) if is_refusal(text) => "42501",
        QueryError::Invalid(_) => "42601",
        QueryError::Data(_) => "22000",
        QueryError::MemoryLimit { .. } => "53200",
        QueryError::Timeout(_) | QueryError::Cancelled => "57014",
        QueryError::Busy(_) => "53300",
        QueryError::Execution(_) => "XX000",
    };
    user_error(code, e.to_string())
}

/// The sandbox's refusals (DDL, DML, statements) are a lack of privilege, not bad syntax.
fn is_refusal(text: &str) -> bool {
    text.contains("not supported") && (text.contains("DDL") || text.contains("DML"))
        || text.contains("Statement not supported")
}
