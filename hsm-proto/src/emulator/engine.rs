//! The device model: key store, lock state, internal database, buffer, nonce counter, temp
//! key and HMAC state, and one handler per command. Bytes in, bytes out: the pty server and
//! the in-process soft HSM both drive it through [`Engine::feed`].

mod console;

use std::collections::BTreeMap;

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use hmac::{Hmac, Mac};
use otp_core::otp::{self, OtpCounters};
use otp_core::{aead, Aead, AesKey, KeyHandle, Nonce, SecretBytes, YubiKeySecret};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use super::config::ResolvedConfig;
use crate::cmd::{self, Command, HmacFlags};
use crate::codec::{Assembler, Frame};
use crate::{Flags, Opcode, Status};

/// Capacity of the internal YubiKey database (per Yubico's documentation).
pub const DB_CAPACITY: usize = 1024;

#[derive(Clone)]
struct KeySlot {
    key: AesKey,
    flags: Flags,
    disabled: bool,
}

struct DbEntry {
    secret: YubiKeySecret,
    use_ctr: u16,
    session_ctr: u8,
}

enum Mode {
    /// Framing binary commands.
    Hsm { frames: Assembler },
    /// At the configuration console.
    Console(console::Console),
}

/// A software YubiHSM 1.
pub struct Engine {
    firmware: (u8, u8, u8),
    system_uid: [u8; 12],
    system_flags: Flags,
    /// Configured with `hsm` (or a configuration file); false after `zap`.
    configured: bool,
    /// The key table in use (RAM); `keyload` and `keydis` edit it.
    keys: BTreeMap<KeyHandle, KeySlot>,
    /// The key table in flash, which a power cycle restores: written by `keycommit` (on
    /// firmware 0.x, which has no `keycommit`, by every edit).
    committed_keys: BTreeMap<KeyHandle, KeySlot>,
    /// The key table (or, after `hsm`, the whole key store) differs from flash.
    keys_changed: bool,
    /// The flags `keyload` gives the keys it loads (`flags <hex>`).
    load_flags: Flags,
    /// The next this many `keyload` lines store a key with one digit changed (a test knob
    /// that plays an operator's typing error).
    mistype: usize,
    /// The configuration password `hsm` asked for (kept, never asked back: the sources do
    /// not show when the device would).
    cfg_password: zeroize::Zeroizing<Vec<u8>>,
    master_key: Option<AesKey>,
    /// Key store encrypted (1.0) / locked (0.x): set at power-on when a master key exists.
    store_locked: bool,
    admin_ids: Vec<Nonce>,
    /// An admin OTP was accepted since power-on (needed only when admin YubiKeys exist).
    otp_unlocked: bool,
    db: BTreeMap<[u8; 6], DbEntry>,
    buffer: [u8; 64],
    buffer_len: usize,
    /// The buffer holds host-supplied bytes, so sealing it needs `YSM_BUFFER_LOAD`.
    buffer_host_data: bool,
    nonce_volatile: u32,
    power_ups: u16,
    temp_key: Option<KeySlot>,
    hmac: Option<(KeyHandle, Hmac<Sha1>)>,
    rng: StdRng,
    mode: Mode,
}

type Reply<R> = std::result::Result<R, Status>;

impl Engine {
    /// Builds a device as configured, freshly powered on.
    pub fn new(cfg: &ResolvedConfig) -> Engine {
        let keys: BTreeMap<KeyHandle, KeySlot> = cfg
            .keys
            .iter()
            .map(|(kh, (key, flags, disabled))| {
                (
                    *kh,
                    KeySlot {
                        key: key.clone(),
                        flags: *flags,
                        disabled: *disabled,
                    },
                )
            })
            .collect();
        let db = cfg
            .yubikeys
            .iter()
            .filter_map(|(id, secret, u, s)| {
                let n = id.to_nonce().ok()?;
                Some((
                    n.0,
                    DbEntry {
                        secret: secret.clone(),
                        use_ctr: *u,
                        session_ctr: *s,
                    },
                ))
            })
            .collect();
        let mut e = Engine {
            firmware: cfg.firmware,
            system_uid: cfg.system_uid,
            system_flags: cfg.system_flags,
            configured: !cfg.keys.is_empty()
                || cfg.master_key.is_some()
                || !cfg.admin_yubikeys.is_empty(),
            committed_keys: keys.clone(),
            keys_changed: false,
            keys,
            load_flags: Flags(0),
            mistype: 0,
            cfg_password: Default::default(),
            master_key: cfg.master_key.clone(),
            store_locked: false,
            admin_ids: cfg
                .admin_yubikeys
                .iter()
                .filter_map(|id| id.to_nonce().ok())
                .collect(),
            otp_unlocked: false,
            db,
            buffer: [0; 64],
            buffer_len: 0,
            buffer_host_data: false,
            nonce_volatile: 0,
            power_ups: 0,
            temp_key: None,
            hmac: None,
            rng: StdRng::from_entropy(),
            mode: Mode::Hsm {
                frames: Assembler::new(),
            },
        };
        e.power_cycle();
        if cfg.faults.config_mode {
            e.enter_console();
        }
        e
    }

