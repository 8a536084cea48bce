//! Yubico's own validation clients, unmodified, against a real `ksm serve --val-db-url` on
//! the real PostgreSQL (issue 22, item 1): `ykclient` (the C client), the Python
//! `yubico-client`, and `pam_yubico` through `pamtester`, with OTPs from Yubico's
//! `ykgenerate` and the client id and key printed by `ksm val add-client`. Each client
//! signs its requests and checks the answers' signatures with that key; a client given the
//! wrong key refuses the answer, which shows the check is made.
//!
//! The statuses, and which client shows each:
//!
//! | status | clients | how |
//! |--------|---------|-----|
//! | `OK` | all three | a fresh OTP |
//! | `REPLAYED_OTP` | all three | the same OTP again |
//! | `BAD_OTP` | all three | an OTP under another AES key; pam_yubico: a revoked YubiKey |
//! | `BAD_SIGNATURE` | Python (the status), ykclient and pam_yubico (refuse the answer) | the client signs with the wrong key |
//! | `OPERATION_NOT_ALLOWED` | all three | the client's row made inactive |
//! | `NO_SUCH_CLIENT` | Python (its `InvalidClientIdError`), ykclient | an id the table does not have |
//! | `MISSING_PARAMETER` | Python | id 0 (ykclient and pam_yubico refuse to send one) |
//! | `REPLAYED_REQUEST` | Python | the same OTP and nonce twice (its nonce source made to repeat) |
//! | `BACKEND_ERROR` | all three | a database that takes no writes, as a standby |
//! | `NOT_ENOUGH_ANSWERS` | none | never answered: see `no_sync_level_is_short_of_answers` |
//!
//! A client not installed fails the test under `CI=true` (`.ci/run` installs all three);
//! elsewhere it is skipped, saying so.
#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use e2e_tests::{get, listening_addr, metric};
use test_support::db::{PgReadOnlyRole, PgSchema};
use test_support::val_clients::{
    have_ykclient, pamtester, python_client, python_with_yubico_client, ykclient, Client,
    PythonOptions,
};
use ykval::sign::{verify, ClientKey};

const KSM: &str = env!("CARGO_BIN_EXE_ksm");

/// The YubiKey the demo's soft HSM holds (fixtures/otp-vectors.json, YubiKey 0).
const PUBLIC_ID: &str = "ccccdeulfbvj";
const AES_KEY: &str = "708dabb7fcdab9536fe4fb6f0df4a8ae";
const UID: &str = "4f27a712b157";
/// A key that is no client's.
const WRONG_KEY: &str = "d3JvbmdrZXl3cm9uZ2tleXdyb25na2V5";

/// An OTP of the demo's YubiKey with counter `counter`, by `ykgenerate`.
fn otp(counter: u16) -> String {
    test_support::ykgenerate(PUBLIC_ID, AES_KEY, UID, counter, 0x1234, 0x56, 0)
}

/// A `ksm serve --demo --val-db-url` on a port of its own, killed when dropped.
struct Validator {
    child: Child,
    addr: SocketAddr,
    url: String,
}

impl Validator {
    fn start(db_url: &str) -> Validator {
        let mut child = Command::new(KSM)
            .args(["serve", "--demo", "--port", "0", "--val-db-url", db_url])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr: SocketAddr = listening_addr(&mut child);
        Validator {
            child,
            addr,
            url: format!("http://{addr}/wsapi/2.0/verify"),
        }
    }
}

