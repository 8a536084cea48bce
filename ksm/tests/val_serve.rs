//! `ksm serve --val-db-url`: the YK-VAL verify API of real `ksm serve` processes on a real
//! PostgreSQL, OTPs from Yubico's `ykgenerate` (issue 22, items 2 and 3, and the database
//! down). Requests are signed with `ykval`'s code and, once, with Python's `hmac` and
//! `base64`, and an answer's signature is checked by Python too, so a mistake made the same
//! way in signing and checking cannot pass.
#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use e2e_tests::{get, listening_addr, metric, raw};
use test_support::bounded::{kill, wait_bounded, RUN_LIMIT};
use test_support::db::PgSchema;
use ykval::sign::{sign, verify, ClientKey};

const KSM: &str = env!("CARGO_BIN_EXE_ksm");
/// The client the tests make, and its key (base64, as `clients.secret` holds it).
const CLIENT: u32 = 4;
const SECRET: &str = "mG5be6ZJU1qBGz24yPh/ESM3UdU=";

/// A `ksm serve --demo` validator (the demo's soft HSM holds the fixture keys), killed when
/// dropped.
struct Validator {
    child: Child,
    addr: SocketAddr,
    /// Its log, read as it comes (a full pipe would stop the daemon).
    log: Option<std::thread::JoinHandle<String>>,
}

impl Validator {
    fn start(val_db_url: &str, extra: &[&str]) -> Validator {
        let mut child = Command::new(KSM)
            .args([
                "-v",
                "serve",
                "--demo",
                "--port",
                "0",
                "--val-db-url",
                val_db_url,
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let addr = listening_addr(&mut child);
        let mut stderr = child.stderr.take().unwrap();
        let log = std::thread::spawn(move || {
            let mut log = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut log);
            log
        });
        Validator {
            child,
            addr,
            log: Some(log),
        }
    }

    /// Sends a verify request on protocol 2.0 with `params`, signed; returns the answer's
    /// lines by name (and checks the answer's signature).
    fn verify(&self, params: &[(&str, String)]) -> BTreeMap<String, String> {
        let key = ClientKey::from_base64(SECRET).unwrap();
        let query = signed_form(params);
        let a = get(self.addr, &format!("/wsapi/2.0/verify?{query}"));
        assert_eq!(a.status, 200, "{}", a.body);
        answer_lines(&a.body, &key)
    }

    /// Stops it; returns its log.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log.take().unwrap().join().unwrap()
    }
}

impl Drop for Validator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An answer's lines by name, after checking that it ends as yubikey-val's do and that `h`
/// signs the rest under `key`.
/// `params` and their signature under the test client's key, form-encoded.
fn signed_form(params: &[(&str, String)]) -> String {
    let key = ClientKey::from_base64(SECRET).unwrap();
    let mut p: Vec<(&str, String)> = params.to_vec();
    p.push(("h", sign(params, &key)));
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(p.iter().map(|(k, v)| (*k, v.as_str())))
        .finish()
}

fn answer_lines(body: &str, key: &ClientKey) -> BTreeMap<String, String> {
    assert!(body.ends_with("\r\n\r\n"), "{body:?}");
    let pairs: Vec<(String, String)> = body
        .trim_end()
        .split("\r\n")
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    assert_eq!(pairs[0].0, "h", "{body}");
    let rest: Vec<(&str, &str)> = pairs[1..]
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let status = rest.iter().find(|(k, _)| *k == "status").unwrap().1;
    // Answers given before the client is known are signed with the empty key (a
    // BACKEND_ERROR may come before or after).
    let signed_by = |k: &ClientKey| verify(&rest, k, &pairs[0].1);
    let good = match status {
        "MISSING_PARAMETER" | "NO_SUCH_CLIENT" => signed_by(&ClientKey::empty()),
        "BACKEND_ERROR" => signed_by(key) || signed_by(&ClientKey::empty()),
        _ => signed_by(key),
    };
    assert!(good, "bad answer signature: {body}");
    pairs.into_iter().collect()
}

/// The fixture YubiKey the demo serves (`ccccdeulfbvj`), as `ykgenerate` makes its OTPs.
fn otp(counter: u16, use_: u8) -> String {
    test_support::ykgenerate(
        "ccccdeulfbvj",
        "708dabb7fcdab9536fe4fb6f0df4a8ae",
        "4f27a712b157",
        counter,
        0x1234,
        0x56,
        use_,
    )
}