    /// Power off and on: RAM state is lost, the key store locks again if it has a master key,
    /// the power-up count in the nonce advances.
    pub fn power_cycle(&mut self) {
        self.keys = self.committed_keys.clone();
        self.keys_changed = false;
        self.load_flags = Flags(0);
        self.store_locked = self.master_key.is_some();
        self.otp_unlocked = false;
        self.buffer = [0; 64];
        self.buffer_len = 0;
        self.buffer_host_data = false;
        self.nonce_volatile = 0;
        self.power_ups = self.power_ups.wrapping_add(1);
        self.temp_key = None;
        self.hmac = None;
        self.mode = Mode::Hsm {
            frames: Assembler::new(),
        };
    }

    /// Drops to the configuration console (button held at plug-in, or `MONITOR_EXIT`);
    /// returns the prompt the console prints.
    pub fn enter_console(&mut self) -> Vec<u8> {
        self.mode = Mode::Console(console::Console::default());
        let mut out = b"\r\n".to_vec();
        out.extend_from_slice(self.prompt().text().as_bytes());
        out
    }

    /// True while at the console.
    pub fn in_console(&self) -> bool {
        matches!(self.mode, Mode::Console(_))
    }

    /// The next `n` keys typed at `keyload` are stored with one hex digit changed, as an
    /// operator's typing error would store them (for tests of `ksm provision`'s check).
    pub fn mistype_next_keys(&mut self, n: usize) {
        self.mistype = n;
    }

    /// True while key-handle operations answer KEY_STORAGE_LOCKED.
    pub fn is_locked(&self) -> bool {
        self.store_locked
            || (self.firmware >= (1, 0, 0) && !self.admin_ids.is_empty() && !self.otp_unlocked)
    }

    /// Takes bytes from the line and returns the bytes the device sends back.
    pub fn feed(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &b in input {
            match &mut self.mode {
                Mode::Console(_) => self.console_byte(b, &mut out),
                Mode::Hsm { frames } => {
                    // The resync burst and line noise between frames are skipped there.
                    if let Some(frame) = frames.push(b) {
                        out.extend_from_slice(&self.dispatch(frame.cmd_byte(), frame.payload()));
                    }
                }
            }
        }
        out
    }

