//! Deletion vectors: which rows of a data file are no longer live (a newer version of their
//! unique key replaced them), as positions in the file. Stored exactly as Delta Lake stores
//! them, so the same objects serve our queries and outside readers of the Delta log:
//!
//! ```text
//! file   := version (u8 = 1) vector*
//! vector := size (u32 BE) data crc (u32 BE, CRC-32 of data)
//! data   := magic (u32 LE 1681511377) treemap (roaring 64-bit, portable: u64 LE count,
//!           then per 32-bit bucket its key u32 LE and a portable 32-bit roaring bitmap)
//! ```
//!
//! A vector is addressed by its file, the offset of its `size` field, and `size`. Files are
//! immutable: a changed vector is written anew, in the next commit's file.

use roaring::RoaringTreemap;
use serde::{Deserialize, Serialize};

use crate::error::StorageError;

/// The version byte every deletion vector file starts with.
pub const DV_FILE_FORMAT: u8 = 1;
const MAGIC: u32 = 1_681_511_377;

/// Where a file's deletion vector lives and how many rows it masks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeletionVector {
    /// The vector file's id (`TablePaths::deletion_vector`).
    pub uuid: String,
    /// Byte offset of the vector's size field in the file.
    pub offset: u32,
    /// Bytes of the vector's data (magic and treemap), as Delta's `sizeInBytes`.
    pub size_in_bytes: u32,
    /// Rows masked.
    pub cardinality: u64,
}

/// Where a vector landed in its file: `(offset, size_in_bytes)`.
pub type Place = (u32, u32);

/// One file holding `vectors`, and where each landed.
pub fn encode_file(vectors: &[&RoaringTreemap]) -> Result<(Vec<u8>, Vec<Place>), StorageError> {
    let mut out = vec![DV_FILE_FORMAT];
    let mut places = Vec::with_capacity(vectors.len());
    for v in vectors {
        let offset = out.len();
        let mut data = Vec::with_capacity(4 + v.serialized_size());
        data.extend_from_slice(&MAGIC.to_le_bytes());
        v.serialize_into(&mut data)
            .map_err(|e| StorageError::Invariant(leak(format!("deletion vector: {e}"))))?;
        let size = u32::try_from(data.len())
            .map_err(|_| StorageError::Invariant("a deletion vector over 4 GiB"))?;
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&data);
        out.extend_from_slice(&crc32(&data).to_be_bytes());
        places.push((offset as u32, size));
    }
    Ok((out, places))
}

fn leak(s: String) -> &'static str {
    // Only for the impossible failure of serializing into a Vec; never on a hot path.
    Box::leak(s.into_boxed_str())
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    crc.sum()
}

/// The vector at `offset` of a vector file's bytes, checked against its size and CRC.
pub fn decode(
    file: &[u8],
    offset: u32,
    size_in_bytes: u32,
    path: &str,
) -> Result<RoaringTreemap, StorageError> {
    let corrupt = |reason: String| StorageError::CorruptFile {
        path: path.to_string(),
        reason,
    };
    if file.first() != Some(&DV_FILE_FORMAT) {
        return Err(corrupt(format!(
            "deletion vector file version {:?}, this build reads {DV_FILE_FORMAT}",
            file.first()
        )));
    }
    let start = offset as usize;
    let size = size_in_bytes as usize;
    let end = start + 4 + size + 4;
    if end > file.len() || size < 4 {
        return Err(corrupt(format!(
            "deletion vector at {offset} ({size} bytes) past the file's {} bytes",
            file.len()
        )));
    }
    let stored_size = u32::from_be_bytes(file[start..start + 4].try_into().unwrap_or_default());
    if stored_size != size_in_bytes {
        return Err(corrupt(format!(
            "deletion vector at {offset} is {stored_size} bytes, its descriptor says {size}"
        )));
    }
    let data = &file[start + 4..start + 4 + size];
    let crc = u32::from_be_bytes(file[start + 4 + size..end].try_into().unwrap_or_default());
    if crc32(data) != crc {
        return Err(corrupt(format!(
            "deletion vector at {offset}: CRC mismatch"
        )));
    }
    if u32::from_le_bytes(data[..4].try_into().unwrap_or_default()) != MAGIC {
        return Err(corrupt(format!("deletion vector at {offset}: bad magic")));
    }
    RoaringTreemap::deserialize_from(&data[4..])
        .map_err(|e| corrupt(format!("deletion vector at {offset}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_in_deltas_byte_layout() {
        let a: RoaringTreemap = [0u64, 9].into_iter().collect();
        let b: RoaringTreemap = (100u64..5000).chain([1 << 33]).collect();
        let (file, places) = encode_file(&[&a, &b]).unwrap();
        assert_eq!(places[0], (1, 36));
        // The layout of the {0, 9} vector is Delta's: version, size, magic, one bucket (key
        // 0), its portable bitmap, CRC-32.
        let expected = [
            "01",
            "00000024",
            "d1d33964",
            "0100000000000000",
            "00000000",
            "3a300000",
            "01000000",
            "0000",
            "0100",
            "10000000",
            "0000",
            "0900",
            "2a671846",
        ]
        .concat();
        assert_eq!(hex(&file[..45]), expected);
        assert_eq!(decode(&file, places[0].0, places[0].1, "f").unwrap(), a);
        assert_eq!(decode(&file, places[1].0, places[1].1, "f").unwrap(), b);
        let mut bad = file.clone();
        bad[20] ^= 1;
        assert!(decode(&bad, places[0].0, places[0].1, "f").is_err());
        assert!(decode(&file, places[0].0, places[0].1 + 1, "f").is_err());
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
