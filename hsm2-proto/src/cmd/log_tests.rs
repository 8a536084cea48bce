//! The audit log's and the options' layouts, and the digest chain against entries a real
//! YubiHSM 2 printed (published `audit get` output after a factory reset).

use super::tests::{h, request_is, response_is};
use super::*;
use crate::{Algorithm, AuthKey, ObjectId};

fn entry(
    number: u16,
    command: u8,
    length: u16,
    session_key: u16,
    result: u8,
    systick: u32,
    digest: &str,
) -> LogEntry {
    let (target_key, second_key) = match command {
        0x00 => (0, 0),
        _ => (0xffff, 0xffff),
    };
    LogEntry {
        number,
        command,
        length,
        session_key,
        target_key,
        second_key,
        result,
        systick,
        digest: h(digest).try_into().unwrap(),
    }
}

#[test]
fn the_digest_chain_is_the_devices() {
    let reset = entry(
        1,
        0xff,
        0xffff,
        0xffff,
        0xff,
        0xffff_ffff,
        "33012657537e4842f57fa6ed3b09b25b",
    );
    let reset = LogEntry {
        target_key: 0xffff,
        second_key: 0xffff,
        ..reset
    };
    let boot = entry(
        2,
        0x00,
        0,
        0xffff,
        0x00,
        0,
        "fc153091560e18bca82621522c85bdba",
    );
    let set_option = entry(
        3,
        0x4f,
        5,
        0x0001,
        0xcf,
        1987,
        "3d9380a76ae41826d90daa44c1085a62",
    );
    let again = entry(
        4,
        0x4f,
        4,
        0x0001,
        0xcf,
        3479,
        "43d063d6f0d67b43b87cd67df2f6c2bc",
    );
    assert!(boot.follows(reset.number, &reset.digest));
    assert!(set_option.follows(boot.number, &boot.digest));
    assert!(again.follows(set_option.number, &set_option.digest));
    assert!(
        !again.follows(boot.number, &boot.digest),
        "a gap is a break"
    );
    let forged = LogEntry {
        result: 0x7f,
        ..again
    };
    assert!(!forged.follows(set_option.number, &set_option.digest));
    assert_eq!(
        set_option.data(),
        h("00034f00050001ffffffffcf000007c3").as_slice()
    );
}

#[test]
fn log_commands_match_yubicos_layouts() {
    request_is(&GetLogEntries, &h("4d0000"));
    request_is(
        &SetLogIndex { index: 41 },
        &h("670002 0029".replace(' ', "").as_str()),
    );
    let e = entry(
        2,
        0x00,
        0,
        0xffff,
        0x00,
        0,
        "fc153091560e18bca82621522c85bdba",
    );
    let mut bytes = h("cd0025 0001 0002 01".replace(' ', "").as_str());
    bytes.extend(h(
        "0002000000ffff000000000000000000fc153091560e18bca82621522c85bdba",
    ));
    response_is::<GetLogEntries>(
        &LogEntries {
            unlogged_boots: 1,
            unlogged_auths: 2,
            entries: vec![e],
        },
        &bytes,
    );
    // The count must match the entries that follow.
    let short = crate::codec::Frame::new(0xcd, &h("0000000002")).unwrap();
    assert!(decode_response::<GetLogEntries>(&short).is_err());
    let long = crate::codec::Frame::new(0xcd, &bytes[3..bytes.len() - 1]).unwrap();
    assert!(decode_response::<GetLogEntries>(&long).is_err());
}

#[test]
fn option_commands_match_yubicos_layouts() {
    request_is(
        &SetOption::force_audit(AuditSetting::On),
        &h("4f0004010001 01".replace(' ', "").as_str()),
    );
    request_is(
        &SetOption::command_audit(&[(0x53, AuditSetting::On), (0x5c, AuditSetting::Fixed)]),
        &h("4f000703000453015c02"),
    );
    request_is(
        &GetOption {
            option: DeviceOption::ForceAudit,
        },
        &h("50000101"),
    );
    response_is::<GetOption>(&OptionValue { value: vec![2] }, &h("d0000102"));
    assert_eq!(
        OptionValue { value: vec![2] }.audit_setting(),
        Some(AuditSetting::Fixed)
    );
    assert_eq!(OptionValue { value: vec![2, 1] }.audit_setting(), None);
    assert_eq!(OptionValue { value: vec![1] }.command_settings(), None);
    // The length field must be the value's.
    let bad = crate::codec::Frame::new(0x4f, &h("01000201")).unwrap();
    assert!(decode_request::<SetOption>(&bad).is_err());
}

#[test]
fn reset_and_change_authentication_key_match_yubicos_layouts() {
    request_is(&ResetDevice, &h("080000"));
    let key = AuthKey::new([0x11; 16], [0x22; 16]);
    let mut bytes = h("6c0023000526");
    bytes.extend([0x11; 16]);
    bytes.extend([0x22; 16]);
    let req = ChangeAuthenticationKey {
        id: ObjectId(5),
        algorithm: Algorithm::Aes128YubicoAuthentication,
        key,
    };
    request_is(&req, &bytes);
    assert!(req
        .check_response(&ObjectIdResponse { id: ObjectId(6) })
        .is_err());
}
