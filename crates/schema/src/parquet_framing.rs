//! The Thrift structures of a Parquet body (its footer and every page header) walked before
//! parquet-rs reads them, refusing what a valid file never holds. parquet-rs 59 skips an
//! unknown field's list of booleans without reading a byte per element (the compact protocol
//! gives each one a byte), so a few bytes declaring a list of 2^31 booleans kept a thread busy
//! for seconds: a 1.8 KB body took 138 ms of a release server's CPU and a 32 MiB one could take
//! hours (found by the `parquet_body` fuzz target). Here every element of a list, set or map
//! takes at least one byte, so a walk is linear in the bytes and a count the bytes cannot hold
//! is refused at once.

use parquet::file::metadata::ParquetMetaData;

/// Structures nest at most this deep in a valid file (a footer is four or five levels).
const MAX_DEPTH: u32 = 32;

/// The compact protocol's type codes (field headers and element types).
mod code {
    pub const BOOL_TRUE: u8 = 1;
    pub const BOOL_FALSE: u8 = 2;
    pub const BYTE: u8 = 3;
    pub const I16: u8 = 4;
    pub const I32: u8 = 5;
    pub const I64: u8 = 6;
    pub const DOUBLE: u8 = 7;
    pub const BINARY: u8 = 8;
    pub const LIST: u8 = 9;
    pub const SET: u8 = 10;
    pub const MAP: u8 = 11;
    pub const STRUCT: u8 = 12;
    pub const UUID: u8 = 13;
}

/// Where a walk stands in the bytes of one structure.
struct Walk<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Walk<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| format!("ends inside a structure at byte {}", self.at))?;
        self.at += 1;
        Ok(b)
    }

    fn skip(&mut self, n: u64) -> Result<(), String> {
        let left = (self.bytes.len() - self.at) as u64;
        if n > left {
            return Err(format!(
                "declares {n} bytes at byte {} with {left} left",
                self.at
            ));
        }
        self.at += n as usize;
        Ok(())
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!("a varint longer than 10 bytes at byte {}", self.at))
    }

    /// A count of elements, each taking at least one byte of what is left.
    fn count(&mut self, n: u64) -> Result<u64, String> {
        let left = (self.bytes.len() - self.at) as u64;
        if n > left {
            return Err(format!(
                "declares {n} elements at byte {} with {left} bytes left",
                self.at
            ));
        }
        Ok(n)
    }

    /// Booleans as elements of a list, set or map: the compact protocol gives each a byte, and
    /// parquet-rs 59 skips them without reading it, so from there on it reads every byte at
    /// another place than the protocol (and this walk) does; no structure of the footer or a
    /// page header holds one. A count of them is also what made 59 spin (it reads nothing
    /// per element).
    fn no_booleans(&self, element: u8) -> Result<(), String> {
        match element {
            code::BOOL_TRUE | code::BOOL_FALSE => Err(format!(
                "holds a collection of booleans at byte {}, which parquet-rs 59 cannot skip",
                self.at
            )),
            _ => Ok(()),
        }
    }

    /// One value of type `code`; `in_field`: a boolean field's value is in its header.
    fn value(&mut self, code: u8, in_field: bool, depth: u32) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "nested deeper than {MAX_DEPTH} at byte {}",
                self.at
            ));
        }
        match code {
            code::BOOL_TRUE | code::BOOL_FALSE if in_field => Ok(()),
            code::BOOL_TRUE | code::BOOL_FALSE | code::BYTE => self.skip(1),
            code::I16 | code::I32 | code::I64 => self.varint().map(|_| ()),
            code::DOUBLE => self.skip(8),
            code::BINARY => {
                let n = self.varint()?;
                self.skip(n)
            }
            code::UUID => self.skip(16),
            code::LIST | code::SET => {
                let header = self.byte()?;
                let short = u64::from(header >> 4);
                let n = if short == 15 { self.varint()? } else { short };
                if n > 0 {
                    self.no_booleans(header & 0x0f)?;
                }
                for _ in 0..self.count(n)? {
                    self.value(header & 0x0f, false, depth + 1)?;
                }
                Ok(())
            }
            code::MAP => {
                let n = self.varint()?;
                if n == 0 {
                    return Ok(());
                }
                let types = self.byte()?;
                self.no_booleans(types >> 4)?;
                self.no_booleans(types & 0x0f)?;
                for _ in 0..self.count(n)? {
                    self.value(types >> 4, false, depth + 1)?;
                    self.value(types & 0x0f, false, depth + 1)?;
                }
                Ok(())
            }
            code::STRUCT => self.fields(depth + 1, |_, _| {}),
            other => Err(format!("an unknown type code {other} at byte {}", self.at)),
        }
    }

    /// A structure's fields up to its stop byte; `seen` gets each top-level i32 field (id,
    /// value) of this structure.
    fn fields(&mut self, depth: u32, mut seen: impl FnMut(i16, i64)) -> Result<(), String> {
        self.typed_fields(depth, &[], &mut seen)
    }

    /// `fields` of a structure whose known fields (`shape`) must be on the wire as parquet-rs
    /// reads them.
    fn typed_fields(
        &mut self,
        depth: u32,
        shape: &[(i16, Expect)],
        seen: &mut dyn FnMut(i16, i64),
    ) -> Result<(), String> {
        let mut id: i16 = 0;
        loop {
            let header = self.byte()?;
            if header == 0 {
                return Ok(());
            }
            let (delta, kind) = (header >> 4, header & 0x0f);
            id = if delta == 0 {
                let raw = self.varint()?;
                i16::try_from((raw >> 1) as i64 ^ -((raw & 1) as i64)).unwrap_or(i16::MAX)
            } else {
                id.saturating_add(i16::from(delta))
            };
            let expected = shape.iter().find(|(known, _)| *known == id).map(|k| k.1);
            if let Some(expected) = expected
                && !expected.admits(kind)
            {
                return Err(format!(
                    "has field {id} of type code {kind} at byte {} where parquet-rs reads {}",
                    self.at,
                    expected.name()
                ));
            }
            match (kind, expected) {
                (code::STRUCT, Some(Expect::Struct(inner))) => {
                    self.typed_fields(depth + 1, inner, &mut |_, _| {})?
                }
                (code::I32, _) => {
                    let raw = self.varint()?;
                    seen(id, (raw >> 1) as i64 ^ -((raw & 1) as i64));
                }
                _ => self.value(kind, true, depth)?,
            }
        }
    }
}

