//! The configuration console driven through the pty the way pyhsm's `test/configure_hsm.py`
//! drives a real YubiHSM 1: `MONITOR_EXIT` from HSM mode, raw writes on the serial line, and
//! a read loop that waits for the next prompt. Then the wire commands must see exactly the
//! device typed in: its flags, the disabled key, the lock, the admin OTP unlock and the
//! internal database's replay counters.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use hsm_proto::cmd::{self, HmacFlags};
use hsm_proto::console::{find_prompt, KeyListEntry, Prompt};
use hsm_proto::{Error, Flags, Hsm, KeyHandle, Nonce, Opcode, SecretBytes, Status, Timeouts};
use serialport::TTYPort;

/// pyhsm's `HsmPassphrase`, sent zero-padded by `KEY_STORE_DECRYPT`.
const PASSPHRASE: &str = "badabada";
/// pyhsm's `PrimaryAdminYubiKey`.
const ADMIN: (&str, &str, &str) = (
    "ftftftfteeee",
    "f0f1f2f3f4f5",
    "4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d",
);

fn passphrase() -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..4].copy_from_slice(&hex::decode(PASSPHRASE).unwrap());
    k
}

fn admin_otp(counter: u16, use_: u8) -> hsm_proto::otp::Otp {
    parse_otp(ykgenerate(
        ADMIN.0, ADMIN.2, ADMIN.1, counter, 0x10, 0, use_,
    ))
}

/// `configure_hsm.py`'s `config_do`: write, then read a byte at a time until the last line
/// matches the prompt pattern; five empty reads in a row fail.
fn config_do(ser: &mut TTYPort, cmd: &str, add_cr: bool) -> String {
    ser.write_all(cmd.as_bytes()).unwrap();
    if add_cr {
        ser.write_all(b"\r").unwrap();
    }
    let mut recv = Vec::new();
    let mut empty = 0;
    loop {
        let mut b = [0u8; 1];
        match ser.read(&mut b) {
            Ok(1) => recv.push(b[0]),
            _ => {
                empty += 1;
                assert!(
                    empty < 5,
                    "no prompt after {cmd:?}: {:?}",
                    String::from_utf8_lossy(&recv)
                );
                continue;
            }
        }
        let text = String::from_utf8_lossy(&recv).to_string();
        let last = text.rsplit('\n').next().unwrap_or("");
        if find_prompt(last).is_some() && last.contains("> ") {
            return text;
        }
    }
}

/// `configure_hsm.py`'s `add_key`.
fn add_key(ser: &mut TTYPort, flags: u32, kh: u32, key: &str) {
    config_do(ser, &format!("flags {flags:04x}"), true);
    let out = config_do(ser, &format!("keyload\r{kh:08x},{key}\r\x1b"), false);
    assert!(out.contains(&format!("{kh:08x} - stored ok")), "{out:?}");
}

/// Everything `configure_hsm.py` types, in its order, after a `zap`.
fn configure_as_pyhsm_does(ser: &mut TTYPort) -> Vec<String> {
    let mut seen = Vec::new();
    // The first prompt arrives without sending anything.
    seen.push(config_do(ser, "", false));
    seen.push(config_do(ser, "sysinfo", true));
    seen.push(config_do(ser, "help", true));
    seen.push(config_do(ser, "zap\ryes", true));
    seen.push(config_do(
        ser,
        &format!("hsm ffffffff\r\r{}\r\r{PASSPHRASE}\ryes", ADMIN.0),
        true,
    ));
    for num in 0..31u32 {
        add_key(
            ser,
            1 << num,
            num + 1,
            &format!("{:02x}", num + 1).repeat(32),
        );
    }
    add_key(ser, 0x200, 0x1000, &"06".repeat(32));
    add_key(ser, 0xe000, 0x1001, &"1001".repeat(16));
    add_key(
        ser,
        0x4 | 0x4000_0000 | 0x2000_0000,
        0x1002,
        &"1002".repeat(16),
    );
    add_key(ser, 0xffff_ffff, 0x2000, &"2000".repeat(16));
    add_key(ser, 0xffff_ffff, 0x2001, &"2001".repeat(16));
    seen.push(config_do(ser, "keydis 2001", true));
    let nist = format!("{:0<64}", "303132333435363738393a3b3c3d3e3f40414243");
    add_key(ser, 0x10000, 0x3031, &nist);
    add_key(ser, 0x2000_0002, 0x2000_0002, &"20000002".repeat(8));
    add_key(ser, 0x2000_0008, 0x2000_0008, &"20000008".repeat(8));
    seen.push(config_do(ser, "keylist", true));
    seen.push(config_do(ser, "keycommit", true));
    seen.push(config_do(
        ser,
        &format!("dbload\r00001,{},{},{},\r\x1b", ADMIN.0, ADMIN.1, ADMIN.2),
        false,
    ));
    seen.push(config_do(ser, "dblist", true));
    ser.write_all(b"exit\r").unwrap();
    seen
}

fn refused(cmd: Opcode, status: Status) -> Error {
    Error::Device { cmd, status }
}

fn nist_hmac(hsm: &mut Hsm) -> hsm_proto::Result<String> {
    let r = hsm.send(&cmd::HmacSha1Generate {
        key_handle: KeyHandle(0x3031),
        flags: HmacFlags(HmacFlags::RESET | HmacFlags::FINAL),
        data: SecretBytes::new(b"Sample #2".to_vec()),
    })?;
    Ok(hex::encode(r.hash))
}

