//! Pitfalls case 7: one key in every PEM flavour loads the same way, or fails at load
//! time with a message naming what was found. Keys are generated at test time.

use medicodax_jose::{Alg, KeyError, PrivateKey};
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
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The label of the first PEM block (`PRIVATE KEY`, `RSA PRIVATE KEY`, …).
fn pem_label(text: &str) -> String {
    text.lines().find_map(|l| l.strip_prefix("-----BEGIN ").and_then(|r| r.strip_suffix("-----"))).unwrap_or_default().to_owned()
}

#[test]
fn rsa_variants_give_the_same_public_key_and_kid() {
    let key = PrivateKey::generate(Alg::RS384).unwrap();
    let pkcs8 = key.to_pkcs8_pem().unwrap();
    assert_eq!(pem_label(&pkcs8), "PRIVATE KEY");
    let pkcs1 = openssl(&["rsa", "-traditional"], Some(&pkcs8));
    assert_eq!(pem_label(&pkcs1), "RSA PRIVATE KEY", "openssl gave PKCS#1");
    assert!(!pkcs8.contains('\r'), "written with LF");
    let crlf = pkcs8.replace('\n', "\r\n");
    let one_line = pkcs8.trim_end().replace('\n', "\\n");
    assert!(!one_line.contains('\n'));

    let want_jwk = serde_json::to_value(key.public_jwk()).unwrap();
    for (name, text) in [("pkcs8", &pkcs8), ("pkcs1", &pkcs1), ("crlf", &crlf), ("one-line env", &one_line)] {
        let k = PrivateKey::from_pem(text, Alg::RS384).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(k.kid(), key.kid(), "{name}: same RFC 7638 thumbprint");
        let jwk = serde_json::to_value(k.public_jwk()).unwrap();
        assert_eq!(jwk["n"], want_jwk["n"], "{name}");
        assert_eq!(jwk["e"], want_jwk["e"], "{name}");
    }
}

#[test]
fn encrypted_pkcs8_is_refused_by_name() {
    let key = PrivateKey::generate(Alg::RS384).unwrap().to_pkcs8_pem().unwrap();
    let enc = openssl(&["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-passout", "pass:test-only"], Some(&key));
    assert_eq!(pem_label(&enc), "ENCRYPTED PRIVATE KEY");
    let err = PrivateKey::from_pem(&enc, Alg::RS384).unwrap_err();
    assert!(matches!(err, KeyError::Encrypted { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("encrypted") && msg.contains("not supported"), "{msg}");
    assert!(!msg.contains("MII"), "no key bytes in the message");
}

#[test]
fn ec_p384_key_in_the_rs384_slot_is_a_type_mismatch() {
    let ec = openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"], None);
    let err = PrivateKey::from_pem(&ec, Alg::RS384).unwrap_err();
    match &err {
        KeyError::WrongType { found, alg, .. } => {
            assert_eq!(found, "an EC P-384 key");
            assert_eq!(*alg, Alg::RS384);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("needs RSA"), "{err}");
    // The same key is fine for ES384, in PKCS#8 and in SEC1 form.
    let k = PrivateKey::from_pem(&ec, Alg::ES384).unwrap();
    let sec1 = openssl(&["ec"], Some(&ec));
    assert_eq!(pem_label(&sec1), "EC PRIVATE KEY");
    assert_eq!(PrivateKey::from_pem(&sec1, Alg::ES384).unwrap().kid(), k.kid());
    // Auto-detection picks ES384 for it and RS384 for RSA keys.
    assert_eq!(PrivateKey::from_pem_auto(&ec).unwrap().alg(), Alg::ES384);
    let rsa = PrivateKey::generate(Alg::RS384).unwrap().to_pkcs8_pem().unwrap();
    assert_eq!(PrivateKey::from_pem_auto(&rsa).unwrap().alg(), Alg::RS384);
    // A P-256 key is named as such.
    let p256 = openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], None);
    assert!(PrivateKey::from_pem(&p256, Alg::ES384).unwrap_err().to_string().contains("P-256"));
}

#[test]
fn rsa_1024_is_refused_as_too_small() {
    let small = openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"], None);
    let err = PrivateKey::from_pem(&small, Alg::RS384).unwrap_err();
    assert!(matches!(err, KeyError::RsaTooSmall { .. }), "{err:?}");
    assert!(err.to_string().contains("2048"));
    let small1 = openssl(&["rsa", "-traditional"], Some(&small));
    assert!(matches!(PrivateKey::from_pem(&small1, Alg::RS384).unwrap_err(), KeyError::RsaTooSmall { .. }));
}

#[test]
fn other_inputs_get_named_errors() {
    assert_eq!(PrivateKey::from_pem("", Alg::RS384).unwrap_err(), KeyError::NotPem);
    assert_eq!(PrivateKey::from_pem("hello", Alg::RS384).unwrap_err(), KeyError::NotPem);
    let key = PrivateKey::generate(Alg::RS384).unwrap().to_pkcs8_pem().unwrap();
    let public = openssl(&["pkey", "-pubout"], Some(&key));
    let err = PrivateKey::from_pem(&public, Alg::RS384).unwrap_err();
    assert!(err.to_string().contains("a public key"), "{err}");
    // Corrupted body.
    let lines: Vec<&str> = key.lines().collect();
    let broken = format!("{}\n{}\n{}\n", lines[0], "QUJD", lines[lines.len() - 1]);
    assert!(matches!(PrivateKey::from_pem(&broken, Alg::RS384).unwrap_err(), KeyError::Malformed { .. }));
    // A configured algorithm we do not sign with.
    assert_eq!(PrivateKey::from_pem(&key, Alg::RS256).unwrap_err(), KeyError::CannotSign(Alg::RS256));
    assert_eq!(PrivateKey::generate(Alg::ES256).unwrap_err(), KeyError::CannotSign(Alg::ES256));
}

#[test]
fn debug_output_never_holds_key_material() {
    let key = PrivateKey::generate(Alg::RS384).unwrap();
    let dbg = format!("{key:?}");
    assert!(dbg.contains(key.kid()));
    assert!(!dbg.contains("MII") && dbg.len() < 200, "{dbg}");
}

#[test]
fn key_files_are_written_0600_and_group_readable_files_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pem");
    let key = PrivateKey::generate(Alg::ES384).unwrap();
    medicodax_jose::key::write_private_key(&path, &key).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(PrivateKey::from_file(&path, Alg::ES384).unwrap().kid(), key.kid());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = PrivateKey::from_file(&path, Alg::ES384).unwrap_err();
    assert!(matches!(err, KeyError::Permissions { mode: 0o640, .. }), "{err:?}");
    assert!(err.to_string().contains("chmod 600"));
}

#[test]
fn what_a_key_file_is_is_said_before_who_may_read_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // A folder (mode 0777 like /tmp) is not a key file: no chmod advice.
    let folder = dir.path().join("keys");
    std::fs::create_dir(&folder).unwrap();
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = PrivateKey::from_file_auto(&folder).unwrap_err().to_string();
    assert!(err.contains("not a regular file") && !err.contains("chmod"), "{err}");
    // A world-readable public JWKS is not a private key: no chmod advice either.
    let jwks = dir.path().join("agent.jwks.json");
    let key = PrivateKey::generate(Alg::RS384).unwrap();
    std::fs::write(&jwks, serde_json::json!({"keys": [key.public_jwk()]}).to_string()).unwrap();
    std::fs::set_permissions(&jwks, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = PrivateKey::from_file_auto(&jwks).unwrap_err();
    assert!(!matches!(err, KeyError::Permissions { .. }) && !err.to_string().contains("chmod"), "{err}");
}