/// What a known field must be on the wire. parquet-rs reads a known field by the type the
/// Parquet format gives it, whatever the wire says: a field of another type makes it read
/// the rest of the header from a different byte than a walk by wire types does, so the walk
/// would not see what it then skips.
#[derive(Clone, Copy)]
enum Expect {
    I32,
    I64,
    Bool,
    Binary,
    Struct(&'static [(i16, Expect)]),
}

impl Expect {
    fn name(self) -> &'static str {
        match self {
            Expect::I32 => "an i32",
            Expect::I64 => "an i64",
            Expect::Bool => "a boolean",
            Expect::Binary => "a binary",
            Expect::Struct(_) => "a structure",
        }
    }

    fn admits(self, kind: u8) -> bool {
        match self {
            Expect::I32 => kind == code::I32,
            Expect::I64 => kind == code::I64,
            Expect::Bool => kind == code::BOOL_TRUE || kind == code::BOOL_FALSE,
            Expect::Binary => kind == code::BINARY,
            Expect::Struct(_) => kind == code::STRUCT,
        }
    }
}

/// `PageHeader` and the structures in it, as parquet.thrift defines them.
const STATISTICS: &[(i16, Expect)] = &[
    (1, Expect::Binary),
    (2, Expect::Binary),
    (3, Expect::I64),
    (4, Expect::I64),
    (5, Expect::Binary),
    (6, Expect::Binary),
    (7, Expect::Bool),
    (8, Expect::Bool),
];
const DATA_PAGE_HEADER: &[(i16, Expect)] = &[
    (1, Expect::I32),
    (2, Expect::I32),
    (3, Expect::I32),
    (4, Expect::I32),
    (5, Expect::Struct(STATISTICS)),
];
const DICTIONARY_PAGE_HEADER: &[(i16, Expect)] =
    &[(1, Expect::I32), (2, Expect::I32), (3, Expect::Bool)];
