//! Queries over the protocol, simple and extended: parsed with datafusion-pg-catalog's
//! rewrites of what clients send, session statements answered here, everything else planned
//! and run by `QueryEngine` (the sandbox, caps and admission of `/sql`) with the rows
//! encoded by arrow-pg as they come.
//!
//! Where pgwire falls short, fixed here: its portal fetch collects every remaining row before
//! sending any when a client asks for all of them (`Execute` with no row limit, what
//! psycopg and most drivers send), so `on_execute` streams those itself.

use std::fmt::Debug;
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use arrow_pg::datatypes::df::deserialize_parameters_with_server_types;
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use async_trait::async_trait;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::prelude::SessionContext;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use futures::stream::{self, BoxStream};
use futures::{Sink, StreamExt};
use meterbase_catalog::Organisation;
use meterbase_query::statement::{Described, QueryStream, SqlStatement};
use meterbase_query::{Caller, QueryKind};
use pgwire::api::auth::StartupHandler;
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler, send_partial_query_response};
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionManager, DEFAULT_NAME, ErrorHandler,
    PgWireConnectionState, PgWireServerHandlers, Type,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::DataRow;
use pgwire::messages::extendedquery::Execute;
use pgwire::types::format::FormatOptions;

use crate::auth::{KeyAuth, tenant};
use crate::catalog::PgCatalog;
use crate::config::Tenants;
use crate::error::{query_error, user_error};
use crate::session::{Settings, Utility, classify, show};

/// A statement as a `Parse` leaves it: a session statement, or a query with what describing
/// it needs (planned once there; run against fresh snapshots at each `Execute`).
#[derive(Clone)]
pub(crate) enum Prepared {
    Utility(Utility),
    Query {
        statement: Box<SqlStatement>,
        schema: SchemaRef,
        params: Vec<Option<DataType>>,
    },
}

/// What every connection shares: the server's tenants, the catalog, the SQL parser.
pub(crate) struct Engine {
    tenants: Arc<dyn Tenants>,
    catalog: Arc<PgCatalog>,
    sql: PostgresCompatibilityParser,
}

fn caller(org: &Organisation) -> Caller<'_> {
    Caller {
        org: &org.id,
        kind: QueryKind::Sql,
    }
}

impl Engine {
    pub(crate) fn new(tenants: Arc<dyn Tenants>, catalog: Arc<PgCatalog>) -> Engine {
        Engine {
            tenants,
            catalog,
            sql: PostgresCompatibilityParser::new(),
        }
    }

    fn parse(&self, sql: &str) -> PgWireResult<Vec<SqlStatement>> {
        self.sql
            .parse(sql)
            .map_err(|e| user_error("42601", e.to_string()))
    }

    fn snapshots(&self, org: &Organisation) -> PgWireResult<Vec<meterbase_storage::TableSnapshot>> {
        self.tenants
            .snapshots(org)
            .map_err(|e| user_error("XX000", e))
    }

    async fn describe(
        &self,
        org: &Organisation,
        statement: &SqlStatement,
    ) -> PgWireResult<Described> {
        let tables = self.snapshots(org)?;
        let catalog = self.catalog.clone();
        let org_id = org.id.clone();
        self.tenants
            .engine()
            .describe_statement(
                caller(org),
                tables,
                statement,
                &move |ctx: &SessionContext| catalog.setup(ctx, &org_id),
            )
            .await
            .map_err(query_error)
    }

    async fn start(
        &self,
        org: &Organisation,
        statement: SqlStatement,
        params: Vec<ScalarValue>,
        as_of: Option<i64>,
    ) -> PgWireResult<QueryStream> {
        let tables = self.snapshots(org)?;
        let catalog = self.catalog.clone();
        let org_id = org.id.clone();
        self.tenants
            .engine()
            .execute_stream(
                caller(org),
                tables,
                statement,
                params,
                as_of,
                &move |ctx: &SessionContext| catalog.setup(ctx, &org_id),
            )
            .await
            .map_err(query_error)
    }

