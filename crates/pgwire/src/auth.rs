//! Startup: the password is an API key and the key alone decides the organisation (the user
//! name is not checked, as an `x-api-key` request has none); a wrong key is 28P01.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{Sink, SinkExt};
use meterbase_catalog::Organisation;
use pgwire::api::auth::{
    DefaultServerParameterProvider, LoginInfo, StartupHandler, finish_authentication,
    protocol_negotiation, save_startup_parameters_to_metadata,
};
use pgwire::api::{
    ClientInfo, ConnectionManager, PgWireConnectionState, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::config::Tenants;

/// The organisation a connection signed in as, kept in its session extensions.
pub(crate) struct Tenant(pub Arc<Organisation>);

/// The organisation of a connection; none only before authentication, which pgwire does not
/// let a query reach.
pub(crate) fn tenant<C: ClientInfo + ?Sized>(client: &C) -> PgWireResult<Arc<Organisation>> {
    client
        .session_extensions()
        .get::<Tenant>()
        .map(|t| t.0.clone())
        .ok_or_else(|| PgWireError::InvalidPassword(String::new()))
}

pub(crate) struct KeyAuth {
    tenants: Arc<dyn Tenants>,
    parameters: DefaultServerParameterProvider,
    pids: RandomPidSecretKeyGenerator,
    connections: Arc<ConnectionManager>,
    /// `--pg-allow-cleartext`: a password may come without TLS from off this machine.
    allow_cleartext: bool,
}

impl KeyAuth {
    pub(crate) fn new(
        tenants: Arc<dyn Tenants>,
        connections: Arc<ConnectionManager>,
        allow_cleartext: bool,
    ) -> KeyAuth {
        let mut parameters = DefaultServerParameterProvider::default();
        // Clients pick their catalog queries by server_version; the pg_catalog we serve and
        // the rewrites of datafusion-pg-catalog follow Postgres 16.
        parameters.server_version = "16.6 (meterbase)".to_owned();
        parameters.time_zone = "UTC".to_owned();
        parameters.is_superuser = false;
        parameters.default_transaction_read_only = true;
        KeyAuth {
            tenants,
            parameters,
            pids: RandomPidSecretKeyGenerator::default(),
            connections,
            allow_cleartext,
        }
    }
}

#[async_trait]
impl StartupHandler for KeyAuth {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                // With TLS on offer, a client may still start without it: the key is asked
                // for in clear text only on this machine, or where the operator waived it.
                if !client.is_secure()
                    && !client.socket_addr().ip().is_loopback()
                    && !self.allow_cleartext
                {
                    return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                        "FATAL".to_owned(),
                        "28000".to_owned(),
                        "TLS is required: connect with sslmode=require".to_owned(),
                    ))));
                }
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::CleartextPassword,
                    ))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(pwd) => {
                let pwd = pwd.into_password()?;
                let user = LoginInfo::from_client_info(client)
                    .user()
                    .unwrap_or_default()
                    .to_owned();
                let Some(org) = self.tenants.authenticate(pwd.password.trim()) else {
                    tracing::info!(user = %user, "postgres connection refused: unknown API key");
                    return Err(PgWireError::InvalidPassword(user));
                };
                tracing::info!(org = %org.id, user = %user, "postgres connection signed in");
                client.session_extensions().insert(Tenant(org));
                let (pid, secret) = self.pids.generate(client);
                client.set_pid_and_secret_key(pid, secret.clone());
                // So a client's cancel request (psql's Ctrl-C) reaches this connection.
                let (handle, guard) = self.connections.register(pid, secret);
                client.session_extensions().insert(handle);
                client.session_extensions().insert(guard);
                finish_authentication(client, &self.parameters).await?;
            }
            _ => {}
        }
        Ok(())
    }
}
