//! AEAD files: `aead_store::format::parse` takes any bytes, and what it accepts it
//! describes exactly.
//!
//! Why: AEAD files arrive by rsync from the machine that generated the keys, and the daemon
//! reads them on every lookup; a file that makes the parser panic would take the decode
//! path down for every YubiKey. The properties:
//! - `parse` never panics (its documented promise);
//! - a version-0 file is its AEAD, byte for byte;
//! - a version-1 file, written again with `write_v1`, parses to the same key handle, nonce
//!   and AEAD, and for the LF marker `write_v1` reproduces the file exactly (the CRLF marker
//!   is read but never written, so it becomes the LF marker and nothing else changes);
//! - a version-2 (YubiHSM 2) file, written again with `write_v2`, is the same bytes.
#![no_main]
#![forbid(unsafe_code)]

use aead_store::format::{self, AeadFile, MARKER, MARKER_CRLF};
use aead_store::Sealed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = format::parse(data);
    match &parsed {
        Err(_) => {}
        Ok(AeadFile::V0(aead)) => assert_eq!(aead.as_bytes(), data),
        Ok(AeadFile::Keyed(Sealed::Hsm1 {
            key_handle,
            nonce,
            aead,
        })) => {
            let written = format::write_v1(*key_handle, nonce, aead);
            assert_eq!(format::parse(&written), parsed);
            let body = data
                .strip_prefix(MARKER)
                .or_else(|| data.strip_prefix(MARKER_CRLF))
                .expect("a version-1 file starts with a marker");
            assert_eq!(&written[MARKER.len()..], body);
        }
        Ok(AeadFile::Keyed(Sealed::Hsm2 { key_id, aead })) => {
            assert_eq!(format::write_v2(*key_id, aead), data);
        }
    }
});
