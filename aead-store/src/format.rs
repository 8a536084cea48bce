//! pyhsm's AEAD file formats, as pure functions over bytes.
//!
//! | version | layout |
//! |---------|--------|
//! | 0 | the AEAD bytes alone; key handle and nonce come from the directory and file name |
//! | 1 | `"YubiHSM AEAD\n"`, version byte `01`, key handle u32 LE, nonce\[6\], AEAD |
//! | 1, CRLF | as version 1 with the marker `"YubiHSM AEAD\r\n"` (pyhsm on Windows) |
//! | 2 (ours) | `"YubiHSM AEAD\n"`, version byte `02`, otp-aead-key id u16 BE, the 36-byte YubiHSM 2 AEAD |
//!
//! We read all four and write versions 1 and 2. A file that starts with a marker is
//! version 1 or 2 or an error, never version 0.
//!
//! Version 2 holds a YubiHSM 2 OTP AEAD (6-byte nonce ‖ 22-byte ciphertext ‖ 8-byte tag) and
//! the id of the otp-aead-key it is sealed under, big-endian as the YubiHSM 2 writes object
//! ids. It keeps pyhsm's marker so that pyhsm, handed such a file, refuses it cleanly:
//! pyhsm 1.2.1's `YHSM_GeneratedAEAD.load` (`pyhsm/aead_cmd.py`) reads the byte after the
//! marker and raises `YHSM_Error('Unknown AEAD file format')` for anything but 1, rather
//! than taking the file for a version-0 AEAD. pyhsm also expanded any `0a` byte after a CRLF
//! marker to `0d 0a`; that cannot be undone reliably, so such a file parses with a longer
//! AEAD that the HSM then refuses.

use otp_core::{Aead, KeyHandle, Nonce, ObjectId, OtpAead};

/// The version-1 marker line (13 bytes).
pub const MARKER: &[u8] = b"YubiHSM AEAD\n";
/// The marker as pyhsm wrote it on Windows (14 bytes).
pub const MARKER_CRLF: &[u8] = b"YubiHSM AEAD\r\n";
/// pyhsm's version after a marker.
pub const VERSION_1: u8 = 1;
/// Our version for YubiHSM 2 AEADs.
pub const VERSION_2: u8 = 2;
/// Length of a whole version-2 file: marker, version, key id, AEAD.
pub const V2_LEN: usize = 13 + 1 + 2 + OtpAead::LEN;
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
    /// Version 2: a YubiHSM 2 OTP AEAD and its otp-aead-key.
    Hsm2 {
        /// The otp-aead-key it is sealed under.
        key_id: ObjectId,
        /// The 36-byte AEAD, its nonce first.
        aead: OtpAead,
    },
}

/// Why bytes are not an AEAD file. The store adds the path ([`crate::StoreError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// A marker followed by a version other than 1 or 2.
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
    if version == VERSION_2 && bytes.starts_with(MARKER) {
        return parse_v2(rest);
    }
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

/// A version-2 body after the version byte: key id, then exactly 36 bytes of AEAD.
fn parse_v2(rest: &[u8]) -> Result<AeadFile, FormatError> {
    let (Some(id), Some(aead)) = (rest.get(..2), rest.get(2..)) else {
        return Err(FormatError::Malformed("version-2 header is cut short"));
    };
    let aead = <[u8; OtpAead::LEN]>::try_from(aead)
        .map_err(|_| FormatError::Malformed("a version-2 AEAD must be 36 bytes"))?;
    Ok(AeadFile::Hsm2 {
        key_id: ObjectId(u16::from_be_bytes([id[0], id[1]])),
        aead: OtpAead(aead),
    })
}

/// The bytes of a version-2 file: a YubiHSM 2 AEAD under otp-aead-key `key_id`.
pub fn write_v2(key_id: ObjectId, aead: &OtpAead) -> Vec<u8> {
    let mut out = Vec::with_capacity(V2_LEN);
    out.extend_from_slice(MARKER);
    out.push(VERSION_2);
    out.extend_from_slice(&key_id.0.to_be_bytes());
    out.extend_from_slice(&aead.0);
    out
}

