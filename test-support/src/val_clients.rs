//! Yubico's validation clients, unmodified, run the way their users run them: one function
//! per client, each asking a validator (YK-VAL 2.0, `…/wsapi/2.0/verify`) about one OTP and
//! returning what the client made of the answer.
//!
//! - [`ykclient`]: the C client's command (`ykclient`, Debian `libykclient-dev`);
//! - [`python_client`]: the Python client (PyPI `yubico-client`), through
//!   `tests/python/yubico_client_verify.py`, which only watches it;
//! - [`pamtester`]: `pam_yubico` (Debian `libpam-yubico`) in a PAM stack run by `pamtester`.
//!
//! Each client signs its request with the client key when it has one, and checks the
//! signature of the answer: a client given the wrong key reports the answer as forged, which
//! is how the tests see that the clients really check.
//!
//! A client that is not installed fails the test under `CI=true` (as `.ci/run` sets it, and
//! installs every one of them); elsewhere the function says loudly that it skipped and
//! returns `None`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::bounded::run_bounded;

/// A client's view of one validator: where, which client id, and the client key (base64,
/// as `ykval-gen-clients` prints it), if the client should sign and check signatures.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    /// The verify URL (`http://127.0.0.1:PORT/wsapi/2.0/verify`).
    pub url: &'a str,
    /// The client id, as given to the client (a number, or whatever a test wants to send).
    pub id: &'a str,
    /// The client key, base64.
    pub key: Option<&'a str>,
}

/// What a client made of one verification.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status the client reports: the validator's (`OK`, `BAD_OTP`, …), or the client's
    /// own word for an answer it refused (`BAD_SERVER_SIGNATURE` from ykclient and
    /// pam_yubico; `SIGNATURE_MISMATCH` from the Python client).
    pub status: String,
    /// Whether the client accepted the OTP.
    pub accepted: bool,
    /// Everything the client printed or logged, for assertion messages.
    pub output: String,
}

