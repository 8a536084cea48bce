//! pyhsm's AEAD file formats, as pure functions over bytes.
//!
//! | version | layout |
//! |---------|--------|
//! | 0 | the AEAD bytes alone; key handle and nonce come from the directory and file name |
//! | 1 | `"YubiHSM AEAD\n"`, version byte `01`, key handle u32 LE, nonce\[6\], AEAD |
//! | 1, CRLF | as version 1 with the marker `"YubiHSM AEAD\r\n"` (pyhsm on Windows) |
//!
//! We read all three and write version 1 only. A file that starts with a marker is
//! version 1 or an error, never version 0. pyhsm also expanded any `0a` byte after a CRLF
//! marker to `0d 0a`; that cannot be undone reliably, so such a file parses with a longer
//! AEAD that the HSM then refuses.

use hsm_proto::{Aead, KeyHandle, Nonce};

/// The version-1 marker line (13 bytes).
pub const MARKER: &[u8] = b"YubiHSM AEAD\n";
/// The marker as pyhsm wrote it on Windows (14 bytes).
pub const MARKER_CRLF: &[u8] = b"YubiHSM AEAD\r\n";
/// The only version after a marker.
pub const VERSION_1: u8 = 1;
/// Version-1 header after the marker: version, key handle, nonce.
const HEADER_LEN: usize = 1 + 4 + 6;
/// Longest file read: more is not an AEAD file (pyhsm reads at most 1024 bytes).
pub const MAX_FILE: usize = 1024;

/// A parsed AEAD file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AeadFile {
    /// Version 0: the AEAD only.
    V0(Aead),
    /// Version 1 (either marker): key handle, nonce and AEAD.
    V1 {
        /// Key handle that sealed it.
        key_handle: KeyHandle,
        /// Its nonce.
        nonce: Nonce,
        /// The AEAD.
        aead: Aead,
    },
}

/// Why bytes are not an AEAD file. The store adds the path ([`crate::StoreError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// A marker followed by a version other than 1.
    #[error("unknown AEAD file format version {0}")]
    UnknownVersion(u8),
    /// A length that does not fit the format.
    #[error("malformed AEAD file ({0})")]
    Malformed(&'static str),
}

/// Parses a file's bytes. Never panics, whatever the bytes.
pub fn parse(bytes: &[u8]) -> Result<AeadFile, FormatError> {
    if bytes.len() > MAX_FILE {
        return Err(FormatError::Malformed("longer than any AEAD file"));
    }
    let Some(body) = bytes
        .strip_prefix(MARKER)
        .or_else(|| bytes.strip_prefix(MARKER_CRLF))
    else {
        return Aead::new(bytes)
            .map(AeadFile::V0)
            .map_err(|_| FormatError::Malformed("a version-0 file must be 8 to 72 bytes"));
    };
    let Some((&version, rest)) = body.split_first() else {
        return Err(FormatError::Malformed("marker without a version"));
    };
    if version != VERSION_1 {
        return Err(FormatError::UnknownVersion(version));
    }
    let (Some(kh), Some(nonce), Some(aead)) = (
        rest.get(..4),
        rest.get(4..HEADER_LEN - 1),
        rest.get(HEADER_LEN - 1..),
    ) else {
        return Err(FormatError::Malformed("version-1 header is cut short"));
    };
    let mut kh_bytes = [0u8; 4];
    kh_bytes.copy_from_slice(kh);
    let mut nonce_bytes = [0u8; 6];
    nonce_bytes.copy_from_slice(nonce);
    let aead = Aead::new(aead)
        .map_err(|_| FormatError::Malformed("a version-1 AEAD must be 8 to 72 bytes"))?;
    Ok(AeadFile::V1 {
        key_handle: KeyHandle(u32::from_le_bytes(kh_bytes)),
        nonce: Nonce(nonce_bytes),
        aead,
    })
}

