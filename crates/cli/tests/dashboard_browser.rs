//! The dashboard in a real browser (headless Debian Chromium driven by `playwright-core`,
//! `tests/interop/dashboard/dashboard.mjs`), against a real `medicodax serve` holding
//! data from signed tool calls.
//!
//! 1. `medicodax serve --listen 127.0.0.1:0` in a fresh data folder (the embedded
//!    sandbox EHRs), reading the first admin's password from its standard error;
//! 2. [`populate`]: signed calls with `medicodax call` as the coding agent for `coder`
//!    (`connections.list`, a call the policy denies, `fhir.search`, `encounter.bundle`,
//!    and `worksheet.submit` with worksheets the reference pipeline builds from the
//!    bundles);
//! 3. the browser script signs in as admin, opens every page, accepts a worksheet and
//!    signs out; its JSON result is checked against what step 2 produced, and the
//!    store and audit log are checked for the review and the sign-in events.
//!
//! When `medicodax demo` exists, step 2 becomes running the demo on the same data folder
//! before step 1 (it leaves worksheets, calls and audit records behind); only
//! [`populate`] changes. Screenshots are kept in `artifacts/screenshots/dashboard/`.
//!
//! Chromium (`/usr/bin/chromium`) and the Node packages (`tests/interop/node_modules`)
//! are installed by `scripts/test-deps.sh`; without them this test fails and says so.

mod common;

use common::{BIN, Server, repo_root};

use medicodax_audit::Db;
use medicodax_gateway::worksheets::WorksheetStore;
use medicodax_wire::audit::AuditRecord;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

