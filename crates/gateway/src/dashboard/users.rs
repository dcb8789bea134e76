//! Users (`/users`, admin only): the dashboard's built-in users.
//!
//! Lists users with their roles and creation time, adds a user (name, roles, a password
//! typed in or generated and shown once on the answer page), and sets a user's
//! password. Both changes are CSRF-checked forms and audit events (`user.created`,
//! `user.password_changed`, naming the admin who made them; never the password).
//! Passwords are stored only as argon2id hashes ([`crate::users`]).

use super::{Dash, Nav, Page, PageError, PageResult, Viewer, audit_event, fmt, form_pairs, form_value, render};
use crate::users::{DASHBOARD_ROLES, UserError};
use askama::Template;
use axum::extract::Path;
use axum::http::StatusCode;
use bytes::Bytes;

/// One listed user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRow {
    /// Name.
    pub name: String,
    /// Roles.
    pub roles: String,
    /// Created.
    pub created: String,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    nav: Nav,
    users: Vec<UserRow>,
    roles: &'static [&'static str],
    notice: Option<String>,
    error: Option<String>,
    generated: Option<(String, String)>,
}

async fn show(state: &super::Dashboard, viewer: &Viewer, status: StatusCode, notice: Option<String>, error: Option<String>, generated: Option<(String, String)>) -> PageResult {
    let users = state.gw.users.list().await.map_err(|e| PageError::internal("user store", &e))?;
    let users = users.into_iter().map(|u| UserRow { roles: u.roles.join(", "), created: fmt::time_ms(u.created_ms), name: u.name }).collect();
    let mut resp = render(&UsersPage { nav: viewer.nav(Page::Users), users, roles: &DASHBOARD_ROLES, notice, error, generated });
    *resp.status_mut() = status;
    Ok(resp)
}

/// `GET /users`.
pub async fn page(state: Dash, viewer: Viewer) -> PageResult {
    viewer.require(Page::Users)?;
    show(&state, &viewer, StatusCode::OK, None, None, None).await
}

fn password_or_generated(form: &[(String, String)]) -> Result<(String, bool), PageError> {
    match form_value(form, "password").filter(|p| !p.is_empty()) {
        Some(p) => Ok((p.to_owned(), false)),
        None => crate::users::random_password().map(|p| (p, true)).map_err(|e| PageError::internal("random", &e)),
    }
}

fn user_error(e: UserError) -> Result<String, PageError> {
    match e {
        UserError::Store(_) | UserError::Hash => Err(PageError::internal("user store", &e)),
        other => Ok(other.to_string()),
    }
}

/// `POST /users`: adds a user.
pub async fn add(state: Dash, viewer: Viewer, body: Bytes) -> PageResult {
    viewer.require(Page::Users)?;
    let form = form_pairs(&body);
    viewer.check_csrf(form_value(&form, "csrf"))?;
    let name = form_value(&form, "name").unwrap_or("").trim().to_owned();
    let asked: Vec<&str> = form.iter().filter(|(k, _)| k == "role").map(|(_, v)| v.as_str()).collect();
    if let Some(bad) = asked.iter().find(|r| !DASHBOARD_ROLES.contains(r)) {
        let msg = format!("{:?} is not a dashboard role; choose from {}", bad.chars().take(32).collect::<String>(), DASHBOARD_ROLES.join(", "));
        return show(&state, &viewer, StatusCode::BAD_REQUEST, None, Some(msg), None).await;
    }
    let roles: Vec<String> = DASHBOARD_ROLES.iter().filter(|r| asked.contains(r)).map(|r| (*r).to_owned()).collect();
    if roles.is_empty() {
        return show(&state, &viewer, StatusCode::BAD_REQUEST, None, Some("choose at least one role".into()), None).await;
    }
    let (password, generated) = password_or_generated(&form)?;
    match state.gw.users.add(&name, &password, &roles, state.gw.clock.now_unix_millis()).await {
        Ok(()) => {}
        Err(e) => return show(&state, &viewer, StatusCode::BAD_REQUEST, None, Some(user_error(e)?), None).await,
    }
    audit_event(&state, "user.created", &name, serde_json::json!({"roles": roles, "by": viewer.user.name})).await?;
    let shown = generated.then(|| (name.clone(), password));
    show(&state, &viewer, StatusCode::OK, Some(format!("Created user {name}.")), None, shown).await
}

/// `POST /users/{name}/password`: sets a user's password.
pub async fn set_password(state: Dash, viewer: Viewer, Path(name): Path<String>, body: Bytes) -> PageResult {
    viewer.require(Page::Users)?;
    let form = form_pairs(&body);
    viewer.check_csrf(form_value(&form, "csrf"))?;
    let (password, generated) = password_or_generated(&form)?;
    match state.gw.users.set_password(&name, &password, state.gw.clock.now_unix_millis()).await {
        Ok(()) => {}
        Err(UserError::Missing(_)) => return Err(PageError::NotFound("no such user".into())),
        Err(e) => return show(&state, &viewer, StatusCode::BAD_REQUEST, None, Some(user_error(e)?), None).await,
    }
    audit_event(&state, "user.password_changed", &name, serde_json::json!({"by": viewer.user.name})).await?;
    let shown = generated.then(|| (name.clone(), password));
    show(&state, &viewer, StatusCode::OK, Some(format!("Changed the password of {name}.")), None, shown).await
}
