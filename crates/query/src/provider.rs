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
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use meterbase_storage::{FileMeta, overlaps_until};

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
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        VERIFIED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(f.path.clone());
    }
    Ok(())
}

#[derive(Debug)]
pub(crate) struct RawSource {
    pub schema: SchemaRef,
    pub files: Vec<FileMeta>,
    pub batches: Vec<RecordBatch>,
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
                groups[i % n].push(PartitionedFile::new(f.path.clone(), f.size));
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
