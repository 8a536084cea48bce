//! pyhsm's AEAD file formats, as pure functions over bytes.
//!
//! | version | layout |
//! |---------|--------|
//! | 0 | the AEAD bytes alone; key handle and nonce come from the directory and file name |
//! | 1 | `"YubiHSM AEAD\n"`, version byte `01`, key handle u32 LE, nonce[6], AEAD |
//! | 1, CRLF | as version 1 with the marker `"YubiHSM AEAD\r\n"` (pyhsm on Windows) |
//!
//! We read all three and write version 1 only.

use hsm_proto::{Aead, KeyHandle, Nonce};

/// The version-1 marker line.
pub const MARKER: &[u8] = b"YubiHSM AEAD\n";
const MARKER_CRLF: &[u8] = b"YubiHSM AEAD\r\n";
/// Largest file read: anything longer is not an AEAD file (pyhsm reads 1024 bytes).
pub const MAX_FILE: usize = 1024;

/// A parsed AEAD file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AeadFile {
    /// Version 0: the AEAD only.
    V0(Aead),
    /// Version 1: key handle, nonce and AEAD.
    V1 {
        /// Key handle that sealed it.
        key_handle: KeyHandle,
        /// Its nonce.
        nonce: Nonce,
        /// The AEAD.
        aead: Aead,
    },
}

/// Why bytes are not an AEAD file (the caller adds the path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatError {
    /// A marker followed by an unknown version.
    UnknownVersion(u8),
    /// A length that does not fit.
    Malformed(&'static str),
}

/// Parses a file's bytes.
pub fn parse(bytes: &[u8]) -> Result<AeadFile, FormatError> {
    if bytes.len() > MAX_FILE {
        return Err(FormatError::Malformed("longer than any AEAD file"));
    }
    let body = if let Some(rest) = bytes.strip_prefix(MARKER) {
        rest
    } else if let Some(rest) = bytes.strip_prefix(MARKER_CRLF) {
        rest
    } else {
        return Aead::new(bytes)
            .map(AeadFile::V0)
            .map_err(|_| FormatError::Malformed("version-0 AEAD must be 8 to 72 bytes"));
    };
    match body.first() {
        None => Err(FormatError::Malformed("marker without version")),
        Some(1) => {
            if body.len() < 11 {
                return Err(FormatError::Malformed("truncated version-1 header"));
            }
            let key_handle = KeyHandle(u32::from_le_bytes([body[1], body[2], body[3], body[4]]));
            let mut nonce = [0u8; 6];
            nonce.copy_from_slice(&body[5..11]);
            let aead = Aead::new(&body[11..])
                .map_err(|_| FormatError::Malformed("AEAD must be 8 to 72 bytes"))?;
            Ok(AeadFile::V1 {
                key_handle,
                nonce: Nonce(nonce),
                aead,
            })
        }
        Some(v) => Err(FormatError::UnknownVersion(*v)),
    }
}

/// The bytes of a version-1 file.
pub fn write_v1(key_handle: KeyHandle, nonce: &Nonce, aead: &Aead) -> Vec<u8> {
    let mut out = Vec::with_capacity(MARKER.len() + 11 + aead.as_bytes().len());
    out.extend_from_slice(MARKER);
    out.push(1);
    out.extend_from_slice(&key_handle.0.to_le_bytes());
    out.extend_from_slice(&nonce.0);
    out.extend_from_slice(aead.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aead() -> Aead {
        Aead::new(
            &hex::decode("a93b0a5bc3145e5e905fe08015ca2f138533347e4563f5e8c11f74ec20ae").unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn version_1_matches_the_protocol_notes_example() {
        let bytes = write_v1(KeyHandle(0x2000), &Nonce([0, 0, 0, 0, 0, 1]), &aead());
        assert_eq!(
            hex::encode(&bytes),
            "5975626948534d20414541440a0100200000000000000001a93b0a5bc3145e5e905fe08015ca2f138533347e4563f5e8c11f74ec20ae"
        );
        assert_eq!(bytes.len(), 54);
        assert_eq!(
            parse(&bytes).unwrap(),
            AeadFile::V1 {
                key_handle: KeyHandle(0x2000),
                nonce: Nonce([0, 0, 0, 0, 0, 1]),
                aead: aead()
            }
        );
    }

    #[test]
    fn crlf_marker_and_version_0() {
        let mut crlf = b"YubiHSM AEAD\r\n".to_vec();
        crlf.extend_from_slice(&write_v1(KeyHandle(1), &Nonce([1; 6]), &aead())[MARKER.len()..]);
        assert!(matches!(
            parse(&crlf).unwrap(),
            AeadFile::V1 {
                key_handle: KeyHandle(1),
                ..
            }
        ));
        assert_eq!(parse(aead().as_bytes()).unwrap(), AeadFile::V0(aead()));
    }

    #[test]
    fn bad_files_are_errors_not_panics() {
        assert_eq!(
            parse(b"YubiHSM AEAD\n\x02rest"),
            Err(FormatError::UnknownVersion(2))
        );
        assert!(parse(b"YubiHSM AEAD\n").is_err());
        assert!(parse(b"YubiHSM AEAD\n\x01\x00\x00").is_err());
        assert!(parse(b"short").is_err());
        assert!(parse(&[0u8; 73]).is_err());
        assert!(parse(&[0u8; 2000]).is_err());
        let mut v1 = write_v1(KeyHandle(1), &Nonce([1; 6]), &aead());
        v1.truncate(MARKER.len() + 11 + 7);
        assert!(parse(&v1).is_err());
        for n in 0..200 {
            let junk: Vec<u8> = (0..n).map(|i| (i * 37 % 251) as u8).collect();
            let _ = parse(&junk);
        }
    }
}
