//! A table provider over a fixed set of Parquet files and buffered batches: the raw rows of
//! one snapshot, every version of every key. Deduplication happens above it, in the view.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::Result;
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::DataFusionError;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use meterbase_storage::format::deletion_vector::{self, DeletionVector};
use meterbase_storage::{FileMeta, TablePaths, overlaps_until};
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};

use crate::time_filter::time_bounds;

/// Every snapshot's files are addressed relative to this URL, which the engine maps to the
/// object store.
pub const STORE_URL: &str = "meterbase://store/";

/// Files whose checksum has been checked by this process (files never change once written).
static VERIFIED: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<String>>> =
    std::sync::LazyLock::new(Default::default);

/// Reads each file not yet checked once, whole, and compares its CRC-32C with the manifest:
/// a corrupted file fails the query with its name instead of changing a total.
async fn verify_files(state: &dyn Session, files: &[&FileMeta]) -> Result<()> {
    use object_store::ObjectStoreExt;
    let store = state
        .runtime_env()
        .object_store(ObjectStoreUrl::parse(STORE_URL)?)?;
    for f in files {
        let checked = || {
            VERIFIED
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&f.path)
        };
        if f.crc32c.is_none() || checked() {
            continue;
        }
        let path = object_store::path::Path::from(f.path.as_str());
        let bytes = store.get(&path).await?.bytes().await?;
        f.verify(&bytes)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        VERIFIED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(f.path.clone());
    }
    Ok(())
}

/// Row selections of deletion vectors read by this process, by vector file and offset
/// (vector files never change once written). Bounded: cleared whole when full.
static SELECTIONS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<(String, u32), RowSelection>>,
> = std::sync::LazyLock::new(Default::default);
const SELECTIONS_KEPT: usize = 4096;

/// The rows of `f` its deletion vector leaves live, as a Parquet row selection.
async fn live_rows(
    state: &dyn Session,
    paths: &TablePaths,
    f: &FileMeta,
    dv: &DeletionVector,
) -> Result<RowSelection> {
    use object_store::ObjectStoreExt;
    let key = (dv.uuid.clone(), dv.offset);
    if let Some(sel) = SELECTIONS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
    {
        return Ok(sel.clone());
    }
    let store = state
        .runtime_env()
        .object_store(ObjectStoreUrl::parse(STORE_URL)?)?;
    let path = paths.deletion_vector(&dv.uuid);
    let bytes = store.get(&path).await?.bytes().await?;
    let mask = deletion_vector::decode(&bytes, dv.offset, dv.size_in_bytes, path.as_ref())
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    let sel = selection_without(&mask, f.rows);
    let mut cache = SELECTIONS.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= SELECTIONS_KEPT {
        cache.clear();
    }
    cache.insert(key, sel.clone());
    Ok(sel)
}

/// Every row of `rows` but those in `mask`, as runs of selected and skipped rows.
fn selection_without(mask: &roaring::RoaringTreemap, rows: u64) -> RowSelection {
    let mut selectors = Vec::new();
    let mut next = 0u64;
    for masked in mask.iter().take_while(|&r| r < rows) {
        if masked > next {
            selectors.push(RowSelector::select((masked - next) as usize));
        }
        match selectors.last_mut() {
            Some(last) if last.skip => last.row_count += 1,
            _ => selectors.push(RowSelector::skip(1)),
        }
        next = masked + 1;
    }
    if next < rows {
        selectors.push(RowSelector::select((rows - next) as usize));
    }
    RowSelection::from(selectors)
}

#[derive(Debug)]
pub(crate) struct RawSource {
    pub schema: SchemaRef,
    pub files: Vec<FileMeta>,
    pub batches: Vec<RecordBatch>,
    /// Skip the rows each file's deletion vector masks (reading the current data; `as_of`
    /// reads every version).
    pub apply_vectors: bool,
    pub paths: TablePaths,
}

#[async_trait]
impl TableProvider for RawSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Files prune row groups and pages with them; the filter is still applied above.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        let (lo, hi) = time_bounds(filters);
        let files: Vec<&FileMeta> = self
            .files
            .iter()
            .filter(|f| overlaps_until(f.min_ts, f.max_ts, lo, hi))
            .collect();
        if !files.is_empty() {
            verify_files(state, &files).await?;
            let format =
                ParquetFormat::default().with_options(state.table_options().parquet.clone());
            let source = format.file_source(TableSchema::from(self.schema.clone()));
            let target = state.config_options().execution.target_partitions.max(1);
            let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); target.min(files.len())];
            for (i, f) in files.iter().enumerate() {
                let n = groups.len();
                let mut file = PartitionedFile::new(f.path.clone(), f.size);
                if let Some(dv) = f.deletion_vector.as_ref().filter(|_| self.apply_vectors) {
                    let live = live_rows(state, &self.paths, f, dv).await?;
                    file = file.with_extension(ParquetRowSelection::new(live));
                }
                groups[i % n].push(file);
            }
            let config = FileScanConfigBuilder::new(ObjectStoreUrl::parse(STORE_URL)?, source)
                .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
            inputs.push(format.create_physical_plan(state, config).await?);
        }
        let batches: Vec<RecordBatch> = self
            .batches
            .iter()
            .filter(|b| {
                meterbase_storage::batch_ts_range(b)
                    .is_some_and(|(min, max)| overlaps_until(min, max, lo, hi))
            })
            .cloned()
            .collect();
        if !batches.is_empty() {
            inputs.push(MemorySourceConfig::try_new_exec(
                &[batches],
                self.schema.clone(),
                projection.cloned(),
            )?);
        }
        if inputs.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        UnionExec::try_new(inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_selection_skips_exactly_the_masked_rows() {
        let mask: roaring::RoaringTreemap = [0u64, 3, 4, 9].into_iter().collect();
        let sel = selection_without(&mask, 10);
        let kept: Vec<usize> = sel
            .iter()
            .scan(0usize, |at, s| {
                let start = *at;
                *at += s.row_count;
                Some((start, *s))
            })
            .filter(|(_, s)| !s.skip)
            .flat_map(|(start, s)| start..start + s.row_count)
            .collect();
        assert_eq!(kept, vec![1, 2, 5, 6, 7, 8]);
        assert_eq!(sel.row_count(), 6);
        assert_eq!(
            selection_without(&roaring::RoaringTreemap::new(), 3).row_count(),
            3
        );
    }
}