    /// Runs one frame. Unknown opcodes and requests of the wrong length get a bare
    /// INVALID_PARAMETER status (the real device's reaction is undocumented).
    fn dispatch(&mut self, op: u8, payload: &[u8]) -> Vec<u8> {
        let fw = self.firmware;
        match Opcode::from_u8(op) {
            Opcode::AeadGenerate => self.run(payload, Self::aead_generate),
            Opcode::BufferAeadGenerate => self.run(payload, Self::buffer_aead_generate),
            Opcode::RandomAeadGenerate => self.run(payload, Self::random_aead_generate),
            Opcode::AeadDecryptCmp => self.run(payload, Self::aead_decrypt_cmp),
            Opcode::DbYubikeyAeadStore => self.run(payload, Self::db_store),
            Opcode::DbYubikeyAeadStore2 if fw >= (1, 0, 4) => self.run(payload, Self::db_store2),
            Opcode::AeadYubikeyOtpDecode => self.run(payload, Self::otp_decode),
            Opcode::DbOtpValidate => self.run(payload, Self::db_otp_validate),
            Opcode::AesEcbBlockEncrypt => self.run(payload, Self::ecb_encrypt),
            Opcode::AesEcbBlockDecrypt => self.run(payload, Self::ecb_decrypt),
            Opcode::AesEcbBlockDecryptCmp => self.run(payload, Self::ecb_decrypt_cmp),
            Opcode::HmacSha1Generate => self.run(payload, Self::hmac_generate),
            Opcode::TempKeyLoad => self.run(payload, Self::temp_key_load),
            Opcode::BufferLoad => self.run(payload, Self::buffer_load),
            Opcode::BufferRandomLoad => self.run(payload, Self::buffer_random_load),
            Opcode::NonceGet => self.run(payload, Self::nonce_get),
            Opcode::Echo => self.run(payload, |_, r: cmd::Echo| cmd::EchoResponse {
                data: r.data,
            }),
            Opcode::RandomGenerate => self.run(payload, Self::random_generate),
            Opcode::RandomReseed => self.run(payload, |_, _: cmd::RandomReseed| {
                cmd::StatusResponse { status: Status::Ok }
            }),
            Opcode::SystemInfoQuery => self.run(payload, Self::system_info),
            Opcode::KeyStorageUnlock if fw < (1, 0, 0) => {
                self.run(payload, Self::key_storage_unlock)
            }
            Opcode::HsmUnlock if fw >= (1, 0, 0) => self.run(payload, Self::hsm_unlock),
            Opcode::KeyStoreDecrypt if fw >= (1, 0, 0) => {
                self.run(payload, Self::key_store_decrypt)
            }
            Opcode::MonitorExit => self.monitor_exit(payload),
            _ => bare_status(op, Status::InvalidParameter),
        }
    }

    fn run<C: Command>(
        &mut self,
        payload: &[u8],
        handler: impl FnOnce(&mut Self, C) -> C::Response,
    ) -> Vec<u8> {
        match cmd::decode_exact::<C>(C::OPCODE, payload) {
            Ok(req) => {
                let resp = handler(self, req);
                cmd::encode_response::<C>(&resp)
                    .unwrap_or_else(|_| bare_status(C::OPCODE.to_u8(), Status::InvalidParameter))
            }
            Err(_) => bare_status(C::OPCODE.to_u8(), Status::InvalidParameter),
        }
    }

    // ---- permission and key checks, in the device's order ----

    /// The key for `kh` if the store is open, the handle exists and is enabled, and both the
    /// key's flags and the system flags permit one of `any_of`.
    fn key(&self, kh: KeyHandle, any_of: &[Flags]) -> Reply<&KeySlot> {
        if self.is_locked() {
            return Err(Status::KeyStorageLocked);
        }
        let slot = if kh == KeyHandle::TEMP {
            self.temp_key.as_ref()
        } else {
            self.keys.get(&kh)
        }
        .ok_or(Status::KeyHandleInvalid)?;
        if slot.disabled {
            return Err(Status::FunctionDisabled);
        }
        if !any_of
            .iter()
            .any(|f| slot.flags.contains(*f) && self.system_flags.contains(*f))
        {
            return Err(Status::FunctionDisabled);
        }
        Ok(slot)
    }

    /// The nonce to seal with: the device's own when zero was asked for; a caller's nonce
    /// needs `YSM_USER_NONCE` on firmware 1.0.4 and later.
    fn seal_nonce(&mut self, requested: Nonce, slot_flags: Flags) -> Reply<Nonce> {
        if requested == Nonce::ZERO {
            return Ok(self.next_nonce(1));
        }
        if self.firmware >= (1, 0, 4) && !slot_flags.contains(Flags::USER_NONCE) {
            return Err(Status::FunctionDisabled);
        }
        Ok(requested)
    }

    fn next_nonce(&mut self, post_increment: u16) -> Nonce {
        let mut n = [0u8; 6];
        n[..4].copy_from_slice(&self.nonce_volatile.to_le_bytes());
        n[4..].copy_from_slice(&self.power_ups.to_le_bytes());
        self.nonce_volatile = self.nonce_volatile.wrapping_add(u32::from(post_increment));
        Nonce(n)
    }

