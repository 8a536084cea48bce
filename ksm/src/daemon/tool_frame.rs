//! What the sharing socket forwards to a device: request frames from operator tools,
//! checked before any device sees them.
//!
//! A frame from a tool is untrusted input. [`ToolFrame::check`] is the only way to make one,
//! so the pool never puts a malformed frame on a line (it would confuse the device and be
//! counted as the device's fault) nor a command outside the socket's [`SocketPolicy`].

use hsm_proto::codec::Frame;
use hsm_proto::{KeyHandle, Opcode};

use crate::settings::socket_policy::SocketPolicy;

/// The commands the tools need, and why:
/// opening a device (`SYSTEM_INFO_QUERY`, `ECHO`), the lock probe (`AES_ECB_BLOCK_ENCRYPT`
/// on handle 0), `keystore-unlock` (`KEY_STORE_DECRYPT`, `KEY_STORAGE_UNLOCK`, `HSM_UNLOCK`),
/// `generate-keys` and `import-keys` (`BUFFER_RANDOM_LOAD`, `BUFFER_LOAD`,
/// `BUFFER_AEAD_GENERATE`, `DB_YUBIKEY_AEAD_STORE`), and `store verify --hsm`
/// (`AEAD_DECRYPT_CMP`). Everything that returns a secret or a plaintext, such as
/// `AES_ECB_BLOCK_DECRYPT`, is left out.
pub const TOOL_COMMANDS: [Opcode; 11] = [
    Opcode::SystemInfoQuery,
    Opcode::Echo,
    Opcode::AesEcbBlockEncrypt,
    Opcode::KeyStoreDecrypt,
    Opcode::KeyStorageUnlock,
    Opcode::HsmUnlock,
    Opcode::BufferRandomLoad,
    Opcode::BufferLoad,
    Opcode::BufferAeadGenerate,
    Opcode::DbYubikeyAeadStore,
    Opcode::AeadDecryptCmp,
];

/// A well-formed request frame (`bcnt, cmd, payload`) that the socket's policy allows.
/// Its bytes may be a master key or a YubiKey secret: they are wiped on drop.
pub struct ToolFrame {
    op: Opcode,
    /// The checked frame; `Frame` wipes its bytes on drop.
    frame: Frame,
}

/// Names the command and the length, never the bytes.
impl std::fmt::Debug for ToolFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ToolFrame({}, {} bytes)",
            self.op,
            self.frame.as_bytes().len()
        )
    }
}

impl ToolFrame {
    /// Checks `bytes` against the frame layout and `policy`. The error is the text the tool
    /// is answered with; it names the command, never the payload.
    pub fn check(bytes: &[u8], policy: SocketPolicy) -> Result<ToolFrame, String> {
        let Some(frame) = Frame::parse(bytes) else {
            return Err("refused: not a well-formed request frame".into());
        };
        let op = Opcode::from_u8(frame.cmd_byte());
        if matches!(op, Opcode::Null | Opcode::MonitorExit | Opcode::Unknown(_)) {
            return Err(format!(
                "refused: {op} is never forwarded to a shared device"
            ));
        }
        if policy == SocketPolicy::Tools {
            if !TOOL_COMMANDS.contains(&op) {
                return Err(format!(
                    "refused: {op} is not among the commands the sharing socket forwards \
                     (ksm serve --socket-policy all)"
                ));
            }
            // The lock probe is the one AES block the tools send; on a real key handle it
            // would be an encryption oracle.
            if op == Opcode::AesEcbBlockEncrypt && frame.payload().get(..4) != Some(&[0; 4][..]) {
                return Err(format!(
                    "refused: {op} is forwarded for key handle {} only (the lock probe)",
                    KeyHandle(0)
                ));
            }
        }
        Ok(ToolFrame { op, frame })
    }

    /// The command.
    pub fn opcode(&self) -> Opcode {
        self.op
    }

    /// The whole frame.
    pub fn bytes(&self) -> &[u8] {
        self.frame.as_bytes()
    }

    /// True for the commands that may change whether the key store is locked: after one of
    /// them the owner probes the lock state again.
    pub fn unlocks(&self) -> bool {
        matches!(
            self.op,
            Opcode::KeyStoreDecrypt | Opcode::KeyStorageUnlock | Opcode::HsmUnlock
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_frames_and_commands_outside_the_policy_are_refused() {
        let ok = ToolFrame::check(&[1, 0x26], SocketPolicy::Tools).unwrap();
        assert_eq!(ok.opcode(), Opcode::SystemInfoQuery);
        for bad in [&[][..], &[0][..], &[5, 0x26][..], &[0x62; 0x63][..]] {
            assert!(
                ToolFrame::check(bad, SocketPolicy::All).is_err(),
                "{bad:02x?}"
            );
        }
        for op in [0x00, 0x7f, 0x55] {
            assert!(ToolFrame::check(&[1, op], SocketPolicy::All).is_err());
        }
        let mut ecb = vec![21, 0x0e, 0x20, 0, 0, 0];
        ecb.extend([7; 16]);
        assert!(ToolFrame::check(&ecb, SocketPolicy::Tools)
            .unwrap_err()
            .contains("YSM_AES_ECB_BLOCK_DECRYPT"));
        assert!(ToolFrame::check(&ecb, SocketPolicy::All).is_ok());
        // The lock probe on handle 0 passes; an AES block on a real handle does not.
        ecb[1] = 0x0d;
        assert!(ToolFrame::check(&ecb, SocketPolicy::Tools).is_err());
        ecb[2] = 0;
        assert!(ToolFrame::check(&ecb, SocketPolicy::Tools).is_ok());
    }

    #[test]
    fn refusals_never_quote_the_payload() {
        let mut f = vec![33, 0x0e];
        f.extend([0xab; 32]);
        let why = ToolFrame::check(&f, SocketPolicy::Tools).unwrap_err();
        assert!(!why.contains("ab") && !why.contains("171"), "{why}");
    }
}
