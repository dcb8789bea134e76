//! Sign-in and sign-out (`/login`, `/logout`), open to everyone.
//!
//! The login form is guarded against login CSRF by a double-submit value: a random
//! value in a short-lived `SameSite=Strict` cookie that the form must echo. Failed
//! logins are limited per user name and per client address before the password is
//! checked ([`crate::sessions::LoginLimiter`]). Successful and failed logins are audit
//! events (`user.login`, `user.login_failed`) with the user name and client address,
//! never the password; a login is refused when its event cannot be written. Logout
//! (`user.logout`) revokes the session's `jti` and clears the cookie.

use super::{ClientAddr, Dash, Nav, PageError, PageResult, Viewer, audit_event, form_pairs, form_value, render};
use crate::sessions::{LOGIN_COOKIE, constant_time_eq, cookie_value, random_hex};
use askama::Template;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;

/// The sign-in page.
#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    nav: Nav,
    login_csrf: String,
    user: String,
    error: Option<String>,
}

fn login_form(state: &super::Dashboard, status: StatusCode, user: &str, error: Option<String>) -> PageResult {
    let value = random_hex(32).map_err(|e| PageError::internal("random", &e))?;
    let page = LoginPage { nav: Nav::default(), login_csrf: value.clone(), user: user.to_owned(), error };
    let mut resp = render(&page);
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&state.sessions.login_cookie(&value)) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(resp)
}

/// `GET /login`: the form (or `/` when already signed in).
pub async fn login_page(state: Dash, headers: HeaderMap) -> PageResult {
    if let Some(t) = state.sessions.token_from(&headers)
        && state.sessions.verify(t).is_ok()
    {
        return Ok(Redirect::to("/").into_response());
    }
    login_form(&state, StatusCode::OK, "", None)
}

/// A user name fit for an audit record: itself when it follows the user-name grammar.
fn loggable_name(name: &str) -> String {
    let ok = !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if ok { name.to_owned() } else { "(not a valid user name)".to_owned() }
}

/// `POST /login`: checks the form's login CSRF value, the rate limits, then the password.
pub async fn login(state: Dash, ClientAddr(addr): ClientAddr, headers: HeaderMap, body: Bytes) -> PageResult {
    let form = form_pairs(&body);
    let user = form_value(&form, "user").unwrap_or("").trim().to_owned();
    let password = form_value(&form, "password").unwrap_or("");
    let echoed = form_value(&form, "login_csrf").unwrap_or("");
    let cookie = cookie_value(&headers, LOGIN_COOKIE).unwrap_or("");
    if cookie.is_empty() || !constant_time_eq(cookie, echoed) {
        metrics::counter!("medicodax_dashboard_logins_total", "result" => "csrf").increment(1);
        return login_form(&state, StatusCode::FORBIDDEN, &user, Some("The sign-in form expired or was not sent from this site. Please try again.".into()));
    }
    let now_ms = state.gw.clock.now_unix_millis();
    if let Err(wait_ms) = state.sessions.limiter.check(&user, &addr, now_ms) {
        metrics::counter!("medicodax_dashboard_logins_total", "result" => "rate_limited").increment(1);
        let mins = (wait_ms + 59_999) / 60_000;
        let mut resp = login_form(&state, StatusCode::TOO_MANY_REQUESTS, &user, Some(format!("Too many failed sign-ins. Try again in {mins} min.")))?;
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from((wait_ms + 999) / 1000));
        return Ok(resp);
    }
    let found = state.gw.users.authenticate(&user, password).await.map_err(|e| PageError::internal("user store", &e))?;
    let Some(found) = found else {
        state.sessions.limiter.failed(&user, &addr, now_ms);
        metrics::counter!("medicodax_dashboard_logins_total", "result" => "failed").increment(1);
        audit_event(&state, "user.login_failed", &loggable_name(&user), serde_json::json!({"reason": "bad_credentials", "client": addr})).await?;
        return login_form(&state, StatusCode::UNAUTHORIZED, &user, Some("Wrong user name or password.".into()));
    };
    state.sessions.limiter.succeeded(&found.name, &addr);
    let (token, claims) = state.sessions.issue(&found.name, &found.roles).map_err(|e| PageError::internal("session", &e))?;
    audit_event(&state, "user.login", &found.name, serde_json::json!({"roles": found.roles, "client": addr, "session": claims.jti, "expires": claims.exp})).await?;
    metrics::counter!("medicodax_dashboard_logins_total", "result" => "ok").increment(1);
    let mut resp = Redirect::to("/").into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&state.sessions.set_cookie(&token, &claims)) {
        h.append(header::SET_COOKIE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&state.sessions.clear_login_cookie()) {
        h.append(header::SET_COOKIE, v);
    }
    Ok(resp)
}

/// `POST /logout`: revokes the session (CSRF-checked) and clears the cookie.
pub async fn logout(state: Dash, viewer: Viewer, body: Bytes) -> PageResult {
    let form = form_pairs(&body);
    viewer.check_csrf(form_value(&form, "csrf"))?;
    state.sessions.revoke(&viewer.session);
    audit_event(&state, "user.logout", &viewer.user.name, serde_json::json!({"session": viewer.session.jti})).await?;
    let mut resp: Response = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&state.sessions.clear_cookie()) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(resp)
}
