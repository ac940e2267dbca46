//! `deploy/Dockerfile` names binaries and stages that exist and needs no shell at run time.

use super::*;

/// One Dockerfile instruction: its name in capitals and the rest of the line.
pub type Instruction = (String, String);

/// A stage: its name, its base, and its instructions.
pub type Stage = (String, String, Vec<Instruction>);

/// Dockerfile instructions, continuation lines joined and comments dropped.
pub fn dockerfile() -> Vec<Instruction> {
    let text = fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(rest) => {
                cur.push_str(rest);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                let (ins, rest) = cur.split_once(' ').unwrap_or((&cur, ""));
                out.push((ins.to_uppercase(), rest.trim().to_owned()));
                cur.clear();
            }
        }
    }
    out
}

#[test]
fn the_dockerfile_builds_every_part_and_needs_no_shell_to_run() {
    let ins = dockerfile();
    let (packages, bins) = workspace();
    let cargo: toml::Table = fs::read_to_string(root().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let rust_version = cargo["workspace"]["package"]["rust-version"]
        .as_str()
        .unwrap();

    let arg = |name: &str| {
        ins.iter()
            .find_map(|(i, rest)| (i == "ARG").then(|| rest.strip_prefix(&format!("{name}=")))?)
            .unwrap_or_else(|| panic!("ARG {name} has no default"))
            .to_owned()
    };
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap()).collect() };
    let version = cargo["workspace"]["package"]["version"].as_str().unwrap();
    assert_eq!(arg("VERSION"), version, "the image's version label");
    assert!(
        parse(&arg("RUST_VERSION")) >= parse(rust_version),
        "the builder's Rust is older than the workspace's rust-version {rust_version}"
    );

    // Stages, in order: (name, base, instructions).
    let mut stages: Vec<Stage> = Vec::new();
    for (i, rest) in &ins {
        if i == "FROM" {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => name.to_string(),
                _ => panic!("every stage is named: FROM {rest}"),
            };
            stages.push((name, words[0].to_owned(), Vec::new()));
        } else if let Some(last) = stages.last_mut() {
            last.2.push((i.clone(), rest.clone()));
        }
    }
    let names: Vec<&str> = stages.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "builder", "runtime", "origin", "tracker", "agent", "proxy", "shoal"
        ],
        "stages"
    );
    let stage = |n: &str| stages.iter().find(|s| s.0 == n).unwrap();

    // The builder builds each part's binary, which the workspace has, and copies it out.
    let build = stage("builder")
        .2
        .iter()
        .find(|(i, r)| i == "RUN" && r.contains("cargo build"))
        .unwrap()
        .1
        .clone();
    assert!(
        build.contains("--locked") && build.contains("--release"),
        "{build}"
    );
    for part in PARTS {
        let bin = format!("shoal-{part}");
        assert!(
            build.contains(&format!("--bin {bin}")),
            "{bin} is not built"
        );
        assert!(
            build.contains(&format!("target/release/{bin}")),
            "{bin} is not copied out"
        );
        assert!(
            packages.contains(&bin),
            "the workspace has no package {bin}"
        );
        if !bins.contains(&bin) {
            eprintln!(
                "NOTE: {bin} has no binary target in the workspace yet; the image build needs it"
            );
        }
    }

    // The runtime: binaries where the chart and the units run them, a non-root user, the
    // same one the chart runs as, and nothing that needs a shell.
    let runtime = stage("runtime");
    assert!(
        runtime
            .2
            .iter()
            .any(|(i, r)| i == "COPY" && r == &format!("--from=builder /out/ {BIN_DIR}/"))
    );
    let user = runtime
        .2
        .iter()
        .find(|(i, _)| i == "USER")
        .unwrap()
        .1
        .clone();
    let uid: u64 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric USER");
    assert!(uid > 0);
    let default = rendered()
        .sets
        .iter()
        .find(|s| s.name == "default")
        .unwrap();
    for w in default.workloads() {
        assert_eq!(
            pod_spec(w)["securityContext"]["runAsUser"].as_u64(),
            Some(uid)
        );
    }
    for (name, base, body) in &stages[1..] {
        if name != "runtime" {
            assert_eq!(base, "runtime", "stage {name}");
        }
        for (i, rest) in body {
            assert_ne!(
                i, "RUN",
                "stage {name} runs a command, but its image has no shell"
            );
            if i == "ENTRYPOINT" || i == "CMD" {
                let argv: Vec<String> = serde_json::from_str(rest)
                    .unwrap_or_else(|_| panic!("{i} {rest} must be exec form: there is no shell"));
                if i == "ENTRYPOINT" {
                    assert_eq!(argv, [format!("{BIN_DIR}/shoal-{name}")], "stage {name}");
                }
            }
        }
    }

    // The build context keeps every workspace member and the lock file.
    let ignore = fs::read_to_string(root().join(".dockerignore")).unwrap();
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(ignored.contains(&"target/"));
    let members = cargo["workspace"]["members"].as_array().unwrap();
    for m in members
        .iter()
        .map(|m| m.as_str().unwrap())
        .chain(["Cargo.lock", "Cargo.toml"])
    {
        assert!(
            !ignored.iter().any(|p| p.trim_end_matches('/') == m),
            ".dockerignore leaves out {m}, which the build needs"
        );
    }
}
