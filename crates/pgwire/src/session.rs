//! Statements about the session rather than the data: `SET meterbase.as_of` (the one setting
//! that changes answers), the settings clients send on connect (accepted, changing nothing),
//! `SHOW`, and transaction statements (everything is read-only, so they only move the
//! transaction status clients track).

use std::sync::Mutex;

use datafusion::sql::sqlparser::ast::{Expr, Reset, Set, Statement};
use pgwire::api::ClientInfo;
use pgwire::error::PgWireResult;

use crate::error::user_error;

/// Settings a client sends on connect that we accept without effect: answers are the same
/// whatever they say (times are UTC, text is UTF-8, floats are printed exactly).
const ACCEPTED: &[&str] = &[
    "application_name",
    "extra_float_digits",
    "datestyle",
    "client_encoding",
    "search_path",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "client_min_messages",
    "intervalstyle",
    "bytea_output",
    "standard_conforming_strings",
    "timezone",
    "time zone",
    "jit",
];

/// Time zone names that mean UTC, the only zone our timestamps are in.
const UTC: &[&str] = &["utc", "gmt", "etc/utc", "z", "zulu", "+00:00", "0"];

pub(crate) const AS_OF: &str = "meterbase.as_of";

/// A connection's `as_of`: microseconds and the text it was set with (for `SHOW`).
#[derive(Default)]
pub(crate) struct Settings {
    as_of: Mutex<Option<(i64, String)>>,
}

impl Settings {
    pub(crate) fn of<C: ClientInfo + ?Sized>(client: &C) -> std::sync::Arc<Settings> {
        client
            .session_extensions()
            .get_or_insert_with(Settings::default)
    }

    pub(crate) fn as_of(&self) -> Option<i64> {
        self.lock().as_ref().map(|(t, _)| *t)
    }

    pub(crate) fn as_of_text(&self) -> String {
        self.lock()
            .as_ref()
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    }

