//! The driver: one [`Hsm`] per device line, one generic [`Hsm::send`], and a few lines per
//! high-level operation.

use std::io::{ErrorKind, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use otp_core::otp::{Otp, OtpCounters};
use tracing::{debug, trace};

use crate::cmd::{self, Command, Response};
use crate::codec::{Frame, MAX_PAYLOAD};
use crate::line::{open_serial, Line};
use crate::{
    Aead, Error, KeyHandle, Nonce, Opcode, PublicId, Result, SecretBytes, Status, YubiKeyAead,
    RESPONSE_BIT,
};

/// How long the driver waits, for a response and for the pieces of a resync.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Whole-response deadline for one command (pyhsm: 1 s per read).
    pub response: Duration,
    /// Quiet time that ends a drain (pyhsm: 0.1 s).
    pub drain_quiet: Duration,
    /// Upper bound on one drain, so a device that babbles forever cannot hang us.
    pub drain_max: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            response: Duration::from_secs(1),
            drain_quiet: Duration::from_millis(100),
            drain_max: Duration::from_secs(2),
        }
    }
}

/// An OTP the HSM decoded: built only here, from an OK status whose echoed public id and key
/// handle matched the request. The KSM's answer line is made from nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedOtp {
    public_id: PublicId,
    counters: OtpCounters,
}

impl DecodedOtp {
    /// The YubiKey's public id.
    pub fn public_id(&self) -> &PublicId {
        &self.public_id
    }

    /// The counters from the token.
    pub fn counters(&self) -> OtpCounters {
        self.counters
    }
}

/// A connection to one YubiHSM 1.
///
/// Owns the line: frames are strictly request → response, so whoever holds the `Hsm` holds
/// the device. Callers that share a device put it behind one owner task.
pub struct Hsm {
    line: Box<dyn Line>,
    timeouts: Timeouts,
    info: cmd::SystemInfo,
}

impl Hsm {
    /// Opens a serial device path and runs the start-up sequence.
    pub fn open_path(path: &Path, timeouts: Timeouts) -> Result<Hsm> {
        let port = open_serial(path, timeouts.response)?;
        Hsm::open(Box::new(port), timeouts)
    }

    /// Runs pyhsm's start-up sequence on a line: resync and drain, `SYSTEM_INFO_QUERY` with a
    /// protocol-version check, then an echo of all 256 byte values plus CR LF CR LF to prove
    /// the line is 8-bit clean.
    pub fn open(line: Box<dyn Line>, timeouts: Timeouts) -> Result<Hsm> {
        let mut hsm = Hsm {
            line,
            timeouts,
            info: cmd::SystemInfo {
                version_major: 0,
                version_minor: 0,
                version_build: 0,
                protocol: 0,
                system_uid: [0; 12],
            },
        };
        hsm.resync()?;
        let info = hsm.send(&cmd::SystemInfoQuery)?;
        if info.protocol != 1 {
            return Err(Error::ProtocolVersion(info.protocol));
        }
        hsm.info = info;
        hsm.link_test()?;
        debug!(version = ?hsm.info.version(), "YubiHSM opened");
        Ok(hsm)
    }

    /// What `SYSTEM_INFO_QUERY` said at open.
    pub fn info(&self) -> &cmd::SystemInfo {
        &self.info
    }

