//! Locked key store after power-on: refused until KEY_STORE_DECRYPT with the right key and
//! HSM_UNLOCK with an admin OTP; wrong key and replayed OTP refused. Over a real pty.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

mod common;

use common::*;
use hsm_proto::{aead, AesKey, Error, KeyHandle, Nonce, Opcode, Status};

fn device_error(cmd: Opcode, status: Status) -> Error {
    Error::Device { cmd, status }
}

#[test]
fn decode_refused_until_master_key_and_admin_otp() {
    let dev = Device::start(&config("lock-test.toml"));
    let mut hsm = dev.open();

    // A YubiKey AEAD under kh 0x2000 (all flags), made offline with the same key.
    let case = Kh2000Case::new(5, 0x1111, 0x22, 3);
    let decode = |hsm: &mut hsm_proto::Hsm| case.decode(hsm);

    // Locked at power-on: echo and system info work, key operations do not.
    assert_eq!(hsm.echo(b"still talking").unwrap(), b"still talking");
    assert_eq!(
        decode(&mut hsm),
        Err(device_error(
            Opcode::AeadYubikeyOtpDecode,
            Status::KeyStorageLocked
        ))
    );

    // Wrong master key: MISMATCH, still locked.
    assert_eq!(
        hsm.key_store_decrypt(&[0x11; 32]),
        Err(device_error(Opcode::KeyStoreDecrypt, Status::Mismatch))
    );
    assert_eq!(
        decode(&mut hsm),
        Err(device_error(
            Opcode::AeadYubikeyOtpDecode,
            Status::KeyStorageLocked
        ))
    );

    // Right master key: the admin OTP step is still pending.
    hsm.key_store_decrypt(&MASTER_KEY).unwrap();
    assert_eq!(
        decode(&mut hsm),
        Err(device_error(
            Opcode::AeadYubikeyOtpDecode,
            Status::KeyStorageLocked
        ))
    );

    // An OTP from a YubiKey that is not an admin key is refused.
    let stranger = parse_otp(ykgenerate(
        "ccccccccccdd",
        &"01".repeat(16),
        "010101010101",
        1,
        1,
        1,
        1,
    ));
    assert_eq!(
        hsm.hsm_unlock(&stranger),
        Err(device_error(Opcode::HsmUnlock, Status::IdNotFound))
    );
    // A corrupt admin OTP (wrong key) is OTP_INVALID.
    let forged = parse_otp(ykgenerate(
        "ccccccccccdb",
        &"02".repeat(16),
        "0a0b0c0d0e0f",
        9,
        1,
        1,
        1,
    ));
    assert_eq!(
        hsm.hsm_unlock(&forged),
        Err(device_error(Opcode::HsmUnlock, Status::OtpInvalid))
    );

    let admin = admin_otp(2, 7);
    hsm.hsm_unlock(&admin).unwrap();
    let decoded = decode(&mut hsm).unwrap();
    assert_eq!(
        common::ksm_line(&decoded),
        "OK counter=0005 low=1111 high=22 use=03"
    );

    // Replaying the admin OTP (or an older one) is refused.
    assert_eq!(
        hsm.hsm_unlock(&admin),
        Err(device_error(Opcode::HsmUnlock, Status::OtpReplay))
    );
    assert_eq!(
        hsm.hsm_unlock(&admin_otp(2, 6)),
        Err(device_error(Opcode::HsmUnlock, Status::OtpReplay))
    );

    // A wrong master key locks again; the right one restores without a new OTP.
    assert_eq!(
        hsm.key_store_decrypt(&[0; 32]),
        Err(device_error(Opcode::KeyStoreDecrypt, Status::Mismatch))
    );
    assert_eq!(
        decode(&mut hsm),
        Err(device_error(
            Opcode::AeadYubikeyOtpDecode,
            Status::KeyStorageLocked
        ))
    );
    hsm.key_store_decrypt(&MASTER_KEY).unwrap();
    assert!(decode(&mut hsm).is_ok());

    // A power cycle locks it again, and the admin OTP is needed again.
    dev.emu.power_cycle();
    assert_eq!(
        decode(&mut hsm),
        Err(device_error(
            Opcode::AeadYubikeyOtpDecode,
            Status::KeyStorageLocked
        ))
    );
    hsm.key_store_decrypt(&MASTER_KEY).unwrap();
    assert_eq!(
        decode(&mut hsm),
        Err(device_error(
            Opcode::AeadYubikeyOtpDecode,
            Status::KeyStorageLocked
        ))
    );
    hsm.hsm_unlock(&admin_otp(3, 0)).unwrap();
    assert!(decode(&mut hsm).is_ok());
}

