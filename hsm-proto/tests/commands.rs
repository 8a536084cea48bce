//! Every command round-trips through the driver and the emulator over a real pty, with its
//! success and each refusal status. The device is `lock-test.toml`: the key handles of pyhsm's
//! hardware test set-up (key handle `n` in 1..=31 holds only flag `1 << (n-1)`) with our own
//! master key, admin YubiKeys and no debug flag.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

mod common;

use common::*;
use hsm_proto::cmd::{self, HmacFlags};
use hsm_proto::{
    aead, AesKey, Error, Flags, Hsm, KeyHandle, Nonce, Opcode, PublicId, SecretBytes, Status,
    YubiKeyAead, YubiKeySecret,
};

fn refused(cmd: Opcode, status: Status) -> Error {
    Error::Device { cmd, status }
}

fn kh_key(kh: u8) -> AesKey {
    AesKey::new(&[kh; 32]).unwrap()
}

fn all_flags_key() -> AesKey {
    AesKey::from_hex(&"2000".repeat(16)).unwrap()
}

const ALL: KeyHandle = KeyHandle(0x2000);
const DISABLED: KeyHandle = KeyHandle(0x2001);
const MISSING: KeyHandle = KeyHandle(0x7777);

#[test]
fn aead_generate_and_its_refusals() {
    let (_dev, mut hsm) = unlocked_test_device();
    let n = Nonce(*b"abc123");
    let (used, a) = hsm.aead_generate(ALL, n, b"Sample #2").unwrap();
    assert_eq!(used, n);
    assert_eq!(
        a,
        aead::seal(&all_flags_key(), ALL, &n, b"Sample #2").unwrap()
    );
    // Zero nonce: the device chooses a non-zero one; works without USER_NONCE.
    let (chosen, a2) = hsm
        .aead_generate(KeyHandle(2), Nonce::ZERO, b"data")
        .unwrap();
    assert_ne!(chosen, Nonce::ZERO);
    assert_eq!(
        &*aead::open(&kh_key(2), KeyHandle(2), &chosen, &a2).unwrap(),
        b"data"
    );
    // A caller nonce needs USER_NONCE (firmware 1.0.4).
    assert_eq!(
        hsm.aead_generate(KeyHandle(2), n, b"data").unwrap_err(),
        refused(Opcode::AeadGenerate, Status::FunctionDisabled)
    );
    assert!(hsm
        .aead_generate(KeyHandle(0x2000_0002), n, b"data")
        .is_ok());
    assert_eq!(
        hsm.aead_generate(KeyHandle(3), n, b"d").unwrap_err(),
        refused(Opcode::AeadGenerate, Status::FunctionDisabled)
    );
    assert_eq!(
        hsm.aead_generate(DISABLED, n, b"d").unwrap_err(),
        refused(Opcode::AeadGenerate, Status::FunctionDisabled)
    );
    assert_eq!(
        hsm.aead_generate(MISSING, n, b"d").unwrap_err(),
        refused(Opcode::AeadGenerate, Status::KeyHandleInvalid)
    );
    assert_eq!(
        hsm.aead_generate(ALL, n, b"").unwrap_err(),
        refused(Opcode::AeadGenerate, Status::InvalidParameter)
    );
    assert_eq!(
        hsm.aead_generate(ALL, n, &[0; 65]).unwrap_err(),
        refused(Opcode::AeadGenerate, Status::InvalidParameter)
    );
}

