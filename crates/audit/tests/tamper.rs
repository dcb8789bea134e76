//! The tamper suite: each kind of tampering is done with raw SQL on the stored rows (the
//! append-only triggers dropped first, as an attacker with database access would), and
//! `verify` must name it, at the right seq. Every case runs on SQLite and on PostgreSQL.
//!
//! The log is the standard 30 records of `common::populate` with a checkpoint every 10
//! records, so checkpoints of size 10, 20 and 30 are stored; the size-20 and size-30
//! checkpoints are also kept "outside", as an auditor would.

mod common;

use common::*;
use medicodax_audit::{AuditError, Finding, VerifyOptions, VerifyReport, verify};
use medicodax_clock::ManualClock;
use medicodax_wire::audit::AuditRecord;

struct Fixture {
    store: TestStore,
    cp20: String,
    cp30: String,
}

async fn setup(store: TestStore) -> Fixture {
    let clock = ManualClock::new(NOW);
    let log = open_log(&store.db, &clock, 10).await;
    let appended = populate(&log).await;
    assert_eq!(appended.iter().map(|a| a.seq).collect::<Vec<_>>(), (0..30).collect::<Vec<_>>());
    assert_eq!(log.shutdown().await.unwrap(), None, "the count trigger already signed size 30");
    let cps = store.db.checkpoints().await.unwrap();
    assert_eq!(cps.iter().map(|c| c.size).collect::<Vec<_>>(), [10, 20, 30], "[{}]", store.label);
    let cp20 = cps[1].jws.clone();
    let cp30 = cps[2].jws.clone();
    store.drop_guards().await;
    Fixture { store, cp20, cp30 }
}

async fn check(f: &Fixture, external: Option<&str>) -> VerifyReport {
    let opts = VerifyOptions { origin: Some(ORIGIN.into()), external_checkpoint: external.map(str::to_owned) };
    verify(&f.store.db, &keys(), &opts).await.unwrap()
}

fn has(r: &VerifyReport, f: &Finding) -> bool {
    r.findings.contains(f)
}

fn root_mismatches(r: &VerifyReport) -> Vec<u64> {
    r.findings.iter().filter_map(|f| if let Finding::CheckpointRootMismatch { size, .. } = f { Some(*size) } else { None }).collect()
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                let f = super::setup(super::common::sqlite().await).await;
                super::$name(&f).await;
                f.store.cleanup().await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                let f = super::setup(super::common::postgres().await).await;
                super::$name(&f).await;
                f.store.cleanup().await;
            })*
        }
    };
}

on_both_stores!(
    untouched_log_verifies,
    changed_record_is_caught_by_its_leaf_hash,
    changed_record_with_recomputed_hash_is_caught_by_checkpoints,
    changed_query_column_is_caught,
    deleted_record_leaves_a_gap,
    reordered_records_are_caught,
    inserted_record_is_caught_by_checkpoints,
    truncation_is_caught_by_stored_and_external_checkpoints,
    rewritten_log_is_caught_by_an_external_checkpoint,
    forged_checkpoints_are_caught,
    garbage_rows_are_reported_not_panicked_on,
    guards_refuse_casual_changes,
);

async fn untouched_log_verifies(f: &Fixture) {
    let r = check(f, Some(&f.cp20)).await;
    assert!(r.ok, "{:?}", r.findings);
    assert_eq!((r.size, r.checkpoints_checked, r.unsigned_tail, r.open_intents), (30, 3, 0, 0));
    assert_eq!(r.latest_checkpoint.as_ref().map(|c| c.size), Some(30));
    let ext = r.external.as_ref().unwrap();
    assert!(ext.consistent);
    assert_eq!(ext.checkpoint.as_ref().map(|c| c.size), Some(20));
    assert!(!ext.proof.is_empty(), "a 20 -> 30 consistency proof has nodes");
    assert_eq!(r.first_bad_seq, None);
}

async fn changed_record_is_caught_by_its_leaf_hash(f: &Fixture) {
    // Seq 7 is an intent; edit its user in place, leaving the stored leaf hash.
    let bytes = f.store.canonical(7).await;
    let text = String::from_utf8(bytes).unwrap().replace("\"user\":\"coder\"", "\"user\":\"admin\"");
    f.store.set_bytes(7, text.as_bytes(), None).await;
    let r = check(f, Some(&f.cp20)).await;
    assert!(!r.ok);
    assert!(has(&r, &Finding::LeafHashMismatch { seq: 7 }), "{:?}", r.findings);
    assert!(has(&r, &Finding::ColumnMismatch { seq: 7, column: "acting_user" }), "{:?}", r.findings);
    assert_eq!(root_mismatches(&r), [10, 20, 30]);
    assert!(has(&r, &Finding::ExternalRootMismatch { size: 20 }));
    assert_eq!(r.first_bad_seq, Some(7));
}

