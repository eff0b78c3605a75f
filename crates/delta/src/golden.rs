//! Golden fixtures of the formats this crate persists, under `testdata/formats/delta/`: a
//! commit (Delta's JSON actions, protocol 3/7 with deletion vectors), a checkpoint's rows and
//! our state snapshot (`STATE_FORMAT`). Today's code reads each to the pinned values and
//! writes the same values to the same bytes. `METERBASE_BLESS=1` writes a missing fixture
//! and never overwrites one (`testdata/formats/README.md`).

use std::path::PathBuf;

use crate::actions::{
    Action, Add, CommitInfo, DeletionVectorDescriptor, Format, Metadata, Protocol, Remove, Txn,
    decode_commit, encode_commit,
};
use crate::state::{LogState, STATE_FORMAT};

fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("../../testdata/formats/delta")
}

fn pinned(name: &str, fresh: &[u8]) -> Vec<u8> {
    let path = root().join(name);
    match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(_) if std::env::var_os("METERBASE_BLESS").is_some() => {
            std::fs::create_dir_all(root()).unwrap();
            std::fs::write(&path, fresh).unwrap();
            fresh.to_vec()
        }
        Err(e) => panic!(
            "fixture {} is missing ({e}): bump the format's version, then bless \
             (testdata/formats/README.md)",
            path.display()
        ),
    }
}

fn commit() -> Vec<Action> {
    let dv = |t: &str, p: &str, offset: Option<i32>| DeletionVectorDescriptor {
        storage_type: t.into(),
        path_or_inline_dv: p.into(),
        offset,
        size_in_bytes: 36,
        cardinality: 2,
    };
    let add = Add {
        path: "date=2025-01-01/t9-00000000000000000003-00000000000000000017.parquet".into(),
        partition_values: Default::default(),
        size: 4096,
        modification_time: 1_735_689_600_000,
        data_change: true,
        stats: Some("{\"numRecords\":3,\"minValues\":{},\"maxValues\":{},\"nullCount\":{},\"tightBounds\":false}".into()),
        deletion_vector: Some(dv("u", "t9vBn[lx{q8@P<9BNH/isA", Some(1))),
    };
    vec![
        Action::CommitInfo(CommitInfo {
            timestamp: 1_735_689_600_000,
            operation: "WRITE".into(),
            engine_info: "meterbase/0.1.0".into(),
            meterbase_manifest_version: Some(42),
        }),
        Action::Protocol(Protocol::with_deletion_vectors()),
        Action::MetaData(Metadata {
            id: "t9".into(),
            name: Some("compute_events".into()),
            format: Format {
                provider: "parquet".into(),
                options: Default::default(),
            },
            schema_string: "{\"type\":\"struct\",\"fields\":[]}".into(),
            partition_columns: vec![],
            configuration: [(
                "delta.enableDeletionVectors".to_string(),
                "true".to_string(),
            )]
            .into(),
            created_time: Some(1_735_689_600_000),
        }),
        Action::Txn(Txn {
            app_id: "meterbase-t9".into(),
            version: 42,
            last_updated: Some(1_735_689_600_000),
        }),
        Action::Remove(Remove::of(&add, 1_735_689_600_000, true)),
        Action::Add(Add {
            deletion_vector: Some(dv("i", "wi5b=000010000", None)),
            ..add
        }),
    ]
}

#[test]
fn a_commit_reads_and_writes_as_pinned() {
    let actions = commit();
    let fresh = encode_commit(&actions).unwrap();
    let pinned = pinned("commit-v3-7.json", &fresh);
    assert_eq!(decode_commit(&pinned, "fixture").unwrap(), actions);
    assert_eq!(
        String::from_utf8(fresh).unwrap(),
        String::from_utf8(pinned).unwrap()
    );
}

#[test]
fn a_state_snapshot_reads_and_writes_as_pinned() {
    let mut state = LogState::empty();
    state.apply(0, &commit()[..5]);
    state.apply(1, &commit()[5..]);
    let fresh = serde_json::to_vec_pretty(&state).unwrap();
    let name = format!("state-v{STATE_FORMAT}.json");
    let pinned = pinned(&name, &fresh);
    assert_eq!(serde_json::from_slice::<LogState>(&pinned).unwrap(), state);
    assert_eq!(fresh, pinned);
}