    fn utility<C: ClientInfo + ?Sized>(&self, client: &C, u: &Utility) -> PgWireResult<Response> {
        let settings = Settings::of(client);
        Ok(match u {
            Utility::SetAsOf(Some(text)) => {
                let t = self
                    .tenants
                    .parse_as_of(text)
                    .map_err(|e| user_error("22007", e))?;
                settings.set_as_of(Some((t, text.clone())));
                Response::Execution(Tag::new("SET"))
            }
            Utility::SetAsOf(None) => {
                settings.set_as_of(None);
                Response::Execution(Tag::new("SET"))
            }
            Utility::NoOp(tag) => Response::Execution(Tag::new(tag)),
            Utility::Begin => Response::TransactionStart(Tag::new("BEGIN")),
            Utility::End(tag) => Response::TransactionEnd(Tag::new(tag)),
            Utility::Show(name) => {
                let value = show(name, &settings).ok_or_else(|| {
                    user_error(
                        "42704",
                        format!("unrecognized configuration parameter {name:?}"),
                    )
                })?;
                let fields = Arc::new(show_fields(name, FieldFormat::Text));
                let mut row = DataRowEncoder::new(fields.clone());
                row.encode_field(&value)?;
                let row = row.take_row();
                Response::Query(QueryResponse::new(fields, stream::iter([Ok(row)])))
            }
        })
    }
}

fn show_fields(name: &str, format: FieldFormat) -> Vec<FieldInfo> {
    vec![FieldInfo::new(
        name.to_owned(),
        None,
        None,
        Type::TEXT,
        format,
    )]
}

fn format_options<C: ClientInfo + ?Sized>(client: &C) -> Arc<FormatOptions> {
    Arc::new(FormatOptions::from_client_metadata(client.metadata()))
}

/// A running query's rows as the protocol's, encoded a batch at a time as batches arrive.
fn rows(
    stream: QueryStream,
    format: &Format,
    options: Arc<FormatOptions>,
) -> PgWireResult<QueryResponse> {
    let fields = Arc::new(arrow_schema_to_pg_fields(
        &stream.schema(),
        format,
        Some(options),
    )?);
    let encode = fields.clone();
    let rows = stream.flat_map(move |batch| -> BoxStream<'static, PgWireResult<DataRow>> {
        match batch {
            Ok(batch) => stream::iter(encode_recordbatch(encode.clone(), batch)).boxed(),
            Err(e) => stream::iter([Err(query_error(e))]).boxed(),
        }
    });
    Ok(QueryResponse::new(fields, rows))
}

/// Serves both protocols for every connection.
pub(crate) struct Service {
    engine: Arc<Engine>,
    parser: Arc<Parser>,
}

impl Service {
    pub(crate) fn new(engine: Arc<Engine>) -> Service {
        Service {
            parser: Arc::new(Parser(engine.clone())),
            engine,
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for Service {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let org = tenant(client)?;
        let statements = self.engine.parse(query)?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut responses = Vec::with_capacity(statements.len());
        let mut queries = 0;
        for statement in statements {
            if let Some(u) = classify(&statement)? {
                responses.push(self.engine.utility(client, &u)?);
                continue;
            }
            let as_of = Settings::of(client).as_of();
            let options = format_options(client);
            queries += 1;
            if queries == 1 {
                let stream = self
                    .engine
                    .start(&org, statement, Vec::new(), as_of)
                    .await?;
                responses.push(Response::Query(rows(
                    stream,
                    &Format::UnifiedText,
                    options,
                )?));
            } else {
                // pgwire sends a message's results after all of them are made: a later query
                // starts only when its rows are read, so it never waits for a slot an earlier
                // one of the same message holds.
                responses.push(Response::Query(
                    self.later(&org, statement, as_of, options).await?,
                ));
            }
        }
        Ok(responses)
    }
}

impl Service {
    async fn later(
        &self,
        org: &Arc<Organisation>,
        statement: SqlStatement,
        as_of: Option<i64>,
        options: Arc<FormatOptions>,
    ) -> PgWireResult<QueryResponse> {
        let described = self.engine.describe(org, &statement).await?;
        let fields = Arc::new(arrow_schema_to_pg_fields(
            &described.schema,
            &Format::UnifiedText,
            Some(options.clone()),
        )?);
        let engine = self.engine.clone();
        let org = org.clone();
        let lazy = stream::once(async move {
            let stream = engine.start(&org, statement, Vec::new(), as_of).await?;
            rows(stream, &Format::UnifiedText, options)
        })
        .flat_map(|r| -> BoxStream<'static, PgWireResult<DataRow>> {
            match r {
                Ok(response) => response.data_rows,
                Err(e) => stream::iter([Err(e)]).boxed(),
            }
        });
        Ok(QueryResponse::new(fields, lazy))
    }
}

/// The extended protocol's `Parse`: a statement planned once for its description.
pub(crate) struct Parser(Arc<Engine>);

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut statements = self.0.parse(sql)?;
        let statement = match statements.len() {
            0 => return Ok(None),
            1 => statements.remove(0),
            _ => {
                return Err(user_error(
                    "42601",
                    "cannot insert multiple commands into a prepared statement",
                ));
            }
        };
        if let Some(u) = classify(&statement)? {
            return Ok(Some(Prepared::Utility(u)));
        }
        let org = tenant(client)?;
        let described = self.0.describe(&org, &statement).await?;
        Ok(Some(Prepared::Query {
            statement: Box::new(statement),
            schema: described.schema,
            params: described.params,
        }))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        match stmt {
            Prepared::Utility(_) => Ok(Vec::new()),
            Prepared::Query { params, .. } => params
                .iter()
                .map(|p| p.as_ref().map_or(Ok(Type::UNKNOWN), into_pg_type))
                .collect(),
        }
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let format = format.unwrap_or(&Format::UnifiedText);
        match stmt {
            Prepared::Query { schema, .. } => arrow_schema_to_pg_fields(schema, format, None),
            Prepared::Utility(Utility::Show(name)) => Ok(show_fields(name, format.format_for(0))),
            Prepared::Utility(_) => Ok(Vec::new()),
        }
    }
}

