//! Ingest receipts: what a successful ingest accepted, as the sender can check it: how many
//! events, the log sequences that hold them, and their reconciliation digest
//! (`meterbase_schema::digest`), the same `GET /usage/{slug}/reconcile` answers.

use arrow::record_batch::RecordBatch;
use meterbase_schema::EventDecoder;
use meterbase_schema::digest::{EventDigester, digest_hex};
use meterbase_wal::Seq;
use serde_json::{Value, json};

use crate::http::Result;
use crate::problem::Problem;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Receipt {
    pub count: usize,
    /// `None` when nothing was logged (an empty request).
    pub seqs: Option<(Seq, Seq)>,
    /// Sum of the accepted events' hashes modulo 2^64.
    pub digest: u64,
}

impl Receipt {
    /// The receipt's JSON text, written directly: every single-event POST answers one.
    pub fn json(&self) -> String {
        let (first, last) = match self.seqs {
            Some((f, l)) => (f.to_string(), l.to_string()),
            None => ("null".into(), "null".into()),
        };
        format!(
            "{{\"count\":{},\"first_seq\":{first},\"last_seq\":{last},\"digest\":\"{}\"}}",
            self.count,
            digest_hex(self.digest)
        )
    }

    pub fn value(&self) -> Value {
        let (first, last) = match self.seqs {
            Some((f, l)) => (json!(f), json!(l)),
            None => (Value::Null, Value::Null),
        };
        json!({
            "count": self.count,
            "first_seq": first,
            "last_seq": last,
            "digest": digest_hex(self.digest),
        })
    }
}

/// The digest sum of a batch the decoder produced (its columns are the decoder's input
/// schema: customer_id, timestamp, data fields in definition order).
pub(crate) fn batch_digest(decoder: &EventDecoder, batch: &RecordBatch) -> Result<u64> {
    EventDigester::new(decoder.fields())
        .sum(batch.columns())
        .map_err(|e| Problem::internal(format!("computing the receipt's digest: {e}")))
}
