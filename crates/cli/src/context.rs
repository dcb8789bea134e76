//! What every subcommand gets: where the configuration and data live.

use crate::CliError;
use medicodax_config::Config;
use std::path::PathBuf;

/// Global options resolved from the command line and environment.
#[derive(Debug, Clone)]
pub struct Context {
    /// `--config` / `MEDICODAX_CONFIG`.
    pub config_path: Option<PathBuf>,
    /// `--data-dir` / `MEDICODAX_DATA_DIR`.
    pub data_dir: PathBuf,
}

impl Context {
    /// Loads the configuration (defaults, file, environment).
    pub fn config(&self) -> Result<Config, CliError> {
        Ok(Config::load(self.config_path.as_deref())?)
    }

    /// The folder holding the gateway's key ring.
    pub fn gateway_key_dir(&self) -> PathBuf {
        self.data_dir.join("keys").join("gateway")
    }
}