async fn changed_record_with_recomputed_hash_is_caught_by_checkpoints(f: &Fixture) {
    // A careful forger re-encodes seq 24 (a failed call's outcome) as "allowed" with a correct leaf hash.
    let mut e = f.store.entry(24).await;
    let AuditRecord::Outcome(o) = &mut e.record else { panic!("seq 24 is an outcome") };
    assert_eq!(o.decision, medicodax_wire::Decision::Failed);
    o.decision = medicodax_wire::Decision::Allowed;
    o.code = None;
    o.reason = None;
    f.store.rewrite(24, &e).await;
    let r = check(f, Some(&f.cp20)).await;
    assert!(!r.ok);
    assert!(!r.findings.iter().any(|x| matches!(x, Finding::LeafHashMismatch { .. })), "the forger fixed the leaf hash");
    assert_eq!(root_mismatches(&r), [30], "only the checkpoint covering seq 24 changes");
    assert!(r.external.as_ref().unwrap().consistent, "the size-20 checkpoint does not cover seq 24");
    assert_eq!(r.latest_checkpoint.as_ref().map(|c| c.size), Some(20));
}

async fn changed_query_column_is_caught(f: &Fixture) {
    f.store.exec("UPDATE audit_entries SET agent = 'other-agent' WHERE seq = 12").await;
    let r = check(f, None).await;
    assert_eq!(r.findings, [Finding::ColumnMismatch { seq: 12, column: "agent" }]);
}

async fn deleted_record_leaves_a_gap(f: &Fixture) {
    f.store.exec("DELETE FROM audit_entries WHERE seq = 5").await;
    let r = check(f, Some(&f.cp20)).await;
    assert!(has(&r, &Finding::Gap { expected: 5, found: 6 }), "{:?}", r.findings);
    assert!(has(&r, &Finding::OutcomeWithoutIntent { seq: 6, intent_seq: 5 }), "seq 5 was the intent of seq 6");
    assert_eq!(r.size, 29);
    assert_eq!(root_mismatches(&r), [10, 20], "size 30 is now beyond the log");
    assert!(r.findings.iter().any(|x| matches!(x, Finding::CheckpointBeyondLog { size: 30, log_size: 29, .. })), "{:?}", r.findings);
    assert_eq!(r.first_bad_seq, Some(5));
}

async fn reordered_records_are_caught(f: &Fixture) {
    // Swap the contents of rows 9 and 10 (an intent and its outcome), hashes and columns included.
    let swap = "UPDATE audit_entries SET seq = -1 WHERE seq = 9; UPDATE audit_entries SET seq = 9 WHERE seq = 10; UPDATE audit_entries SET seq = 10 WHERE seq = -1;";
    f.store.exec(swap).await;
    let r = check(f, None).await;
    assert!(has(&r, &Finding::SeqMismatch { seq: 9, record_seq: 10 }), "{:?}", r.findings);
    assert!(has(&r, &Finding::SeqMismatch { seq: 10, record_seq: 9 }), "{:?}", r.findings);
    assert_eq!(root_mismatches(&r), [10, 20, 30]);
    assert_eq!(r.first_bad_seq, Some(9));
}

async fn inserted_record_is_caught_by_checkpoints(f: &Fixture) {
    // Insert a forged record at 15: move rows 15.. up by one and re-encode them with their
    // new seq, intent links and leaf hashes, so every row on its own is consistent.
    f.store.exec("UPDATE audit_entries SET seq = seq + 1000000 WHERE seq >= 15; UPDATE audit_entries SET seq = seq - 999999 WHERE seq >= 1000000;").await;
    for seq in (16..=30).rev() {
        let mut e = f.store.entry(seq).await;
        e.seq = seq as u64;
        if let AuditRecord::Outcome(o) = &mut e.record
            && o.intent_seq >= 15
        {
            o.intent_seq += 1;
        }
        f.store.rewrite(seq, &e).await;
    }
    f.store.insert(&forged(15)).await;
    let r = check(f, Some(&f.cp20)).await;
    assert_eq!(r.size, 31);
    assert!(r.findings.iter().all(|x| matches!(x, Finding::CheckpointRootMismatch { .. } | Finding::ExternalRootMismatch { .. })), "{:?}", r.findings);
    assert_eq!(root_mismatches(&r), [20, 30], "the size-10 checkpoint is untouched");
    assert!(has(&r, &Finding::ExternalRootMismatch { size: 20 }));
    assert_eq!(r.latest_checkpoint.as_ref().map(|c| c.size), Some(10));
}

