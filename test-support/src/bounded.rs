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
pub fn run_bounded(mut cmd: Command, stdin: &str) -> (ExitStatus, String, String) {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
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
    let status = match rx.recv_timeout(RUN_LIMIT) {
        Ok(s) => s.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => {
            kill(pid);
            panic!("{what} did not finish within {RUN_LIMIT:?}");
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
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap_or_else(|e| panic!("{what}: {e}")) {
            return s;
        }
        if start.elapsed() >= RUN_LIMIT {
            kill(child.id());
            let _ = child.wait();
            panic!("{what} did not end within {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
