//! What clients read to list tables and columns: `pg_catalog` (datafusion-pg-catalog's tables
//! and functions) and DataFusion's `information_schema`, both built from the session itself,
//! which holds the organisation's tables only, so another organisation's never appear.
//!
//! Where datafusion-pg-catalog falls short for us, fixed here: our event types are views
//! over their files, which `pg_class` would list as relkind `v` and information_schema as
//! `VIEW` (psql's `\dt` shows none, BI tools file them under views): each is re-registered
//! as a table (`AsTable`); it numbers tables in the order a catalog lists them, which is a
//! hash map's for us, and its oids live in the provider, which numbers catalogs and schemas
//! only when `pg_class` is read first: a client's second query (psql's `\d` asks by oid)
//! would see other oids. Names are sorted (`TenantCatalog`), and each organisation keeps one
//! provider, so its oids stay as long as the server runs (`OrgCatalog`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{CatalogProviderList, Session};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::DataFusionError;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use datafusion_pg_catalog::pg_catalog::catalog_info::CatalogInfo;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::{
    PgCatalogSchemaProvider, PgCatalogStaticTables, array_bounds_udf, create_current_database_udf,
    create_current_schema_udf, create_current_schemas_udf, create_pg_backend_pid_udf,
    create_pg_encoding_to_char_udf, create_pg_get_constraintdef,
    create_pg_get_partition_ancestors_udf, create_pg_get_partkeydef_udf,
    create_pg_get_statisticsobjdef_columns_udf, create_pg_get_userbyid_udf,
    create_pg_relation_is_publishable_udf, create_pg_relation_size_udf,
    create_pg_stat_get_numscans, create_pg_table_is_visible, create_pg_total_relation_size_udf,
    create_session_user_udf, format_type, generate_series_arg_coercion, has_privilege_udf,
    oid_type_planner, pg_get_expr_udf, quote_ident_udf,
};

use crate::error::PgError;

/// The catalog name clients see (`current_database()`), and the schema of the tables.
pub(crate) const DATABASE: &str = "meterbase";
const TABLES_SCHEMA: &str = "public";

/// Built once: the static tables are decoded from Arrow files embedded in the crate.
pub(crate) struct PgCatalog {
    statics: Arc<PgCatalogStaticTables>,
    orgs: Mutex<HashMap<String, Arc<OrgCatalog>>>,
}

type Provider = PgCatalogSchemaProvider<TenantCatalog, EmptyContextProvider>;

/// One organisation's `pg_catalog`, kept across its sessions for its oids.
struct OrgCatalog {
    tables: TenantCatalog,
    provider: Arc<Provider>,
}

impl PgCatalog {
    pub(crate) fn new() -> Result<PgCatalog, PgError> {
        let statics =
            PgCatalogStaticTables::try_new().map_err(|e| PgError::Catalog(e.to_string()))?;
        Ok(PgCatalog {
            statics: Arc::new(statics),
            orgs: Mutex::new(HashMap::new()),
        })
    }

    /// Adds `pg_catalog` and the functions clients call to a tenant session (what
    /// `datafusion_pg_catalog::setup_pg_catalog` does, with our catalog view of it).
    pub(crate) fn setup(&self, ctx: &SessionContext, org: &str) -> Result<(), DataFusionError> {
        let public = ctx
            .catalog(DATABASE)
            .and_then(|c| c.schema(TABLES_SCHEMA))
            .ok_or_else(|| DataFusionError::Configuration(format!("no schema {TABLES_SCHEMA}")))?;
        for name in public.table_names() {
            if let Some(view) = public.deregister_table(&name)? {
                public.register_table(name, Arc::new(AsTable(view)))?;
            }
        }
        let org = self.org(org)?;
        org.tables.enter(ctx.state().catalog_list());
        ctx.catalog(DATABASE)
            .ok_or_else(|| DataFusionError::Configuration(format!("no catalog {DATABASE}")))?
            .register_schema("pg_catalog", org.provider.clone())?;
        ctx.register_udf(create_current_database_udf(DATABASE));
        ctx.register_udf(create_current_schema_udf());
        ctx.register_udf(create_current_schemas_udf());
        ctx.register_udf(create_pg_get_userbyid_udf());
        for name in [
            "has_table_privilege",
            "has_schema_privilege",
            "has_database_privilege",
            "has_any_column_privilege",
        ] {
            ctx.register_udf(has_privilege_udf::create_has_privilege_udf(name));
        }
        ctx.register_udf(create_pg_table_is_visible());
        ctx.register_udf(format_type::create_format_type_udf());
        ctx.register_udf(create_session_user_udf());
        ctx.register_udtf("pg_get_keywords", self.statics.pg_get_keywords.clone());
        ctx.register_udf(pg_get_expr_udf::create_pg_get_expr_udf());
        ctx.register_udf(create_pg_get_partkeydef_udf());
        ctx.register_udf(create_pg_relation_is_publishable_udf());
        ctx.register_udf(create_pg_get_statisticsobjdef_columns_udf());
        ctx.register_udf(create_pg_encoding_to_char_udf());
        ctx.register_udf(create_pg_backend_pid_udf());
        ctx.register_udf(create_pg_relation_size_udf());
        ctx.register_udf(create_pg_total_relation_size_udf());
        ctx.register_udf(create_pg_stat_get_numscans());
        ctx.register_udf(create_pg_get_constraintdef());
        ctx.register_udf(create_pg_get_partition_ancestors_udf());
        ctx.register_udf(quote_ident_udf::create_quote_ident_udf());
        ctx.register_udf(quote_ident_udf::create_parse_ident_udf());
        ctx.register_udf(array_bounds_udf::create_array_upper_udf());
        ctx.register_udf(array_bounds_udf::create_array_lower_udf());
        // `regclass` and the other oid alias types in casts.
        let state = ctx.state_ref();
        let existing = state.read().clone();
        *state.write() = SessionStateBuilder::new_from_existing(existing)
            .with_type_planner(Arc::new(oid_type_planner::PgOidTypePlanner))
            .build();
        generate_series_arg_coercion::CoerceIntArgsToBigInt::widen(ctx);
        Ok(())
    }
}

