//! Helpers shared by the integration tests: an emulator on a real pty, and OTPs made by
//! Yubico's `ykgenerate`.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report
#![allow(dead_code)]

use hsm_proto::emulator::{EmulatorConfig, PtyEmulator, ResolvedConfig};
use hsm_proto::otp::Otp;
use hsm_proto::{Hsm, Timeouts};

/// Parses a fixture emulator configuration.
pub fn config(name: &str) -> ResolvedConfig {
    EmulatorConfig::parse(&test_support::emulator_fixture(name))
        .expect("parse")
        .resolve()
        .expect("resolve")
}

/// An emulator on a pty, its link in a temp dir that lives as long as it does.
pub struct Device {
    pub emu: PtyEmulator,
    pub dir: tempfile::TempDir,
}

impl Device {
    pub fn start(cfg: &ResolvedConfig) -> Device {
        let dir = tempfile::tempdir().expect("tempdir");
        let emu = PtyEmulator::start(cfg, &dir.path().join("yhsm")).expect("emulator");
        Device { emu, dir }
    }

    /// Opens the driver through the serial path, as for `/dev/ttyACM0`.
    pub fn open(&self) -> Hsm {
        Hsm::open_path(self.emu.link(), Timeouts::default()).expect("open")
    }

    pub fn open_with(&self, t: Timeouts) -> hsm_proto::Result<Hsm> {
        Hsm::open_path(self.emu.link(), t)
    }
}

pub use test_support::ykgenerate;

/// What a KSM answers for `d` (`OK counter=%04x low=%04x high=%02x use=%02x`): the tests'
/// own reading of the counters, to compare with the vectors' expected lines. (The daemon's
/// formatter is `ksm`'s; the driver knows no answer line.)
pub fn ksm_line(d: &hsm_proto::DecodedOtp) -> String {
    let c = d.counters();
    format!(
        "OK counter={:04x} low={:04x} high={:02x} use={:02x}",
        c.use_ctr, c.ts_low, c.ts_high, c.session_ctr
    )
}

/// An OTP made by [`ykgenerate`], parsed.
pub fn parse_otp(text: String) -> Otp {
    Otp::parse(&text).expect("ykgenerate output parses")
}

/// Admin YubiKey 1 of `lock-test.toml` (ours, not pyhsm's admin key).
pub fn admin_otp(counter: u16, use_: u8) -> Otp {
    parse_otp(ykgenerate(
        "ccccccccccdb",
        "00112233445566778899aabbccddeeff",
        "0a0b0c0d0e0f",
        counter,
        0x1000,
        0x01,
        use_,
    ))
}

/// The master key of `lock-test.toml` (ours, not pyhsm's passphrase).
pub const MASTER_KEY: [u8; 32] = [0x4d; 32];

/// Opens `lock-test.toml` (pyhsm's test key handles, our own lock) and unlocks it (master
/// key, then admin OTP).
pub fn unlocked_test_device() -> (Device, Hsm) {
    let dev = Device::start(&config("lock-test.toml"));
    let mut hsm = dev.open();
    hsm.key_store_decrypt(&MASTER_KEY).expect("master key");
    hsm.hsm_unlock(&admin_otp(1, 1)).expect("admin otp");
    (dev, hsm)
}

/// A YubiKey whose AEAD under kh 0x2000 (all flags in pyhsm's set-up, key `2000` x 16) was
/// made offline, and a `ykgenerate` OTP of it with the given counters: decoding it proves
/// the device holds that key under that handle.
pub struct Kh2000Case {
    pub id: hsm_proto::PublicId,
    pub aead: hsm_proto::YubiKeyAead,
    pub otp: Otp,
}

impl Kh2000Case {
    pub fn new(counter: u16, low: u16, high: u8, use_: u8) -> Kh2000Case {
        let key = hsm_proto::AesKey::from_hex(&"2000".repeat(16)).unwrap();
        let id = hsm_proto::PublicId::new("cccccccccccb").unwrap();
        let secret = hsm_proto::YubiKeySecret {
            key: [7; 16],
            uid: [1, 2, 3, 4, 5, 6],
        };
        let kh = hsm_proto::KeyHandle(0x2000);
        let a =
            hsm_proto::aead::seal(&key, kh, &id.to_nonce().unwrap(), &*secret.to_bytes()).unwrap();
        let aead = hsm_proto::YubiKeyAead::try_from(&a).unwrap();
        let otp = parse_otp(ykgenerate(
            id.as_str(),
            &"07".repeat(16),
            "010203040506",
            counter,
            low,
            high,
            use_,
        ));
        Kh2000Case { id, aead, otp }
    }

    /// `AEAD_YUBIKEY_OTP_DECODE` of the OTP with kh 0x2000.
    pub fn decode(&self, hsm: &mut Hsm) -> hsm_proto::Result<hsm_proto::DecodedOtp> {
        let nonce = self.id.to_nonce().unwrap();
        hsm.decode_otp(&self.otp, hsm_proto::KeyHandle(0x2000), nonce, &self.aead)
    }
}