#[test]
fn buffer_commands_and_buffer_aead() {
    let (_dev, mut hsm) = unlocked_test_device();
    assert_eq!(hsm.buffer_load(0, b"Samp").unwrap(), 4);
    assert_eq!(hsm.buffer_load(3, b"123").unwrap(), 6);
    assert_eq!(hsm.buffer_load(3, b"ple #2").unwrap(), 9);
    // pyhsm's test_buffer vector, recorded on a real YubiHSM.
    let (_, a) = hsm.buffer_aead_generate(ALL, Nonce(*b"abc123")).unwrap();
    assert_eq!(
        hex::encode(a.as_bytes()),
        "18a88fbd7bd2275ba0a722bf80423ffab7"
    );
    // Host data in the buffer needs BUFFER_LOAD on the key.
    assert_eq!(
        hsm.buffer_aead_generate(KeyHandle(3), Nonce::ZERO)
            .unwrap_err(),
        refused(Opcode::BufferAeadGenerate, Status::FunctionDisabled)
    );
    assert!(hsm
        .buffer_aead_generate(KeyHandle(0x1002), Nonce(*b"abc123"))
        .is_ok());
    // Random data does not.
    assert_eq!(hsm.buffer_random_load(0, 22).unwrap(), 22);
    let (nonce, a) = hsm.buffer_aead_generate(KeyHandle(3), Nonce::ZERO).unwrap();
    assert_eq!(
        aead::open(&kh_key(3), KeyHandle(3), &nonce, &a)
            .unwrap()
            .len(),
        22
    );
    // Offsets: writes past 63 are dropped, the count never shrinks.
    assert_eq!(hsm.buffer_random_load(56, 16).unwrap(), 64);
    assert_eq!(hsm.buffer_random_load(62, 63).unwrap(), 64);
    assert_eq!(hsm.buffer_random_load(0, 0).unwrap(), 0);
    assert_eq!(hsm.buffer_random_load(0, 1).unwrap(), 1);
    assert_eq!(hsm.buffer_random_load(1, 0).unwrap(), 1);
    assert_eq!(
        hsm.buffer_aead_generate(MISSING, Nonce::ZERO).unwrap_err(),
        refused(Opcode::BufferAeadGenerate, Status::KeyHandleInvalid)
    );
}

#[test]
fn random_aead_generate_lengths() {
    let (_dev, mut hsm) = unlocked_test_device();
    let (nonce, a) = hsm
        .random_aead_generate(KeyHandle(4), Nonce::ZERO, 16)
        .unwrap();
    assert_eq!(
        aead::open(&kh_key(4), KeyHandle(4), &nonce, &a)
            .unwrap()
            .len(),
        16
    );
    for bad in [0u8, 65, 255] {
        assert_eq!(
            hsm.random_aead_generate(KeyHandle(4), Nonce::ZERO, bad)
                .unwrap_err(),
            refused(Opcode::RandomAeadGenerate, Status::InvalidParameter)
        );
    }
    assert_eq!(
        hsm.random_aead_generate(KeyHandle(4), Nonce(*b"nonce!"), 8)
            .unwrap_err(),
        refused(Opcode::RandomAeadGenerate, Status::FunctionDisabled)
    );
    assert!(hsm
        .random_aead_generate(KeyHandle(0x2000_0008), Nonce(*b"nonce!"), 8)
        .is_ok());
    assert_eq!(
        hsm.random_aead_generate(KeyHandle(2), Nonce::ZERO, 8)
            .unwrap_err(),
        refused(Opcode::RandomAeadGenerate, Status::FunctionDisabled)
    );
}

#[test]
fn aead_decrypt_cmp_match_mismatch_invalid() {
    let (_dev, mut hsm) = unlocked_test_device();
    let kh = KeyHandle(5);
    let n = Nonce(*b"\x01\x02\x03\x04\x05\x06");
    let a = aead::seal(&kh_key(5), kh, &n, b"password").unwrap();
    assert!(hsm.aead_decrypt_cmp(kh, n, b"password", &a).unwrap());
    assert!(!hsm.aead_decrypt_cmp(kh, n, b"passw0rd", &a).unwrap());
    assert!(
        hsm.aead_decrypt_cmp(kh, n, b"", &a).unwrap(),
        "AEAD alone is authenticated"
    );
    let mut bad = a.as_bytes().to_vec();
    bad[0] ^= 1;
    let bad = hsm_proto::Aead::new(&bad).unwrap();
    assert_eq!(
        hsm.aead_decrypt_cmp(kh, n, b"", &bad).unwrap_err(),
        refused(Opcode::AeadDecryptCmp, Status::AeadInvalid)
    );
    // Permission is checked before authenticity.
    assert_eq!(
        hsm.aead_decrypt_cmp(KeyHandle(2), n, b"password", &a)
            .unwrap_err(),
        refused(Opcode::AeadDecryptCmp, Status::FunctionDisabled)
    );
}