    pub(crate) fn set_as_of(&self, value: Option<(i64, String)>) {
        *self.lock() = value;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(i64, String)>> {
        self.as_of.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a session statement asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Utility {
    /// `SET meterbase.as_of = '…'`, or back to the current data with `DEFAULT`/`RESET`.
    SetAsOf(Option<String>),
    /// A statement accepted without effect; its command tag.
    NoOp(&'static str),
    Begin,
    /// `COMMIT` or `ROLLBACK`, by tag.
    End(&'static str),
    /// `SHOW name`.
    Show(String),
}

fn unquote(e: &Expr) -> String {
    let text = e.to_string();
    match text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
        Some(inner) => inner.replace("''", "'"),
        None => text,
    }
}

fn refuse_set(name: &str) -> pgwire::error::PgWireError {
    user_error(
        "42501",
        format!("SET {name} is not accepted: {AS_OF} is the only setting this server changes"),
    )
}

/// The session statement `statement` is, `None` for a query, or the refusal of a `SET` we
/// do not accept.
pub(crate) fn classify(statement: &Statement) -> PgWireResult<Option<Utility>> {
    Ok(Some(match statement {
        Statement::Set(Set::SingleAssignment {
            variable, values, ..
        }) => {
            let name = variable.to_string().to_ascii_lowercase();
            if name == AS_OF {
                let value = values.first().map(unquote);
                match value {
                    Some(v) if !v.eq_ignore_ascii_case("default") && !v.is_empty() => {
                        Utility::SetAsOf(Some(v))
                    }
                    _ => Utility::SetAsOf(None),
                }
            } else if name == "timezone" {
                set_time_zone(values.first())?
            } else if ACCEPTED.contains(&name.as_str()) {
                Utility::NoOp("SET")
            } else {
                return Err(refuse_set(&name));
            }
        }
        Statement::Set(Set::SetTimeZone { value, .. }) => set_time_zone(Some(value))?,
        Statement::Set(Set::SetTransaction { .. }) => Utility::NoOp("SET"),
        Statement::Set(Set::SetNames { charset_name, .. }) => {
            let name = charset_name
                .value
                .to_ascii_lowercase()
                .replace(['-', '_'], "");
            if name != "utf8" {
                return Err(user_error("22023", "the only client encoding is UTF8"));
            }
            Utility::NoOp("SET")
        }
        Statement::Set(other) => return Err(refuse_set(&other.to_string())),
        Statement::Reset(r) => match &r.reset {
            Reset::ALL => Utility::SetAsOf(None),
            Reset::ConfigurationParameter(name) => {
                let name = name.to_string().to_ascii_lowercase();
                if name == AS_OF {
                    Utility::SetAsOf(None)
                } else {
                    Utility::NoOp("RESET")
                }
            }
        },
        Statement::ShowVariable { variable } => {
            let words: Vec<String> = variable
                .iter()
                .map(|i| i.value.to_ascii_lowercase())
                .collect();
            // `SHOW meterbase.as_of` comes as two words, like `SHOW TIME ZONE`.
            let dotted = words.join(".");
            Utility::Show(if dotted == AS_OF {
                dotted
            } else {
                words.join(" ")
            })
        }
        Statement::StartTransaction { .. } => Utility::Begin,
        Statement::Commit { .. } => Utility::End("COMMIT"),
        Statement::Rollback { .. } => Utility::End("ROLLBACK"),
        Statement::Discard { .. } => Utility::NoOp("DISCARD ALL"),
        Statement::Deallocate { .. } => Utility::NoOp("DEALLOCATE"),
        _ => return Ok(None),
    }))
}

fn set_time_zone(value: Option<&Expr>) -> PgWireResult<Utility> {
    let zone = value.map(unquote).unwrap_or_default().to_ascii_lowercase();
    if UTC.contains(&zone.as_str()) || zone == "default" || zone == "local" {
        Ok(Utility::NoOp("SET"))
    } else {
        Err(user_error(
            "22023",
            format!("time zone {zone:?}: timestamps here are UTC; only UTC is accepted"),
        ))
    }
}

/// The value `SHOW name` answers, or `None` for a setting we do not report.
pub(crate) fn show(name: &str, settings: &Settings) -> Option<String> {
    Some(match name {
        AS_OF => settings.as_of_text(),
        "timezone" | "time zone" => "UTC".into(),
        "transaction isolation level" | "transaction_isolation" => "read committed".into(),
        "transaction_read_only" | "default_transaction_read_only" => "on".into(),
        "server_version" => "16.6 (meterbase)".into(),
        "server_version_num" => "160006".into(),
        "server_encoding" | "client_encoding" => "UTF8".into(),
        "search_path" => "public".into(),
        "datestyle" => "ISO, MDY".into(),
        "standard_conforming_strings" => "on".into(),
        "integer_datetimes" => "on".into(),
        "max_identifier_length" => "63".into(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

    fn one(sql: &str) -> PgWireResult<Option<Utility>> {
        let statements = PostgresCompatibilityParser::new()
            .parse(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        classify(&statements[0])
    }

    #[test]
    fn as_of_is_the_one_setting_that_counts() {
        assert_eq!(
            one("SET meterbase.as_of = '2025-08-01T00:00:00Z'")
                .ok()
                .flatten(),
            Some(Utility::SetAsOf(Some("2025-08-01T00:00:00Z".into())))
        );
        assert_eq!(
            one("SET meterbase.as_of TO DEFAULT").ok().flatten(),
            Some(Utility::SetAsOf(None))
        );
        assert_eq!(
            one("RESET meterbase.as_of").ok().flatten(),
            Some(Utility::SetAsOf(None))
        );
        for accepted in [
            "SET extra_float_digits = 3",
            "SET application_name = 'psql'",
            "SET DateStyle = 'ISO'",
            "SET TIME ZONE 'UTC'",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
        ] {
            assert_eq!(
                one(accepted).ok().flatten(),
                Some(Utility::NoOp("SET")),
                "{accepted}"
            );
        }
        for refused in [
            "SET datafusion.execution.batch_size = 1",
            "SET TIME ZONE 'Europe/Berlin'",
            "SET meterbase_other = 1",
        ] {
            assert!(one(refused).is_err(), "{refused}");
        }
        assert_eq!(one("SELECT 1").ok().flatten(), None);
    }
}
