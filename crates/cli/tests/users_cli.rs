//! `medicodax users add|passwd|list` against a fresh data folder: the store the gateway
//! uses, passwords from standard input or generated, and the exit codes (0 done, 1 the
//! operation failed, 2 bad usage).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_medicodax");

fn run(data: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("MEDICODAX_CONFIG")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

#[test]
fn users_add_passwd_list_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ok = run(&data, &["users", "add", "alice", "--role", "coder", "--role", "auditor", "--password-stdin"], Some("correct horse battery\n"));
    assert_eq!(code(&ok), 0, "{}", String::from_utf8_lossy(&ok.stderr));
    let generated = run(&data, &["users", "add", "bob", "--role", "admin", "--generate"], None);
    assert_eq!(code(&generated), 0);
    let out = String::from_utf8(generated.stdout).unwrap();
    let pw = out.trim().strip_prefix("password for bob: ").expect("the generated password is printed once");
    assert_eq!(pw.len(), 48);

    // The gateway's store holds them, with argon2id hashes that verify.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let db = medicodax_audit::Db::connect(&medicodax_gateway::server::default_store_url(&data)).await.unwrap();
        let users = medicodax_gateway::users::UserStore::open(db).await.unwrap();
        assert_eq!(users.authenticate("alice", "correct horse battery").await.unwrap().map(|u| u.roles), Some(vec!["coder".to_owned(), "auditor".to_owned()]));
        assert!(users.authenticate("bob", pw).await.unwrap().is_some());
    });

    let list = run(&data, &["users", "list", "--json"], None);
    assert_eq!(code(&list), 0);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let names: Vec<&str> = v.as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert!(!String::from_utf8_lossy(&list.stdout).contains("argon2"), "no hashes listed");
    let table = run(&data, &["users", "list"], None);
    let t = String::from_utf8(table.stdout).unwrap();
    assert!(t.starts_with("NAME") && t.contains("alice  coder,auditor"), "{t}");

    let pass = run(&data, &["users", "passwd", "alice", "--password-stdin"], Some("another long password\n"));
    assert_eq!(code(&pass), 0);
    rt.block_on(async {
        let db = medicodax_audit::Db::connect(&medicodax_gateway::server::default_store_url(&data)).await.unwrap();
        let users = medicodax_gateway::users::UserStore::open(db).await.unwrap();
        assert!(users.authenticate("alice", "another long password").await.unwrap().is_some());
        assert!(users.authenticate("alice", "correct horse battery").await.unwrap().is_none());
    });

    // 1: the operation failed.
    assert_eq!(code(&run(&data, &["users", "add", "alice", "--role", "coder", "--password-stdin"], Some("correct horse battery\n"))), 1, "exists");
    assert_eq!(code(&run(&data, &["users", "passwd", "nobody", "--password-stdin"], Some("correct horse battery\n"))), 1, "no such user");
    // 2: bad usage.
    for (args, stdin) in [
        (vec!["users", "add", "bad name", "--role", "coder", "--password-stdin"], Some("correct horse battery\n")),
        (vec!["users", "add", "carol", "--role", "wizard", "--password-stdin"], Some("correct horse battery\n")),
        (vec!["users", "add", "carol", "--role", "coder", "--password-stdin"], Some("short\n")),
        (vec!["users", "add", "carol", "--role", "coder"], None),
        (vec!["users", "add", "carol", "--password-stdin"], Some("correct horse battery\n")),
        (vec!["users", "add", "carol", "--role", "coder", "--password-stdin", "--generate"], None),
        (vec!["users", "frobnicate"], None),
    ] {
        let o = run(&data, &args, stdin);
        assert_eq!(code(&o), 2, "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    rt.block_on(async {
        let db = medicodax_audit::Db::connect(&medicodax_gateway::server::default_store_url(&data)).await.unwrap();
        let users = medicodax_gateway::users::UserStore::open(db).await.unwrap();
        assert!(users.get("carol").await.unwrap().is_none(), "no bad usage created a user");
    });

    // Each change is in the audit log, under the gateway's signed checkpoint, and the log verifies.
    let tail = run(&data, &["audit", "tail", "-n", "50"], None);
    assert_eq!(code(&tail), 0, "{}", String::from_utf8_lossy(&tail.stderr));
    let events: Vec<(String, String)> = String::from_utf8(tail.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let ev = v.pointer("/entry/record/event")?.as_str()?.to_owned();
            Some((ev, v.pointer("/entry/record/subject")?.as_str()?.to_owned()))
        })
        .filter(|(e, _)| e.starts_with("user."))
        .collect();
    let want = [("user.created", "alice"), ("user.created", "bob"), ("user.password_changed", "alice")].map(|(a, b)| (a.to_owned(), b.to_owned()));
    assert_eq!(events, want);
    let verify = run(&data, &["audit", "verify", "--json"], None);
    assert_eq!(code(&verify), 0, "{}", String::from_utf8_lossy(&verify.stderr));

    // While a gateway holds the data folder, the command refuses (exit 2, like every command
    // that needs the folder) and changes nothing.
    let lock = medicodax_gateway::server::lock_data_dir(&data).unwrap();
    let busy = run(&data, &["users", "add", "dave", "--role", "coder", "--password-stdin"], Some("correct horse battery\n"));
    assert_eq!(code(&busy), 2);
    assert!(String::from_utf8_lossy(&busy.stderr).contains("a gateway is running"), "{}", String::from_utf8_lossy(&busy.stderr));
    drop(lock);
    rt.block_on(async {
        let db = medicodax_audit::Db::connect(&medicodax_gateway::server::default_store_url(&data)).await.unwrap();
        let users = medicodax_gateway::users::UserStore::open(db).await.unwrap();
        assert!(users.get("dave").await.unwrap().is_none());
    });
}