fn require_browser_deps(root: &Path) {
    let missing: Vec<&str> = [
        (!Path::new("/usr/bin/chromium").exists()).then_some("Chromium (/usr/bin/chromium)"),
        (!root.join("tests/interop/node_modules/playwright-core/package.json").exists()).then_some("the Node package playwright-core (tests/interop/node_modules)"),
        Command::new("node").arg("--version").output().map(|o| !o.status.success()).unwrap_or(true).then_some("node"),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(missing.is_empty(), "the browser test needs {}: run scripts/test-deps.sh", missing.join(", "));
}

/// One signed call as the coding agent for `as_user`: the parsed result, or the error text.
fn call(server: &Server, tool: &str, args: &Value, as_user: &str) -> Result<Value, String> {
    let key = server.data_dir.join("keys/agents/coding-agent.pem");
    let out = Command::new(BIN)
        .args(["call", tool, "--args", &args.to_string(), "--agent", "coding-agent", "--key", &key.to_string_lossy(), "--as", as_user, "--gateway", &server.url])
        .env("MEDICODAX_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run medicodax call");
    if out.status.success() {
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{tool}: not JSON: {e}"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// What [`populate`] left in the gateway.
struct Populated {
    /// `connection/encounter` of each worksheet submitted.
    worksheets: Vec<String>,
    /// The one with the most suggested codes (the browser accepts it).
    richest: String,
    /// Calls the policy denied.
    denied: usize,
}

/// Produces data through signed calls, as an agent would (see the module docs for the
/// switch to `medicodax demo`).
fn populate(server: &Server) -> Populated {
    let conn = "epic-sandbox";
    let listed = call(server, "connections.list", &json!({}), "coder").expect("connections.list");
    assert_eq!(listed["connections"].as_array().map(Vec::len), Some(2), "{listed}");
    // The coding agent may act only for users with the coder role: acting for admin is denied.
    let denied = call(server, "connections.list", &json!({}), "admin").expect_err("acting for admin must be denied");
    assert!(denied.contains("403"), "{denied}");

    // The worklist: patients the Epic-like sandbox serves (as a coding team's worklist names them).
    let dataset = medicodax_sandbox::Dataset::embedded().expect("bundled patients");
    let reference = medicodax_coding::Reference::embedded().expect("embedded coding reference data");
    let mut worksheets = Vec::new();
    let mut richest = (0usize, String::new());
    for p in dataset.patients(medicodax_sandbox::Vendor::Epic) {
        let pid = p.id.as_str();
        let patient = call(server, "fhir.read", &json!({"connection": conn, "type": "Patient", "id": pid}), "coder").expect("Patient read");
        assert_eq!(patient["id"], pid);
        let encs = call(server, "fhir.search", &json!({"connection": conn, "type": "Encounter", "params": [["patient", pid]], "max_results": 20}), "coder").expect("Encounter search");
        for e in encs["resources"].as_array().into_iter().flatten().filter(|e| e["status"] == "finished").take(3) {
            let eid = e["id"].as_str().expect("encounter id");
            let started = Instant::now();
            let bundle = call(server, "encounter.bundle", &json!({"connection": conn, "encounter": eid}), "coder").expect("encounter.bundle");
            let bundle: medicodax_wire::tools::EncounterBundle = serde_json::from_value(bundle).expect("an encounter bundle");
            let ws = medicodax_coding::build_worksheet(&bundle, &reference);
            let codes = ws.codes_by_source().total();
            let pipeline_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let class = ws.class_code.clone().filter(|c| !c.is_empty()).unwrap_or_else(|| "AMB".to_owned());
            let args = json!({"connection": conn, "encounter": eid, "patient": pid, "class": class, "pipeline_ms": pipeline_ms, "worksheet": ws});
            match call(server, "worksheet.submit", &args, "coder") {
                Ok(stored) => {
                    assert_eq!(stored["status"], "pending", "{stored}");
                    worksheets.push(format!("{conn}/{eid}"));
                    if codes > richest.0 || richest.1.is_empty() {
                        richest = (codes, format!("{conn}/{eid}"));
                    }
                }
                // A worksheet over the size limit is refused with 400; the others suffice.
                Err(e) => assert!(e.contains("400"), "worksheet.submit failed: {e}"),
            }
        }
        if worksheets.len() >= 5 && richest.0 > 0 {
            break;
        }
    }
    assert!(worksheets.len() >= 3, "too few worksheets submitted: {worksheets:?}");
    assert!(richest.0 > 0, "no worksheet has a suggested code");
    Populated { worksheets, richest: richest.1, denied: 1 }
}

fn num(v: &Value) -> f64 {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN)
}

#[test]
fn dashboard_in_chromium_shows_a_real_run_and_records_a_review() {
    let root = repo_root();
    require_browser_deps(&root);
    let tmp = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&tmp.path().join("data"));
    let data = populate(&server);
    let target = data.richest.clone();

    let shots = root.join("artifacts/screenshots/dashboard");
    let out = Command::new("node")
        .arg(root.join("tests/interop/dashboard/dashboard.mjs"))
        .current_dir(root.join("tests/interop"))
        .env("MEDICODAX_URL", &server.url)
        .env("MEDICODAX_ADMIN_PASSWORD", server.admin_password.as_deref().expect("a fresh data folder creates admin and prints its password"))
        .env("MEDICODAX_SCREENSHOTS", &shots)
        .env("MEDICODAX_WORKSHEET", &target)
        .stdin(Stdio::null())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let r: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("the browser script printed no result ({e}); stderr:\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(r["ok"], true, "browser script failed: {}\nscreenshots in {}", r["error"], shots.display());
    let pages = &r["pages"];
    let n = data.worksheets.len() as f64;

    // Sign-in lands on the admin's first page; every page has its nav and landmark.
    assert_eq!(r["after_login"], "/integrations");
    for (name, h1) in [("02-integrations", "Integrations"), ("03-savings", "Time savings"), ("04-worksheets", "Worksheets"), ("05-audit", "Audit log"), ("08-agents", "Agents"), ("09-users", "Users"), ("10-me", "Me")] {
        let p = &pages[name];
        assert_eq!((p["status"].as_u64(), p["h1"].as_str(), p["has_main_landmark"].as_bool()), (Some(200), Some(h1), Some(true)), "{name}: {p}");
        assert_eq!(p["nav"].as_array().map(Vec::len), Some(7), "admin sees every page: {p}");
    }

    // Integrations: both sandbox connections; Epic renewed a token for the calls; our keys published.
    let integ = &pages["02-integrations"];
    let conns: Vec<&str> = integ["connections"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(conns.iter().any(|c| c.starts_with("epic-sandbox ok")) && conns.iter().any(|c| c.starts_with("ecw-sandbox")), "{conns:?}");
    let renewals: f64 = integ["renewals"].as_array().unwrap().iter().filter_map(Value::as_f64).sum();
    assert!(renewals >= 1.0, "a token was fetched for the calls: {integ}");
    assert!(integ["key_ids"].as_array().map(Vec::len).unwrap_or(0) >= 3, "the gateway key and both connection keys: {integ}");

    // Time savings before the review: every worksheet coded, none reviewed yet.
    let sav = &pages["03-savings"]["metrics"];
    assert_eq!((num(&sav["encounters"]), num(&sav["reviewed"]), num(&sav["minutes-saved"])), (n, 0.0, 0.0), "{sav}");
    assert!(num(&sav["provisional"]) > 0.0, "{sav}");

    // Worksheets: all pending.
    let ws = &pages["04-worksheets"]["metrics"];
    assert_eq!((num(&ws["pending"]), num(&ws["total"])), (n, n), "{ws}");

    // Audit: verified chain holding the calls; an allowed outcome's receipt and a decoded call.
    let audit = &pages["05-audit"];
    assert_eq!(audit["metrics"]["verified"], "verified", "{audit}");
    assert!(num(&audit["metrics"]["log-size"]) >= 2.0 * (n + 4.0), "{audit}");
    let rows = audit["rows"].as_array().unwrap();
    assert!(rows.iter().any(|r| r[2] == "event" && r[8] == "user.login — admin"), "the sign-in is the newest entry: {rows:?}");
    let denied = pages["05b-audit-denied"]["rows"].as_array().unwrap();
    assert_eq!(denied.len(), data.denied, "the decision filter lists exactly the denied calls: {denied:?}");
    assert_eq!((denied[0][2].as_str(), denied[0][3].as_str(), denied[0][4].as_str(), denied[0][5].as_str(), denied[0][7].as_str()), (Some("outcome"), Some("coding-agent"), Some("admin"), Some("connections.list"), Some("denied")), "{denied:?}");
    assert!(rows.iter().any(|r| r[5] == "worksheet.submit"), "{rows:?}");
    let receipt = &pages["06-audit-outcome"]["receipt"];
    for k in ["call_jti", "call_hash", "result_hash", "leaf_hash"] {
        assert_eq!(receipt[k].as_str().map(str::len).map(|l| l > 0), Some(true), "{k}: {receipt}");
    }
    assert_eq!(receipt["decision"], "allowed");
    assert_eq!(receipt["call_hash"].as_str().map(str::len), Some(64));
    let intent = &pages["07-audit-intent"];
    assert!(intent["metrics"]["call-signature"].as_str().unwrap_or("").contains("verifies"), "{intent}");
    let claims = intent["claims"].as_array().unwrap();
    assert!(claims.iter().any(|c| c.as_str().unwrap_or("").contains("\"iss\": \"coding-agent\"")), "{claims:?}");

    // Agents: the coding agent with its key and a last call; Users: admin and coder; Me: admin.
    let agent_rows = pages["08-agents"]["rows"].as_array().unwrap();
    let agent = agent_rows.iter().find(|r| r[0] == "coding-agent").expect("coding-agent listed");
    assert!(agent[5].as_str().unwrap_or("").contains("for coder"), "{agent}");
    let users: Vec<&str> = pages["09-users"]["rows"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(users.contains(&"admin") && users.contains(&"coder"), "{users:?}");
    assert_eq!(pages["10-me"]["metrics"]["user"], "admin");

    // The worksheet shows its codes, and was accepted.
    let detail = &pages["11-worksheet"];
    assert!(detail["diagnoses"].as_u64().unwrap_or(0) >= 1, "{detail}");
    let codes = detail["codes"].as_array().unwrap();
    assert!(!codes.is_empty() && codes.iter().all(|c| c.as_str().is_some_and(|c| c.len() >= 3 && c.as_bytes()[0].is_ascii_uppercase())), "ICD-10-CM codes shown: {codes:?}");
    assert_eq!(r["accepted"]["status"], "accepted", "{}", r["accepted"]);
    let after = &pages["13-savings-after-review"]["metrics"];
    assert_eq!(num(&after["reviewed"]), 1.0, "{after}");
    assert_ne!(num(&after["minutes-saved"]), 0.0, "{after}");

    // Narrow window: no page widens past the viewport.
    for (p, fits) in r["narrow"].as_object().unwrap() {
        assert_eq!(fits, &Value::Bool(true), "{p} overflows a 375 px window");
    }

    // Signing out ends the session.
    assert_eq!(r["after_logout"], "/login");
    assert_eq!(r["after_logout_protected"], "/login");
    assert_eq!(r["console_errors"].as_array().map(Vec::len), Some(0), "{}", r["console_errors"]);
    assert!(r["screenshots"].as_array().map(Vec::len).unwrap_or(0) >= 16);

    // The store recorded the review with its reviewer and a server-measured time; the
    // audit log holds the sign-in, the review and the sign-out.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let db = Db::connect(&medicodax_gateway::server::default_store_url(&server.data_dir)).await.unwrap();
        let (c, e) = target.split_once('/').unwrap();
        let w = WorksheetStore::new(db.clone()).get(c, e).await.unwrap().unwrap();
        assert_eq!((w.status.as_str(), w.reviewer.as_deref()), ("accepted", Some("admin")));
        let review_ms = w.review_ms.unwrap();
        assert!((1200..120_000).contains(&review_ms), "review time {review_ms} ms (the script waited 1.2 s)");
        let events: Vec<String> = medicodax_audit::tail(&db, 500)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|t| match t.entry.record {
                AuditRecord::Event(ev) => Some(format!("{} {}", ev.event, ev.subject)),
                _ => None,
            })
            .collect();
        for want in ["user.login admin".to_owned(), format!("worksheet.reviewed {target}"), "user.logout admin".to_owned()] {
            assert!(events.contains(&want), "missing audit event {want:?} in {events:?}");
        }
    });
    let _ = server.stderr.try_iter().count();
}