impl Drop for Validator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ksm(args: &[&str]) -> String {
    let o = Command::new(KSM).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "ksm {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// A counter database with its tables, and a client made by `ksm val add-client`: its id
/// and key as printed.
fn database() -> (PgSchema, String, String) {
    let pg = PgSchema::new();
    ksm(&["val", "db-init", &pg.url()]);
    let line = ksm(&["val", "add-client", &pg.url(), "--email", "ssh@example.org"]);
    let (id, key) = line.trim_end().split_once(',').unwrap();
    (pg, id.to_string(), key.to_string())
}

/// Whether the signature of `raw` (an answer's lines) is right under `key`.
fn signed_with(raw: &str, key: &ClientKey) -> bool {
    let pairs: Vec<(&str, &str)> = raw
        .trim_end()
        .split("\r\n")
        .filter_map(|l| l.split_once('='))
        .collect();
    let h = pairs.iter().find(|(k, _)| *k == "h").unwrap().1;
    let rest: Vec<(&str, &str)> = pairs.into_iter().filter(|(k, _)| *k != "h").collect();
    verify(&rest, key, h)
}

/// `OK` for a fresh OTP and `REPLAYED_OTP` for it again, through each client, each checking
/// the answer's signature with the key `add-client` printed.
#[test]
fn every_client_gets_ok_once_then_replayed_otp() {
    let (pg, id, key) = database();
    let v = Validator::start(&pg.url());
    let c = Client {
        url: &v.url,
        id: &id,
        key: Some(&key),
    };
    let o = otp(1);
    if let Some(first) = ykclient(c, &o) {
        assert_eq!(first.status, "OK", "{}", first.output);
        assert!(first.accepted, "{}", first.output);
        let again = ykclient(c, &o).unwrap();
        assert_eq!(again.status, "REPLAYED_OTP", "{}", again.output);
        assert!(!again.accepted);
    }
    let o = otp(2);
    if let Some(a) = python_client(
        c,
        &o,
        PythonOptions {
            timestamp: true,
            ..PythonOptions::default()
        },
    ) {
        let ok = &a[0];
        assert_eq!(ok.answer.status, "OK", "{}", ok.answer.output);
        assert!(ok.answer.accepted);
        let field = |name: &str| {
            ok.fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(field("sessioncounter").as_deref(), Some("2"));
        assert_eq!(field("sessionuse").as_deref(), Some("0"));
        assert_eq!(
            field("timestamp").as_deref(),
            Some(&*(0x56_1234u32).to_string())
        );
        assert_eq!(field("sl").as_deref(), Some("100"));
        let again = &python_client(c, &o, PythonOptions::default()).unwrap()[0];
        assert_eq!(
            again.answer.status, "REPLAYED_OTP",
            "{}",
            again.answer.output
        );
        assert!(
            again.answer.output.contains("StatusCodeError"),
            "the client's own verdict: {}",
            again.answer.output
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let o = otp(3);
    if let Some(login) = pamtester(dir.path(), c, "root", PUBLIC_ID, &o) {
        assert_eq!(login.status, "OK", "{}", login.output);
        assert!(login.accepted, "{}", login.output);
        let again = pamtester(dir.path(), c, "root", PUBLIC_ID, &o).unwrap();
        assert_eq!(again.status, "REPLAYED_OTP", "{}", again.output);
        assert!(!again.accepted, "a replayed OTP logs in: {}", again.output);
    }
}

/// `BAD_OTP`: an OTP of the demo's public id under another AES key (all three clients),
/// and a YubiKey revoked with `ksm val revoke` (pam_yubico: the login that revoking stops).
#[test]
fn a_forged_otp_or_a_revoked_yubikey_is_bad_otp() {
    let (pg, id, key) = database();
    let v = Validator::start(&pg.url());
    let c = Client {
        url: &v.url,
        id: &id,
        key: Some(&key),
    };
    let forged = test_support::ykgenerate(
        PUBLIC_ID,
        "00112233445566778899aabbccddeeff",
        UID,
        9,
        0x1234,
        0x56,
        0,
    );
    if let Some(a) = ykclient(c, &forged) {
        assert_eq!(a.status, "BAD_OTP", "{}", a.output);
        assert!(!a.accepted);
    }
    if let Some(a) = python_client(c, &forged, PythonOptions::default()) {
        assert_eq!(a[0].answer.status, "BAD_OTP", "{}", a[0].answer.output);
        assert!(!a[0].answer.accepted);
    }
    let dir = tempfile::tempdir().unwrap();
    if let Some(a) = pamtester(dir.path(), c, "root", PUBLIC_ID, &forged) {
        assert_eq!(a.status, "BAD_OTP", "{}", a.output);
        assert!(!a.accepted);
    }
    // Revoked: the next OTP, good as it is, no longer logs in; enabled again, it does.
    ksm(&["val", "revoke", &pg.url(), PUBLIC_ID]);
    if let Some(a) = pamtester(dir.path(), c, "root", PUBLIC_ID, &otp(10)) {
        assert_eq!(a.status, "BAD_OTP", "{}", a.output);
        assert!(!a.accepted, "a revoked YubiKey logs in: {}", a.output);
        ksm(&["val", "revoke", "--enable", &pg.url(), PUBLIC_ID]);
        let back = pamtester(dir.path(), c, "root", PUBLIC_ID, &otp(11)).unwrap();
        assert_eq!(back.status, "OK", "{}", back.output);
        assert!(back.accepted);
    }
}

/// A client that signs with the wrong key: the validator answers `BAD_SIGNATURE`, signed
/// with the client's real key, so the client (holding the wrong one) refuses the answer.
#[test]
fn a_client_with_the_wrong_key_gets_bad_signature_and_refuses_the_answer() {
    let (pg, id, key) = database();
    let v = Validator::start(&pg.url());
    let wrong = Client {
        url: &v.url,
        id: &id,
        key: Some(WRONG_KEY),
    };
    let real = ClientKey::from_base64(&key).unwrap();
    if let Some(a) = python_client(wrong, &otp(1), PythonOptions::default()) {
        let a = &a[0];
        assert_eq!(
            a.sent_status.as_deref(),
            Some("BAD_SIGNATURE"),
            "{}",
            a.answer.output
        );
        assert_eq!(a.answer.status, "SIGNATURE_MISMATCH", "{}", a.answer.output);
        assert!(
            signed_with(&a.raw, &real),
            "signed with the client's key: {}",
            a.raw
        );
    }
    if let Some(a) = ykclient(wrong, &otp(2)) {
        assert_eq!(a.status, "BAD_SERVER_SIGNATURE", "{}", a.output);
        assert!(!a.accepted);
    }
    let dir = tempfile::tempdir().unwrap();
    if let Some(a) = pamtester(dir.path(), wrong, "root", PUBLIC_ID, &otp(3)) {
        assert_eq!(a.status, "BAD_SERVER_SIGNATURE", "{}", a.output);
        assert!(!a.accepted);
    }
    // None of it used up an OTP: the next one is OK.
    if let Some(a) = ykclient(
        Client {
            key: Some(&key),
            ..wrong
        },
        &otp(4),
    ) {
        assert_eq!(a.status, "OK", "{}", a.output);
    }
}

/// `OPERATION_NOT_ALLOWED` for a client whose row is inactive (signed with its key, which
/// each client checks), and `NO_SUCH_CLIENT` for an id the table does not have.
#[test]
fn an_inactive_client_is_not_allowed_and_an_unknown_one_does_not_exist() {
    let (pg, id, key) = database();
    let v = Validator::start(&pg.url());
    let c = Client {
        url: &v.url,
        id: &id,
        key: Some(&key),
    };
    pg.sql(&format!(
        "UPDATE clients SET active = FALSE WHERE id = {id}"
    ));
    if let Some(a) = ykclient(c, &otp(1)) {
        assert_eq!(a.status, "OPERATION_NOT_ALLOWED", "{}", a.output);
        assert!(!a.accepted);
    }
    if let Some(a) = python_client(c, &otp(2), PythonOptions::default()) {
        assert_eq!(
            a[0].answer.status, "OPERATION_NOT_ALLOWED",
            "{}",
            a[0].answer.output
        );
    }
    let dir = tempfile::tempdir().unwrap();
    if let Some(a) = pamtester(dir.path(), c, "root", PUBLIC_ID, &otp(3)) {
        assert_eq!(a.status, "OPERATION_NOT_ALLOWED", "{}", a.output);
        assert!(!a.accepted);
    }

    // An unknown id: the validator has no key to sign with (yubikey-val signs with the
    // empty key), so a client that checks signatures cannot take the answer as genuine;
    // without a key the Python client reports it as its own InvalidClientIdError.
    let unknown = Client {
        url: &v.url,
        id: "4242",
        key: None,
    };
    if let Some(a) = python_client(unknown, &otp(4), PythonOptions::default()) {
        assert_eq!(
            a[0].answer.status, "NO_SUCH_CLIENT",
            "{}",
            a[0].answer.output
        );
        assert!(
            a[0].answer.output.contains("InvalidClientIdError"),
            "{}",
            a[0].answer.output
        );
        assert!(signed_with(&a[0].raw, &ClientKey::empty()), "{}", a[0].raw);
    }
    if let Some(a) = ykclient(unknown, &otp(5)) {
        assert_eq!(a.status, "NO_SUCH_CLIENT", "{}", a.output);
        assert!(!a.accepted);
    }
}

/// `MISSING_PARAMETER` (id 0, which the Python client sends as it is given) and
/// `REPLAYED_REQUEST` (the same OTP with the same nonce, the Python client's nonce source
/// made to repeat): the two statuses only a client that can be made to send such a request
/// shows. ykclient and pam_yubico refuse an id of 0 themselves and draw a new nonce for
/// every request.
#[test]
fn python_shows_missing_parameter_and_replayed_request() {
    let (pg, id, key) = database();
    let v = Validator::start(&pg.url());
    let zero = Client {
        url: &v.url,
        id: "0",
        key: None,
    };
    if let Some(a) = python_client(zero, &otp(1), PythonOptions::default()) {
        assert_eq!(
            a[0].answer.status, "MISSING_PARAMETER",
            "{}",
            a[0].answer.output
        );
        assert!(signed_with(&a[0].raw, &ClientKey::empty()), "{}", a[0].raw);
    }
    let c = Client {
        url: &v.url,
        id: &id,
        key: Some(&key),
    };
    if let Some(a) = python_client(
        c,
        &otp(2),
        PythonOptions {
            same_nonce_twice: true,
            ..PythonOptions::default()
        },
    ) {
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].answer.status, "OK", "{}", a[0].answer.output);
        assert_eq!(
            a[1].answer.status, "REPLAYED_REQUEST",
            "{}",
            a[1].answer.output
        );
        assert!(!a[1].answer.accepted);
    }
}

/// `BACKEND_ERROR` when the database takes no writes (a PostgreSQL role whose transactions
/// are read-only, as on a standby): the client row is read, the first write (here the new
/// YubiKey's row) fails, and every client gets `BACKEND_ERROR` signed with its key, never an
/// `OK`. `/health` and `ksm_val_db_up` say the database takes no writes (seen failing when
/// they only read it: `ok`, 1).
#[test]
fn a_database_that_takes_no_writes_is_backend_error_for_every_client() {
    let (pg, id, key) = database();
    let role = PgReadOnlyRole::new(&pg);
    let v = Validator::start(role.url());
    let c = Client {
        url: &v.url,
        id: &id,
        key: Some(&key),
    };
    if let Some(a) = ykclient(c, &otp(1)) {
        assert_eq!(a.status, "BACKEND_ERROR", "{}", a.output);
        assert!(!a.accepted);
    }
    if let Some(a) = python_client(c, &otp(2), PythonOptions::default()) {
        assert_eq!(
            a[0].answer.status, "BACKEND_ERROR",
            "{}",
            a[0].answer.output
        );
    }
    let dir = tempfile::tempdir().unwrap();
    if let Some(a) = pamtester(dir.path(), c, "root", PUBLIC_ID, &otp(3)) {
        assert_eq!(a.status, "BACKEND_ERROR", "{}", a.output);
        assert!(!a.accepted);
    }
    assert_eq!(
        pg.sql("SELECT COUNT(*) FROM yubikeys"),
        "0\n",
        "nothing was recorded"
    );
    // The database reads fine, yet no OTP can verify: `/health` and the metric say so.
    let health: serde_json::Value = serde_json::from_str(&get(v.addr, "/health").body).unwrap();
    assert_eq!(health["validation"]["database"], "read-only", "{health}");
    let error = health["validation"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("takes no writes: a standby? validators write to the primary"),
        "{health}"
    );
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(metric(v.addr, "ksm_val_db_up", ""), Some(0));
}

/// `NOT_ENOUGH_ANSWERS` is yubikey-val's answer when fewer of its sync peers than `sl`
/// asks for confirm an OTP in time. Here every validator writes to the one database, so an
/// `OK` is on every validator at once: `sl=100` (the most a client can ask) is met, and the
/// answer says `sl=100`. No client can make this server answer `NOT_ENOUGH_ANSWERS`.
#[test]
fn no_sync_level_is_short_of_answers() {
    let (pg, id, key) = database();
    let v = Validator::start(&pg.url());
    let c = Client {
        url: &v.url,
        id: &id,
        key: Some(&key),
    };
    if let Some(a) = python_client(
        c,
        &otp(1),
        PythonOptions {
            sl: Some(100),
            ..PythonOptions::default()
        },
    ) {
        assert_eq!(a[0].answer.status, "OK", "{}", a[0].answer.output);
        assert!(a[0].fields.contains(&("sl".to_string(), "100".to_string())));
    }
}

/// Under CI every client is there (a skip would hide that the test never ran).
#[test]
fn under_ci_every_client_is_installed() {
    if std::env::var("CI").as_deref() != Ok("true") {
        return;
    }
    assert!(have_ykclient());
    assert!(python_with_yubico_client().is_some());
    assert!(test_support::val_clients::have_pam());
}

/// Protocol 1.0's path (`/wsapi/verify`), as yubikey-val serves it: the answer carries no
/// `otp`, `nonce` or `sl`, and is still signed, which the Python client checks.
#[test]
fn the_protocol_1_0_path_serves_the_clients_too() {
    let (pg, id, key) = database();
    let v = Validator::start(&pg.url());
    let url = v.url.replace("/wsapi/2.0/verify", "/wsapi/verify");
    let c = Client {
        url: &url,
        id: &id,
        key: Some(&key),
    };
    if let Some(a) = python_client(c, &otp(1), PythonOptions::default()) {
        assert_eq!(a[0].answer.status, "OK", "{}", a[0].answer.output);
        assert!(a[0].answer.accepted);
        assert!(!a[0].raw.contains("nonce="), "{}", a[0].raw);
    }
    // ykclient is a client of protocol 2.0 only: it refuses the 1.0 answer, which lacks
    // the lines it checks, with an error of its own (code 104).
    if let Some(a) = ykclient(c, &otp(2)) {
        assert!(!a.accepted, "{}", a.output);
        assert_eq!(
            a.status, "HMAC signature validation/generation error",
            "{}",
            a.output
        );
    }
}