    fn seal(
        &mut self,
        kh: KeyHandle,
        nonce: Nonce,
        need: Flags,
        data: &[u8],
    ) -> cmd::AeadGenerateResponse {
        let result = (|| {
            let flags = self.key(kh, &[need])?.flags;
            if data.is_empty() || data.len() > aead::MAX_PLAINTEXT {
                return Err(Status::InvalidParameter);
            }
            let used = self.seal_nonce(nonce, flags)?;
            let key = &self.key(kh, &[need])?.key;
            let a = aead::seal(key, kh, &used, data).map_err(|_| Status::InvalidParameter)?;
            Ok((used, a))
        })();
        match result {
            Ok((n, a)) => cmd::AeadGenerateResponse {
                nonce: n,
                key_handle: kh,
                status: Status::Ok,
                aead: a.as_bytes().to_vec(),
            },
            Err(s) => cmd::AeadGenerateResponse::refused(nonce, kh, s),
        }
    }

    fn open(
        &self,
        kh: KeyHandle,
        need: &[Flags],
        nonce: &Nonce,
        aead_bytes: &[u8],
    ) -> Reply<zeroize::Zeroizing<Vec<u8>>> {
        let slot = self.key(kh, need)?;
        let a = Aead::new(aead_bytes).map_err(|_| Status::InvalidParameter)?;
        aead::open(&slot.key, kh, nonce, &a).map_err(|_| Status::AeadInvalid)
    }

    // ---- handlers ----

    fn aead_generate(&mut self, r: cmd::AeadGenerate) -> cmd::AeadGenerateResponse {
        self.seal(r.key_handle, r.nonce, Flags::AEAD_GENERATE, r.data.expose())
    }

    fn buffer_aead_generate(&mut self, r: cmd::BufferAeadGenerate) -> cmd::AeadGenerateResponse {
        if self.firmware >= (0, 9, 9) && self.buffer_host_data {
            if let Err(s) = self
                .key(r.key_handle, &[Flags::BUFFER_AEAD_GENERATE])
                .and_then(|k| {
                    if k.flags.contains(Flags::BUFFER_LOAD) {
                        Ok(())
                    } else {
                        Err(Status::FunctionDisabled)
                    }
                })
            {
                return cmd::AeadGenerateResponse::refused(r.nonce, r.key_handle, s);
            }
        }
        let data = SecretBytes::new(&self.buffer[..self.buffer_len]);
        self.seal(
            r.key_handle,
            r.nonce,
            Flags::BUFFER_AEAD_GENERATE,
            data.expose(),
        )
    }

    fn random_aead_generate(&mut self, r: cmd::RandomAeadGenerate) -> cmd::AeadGenerateResponse {
        if r.len == 0 || usize::from(r.len) > aead::MAX_PLAINTEXT {
            return cmd::AeadGenerateResponse::refused(
                r.nonce,
                r.key_handle,
                Status::InvalidParameter,
            );
        }
        let mut data = SecretBytes::new(vec![0u8; usize::from(r.len)]);
        let mut bytes = data.expose().to_vec();
        self.rng.fill_bytes(&mut bytes);
        data = SecretBytes::new(bytes);
        self.seal(
            r.key_handle,
            r.nonce,
            Flags::RANDOM_AEAD_GENERATE,
            data.expose(),
        )
    }

    /// Data is `plaintext ‖ AEAD` (plaintext as long as the AEAD's inside), or the AEAD alone
    /// to authenticate it. A split whose MAC fails is retried as "AEAD alone"; a MAC that
    /// fails both ways is AEAD_INVALID; a good MAC over other plaintext is MISMATCH.
    fn aead_decrypt_cmp(&mut self, r: cmd::AeadDecryptCmp) -> cmd::AeadDecryptCmpResponse {
        let d = r.data.expose();
        let status = (|| {
            self.key(r.key_handle, &[Flags::AEAD_DECRYPT_CMP])?;
            if d.len() < aead::MAC_LEN {
                return Err(Status::InvalidParameter);
            }
            if (d.len() - aead::MAC_LEN) % 2 == 0 {
                let (plain, a) = d.split_at((d.len() - aead::MAC_LEN) / 2);
                if let Ok(inner) = self.open(r.key_handle, &[Flags::AEAD_DECRYPT_CMP], &r.nonce, a)
                {
                    return if *inner == plain {
                        Ok(())
                    } else {
                        Err(Status::Mismatch)
                    };
                }
            }
            self.open(r.key_handle, &[Flags::AEAD_DECRYPT_CMP], &r.nonce, d)
                .map(|_| ())
        })();
        cmd::AeadDecryptCmpResponse {
            nonce: r.nonce,
            key_handle: r.key_handle,
            status: status.err().unwrap_or(Status::Ok),
        }
    }

