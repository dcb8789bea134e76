//! `medicodax users add|passwd|list`: the dashboard's built-in users, in the same store
//! the gateway uses (`store.url`, or SQLite at `<data-dir>/medicodax.db`).
//!
//! A password comes from `--password-stdin` (the first line of standard input), from a
//! prompt with echo turned off when standard input is a terminal, or is generated with
//! `--generate` and printed once. Passwords are stored only as argon2id hashes. Exit
//! codes: 0 done, 1 the operation failed (the user exists, no such user, the store),
//! 2 bad usage (a bad name, role or password; no way to read a password).

use crate::CliError;
use crate::context::Context;
use medicodax_clock::{Clock, SystemClock};
use medicodax_gateway::users::{DASHBOARD_ROLES, UserError, UserStore};
use std::io::{BufRead, IsTerminal, Write};

/// Arguments of `users`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Args, Debug)]
struct PasswordSource {
    /// Read the password from the first line of standard input.
    #[arg(long, conflicts_with = "generate")]
    password_stdin: bool,
    /// Generate a random password and print it once.
    #[arg(long)]
    generate: bool,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Add a user with one or more roles (admin, coder, auditor, or a policy role of the configuration).
    Add {
        /// The user name (1-64 characters from A-Z a-z 0-9 - _ . @).
        name: String,
        /// A role; repeat for several.
        #[arg(long = "role", required = true, value_name = "ROLE")]
        roles: Vec<String>,
        #[command(flatten)]
        password: PasswordSource,
    },
    /// Set a user's password.
    Passwd {
        /// The user name.
        name: String,
        #[command(flatten)]
        password: PasswordSource,
    },
    /// List users and their roles (never password hashes).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn user_error(e: UserError) -> CliError {
    match e {
        UserError::BadName | UserError::BadRole(_) | UserError::BadPassword => CliError::Usage(e.to_string()),
        UserError::Exists(_) | UserError::Missing(_) | UserError::Hash | UserError::Store(_) => CliError::Failed(e.to_string()),
    }
}

/// Opens the user store the gateway uses.
pub async fn open_store(ctx: &Context) -> Result<UserStore, CliError> {
    let config = ctx.config()?;
    let url = match config.store.url {
        Some(u) => u,
        None => {
            std::fs::create_dir_all(&ctx.data_dir).map_err(|e| CliError::Usage(format!("cannot create the data folder {}: {e}; pass a writable --data-dir", ctx.data_dir.display())))?;
            medicodax_gateway::server::default_store_url(&ctx.data_dir)
        }
    };
    let db = medicodax_audit::Db::connect(&url).await.map_err(|e| CliError::Failed(format!("cannot open the store: {e}")))?;
    UserStore::open(db).await.map_err(user_error)
}

/// Reads one line with the terminal's echo turned off (`stty -echo`).
fn prompt_hidden(prompt: &str) -> Result<String, CliError> {
    let stty = |arg: &str| std::process::Command::new("stty").arg(arg).stdin(std::process::Stdio::inherit()).status().map(|s| s.success()).unwrap_or(false);
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    if !stty("-echo") {
        return Err(CliError::Usage("cannot turn off the terminal's echo to read a password; use --password-stdin or --generate".into()));
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    stty("echo");
    eprintln!();
    read.map_err(|e| CliError::Failed(format!("cannot read the password: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// The password to set, and whether it was generated (and must be printed).
fn password(src: &PasswordSource) -> Result<(String, bool), CliError> {
    if src.generate {
        return medicodax_gateway::users::random_password().map(|p| (p, true)).map_err(|e| CliError::Failed(e.to_string()));
    }
    if src.password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| CliError::Failed(format!("cannot read standard input: {e}")))?;
        let pw = line.trim_end_matches(['\r', '\n']).to_owned();
        if pw.is_empty() {
            return Err(CliError::Usage("--password-stdin: standard input was empty; pipe the password in (its first line is used)".into()));
        }
        return Ok((pw, false));
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage("standard input is not a terminal: pass --password-stdin (and the password on standard input) or --generate".into()));
    }
    let first = prompt_hidden("password: ")?;
    let again = prompt_hidden("again: ")?;
    if first != again {
        return Err(CliError::Usage("the two passwords differ".into()));
    }
    Ok((first, false))
}

fn user_event(event: &str, name: &str, detail: serde_json::Value) -> medicodax_wire::audit::SystemEvent {
    medicodax_wire::audit::SystemEvent { time_ms: 0, event: event.into(), subject: name.into(), detail }
}

pub async fn run(ctx: &Context, args: Args) -> Result<(), CliError> {
    let now = SystemClock::new().now_unix_millis();
    match args.action {
        Action::Add { name, roles, password: src } => {
            let config = ctx.config()?;
            if let Some(bad) = roles.iter().find(|r| !DASHBOARD_ROLES.contains(&r.as_str()) && !config.roles.contains_key(*r)) {
                return Err(CliError::Usage(format!("role {bad:?} is neither a dashboard role ({}) nor a policy role of the configuration", DASHBOARD_ROLES.join(", "))));
            }
            let _lock = super::offline_audit::lock(ctx, "add users from the dashboard's Users page (as admin)")?;
            let (pw, generated) = password(&src)?;
            let store = open_store(ctx).await?;
            store.add(&name, &pw, &roles, now).await.map_err(user_error)?;
            super::offline_audit::append(ctx, &config, user_event("user.created", &name, serde_json::json!({"roles": roles, "by": "command line"}))).await?;
            eprintln!("added user {name} with roles {}", roles.join(", "));
            if generated {
                crate::out::line(&format!("password for {name}: {pw}"));
                eprintln!("(shown once; it is stored only as a hash)");
            }
        }
        Action::Passwd { name, password: src } => {
            let _lock = super::offline_audit::lock(ctx, "change passwords from the dashboard's Users page (as admin)")?;
            let config = ctx.config()?;
            let (pw, generated) = password(&src)?;
            let store = open_store(ctx).await?;
            store.set_password(&name, &pw, now).await.map_err(user_error)?;
            super::offline_audit::append(ctx, &config, user_event("user.password_changed", &name, serde_json::json!({"by": "command line"}))).await?;
            eprintln!("changed the password of {name}");
            if generated {
                crate::out::line(&format!("password for {name}: {pw}"));
            }
        }
        Action::List { json } => {
            let users = open_store(ctx).await?.list().await.map_err(user_error)?;
            if json {
                crate::out::json(&users);
            } else {
                let width = users.iter().map(|u| u.name.len()).max().unwrap_or(4).max(4);
                crate::out::line(&format!("{:width$}  {:24}  CREATED", "NAME", "ROLES"));
                for u in &users {
                    crate::out::line(&format!("{:width$}  {:24}  {}", u.name, u.roles.join(","), medicodax_gateway::dashboard::fmt::time_ms(u.created_ms)));
                }
            }
        }
    }
    Ok(())
}
