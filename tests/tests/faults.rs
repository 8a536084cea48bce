//! Device faults while the daemon is under load. Four client threads decode without pause
//! while the emulator's knobs break the device: unplugged for 3 s, stalled, garbage on the
//! line, the configuration console, a power cycle that locks the key store. In every case each
//! request is answered by its deadline with the OK line or a stable 503 line, the daemon gets
//! the device back by itself (or once an operator unlocks it), no thread panics, and
//! `/health` and `/metrics` say what happened.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

mod support;

use std::io::Cursor;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use e2e_tests::*;
use hsm_proto::emulator::{EmulatorConfig, ResolvedConfig};
use ksm::device::ToolDevice;
use support::{settings, Daemon};

/// The deadline of every request in these tests (`--reqtimeout`).
const REQTIMEOUT: Duration = Duration::from_secs(2);
/// Answer time allowed over the deadline: the HTTP round trip on a busy 2-core machine.
const SLACK: Duration = Duration::from_millis(750);
const OK: &str = "OK counter=0005 low=4242 high=17 use=05\n";
const MASTER_KEY: &str = "abababababababababababababababababababababababababababababababab";

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts panics on the daemon's threads (its tokio workers and HSM owner threads), so a
/// test can assert there were none. A failing assertion in a test thread is not counted: it
/// fails its own test, not the others running beside it.
fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let name = std::thread::current()
                .name()
                .unwrap_or_default()
                .to_string();
            if name.starts_with("hsm-owner") || name.starts_with("tokio-runtime-worker") {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

/// Clients decoding the same OTP in a loop; each answer is kept with how long it took.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<(Answer, Duration)>>>,
}

impl Load {
    fn start(addr: SocketAddr, otp: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..4)
            .map(|_| {
                let (stop, path) = (stop.clone(), format!("/wsapi/decrypt?otp={otp}"));
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let a = get(addr, &path);
                        seen.push((a, t.elapsed()));
                    }
                    seen
                })
            })
            .collect();
        Load { stop, threads }
    }

    /// Stops the clients and checks every answer: the OK line, or one of `errors` with 503,
    /// each within the deadline. Returns how many of each error line were seen.
    fn finish(self, errors: &[&str]) -> Vec<(String, usize)> {
        self.stop.store(true, Ordering::Relaxed);
        let answers: Vec<(Answer, Duration)> = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().expect("client thread"))
            .collect();
        assert!(answers.len() > 20, "too few requests: {answers:?}");
        let mut counts: Vec<(String, usize)> = errors.iter().map(|e| (e.to_string(), 0)).collect();
        for (a, took) in &answers {
            assert!(
                *took <= REQTIMEOUT + SLACK,
                "answered after {took:?}: {a:?}"
            );
            if a.status == 200 && a.body == OK {
                continue;
            }
            let line = a.body.trim_end();
            match counts.iter_mut().find(|(e, _)| e == line) {
                Some(c) if a.status == 503 => c.1 += 1,
                _ => panic!("unexpected answer during the fault: {a:?}"),
            }
        }
        counts
    }
}

