//! `shoal-proxy htpasswd <user>` writes the login line the proxy's `[auth]` file takes.
#![allow(clippy::unwrap_used)] // test helpers fail the test on any error

use std::io::Write;
use std::process::{Command, Stdio};

fn htpasswd(user: &str, stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal-proxy"))
        .args(["htpasswd", user])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The program may refuse its arguments and exit before reading a byte: a closed pipe
    // here is its answer, which the exit status and stderr carry.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

#[test]
fn htpasswd_prints_a_bcrypt_line_that_verifies_the_password_from_stdin() {
    let out = htpasswd("shoal", "correct horse battery\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    let (user, hash) = line.trim_end().split_once(':').unwrap();
    assert_eq!(user, "shoal");
    assert!(hash.starts_with("$2"), "{hash}");
    assert!(bcrypt::verify("correct horse battery", hash).unwrap());
    assert!(!bcrypt::verify("correct horse battery\n", hash).unwrap());
    assert!(!line.contains("correct horse"));
}

#[test]
fn htpasswd_refuses_an_empty_password_and_a_user_with_a_colon() {
    assert_eq!(htpasswd("shoal", "").status.code(), Some(64));
    assert_eq!(htpasswd("sh:oal", "pw\n").status.code(), Some(64));
}
