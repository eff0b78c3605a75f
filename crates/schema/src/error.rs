use thiserror::Error;

/// Problems with an event type definition (never with an event: those are `EventError`s).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SchemaError {
    #[error("unknown type {0:?}")]
    UnknownType(String),
    #[error("invalid type {0:?}: {1}")]
    InvalidType(String, String),
    #[error("invalid field name {0:?}: {1}")]
    InvalidFieldName(String, String),
    #[error("invalid api_slug {0:?}: {1}")]
    InvalidSlug(String, String),
    #[error("{0}")]
    Invalid(String),
    /// Columns handed to the reconciliation digest that do not fit the event type.
    #[error("cannot compute the event digest: {0}")]
    Digest(String),
}