fn yubikey(pid: &str, key: [u8; 16], uid: [u8; 6]) -> (PublicId, YubiKeySecret) {
    (PublicId::new(pid).unwrap(), YubiKeySecret { key, uid })
}

#[test]
fn otp_decode_with_host_aead() {
    let (_dev, mut hsm) = unlocked_test_device();
    let (id, secret) = yubikey("ccccccccccrv", [0x42; 16], [9, 8, 7, 6, 5, 4]);
    let kh = KeyHandle(7);
    let a = aead::seal(&kh_key(7), kh, &id.to_nonce().unwrap(), &*secret.to_bytes()).unwrap();
    let a = YubiKeyAead::try_from(&a).unwrap();
    let good = parse_otp(ykgenerate(
        id.as_str(),
        &"42".repeat(16),
        "090807060504",
        0x0102,
        0xbeef,
        0x7a,
        0x11,
    ));
    let d = hsm
        .decode_otp(&good, kh, id.to_nonce().unwrap(), &a)
        .unwrap();
    assert_eq!(
        common::ksm_line(&d),
        "OK counter=0102 low=beef high=7a use=11"
    );
    // No replay check in this command: the same OTP decodes again.
    assert!(hsm
        .decode_otp(&good, kh, id.to_nonce().unwrap(), &a)
        .is_ok());
    let wrong_uid = parse_otp(ykgenerate(
        id.as_str(),
        &"42".repeat(16),
        "000000000000",
        1,
        1,
        1,
        1,
    ));
    assert_eq!(
        hsm.decode_otp(&wrong_uid, kh, id.to_nonce().unwrap(), &a)
            .unwrap_err(),
        refused(Opcode::AeadYubikeyOtpDecode, Status::OtpInvalid)
    );
    let wrong_key = parse_otp(ykgenerate(
        id.as_str(),
        &"43".repeat(16),
        "090807060504",
        1,
        1,
        1,
        1,
    ));
    assert_eq!(
        hsm.decode_otp(&wrong_key, kh, id.to_nonce().unwrap(), &a)
            .unwrap_err(),
        refused(Opcode::AeadYubikeyOtpDecode, Status::OtpInvalid)
    );
    let other_nonce = Nonce(*b"zzzzzz");
    assert_eq!(
        hsm.decode_otp(&good, kh, other_nonce, &a).unwrap_err(),
        refused(Opcode::AeadYubikeyOtpDecode, Status::AeadInvalid)
    );
    assert_eq!(
        hsm.decode_otp(&good, KeyHandle(2), id.to_nonce().unwrap(), &a)
            .unwrap_err(),
        refused(Opcode::AeadYubikeyOtpDecode, Status::FunctionDisabled)
    );
    assert_eq!(
        hsm.decode_otp(&good, MISSING, id.to_nonce().unwrap(), &a)
            .unwrap_err(),
        refused(Opcode::AeadYubikeyOtpDecode, Status::KeyHandleInvalid)
    );
}