/// The bytes of a version-1 file (LF marker), what we write for a YubiHSM 1.
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

    /// The YubiHSM 2 form of the notes' AEAD (shared notes §5.2): its nonce in front.
    fn notes_otp_aead() -> OtpAead {
        OtpAead::from_yubihsm1(
            [0, 0, 0, 0, 0, 1],
            notes_aead().as_bytes().try_into().unwrap(),
        )
    }

    #[test]
    fn version_2_is_marker_version_key_id_big_endian_and_the_36_bytes() {
        let bytes = write_v2(ObjectId(0x0102), &notes_otp_aead());
        assert_eq!(
            hex::encode(&bytes),
            "5975626948534d20414541440a\
             02\
             0102\
             000000000001\
             a93b0a5bc3145e5e905fe08015ca2f138533347e4563f5e8c11f74ec20ae"
        );
        assert_eq!(bytes.len(), V2_LEN);
        assert_eq!(
            parse(&bytes),
            Ok(AeadFile::Hsm2 {
                key_id: ObjectId(0x0102),
                aead: notes_otp_aead()
            })
        );
    }

    #[test]
    fn version_2_lengths_are_exact() {
        let full = write_v2(ObjectId(5), &notes_otp_aead());
        for cut in MARKER.len() + 1..MARKER.len() + 3 {
            assert_eq!(
                parse(&full[..cut]),
                Err(FormatError::Malformed("version-2 header is cut short")),
                "cut at {cut}"
            );
        }
        for len in [MARKER.len() + 3, V2_LEN - 1] {
            assert_eq!(
                parse(&full[..len]),
                Err(FormatError::Malformed("a version-2 AEAD must be 36 bytes")),
                "{len} bytes"
            );
        }
        let mut long = full.clone();
        long.push(0);
        assert_eq!(
            parse(&long),
            Err(FormatError::Malformed("a version-2 AEAD must be 36 bytes"))
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
        for v in [0u8, 3, 0x0a, 0xff] {
            let mut b = MARKER.to_vec();
            b.push(v);
            b.extend_from_slice(&[0; 40]);
            assert_eq!(parse(&b), Err(FormatError::UnknownVersion(v)));
        }
        let mut b = MARKER_CRLF.to_vec();
        b.push(3);
        assert_eq!(parse(&b), Err(FormatError::UnknownVersion(3)));
        // We never wrote version 2 with pyhsm's Windows marker.
        let mut b = MARKER_CRLF.to_vec();
        b.push(2);
        b.extend_from_slice(&[0; 38]);
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

    /// What every prefix of a good file, and pseudo-random junk, must parse to: not only no
    /// panic, but the one error (or AEAD) the rules in [`parse`] give for that length.
    #[test]
    fn every_prefix_and_junk_parse_to_the_error_their_length_gives() {
        let good = write_v1(KeyHandle(7), &Nonce([9; 6]), &notes_aead());
        let mut crlf = MARKER_CRLF.to_vec();
        crlf.extend_from_slice(&good[MARKER.len()..]);
        for (file, marker) in [(&good, MARKER), (&crlf, MARKER_CRLF)] {
            let header_end = marker.len() + HEADER_LEN;
            for n in 0..=file.len() {
                let cut = &file[..n];
                let want = if n < marker.len() {
                    // Part of a marker only: taken for a version-0 AEAD of that length.
                    match Aead::new(cut) {
                        Ok(a) => Ok(AeadFile::V0(a)),
                        Err(_) => Err(FormatError::Malformed(
                            "a version-0 file must be 8 to 72 bytes",
                        )),
                    }
                } else if n == marker.len() {
                    Err(FormatError::Malformed("marker without a version"))
                } else if n < header_end {
                    Err(FormatError::Malformed("version-1 header is cut short"))
                } else if n - header_end < 8 {
                    Err(FormatError::Malformed(
                        "a version-1 AEAD must be 8 to 72 bytes",
                    ))
                } else {
                    Ok(AeadFile::V1 {
                        key_handle: KeyHandle(7),
                        nonce: Nonce([9; 6]),
                        aead: Aead::new(&cut[header_end..]).unwrap(),
                    })
                };
                assert_eq!(parse(cut), want, "{n} bytes of {marker:?}");
            }
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
            // Unmarked junk is a version-0 AEAD of 8 to 72 bytes, else that error.
            if !junk.starts_with(MARKER) && !junk.starts_with(MARKER_CRLF) {
                let want = if (8..=72).contains(&n) {
                    Ok(AeadFile::V0(Aead::new(&junk).unwrap()))
                } else {
                    Err(FormatError::Malformed(
                        "a version-0 file must be 8 to 72 bytes",
                    ))
                };
                assert_eq!(parse(&junk), want, "{n} bytes of junk");
            }
            // Marked junk: the version byte decides, then the lengths.
            let mut marked = MARKER.to_vec();
            marked.extend_from_slice(&junk);
            let want = match junk.first() {
                None => Err(FormatError::Malformed("marker without a version")),
                Some(&VERSION_1) if n < HEADER_LEN => {
                    Err(FormatError::Malformed("version-1 header is cut short"))
                }
                Some(&VERSION_1) if !(8..=72).contains(&(n - HEADER_LEN)) => Err(
                    FormatError::Malformed("a version-1 AEAD must be 8 to 72 bytes"),
                ),
                Some(&VERSION_2) if n < 3 => {
                    Err(FormatError::Malformed("version-2 header is cut short"))
                }
                Some(&VERSION_2) if n != 3 + OtpAead::LEN => {
                    Err(FormatError::Malformed("a version-2 AEAD must be 36 bytes"))
                }
                Some(&VERSION_1 | &VERSION_2) => continue,
                Some(&v) => Err(FormatError::UnknownVersion(v)),
            };
            assert_eq!(parse(&marked), want, "{n} bytes of junk after the marker");
        }
    }
}