#[test]
fn master_key_without_admin_keys_needs_no_otp() {
    let cfg = hsm_proto::emulator::EmulatorConfig::parse(&format!(
        "master_key = \"{}\"\n[[key]]\nhandle = 1\nkey = \"{}\"\nflags = \"AEAD_GENERATE\"\n",
        "ab".repeat(32),
        "01".repeat(32)
    ))
    .unwrap()
    .resolve()
    .unwrap();
    let dev = Device::start(&cfg);
    let mut hsm = dev.open();
    assert_eq!(
        hsm.aead_generate(KeyHandle(1), Nonce::ZERO, b"x")
            .unwrap_err(),
        device_error(Opcode::AeadGenerate, Status::KeyStorageLocked)
    );
    hsm.key_store_decrypt(&[0xab; 32]).unwrap();
    assert!(hsm.aead_generate(KeyHandle(1), Nonce::ZERO, b"x").is_ok());
}

/// pyhsm's test device (`pyhsm-test-setup.toml`) opens as pyhsm's suite opens it: the
/// passphrase `bada` × 2 as `unlock` sends it (4 bytes; the driver zero-pads to 32), then an
/// OTP of the admin YubiKey with counters 1/0, whose replay is refused
/// (`test/test_common.py` `setUp` and `otp_unlock`).
#[test]
fn pyhsm_test_setup_unlocks_as_pyhsms_suite_does() {
    let dev = Device::start(&config("pyhsm-test-setup.toml"));
    let mut hsm = dev.open();
    let admin = |use_ctr: u16, session_ctr: u8| {
        // FakeYubiKey: timestamp 0.
        parse_otp(ykgenerate(
            "ftftftfteeee",
            &"4d".repeat(16),
            "f0f1f2f3f4f5",
            use_ctr,
            0,
            0,
            session_ctr,
        ))
    };
    let user_nonce = KeyHandle(0x2000_0002);
    let n = Nonce(*b"pyhsm!");
    assert_eq!(
        hsm.aead_generate(user_nonce, n, b"x").unwrap_err(),
        device_error(Opcode::AeadGenerate, Status::KeyStorageLocked)
    );
    assert_eq!(
        hsm.key_store_decrypt(&[0x4d; 32]),
        Err(device_error(Opcode::KeyStoreDecrypt, Status::Mismatch)),
        "lock-test.toml's master key is not pyhsm's"
    );
    hsm.key_store_decrypt(&[0xba, 0xda, 0xba, 0xda]).unwrap();
    hsm.hsm_unlock(&admin(1, 0)).unwrap();
    assert_eq!(
        hsm.hsm_unlock(&admin(1, 0)),
        Err(device_error(Opcode::HsmUnlock, Status::OtpReplay))
    );

    // Handle 0x20000002 takes a caller's nonce, with the key "20000002" * 8.
    let (_, a) = hsm.aead_generate(user_nonce, n, b"x").unwrap();
    let key = AesKey::from_hex(&"20000002".repeat(8)).unwrap();
    assert_eq!(&*aead::open(&key, user_nonce, &n, &a).unwrap(), b"x");
    // `hsm ffffffff` includes FLAG_DEBUG: MONITOR_EXIT drops to the console.
    hsm.monitor_exit().unwrap();
    test_support::eventually(
        "MONITOR_EXIT drops to the console",
        std::time::Duration::from_secs(5),
        || dev.emu.with_engine(|e| e.in_console()),
    );
}
