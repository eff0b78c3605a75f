//! Deletion vector descriptors for `add` actions. A file whose mask is exactly its stored
//! vector points at our own vector file (Delta storage type `u`: the vector files already
//! have Delta's name and bytes, under the event type id as prefix directory); any other mask
//! (a stored vector plus rows a range deletion or an unresolved replacement removes) is
//! carried inline (`i`), so nothing is written twice and no vector file exists that our
//! garbage collection does not know.

use meterbase_storage::format::deletion_vector::DeletionVector;
use roaring::RoaringTreemap;

use crate::actions::DeletionVectorDescriptor;
use crate::error::DeltaError;

/// Delta's magic number in front of a serialized bitmap (little-endian).
const MAGIC: u32 = 1_681_511_377;
/// z85's alphabet (ZeroMQ RFC 32), as the Delta protocol requires.
const Z85: &[u8; 85] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// z85 of `bytes`, whose length must be a multiple of 4.
pub fn z85_encode(bytes: &[u8]) -> Result<String, DeltaError> {
    if !bytes.len().is_multiple_of(4) {
        return Err(DeltaError::DeletionVector(
            "z85 needs a multiple of 4 bytes".into(),
        ));
    }
    let mut out = String::with_capacity(bytes.len() / 4 * 5);
    for chunk in bytes.chunks_exact(4) {
        let mut v = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let mut digits = [0u8; 5];
        for d in digits.iter_mut().rev() {
            *d = Z85[(v % 85) as usize];
            v /= 85;
        }
        out.extend(digits.iter().map(|&d| d as char));
    }
    Ok(out)
}

/// The bytes of a z85 string (length a multiple of 5).
pub fn z85_decode(text: &str) -> Result<Vec<u8>, DeltaError> {
    let bad = || DeltaError::DeletionVector(format!("not z85: {text:?}"));
    if !text.len().is_multiple_of(5) {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(text.len() / 5 * 4);
    for chunk in text.as_bytes().chunks_exact(5) {
        let mut v: u64 = 0;
        for &c in chunk {
            let d = Z85.iter().position(|&z| z == c).ok_or_else(bad)?;
            v = v * 85 + d as u64;
        }
        let v = u32::try_from(v).map_err(|_| bad())?;
        out.extend_from_slice(&v.to_be_bytes());
    }
    Ok(out)
}

/// Our stored vector, for a table whose vector files sit in `prefix/` under its root.
pub fn stored(prefix: &str, dv: &DeletionVector) -> Result<DeletionVectorDescriptor, DeltaError> {
    let uuid = uuid::Uuid::parse_str(&dv.uuid)
        .map_err(|e| DeltaError::DeletionVector(format!("id {}: {e}", dv.uuid)))?;
    Ok(DeletionVectorDescriptor {
        storage_type: "u".into(),
        path_or_inline_dv: format!("{prefix}{}", z85_encode(uuid.as_bytes())?),
        offset: Some(dv.offset as i32),
        size_in_bytes: dv.size_in_bytes as i32,
        cardinality: dv.cardinality as i64,
    })
}

/// `mask` carried in the log itself.
pub fn inline(mask: &RoaringTreemap) -> Result<DeletionVectorDescriptor, DeltaError> {
    let mut bytes = Vec::with_capacity(4 + mask.serialized_size());
    bytes.extend_from_slice(&MAGIC.to_le_bytes());
    mask.serialize_into(&mut bytes)
        .map_err(|e| DeltaError::DeletionVector(e.to_string()))?;
    let size = bytes.len();
    bytes.resize(size.div_ceil(4) * 4, 0);
    Ok(DeletionVectorDescriptor {
        storage_type: "i".into(),
        path_or_inline_dv: z85_encode(&bytes)?,
        offset: None,
        size_in_bytes: size as i32,
        cardinality: mask.len() as i64,
    })
}

/// The vector file a `u` descriptor names, relative to the table root.
pub fn file_of(desc: &DeletionVectorDescriptor) -> Option<String> {
    if desc.storage_type != "u" || desc.path_or_inline_dv.len() < 20 {
        return None;
    }
    let (prefix, id) = desc
        .path_or_inline_dv
        .split_at(desc.path_or_inline_dv.len() - 20);
    let bytes = z85_decode(id).ok()?;
    let uuid = uuid::Uuid::from_slice(&bytes).ok()?;
    let name = format!("deletion_vector_{}.bin", uuid.hyphenated());
    Some(if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    })
}

/// The rows an inline descriptor masks (for tests and for reading our own log back).
pub fn decode_inline(desc: &DeletionVectorDescriptor) -> Result<RoaringTreemap, DeltaError> {
    let bytes = z85_decode(&desc.path_or_inline_dv)?;
    let size = desc.size_in_bytes as usize;
    if bytes.len() < size || size < 4 || bytes[..4] != MAGIC.to_le_bytes() {
        return Err(DeltaError::DeletionVector("inline vector malformed".into()));
    }
    RoaringTreemap::deserialize_from(&bytes[4..size])
        .map_err(|e| DeltaError::DeletionVector(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn z85_round_trips_the_protocols_uuid_example() {
        // The uuid and encoding checked against the Delta protocol's description.
        let uuid = uuid::Uuid::parse_str("61d16c75-6994-46b7-a15b-8b538852e50e").unwrap();
        let text = z85_encode(uuid.as_bytes()).unwrap();
        assert_eq!(text, "vBn[lx{q8@P<9BNH/isA");
        assert_eq!(z85_decode(&text).unwrap(), uuid.as_bytes());
    }

    #[test]
    fn stored_vectors_name_our_file_under_the_type_id() {
        let dv = DeletionVector {
            uuid: "61d16c75-6994-46b7-a15b-8b538852e50e".into(),
            offset: 1,
            size_in_bytes: 36,
            cardinality: 2,
        };
        let d = stored("t9", &dv).unwrap();
        assert_eq!(d.path_or_inline_dv, "t9vBn[lx{q8@P<9BNH/isA");
        assert_eq!(
            file_of(&d).unwrap(),
            "t9/deletion_vector_61d16c75-6994-46b7-a15b-8b538852e50e.bin"
        );
    }

    #[test]
    fn inline_vectors_carry_their_rows() {
        let mask: RoaringTreemap = [0u64, 9, 70_000, 5_000_000_000].into_iter().collect();
        let d = inline(&mask).unwrap();
        assert_eq!(d.cardinality, 4);
        assert_eq!(decode_inline(&d).unwrap(), mask);
        assert!(file_of(&d).is_none());
    }
}
