//! Operator tools: key generation and import, offline AEAD decryption, store checks,
//! keystore unlock, provisioning a spare YubiHSM at its console. Each is a subcommand of `ksm`; flags follow pyhsm's tools.

pub mod clone_hsm2;
pub mod config_import;
pub mod decrypt_aead;
pub mod docs;
pub mod generate_keys;
pub mod hsm2_log;
pub mod import_keys;
pub mod keystore_unlock;
pub mod migrate_aeads;
mod proof_otp;
pub mod provision;
pub mod provision_hsm2;
pub mod rewrap;
pub mod shell_vars;
pub mod store_cmd;
pub mod val;

use std::io::BufRead;
use std::path::{Path, PathBuf};

use hsm_proto::{AesKey, KeyHandle, PublicId};
use zeroize::Zeroizing;

use crate::settings::options::DEFAULT_AEAD_DIR;
use crate::Error;

/// `--key-handles` of the tools that seal AEADs.
#[derive(Debug, clap::Args)]
pub struct KeyHandleArgs {
    /// Key handles to seal each secret under (repeat or comma-separate).
    #[arg(long = "key-handles", alias = "key-handle", num_args = 1.., required_unless_present = "key_id")]
    pub key_handles: Vec<String>,
}

impl KeyHandleArgs {
    /// The key handles ([`key_handles`]).
    pub fn parse(&self) -> Result<Vec<KeyHandle>, Error> {
        key_handles(&self.key_handles)
    }
}

/// `-O`: the AEAD directory the tools that seal AEADs write to, or `--db-url`: a database.
#[derive(Debug, clap::Args)]
pub struct OutputDirArgs {
    /// AEAD directory (must exist).
    #[arg(short = 'O', long = "output-dir", alias = "aead-dir", default_value = DEFAULT_AEAD_DIR)]
    pub output_dir: PathBuf,
    /// Write to this database's aead_table instead (see `ksm store db-init`).
    #[command(flatten)]
    pub db: store_cmd::DbArgs,
}

impl OutputDirArgs {
    /// The store written to: the database if `--db-url` is given, else the directory.
    pub fn open(&self, key_handles: Vec<KeyHandle>) -> Result<Box<dyn aead_store::Store>, Error> {
        match self
            .db
            .open(key_handles.clone(), aead_store::NoncePolicy::PublicId)?
        {
            Some(db) => Ok(Box::new(db)),
            None => Ok(Box::new(aead_store::FsStore::open(
                &self.output_dir,
                key_handles,
            )?)),
        }
    }
}

impl OutputDirArgs {
    /// [`OutputDirArgs::open`] with keys of either kind (YubiHSM 2 otp-aead-keys).
    pub fn open_keys(
        &self,
        keys: Vec<aead_store::AeadKey>,
    ) -> Result<Box<dyn aead_store::Store>, Error> {
        match self
            .db
            .open_keys(keys.clone(), aead_store::NoncePolicy::PublicId)?
        {
            Some(db) => Ok(Box::new(db)),
            None => Ok(Box::new(aead_store::FsStore::open_keys(
                &self.output_dir,
                keys,
            )?)),
        }
    }
}

/// `-D` of a tool run against a YubiHSM 2 (`--key-id`): it must be given, and name one.
pub fn hsm2_device_arg(dev: &crate::device::DeviceArgs) -> Result<String, Error> {
    let given = dev.device.as_ref().and_then(|d| d.to_str());
    match given {
        Some(d) if crate::device::hsm2::Hsm2Spec::is_hsm2(d) => Ok(d.to_string()),
        _ => Err(Error::Usage(
            "--key-id is for a YubiHSM 2: give -D http://HOST:PORT (its connector), usb or usb:SERIAL".into(),
        )),
    }
}

/// `--timeout` of [`crate::device::DeviceArgs`], for a YubiHSM 2 (at least 1 s: a session
/// opens with a key derivation and two round trips).
pub fn hsm2_timeout(dev: &crate::device::DeviceArgs) -> Result<std::time::Duration, Error> {
    let t = dev.timeouts()?.response;
    Ok(t.max(std::time::Duration::from_secs(1)))
}