impl PgCatalog {
    fn org(&self, org: &str) -> Result<Arc<OrgCatalog>, DataFusionError> {
        let mut orgs = self.orgs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = orgs.get(org) {
            return Ok(found.clone());
        }
        let tables = TenantCatalog::default();
        let provider = Arc::new(PgCatalogSchemaProvider::try_new(
            tables.clone(),
            self.statics.clone(),
            EmptyContextProvider,
        )?);
        let made = Arc::new(OrgCatalog { tables, provider });
        orgs.insert(org.to_owned(), made.clone());
        Ok(made)
    }
}

/// An organisation's tables as `pg_catalog` sees them, names sorted: those of its live
/// sessions (all alike but for their snapshots, which pg_catalog does not read). Held
/// weakly: a snapshot kept here would keep compaction from deleting the files it lists.
#[derive(Clone, Debug, Default)]
struct TenantCatalog(Arc<Mutex<Vec<Weak<dyn CatalogProviderList>>>>);

impl TenantCatalog {
    fn enter(&self, session: &Arc<dyn CatalogProviderList>) {
        let mut live = self.0.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(session));
    }

    /// The newest live session's catalogs, or none (then pg_catalog lists nothing).
    fn current(&self) -> Option<Arc<dyn CatalogProviderList>> {
        let live = self.0.lock().unwrap_or_else(|p| p.into_inner());
        live.iter().rev().find_map(Weak::upgrade)
    }
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort_unstable();
    names
}

#[async_trait]
impl CatalogInfo for TenantCatalog {
    async fn catalog_names(&self) -> Result<Vec<String>, DataFusionError> {
        Ok(sorted(
            self.current()
                .map(|c| CatalogProviderList::catalog_names(c.as_ref()))
                .unwrap_or_default(),
        ))
    }

    async fn schema_names(&self, catalog: &str) -> Result<Option<Vec<String>>, DataFusionError> {
        Ok(self
            .current()
            .and_then(|l| l.catalog(catalog))
            .map(|c| sorted(c.schema_names())))
    }

    async fn table_names(
        &self,
        catalog: &str,
        schema: &str,
    ) -> Result<Option<Vec<String>>, DataFusionError> {
        Ok(self
            .current()
            .and_then(|l| l.catalog(catalog))
            .and_then(|c| c.schema(schema))
            .map(|s| sorted(s.table_names())))
    }

    async fn table_schema(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<SchemaRef>, DataFusionError> {
        let Some(provider) = self
            .current()
            .and_then(|l| l.catalog(catalog))
            .and_then(|c| c.schema(schema))
        else {
            return Ok(None);
        };
        Ok(provider.table(table).await?.map(|t| t.schema()))
    }

    async fn table_type(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<TableType>, DataFusionError> {
        let Some(provider) = self
            .current()
            .and_then(|l| l.catalog(catalog))
            .and_then(|c| c.schema(schema))
        else {
            return Ok(None);
        };
        provider.table_type(table).await
    }
}

/// An event type's view, presented as the table it is to its users; everything else is the
/// view's (planning inlines the view's plan through `get_logical_plan`).
#[derive(Debug)]
struct AsTable(Arc<dyn TableProvider>);

#[async_trait]
impl TableProvider for AsTable {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_logical_plan(&self) -> Option<Cow<'_, LogicalPlan>> {
        self.0.get_logical_plan()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>, DataFusionError> {
        self.0.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        self.0.scan(state, projection, filters, limit).await
    }
}
