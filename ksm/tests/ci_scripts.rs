//! The shell scripts CI runs (`.ci/run`, the package tests, the fuzz and device-suite
//! runners) all run under `set -o pipefail`. There, `producer | grep -q …`, `… | head` and
//! an awk program that `exit`s early are races: the reader stops once it has what it wants,
//! the producer, still writing, dies of SIGPIPE, and the pipeline fails although the check
//! held. One such race failed a good package in CI (the description check). The scripts
//! match against captured output instead; this test keeps the pattern out.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every shell script of the repository CI runs: `.ci/run` and each `*.sh` outside `target`.
fn scripts(root: &Path) -> Vec<PathBuf> {
    let mut found = vec![root.join(".ci/run")];
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    dirs.push(path);
                }
            } else if name.ends_with(".sh") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The pipe stages that stop reading early, on one line of a script (comments dropped).
fn early_readers(line: &str) -> Vec<&'static str> {
    let code = line.split(" #").next().unwrap_or("");
    if code.trim_start().starts_with('#') {
        return Vec::new();
    }
    let stages: Vec<&str> = code.split('|').map(str::trim).collect();
    let mut hits = Vec::new();
    // Every stage after the first reads a pipe ("||" leaves an empty stage, which is skipped).
    for stage in stages.iter().skip(1).filter(|s| !s.is_empty()) {
        let mut words = stage.split_whitespace();
        match words.next() {
            Some("grep")
                if words.any(|w| w.starts_with('-') && !w.starts_with("--") && w.contains('q')) =>
            {
                hits.push("grep -q")
            }
            Some("head") => hits.push("head"),
            Some("awk") if stage.contains("exit") => hits.push("awk … exit"),
            _ => {}
        }
    }
    hits
}

#[test]
fn no_pipeline_stops_reading_before_its_producer_is_done() {
    let root = workspace_root();
    let scripts = scripts(&root);
    assert!(scripts.len() >= 5, "found only {scripts:?}");
    let mut offences = Vec::new();
    for script in &scripts {
        let text = std::fs::read_to_string(script).unwrap();
        assert!(
            text.contains("pipefail"),
            "{} does not set pipefail",
            script.display()
        );
        for (n, line) in text.lines().enumerate() {
            for hit in early_readers(line) {
                let rel = script.strip_prefix(&root).unwrap().display();
                offences.push(format!(
                    "{rel}:{}: pipes into {hit}: {}",
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        offences.is_empty(),
        "match against captured output instead:\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_check_sees_the_patterns_it_forbids() {
    assert_eq!(
        early_readers(r#"dpkg-deb -f "$deb" Description | head -n 1 | grep -q 'x' ||"#),
        ["head", "grep -q"]
    );
    assert_eq!(
        early_readers("id -nG ksm | tr ' ' '\\n' | grep -qx dialout || fail"),
        ["grep -q"]
    );
    assert_eq!(
        early_readers("apt-get indextargets | awk '{ print $1; exit }'"),
        ["awk … exit"]
    );
    assert!(early_readers(r#"grep -q x "$f" || fail "no x""#).is_empty());
    assert!(early_readers(r#"x="$(cmd | sed -n 1p)""#).is_empty());
    assert!(early_readers("# cmd | grep -q x").is_empty());
}
