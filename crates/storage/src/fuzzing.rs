//! The properties the fuzz targets in `fuzz/` check of what storage reads back from disk (a
//! write-ahead log record's payload, a manifest), shared with the test that replays the
//! committed corpus. Both are checksummed where they are stored, so these bytes only reach
//! the decoders after a checksum matched: the decoders must still never panic, nor accept
//! something they would not write back the same.

use object_store::path::Path;

use crate::{Manifest, WalRecord};

/// Never panics; a payload that decodes encodes back to one that decodes the same.
pub fn check_wal_record(data: &[u8]) {
    // decode catches arrow's own panics; one escaping it would be ours.
    let decoded = meterbase_schema::fuzzing::caught(|| WalRecord::decode(data));
    let Ok(record) = decoded.expect("WalRecord::decode panicked") else {
        return;
    };
    let again = match &record {
        WalRecord::Events {
            org_id,
            type_id,
            schema_version,
            batch,
        } => match WalRecord::encode_events(org_id, type_id, *schema_version, batch) {
            Ok(bytes) => bytes,
            // A batch the encoder refuses (a type it has no tag for) is not written either.
            Err(_) => return,
        },
        WalRecord::Marker { org_id, type_id } => WalRecord::encode_marker(org_id, type_id),
        WalRecord::Delete {
            org_id,
            type_id,
            range,
        } => WalRecord::encode_delete(org_id, type_id, range),
    };
    let decoded = WalRecord::decode(&again).expect("what was encoded decodes");
    assert_eq!(comparable(&record), comparable(&decoded));
}

/// What must survive a round trip: the header, and each column's name, type and values
/// (schema metadata need not).
fn comparable(record: &WalRecord) -> String {
    match record {
        WalRecord::Events {
            org_id,
            type_id,
            schema_version,
            batch,
        } => {
            let fields: Vec<_> = batch
                .schema()
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
                .collect();
            format!(
                "{org_id} {type_id} {schema_version} {fields:?} {:?}",
                batch.columns()
            )
        }
        other => format!("{other:?}"),
    }
}

/// Never panics; a manifest that decodes encodes back to itself (in this build's format).
pub fn check_manifest(data: &[u8]) {
    let path = Path::from("fuzz/_manifest/t/00000000000000000001.json");
    let Ok(manifest) = Manifest::decode(&path, data) else {
        return;
    };
    let bytes = manifest.encode().expect("a decoded manifest encodes");
    let again = Manifest::decode(&path, &bytes).expect("what was encoded decodes");
    assert_eq!(manifest.as_stored(), again);
}