#[test]
fn internal_database_store_validate_replay() {
    let (_dev, mut hsm) = unlocked_test_device();
    let (id, secret) = yubikey("cccccccccccj", [0x33; 16], [1, 1, 2, 2, 3, 3]);
    let kh = KeyHandle(6);
    let a: [u8; 30] = aead::seal(&kh_key(6), kh, &id.to_nonce().unwrap(), &*secret.to_bytes())
        .unwrap()
        .as_bytes()
        .try_into()
        .unwrap();
    let store = cmd::DbYubikeyAeadStore {
        public_id: id.to_nonce().unwrap(),
        key_handle: kh,
        aead: a,
    };
    hsm.send(&store).unwrap();
    assert_eq!(
        hsm.send(&store).unwrap_err(),
        refused(Opcode::DbYubikeyAeadStore, Status::IdDuplicate)
    );
    let mut bad = store.clone();
    bad.public_id = Nonce(*b"\x00\x00\x00\x00\x00\x09");
    assert_eq!(
        hsm.send(&bad).unwrap_err(),
        refused(Opcode::DbYubikeyAeadStore, Status::AeadInvalid)
    );
    let mut denied = store.clone();
    denied.key_handle = KeyHandle(7);
    assert_eq!(
        hsm.send(&denied).unwrap_err(),
        refused(Opcode::DbYubikeyAeadStore, Status::FunctionDisabled)
    );

    // STORE2: the AEAD's nonce differs from the public id.
    let (id2, secret2) = yubikey("ccccccccccck", [0x34; 16], [4, 4, 5, 5, 6, 6]);
    let n2 = Nonce(*b"random");
    let a2: [u8; 30] = aead::seal(&kh_key(6), kh, &n2, &*secret2.to_bytes())
        .unwrap()
        .as_bytes()
        .try_into()
        .unwrap();
    hsm.send(&cmd::DbYubikeyAeadStore2 {
        public_id: id2.to_nonce().unwrap(),
        key_handle: kh,
        aead: a2,
        nonce: n2,
    })
    .unwrap();

    let otp1 = parse_otp(ykgenerate(
        id.as_str(),
        &"33".repeat(16),
        "010102020303",
        3,
        0x100,
        0,
        1,
    ));
    assert_eq!(
        common::ksm_line(&hsm.db_validate_otp(&otp1).unwrap()),
        "OK counter=0003 low=0100 high=00 use=01"
    );
    assert_eq!(
        hsm.db_validate_otp(&otp1).unwrap_err(),
        refused(Opcode::DbOtpValidate, Status::OtpReplay)
    );
    let older = parse_otp(ykgenerate(
        id.as_str(),
        &"33".repeat(16),
        "010102020303",
        2,
        0x200,
        0,
        9,
    ));
    assert_eq!(
        hsm.db_validate_otp(&older).unwrap_err(),
        refused(Opcode::DbOtpValidate, Status::OtpReplay)
    );
    let newer = parse_otp(ykgenerate(
        id.as_str(),
        &"33".repeat(16),
        "010102020303",
        3,
        0x300,
        0,
        2,
    ));
    assert!(hsm.db_validate_otp(&newer).is_ok());
    let otp2 = parse_otp(ykgenerate(
        id2.as_str(),
        &"34".repeat(16),
        "040405050606",
        1,
        1,
        1,
        1,
    ));
    assert!(hsm.db_validate_otp(&otp2).is_ok());
    let unknown = parse_otp(ykgenerate(
        "cccccccccccl",
        &"34".repeat(16),
        "040405050606",
        1,
        1,
        1,
        1,
    ));
    assert_eq!(
        hsm.db_validate_otp(&unknown).unwrap_err(),
        refused(Opcode::DbOtpValidate, Status::IdNotFound)
    );
    let garbage = hsm_proto::otp::Otp {
        public_id: id.clone(),
        ciphertext: [0xaa; 16],
    };
    assert_eq!(
        hsm.db_validate_otp(&garbage).unwrap_err(),
        refused(Opcode::DbOtpValidate, Status::OtpInvalid)
    );
}