const DATA_PAGE_HEADER_V2: &[(i16, Expect)] = &[
    (1, Expect::I32),
    (2, Expect::I32),
    (3, Expect::I32),
    (4, Expect::I32),
    (5, Expect::I32),
    (6, Expect::I32),
    (7, Expect::Bool),
    (8, Expect::Struct(STATISTICS)),
];
const PAGE_HEADER: &[(i16, Expect)] = &[
    (1, Expect::I32),
    (2, Expect::I32),
    (3, Expect::I32),
    (4, Expect::I32),
    (5, Expect::Struct(DATA_PAGE_HEADER)),
    (6, Expect::Struct(&[])),
    (7, Expect::Struct(DICTIONARY_PAGE_HEADER)),
    (8, Expect::Struct(DATA_PAGE_HEADER_V2)),
];

/// The footer: the last 8 bytes are its length and `PAR1`; the footer (a `FileMetaData`
/// structure) ends where they begin.
pub fn check_footer(body: &[u8]) -> Result<(), String> {
    let n = body.len();
    if n < 12 || &body[n - 4..] != b"PAR1" {
        return Err("it does not end with PAR1".into());
    }
    let len = u32::from_le_bytes([body[n - 8], body[n - 7], body[n - 6], body[n - 5]]) as usize;
    let start = (n - 8)
        .checked_sub(len)
        .ok_or_else(|| format!("its footer claims {len} bytes of a {n}-byte body"))?;
    let mut walk = Walk {
        bytes: &body[start..n - 8],
        at: 0,
    };
    walk.fields(0, |_, _| {})
        .map_err(|why| format!("its footer {why}"))
}

/// Every page header of every column chunk the footer lists, walked from the chunk's first
/// page to its end (each header says how many bytes of page follow it).
pub fn check_pages(body: &[u8], metadata: &ParquetMetaData) -> Result<(), String> {
    for row_group in metadata.row_groups() {
        for column in row_group.columns() {
            let start = column
                .dictionary_page_offset()
                .unwrap_or_else(|| column.data_page_offset());
            let len = column.compressed_size();
            let (Ok(start), Ok(len)) = (usize::try_from(start), usize::try_from(len)) else {
                return Err(format!("a column chunk at byte {start} of {len} bytes"));
            };
            let end = start
                .checked_add(len)
                .filter(|&e| e <= body.len())
                .ok_or_else(|| format!("a column chunk at byte {start} runs past the body"))?;
            let mut at = start;
            while at < end {
                let mut walk = Walk {
                    bytes: &body[at..end],
                    at: 0,
                };
                // PageHeader: 3 is compressed_page_size.
                let mut page_bytes = None;
                walk.typed_fields(0, PAGE_HEADER, &mut |id, v| {
                    if id == 3 {
                        page_bytes = Some(v);
                    }
                })
                .map_err(|why| format!("the page header at byte {at} {why}"))?;
                let page = page_bytes
                    .and_then(|v| usize::try_from(v).ok())
                    .ok_or_else(|| format!("the page header at byte {at} has no page size"))?;
                at = at
                    .checked_add(walk.at)
                    .and_then(|a| a.checked_add(page))
                    .filter(|&a| a <= end)
                    .ok_or_else(|| format!("the page at byte {at} runs past its column chunk"))?;
            }
        }
    }
    Ok(())
}

