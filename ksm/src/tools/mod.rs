//! Operator tools: key generation and import, offline AEAD decryption, store checks,
//! keystore unlock. Each is a subcommand of `ksm`; flags follow pyhsm's tools.

pub mod decrypt_aead;
pub mod generate_keys;
pub mod import_keys;
pub mod keystore_unlock;
pub mod store_cmd;

use std::path::Path;

use hsm_proto::{AesKey, KeyHandle, PublicId};

use crate::Error;

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

/// Reads an AES key (hex) from a file only its owner can read. Keys never come from argv.
pub fn read_key_file(path: &Path) -> Result<AesKey, Error> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| Error::io(format!("{}", path.display()), e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::Usage(format!(
            "{} can be read by other users; run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| Error::io(format!("{}", path.display()), e))?,
    );
    Ok(AesKey::from_hex(text.trim())?)
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
