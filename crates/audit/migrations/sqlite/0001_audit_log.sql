-- The tamper-evident audit log (SQLite). See crates/audit/src/lib.rs.
-- Entries: one row per Merkle leaf. `canonical` is JCS(LogEntry) and `leaf_hash` is
-- SHA-256(0x00 || canonical); the other columns are copies for queries, checked by verify.
CREATE TABLE audit_entries (
    seq         INTEGER PRIMARY KEY,
    kind        TEXT    NOT NULL,
    agent       TEXT,
    acting_user TEXT,
    jti         TEXT,
    time_ms     INTEGER NOT NULL,
    canonical   BLOB    NOT NULL,
    leaf_hash   BLOB    NOT NULL
);
CREATE INDEX audit_entries_call ON audit_entries (agent, jti);
CREATE INDEX audit_entries_time ON audit_entries (time_ms);

-- Signed tree heads (compact JWS, typ medicodax-checkpoint+jwt).
CREATE TABLE audit_checkpoints (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,
    size INTEGER NOT NULL,
    root TEXT    NOT NULL,
    time INTEGER NOT NULL,
    kid  TEXT    NOT NULL,
    jws  TEXT    NOT NULL
);
CREATE INDEX audit_checkpoints_size ON audit_checkpoints (size);

-- Used call ids, kept until they expire: written in the same transaction as the intent.
CREATE TABLE audit_replay (
    iss        TEXT    NOT NULL,
    jti        TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (iss, jti)
) WITHOUT ROWID;
CREATE INDEX audit_replay_expiry ON audit_replay (expires_at);

-- Guards against accidental changes by code or by hand. They are not the security
-- boundary (anyone who can write the file can drop them): `audit verify` is.
CREATE TRIGGER audit_entries_append_only_update BEFORE UPDATE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'audit_entries is append-only'); END;
CREATE TRIGGER audit_entries_append_only_delete BEFORE DELETE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'audit_entries is append-only'); END;
CREATE TRIGGER audit_checkpoints_append_only_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
CREATE TRIGGER audit_checkpoints_append_only_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