/// Parses `--key-handles` arguments: each may itself be comma-separated (`0x20,0x21`), and
/// each handle any pyhsm spelling.
pub fn key_handles(args: &[String]) -> Result<Vec<KeyHandle>, Error> {
    let mut out = Vec::new();
    for a in args {
        for part in a.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let kh = KeyHandle::parse(part)?;
            if !out.contains(&kh) {
                out.push(kh);
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Usage(
            "at least one key handle is needed (--key-handles)".into(),
        ));
    }
    Ok(out)
}

/// Parses a public id given as pyhsm's tools take it: a decimal number first, else modhex.
pub fn public_id_arg(s: &str, chars: usize) -> Result<PublicId, Error> {
    if let Ok(n) = s.trim().parse::<u64>() {
        return Ok(PublicId::from_number(n, chars)?);
    }
    Ok(PublicId::new(s.trim())?)
}

/// Reads an AES key (hex) from a file only its owner can read
/// ([`hsm_proto::keyfile::read_private`], the rule every key file follows). Keys never come
/// from argv. Errors name the file and never show its text.
pub fn read_key_file(path: &Path) -> Result<AesKey, Error> {
    let text = hsm_proto::keyfile::read_private(path)?;
    AesKey::from_hex(text.trim()).map_err(|e| {
        Error::from(otp_core::Error::KeyFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    })
}

/// Longest line of secret input read: a `ykksm 1` line is about 100 bytes, a master key 64
/// hex digits.
pub const MAX_SECRET_LINE: usize = 4096;

/// One line of input holding secrets, from [`read_secret_line`].
pub enum SecretLine {
    /// The line, without its line ending; wiped when dropped.
    Text(Zeroizing<String>),
    /// Longer than [`MAX_SECRET_LINE`] (the rest of it was read and dropped) or not UTF-8.
    Invalid(&'static str),
    /// End of input.
    End,
}

/// Reads one line holding secrets (an import line, a master key, an OTP) so that no copy of
/// it is left behind in our memory: the bytes go into a buffer allocated once at the largest
/// size a line may have, so it never reallocates (a `String` grown by `read_line` leaves each
/// outgrown allocation unwiped), and the text is returned in that buffer, wiped on drop.
/// What stays beyond reach is the reader's own buffer (stdin's, or a `BufReader`'s), which
/// later reads overwrite.
pub fn read_secret_line(input: &mut dyn BufRead) -> Result<SecretLine, Error> {
    let read_err = |e| Error::io("read input", e);
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_SECRET_LINE + 1));
    let n = std::io::Read::take(&mut *input, MAX_SECRET_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)
        .map_err(read_err)?;
    if n == 0 {
        return Ok(SecretLine::End);
    }
    if buf.last() != Some(&b'\n') && buf.len() > MAX_SECRET_LINE {
        // Drop the rest of the line where the reader holds it, without copying it.
        loop {
            let chunk = input.fill_buf().map_err(read_err)?;
            if chunk.is_empty() {
                break;
            }
            match chunk.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    input.consume(i + 1);
                    break;
                }
                None => {
                    let all = chunk.len();
                    input.consume(all);
                }
            }
        }
        return Ok(SecretLine::Invalid("line too long"));
    }
    while matches!(buf.last(), Some(&(b'\n' | b'\r'))) {
        buf.pop();
    }
    Ok(hsm_proto::keyfile::into_text(buf)
        .map_or(SecretLine::Invalid("not UTF-8 text"), SecretLine::Text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_handle_lists() {
        let khs = key_handles(&["0x20,32".into(), "33".into(), "KSM1".into()]).unwrap();
        assert_eq!(
            khs,
            vec![KeyHandle(0x20), KeyHandle(0x21), KeyHandle(0x314d_534b)]
        );
        assert!(key_handles(&[]).is_err());
        assert!(key_handles(&["0xzzz".into()]).is_err());
        assert_eq!(
            key_handles(&["0xzz".into()]).unwrap(),
            vec![KeyHandle(u32::from_le_bytes(*b"0xzz"))],
            "4 characters: ASCII"
        );
    }

    #[test]
    fn public_ids_as_numbers_or_modhex() {
        assert_eq!(public_id_arg("1", 12).unwrap().as_str(), "cccccccccccb");
        assert_eq!(
            public_id_arg("ccccdeulfbvj", 12).unwrap().as_str(),
            "ccccdeulfbvj"
        );
        assert!(public_id_arg("xyz", 12).is_err());
    }
}
