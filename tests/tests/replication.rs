//! Two auth servers, one rsync cron: each has its own emulated YubiHSM (same key-handle
//! keys) and its own AEAD directory. Keys are generated on auth1 through its daemon's sharing
//! socket; a loop of real `rsync -a --delete auth1/ auth2/` runs while both daemons serve
//! load. No answer is ever wrong; a key on auth1 before a sync decodes on auth2 within 2 s of
//! that sync; a key deleted on auth1 stops decoding on auth2 after the next sync.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e_tests::*;
use hsm_proto::{aead, AesKey, KeyHandle, PublicId};
use ksm::device::ToolDevice;
use support::{settings, Daemon};

const KH: KeyHandle = KeyHandle(0x20);

/// Generates keys `ids` on auth1 through its daemon's sharing socket, as an operator would.
fn generate(socket: &Path, dir: &Path, ids: std::ops::RangeInclusive<u64>) {
    let mut hsm = ksm::device::open_tool(
        &ToolDevice::Daemon {
            socket: socket.to_path_buf(),
            index: 0,
        },
        hsm_proto::Timeouts::default(),
    )
    .expect("sharing socket");
    let store = aead_store::FsStore::open(dir, vec![KH]).unwrap();
    let plan = ksm::tools::generate_keys::Plan {
        key_handles: vec![KH],
        start: PublicId::from_number(*ids.start(), 12).unwrap(),
        count: ids.end() - ids.start() + 1,
        public_id_chars: 12,
        random_nonce: false,
        force: false,
    };
    ksm::tools::generate_keys::generate(&mut hsm, &store, &plan, &mut std::io::sink())
        .expect("generate");
}

/// An OTP for each generated key: the personalisation site decrypts the AEAD (with the
/// key-handle key) and programs a YubiKey; `ykgenerate` plays the YubiKey.
fn otps(dir: &Path, ids: std::ops::RangeInclusive<u64>) -> HashMap<u64, String> {
    let key = AesKey::from_hex(otp_vectors()["key_handles"]["0x20"].as_str().unwrap()).unwrap();
    let store = aead_store::FsStore::open(dir, vec![KH]).unwrap();
    ids.map(|n| {
        let id = PublicId::from_number(n, 12).unwrap();
        let s = aead_store::Store::lookup(&store, &id)
            .unwrap()
            .expect("generated");
        let plain = aead::open(&key, KH, &s.nonce(), s.hsm1_aead().unwrap()).unwrap();
        (
            n,
            ykgenerate(
                id.as_str(),
                &hex::encode(&plain[..16]),
                &hex::encode(&plain[16..]),
                0x100 + n as u16,
                0x10,
                0x20,
                0x30,
            ),
        )
    })
    .collect()
}

fn expected(n: u64) -> String {
    format!("OK counter={:04x} low=0010 high=20 use=30\n", 0x100 + n)
}

fn rsync(from: &Path, to: &Path) {
    let ok = Command::new("rsync")
        .args(["-a", "--delete"])
        .arg(format!("{}/", from.display()))
        .arg(format!("{}/", to.display()))
        .status()
        .expect("rsync not installed: apt-get install rsync (.ci/run does)")
        .success();
    assert!(ok, "rsync failed");
}