    fn db_insert(
        &mut self,
        public_id: Nonce,
        kh: KeyHandle,
        nonce: &Nonce,
        a: &[u8; 30],
    ) -> Status {
        let result = (|| {
            let plain = self.open(kh, &[Flags::DB_YUBIKEY_AEAD_STORE], nonce, a)?;
            let secret = YubiKeySecret::from_bytes(&plain).map_err(|_| Status::AeadInvalid)?;
            if public_id == Nonce::ZERO {
                return Err(Status::InvalidParameter);
            }
            if self.db.contains_key(&public_id.0) {
                return Err(Status::IdDuplicate);
            }
            if self.db.len() >= DB_CAPACITY {
                return Err(Status::DbFull);
            }
            self.db.insert(
                public_id.0,
                DbEntry {
                    secret,
                    use_ctr: 0,
                    session_ctr: 0,
                },
            );
            Ok(())
        })();
        result.err().unwrap_or(Status::Ok)
    }

    fn db_store(&mut self, r: cmd::DbYubikeyAeadStore) -> cmd::DbStoreResponse {
        let status = self.db_insert(r.public_id, r.key_handle, &r.public_id, &r.aead);
        cmd::DbStoreResponse {
            public_id: r.public_id,
            key_handle: r.key_handle,
            status,
        }
    }

    fn db_store2(&mut self, r: cmd::DbYubikeyAeadStore2) -> cmd::DbStoreResponse {
        let status = self.db_insert(r.public_id, r.key_handle, &r.nonce, &r.aead);
        cmd::DbStoreResponse {
            public_id: r.public_id,
            key_handle: r.key_handle,
            status,
        }
    }

    fn otp_decode(&mut self, r: cmd::AeadOtpDecode) -> cmd::AeadOtpDecodeResponse {
        let result = (|| {
            let plain = self.open(
                r.key_handle,
                &[Flags::AEAD_YUBIKEY_OTP_DECODE],
                &r.public_id,
                &r.aead,
            )?;
            let secret = YubiKeySecret::from_bytes(&plain).map_err(|_| Status::AeadInvalid)?;
            otp::decrypt(&secret, &r.otp).map_err(|_| Status::OtpInvalid)
        })();
        let (counters, status) = match result {
            Ok(c) => (c, Status::Ok),
            Err(s) => (OtpCounters::default(), s),
        };
        cmd::AeadOtpDecodeResponse {
            public_id: r.public_id,
            key_handle: r.key_handle,
            counters,
            status,
        }
    }

    /// Validates an OTP against a database entry: CRC and uid, then the replay rule, the
    /// (use, session) pair strictly greater than the stored one.
    fn validate_db_otp(&mut self, id: &Nonce, ct: &[u8; 16]) -> Reply<OtpCounters> {
        let entry = self.db.get_mut(&id.0).ok_or(Status::IdNotFound)?;
        let c = otp::decrypt(&entry.secret, ct).map_err(|_| Status::OtpInvalid)?;
        if (c.use_ctr, c.session_ctr) <= (entry.use_ctr, entry.session_ctr) {
            return Err(Status::OtpReplay);
        }
        entry.use_ctr = c.use_ctr;
        entry.session_ctr = c.session_ctr;
        Ok(c)
    }

    fn db_otp_validate(&mut self, r: cmd::DbOtpValidate) -> cmd::DbOtpValidateResponse {
        let result = if self.system_flags.contains(Flags::DB_YUBIKEY_OTP_VALIDATE) {
            self.validate_db_otp(&r.public_id, &r.otp)
        } else {
            Err(Status::FunctionDisabled)
        };
        let (counters, status) = match result {
            Ok(c) => (c, Status::Ok),
            Err(s) => (OtpCounters::default(), s),
        };
        cmd::DbOtpValidateResponse {
            public_id: r.public_id,
            counters,
            status,
        }
    }