    /// The timeouts in force.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    fn link_test(&mut self) -> Result<()> {
        let mut pattern: Vec<u8> = (0..=255u8).collect();
        pattern.extend_from_slice(b"\r\n\r\n");
        for chunk in pattern.chunks(MAX_PAYLOAD - 10) {
            if self.echo(chunk)? != chunk {
                return Err(Error::LinkTest);
            }
        }
        Ok(())
    }

    /// Sends the NULL burst (96 zero bytes: completes any half-received frame, then no-ops)
    /// and drains whatever the device still had to say.
    pub fn resync(&mut self) -> Result<()> {
        self.line.write_all(&[0u8; MAX_PAYLOAD])?;
        self.line.flush()?;
        self.drain()
    }

    fn drain(&mut self) -> Result<()> {
        let start = Instant::now();
        self.line.set_read_timeout(self.timeouts.drain_quiet)?;
        let mut buf = [0u8; 256];
        let result = loop {
            if start.elapsed() > self.timeouts.drain_max {
                break Ok(());
            }
            match self.line.read(&mut buf) {
                Ok(0) => break Err(Error::Closed),
                Ok(n) => trace!(bytes = n, "drained"),
                Err(e) if is_timeout(&e) => break Ok(()),
                Err(e) => break Err(e.into()),
            }
        };
        let _ = self.line.clear_input();
        result
    }

    /// Sends one command and returns its response, after checking the response is for this
    /// command, decodes exactly, echoes the request's key handle / nonce / public id, and has
    /// status OK. Any line fault resyncs before the error is returned.
    pub fn send<C: Command>(&mut self, req: &C) -> Result<C::Response> {
        let frame = cmd::encode_request(req)?;
        trace!(cmd = %C::OPCODE, len = frame.len(), "send");
        let payload = match self.exchange(C::OPCODE, &frame) {
            Ok(p) => p,
            Err(e) => {
                if e.is_link_error() && e != Error::Closed {
                    let _ = self.resync();
                }
                return Err(e);
            }
        };
        let resp: C::Response = cmd::decode_exact(C::OPCODE, &payload)?;
        req.check_echo(&resp)?;
        match resp.status() {
            Status::Ok => Ok(resp),
            status => Err(Error::Device {
                cmd: C::OPCODE,
                status,
            }),
        }
    }

    /// Runs one raw request frame from another client of the device and returns the
    /// response frame. The frame must be well formed and name a command that has a
    /// response; `NULL` and `MONITOR_EXIT` are refused, since they would leave the line in a
    /// state the owner does not expect.
    pub fn exchange_frame(&mut self, frame: &[u8]) -> Result<Vec<u8>> {
        // The caller's mistake, not the line's: no resync, no reopen.
        let frame = Frame::parse(frame).ok_or_else(|| Error::InvalidField {
            cmd: Opcode::from_u8(frame.get(1).copied().unwrap_or(0)),
            field: "request frame length",
        })?;
        let op = Opcode::from_u8(frame.cmd_byte());
        if matches!(op, Opcode::Null | Opcode::MonitorExit | Opcode::Unknown(_)) {
            return Err(Error::InvalidField {
                cmd: op,
                field: "command (not allowed through a shared HSM)",
            });
        }
        match self.exchange(op, frame.as_bytes()) {
            Ok(payload) => Ok(Frame::response(op, &payload)?.into_bytes()),
            Err(e) => {
                if e.is_link_error() && e != Error::Closed {
                    let _ = self.resync();
                }
                Err(e)
            }
        }
    }

    /// Writes a frame and reads the response payload.
    fn exchange(&mut self, op: Opcode, frame: &[u8]) -> Result<Vec<u8>> {
        self.line.write_all(frame)?;
        self.line.flush()?;
        let deadline = Instant::now() + self.timeouts.response;
        let mut header = [0u8; 2];
        let got = self.read_until(&mut header, deadline)?;
        if got == 0 {
            return Err(Error::Timeout {
                cmd: op,
                after: self.timeouts.response,
            });
        }
        // Every response carries at least a status or a length byte.
        let payload_len = Frame::payload_len(header[0]).filter(|n| *n > 0);
        let expected = op.to_u8() | RESPONSE_BIT;
        if let Some(len) = payload_len.filter(|_| got == 2 && header[1] == expected) {
            let mut payload = vec![0u8; len];
            let n = self.read_until(&mut payload, deadline)?;
            if n < payload.len() {
                return Err(Error::Timeout {
                    cmd: op,
                    after: self.timeouts.response,
                });
            }
            trace!(cmd = %op, len, "recv");
            return Ok(payload);
        }
        if got == 2
            && header[1] & RESPONSE_BIT != 0
            && !matches!(
                Opcode::from_u8(header[1] & !RESPONSE_BIT),
                Opcode::Unknown(_)
            )
            && payload_len.is_some()
        {
            return Err(Error::WrongCommand {
                sent: op,
                got: header[1],
            });
        }
        // Not a response frame: the console of a device in configuration mode, or noise.
        self.classify_noise(&header[..got])
    }

    /// Reads until `buf` is full, the deadline passes (returns the count so far) or the
    /// line closes.
    fn read_until(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.line.set_read_timeout(left)?;
            match self.line.read(&mut buf[n..]) {
                Ok(0) => return Err(Error::Closed),
                Ok(k) => n += k,
                Err(e) if is_timeout(&e) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(n)
    }

    /// Bytes that are no response: poke the console with carriage returns, as pyhsm does,
    /// and look for its prompt (`NO_CFG> `, `HSM> `, `WSAPI…> `).
    fn classify_noise(&mut self, first: &[u8]) -> Result<Vec<u8>> {
        let mut seen = first.to_vec();
        let _ = self.line.write_all(b"\r\r\r");
        let probe_until = Instant::now() + self.timeouts.response.min(Duration::from_millis(300));
        let mut buf = [0u8; 128];
        while seen.len() < 512 {
            let n = self.read_until(&mut buf, probe_until)?;
            seen.extend_from_slice(&buf[..n]);
            if n < buf.len() {
                break;
            }
        }
        if let Some(prompt) = crate::console::find_prompt(&String::from_utf8_lossy(&seen)) {
            return Err(Error::ConfigMode { prompt });
        }
        let preview: String = seen.iter().take(16).map(|b| format!("{b:02x}")).collect();
        Err(Error::Garbage(preview))
    }

    /// Marks the end of a multi-command operation (see [`Line::end_operation`]): on a
    /// device shared with other clients, they may use it again from here on.
    pub fn end_operation(&mut self) -> Result<()> {
        Ok(self.line.end_operation()?)
    }

    /// True if the key store is locked (after power-on, until `KEY_STORE_DECRYPT` and, with
    /// admin YubiKeys configured, `HSM_UNLOCK`). The probe is an AES block on key handle 0:
    /// a locked store answers `KEY_STORAGE_LOCKED` before it looks at the handle, and an
    /// unlocked one refuses the handle or encrypts a block of zeros; no state changes
    /// either way (the buffer, nonce and temp key are untouched).
    pub fn is_locked(&mut self) -> Result<bool> {
        match self.send(&cmd::AesEcbBlockEncrypt {
            key_handle: KeyHandle(0),
            block: SecretBytes::new([0u8; 16]),
        }) {
            Err(Error::Device {
                status: Status::KeyStorageLocked,
                ..
            }) => Ok(true),
            Err(e) if e.is_link_error() => Err(e),
            _ => Ok(false),
        }
    }

    // ---- high-level operations: a few lines each ----

    /// `ECHO`.
    pub fn echo(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        Ok(self
            .send(&cmd::Echo {
                data: data.to_vec(),
            })?
            .data)
    }

    /// `SYSTEM_INFO_QUERY`.
    pub fn system_info(&mut self) -> Result<cmd::SystemInfo> {
        self.send(&cmd::SystemInfoQuery)
    }

    /// `RANDOM_GENERATE`.
    pub fn random(&mut self, len: u8) -> Result<SecretBytes> {
        Ok(self.send(&cmd::RandomGenerate { len })?.data)
    }

    /// `NONCE_GET`.
    pub fn nonce_get(&mut self, post_increment: u16) -> Result<cmd::NonceGetResponse> {
        self.send(&cmd::NonceGet { post_increment })
    }

    /// `AEAD_YUBIKEY_OTP_DECODE`: the KSM's decode. `nonce` is the AEAD's stored nonce.
    pub fn decode_otp(
        &mut self,
        otp: &Otp,
        key_handle: KeyHandle,
        nonce: Nonce,
        aead: &YubiKeyAead,
    ) -> Result<DecodedOtp> {
        let resp = self.send(&cmd::AeadOtpDecode {
            public_id: nonce,
            key_handle,
            otp: otp.ciphertext,
            aead: *aead.as_bytes(),
        })?;
        Ok(DecodedOtp {
            public_id: otp.public_id.clone(),
            counters: resp.counters,
        })
    }

    /// `DB_OTP_VALIDATE`: validation against the internal database, replay-checked.
    pub fn db_validate_otp(&mut self, otp: &Otp) -> Result<DecodedOtp> {
        let resp = self.send(&cmd::DbOtpValidate {
            public_id: otp.public_id.to_nonce()?,
            otp: otp.ciphertext,
        })?;
        Ok(DecodedOtp {
            public_id: otp.public_id.clone(),
            counters: resp.counters,
        })
    }

    /// `BUFFER_RANDOM_LOAD`; returns the buffer's byte count.
    pub fn buffer_random_load(&mut self, offset: u8, len: u8) -> Result<u8> {
        Ok(self.send(&cmd::BufferRandomLoad { offset, len })?.count)
    }

    /// `BUFFER_LOAD`; returns the buffer's byte count.
    pub fn buffer_load(&mut self, offset: u8, data: &[u8]) -> Result<u8> {
        Ok(self
            .send(&cmd::BufferLoad {
                offset,
                data: SecretBytes::new(data),
            })?
            .count)
    }

    /// `BUFFER_AEAD_GENERATE`: returns the nonce used and the AEAD.
    pub fn buffer_aead_generate(
        &mut self,
        key_handle: KeyHandle,
        nonce: Nonce,
    ) -> Result<(Nonce, Aead)> {
        let r = self.send(&cmd::BufferAeadGenerate { nonce, key_handle })?;
        Ok((r.nonce, Aead::new(&r.aead)?))
    }

    /// `AEAD_GENERATE`.
    pub fn aead_generate(
        &mut self,
        key_handle: KeyHandle,
        nonce: Nonce,
        data: &[u8],
    ) -> Result<(Nonce, Aead)> {
        let r = self.send(&cmd::AeadGenerate {
            nonce,
            key_handle,
            data: SecretBytes::new(data),
        })?;
        Ok((r.nonce, Aead::new(&r.aead)?))
    }

    /// `RANDOM_AEAD_GENERATE`.
    pub fn random_aead_generate(
        &mut self,
        key_handle: KeyHandle,
        nonce: Nonce,
        len: u8,
    ) -> Result<(Nonce, Aead)> {
        let r = self.send(&cmd::RandomAeadGenerate {
            nonce,
            key_handle,
            len,
        })?;
        Ok((r.nonce, Aead::new(&r.aead)?))
    }

    /// `AEAD_DECRYPT_CMP`: `Ok(true)` if the AEAD holds `plaintext`, `Ok(false)` on
    /// MISMATCH. An empty `plaintext` asks the device only to authenticate the AEAD.
    pub fn aead_decrypt_cmp(
        &mut self,
        key_handle: KeyHandle,
        nonce: Nonce,
        plaintext: &[u8],
        aead: &Aead,
    ) -> Result<bool> {
        let mut data = plaintext.to_vec();
        data.extend_from_slice(aead.as_bytes());
        match self.send(&cmd::AeadDecryptCmp {
            nonce,
            key_handle,
            data: SecretBytes::new(data),
        }) {
            Ok(_) => Ok(true),
            Err(Error::Device {
                status: Status::Mismatch,
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `KEY_STORE_DECRYPT` (firmware 1.0): unlock the key store with the master key.
    pub fn key_store_decrypt(&mut self, master_key: &[u8]) -> Result<()> {
        self.send(&cmd::KeyStoreDecrypt {
            key: SecretBytes::new(master_key),
        })
        .map(|_| ())
    }

    /// `KEY_STORAGE_UNLOCK` (firmware 0.x).
    pub fn key_storage_unlock(&mut self, password: &[u8]) -> Result<()> {
        self.send(&cmd::KeyStorageUnlock {
            password: SecretBytes::new(password),
        })
        .map(|_| ())
    }

    /// `HSM_UNLOCK` with an admin YubiKey OTP (44 modhex characters).
    pub fn hsm_unlock(&mut self, otp: &Otp) -> Result<()> {
        self.send(&cmd::HsmUnlock {
            public_id: otp.public_id.to_nonce()?,
            otp: otp.ciphertext,
        })
        .map(|_| ())
    }

    /// `MONITOR_EXIT`: sends the frame and expects no response (the device, if in debug
    /// mode, drops to its console).
    pub fn monitor_exit(&mut self) -> Result<()> {
        let frame = cmd::encode_request(&cmd::MonitorExit::new())?;
        self.line.write_all(&frame)?;
        self.line.flush()?;
        Ok(())
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::io::{self, Read};

    /// A line that answers every write with the next scripted reply.
    struct Scripted {
        replies: VecDeque<Vec<u8>>,
        out: VecDeque<u8>,
    }

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.out.pop_front() {
                Some(b) => {
                    buf[0] = b;
                    Ok(1)
                }
                None => Err(ErrorKind::TimedOut.into()),
            }
        }
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            // Resync bursts get no answer; frames get the next scripted reply.
            if buf.iter().any(|b| *b != 0) {
                if let Some(r) = self.replies.pop_front() {
                    self.out.extend(r);
                }
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Line for Scripted {
        fn set_read_timeout(&mut self, _t: Duration) -> io::Result<()> {
            Ok(())
        }
    }

    fn hsm(replies: Vec<Vec<u8>>) -> Hsm {
        Hsm {
            line: Box::new(Scripted {
                replies: replies.into(),
                out: VecDeque::new(),
            }),
            timeouts: Timeouts::default(),
            info: cmd::SystemInfo {
                version_major: 1,
                version_minor: 0,
                version_build: 4,
                protocol: 1,
                system_uid: [0; 12],
            },
        }
    }

    #[test]
    fn reply_to_another_command_is_wrong_command() {
        // An ECHO response arrives for a SYSTEM_INFO_QUERY.
        let mut h = hsm(vec![vec![0x03, 0xa3, 0x01, 0x41]]);
        assert_eq!(
            h.system_info(),
            Err(Error::WrongCommand {
                sent: Opcode::SystemInfoQuery,
                got: 0xa3
            })
        );
    }

    #[test]
    fn echoed_key_handle_is_checked_before_status() {
        let mut otp_resp = vec![0x12, 0x86];
        otp_resp.extend_from_slice(&[0; 6]);
        otp_resp.extend_from_slice(&0x21u32.to_le_bytes());
        otp_resp.extend_from_slice(&[0; 6]);
        otp_resp.push(Status::Ok.to_u8());
        let mut h = hsm(vec![otp_resp]);
        let otp = Otp::parse("ccccccccccccccccccccccccccccccccccccccccccce").unwrap();
        let aead = YubiKeyAead::try_from(&Aead::new(&[0; 30]).unwrap()).unwrap();
        assert_eq!(
            h.decode_otp(&otp, KeyHandle(0x20), Nonce::ZERO, &aead),
            Err(Error::EchoMismatch {
                cmd: Opcode::AeadYubikeyOtpDecode,
                field: "key handle"
            })
        );
    }

    #[test]
    fn protocol_version_other_than_one_is_refused() {
        let mut info = vec![0x11, 0xa6, 1, 0, 4, 2];
        info.extend_from_slice(&[0; 12]);
        let r = Hsm::open(
            Box::new(Scripted {
                replies: vec![info].into(),
                out: VecDeque::new(),
            }),
            Timeouts::default(),
        );
        assert_eq!(r.err(), Some(Error::ProtocolVersion(2)));
    }
}