#[test]
fn configured_at_the_console_as_pyhsm_does_the_wire_sees_that_device() {
    // Start from a device configured otherwise: our lock-test device with its own master
    // key and admin YubiKey, in debug mode so MONITOR_EXIT is obeyed.
    let mut cfg = config("lock-test.toml");
    cfg.system_flags = Flags::ALL;
    let dev = Device::start(&cfg);
    let mut hsm = dev.open();
    hsm.monitor_exit().unwrap();
    drop(hsm);

    let mut ser = hsm_proto::line::open_serial(dev.emu.link(), Duration::from_secs(1)).unwrap();
    let seen = configure_as_pyhsm_does(&mut ser);
    assert!(
        seen[0].ends_with("HSM (keys not decrypted)> "),
        "{:?}",
        seen[0]
    );
    assert!(seen[1].contains("Version 1.0.4"), "{:?}", seen[1]);
    assert!(seen[3].ends_with("NO_CFG> "), "zap: {:?}", seen[3]);
    assert!(
        seen[4].ends_with(Prompt::KeysChanged.text()),
        "hsm: {:?}",
        seen[4]
    );
    let keylist = &seen[6];
    assert_eq!(keylist.matches(",disabled").count(), 1, "{keylist}");
    assert!(keylist.contains("00002001,ffffffff,disabled"));
    assert!(keylist.contains("00000011,00010000\r\n"));
    let entries = keylist.lines().filter_map(KeyListEntry::parse).count();
    assert_eq!(entries, 31 + 8, "pyhsm's 31 single-flag handles and 8 more");
    assert!(seen[7].ends_with("- Done\r\nHSM> "), "{:?}", seen[7]);
    assert!(seen[8].contains("00001 - inserted ok"));
    assert!(seen[9].contains("ftftftfteeee,0,0"));
    drop(ser);
    test_support::eventually("exit left the console", Duration::from_secs(5), || {
        !dev.emu.with_engine(|e| e.in_console())
    });

    // HSM mode: set up by hand, the store is open until the next power-on.
    let mut hsm = Hsm::open_path(dev.emu.link(), Timeouts::default()).unwrap();
    for kh in 1..=31u32 {
        let r = hsm.aead_generate(KeyHandle(kh), Nonce::ZERO, b"who can");
        assert_eq!(r.is_ok(), kh == 2, "AEAD_GENERATE with kh {kh}: {r:?}");
    }
    assert!(hsm
        .aead_generate(KeyHandle(0x2000), Nonce::ZERO, b"x")
        .is_ok());
    assert_eq!(
        hsm.aead_generate(KeyHandle(0x2001), Nonce::ZERO, b"x")
            .err(),
        Some(refused(Opcode::AeadGenerate, Status::FunctionDisabled)),
        "keydis"
    );
    let nist = "0922d3405faa3d194f82a45830737d5cc6c75d24";
    assert_eq!(nist_hmac(&mut hsm).unwrap(), nist);
    // The keys are the ones typed: an AEAD made offline under kh 0x2000 opens.
    let d = Kh2000Case::new(9, 0x1234, 0x56, 2)
        .decode(&mut hsm)
        .unwrap();
    assert_eq!(ksm_line(&d), "OK counter=0009 low=1234 high=56 use=02");

    // Power-on: the committed store is locked until pyhsm's passphrase and an admin OTP.
    drop(hsm);
    dev.emu.power_cycle();
    let mut hsm = Hsm::open_path(dev.emu.link(), Timeouts::default()).unwrap();
    assert_eq!(
        nist_hmac(&mut hsm).err(),
        Some(refused(Opcode::HmacSha1Generate, Status::KeyStorageLocked))
    );
    assert_eq!(
        hsm.key_store_decrypt(&[0x4d; 32]).err(),
        Some(refused(Opcode::KeyStoreDecrypt, Status::Mismatch)),
        "the old device's master key is gone"
    );
    hsm.key_store_decrypt(&passphrase()).unwrap();
    assert!(hsm.is_locked().unwrap(), "the admin OTP is still needed");
    // dbload reset the counters: 1/0 is new, then a replay.
    hsm.hsm_unlock(&admin_otp(1, 0)).unwrap();
    assert_eq!(
        hsm.hsm_unlock(&admin_otp(1, 0)).err(),
        Some(refused(Opcode::HsmUnlock, Status::OtpReplay))
    );
    assert_eq!(nist_hmac(&mut hsm).unwrap(), nist, "committed keys survive");
    assert_eq!(
        hsm.aead_generate(KeyHandle(0x2001), Nonce::ZERO, b"x")
            .err(),
        Some(refused(Opcode::AeadGenerate, Status::FunctionDisabled)),
        "so does keydis"
    );
}

#[test]
fn keys_not_committed_are_lost_at_power_on() {
    let dev = Device::start(&config("blank.toml"));
    let mut ser = hsm_proto::line::open_serial(dev.emu.link(), Duration::from_secs(1)).unwrap();
    let first = config_do(&mut ser, "", true);
    assert!(first.ends_with("NO_CFG> "), "{first:?}");
    config_do(&mut ser, "hsm ffffffff\r\r\r\ryes", true);
    add_key(&mut ser, 0x10000, 0x3031, &"30".repeat(32));
    config_do(&mut ser, "keycommit", true);
    add_key(&mut ser, 0x10000, 0x3032, &"30".repeat(32));
    let listed = config_do(&mut ser, "keylist", true);
    assert!(listed.contains("00003032,00010000"));
    assert!(listed.ends_with("HSM (keys changed)> "));
    dev.emu.power_cycle();
    dev.emu.enter_config_mode();
    let listed = config_do(&mut ser, "keylist", true);
    assert!(listed.contains("00003031,00010000"), "{listed:?}");
    assert!(!listed.contains("00003032"), "{listed:?}");
    assert!(listed.ends_with("HSM> "), "{listed:?}");
}
