//! Tamper-evident audit log: records, RFC 6962 Merkle tree, signed checkpoints, SQLite and PostgreSQL stores