async fn truncation_is_caught_by_stored_and_external_checkpoints(f: &Fixture) {
    f.store.exec("DELETE FROM audit_entries WHERE seq >= 25").await;
    let r = check(f, None).await;
    assert!(r.findings.iter().any(|x| matches!(x, Finding::CheckpointBeyondLog { size: 30, log_size: 25, .. })), "{:?}", r.findings);

    // The attacker also deletes the checkpoints that cover the lost records...
    f.store.exec("DELETE FROM audit_checkpoints WHERE size > 25").await;
    let r = check(f, None).await;
    assert!(r.ok, "without a checkpoint kept elsewhere a truncation is invisible: {:?}", r.findings);
    assert_eq!(r.unsigned_tail, 5);
    // ...but not the one the auditor kept.
    let r = check(f, Some(&f.cp30)).await;
    assert_eq!(r.findings, [Finding::ExternalBeyondLog { size: 30, log_size: 25 }]);
    assert!(!r.external.as_ref().unwrap().consistent);
}

async fn rewritten_log_is_caught_by_an_external_checkpoint(f: &Fixture) {
    // Rewrite seq 3 with a correct hash and delete every stored checkpoint.
    let mut e = f.store.entry(3).await;
    let AuditRecord::Intent(i) = &mut e.record else { panic!("seq 3 is an intent") };
    i.purpose = "TREAT".into();
    f.store.rewrite(3, &e).await;
    f.store.exec("DELETE FROM audit_checkpoints").await;
    let r = check(f, None).await;
    assert!(r.ok, "a consistent rewrite with no checkpoint left is invisible to the database alone");
    let r = check(f, Some(&f.cp20)).await;
    assert_eq!(r.findings, [Finding::ExternalRootMismatch { size: 20 }]);
}

async fn forged_checkpoints_are_caught(f: &Fixture) {
    // The root column of one checkpoint, and the signature of another.
    f.store.exec("UPDATE audit_checkpoints SET root = CASE WHEN substr(root, 1, 1) = 'a' THEN 'b' ELSE 'a' END || substr(root, 2) WHERE size = 10").await;
    let jws30 = &f.cp30;
    let (head, sig) = jws30.rsplit_once('.').unwrap();
    let flipped = format!("{}{}", if sig.starts_with('A') { 'B' } else { 'A' }, &sig[1..]);
    f.store.exec(&format!("UPDATE audit_checkpoints SET jws = '{head}.{flipped}' WHERE size = 30")).await;
    let r = check(f, None).await;
    assert!(r.findings.iter().any(|x| matches!(x, Finding::CheckpointColumnsMismatch { size: 10, .. })), "{:?}", r.findings);
    assert!(r.findings.iter().any(|x| matches!(x, Finding::CheckpointInvalid { .. })), "{:?}", r.findings);
    assert_eq!(r.latest_checkpoint.as_ref().map(|c| c.size), Some(20));
    assert_eq!(r.unsigned_tail, 10);
}

async fn garbage_rows_are_reported_not_panicked_on(f: &Fixture) {
    f.store.set_raw(11, b"\xff\xfe not json", b"abc").await;
    let r = check(f, None).await;
    assert!(has(&r, &Finding::LeafHashMismatch { seq: 11 }), "{:?}", r.findings);
    assert!(r.findings.iter().any(|x| matches!(x, Finding::NotALogEntry { seq: 11, reason } if reason.contains("invalid JSON"))), "{:?}", r.findings);
    assert_eq!(r.first_bad_seq, Some(11));
    // Every other entry point answers with a typed error or a count, never a panic.
    assert!(matches!(medicodax_audit::tail(&f.store.db, 30).await, Err(AuditError::Corrupt { at: 11, .. })));
    assert!(matches!(medicodax_audit::prove(&f.store.db, &keys(), 3).await, Err(AuditError::LogMismatch { size: 30 })));
    let mut out = Vec::new();
    let summary = medicodax_audit::export_fhir(&f.store.db, &medicodax_audit::ExportOptions::new(ORIGIN, medicodax_audit::ExportFormat::Ndjson), &mut out).await.unwrap();
    assert_eq!(summary.skipped_rows, 1);
    let clock = ManualClock::new(NOW);
    let err = medicodax_audit::AuditLog::open(f.store.db.clone(), gateway_key(), clock.shared(), config(10)).await.unwrap_err();
    assert!(matches!(err, AuditError::Corrupt { at: 11, .. }), "{err}");
}

async fn guards_refuse_casual_changes(f: &Fixture) {
    // `setup` dropped this store's guards; a fresh store has them.
    let fresh = match f.store.label {
        "sqlite" => sqlite().await,
        _ => postgres().await,
    };
    let clock = ManualClock::new(NOW);
    let log = open_log(&fresh.db, &clock, 1000).await;
    log.append_event(event("gateway.start", "gateway")).await.unwrap();
    log.checkpoint().await.unwrap();
    for sql in [
        "UPDATE audit_entries SET agent = 'x' WHERE seq = 0",
        "DELETE FROM audit_entries WHERE seq = 0",
        "UPDATE audit_checkpoints SET size = 5",
        "DELETE FROM audit_checkpoints",
    ] {
        let e = fresh.try_exec(sql).await.expect_err(sql);
        assert!(e.contains("append-only"), "[{}] {sql}: {e}", fresh.label);
    }
    log.shutdown().await.unwrap();
    fresh.cleanup().await;
}