    fn ecb(
        &self,
        kh: KeyHandle,
        need: &[Flags],
        block: &[u8],
        encrypt: bool,
    ) -> Reply<SecretBytes> {
        let slot = self.key(kh, need)?;
        let mut b = aes::Block::clone_from_slice(block);
        let k = slot.key.expose();
        macro_rules! go {
            ($c:ty) => {{
                let c = <$c>::new_from_slice(k).map_err(|_| Status::InvalidParameter)?;
                if encrypt {
                    c.encrypt_block(&mut b)
                } else {
                    c.decrypt_block(&mut b)
                }
            }};
        }
        match k.len() {
            16 => go!(aes::Aes128),
            24 => go!(aes::Aes192),
            _ => go!(aes::Aes256),
        }
        let out = SecretBytes::new(b.as_slice());
        zeroize::Zeroize::zeroize(b.as_mut_slice());
        Ok(out)
    }

    fn ecb_reply(kh: KeyHandle, r: Reply<SecretBytes>) -> cmd::AesEcbResponse {
        match r {
            Ok(block) => cmd::AesEcbResponse {
                key_handle: kh,
                block,
                status: Status::Ok,
            },
            Err(s) => cmd::AesEcbResponse {
                key_handle: kh,
                block: SecretBytes::new([0u8; 16]),
                status: s,
            },
        }
    }

    fn ecb_encrypt(&mut self, r: cmd::AesEcbBlockEncrypt) -> cmd::AesEcbResponse {
        Self::ecb_reply(
            r.key_handle,
            self.ecb(
                r.key_handle,
                &[Flags::AES_ECB_BLOCK_ENCRYPT],
                r.block.expose(),
                true,
            ),
        )
    }

    fn ecb_decrypt(&mut self, r: cmd::AesEcbBlockDecrypt) -> cmd::AesEcbResponse {
        Self::ecb_reply(
            r.key_handle,
            self.ecb(
                r.key_handle,
                &[Flags::AES_ECB_BLOCK_DECRYPT],
                &r.block,
                false,
            ),
        )
    }

    /// DECRYPT_CMP is permitted by its own flag or by DECRYPT ("decrypt implies compare").
    fn ecb_decrypt_cmp(&mut self, r: cmd::AesEcbBlockDecryptCmp) -> cmd::AesEcbCmpResponse {
        let need = [
            Flags::AES_ECB_BLOCK_DECRYPT_CMP,
            Flags::AES_ECB_BLOCK_DECRYPT,
        ];
        let status = match self.ecb(r.key_handle, &need, &r.ciphertext, false) {
            Ok(p) if p == r.plaintext => Status::Ok,
            Ok(_) => Status::Mismatch,
            Err(s) => s,
        };
        cmd::AesEcbCmpResponse {
            key_handle: r.key_handle,
            status,
        }
    }

    fn hmac_generate(&mut self, r: cmd::HmacSha1Generate) -> cmd::HmacSha1Response {
        let kh = r.key_handle;
        let result = (|| {
            let key = self
                .key(kh, &[Flags::HMAC_SHA1_GENERATE])?
                .key
                .expose()
                .to_vec();
            let key = zeroize::Zeroizing::new(key);
            if r.flags.has(HmacFlags::RESET) {
                let mac = <Hmac<Sha1> as Mac>::new_from_slice(&key)
                    .map_err(|_| Status::InvalidParameter)?;
                self.hmac = Some((kh, mac));
            }
            let (_, mac) = self.hmac.as_mut().ok_or(Status::InvalidParameter)?;
            mac.update(r.data.expose());
            if !r.flags.has(HmacFlags::FINAL) {
                return Ok(Vec::new());
            }
            let (_, mac) = self.hmac.take().ok_or(Status::InvalidParameter)?;
            let hash = mac.finalize().into_bytes().to_vec();
            if r.flags.has(HmacFlags::TO_BUFFER) {
                self.buffer = [0; 64];
                self.buffer[..20].copy_from_slice(&hash);
                self.buffer_len = 20;
                self.buffer_host_data = false;
            }
            Ok(hash)
        })();
        match result {
            Ok(hash) => cmd::HmacSha1Response {
                key_handle: kh,
                status: Status::Ok,
                hash,
            },
            Err(s) => cmd::HmacSha1Response {
                key_handle: kh,
                status: s,
                hash: Vec::new(),
            },
        }
    }

