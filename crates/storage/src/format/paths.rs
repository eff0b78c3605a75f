//! Where a table lives in the object store, as typed values instead of strings formatted in
//! several places:
//!
//! ```text
//! <org id>/<slug>/                                   the table's root (also its Delta root)
//! <org id>/<slug>/date=YYYY-MM-DD/<type id>-<min seq>-<max seq>[-c<v>_<g>].parquet
//! <org id>/<slug>/_manifest/<type id>/<version, 20 digits>.json
//! <org id>/<slug>/<type id>/deletion_vector_<uuid>.bin    (Delta's name for its 'u' storage
//!                                                           with the type id as prefix)
//! ```

use meterbase_schema::timestamp::format_date;
use object_store::path::Path;

/// The paths of one table (an event type of an organisation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePaths {
    pub org_id: String,
    pub slug: String,
    pub type_id: String,
}

impl TablePaths {
    pub fn new(org_id: &str, slug: &str, type_id: &str) -> TablePaths {
        TablePaths {
            org_id: org_id.to_string(),
            slug: slug.to_string(),
            type_id: type_id.to_string(),
        }
    }

    /// Everything of the table is under here.
    pub fn root(&self) -> Path {
        Path::from(format!("{}/{}", self.org_id, self.slug))
    }

    pub fn manifest_dir(&self) -> Path {
        Path::from(format!(
            "{}/{}/_manifest/{}",
            self.org_id, self.slug, self.type_id
        ))
    }

    pub fn manifest_version(&self, version: u64) -> Path {
        self.manifest_dir().join(format!("{version:020}.json"))
    }

    /// The data file holding the rows of log sequences `[min_seq, max_seq]` of UTC day
    /// `day` (days since the epoch); `suffix` tells compaction outputs apart.
    pub fn data_file(&self, day: i32, min_seq: u64, max_seq: u64, suffix: &str) -> String {
        format!(
            "{}/{}/date={}/{}-{min_seq:020}-{max_seq:020}{suffix}.parquet",
            self.org_id,
            self.slug,
            format_date(day),
            self.type_id
        )
    }

    /// The deletion vector file `uuid` (hyphenated).
    pub fn deletion_vector(&self, uuid: &str) -> Path {
        Path::from(format!(
            "{}/{}/{}/deletion_vector_{uuid}.bin",
            self.org_id, self.slug, self.type_id
        ))
    }

    /// Whether `path` is one of this table's deletion vector files.
    pub fn is_deletion_vector(&self, path: &str) -> bool {
        path.strip_prefix(&format!(
            "{}/{}/{}/deletion_vector_",
            self.org_id, self.slug, self.type_id
        ))
        .is_some_and(|rest| rest.ends_with(".bin") && !rest.contains('/'))
    }

    /// Whether an object named `file_name` (its last path part) is one of this table's data
    /// files.
    pub fn is_data_file(&self, file_name: &str) -> bool {
        file_name.starts_with(&format!("{}-", self.type_id)) && file_name.ends_with(".parquet")
    }
}

/// The version a manifest object's name holds (`00000000000000000042.json` → 42).
pub fn manifest_version_of(file_name: &str) -> Option<u64> {
    file_name.strip_suffix(".json")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_the_documented_layout() {
        let p = TablePaths::new("org1", "compute_events", "t9");
        assert_eq!(p.root().as_ref(), "org1/compute_events");
        assert_eq!(
            p.manifest_version(42).as_ref(),
            "org1/compute_events/_manifest/t9/00000000000000000042.json"
        );
        assert_eq!(
            p.data_file(20_089, 3, 17, "-c5_0"),
            "org1/compute_events/date=2025-01-01/t9-00000000000000000003-00000000000000000017-c5_0.parquet"
        );
        assert!(p.is_data_file("t9-00000000000000000003-00000000000000000017.parquet"));
        assert!(!p.is_data_file("t99-1-2.parquet"));
        let dv = p.deletion_vector("61d16c75-6994-46b7-a15b-8b538852e50e");
        assert_eq!(
            dv.as_ref(),
            "org1/compute_events/t9/deletion_vector_61d16c75-6994-46b7-a15b-8b538852e50e.bin"
        );
        assert!(p.is_deletion_vector(dv.as_ref()));
        assert!(!p.is_deletion_vector("org1/compute_events/t99/deletion_vector_x.bin"));
        assert_eq!(manifest_version_of("00000000000000000042.json"), Some(42));
        assert_eq!(manifest_version_of("x.json"), None);
    }
}
