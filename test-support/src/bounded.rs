//! A child process run for at most [`RUN_LIMIT`]: a test never waits without end for a
//! program it starts (a validation client on a hung validator, `psql` behind a lock,
//! `ykgenerate`); it fails, naming the program, and the child is killed.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long one run may take: far longer than any of these programs needs on a loaded
/// machine, and shorter than the clients' own HTTP timeouts (ykclient waits without end by
/// default), so a hang fails the test here.
pub const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Runs `cmd` with `stdin` as its input, for at most [`RUN_LIMIT`] (it is killed after
/// that, and the test fails). Returns its exit status and what it printed on both streams.
pub fn run_bounded(cmd: Command, stdin: &str) -> (ExitStatus, String, String) {
    run_within(cmd, stdin, RUN_LIMIT)
}

/// [`run_bounded`] with a limit of the caller's.
pub fn run_within(mut cmd: Command, stdin: &str, limit: Duration) -> (ExitStatus, String, String) {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                panic!("{what}: {e}: not installed? .ci/run installs every package the tests need")
            }
            _ => panic!("{what}: {e}"),
        });
    let mut input = child.stdin.take().expect("stdin");
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = reader(Box::new(child.stdout.take().expect("stdout")));
    let err = reader(Box::new(child.stderr.take().expect("stderr")));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(limit) {
        Ok(s) => s.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => {
            kill(pid);
            panic!("{what} did not finish within {limit:?}");
        }
    };
    (
        status,
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}

/// Kills the child with id `pid` (one of ours: a test's own child, by its id).
pub fn kill(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// Waits for `child` to end, for at most [`RUN_LIMIT`]; after that it is killed and the test
/// fails, naming `what`.
pub fn wait_bounded(child: &mut Child, what: &str) -> ExitStatus {
    wait_within(child, what, RUN_LIMIT)
}

/// [`wait_bounded`] with a limit of the caller's.
pub fn wait_within(child: &mut Child, what: &str, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap_or_else(|e| panic!("{what}: {e}")) {
            return s;
        }
        if start.elapsed() >= limit {
            kill(child.id());
            let _ = child.wait();
            panic!("{what} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a clean-up command (a `DROP …` from a `Drop`), its output thrown away, for at most
/// [`RUN_LIMIT`]. It never panics: a panic in a `Drop` that runs while a failed test unwinds
/// would abort the run and hide the failure. A command that cannot start is skipped; one
/// that overruns is killed.
pub fn clean_up(cmd: Command) {
    clean_up_within(cmd, RUN_LIMIT)
}

/// [`clean_up`] with a limit of the caller's.
pub fn clean_up_within(mut cmd: Command, limit: Duration) {
    let Ok(mut child) = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return;
    };
    let start = Instant::now();
    while let Ok(None) = child.try_wait() {
        if start.elapsed() >= limit {
            kill(child.id());
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The panic message of `f`, which must panic.
    fn panic_of(f: impl FnOnce()) -> String {
        let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            .expect_err("it should have panicked");
        e.downcast_ref::<String>().cloned().unwrap_or_default()
    }

    #[test]
    fn a_program_that_ends_gives_its_status_and_output() {
        let mut c = Command::new("sh");
        c.args(["-c", "cat; echo err >&2; exit 3"]);
        let (status, out, err) = run_bounded(c, "in\n");
        assert_eq!(
            (status.code(), out.as_str(), err.as_str()),
            (Some(3), "in\n", "err\n")
        );
    }

    #[test]
    fn a_program_past_its_limit_is_killed_and_the_test_fails_naming_it() {
        let start = Instant::now();
        let mut c = Command::new("sleep");
        c.arg("30");
        let e = panic_of(|| {
            run_within(c, "", Duration::from_millis(200));
        });
        assert!(e.contains("\"sleep\" \"30\" did not finish within"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(10));

        let mut child = Command::new("sleep").arg("30").spawn().expect("sleep");
        let e = panic_of(|| {
            wait_within(&mut child, "a sleep", Duration::from_millis(200));
        });
        assert!(e.contains("a sleep did not end within"), "{e}");
        assert!(
            child.try_wait().expect("try_wait").is_some(),
            "the child was killed and reaped"
        );
    }

    /// A clean-up never panics: an overrunning one is killed at its limit, a missing
    /// program is skipped.
    #[test]
    fn a_clean_up_that_overruns_is_killed_and_a_missing_one_skipped() {
        let start = Instant::now();
        let mut sleep = Command::new("sleep");
        sleep.arg("30");
        clean_up_within(sleep, Duration::from_millis(200));
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        clean_up(Command::new("no-such-program-for-ksm-tests"));
    }
}