    fn temp_key_load(&mut self, r: cmd::TempKeyLoad) -> cmd::TempKeyLoadResponse {
        let result = (|| {
            if ![28, 32, 36, 44].contains(&r.aead.len()) {
                return Err(Status::InvalidParameter);
            }
            let plain = self.open(r.key_handle, &[Flags::TEMP_KEY_LOAD], &r.nonce, &r.aead)?;
            let (k, f) = plain.split_at(plain.len() - 4);
            // A 20-byte key is an HMAC key; AES uses it zero-padded to 32 bytes.
            let key = if k.len() == 20 {
                let mut padded = zeroize::Zeroizing::new([0u8; 32]);
                padded[..20].copy_from_slice(k);
                AesKey::new(&*padded)
            } else {
                AesKey::new(k)
            }
            .map_err(|_| Status::InvalidParameter)?;
            let flags = Flags(u32::from_le_bytes([f[0], f[1], f[2], f[3]]));
            self.temp_key = Some(KeySlot {
                key,
                flags,
                disabled: false,
            });
            Ok(())
        })();
        cmd::TempKeyLoadResponse {
            nonce: r.nonce,
            key_handle: r.key_handle,
            status: result.err().unwrap_or(Status::Ok),
        }
    }

    /// Offset 0 empties the buffer first; bytes past 63 are dropped; the count never
    /// shrinks otherwise.
    fn buffer_write(&mut self, offset: u8, data: &[u8]) -> cmd::BufferLoadResponse {
        let off = usize::from(offset);
        if off == 0 {
            self.buffer = [0; 64];
            self.buffer_len = 0;
        }
        if !data.is_empty() {
            for (i, b) in data.iter().enumerate() {
                if off + i < 64 {
                    self.buffer[off + i] = *b;
                }
            }
            self.buffer_len = self.buffer_len.max((off + data.len()).min(64));
        }
        cmd::BufferLoadResponse {
            count: self.buffer_len as u8,
        }
    }

    fn buffer_load(&mut self, r: cmd::BufferLoad) -> cmd::BufferLoadResponse {
        if r.offset == 0 {
            self.buffer_host_data = false;
        }
        if !r.data.is_empty() {
            self.buffer_host_data = true;
        }
        self.buffer_write(r.offset, r.data.expose())
    }

    fn buffer_random_load(&mut self, r: cmd::BufferRandomLoad) -> cmd::BufferLoadResponse {
        if r.offset == 0 {
            self.buffer_host_data = false;
        }
        let mut data = vec![0u8; usize::from(r.len).min(64)];
        self.rng.fill_bytes(&mut data);
        let resp = self.buffer_write(r.offset, &data);
        zeroize::Zeroize::zeroize(&mut data);
        resp
    }

    fn nonce_get(&mut self, r: cmd::NonceGet) -> cmd::NonceGetResponse {
        cmd::NonceGetResponse {
            status: Status::Ok,
            nonce: self.next_nonce(r.post_increment),
        }
    }

    fn random_generate(&mut self, r: cmd::RandomGenerate) -> cmd::RandomGenerateResponse {
        let n = if usize::from(r.len) < crate::codec::MAX_PAYLOAD {
            usize::from(r.len)
        } else {
            0
        };
        let mut data = vec![0u8; n];
        self.rng.fill_bytes(&mut data);
        cmd::RandomGenerateResponse {
            data: SecretBytes::new(data),
        }
    }

    fn system_info(&mut self, _: cmd::SystemInfoQuery) -> cmd::SystemInfo {
        let (a, b, c) = self.firmware;
        cmd::SystemInfo {
            version_major: a,
            version_minor: b,
            version_build: c,
            protocol: 1,
            system_uid: self.system_uid,
        }
    }

    /// Firmware 0.x: a plain password comparison; a wrong one locks the store again.
    fn key_storage_unlock(&mut self, r: cmd::KeyStorageUnlock) -> cmd::StatusResponse {
        let status = match &self.master_key {
            None => Status::FunctionDisabled,
            Some(k) if eq_ct(&k.expose()[..16], r.password.expose()) => {
                self.store_locked = false;
                Status::Ok
            }
            Some(_) => {
                self.store_locked = true;
                Status::KeyStorageLocked
            }
        };
        cmd::StatusResponse { status }
    }