#[test]
fn aes_ecb_encrypt_decrypt_compare() {
    use aes::cipher::{BlockEncrypt, KeyInit};
    let (_dev, mut hsm) = unlocked_test_device();
    let plain = *b"sixteen byte blk";
    let resp = hsm
        .send(&cmd::AesEcbBlockEncrypt {
            key_handle: KeyHandle(14),
            block: SecretBytes::new(plain),
        })
        .unwrap();
    let mut expect = aes::Block::clone_from_slice(&plain);
    aes::Aes256::new_from_slice(&[14u8; 32])
        .unwrap()
        .encrypt_block(&mut expect);
    assert_eq!(resp.block.expose(), expect.as_slice());
    // Decrypt with the same key lives on kh 15, which has another key: use kh 0x2000 both ways.
    let ct = hsm
        .send(&cmd::AesEcbBlockEncrypt {
            key_handle: ALL,
            block: SecretBytes::new(plain),
        })
        .unwrap()
        .block;
    let ct: [u8; 16] = ct.expose().try_into().unwrap();
    assert_eq!(
        hsm.send(&cmd::AesEcbBlockDecrypt {
            key_handle: ALL,
            block: ct
        })
        .unwrap()
        .block
        .expose(),
        &plain
    );
    assert!(hsm
        .send(&cmd::AesEcbBlockDecryptCmp {
            key_handle: ALL,
            ciphertext: ct,
            plaintext: SecretBytes::new(plain)
        })
        .is_ok());
    assert_eq!(
        hsm.send(&cmd::AesEcbBlockDecryptCmp {
            key_handle: ALL,
            ciphertext: ct,
            plaintext: SecretBytes::new(*b"another block!!!")
        })
        .unwrap_err(),
        refused(Opcode::AesEcbBlockDecryptCmp, Status::Mismatch)
    );
    assert!(hsm
        .send(&cmd::AesEcbBlockDecrypt {
            key_handle: KeyHandle(15),
            block: ct
        })
        .is_ok());
    assert_eq!(
        hsm.send(&cmd::AesEcbBlockDecrypt {
            key_handle: KeyHandle(14),
            block: ct
        })
        .unwrap_err(),
        refused(Opcode::AesEcbBlockDecrypt, Status::FunctionDisabled)
    );
    assert_eq!(
        hsm.send(&cmd::AesEcbBlockEncrypt {
            key_handle: DISABLED,
            block: SecretBytes::new(plain)
        })
        .unwrap_err(),
        refused(Opcode::AesEcbBlockEncrypt, Status::FunctionDisabled)
    );
    // kh 16 may compare, but holds another key: the comparison fails.
    assert!(hsm
        .send(&cmd::AesEcbBlockDecryptCmp {
            key_handle: KeyHandle(16),
            ciphertext: ct,
            plaintext: SecretBytes::new(plain)
        })
        .is_err_and(|e| e == refused(Opcode::AesEcbBlockDecryptCmp, Status::Mismatch)));
}

fn hmac(hsm: &mut Hsm, kh: KeyHandle, flags: u8, data: &[u8]) -> hsm_proto::Result<Vec<u8>> {
    Ok(hsm
        .send(&cmd::HmacSha1Generate {
            key_handle: kh,
            flags: HmacFlags(flags),
            data: SecretBytes::new(data),
        })?
        .hash)
}