/// Decodes until the answer is `body` (or `within` passes) and returns the last answer.
fn wait_for(d: &Daemon, otp: &str, body: &str, within: Duration) -> Answer {
    let deadline = Instant::now() + within;
    loop {
        let a = d.decode(otp);
        if a.body == body || Instant::now() > deadline {
            return a;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One sample of `/metrics`, e.g. `metric(d, "ksm_hsm_line_errors_total{", "kind=\"garbage\"")`:
/// the value of the first line starting with `name` and containing `label`.
fn metric(d: &Daemon, name: &str, label: &str) -> u64 {
    e2e_tests::metric(d.addr, name, label).unwrap_or_else(|| {
        panic!(
            "no {name} {label} in /metrics:\n{}",
            get(d.addr, "/metrics").body
        )
    })
}

fn health(d: &Daemon) -> (u16, serde_json::Value) {
    let h = get(d.addr, "/health");
    let v = serde_json::from_str(&h.body).unwrap_or_else(|e| panic!("{e}: {}", h.body));
    (h.status, v)
}

/// Waits (at most `within`) until `/health` satisfies `seen`, and returns it; fails the
/// test with the last `/health` if it never does.
fn health_when(
    d: &Daemon,
    within: Duration,
    seen: impl Fn(u16, &serde_json::Value) -> bool,
) -> (u16, serde_json::Value) {
    let until = Instant::now() + within;
    loop {
        let (code, h) = health(d);
        if seen(code, &h) {
            return (code, h);
        }
        assert!(
            Instant::now() < until,
            "not seen within {within:?}: {code} {h}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The device's last line error, as `/health` says it.
fn last_error(h: &serde_json::Value) -> &str {
    h["devices"][0]["last_error"].as_str().unwrap_or_default()
}

fn with_master_key() -> ResolvedConfig {
    let text = std::fs::read_to_string(fixtures().join("emulator/demo.toml")).unwrap();
    EmulatorConfig::parse(&format!("master_key = \"{MASTER_KEY}\"\n{text}"))
        .unwrap()
        .resolve()
        .unwrap()
}

/// A daemon in front of one emulated device, with its sharing socket, serving OK already.
fn serving(
    cfg: &ResolvedConfig,
) -> (
    Device,
    tempfile::TempDir,
    tempfile::TempDir,
    Daemon,
    PathBuf,
) {
    count_panics();
    let dev = Device::start(cfg);
    let aeads = aead_dir();
    let run = tempfile::tempdir().unwrap();
    let socket = run.path().join("ksm.sock");
    let mut s = settings(vec![dev.path()], aeads.path(), REQTIMEOUT);
    s.socket = Some(socket.clone());
    let d = Daemon::start(s);
    (dev, aeads, run, d, socket)
}

/// `ksm keystore-unlock --stdin --no-otp` through the daemon's socket, as the operator runs it.
fn keystore_unlock(socket: &std::path::Path) {
    let mut out = Vec::new();
    ksm::tools::keystore_unlock::unlock(
        &ToolDevice::Daemon {
            socket: socket.to_path_buf(),
            index: 0,
        },
        &ksm::tools::keystore_unlock::Options {
            stdin: true,
            otp_stdin: false,
            no_otp: true,
        },
        hsm_proto::Timeouts::default(),
        &mut Cursor::new(format!("{MASTER_KEY}\n")),
        &mut out,
    )
    .unwrap_or_else(|e| panic!("unlock: {e}: {}", String::from_utf8_lossy(&out)));
}

fn assert_no_panics() {
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a thread panicked");
}

#[test]
fn unplugged_for_3s_under_load() {
    let (dev, _aeads, _run, d, _) = serving(&emulator_config("demo.toml"));
    let otp = vector_otp(0, 5, 5);
    assert_eq!(d.decode(&otp).body, OK);
    let opens = metric(&d, "ksm_hsm_opens_total{", "");

    let load = Load::start(d.addr, &otp);
    std::thread::sleep(Duration::from_millis(300));
    dev.emu.unplug(Duration::from_secs(3));
    let (code, h) = health_when(&d, Duration::from_secs(3), |_, h| h["status"] == "down");
    assert_eq!((code, h["status"].as_str()), (503, Some("down")), "{h}");
    assert!(!last_error(&h).is_empty(), "{h}");
    assert_eq!(metric(&d, "ksm_hsm_state{", "state=\"down\""), 1);
    // Back after 3 s (powered up again, no master key: unlocked): served without a restart.
    assert_eq!(wait_for(&d, &otp, OK, Duration::from_secs(8)).body, OK);
    std::thread::sleep(Duration::from_millis(300));
    let seen = load.finish(&["ERR HSM unavailable", "ERR Timeout"]);
    assert!(seen[0].1 > 0, "{seen:?}");

    assert_eq!(health(&d).1["status"], "ok");
    assert!(metric(&d, "ksm_hsm_opens_total{", "") > opens);
    assert!(
        metric(&d, "ksm_hsm_line_errors_total{", "kind=\"closed\"")
            + metric(&d, "ksm_hsm_line_errors_total{", "kind=\"open\"")
            > 0
    );
    assert!(metric(&d, "ksm_decodes_total{", "result=\"unavailable\"") > 0);
    assert_no_panics();
}

#[test]
fn stalled_device_under_load() {
    let (dev, _aeads, _run, d, _) = serving(&emulator_config("demo.toml"));
    let otp = vector_otp(0, 5, 5);
    assert_eq!(d.decode(&otp).body, OK);
    let load = Load::start(d.addr, &otp);
    std::thread::sleep(Duration::from_millis(300));
    dev.emu.set_stall(true);
    let (_, h) = health_when(&d, Duration::from_secs(10), |_, h| {
        last_error(h).contains("did not respond")
    });
    assert!(last_error(&h).contains("did not respond"), "{h}");
    dev.emu.set_stall(false);
    assert_eq!(wait_for(&d, &otp, OK, Duration::from_secs(8)).body, OK);
    std::thread::sleep(Duration::from_millis(300));
    let seen = load.finish(&["ERR Timeout", "ERR HSM unavailable"]);
    assert!(seen[0].1 > 0, "{seen:?}");
    assert!(metric(&d, "ksm_hsm_line_errors_total{", "kind=\"timeout\"") > 0);
    assert!(metric(&d, "ksm_decodes_total{", "result=\"timeout\"") > 0);
    assert_eq!(health(&d).1["status"], "ok");
    assert_no_panics();
}

#[test]
fn garbage_on_the_line_under_load_costs_no_request() {
    let (dev, _aeads, _run, d, _) = serving(&emulator_config("demo.toml"));
    let otp = vector_otp(0, 5, 5);
    assert_eq!(d.decode(&otp).body, OK);
    let opens = metric(&d, "ksm_hsm_opens_total{", "");
    let load = Load::start(d.addr, &otp);
    // Each burst costs the device about half a second (console probe, resync, reopen), so
    // they come one at a time.
    for n in [1, 7, 40, 200] {
        let before = metric(&d, "ksm_hsm_line_errors_total{", "kind=\"garbage\"");
        dev.emu.inject_garbage(n);
        // The next burst once the daemon has noticed this one and reopened the line.
        let until = Instant::now() + Duration::from_secs(10);
        while metric(&d, "ksm_hsm_line_errors_total{", "kind=\"garbage\"") == before
            || health(&d).1["status"] != "ok"
        {
            assert!(Instant::now() < until, "burst of {n} never noticed");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // The driver notices, the owner resynchronises and repeats the decode: no client sees it.
    let seen = load.finish(&[]);
    assert!(seen.is_empty());
    let garbage = metric(&d, "ksm_hsm_line_errors_total{", "kind=\"garbage\"");
    assert!(garbage > 0, "no garbage counted");
    assert!(metric(&d, "ksm_hsm_opens_total{", "") >= opens + garbage);
    assert_eq!(health(&d).1["status"], "ok");
    assert_no_panics();
}

#[test]
fn configuration_mode_under_load() {
    let (dev, _aeads, _run, d, _) = serving(&emulator_config("demo.toml"));
    let otp = vector_otp(0, 5, 5);
    assert_eq!(d.decode(&otp).body, OK);
    let load = Load::start(d.addr, &otp);
    std::thread::sleep(Duration::from_millis(300));
    dev.emu.enter_config_mode();
    let (code, h) = health_when(&d, Duration::from_secs(5), |_, h| {
        h["status"] == "down" && last_error(h).contains("configuration mode")
    });
    assert_eq!((code, h["status"].as_str()), (503, Some("down")), "{h}");
    assert!(last_error(&h).contains("configuration mode"), "{h}");
    assert!(metric(&d, "ksm_hsm_line_errors_total{", "kind=\"config_mode\"") > 0);
    // Clients are told so while it lasts.
    let down = wait_for(&d, &otp, "ERR HSM unavailable\n", Duration::from_secs(5));
    assert_eq!(
        (down.status, down.body.as_str()),
        (503, "ERR HSM unavailable\n")
    );
    // The operator leaves the console (here: a power cycle, as replugging does).
    dev.emu.power_cycle();
    assert_eq!(wait_for(&d, &otp, OK, Duration::from_secs(8)).body, OK);
    std::thread::sleep(Duration::from_millis(300));
    load.finish(&["ERR HSM unavailable", "ERR Timeout"]);
    assert_eq!(health(&d).1["status"], "ok");
    assert_no_panics();
}

#[test]
fn power_cycle_relocks_the_key_store_under_load() {
    let (dev, _aeads, _run, d, socket) = serving(&with_master_key());
    let otp = vector_otp(0, 5, 5);
    keystore_unlock(&socket);
    assert_eq!(wait_for(&d, &otp, OK, Duration::from_secs(5)).body, OK);
    let load = Load::start(d.addr, &otp);
    std::thread::sleep(Duration::from_millis(300));
    dev.emu.power_cycle();
    let locked = wait_for(&d, &otp, "ERR HSM locked\n", Duration::from_secs(5));
    assert_eq!(
        (locked.status, locked.body.as_str()),
        (503, "ERR HSM locked\n")
    );
    let (code, h) = health(&d);
    assert_eq!((code, h["status"].as_str()), (503, Some("locked")), "{h}");
    assert_eq!(metric(&d, "ksm_hsm_state{", "state=\"locked\""), 1);
    // Nothing comes back by itself: request after request (each one asks the device) stays
    // locked until the operator runs keystore-unlock.
    for _ in 0..5 {
        assert_eq!(d.decode(&otp).body, "ERR HSM locked\n");
    }
    assert_eq!(health(&d).1["status"], "locked");
    keystore_unlock(&socket);
    assert_eq!(wait_for(&d, &otp, OK, Duration::from_secs(5)).body, OK);
    std::thread::sleep(Duration::from_millis(300));
    let seen = load.finish(&["ERR HSM locked", "ERR Timeout", "ERR HSM unavailable"]);
    assert!(seen[0].1 > 0, "{seen:?}");
    assert!(metric(&d, "ksm_decodes_total{", "result=\"locked\"") > 0);
    assert_eq!(health(&d).1["status"], "ok");
    assert_no_panics();
}

/// A client that hangs up before its answer (its own timeout, or a validator that already
/// has another KSM's answer) is counted as `abandoned`, in no other result, while the
/// device stalls under its request.
#[test]
fn a_request_the_client_abandons_is_counted() {
    let (dev, _aeads, _run, d, _) = serving(&emulator_config("demo.toml"));
    let otp = vector_otp(0, 5, 5);
    assert_eq!(d.decode(&otp).body, OK);
    assert_eq!(metric(&d, "ksm_decodes_total{", "result=\"abandoned\""), 0);
    let answered = |d: &Daemon| {
        ["ok", "timeout", "unavailable"]
            .iter()
            .map(|r| metric(d, "ksm_decodes_total{", &format!("result=\"{r}\"")))
            .sum::<u64>()
    };
    let before = answered(&d);
    dev.emu.set_stall(true);
    {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(d.addr).unwrap();
        write!(
            c,
            "GET /wsapi/decrypt?otp={otp} HTTP/1.1\r\nHost: ksm\r\n\r\n"
        )
        .unwrap();
        // As `curl -m 0.3` does: no answer yet, so it gives up and closes.
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut b = [0u8; 64];
        assert!(c.read(&mut b).is_err(), "answered while the device stalls");
    }
    let until = Instant::now() + REQTIMEOUT + Duration::from_secs(5);
    while metric(&d, "ksm_decodes_total{", "result=\"abandoned\"") == 0 {
        assert!(
            Instant::now() < until,
            "never counted as abandoned:\n{}",
            get(d.addr, "/metrics").body
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(metric(&d, "ksm_decodes_total{", "result=\"abandoned\""), 1);
    assert_eq!(
        answered(&d),
        before,
        "an abandoned decode is in no other count"
    );
    dev.emu.set_stall(false);
    assert_eq!(wait_for(&d, &otp, OK, Duration::from_secs(8)).body, OK);
    assert_no_panics();
}

/// A power cycle that leaves the line open locks the key store behind the daemon's back;
/// an idle daemon finds out by itself within seconds (its owner probes the lock state
/// when no job came), so `/health` says `locked` with no decode asked for.
#[test]
fn an_idle_daemon_sees_a_power_cycle_lock_the_key_store() {
    let (dev, _aeads, _run, d, socket) = serving(&with_master_key());
    let otp = vector_otp(0, 5, 5);
    keystore_unlock(&socket);
    assert_eq!(wait_for(&d, &otp, OK, Duration::from_secs(5)).body, OK);
    assert_eq!(health(&d).1["status"], "ok");
    let decodes = |d: &Daemon| -> u64 {
        e2e_tests::get(d.addr, "/metrics")
            .body
            .lines()
            .filter(|l| l.starts_with("ksm_decodes_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let asked = decodes(&d);
    dev.emu.power_cycle();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, h) = health(&d);
        if h["status"] == "locked" {
            assert_eq!(code, 503, "{h}");
            assert_eq!(h["devices"][0]["state"], "locked", "{h}");
            break;
        }
        assert!(
            Instant::now() < until,
            "still {h} 10 s after the power cycle"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(metric(&d, "ksm_hsm_state{", "state=\"locked\""), 1);
    assert_eq!(decodes(&d), asked, "no decode was asked for");
    assert_no_panics();
}
