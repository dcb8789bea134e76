//! Connection keys: PEM files refused at startup (pitfalls case 7, the connection-level
//! part), managed key rings under the data folder, the JWKS of all connections, and
//! rotation seen from the token requests (the parts of case 9 that need no audit log).

mod common;

use common::*;
use medicodax_clock::{Clock, ManualClock};
use medicodax_jose::RotationPolicy;
use medicodax_smart::{AuthManager, RotateError, SetupProblem};
use serde_json::json;
use std::path::Path;
use std::process::Command;

fn openssl(args: &[&str], input: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the openssl command line tool is needed by this test (Debian package openssl)");
    if let Some(i) = input {
        child.stdin.take().unwrap().write_all(i.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn write_0600(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn build_with_key_file(path: &Path) -> Result<AuthManager, medicodax_smart::SetupErrors> {
    let clock = ManualClock::new(NOW);
    AuthManager::builder(clock.shared()).connection(cfg("ecw", "eclinicalworks", "https://fhir.ecw-test.example/fhir/r4/PRAC01", json!({"key": path}))).build()
}

/// Case 7 at the connection level: each bad key stops startup with a message naming the
/// connection, the setting and what was found; no message holds key material.
#[test]
fn pitfall_7_bad_keys_refuse_startup() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = rsa_key().to_pkcs8_pem().unwrap();
    let cases = [
        ("encrypted.pem", openssl(&["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-passout", "pass:test-only"], Some(&rsa)), "encrypted"),
        ("ec.pem", openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"], None), "an EC P-384 key"),
        ("rsa1024.pem", openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"], None), "smaller than 2048 bits"),
        ("public.pem", openssl(&["pkey", "-pubout"], Some(&rsa)), "a public key"),
    ];
    for (name, pem, says) in cases {
        let p = dir.path().join(name);
        write_0600(&p, &pem);
        let err = build_with_key_file(&p).unwrap_err();
        assert_eq!((err.0[0].connection.as_str(), err.0[0].setting), ("ecw", "key"), "{name}");
        let text = err.to_string();
        assert!(text.contains(says) && text.contains(name), "{name}: {text}");
        let body_line = pem.lines().nth(1).unwrap();
        assert!(!text.contains(body_line), "key material in the message");
    }
    // A group-readable file and a missing file.
    let p = dir.path().join("open.pem");
    std::fs::write(&p, &rsa).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(build_with_key_file(&p).unwrap_err().to_string().contains("chmod 600"));
    assert!(build_with_key_file(&dir.path().join("missing.pem")).unwrap_err().to_string().contains("cannot read key file"));
    // PKCS#1 and CRLF variants of the same key load with the same kid as PKCS#8.
    let pkcs1 = openssl(&["rsa", "-traditional"], Some(&rsa));
    let mut kids = Vec::new();
    for (name, text) in [("p8.pem", rsa.clone()), ("p1.pem", pkcs1), ("crlf.pem", rsa.replace('\n', "\r\n"))] {
        let p = dir.path().join(name);
        write_0600(&p, &text);
        kids.push(build_with_key_file(&p).unwrap().jwks().keys[0].kid().unwrap().to_owned());
    }
    assert_eq!(kids, vec![rsa_key().kid().to_owned(); 3]);
}

/// A connection without `key` gets a managed ring under `<data_dir>/keys/connections/<name>/`,
/// created once (a `key.created` event) and reopened with the same kid.
#[test]
fn managed_rings_live_in_the_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let build = || {
        AuthManager::builder(clock.shared())
            .data_dir(dir.path())
            .connection(cfg("epic-sandbox", "epic", "https://fhir.epic-test.example/api/FHIR/R4", json!({})))
            .connection_with_key(cfg("ecw-sandbox", "eclinicalworks", "https://fhir.ecw-test.example/fhir/r4/PRAC01", json!({})), rsa_key())
            .build()
            .unwrap()
    };
    let m = build();
    let events = m.take_startup_events();
    assert_eq!(events.iter().map(|e| (e.event, e.ring.as_str())).collect::<Vec<_>>(), vec![("key.created", "epic-sandbox")]);
    let ring = dir.path().join("keys/connections/epic-sandbox");
    assert!(ring.join("ring.json").exists());
    let jwks = m.jwks();
    let kids: Vec<&str> = jwks.keys.iter().filter_map(|k| k.kid()).collect();
    assert_eq!(kids.len(), 2);
    assert!(kids.contains(&rsa_key().kid()));
    let managed_kid = kids.iter().find(|k| **k != rsa_key().kid()).unwrap().to_string();
    let pem = ring.join(format!("{managed_kid}.pem"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&pem).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(m.jwks_cache_control(), "public, max-age=3600");
    drop(m);
    let again = build();
    assert!(again.take_startup_events().is_empty());
    assert!(again.jwks().keys.iter().any(|k| k.kid() == Some(managed_kid.as_str())));
    assert!(matches!(again.rotate_key("ecw-sandbox"), Err(RotateError::NotManaged(_))));
    assert!(matches!(again.rotate_key("nope"), Err(RotateError::UnknownConnection(_))));
}

#[test]
fn no_key_and_no_data_folder_or_a_kid_without_a_key_is_refused() {
    let clock = ManualClock::new(NOW);
    let err = AuthManager::builder(clock.shared()).connection(cfg("g", "generic", "https://f.example/r4", json!({}))).build().unwrap_err();
    assert_eq!(err.0[0].problem, SetupProblem::NoKey);
    let err = AuthManager::builder(clock.shared()).connection(cfg("g", "generic", "https://f.example/r4", json!({"kid": "k1"}))).build().unwrap_err();
    assert!(err.0.iter().any(|e| e.setting == "kid" && e.problem == SetupProblem::KidWithoutKey));
    // Every problem of every connection is reported at once.
    let err = AuthManager::builder(clock.shared())
        .connection_with_key(cfg("a", "eclinicalworks", "https://f.example/r4", json!({"alg": "RS256", "scopes": []})), rsa_key())
        .connection_with_key(cfg("a", "generic", "https://f.example/r4", json!({})), rsa_key())
        .build()
        .unwrap_err();
    let settings: Vec<&str> = err.0.iter().map(|e| e.setting).collect();
    assert_eq!(settings, vec!["alg", "scopes", "name"]);
}

/// Case 9 (the part without the audit log): across a rotation, every kid in an emitted
/// assertion is in the published JWKS at the moment of signing; the JWKS is never empty;
/// the old key is unpublished only after its last assertion's expiry plus the cache time.
#[tokio::test]
async fn rotation_publishes_before_use_and_retires_after_last_use() {
    let dir = tempfile::tempdir().unwrap();
    let stub = TokenStub::new(json!(3600));
    let (server, url) = token_server(stub).await;
    let clock = ManualClock::new(NOW);
    let policy = RotationPolicy { publish_lead: 24 * 3600, consumer_cache_ttl: 24 * 3600, max_token_lifetime: 300, jwks_max_age: 3600 };
    let m = AuthManager::builder(clock.shared())
        .data_dir(dir.path())
        .rotation_policy(policy)
        .connection(cfg("epic", "epic", "https://fhir.epic-test.example/api/FHIR/R4", json!({"token_url": url})))
        .build()
        .unwrap();
    m.token("epic").await.unwrap();
    let k1 = m.jwks().keys[0].kid().unwrap().to_owned();
    let started = m.rotate_key("epic").unwrap();
    assert_eq!(started.event, "key.rotation.started");
    let k2 = started.kid.clone();
    let t0 = clock.monotonic();
    let mut seen_kids = Vec::new();
    let mut ticks = Vec::new();
    for _ in 0..(4 * 24 * 3600 / 3540) {
        clock.advance_secs(3540);
        ticks.extend(m.tick_keys());
        let published: Vec<String> = m.jwks().keys.iter().filter_map(|k| k.kid().map(str::to_owned)).collect();
        assert!(!published.is_empty());
        m.token("epic").await.unwrap();
        let posts = token_posts(&server).await;
        let (header, _) = decode(&field(posts.last().unwrap(), "client_assertion").unwrap());
        let kid = header["kid"].as_str().unwrap().to_owned();
        assert!(published.contains(&kid), "assertion kid {kid} not in the JWKS {published:?}");
        let elapsed = clock.monotonic().since(t0).as_secs();
        assert_eq!(kid, if elapsed < 24 * 3600 { k1.clone() } else { k2.clone() }, "at {elapsed} s");
        seen_kids.push(kid);
    }
    assert!(seen_kids.contains(&k1) && seen_kids.contains(&k2));
    let events: Vec<(&str, &str)> = ticks.iter().map(|e| (e.event, e.kid.as_str())).collect();
    assert_eq!(events, vec![("key.activated", k2.as_str()), ("key.unpublished", k1.as_str())]);
    let unpublished = ticks.iter().find(|e| e.event == "key.unpublished").unwrap().at;
    let activated = ticks.iter().find(|e| e.event == "key.activated").unwrap().at;
    assert!(unpublished - activated >= 300 + 24 * 3600);
    assert_eq!(m.jwks().keys.iter().filter_map(|k| k.kid()).collect::<Vec<_>>(), vec![k2.as_str()]);
    assert_eq!(clock.now_unix() - NOW, 4 * 24 * 3600 / 3540 * 3540);
}