#[test]
fn hmac_sha1_single_and_multi_packet() {
    let (_dev, mut hsm) = unlocked_test_device();
    let kh = KeyHandle(0x3031);
    let nist = "0922d3405faa3d194f82a45830737d5cc6c75d24";
    assert_eq!(
        hex::encode(
            hmac(
                &mut hsm,
                kh,
                HmacFlags::RESET | HmacFlags::FINAL,
                b"Sample #2"
            )
            .unwrap()
        ),
        nist
    );
    assert!(hmac(&mut hsm, kh, HmacFlags::RESET, b"Sam")
        .unwrap()
        .is_empty());
    hsm.echo(b"interleaved").unwrap();
    assert!(hmac(&mut hsm, kh, 0, b"").unwrap().is_empty());
    assert!(hmac(&mut hsm, kh, 0, b"ple").unwrap().is_empty());
    assert_eq!(
        hex::encode(hmac(&mut hsm, kh, HmacFlags::FINAL, b" #2").unwrap()),
        nist
    );
    hmac(
        &mut hsm,
        kh,
        HmacFlags::RESET | HmacFlags::FINAL | HmacFlags::TO_BUFFER,
        b"Sample #2",
    )
    .unwrap();
    assert_eq!(hsm.buffer_random_load(1, 0).unwrap(), 20);
    assert_eq!(
        hmac(&mut hsm, KeyHandle(2), HmacFlags::RESET, b"x").unwrap_err(),
        refused(Opcode::HmacSha1Generate, Status::FunctionDisabled)
    );
}

#[test]
fn temp_key_load_and_use() {
    use aes::cipher::{BlockEncrypt, KeyInit};
    let (_dev, mut hsm) = unlocked_test_device();
    let block = SecretBytes::new(*b"0123456789abcdef");
    assert_eq!(
        hsm.send(&cmd::AesEcbBlockEncrypt {
            key_handle: KeyHandle::TEMP,
            block: block.clone()
        })
        .unwrap_err(),
        refused(Opcode::AesEcbBlockEncrypt, Status::KeyHandleInvalid)
    );
    let kh = KeyHandle(18);
    let n = Nonce(*b"tmpkey");
    let mut plain = vec![0x5a; 32];
    plain.extend_from_slice(&0xffff_ffffu32.to_le_bytes());
    let a = aead::seal(&kh_key(18), kh, &n, &plain).unwrap();
    hsm.send(&cmd::TempKeyLoad {
        nonce: n,
        key_handle: kh,
        aead: a.as_bytes().to_vec(),
    })
    .unwrap();
    let got = hsm
        .send(&cmd::AesEcbBlockEncrypt {
            key_handle: KeyHandle::TEMP,
            block: block.clone(),
        })
        .unwrap();
    let mut expect = aes::Block::clone_from_slice(block.expose());
    aes::Aes256::new_from_slice(&[0x5a; 32])
        .unwrap()
        .encrypt_block(&mut expect);
    assert_eq!(got.block.expose(), expect.as_slice());
    assert_eq!(
        hsm.send(&cmd::TempKeyLoad {
            nonce: n,
            key_handle: kh,
            aead: vec![0; 30]
        })
        .unwrap_err(),
        refused(Opcode::TempKeyLoad, Status::InvalidParameter)
    );
    assert_eq!(
        hsm.send(&cmd::TempKeyLoad {
            nonce: Nonce(*b"other!"),
            key_handle: kh,
            aead: a.as_bytes().to_vec()
        })
        .unwrap_err(),
        refused(Opcode::TempKeyLoad, Status::AeadInvalid)
    );
    assert_eq!(
        hsm.send(&cmd::TempKeyLoad {
            nonce: n,
            key_handle: KeyHandle(2),
            aead: a.as_bytes().to_vec()
        })
        .unwrap_err(),
        refused(Opcode::TempKeyLoad, Status::FunctionDisabled)
    );
}

