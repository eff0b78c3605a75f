//! `MetricError`: a metric that cannot be created or evaluated as asked, or the query failing.

use meterbase_query::QueryError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum MetricError {
    #[error("{0}")]
    Invalid(String),
    /// A definition refused because of one of its members, named by a JSON pointer into the
    /// request body (`/aggregation`, `/filters/1`, `""` for the whole definition), so the
    /// caller can point at what to fix.
    #[error("{message}")]
    Field { pointer: String, message: String },
    #[error(transparent)]
    Query(#[from] QueryError),
}

impl MetricError {
    /// An `Invalid` definition blamed on the member at `pointer`; other errors unchanged.
    pub fn at(self, pointer: &str) -> MetricError {
        match self {
            MetricError::Invalid(message) => MetricError::Field {
                pointer: pointer.to_string(),
                message,
            },
            other => other,
        }
    }

    /// The same error for a definition nested at `prefix` of a larger body (a preview's
    /// `/definition`).
    pub fn under(self, prefix: &str) -> MetricError {
        match self {
            MetricError::Field { pointer, message } => MetricError::Field {
                pointer: format!("{prefix}{pointer}"),
                message,
            },
            other => other.at(prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_nest() {
        let e = MetricError::Invalid("bad".into()).at("/aggregation");
        let MetricError::Field { pointer, message } = e.under("/definition") else {
            panic!("a field error");
        };
        assert_eq!(
            (pointer.as_str(), message.as_str()),
            ("/definition/aggregation", "bad")
        );
        let MetricError::Field { pointer, .. } = MetricError::Invalid("x".into()).under("/d")
        else {
            panic!("a field error");
        };
        assert_eq!(pointer, "/d");
    }
}