/// Whether this run must have every client: under `CI=true` a missing one fails the test.
fn required() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// A client that is not here: a failure under CI, a loud skip elsewhere.
fn missing(what: &str) {
    if required() {
        panic!("{what} (CI=true: a skip is a failure here; .ci/run installs it)");
    }
    // Written to the process's stderr directly: the harness captures eprintln!.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {what}");
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// The status in a line as ykclient's `ykclient_strerror` words it: `Success`, a text
/// ending in the status in brackets (`Yubikey OTP was bad (BAD_OTP)`), or the text of an
/// error of the client's own.
fn strerror_status(text: &str) -> Option<String> {
    let text = text.trim();
    if text == "Success" {
        return Some("OK".into());
    }
    // Errors of the client's own (a failed HMAC computation, a parse error) have no status
    // in brackets: the text stands for itself.
    let status = text
        .strip_suffix(')')
        .and_then(|inner| inner.rfind('(').map(|open| &inner[open + 1..]))
        .unwrap_or(text);
    Some(status.to_string())
}

/// Whether Yubico's C client is installed; if not, fails under CI or says it skipped.
pub fn have_ykclient() -> bool {
    if on_path("ykclient") {
        return true;
    }
    missing("ykclient is not installed (apt-get install libykclient-dev)");
    false
}

/// Yubico's C client: `ykclient --debug --url URL [--apikey KEY] ID OTP`. Its exit status
/// says accepted (0) or not; `--debug` makes it print the status it got (`Verification
/// output (N): …`). `None` where it is not installed ([`have_ykclient`]).
pub fn ykclient(client: Client<'_>, otp: &str) -> Option<Answer> {
    if !have_ykclient() {
        return None;
    }
    let mut cmd = Command::new("ykclient");
    cmd.args(["--debug", "--url", client.url]);
    if let Some(key) = client.key {
        // The C client takes its key only in argv; these are test keys.
        cmd.args(["--apikey", key]);
    }
    cmd.args([client.id, otp]);
    let (status, out, err) = run_bounded(cmd, "");
    let output = format!("{out}{err}");
    let reported = output
        .lines()
        .find_map(|l| l.strip_prefix("Verification output ("))
        .and_then(|rest| rest.split_once("): "))
        .and_then(|(_, text)| strerror_status(text))
        .unwrap_or_else(|| panic!("ykclient printed no verification output:\n{output}"));
    Some(Answer {
        status: reported,
        accepted: status.success(),
        output,
    })
}

/// The interpreter that has Yubico's Python client: `KSM_PYTHON` (the virtualenv `.ci/run`
/// makes) or `python3`. `None` where `yubico_client` is missing for it (a failure under CI).
pub fn python_with_yubico_client() -> Option<String> {
    let python = std::env::var("KSM_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut check = Command::new(&python);
    check.args(["-c", "import yubico_client"]);
    let found = check
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some(python);
    }
    missing(&format!(
        "Yubico's Python client is not installed for {python}: \
         `python3 -m venv VENV && VENV/bin/pip install yubico-client==1.13.0`, then \
         KSM_PYTHON=VENV/bin/python"
    ));
    None
}

/// How the Python client is asked.
#[derive(Debug, Clone, Copy, Default)]
pub struct PythonOptions {
    /// `timestamp=1`: the answer carries `timestamp`, `sessioncounter`, `sessionuse`.
    pub timestamp: bool,
    /// `sl=N`.
    pub sl: Option<u8>,
    /// Verify twice with one nonce (REPLAYED_REQUEST): two answers come back.
    pub same_nonce_twice: bool,
}

/// One verification as the Python client saw it.
#[derive(Debug, Clone)]
pub struct PythonAnswer {
    /// [`Answer::status`]: the answer's `status=` if the client's signature check passed (or
    /// it had no key), `SIGNATURE_MISMATCH` if the client refused the answer's signature.
    pub answer: Answer,
    /// The `status=` of the answer the client was handed, whatever the client made of its
    /// signature (`None`: no answer reached it).
    pub sent_status: Option<String>,
    /// That answer as it came, for checking its signature by other means.
    pub raw: String,
    /// The answer's lines, when the client accepted the OTP (`otp`, `nonce`, `sl`, `t`,
    /// `status`, and with `timestamp` the three counters).
    pub fields: Vec<(String, String)>,
}

/// Yubico's Python client, through `tests/python/yubico_client_verify.py`; the key goes in
/// the environment. One answer per verification (two with
/// [`PythonOptions::same_nonce_twice`]). `None` where the client is not installed.
pub fn python_client(
    client: Client<'_>,
    otp: &str,
    opts: PythonOptions,
) -> Option<Vec<PythonAnswer>> {
    let python = python_with_yubico_client()?;
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/python/yubico_client_verify.py");
    let mut cmd = Command::new(python);
    cmd.arg(&script).args([client.url, client.id, otp]);
    if opts.timestamp {
        cmd.arg("--timestamp");
    }
    if let Some(sl) = opts.sl {
        cmd.args(["--sl", &sl.to_string()]);
    }
    if opts.same_nonce_twice {
        cmd.arg("--same-nonce-twice");
    }
    cmd.env_remove("YUBICO_CLIENT_KEY");
    if let Some(key) = client.key {
        cmd.env("YUBICO_CLIENT_KEY", key);
    }
    let (status, out, err) = run_bounded(cmd, "");
    assert!(
        status.success(),
        "the Python client's script failed:\n{out}{err}"
    );
    let answers = out
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{e}: not a JSON line: {line}\n{err}"));
            let verdict = v["verdict"].as_str().unwrap_or_default();
            let status = match v["signature"].as_str() {
                Some("bad") => "SIGNATURE_MISMATCH".to_string(),
                _ => v["status"].as_str().unwrap_or("NO_ANSWER").to_string(),
            };
            let fields = v["fields"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            PythonAnswer {
                sent_status: v["status"].as_str().map(str::to_string),
                raw: v["raw"].as_str().unwrap_or_default().to_string(),
                answer: Answer {
                    status,
                    accepted: verdict == "accepted",
                    output: format!("{line}\n{err}"),
                },
                fields,
            }
        })
        .collect();
    Some(answers)
}

