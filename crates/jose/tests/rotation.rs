//! Pitfalls case 9: publish before use, retire after the last use has expired plus the
//! consumers' cache time; the published set is never empty and always holds the signer.

use medicodax_jose::{Alg, KeyRing, PrivateKey, RotationPolicy};
use proptest::prelude::*;

const T0: i64 = 1_767_225_600;
const H: i64 = 3600;

fn policy() -> RotationPolicy {
    RotationPolicy { publish_lead: 24 * H, consumer_cache_ttl: 24 * H, max_token_lifetime: 300, jwks_max_age: 3600 }
}

fn kids(ring: &KeyRing, now: i64) -> Vec<String> {
    ring.published(now).keys.iter().map(|k| k.kid().unwrap().to_owned()).collect()
}

#[test]
fn rotation_schedule_matches_case_9() {
    let dir = tempfile::tempdir().unwrap();
    let (mut ring, created) = KeyRing::open_or_create(dir.path(), "gateway", Alg::RS384, policy(), T0 - 100 * H).unwrap();
    assert_eq!(created[0].event, "key.created");
    let k1 = ring.signer(T0).kid().to_owned();
    let started = ring.start_rotation(T0).unwrap();
    assert_eq!(started.event, "key.rotation.started");
    let k2 = started.kid.clone();
    assert_ne!(k1, k2);
    // A second rotation while one is pending is refused.
    assert!(ring.start_rotation(T0 + 1).is_err());

    // From T0 both are published; k1 still signs until T0 + publish_lead.
    assert_eq!(kids(&ring, T0), vec![k1.clone(), k2.clone()]);
    assert_eq!(ring.signer(T0 + 24 * H - 1).kid(), k1);
    assert_eq!(ring.signer(T0 + 24 * H).kid(), k2);

    // Activation marks k1 for unpublishing at activation + 300 s + 24 h cache.
    let ev = ring.tick(T0 + 24 * H).unwrap();
    assert_eq!(ev.iter().map(|e| e.event).collect::<Vec<_>>(), vec!["key.activated"]);
    let until = T0 + 24 * H + 300 + 24 * H;
    assert_eq!(ev[0].detail.as_ref().unwrap()["previous_unpublished_at"], until);
    assert_eq!(kids(&ring, until - 1), vec![k1.clone(), k2.clone()]);
    let ev = ring.tick(until).unwrap();
    assert_eq!(ev.iter().map(|e| (e.event, e.kid.clone())).collect::<Vec<_>>(), vec![("key.unpublished", k1.clone())]);
    assert_eq!(kids(&ring, until), vec![k2.clone()]);
    assert!(!dir.path().join(format!("{k1}.pem")).exists(), "retired private key deleted");

    // State survives a restart.
    let reopened = KeyRing::open(dir.path()).unwrap();
    assert_eq!(reopened.signer(until).kid(), k2);
    assert_eq!(kids(&reopened, until), vec![k2]);
    // Cache-Control never exceeds the publish lead.
    assert_eq!(reopened.cache_control(), "public, max-age=3600");
}

#[test]
fn cache_control_is_capped_by_publish_lead() {
    let ring = KeyRing::single("x", PrivateKey::generate(Alg::ES384).unwrap(), RotationPolicy { publish_lead: 600, ..policy() });
    assert_eq!(ring.cache_control(), "public, max-age=600");
}

#[test]
fn a_ring_is_refused_for_a_different_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    KeyRing::open_or_create(dir.path(), "c", Alg::RS384, policy(), T0).unwrap();
    let err = KeyRing::open_or_create(dir.path(), "c", Alg::ES384, policy(), T0).unwrap_err();
    assert!(err.to_string().contains("RS384"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    /// Every kid the ring signs with is in the JWKS snapshot at that moment, and the
    /// JWKS is never empty, whatever the interleaving of rotations, ticks and signatures.
    #[test]
    fn signer_is_always_published(steps in proptest::collection::vec((0u8..3, 1i64..(40 * H)), 1..12)) {
        let mut ring = KeyRing::single("p", PrivateKey::generate(Alg::ES384).unwrap(), policy());
        let mut now = T0;
        for (op, dt) in steps {
            now += dt;
            match op {
                0 => { let _ = ring.start_rotation(now); }
                1 => { ring.tick(now).unwrap(); }
                _ => {}
            }
            let set = ring.published(now);
            prop_assert!(!set.keys.is_empty());
            let signer = ring.signer(now);
            prop_assert!(set.keys.iter().any(|k| k.kid() == Some(signer.kid())));
            // A token signed now with exp = now + 300 stays verifiable until exp + cache ttl.
            ring.tick(now + 300).unwrap();
            prop_assert!(ring.published(now + 300).keys.iter().any(|k| k.kid() == Some(signer.kid())));
        }
    }
}
