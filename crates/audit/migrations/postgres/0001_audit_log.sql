-- The tamper-evident audit log (PostgreSQL). See crates/audit/src/lib.rs.
-- Entries: one row per Merkle leaf. `canonical` is JCS(LogEntry) and `leaf_hash` is
-- SHA-256(0x00 || canonical); the other columns are copies for queries, checked by verify.
CREATE TABLE audit_entries (
    seq         BIGINT PRIMARY KEY,
    kind        TEXT   NOT NULL,
    agent       TEXT,
    acting_user TEXT,
    jti         TEXT,
    time_ms     BIGINT NOT NULL,
    canonical   BYTEA  NOT NULL,
    leaf_hash   BYTEA  NOT NULL
);
CREATE INDEX audit_entries_call ON audit_entries (agent, jti);
CREATE INDEX audit_entries_time ON audit_entries (time_ms);

-- Signed tree heads (compact JWS, typ medicodax-checkpoint+jwt).
CREATE TABLE audit_checkpoints (
    id   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    size BIGINT NOT NULL,
    root TEXT   NOT NULL,
    time BIGINT NOT NULL,
    kid  TEXT   NOT NULL,
    jws  TEXT   NOT NULL
);
CREATE INDEX audit_checkpoints_size ON audit_checkpoints (size);

-- Used call ids, kept until they expire: written in the same transaction as the intent.
CREATE TABLE audit_replay (
    iss        TEXT   NOT NULL,
    jti        TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (iss, jti)
);
CREATE INDEX audit_replay_expiry ON audit_replay (expires_at);

-- Guards against accidental changes by code or by hand. They are not the security
-- boundary (anyone with owner rights can drop them): `audit verify` is.
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
