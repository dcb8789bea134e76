//! The dashboard over HTTP (the router, no browser): sign-in, session cookie attacks,
//! CSRF, logout revocation, login limits, role checks per page, and the review time a
//! coder spends on a worksheet, all on a manual clock.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use medicodax_clock::{Clock, ManualClock};
use medicodax_config::Config;
use medicodax_gateway::dashboard::{Dashboard, router_with};
use medicodax_gateway::server::{Paths, build};
use medicodax_gateway::service::Gateway;
use medicodax_gateway::worksheets::Submission;
use medicodax_wire::audit::AuditRecord;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt as _;

const NOW: i64 = 1_767_225_600;
const PW: &str = "a long enough password";

struct Env {
    gw: Arc<Gateway>,
    app: axum::Router,
    clock: ManualClock,
    admin_pw: String,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let paths = Paths { data_dir: dir.path().join("data"), config_dir: dir.path().to_owned() };
    let (gw, startup) = build(Config::default(), &paths, clock.shared()).await.unwrap();
    let now_ms = clock.now_unix_millis();
    gw.users.add("cora", PW, &["coder".into()], now_ms).await.unwrap();
    gw.users.add("audrey", PW, &["auditor".into()], now_ms).await.unwrap();
    gw.users.add("carl", PW, &["coder".into()], now_ms).await.unwrap();
    let body = serde_json::json!({"diagnoses": [{"condition_id": "c1", "display": "Hypertension", "suggestions": [{"code": "I10", "title": "Essential hypertension", "confidence": 0.95, "source": "crosswalk", "evidence": {"resource_type": "Condition", "resource_id": "c1"}}]}]}).to_string();
    gw.worksheets
        .submit(&Submission { connection: "epic", encounter: "e1", patient: "p1", class: "IMP", agent: "coding-agent", now_ms, pipeline_ms: 30_000, baseline_min: 20.0, body: &body })
        .await
        .unwrap();
    gw.worksheets
        .submit(&Submission { connection: "epic", encounter: "e2", patient: "p1", class: "AMB", agent: "coding-agent", now_ms, pipeline_ms: 6_000, baseline_min: 4.0, body: &body })
        .await
        .unwrap();
    let app = router_with(Arc::new(Dashboard::new(Arc::clone(&gw))));
    Env { gw, app, clock, admin_pw: startup.admin_password.unwrap(), _dir: dir }
}

struct Resp {
    status: StatusCode,
    location: String,
    cookies: Vec<String>,
    body: String,
}

