//! The configuration file: the design sketch, defaults, typos, validation with key paths,
//! and environment overrides.

use medicodax_config::*;
use figment::providers::Env;
use std::path::Path;

const SAMPLE: &str = r#"
[gateway]
listen = "127.0.0.1:9090"
audience = "https://gateway.example.org"

[store]
url = "postgres://medicodax@127.0.0.1/test"

[[connections]]
name = "epic-prod"
vendor = "epic"
fhir_base = "https://fhir.example.org/api/FHIR/R4"
client_id = "cid-epic-0001"
key = "keys/epic-prod.pem"
scopes = ["system/Patient.rs", "system/Encounter.rs"]

[[connections]]
name = "ecw-prac01"
vendor = "eclinicalworks"
fhir_base = "https://fhir.ecw-test.example/fhir/r4/PRAC01"
client_id = "cid-ecw-0001"
rate_per_minute = 250

[roles.coder]
scopes = ["system/*.rs"]
tools = ["fhir.read", "fhir.search", "encounter.bundle"]
redact = ["Patient.telecom", "Patient.address"]

[[agents]]
id = "coding-agent"
jwks = "keys/coding-agent.jwks.json"
roles = ["coder"]
may_act_for = ["role:coder"]
"#;

#[test]
fn the_design_sketch_parses() {
    let c = Config::from_toml(SAMPLE).unwrap();
    assert_eq!(c.gateway.listen, "127.0.0.1:9090");
    assert_eq!(c.gateway.audience(), "https://gateway.example.org");
    assert_eq!(c.gateway.max_call_bytes, 65536, "default kept");
    assert_eq!(c.connections.len(), 2);
    assert_eq!(c.connections[1].vendor, Vendor::Eclinicalworks);
    assert_eq!(c.connections[1].rate_per_minute, Some(250));
    assert_eq!(c.roles["coder"].redact, vec!["Patient.telecom", "Patient.address"]);
    assert_eq!(c.agents[0].may_act_for, vec!["role:coder"]);
    assert_eq!(c.coding.inpatient_minutes, 20.0);
}

#[test]
fn defaults_alone_are_valid() {
    let c = Config::from_toml("").unwrap();
    assert_eq!(c.gateway.audience(), "http://127.0.0.1:8080");
    assert!(c.connections.is_empty());
}