#[test]
fn two_servers_one_rsync_cron() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir1, dir2) = (tmp.path().join("auth1"), tmp.path().join("auth2"));
    std::fs::create_dir_all(&dir1).unwrap();
    std::fs::create_dir_all(&dir2).unwrap();
    let (hsm1, hsm2) = (
        Device::start(&emulator_config("demo.toml")),
        Device::start(&emulator_config("demo.toml")),
    );
    let sock1 = tmp.path().join("auth1.sock");
    let mut s1 = settings(vec![hsm1.path()], &dir1, Duration::from_secs(3));
    s1.key_handles = vec![KH.into()];
    s1.socket = Some(sock1.clone());
    let mut s2 = settings(vec![hsm2.path()], &dir2, Duration::from_secs(3));
    s2.key_handles = vec![KH.into()];
    let (auth1, auth2) = (Daemon::start(s1), Daemon::start(s2));

    generate(&sock1, &dir1, 1..=40);
    let all = Arc::new(Mutex::new(otps(&dir1, 1..=40)));

    // The cron job, every 300 ms; each sync's end time is recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let syncs: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let cron = {
        let (stop, syncs, d1, d2) = (stop.clone(), syncs.clone(), dir1.clone(), dir2.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                rsync(&d1, &d2);
                syncs.lock().unwrap().push(Instant::now());
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };

    // Load on both servers: every answer must be the right OK line or, on auth2 for a key
    // not (or no longer) replicated, ERR Unknown public_id. Anything else is wrong.
    let wrong = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = [(auth1.addr, false), (auth2.addr, true), (auth2.addr, true)]
        .into_iter()
        .map(|(addr, replica)| {
            let (stop, all, wrong, served) =
                (stop.clone(), all.clone(), wrong.clone(), served.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let pick = all
                        .lock()
                        .unwrap()
                        .iter()
                        .map(|(n, o)| (*n, o.clone()))
                        .nth((i as usize * 7) % 40);
                    let Some((n, otp)) = pick else { continue };
                    let a = get(addr, &format!("/wsapi/decrypt?otp={otp}"));
                    let ok = a.body == expected(n)
                        || (replica || n <= 10) && a.body == "ERR Unknown public_id\n";
                    if !ok {
                        eprintln!("wrong answer for key {n} from {addr}: {a:?}");
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                    served.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let next_sync_after = |t: Instant| -> Instant {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = syncs.lock().unwrap().iter().find(|s| **s > t) {
                return *s;
            }
            assert!(Instant::now() < deadline, "the rsync loop stalled");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let decodes_on_auth2 = |otp: &str, want: &str, by: Instant| loop {
        let a = get(auth2.addr, &format!("/wsapi/decrypt?otp={otp}"));
        if a.body == want {
            return;
        }
        assert!(
            Instant::now() < by,
            "auth2 still answers {:?}, wanted {want:?}",
            a.body
        );
        std::thread::sleep(Duration::from_millis(20));
    };

    // Everything present before a sync decodes on auth2 within 2 s of it.
    let synced = next_sync_after(Instant::now());
    for (n, otp) in all.lock().unwrap().clone() {
        decodes_on_auth2(&otp, &expected(n), synced + Duration::from_secs(2));
    }

    // New keys on auth1 while serving.
    generate(&sock1, &dir1, 41..=50);
    let fresh = otps(&dir1, 41..=50);
    let synced = next_sync_after(Instant::now());
    for (n, otp) in &fresh {
        decodes_on_auth2(otp, &expected(*n), synced + Duration::from_secs(2));
    }

    // Keys deleted on auth1 stop decoding on auth2 after the next sync.
    let gone: Vec<(u64, String)> = all
        .lock()
        .unwrap()
        .iter()
        .filter(|(n, _)| **n <= 10)
        .map(|(n, o)| (*n, o.clone()))
        .collect();
    for (n, _) in &gone {
        let p = aead_store::layout::aead_path(
            &dir1.join(KH.canonical()),
            &PublicId::from_number(*n, 12).unwrap(),
        );
        std::fs::remove_file(p).unwrap();
    }
    let synced = next_sync_after(Instant::now());
    for (_, otp) in &gone {
        decodes_on_auth2(
            otp,
            "ERR Unknown public_id\n",
            synced + Duration::from_secs(2),
        );
    }

    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    cron.join().unwrap();
    assert_eq!(wrong.load(Ordering::Relaxed), 0, "wrong answers");
    assert!(
        served.load(Ordering::Relaxed) > 100,
        "load ran: {}",
        served.load(Ordering::Relaxed)
    );
}