    /// Firmware 1.0: the right master key decrypts the store; a wrong one wipes it.
    fn key_store_decrypt(&mut self, r: cmd::KeyStoreDecrypt) -> cmd::StatusResponse {
        let status = match &self.master_key {
            None => Status::Ok,
            Some(k) if eq_ct(k.expose(), r.key.expose()) => {
                self.store_locked = false;
                Status::Ok
            }
            Some(_) => {
                self.store_locked = true;
                Status::Mismatch
            }
        };
        cmd::StatusResponse { status }
    }

    /// An OTP of a configured admin YubiKey, checked against the internal database with
    /// the replay rule.
    fn hsm_unlock(&mut self, r: cmd::HsmUnlock) -> cmd::StatusResponse {
        let status = if !self.admin_ids.contains(&r.public_id) {
            Status::IdNotFound
        } else {
            match self.validate_db_otp(&r.public_id, &r.otp) {
                Ok(_) => {
                    self.otp_unlocked = true;
                    Status::Ok
                }
                Err(s) => s,
            }
        };
        cmd::StatusResponse { status }
    }

    /// Obeyed only in debug mode (system flag `FLAG_DEBUG`) with the right magic; no reply.
    fn monitor_exit(&mut self, payload: &[u8]) -> Vec<u8> {
        match cmd::decode_exact::<cmd::MonitorExit>(Opcode::MonitorExit, payload) {
            Ok(m) if m == cmd::MonitorExit::new() && self.system_flags.contains(Flags::DEBUG) => {
                self.enter_console()
            }
            _ => Vec::new(),
        }
    }
}

fn bare_status(op: u8, status: Status) -> Vec<u8> {
    Frame::response(Opcode::from_u8(op), &[status.to_u8()])
        .map(Frame::into_bytes)
        .unwrap_or_default()
}

/// Compares in constant time. Lengths may differ: shorter input is zero-padded by the wire
/// format, so both sides are padded to the longer length first.
fn eq_ct(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let padded = |s: &[u8]| {
        let mut v = zeroize::Zeroizing::new(vec![0u8; n]);
        v[..s.len()].copy_from_slice(s);
        v
    };
    padded(a).ct_eq(&padded(b)).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::EmulatorConfig;
    use rand::SeedableRng;

    fn engine() -> Engine {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/emulator/lock-test.toml"
        ))
        .unwrap();
        Engine::new(&EmulatorConfig::parse(&text).unwrap().resolve().unwrap())
    }

    #[test]
    fn random_line_noise_never_panics_and_resync_recovers() {
        let mut e = engine();
        let mut rng = StdRng::seed_from_u64(42);
        for _ in 0..2000 {
            let mut noise = vec![0u8; (rng.next_u32() % 120) as usize];
            rng.fill_bytes(&mut noise);
            let _ = e.feed(&noise);
            if e.in_console() {
                let _ = e.feed(b"exit\r");
            }
        }
        // Whatever state the noise left, a resync burst and a frame get an answer.
        let _ = e.feed(&[0u8; 96]);
        assert_eq!(
            e.feed(&[0x06, 0x23, 0x04, b't', b'e', b's', b't']),
            [0x06, 0xa3, 0x04, b't', b'e', b's', b't']
        );
    }

    #[test]
    fn unknown_opcode_gets_invalid_parameter() {
        let mut e = engine();
        assert_eq!(e.feed(&[0x01, 0x09]), [0x02, 0x89, 0x8c]);
        assert_eq!(
            e.feed(&[0x02, 0x23, 0x05]),
            [0x02, 0xa3, 0x8c],
            "echo with a length that lies"
        );
    }

    #[test]
    fn console_echoes_prompts_and_exits() {
        let mut e = engine();
        let out = e.enter_console();
        assert!(String::from_utf8_lossy(&out).contains("HSM (keys not decrypted)> "));
        let out = e.feed(b"sysinfo\r");
        assert!(String::from_utf8_lossy(&out).starts_with("sysinfo\r\nVersion 1.0.4"));
        let _ = e.feed(b"exit\r");
        assert!(!e.in_console());
    }

    #[test]
    fn constant_time_compare_pads_the_shorter_side_with_zeros() {
        assert!(eq_ct(b"ab", b"ab"));
        assert!(eq_ct(b"ab\0\0", b"ab"));
        assert!(!eq_ct(b"ab", b"ac"));
        assert!(!eq_ct(b"ab\0\x01", b"ab"));
        assert!(eq_ct(b"", b""));
    }
}