async fn send(app: &axum::Router, method: &str, path: &str, cookie: Option<&str>, form: Option<&str>) -> Resp {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    if form.is_some() {
        b = b.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    }
    let resp = app.clone().oneshot(b.body(Body::from(form.unwrap_or("").to_owned())).unwrap()).await.unwrap();
    let status = resp.status();
    let location = resp.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let cookies = resp.headers().get_all(header::SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect();
    let body = String::from_utf8(axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap();
    Resp { status, location, cookies, body }
}

fn hidden(body: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body.find(&marker).unwrap_or_else(|| panic!("no hidden {name} in page")) + marker.len();
    body[start..].split('"').next().unwrap().to_owned()
}

fn cookie_pair(set_cookie: &[String], name: &str) -> String {
    set_cookie.iter().find(|c| c.starts_with(&format!("{name}="))).map(|c| c.split(';').next().unwrap().to_owned()).unwrap_or_default()
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Signs in; returns the session cookie (`name=value`) and the session's CSRF value.
async fn login(e: &Env, user: &str, pw: &str) -> (String, String) {
    let page = send(&e.app, "GET", "/login", None, None).await;
    let lc = cookie_pair(&page.cookies, "medicodax_login");
    let form = format!("login_csrf={}&user={user}&password={}", hidden(&page.body, "login_csrf"), enc(pw));
    let r = send(&e.app, "POST", "/login", Some(&lc), Some(&form)).await;
    assert_eq!((r.status, r.location.as_str()), (StatusCode::SEE_OTHER, "/"), "login of {user}: {}", r.body);
    let session = cookie_pair(&r.cookies, "medicodax_session");
    assert!(r.cookies.iter().any(|c| c.starts_with("medicodax_session=") && c.contains("HttpOnly") && c.contains("SameSite=Strict")), "{:?}", r.cookies);
    let me = send(&e.app, "GET", "/me", Some(&session), None).await;
    assert_eq!(me.status, StatusCode::OK);
    (session.clone(), hidden(&me.body, "csrf"))
}

async fn events(gw: &Gateway) -> Vec<(String, String, serde_json::Value)> {
    medicodax_audit::tail(gw.audit.db(), 1000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|t| match t.entry.record {
            AuditRecord::Event(ev) => Some((ev.event, ev.subject, ev.detail)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn each_role_sees_its_pages_and_only_those() {
    let e = env().await;
    let (admin, _) = login(&e, "admin", &e.admin_pw.clone()).await;
    let (coder, coder_csrf) = login(&e, "cora", PW).await;
    let (auditor, _) = login(&e, "audrey", PW).await;
    let pages = ["/integrations", "/savings", "/worksheets", "/worksheets/epic/e1", "/audit", "/audit/entries/0", "/agents", "/users", "/me"];
    let expect = |who: &str, page: &str| -> StatusCode {
        let ok = match who {
            "admin" => true,
            "coder" => matches!(page, "/savings" | "/worksheets" | "/worksheets/epic/e1" | "/me"),
            _ => matches!(page, "/audit" | "/audit/entries/0" | "/agents" | "/me"),
        };
        if ok { StatusCode::OK } else { StatusCode::FORBIDDEN }
    };
    for (who, cookie) in [("admin", &admin), ("coder", &coder), ("auditor", &auditor)] {
        for p in pages {
            let r = send(&e.app, "GET", p, Some(cookie), None).await;
            assert_eq!(r.status, expect(who, p), "{who} GET {p}");
        }
    }
    // The navigation lists only the permitted pages.
    let r = send(&e.app, "GET", "/me", Some(&coder), None).await;
    assert!(r.body.contains("href=\"/worksheets\"") && !r.body.contains("href=\"/users\"") && !r.body.contains("href=\"/audit\""));
    // Home sends each role to its first page.
    assert_eq!(send(&e.app, "GET", "/", Some(&coder), None).await.location, "/savings");
    assert_eq!(send(&e.app, "GET", "/", Some(&auditor), None).await.location, "/audit");
    assert_eq!(send(&e.app, "GET", "/", Some(&admin), None).await.location, "/integrations");
    // A coder with a valid CSRF value still cannot manage users.
    let r = send(&e.app, "POST", "/users", Some(&coder), Some(&format!("csrf={coder_csrf}&name=mallory&role=admin&password={}", enc(PW)))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(e.gw.users.get("mallory").await.unwrap().is_none());
    // Without a session every page sends to the sign-in page.
    for p in pages {
        let r = send(&e.app, "GET", p, None, None).await;
        assert_eq!((r.status, r.location.as_str()), (StatusCode::SEE_OTHER, "/login"), "anonymous GET {p}");
    }
}

#[tokio::test]
async fn tampered_expired_foreign_and_garbage_cookies_are_refused() {
    let e = env().await;
    let (coder, _) = login(&e, "cora", PW).await;
    let token = coder.trim_start_matches("medicodax_session=").to_owned();
    let parts: Vec<&str> = token.split('.').collect();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    claims["sub"] = "admin".into();
    claims["roles"] = serde_json::json!(["admin"]);
    let forged = format!("medicodax_session={}.{}.{}", parts[0], b64.encode(claims.to_string()), parts[2]);
    // A token of another kind signed by the very same gateway key: a receipt.
    let receipt = format!("medicodax_session={}", e.gw.keys.sign(medicodax_wire::receipt::RECEIPT_TYP, &claims).unwrap());
    for bad in [forged.as_str(), receipt.as_str(), "medicodax_session=garbage", "medicodax_session=a.b.c", "medicodax_session=", "other=1"] {
        let r = send(&e.app, "GET", "/integrations", Some(bad), None).await;
        assert_eq!((r.status, r.location.as_str()), (StatusCode::SEE_OTHER, "/login"), "{bad:.60}");
    }
    assert_eq!(send(&e.app, "GET", "/worksheets", Some(&coder), None).await.status, StatusCode::OK);
    // Expiry: auth.session_secs (8 h by default).
    e.clock.advance(Duration::from_secs(8 * 3600 - 1));
    assert_eq!(send(&e.app, "GET", "/worksheets", Some(&coder), None).await.status, StatusCode::OK);
    e.clock.advance(Duration::from_secs(1));
    let r = send(&e.app, "GET", "/worksheets", Some(&coder), None).await;
    assert_eq!((r.status, r.location.as_str()), (StatusCode::SEE_OTHER, "/login"));
}

#[tokio::test]
async fn forms_need_the_session_csrf_value_and_logout_revokes() {
    let e = env().await;
    let (admin, csrf) = login(&e, "admin", &e.admin_pw.clone()).await;
    for form in ["", "csrf=", "csrf=0000", &format!("csrf={}x", csrf)] {
        assert_eq!(send(&e.app, "POST", "/audit/verify", Some(&admin), Some(form)).await.status, StatusCode::FORBIDDEN, "{form:?}");
        assert_eq!(send(&e.app, "POST", "/logout", Some(&admin), Some(form)).await.status, StatusCode::FORBIDDEN, "{form:?}");
        let r = send(&e.app, "POST", "/users", Some(&admin), Some(&format!("{form}&name=eve&role=coder&password={}", enc(PW)))).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
    assert!(e.gw.users.get("eve").await.unwrap().is_none());
    assert_eq!(send(&e.app, "POST", "/audit/verify", Some(&admin), Some(&format!("csrf={csrf}"))).await.location, "/audit");
    // The session survived the refused logouts; a proper one ends it for good.
    let r = send(&e.app, "POST", "/logout", Some(&admin), Some(&format!("csrf={csrf}"))).await;
    assert_eq!((r.status, r.location.as_str()), (StatusCode::SEE_OTHER, "/login"));
    assert!(r.cookies.iter().any(|c| c.starts_with("medicodax_session=;") && c.contains("Max-Age=0")), "{:?}", r.cookies);
    let r = send(&e.app, "GET", "/integrations", Some(&admin), None).await;
    assert_eq!((r.status, r.location.as_str()), (StatusCode::SEE_OTHER, "/login"), "the old cookie is on the denylist");
    let ev = events(&e.gw).await;
    assert!(ev.iter().any(|(n, s, _)| n == "user.logout" && s == "admin"));
}

#[tokio::test]
async fn logins_are_checked_limited_and_audited_without_passwords() {
    let e = env().await;
    let page = send(&e.app, "GET", "/login", None, None).await;
    let lc = cookie_pair(&page.cookies, "medicodax_login");
    let token = hidden(&page.body, "login_csrf");
    // No login CSRF cookie, or a mismatch: refused before the password is looked at.
    let r = send(&e.app, "POST", "/login", None, Some(&format!("login_csrf={token}&user=cora&password={}", enc(PW)))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = send(&e.app, "POST", "/login", Some(&lc), Some(&format!("login_csrf=x{token}&user=cora&password={}", enc(PW)))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Five wrong passwords, then even the right one is refused for a while.
    for i in 0..5 {
        let r = send(&e.app, "POST", "/login", Some(&lc), Some(&format!("login_csrf={token}&user=cora&password=wrong-password-{i}"))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "attempt {i}");
        assert!(r.body.contains("Wrong user name or password"));
    }
    let r = send(&e.app, "POST", "/login", Some(&lc), Some(&format!("login_csrf={token}&user=cora&password={}", enc(PW)))).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    e.clock.advance(Duration::from_secs(15 * 60));
    login(&e, "cora", PW).await;
    let ev = events(&e.gw).await;
    let failed: Vec<_> = ev.iter().filter(|(n, _, _)| n == "user.login_failed").collect();
    assert_eq!(failed.len(), 5, "the rate-limited attempt checked no password and wrote nothing");
    assert!(failed.iter().all(|(_, s, _)| s == "cora"));
    assert!(ev.iter().any(|(n, s, d)| n == "user.login" && s == "cora" && d["roles"] == serde_json::json!(["coder"])));
    let all = serde_json::to_string(&ev).unwrap();
    assert!(!all.contains("wrong-password") && !all.contains(PW), "no password in the audit log");
    // Garbage forms are refused, not crashed on.
    for form in ["%%%", "user=&password=", &"a=b&".repeat(5000)] {
        assert!(send(&e.app, "POST", "/login", Some(&lc), Some(form)).await.status.is_client_error());
    }
}

#[tokio::test]
async fn a_review_records_the_server_measured_time_and_reviewer() {
    let e = env().await;
    let (coder, csrf) = login(&e, "cora", PW).await;
    let (other, other_csrf) = login(&e, "carl", PW).await;
    let page = send(&e.app, "GET", "/worksheets/epic/e1", Some(&coder), None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("I10") && page.body.contains("Essential hypertension"));
    let ticket = hidden(&page.body, "ticket");
    e.clock.advance(Duration::from_secs(95));
    // Another coder cannot replay this coder's ticket; a bad code is refused with the page.
    let r = send(&e.app, "POST", "/worksheets/epic/e1/review", Some(&other), Some(&format!("csrf={other_csrf}&ticket={ticket}&action=accept"))).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = send(&e.app, "POST", "/worksheets/epic/e1/review", Some(&coder), Some(&format!("csrf={csrf}&ticket=forged&action=accept"))).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = send(&e.app, "POST", "/worksheets/epic/e1/review", Some(&coder), Some(&format!("csrf={csrf}&ticket={ticket}&action=edit&code.0=nonsense"))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("is not an ICD-10-CM code"));
    // Edit: change the code and add one. Review time = 95 s, measured by the server.
    let r = send(&e.app, "POST", "/worksheets/epic/e1/review", Some(&coder), Some(&format!("csrf={csrf}&ticket={ticket}&action=edit&code.0=i11.9&add=E66.9"))).await;
    assert_eq!((r.status, r.location.as_str()), (StatusCode::SEE_OTHER, "/worksheets/epic/e1"), "{}", r.body);
    let w = e.gw.worksheets.get("epic", "e1").await.unwrap().unwrap();
    assert_eq!((w.status.as_str(), w.reviewer.as_deref(), w.review_ms), ("edited", Some("cora"), Some(95_000)));
    assert_eq!(w.reviewed_at_ms, Some((NOW + 95) * 1000));
    assert_eq!(w.final_codes.as_deref(), Some(r#"[{"condition_id":"c1","code":"I11.9"},{"condition_id":null,"code":"E66.9"}]"#));
    // The first review wins.
    let r = send(&e.app, "POST", "/worksheets/epic/e1/review", Some(&coder), Some(&format!("csrf={csrf}&ticket={ticket}&action=accept"))).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let ev = events(&e.gw).await;
    let (_, _, d) = ev.iter().find(|(n, s, _)| n == "worksheet.reviewed" && s == "epic/e1").expect("review audited");
    assert_eq!((d["reviewer"].as_str(), d["status"].as_str(), d["review_ms"].as_i64(), d["changed"].as_u64(), d["added"].as_u64()), (Some("cora"), Some("edited"), Some(95_000), Some(1), Some(1)));
    // Time saved: inpatient 20 min − 0.5 min pipeline − 95 s review = 17.9 min.
    let s = send(&e.app, "GET", "/savings", Some(&coder), None).await;
    assert!(s.body.contains("<dd data-metric=\"minutes-saved\">17.9</dd>"), "{}", s.body);
    assert!(s.body.contains("<dd data-metric=\"reviewed\">1</dd>"));
    // A ticket expires with its session.
    let page = send(&e.app, "GET", "/worksheets/epic/e2", Some(&other), None).await;
    let ticket = hidden(&page.body, "ticket");
    e.clock.advance(Duration::from_secs(8 * 3600));
    let (other, other_csrf) = login(&e, "carl", PW).await;
    let r = send(&e.app, "POST", "/worksheets/epic/e2/review", Some(&other), Some(&format!("csrf={other_csrf}&ticket={ticket}&action=accept"))).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "a ticket from an ended session is stale");
}

#[tokio::test]
async fn pages_survive_garbage_input() {
    let e = env().await;
    let (admin, _) = login(&e, "admin", &e.admin_pw.clone()).await;
    for (p, want) in [
        ("/audit?from=yesterday&decision=%ZZ&before=-1&agent=%00", StatusCode::OK),
        ("/audit?before=99999999999999999999999", StatusCode::OK),
        ("/audit/entries/abc", StatusCode::NOT_FOUND),
        ("/audit/entries/18446744073709551615", StatusCode::NOT_FOUND),
        ("/audit/entries/999999", StatusCode::NOT_FOUND),
        ("/worksheets/bad%20conn/x", StatusCode::NOT_FOUND),
        ("/worksheets/epic/%3Cscript%3E", StatusCode::NOT_FOUND),
        ("/worksheets?status=%3Cb%3E", StatusCode::OK),
    ] {
        let r = send(&e.app, "GET", p, Some(&admin), None).await;
        assert_eq!(r.status, want, "{p}");
        assert!(!r.body.contains("<script>") && !r.body.contains("<b>"), "{p} echoed markup");
    }
    let r = send(&e.app, "POST", "/worksheets/epic/e1/review", Some(&admin), Some("\u{0}\u{1}garbage")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The audit page shows the sign-in event with its client, and verification passes.
    let r = send(&e.app, "GET", "/audit", Some(&admin), None).await;
    assert!(r.body.contains("user.login — admin"));
    assert!(r.body.contains("data-metric=\"verified\">verified<"), "{}", r.body);
    let r = send(&e.app, "GET", "/audit?kind=event&decision=denied", Some(&admin), None).await;
    assert!(r.body.contains("No entries match."));
    // Every page carries the security headers.
    let resp = e.app.clone().oneshot(Request::get("/login").body(Body::empty()).unwrap()).await.unwrap();
    let csp = resp.headers().get(header::CONTENT_SECURITY_POLICY).unwrap().to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(resp.headers().get(header::X_FRAME_OPTIONS).unwrap(), "DENY");
}