#[test]
fn nonce_echo_random_reseed_system_info() {
    let (_dev, mut hsm) = unlocked_test_device();
    let n1 = hsm.nonce_get(1).unwrap().as_u64();
    let n2 = hsm.nonce_get(9).unwrap().as_u64();
    assert_eq!(n2, n1 + 1);
    assert_eq!(hsm.nonce_get(1).unwrap().as_u64(), n2 + 9);
    assert_eq!(hsm.nonce_get(0).unwrap().as_u64(), n2 + 10);
    assert_eq!(hsm.nonce_get(0).unwrap().as_u64(), n2 + 10);

    let long: Vec<u8> = (0..95).collect();
    assert_eq!(hsm.echo(&long).unwrap(), long);
    assert!(matches!(hsm.echo(&[0; 96]), Err(Error::TooLong { .. })));
    assert_eq!(hsm.random(32).unwrap().len(), 32);
    assert_ne!(hsm.random(16).unwrap(), hsm.random(16).unwrap());
    hsm.send(&cmd::RandomReseed {
        seed: SecretBytes::new([7u8; 32]),
    })
    .unwrap();
    let info = hsm.system_info().unwrap();
    assert_eq!((info.version(), info.protocol), ((1, 0, 4), 1));
    assert_eq!(hex::encode(info.system_uid), "000102030405060708090a0b");
    // The 0.x unlock command does not exist on firmware 1.0.
    assert_eq!(
        hsm.key_storage_unlock(b"x").unwrap_err(),
        refused(Opcode::KeyStorageUnlock, Status::InvalidParameter)
    );
}

#[test]
fn firmware_0_9_password_unlock() {
    let cfg = hsm_proto::emulator::EmulatorConfig::parse(&format!(
        "firmware = \"0.9.9\"\nmaster_key = \"{}\"\n[[key]]\nhandle = 1\nkey = \"{}\"\nflags = [\"AEAD_GENERATE\"]\n",
        hex::encode(b"sixteen-byte-pwd"),
        "01".repeat(32)
    ))
    .unwrap()
    .resolve()
    .unwrap();
    let dev = Device::start(&cfg);
    let mut hsm = dev.open();
    assert_eq!(
        hsm.aead_generate(KeyHandle(1), Nonce(*b"nonce1"), b"x")
            .unwrap_err(),
        refused(Opcode::AeadGenerate, Status::KeyStorageLocked)
    );
    assert_eq!(
        hsm.key_storage_unlock(b"wrong").unwrap_err(),
        refused(Opcode::KeyStorageUnlock, Status::KeyStorageLocked)
    );
    hsm.key_storage_unlock(b"sixteen-byte-pwd").unwrap();
    // Firmware before 1.0.4 does not ask for USER_NONCE.
    assert!(hsm
        .aead_generate(KeyHandle(1), Nonce(*b"nonce1"), b"x")
        .is_ok());
    assert_eq!(
        hsm.key_store_decrypt(&[0; 32]).unwrap_err(),
        refused(Opcode::KeyStoreDecrypt, Status::InvalidParameter)
    );
}

#[test]
fn monitor_exit_only_in_debug_mode() {
    let (dev, mut hsm) = unlocked_test_device();
    hsm.monitor_exit().unwrap();
    assert_eq!(hsm.echo(b"still HSM mode").unwrap(), b"still HSM mode");
    assert!(!dev.emu.with_engine(|e| e.in_console()));

    let cfg = hsm_proto::emulator::EmulatorConfig::parse(&format!(
        "system_flags = \"ALL\"\n[[key]]\nhandle = 1\nkey = \"{}\"\n",
        "01".repeat(32)
    ))
    .unwrap()
    .resolve()
    .unwrap();
    let dbg = Device::start(&cfg);
    let mut hsm = dbg.open();
    hsm.monitor_exit().unwrap();
    test_support::eventually(
        "MONITOR_EXIT drops to the console",
        std::time::Duration::from_secs(5),
        || dbg.emu.with_engine(|e| e.in_console()),
    );
    assert!(matches!(hsm.echo(b"x"), Err(Error::ConfigMode { .. })));
}

#[test]
fn flag_table_matches_the_pyhsm_set_up() {
    // who_can: a key-handle command is refused by every single-flag handle but its own.
    let (_dev, mut hsm) = unlocked_test_device();
    for kh in 1..=31u32 {
        let r = hsm.aead_generate(KeyHandle(kh), Nonce::ZERO, b"who can");
        assert_eq!(
            r.is_ok(),
            Flags(1 << (kh - 1)) == Flags::AEAD_GENERATE,
            "kh {kh}"
        );
    }
}