/// The footer and every page header read by parquet 60, whose Thrift skipping reads a byte per
/// boolean element: parquet 59 reads a known field by the type the Parquet schema gives it,
/// not the one on the wire, so a walk by wire types (above) cannot see every list 59 will skip
/// (the `parquet_body` target's second finding: a footer whose first field is a 4-byte binary
/// where `version`, an i32, belongs; read from a different byte on, it meets a map of 37M
/// booleans). Both versions read the same fields the same way; where 60 finds every count
/// within the bytes, 59's loops are bounded by the body. Pages are skipped, not decompressed.
pub fn check_with_parquet_60(body: &bytes::Bytes) -> Result<(), String> {
    use parquet_thrift_check::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(body.clone()).map_err(|e| format!("its footer: {e}"))?;
    for i in 0..reader.num_row_groups() {
        let row_group = reader.get_row_group(i).map_err(|e| e.to_string())?;
        for c in 0..row_group.num_columns() {
            let page = |e: parquet_thrift_check::errors::ParquetError| {
                format!("a page of row group {i}, column {c}: {e}")
            };
            let mut pages = row_group.get_column_page_reader(c).map_err(page)?;
            while pages.peek_next_page().map_err(page)?.is_some() {
                pages.skip_next_page().map_err(page)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn footer_of(structure: &[u8]) -> Vec<u8> {
        let mut body = b"PAR1".to_vec();
        body.extend_from_slice(structure);
        body.extend_from_slice(&(structure.len() as u32).to_le_bytes());
        body.extend_from_slice(b"PAR1");
        body
    }

    #[test]
    fn collections_of_booleans_are_refused_and_counts_bounded_by_bytes() {
        // Field 1, a list (0x19) of 2^31 - 1 booleans (0xF1, then the varint), then stop.
        let huge = footer_of(&[0x19, 0xF1, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x00]);
        let why = check_footer(&huge).unwrap_err();
        assert!(why.contains("collection of booleans"), "{why}");
        // Three booleans, three bytes, still: parquet-rs 59 would read on from the wrong byte.
        let why = check_footer(&footer_of(&[0x19, 0x31, 1, 2, 1, 0x00])).unwrap_err();
        assert!(why.contains("collection of booleans"), "{why}");
        // A map of booleans to i32s, and an empty list of booleans (nothing to skip).
        assert!(check_footer(&footer_of(&[0x1B, 0x01, 0x15, 1, 2, 0x00])).is_err());
        assert_eq!(check_footer(&footer_of(&[0x19, 0x01, 0x00])), Ok(()));
        // A list of 2^31 - 1 i32s in a few bytes.
        let huge = footer_of(&[0x19, 0xF5, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x00]);
        let why = check_footer(&huge).unwrap_err();
        assert!(why.contains("2147483647 elements"), "{why}");
    }

    #[test]
    fn a_page_headers_known_fields_must_have_their_types() {
        let walk = |bytes: &[u8]| {
            let mut page = None;
            Walk { bytes, at: 0 }
                .typed_fields(0, PAGE_HEADER, &mut |id, v| {
                    if id == 3 {
                        page = Some(v);
                    }
                })
                .map(|()| page)
        };
        // type DATA_PAGE, sizes 10 and 12, a DataPageHeader of 3 values, an unknown i64.
        let fine = [
            0x15, 0x00, 0x15, 0x14, 0x15, 0x18, 0x2c, 0x15, 0x06, 0x00, 0x66, 0x02, 0x00,
        ];
        assert_eq!(walk(&fine), Ok(Some(12)));
        // compressed_page_size as a binary: parquet-rs would read an i32 from its length byte.
        let binary = [0x15, 0x00, 0x15, 0x14, 0x18, 0x02, b'a', b'b', 0x00];
        let why = walk(&binary).unwrap_err();
        assert!(why.contains("field 3") && why.contains("an i32"), "{why}");
        // Statistics' null_count (an i64) as an i32, two structures down.
        let nested = [
            0x15, 0x00, 0x4c, 0x15, 0x06, 0x4c, 0x35, 0x02, 0x00, 0x00, 0x00,
        ];
        let why = walk(&nested).unwrap_err();
        assert!(why.contains("field 3") && why.contains("an i64"), "{why}");
    }

    #[test]
    fn bodies_that_are_not_parquet_are_named() {
        assert!(check_footer(b"PAR1").is_err());
        assert!(check_footer(b"not parquet at all, really").is_err());
        let mut claims_too_much = footer_of(&[0x00]);
        let n = claims_too_much.len();
        claims_too_much[n - 8..n - 4].copy_from_slice(&1000u32.to_le_bytes());
        assert!(
            check_footer(&claims_too_much)
                .unwrap_err()
                .contains("claims 1000")
        );
    }

    #[test]
    fn nesting_is_bounded() {
        // A struct field (0x1C) in a struct in a struct…, never closed.
        let deep = footer_of(&[0x1C; 200]);
        assert!(check_footer(&deep).unwrap_err().contains("nested deeper"));
    }
}