/// The bytes of a version-1 file (LF marker), the only format we write.
pub fn write_v1(key_handle: KeyHandle, nonce: &Nonce, aead: &Aead) -> Vec<u8> {
    let a = aead.as_bytes();
    let mut out = Vec::with_capacity(MARKER.len() + HEADER_LEN + a.len());
    out.extend_from_slice(MARKER);
    out.push(VERSION_1);
    out.extend_from_slice(&key_handle.0.to_le_bytes());
    out.extend_from_slice(&nonce.0);
    out.extend_from_slice(a);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The YubiKey AEAD of the protocol notes (§5.3): kh 0x2000, nonce 000000000001.
    fn notes_aead() -> Aead {
        Aead::new(
            &hex::decode("a93b0a5bc3145e5e905fe08015ca2f138533347e4563f5e8c11f74ec20ae").unwrap(),
        )
        .unwrap()
    }

    fn v1(kh: u32, nonce: [u8; 6], aead: &Aead) -> AeadFile {
        AeadFile::V1 {
            key_handle: KeyHandle(kh),
            nonce: Nonce(nonce),
            aead: aead.clone(),
        }
    }

    #[test]
    fn version_1_is_byte_for_byte_the_protocol_notes_example() {
        let bytes = write_v1(KeyHandle(0x2000), &Nonce([0, 0, 0, 0, 0, 1]), &notes_aead());
        assert_eq!(
            hex::encode(&bytes),
            "5975626948534d20414541440a\
             01\
             00200000\
             000000000001\
             a93b0a5bc3145e5e905fe08015ca2f138533347e4563f5e8c11f74ec20ae"
        );
        assert_eq!(bytes.len(), 54);
        assert_eq!(
            parse(&bytes),
            Ok(v1(0x2000, [0, 0, 0, 0, 0, 1], &notes_aead()))
        );
    }

    #[test]
    fn crlf_marker_reads_as_version_1() {
        let lf = write_v1(KeyHandle(0x21), &Nonce([1, 2, 3, 4, 5, 6]), &notes_aead());
        let mut crlf = MARKER_CRLF.to_vec();
        crlf.extend_from_slice(&lf[MARKER.len()..]);
        assert_eq!(crlf.len(), 55);
        assert_eq!(
            parse(&crlf),
            Ok(v1(0x21, [1, 2, 3, 4, 5, 6], &notes_aead()))
        );
    }

    #[test]
    fn version_0_is_the_bare_aead_from_8_to_72_bytes() {
        assert_eq!(
            parse(notes_aead().as_bytes()),
            Ok(AeadFile::V0(notes_aead()))
        );
        for len in [8, 72] {
            assert!(
                matches!(parse(&vec![0x55; len]), Ok(AeadFile::V0(a)) if a.as_bytes().len() == len)
            );
        }
        for len in [0, 7, 73, 1024] {
            assert_eq!(
                parse(&vec![0x55; len]),
                Err(FormatError::Malformed(
                    "a version-0 file must be 8 to 72 bytes"
                )),
                "{len} bytes"
            );
        }
        assert_eq!(
            parse(&[0x55; 1025]),
            Err(FormatError::Malformed("longer than any AEAD file"))
        );
    }

    #[test]
    fn marker_then_unknown_version_is_an_error() {
        for v in [0u8, 2, 0x0a, 0xff] {
            let mut b = MARKER.to_vec();
            b.push(v);
            b.extend_from_slice(&[0; 40]);
            assert_eq!(parse(&b), Err(FormatError::UnknownVersion(v)));
        }
        let mut b = MARKER_CRLF.to_vec();
        b.push(2);
        assert_eq!(parse(&b), Err(FormatError::UnknownVersion(2)));
    }

    #[test]
    fn version_1_lengths_are_checked() {
        assert_eq!(
            parse(MARKER),
            Err(FormatError::Malformed("marker without a version"))
        );
        let full = write_v1(KeyHandle(1), &Nonce([1; 6]), &notes_aead());
        let header_end = MARKER.len() + HEADER_LEN;
        for cut in MARKER.len() + 1..header_end {
            assert_eq!(
                parse(&full[..cut]),
                Err(FormatError::Malformed("version-1 header is cut short")),
                "cut at {cut}"
            );
        }
        for aead_len in [0usize, 7, 73] {
            let mut b = full[..header_end].to_vec();
            b.extend_from_slice(&vec![0x42; aead_len]);
            assert_eq!(
                parse(&b),
                Err(FormatError::Malformed(
                    "a version-1 AEAD must be 8 to 72 bytes"
                )),
                "{aead_len}-byte AEAD"
            );
        }
        for aead_len in [8usize, 72] {
            let mut b = full[..header_end].to_vec();
            b.extend_from_slice(&vec![0x42; aead_len]);
            assert!(parse(&b).is_ok(), "{aead_len}-byte AEAD");
        }
    }

    #[test]
    fn no_bytes_make_it_panic() {
        // Every prefix of both markers and of a good file, and pseudo-random junk.
        let good = write_v1(KeyHandle(7), &Nonce([9; 6]), &notes_aead());
        for n in 0..=good.len() {
            let _ = parse(&good[..n]);
        }
        let mut crlf = MARKER_CRLF.to_vec();
        crlf.extend_from_slice(&good[MARKER.len()..]);
        for n in 0..=crlf.len() {
            let _ = parse(&crlf[..n]);
        }
        let mut x: u32 = 0x1234_5678;
        for n in 0..300 {
            let junk: Vec<u8> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = parse(&junk);
            let mut marked = MARKER.to_vec();
            marked.extend_from_slice(&junk);
            let _ = parse(&marked);
        }
    }
}