/// A portal's parameters as values of the types the statement gives them (the client's type
/// when it names one).
fn parameters(
    portal: &Portal<Prepared>,
    types: &[Option<DataType>],
) -> PgWireResult<Vec<ScalarValue>> {
    let inferred: Vec<Option<&DataType>> = types.iter().map(Option::as_ref).collect();
    match deserialize_parameters_with_server_types(portal, &inferred, &[])? {
        ParamValues::List(values) => Ok(values.into_iter().map(|v| v.value).collect()),
        ParamValues::Map(_) => Err(user_error("08P01", "parameters are positional")),
    }
}

#[async_trait]
impl ExtendedQueryHandler for Service {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let Some(Entry::Value(portal)) = client.portal_store().get_portal(name) else {
            return self._on_execute(client, message).await;
        };
        let state = portal.state();
        let fresh = matches!(*state.lock().await, PortalExecutionState::Initial);
        let query = matches!(portal.statement.statement, Prepared::Query { .. });
        let ready = matches!(client.state(), PgWireConnectionState::ReadyForQuery);
        // A row limit bounds what pgwire collects; without one, stream.
        if message.max_rows != 0 || !fresh || !query || !ready {
            return self._on_execute(client, message).await;
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let Response::Query(mut response) =
            ExtendedQueryHandler::do_query(self, client, portal.as_ref(), 0).await?
        else {
            return Err(user_error("XX000", "a query answered without rows"));
        };
        *state.lock().await = PortalExecutionState::Finished;
        send_partial_query_response(client, &mut response, 0).await?;
        client.set_state(PgWireConnectionState::ReadyForQuery);
        Ok(())
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match &portal.statement.statement {
            Prepared::Utility(u) => self.engine.utility(client, u),
            Prepared::Query {
                statement, params, ..
            } => {
                let org = tenant(client)?;
                let values = parameters(portal, params)?;
                let as_of = Settings::of(client).as_of();
                let stream = self
                    .engine
                    .start(&org, statement.as_ref().clone(), values, as_of)
                    .await?;
                Ok(Response::Query(rows(
                    stream,
                    &portal.result_column_format,
                    format_options(client),
                )?))
            }
        }
    }
}

struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C>(&self, _client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        tracing::debug!("postgres client error: {error}");
    }
}

/// The handlers of one listener, shared by its connections.
pub(crate) struct Handlers {
    service: Arc<Service>,
    auth: Arc<KeyAuth>,
    cancel: Arc<DefaultCancelHandler>,
}

impl Handlers {
    pub(crate) fn new(
        tenants: Arc<dyn Tenants>,
        catalog: Arc<PgCatalog>,
        allow_cleartext: bool,
    ) -> Handlers {
        let connections = Arc::new(ConnectionManager::new());
        Handlers {
            service: Arc::new(Service::new(Arc::new(Engine::new(
                tenants.clone(),
                catalog,
            )))),
            auth: Arc::new(KeyAuth::new(tenants, connections.clone(), allow_cleartext)),
            cancel: Arc::new(DefaultCancelHandler::new(connections)),
        }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.service.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.service.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.auth.clone()
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(LogErrors)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.cancel.clone()
    }
}
