//! The configuration file: typed, layered (defaults, TOML, MEDICODAX_ environment)