#[test]
fn unknown_keys_are_errors_not_ignored() {
    let err = Config::from_toml("[gateway]\nlisten = \"127.0.0.1:1\"\nlisen = \"x\"\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("gateway.lisen: unknown key") && msg.contains("listen, audience"), "{msg}");
    assert!(!msg.contains("default.") && !msg.contains("``"), "no figment profile prefix or doubled quoting: {msg}");
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let text = r#"
[gateway]
listen = "nowhere"
[[connections]]
name = "a/b"
vendor = "eclinicalworks"
fhir_base = "ftp://x"
client_id = ""
alg = "RS256"
assertion_lifetime = 600
[[connections]]
name = "dup"
vendor = "epic"
fhir_base = "https://user:pw@x.example/fhir"
client_id = "c"
[[connections]]
name = "dup"
vendor = "generic"
fhir_base = "https://y.example/fhir"
client_id = "c"
[roles.r]
tools = ["fhir.delete"]
[[agents]]
id = "a"
roles = ["missing"]
may_act_for = ["role:nope"]
[keys]
gateway_alg = "HS256"
[auth.oidc]
issuer = ""
audience = "dash"
jwks_url = "http://idp.example/jwks"
roles_claim = "realm_access..roles"
"#;
    let ConfigError::Invalid(issues) = Config::from_toml(text).unwrap_err() else { panic!("expected Invalid") };
    let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    for want in [
        "gateway.listen",
        "connections[0].name",
        "connections[0].fhir_base",
        "connections[0].client_id",
        "connections[0].alg",
        "connections[0].assertion_lifetime",
        "connections[1].fhir_base",
        "connections[2].name",
        "roles.r.tools[0]",
        "agents[0].jwks",
        "agents[0].roles[0]",
        "agents[0].may_act_for[0]",
        "keys.gateway_alg",
        "auth.oidc.issuer",
        "auth.oidc.jwks_url",
        "auth.oidc.roles_claim",
    ] {
        assert!(paths.contains(&want), "missing {want} in {paths:?}");
    }
    let life = issues.iter().find(|i| i.path == "connections[0].assertion_lifetime").unwrap();
    assert!(life.message.contains("300"), "{}", life.message);
}

#[test]
fn environment_overrides_use_double_underscore_paths() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("m.toml", SAMPLE)?;
        jail.set_env("MEDICODAX_GATEWAY__LISTEN", "127.0.0.1:7070");
        jail.set_env("MEDICODAX_GATEWAY__MAX_CALL_BYTES", "4096");
        jail.set_env("MEDICODAX_STORE__URL", "sqlite://other.db");
        jail.set_env("MEDICODAX_KEYS__GATEWAY_ALG", "ES384");
        jail.set_env("MEDICODAX_DATA_DIR", "/tmp/not-a-config-key");
        jail.set_env("MEDICODAX_CONFIG", "m.toml");
        let c = Config::load(Some(Path::new("m.toml"))).expect("loads");
        assert_eq!(c.gateway.listen, "127.0.0.1:7070");
        assert_eq!(c.gateway.max_call_bytes, 4096);
        assert_eq!(c.store.url.as_deref(), Some("sqlite://other.db"));
        assert_eq!(c.keys.gateway_alg, "ES384");
        assert_eq!(c.connections.len(), 2, "file values kept");
        Ok(())
    });
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let err = Config::load_with_env(Some(Path::new("/nonexistent/medicodax.toml")), Env::prefixed("MEDICODAX_TEST_NONE_")).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn token_rate_overrides_parse_and_are_checked() {
    let ok = Config::from_toml(
        "[[connections]]\nname = \"o\"\nvendor = \"oracle-health\"\nfhir_base = \"https://f.example/r4\"\nclient_id = \"c\"\ntoken_rate_per_minute = 5\ntoken_min_interval = 90\nmax_lifetime = 3600\n",
    )
    .unwrap();
    let c = &ok.connections[0];
    assert_eq!((c.token_rate_per_minute, c.token_min_interval, c.max_lifetime), (Some(5), Some(90), Some(3600)));
    let err = Config::from_toml(
        "[[connections]]\nname = \"o\"\nvendor = \"athena\"\nfhir_base = \"https://f.example/r4\"\nclient_id = \"c\"\ntoken_rate_per_minute = 0\nmax_lifetime = 90000\n",
    )
    .unwrap_err();
    let ConfigError::Invalid(issues) = err else { panic!("expected Invalid") };
    let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(paths, vec!["connections[0].token_rate_per_minute", "connections[0].max_lifetime"]);
}

#[test]
fn cleartext_to_a_remote_ehr_and_a_bad_audience_are_refused() {
    let text = r#"
[gateway]
audience = "not a url"
[[connections]]
name = "remote"
vendor = "epic"
fhir_base = "http://ehr.example.org/api/FHIR/R4"
client_id = "c"
[[connections]]
name = "local"
vendor = "generic"
fhir_base = "http://127.0.0.1:9000/fhir"
client_id = "c"
"#;
    let ConfigError::Invalid(issues) = Config::from_toml(text).unwrap_err() else { panic!("expected Invalid") };
    let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(paths, vec!["gateway.audience", "connections[0].fhir_base"], "{issues:?}");
    assert!(issues[1].message.contains("https://"), "{}", issues[1].message);
    assert!(Config::from_toml("[gateway]\naudience = \"https://gateway.example.org\"\n").is_ok());
    assert!(Config::from_toml("[gateway]\naudience = \"urn:medicodax:test\"\n").is_ok());
}
