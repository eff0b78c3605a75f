//! Arguments the file-reading commands (`import`, `reconcile`) share: which server and event
//! type they talk to, and which events file they read and how.

use std::path::PathBuf;

/// The server and event type a command talks to.
#[derive(clap::Args)]
pub struct Target {
    /// Server address.
    #[arg(long, env = "METERBASE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key (see <data-dir>/default-api-key).
    #[arg(long, env = "METERBASE_API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// The event type's api_slug.
    #[arg(long)]
    pub event: String,
}

/// An events file and how to read it.
#[derive(clap::Args)]
pub struct Source {
    /// `csv`, `ndjson`, `arrow` (IPC stream or file) or `parquet`; by default from the file
    /// name (`.csv`, `.ndjson`, `.jsonl`, with or without `.gz`; `.arrow`, `.arrows`, `.ipc`,
    /// `.feather`; `.parquet`). Required when reading standard input (`-`).
    #[arg(long, value_parser = ["csv", "ndjson", "arrow", "parquet"])]
    pub format: Option<String>,
    /// CSV, Arrow and Parquet: `FIELD=COLUMN`, repeatable: the file's column holding a field.
    #[arg(long = "map")]
    pub map: Vec<String>,
    /// CSV, Arrow and Parquet: ignore columns that match no field.
    #[arg(long)]
    pub ignore_unknown_columns: bool,
    /// The events file; `-` reads standard input.
    pub file: PathBuf,
}