/// Whether pam_yubico and pamtester are installed and the test runs as root (it mounts its
/// own `/etc/pam.d`, see [`pamtester`]); if not, fails under CI or says it skipped.
pub fn have_pam() -> bool {
    let module = [
        "/lib/security",
        "/usr/lib/security",
        "/lib/x86_64-linux-gnu/security",
        "/usr/lib/x86_64-linux-gnu/security",
    ]
    .iter()
    .any(|d| Path::new(d).join("pam_yubico.so").is_file());
    if !module {
        missing("pam_yubico is not installed (apt-get install libpam-yubico)");
        return false;
    }
    if !on_path("pamtester") {
        missing("pamtester is not installed (apt-get install pamtester)");
        return false;
    }
    if !rustix::process::geteuid().is_root() {
        missing("the pam_yubico test needs root (it mounts a private /etc/pam.d)");
        return false;
    }
    true
}

/// `pam_yubico` asked by `pamtester` to let `user` in with `otp` typed as the password: the
/// PAM stack is one line, `auth required pam_yubico.so id=… key=… urllist=URL authfile=…`,
/// with `user:public_id` in the authfile, as an SSH server would have it.
///
/// pamtester names a PAM service, which PAM reads from `/etc/pam.d`. So that the test
/// writes nothing there, the service file is written in `dir`, and pamtester runs in a
/// mount namespace of its own (`unshare --mount`) where `dir` is bind-mounted over
/// `/etc/pam.d`: only pamtester sees it, and it goes away with it. pam_yubico's `debug`
/// log (in `dir`) gives the status ykclient reported to it (`ykclient return value (N):
/// …`). `None` where pam_yubico, pamtester or root is missing ([`have_pam`]).
pub fn pamtester(
    dir: &Path,
    client: Client<'_>,
    user: &str,
    public_id: &str,
    otp: &str,
) -> Option<Answer> {
    use std::os::unix::fs::PermissionsExt;
    if !have_pam() {
        return None;
    }
    let pamd = dir.join("pam.d");
    std::fs::create_dir_all(&pamd).expect("make the private pam.d");
    let authfile = dir.join("authorized_yubikeys");
    std::fs::write(&authfile, format!("{user}:{public_id}\n")).expect("write the authfile");
    let log = dir.join("pam_yubico.log");
    // pam_yubico appends to its debug file only if it exists.
    std::fs::write(&log, "").expect("make the debug log");
    let mut line = format!(
        "auth required pam_yubico.so id={} urllist={} authfile={} debug debug_file={}",
        client.id,
        client.url,
        authfile.display(),
        log.display()
    );
    if let Some(key) = client.key {
        line.push_str(&format!(" key={key}"));
    }
    let service = pamd.join("ksm-test");
    std::fs::write(
        &service,
        format!("{line}\naccount required pam_permit.so\n"),
    )
    .expect("write the PAM service");
    std::fs::set_permissions(&service, std::fs::Permissions::from_mode(0o600))
        .expect("chmod the PAM service");
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$1" /etc/pam.d && exec pamtester -v ksm-test "$2" authenticate"#)
        .args(["sh"])
        .arg(&pamd)
        .arg(user);
    let (status, out, err) = run_bounded(cmd, &format!("{otp}\n"));
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let output = format!("{out}{err}\n--- pam_yubico debug log ---\n{logged}");
    let reported = logged
        .lines()
        .find_map(|l| l.split_once("ykclient return value (").map(|(_, r)| r))
        .and_then(|rest| rest.split_once("): "))
        .and_then(|(_, text)| strerror_status(text))
        .unwrap_or_else(|| "NO_ANSWER".into());
    Some(Answer {
        status: reported,
        accepted: status.success(),
        output,
    })
}