/// A fresh counter database with `ksm val db-init` and the test client in it.
fn database() -> PgSchema {
    let pg = PgSchema::new();
    let out = Command::new(KSM)
        .args(["val", "db-init", &pg.url()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pg.sql(&format!(
        "INSERT INTO clients (id, active, created, secret, email, notes, otp) VALUES ({CLIENT}, true, 1700000000, '{SECRET}', 'val@example.org', '', '');"
    ));
    pg
}

fn params(otp: &str, nonce: &str) -> Vec<(&'static str, String)> {
    vec![
        ("id", CLIENT.to_string()),
        ("otp", otp.to_string()),
        ("nonce", nonce.to_string()),
    ]
}

/// Issue 22, item 2: two validators on one PostgreSQL, each of 20 fresh OTPs sent to both
/// 25 times at once: exactly one `OK` per OTP over all 1,000 answers, the rest
/// `REPLAYED_OTP` or `REPLAYED_REQUEST`. (Checked to fail with the counter write made a
/// read then an unconditional update: several `OK`s per OTP.)
#[test]
fn two_validators_on_one_postgresql_answer_ok_once_per_otp() {
    let pg = database();
    let a = Arc::new(Validator::start(&pg.url(), &[]));
    let b = Arc::new(Validator::start(&pg.url(), &[]));
    let mut replayed_requests = 0;
    for i in 0..20u16 {
        let otp = otp(i + 1, 0);
        let barrier = Arc::new(Barrier::new(50));
        let threads: Vec<_> = (0..50)
            .map(|j| {
                let v = if j % 2 == 0 { a.clone() } else { b.clone() };
                let (otp, barrier) = (otp.clone(), barrier.clone());
                // Five nonces among the 50 requests: the same request arrives again too.
                let nonce = format!("otp{i:02}nonce{:02}abcdefgh", j % 5);
                std::thread::spawn(move || {
                    barrier.wait();
                    v.verify(&params(&otp, &nonce))
                })
            })
            .collect();
        let answers: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
        for ans in &answers {
            *by_status.entry(ans["status"].clone()).or_default() += 1;
            assert_eq!(ans["otp"], otp);
        }
        assert_eq!(by_status.get("OK"), Some(&1), "OTP {i}: {by_status:?}");
        let others: usize = by_status
            .iter()
            .filter(|(s, _)| matches!(s.as_str(), "REPLAYED_OTP" | "REPLAYED_REQUEST"))
            .map(|(_, n)| n)
            .sum();
        assert_eq!(others, 49, "OTP {i}: {by_status:?}");
        replayed_requests += by_status.get("REPLAYED_REQUEST").copied().unwrap_or(0);
        let ok = answers.iter().find(|a| a["status"] == "OK").unwrap();
        assert_eq!(ok["sl"], "100");
    }
    // Nine of the 49 others carried the OK's nonce: some of them came after its write.
    assert!(replayed_requests > 0);
    let row =
        pg.sql("SELECT yk_counter, yk_use FROM yubikeys WHERE yk_publicname = 'ccccdeulfbvj';");
    assert_eq!(row.trim(), "20|0");
    let oks = |v: &Validator| {
        metric(
            v.addr,
            "ksm_verifications_total",
            &format!("client=\"{CLIENT}\",status=\"OK\""),
        )
        .unwrap_or(0)
    };
    assert_eq!(oks(&a) + oks(&b), 20);
    // Each validator's 500 answers are in its latency histogram, whatever their status.
    for v in [&a, &b] {
        let body = get(v.addr, "/metrics").body;
        assert!(
            body.contains("# TYPE ksm_verify_seconds histogram"),
            "{body}"
        );
        let buckets: Vec<u64> = body
            .lines()
            .filter(|l| l.starts_with("ksm_verify_seconds_bucket{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert!(buckets.len() > 1, "{body}");
        assert!(
            buckets.windows(2).all(|w| w[0] <= w[1]),
            "cumulative: {body}"
        );
        assert_eq!(buckets.last(), Some(&500), "the +Inf bucket: {body}");
        assert_eq!(metric(v.addr, "ksm_verify_seconds_count", ""), Some(500));
        let sum: f64 = body
            .lines()
            .find_map(|l| l.strip_prefix("ksm_verify_seconds_sum "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(sum > 0.0, "{body}");
    }
}

/// Issue 22, item 3: a `yubikeys` row written as yubikey-val writes it (counter 40) makes
/// an OTP of counter 39 `REPLAYED_OTP` and one of 41 `OK`; a revoke (`ksm val revoke`)
/// stops the key on both validators at once. Also the answer lines, `timestamp=1`, protocol
/// 1.0, a bad signature, an unknown and a disabled client, and the log line.
#[test]
fn a_row_written_by_yubikey_val_is_taken_over_and_a_revoke_stops_both_validators() {
    let pg = database();
    pg.sql("INSERT INTO yubikeys (active, created, modified, yk_publicname, yk_counter, yk_use, yk_low, yk_high, nonce, notes) VALUES (true, 1700000000, 1700000500, 'ccccdeulfbvj', 40, 7, 4660, 86, 'ykvalnonce0123456789', '');");
    let a = Validator::start(&pg.url(), &[]);
    let b = Validator::start(&pg.url(), &[]);

    let old = a.verify(&params(&otp(39, 9), "nonceaaaaaaaaaaaaaaa"));
    assert_eq!(old["status"], "REPLAYED_OTP");
    let new = otp(41, 0);
    let mut p = params(&new, "noncebbbbbbbbbbbbbbb");
    p.push(("timestamp", "1".into()));
    let ok = b.verify(&p);
    assert_eq!(ok["status"], "OK");
    let names: Vec<&str> = ok.keys().map(String::as_str).collect();
    let mut want = [
        "h",
        "t",
        "otp",
        "nonce",
        "sl",
        "timestamp",
        "sessioncounter",
        "sessionuse",
        "status",
    ];
    want.sort();
    assert_eq!(names, want);
    assert_eq!(
        (
            ok["timestamp"].as_str(),
            ok["sessioncounter"].as_str(),
            ok["sessionuse"].as_str()
        ),
        ("5640756", "41", "0")
    );
    // yubikey-val's `t`: 2026-12-07T04:30:00Z0123.
    let t = &ok["t"];
    assert_eq!((t.len(), &t[10..11], &t[19..21]), (24, "T", "Z0"), "{t}");
    // The same OTP on the other validator, and the same request again.
    assert_eq!(
        a.verify(&params(&new, "noncecccccccccccccccc"))["status"],
        "REPLAYED_OTP"
    );
    assert_eq!(
        a.verify(&params(&new, "noncebbbbbbbbbbbbbbb"))["status"],
        "REPLAYED_REQUEST"
    );

    // Protocol 1.0: no nonce, no otp/nonce/sl lines.
    let v1 = get(
        a.addr,
        &format!("/wsapi/verify?id={CLIENT}&otp={}", otp(41, 1)),
    );
    let lines = answer_lines(&v1.body, &ClientKey::from_base64(SECRET).unwrap());
    assert_eq!(lines["status"], "OK");
    assert!(
        !lines.contains_key("otp") && !lines.contains_key("nonce") && !lines.contains_key("sl")
    );

    // A signature by another implementation: Python's hmac and base64.
    let fresh = otp(41, 2);
    let signed = format!("id={CLIENT}&nonce=noncepythonpython1&otp={fresh}");
    let py = Command::new("python3")
        .args([
            "-c",
            "import base64,hashlib,hmac,sys; print(base64.b64encode(hmac.new(base64.b64decode(sys.argv[1]), sys.argv[2].encode(), hashlib.sha1).digest()).decode())",
            SECRET,
            &signed,
        ])
        .output()
        .unwrap();
    let h = String::from_utf8(py.stdout).unwrap().trim().to_string();
    let query = format!(
        "{signed}&h={}",
        h.replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    );
    let by_python = get(b.addr, &format!("/wsapi/2.0/verify?{query}"));
    assert!(
        by_python.body.contains("\r\nstatus=OK\r\n"),
        "{}",
        by_python.body
    );
    // And Python checks the answer's signature: every line but h, sorted, joined with &.
    let check = Command::new("python3")
        .args([
            "-c",
            "import base64,hashlib,hmac,sys\nlines=[l for l in sys.argv[2].split('\\r\\n') if l]\nh=lines[0][2:]\nmsg='&'.join(sorted(lines[1:]))\nok=base64.b64encode(hmac.new(base64.b64decode(sys.argv[1]), msg.encode(), hashlib.sha1).digest()).decode()==h\nprint('good' if ok else 'bad')",
            SECRET,
            &by_python.body,
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&check.stdout).trim(), "good");
    // A wrong signature.
    let bad = get(b.addr, &format!("/wsapi/2.0/verify?id={CLIENT}&nonce=noncepythonpython2&otp={}&h=AAAAAAAAAAAAAAAAAAAAAAAAAAA%3D", otp(41, 3)));
    assert!(
        bad.body.contains("\r\nstatus=BAD_SIGNATURE\r\n"),
        "{}",
        bad.body
    );

    // Revoked: both validators refuse the key at once, whatever the counters.
    let revoke = |flags: &[&str]| {
        let out = Command::new(KSM)
            .args(["val", "revoke"])
            .args(flags)
            .args([pg.url().as_str(), "ccccdeulfbvj"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    revoke(&[]);
    assert_eq!(
        a.verify(&params(&otp(42, 0), "noncedddddddddddddddd"))["status"],
        "BAD_OTP"
    );
    assert_eq!(
        b.verify(&params(&otp(43, 0), "nonceeeeeeeeeeeeeeeee"))["status"],
        "BAD_OTP"
    );
    revoke(&["--enable"]);
    assert_eq!(
        b.verify(&params(&otp(43, 0), "nonceeeeeeeeeeeeeeeee"))["status"],
        "OK"
    );

    // Clients: unknown, disabled.
    let mut unknown = params(&otp(44, 0), "noncefffffffffffffff");
    unknown[0].1 = "99".into();
    assert_eq!(a.verify(&unknown)["status"], "NO_SUCH_CLIENT");
    pg.sql(&format!(
        "UPDATE clients SET active = false WHERE id = {CLIENT};"
    ));
    assert_eq!(
        a.verify(&params(&otp(44, 0), "noncegggggggggggggggg"))["status"],
        "OPERATION_NOT_ALLOWED"
    );
    // A missing nonce.
    assert_eq!(
        a.verify(&params(&otp(44, 0), ""))["status"],
        "MISSING_PARAMETER"
    );

    let log = a.stop();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(" verify ")).collect();
    assert!(
        lines.iter().any(|l| l.contains("client_id=4")
            && l.contains("public_id=ccccdeulfbvj")
            && l.contains("status=REPLAYED_OTP")),
        "{log}"
    );
    assert!(!log.contains(SECRET) && !log.contains(&new[12..]), "{log}");
    b.stop();
}

/// A verify POST is read as yubikey-val 2.41 reads it: the query string if it has any
/// parameter, else the form body, never the two merged, so a body field added to a signed
/// query is not read (merged, it was signed over too: `BAD_SIGNATURE`).
#[test]
fn a_verify_post_reads_the_query_or_else_the_body() {
    let pg = database();
    let v = Validator::start(&pg.url(), &[]);
    let key = ClientKey::from_base64(SECRET).unwrap();
    let post = |query: &str, body: &str| {
        let a = raw(
            v.addr,
            format!(
                "POST /wsapi/2.0/verify{query} HTTP/1.1\r\nHost: val\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        assert_eq!(a.status, 200, "{}", a.body);
        answer_lines(&a.body, &key)
    };
    // The body alone.
    let body = signed_form(&params(&otp(60, 0), "noncepostaaaaaaaaaaa"));
    assert_eq!(post("", &body)["status"], "OK");
    // A signed query, and a body asking for the timestamp: the body is not read.
    let query = signed_form(&params(&otp(61, 0), "noncepostbbbbbbbbbbb"));
    let ans = post(&format!("?{query}"), "timestamp=1");
    assert_eq!(ans["status"], "OK", "{ans:?}");
    assert!(!ans.contains_key("timestamp"), "{ans:?}");
}

/// The counter database unreachable, or slower than the request's deadline: `BACKEND_ERROR`,
/// never an `OK`; `/health` and `/metrics` say the database is down.
#[test]
fn a_database_down_or_too_slow_answers_backend_error() {
    // Nothing listens on the port: refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = Validator::start(
        &format!("postgresql://postgres@127.0.0.1:{port}/test"),
        &["--reqtimeout", "1"],
    );
    let ans = down.verify(&params(&otp(1, 0), "nonceaaaaaaaaaaaaaaa"));
    assert_eq!(ans["status"], "BACKEND_ERROR");
    assert_eq!(ans.len(), 3, "h, t and status only: {ans:?}");
    let health = get(down.addr, "/health").body;
    assert!(
        health.contains("\"validation\":{\"database\":\"down\""),
        "{health}"
    );
    assert_eq!(metric(down.addr, "ksm_val_db_up", ""), Some(0));
    // Ids no table vouches for share one series: made-up ids cannot grow the metrics.
    for id in 100..104 {
        let mut p = params(&otp(1, 0), "nonceaaaaaaaaaaaaaaa");
        p[0].1 = id.to_string();
        assert_eq!(down.verify(&p)["status"], "BACKEND_ERROR");
    }
    let metrics = get(down.addr, "/metrics").body;
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("ksm_verifications_total{"))
        .collect();
    assert_eq!(
        series,
        ["ksm_verifications_total{client=\"-\",status=\"BACKEND_ERROR\"} 5"]
    );
    let log = down.stop();
    assert!(log.contains("status=BACKEND_ERROR"), "{log}");

    // The table locked by another session past the deadline: the write cannot be made in
    // time, so no OK.
    let pg = database();
    let slow = Validator::start(&pg.url(), &["--reqtimeout", "1"]);
    assert_eq!(
        slow.verify(&params(&otp(5, 0), "nonceaaaaaaaaaaaaaaa"))["status"],
        "OK"
    );
    let mut locker = pg
        .psql()
        .args(["-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::{BufRead, Write};
        // psql's lines, read as they come, so that the wait for the lock is bounded.
        let out = locker.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        let mut stdin = locker.stdin.take().unwrap();
        writeln!(
            stdin,
            "BEGIN; LOCK TABLE yubikeys IN ACCESS EXCLUSIVE MODE; SELECT 'locked';"
        )
        .unwrap();
        let until = Instant::now() + RUN_LIMIT;
        loop {
            match lines.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(l) if l.contains("locked") => break,
                Ok(_) => {}
                Err(e) => {
                    kill(locker.id());
                    let _ = locker.wait();
                    panic!("psql did not lock the table within {RUN_LIMIT:?} ({e})");
                }
            }
        }
        assert_eq!(
            slow.verify(&params(&otp(6, 0), "noncebbbbbbbbbbbbbbb"))["status"],
            "BACKEND_ERROR"
        );
        writeln!(stdin, "ROLLBACK;").unwrap();
        drop(stdin);
    }
    wait_bounded(&mut locker, "psql holding the lock");
    // Back: a fresh OTP verifies.
    assert_eq!(
        slow.verify(&params(&otp(7, 0), "noncecccccccccccccccc"))["status"],
        "OK"
    );
}

/// `--val-ksm-url`: OTPs decoded by remote KSMs (yubikey-val's `otp2ksmurls`), asked
/// together, the first `OK` winning, a dead one beside it ignored; with no KSM reachable,
/// `BACKEND_ERROR`. The validator's own AEAD directory is empty, so an `OK` can only come
/// from the remote KSM.
#[test]
fn remote_ksms_decode_when_named() {
    let pg = database();
    let ksm = Validator::start(&pg.url(), &[]);
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let empty = tempfile::tempdir().unwrap();
    let remote = format!("http://{}/wsapi/decrypt?otp=", ksm.addr);
    let dead = format!("http://127.0.0.1:{dead}/wsapi/decrypt?otp=");
    let b = empty.path().to_str().unwrap();
    let own = Validator::start(&pg.url(), &["-B", b]);
    assert_eq!(
        own.verify(&params(&otp(1, 0), "nonceaaaaaaaaaaaaaaa"))["status"],
        "BAD_OTP",
        "the validator's own store has no AEAD"
    );
    let val = Validator::start(&pg.url(), &["-B", b, "--val-ksm-url", &dead, &remote]);
    assert_eq!(
        val.verify(&params(&otp(2, 0), "noncebbbbbbbbbbbbbbb"))["status"],
        "OK"
    );
    assert_eq!(
        metric(ksm.addr, "ksm_decodes_total", "result=\"ok\""),
        Some(1)
    );
    // An OTP the KSM answers with an ERR line: BAD_OTP.
    let foreign = test_support::ykgenerate(
        "ccccdeulfbvj",
        "00000000000000000000000000000000",
        "4f27a712b157",
        3,
        0,
        0,
        0,
    );
    assert_eq!(
        val.verify(&params(&foreign, "noncecccccccccccccccc"))["status"],
        "BAD_OTP"
    );
    let only_dead = Validator::start(&pg.url(), &["-B", b, "--val-ksm-url", &dead]);
    assert_eq!(
        only_dead.verify(&params(&otp(4, 0), "noncedddddddddddddddd"))["status"],
        "BACKEND_ERROR"
    );
}
