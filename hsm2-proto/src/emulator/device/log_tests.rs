//! Reset Device, the audit log, the options and Change Authentication Key, through the
//! crate's own client (see `tests.rs` for the in-process transport).
#![allow(clippy::unwrap_used)]

use super::tests::{client, code, factory_key, h, otp_key_cfg};
use super::*;
use crate::cmd::{AuditSetting, LogEntry, SetOption};
use crate::{Error, Secret};

fn chain_holds(entries: &[LogEntry]) -> bool {
    entries
        .windows(2)
        .all(|w| w[1].follows(w[0].number, &w[0].digest))
}

fn audit_on(commands: &[CommandCode]) -> Vec<u8> {
    commands.iter().flat_map(|c| [c.to_u8(), 1]).collect()
}

#[test]
fn reset_device_answers_in_the_session_then_restores_the_factory_state() {
    let mut cfg = DeviceConfig::factory();
    cfg.otp_aead_keys
        .push(otp_key_cfg(0x10, &[7; 16], [1, 2, 3, 4], "decrypt-otp"));
    cfg.force_audit = AuditSetting::On;
    cfg.command_audit = audit_on(&[CommandCode::GetPseudoRandom]);
    let mut c = client(&cfg);
    let mut s = c.open_session(ObjectId(1), &factory_key()).unwrap();
    change_own_key(&mut c, &mut s);
    c.send(&mut s, &cmd::GetPseudoRandom { length: 4 }).unwrap();
    // The answer is sealed with the session's keys: the device answers, then resets.
    c.send(&mut s, &cmd::ResetDevice).unwrap();
    let gone = c.send(&mut s, &cmd::Echo { data: vec![1] });
    assert!(
        matches!(
            gone,
            Err(Error::Device {
                code: ErrorCode::InvalidSession,
                ..
            })
        ),
        "{gone:?}"
    );
    let mut again = c.open_session(ObjectId(1), &factory_key()).unwrap();
    let listed = c
        .send(&mut again, &cmd::ListObjects { filters: vec![] })
        .unwrap();
    assert_eq!(
        listed.objects.len(),
        1,
        "the default authentication key alone"
    );
    let info = c
        .send(
            &mut again,
            &cmd::GetObjectInfo {
                id: ObjectId(1),
                object_type: ObjectType::AuthenticationKey,
            },
        )
        .unwrap();
    assert_eq!((info.size, info.sequence), (40, 0));
    assert_eq!(info.capabilities, info.delegated);
    assert_eq!(c.force_audit(&mut again).unwrap(), AuditSetting::Off);
    let log = c.get_log_entries(&mut again).unwrap();
    assert_eq!(log.entries.len(), 2, "{log:?}");
    assert_eq!(log.entries[0].data(), {
        let mut d = [0xff; 16];
        d[..2].copy_from_slice(&[0, 1]);
        d
    });
    assert_eq!(
        log.entries[1].data(),
        [0, 2, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    assert!(chain_holds(&log.entries));
    assert_eq!(c.device_info().unwrap().log_used, 2);
}

/// Replaces the factory key's K-ENC and K-MAC by themselves: the command answers the key's
/// id and later sessions still open.
fn change_own_key(
    c: &mut crate::Client<super::tests::InProcess>,
    s: &mut crate::session::HostSession,
) {
    {
        let id = c
            .send(
                s,
                &cmd::ChangeAuthenticationKey {
                    id: ObjectId(1),
                    algorithm: Algorithm::Aes128YubicoAuthentication,
                    key: factory_key(),
                },
            )
            .unwrap();
        assert_eq!(id.id, ObjectId(1));
    }
}

#[test]
fn force_audit_refuses_logged_commands_until_the_index_moves() {
    let mut c = client(&DeviceConfig::factory());
    let mut s = c.open_session(ObjectId(1), &factory_key()).unwrap();
    c.set_option(
        &mut s,
        &SetOption::command_audit(&[(CommandCode::GetPseudoRandom.to_u8(), AuditSetting::On)]),
    )
    .unwrap();
    c.set_option(&mut s, &SetOption::force_audit(AuditSetting::On))
        .unwrap();
    let before = c.get_log_entries(&mut s).unwrap().entries;
    let mut served = 0;
    let refusal = loop {
        match c.send(&mut s, &cmd::GetPseudoRandom { length: 1 }) {
            Ok(_) => served += 1,
            Err(e) => break e.code(),
        }
        assert!(served <= LOG_CAPACITY, "never refused");
    };
    assert_eq!(refusal, Some(ErrorCode::LogFull));
    assert_eq!(served, LOG_CAPACITY - before.len());
    let info = c.device_info().unwrap();
    assert_eq!(info.log_used, info.log_capacity);
    // A session still opens when the log is full.
    let mut other = c.open_session(ObjectId(1), &factory_key()).unwrap();
    let full = c.get_log_entries(&mut other).unwrap();
    assert_eq!(full.entries.len(), LOG_CAPACITY);
    assert!(chain_holds(&full.entries));
    let last = *full.entries.last().unwrap();
    c.set_log_index(&mut other, last.number).unwrap();
    assert_eq!(c.device_info().unwrap().log_used, 0);
    c.send(&mut s, &cmd::GetPseudoRandom { length: 1 }).unwrap();
    let next = c.get_log_entries(&mut s).unwrap().entries;
    assert_eq!(next.len(), 1);
    assert!(
        next[0].follows(last.number, &last.digest),
        "the chain goes on"
    );
    assert_eq!(next[0].command, CommandCode::GetPseudoRandom.to_u8());
    assert_eq!(next[0].session_key, 1);
    assert_eq!(next[0].result, CommandCode::GetPseudoRandom.response_byte());
    // An index past the newest entry is refused.
    let r = c.set_log_index(&mut s, next[0].number.wrapping_add(5));
    assert_eq!(code(r), ErrorCode::InvalidData);
}

#[test]
fn unlogged_authentications_are_counted_when_a_forced_log_is_full() {
    let mut cfg = DeviceConfig::factory();
    cfg.force_audit = AuditSetting::On;
    cfg.command_audit = audit_on(&[CommandCode::CreateSession, CommandCode::AuthenticateSession]);
    let mut c = client(&cfg);
    for _ in 0..40 {
        let s = c.open_session(ObjectId(1), &factory_key()).unwrap();
        c.close_session(s).unwrap();
    }
    let mut s = c.open_session(ObjectId(1), &factory_key()).unwrap();
    let log = c.get_log_entries(&mut s).unwrap();
    assert_eq!(log.entries.len(), LOG_CAPACITY);
    // 2 factory entries, then 30 sessions of two entries each fill it; 11 more are counted.
    assert_eq!((log.unlogged_boots, log.unlogged_auths), (0, 11));
    let create = log.entries[2];
    assert_eq!(
        (
            create.command,
            create.length,
            create.session_key,
            create.target_key
        ),
        (CommandCode::CreateSession.to_u8(), 10, 0xffff, 1)
    );
    assert_eq!(create.result, CommandCode::CreateSession.response_byte());
    assert_eq!(log.entries[3].length, 17);
    c.transport_mut().device.reset();
    let mut s = c.open_session(ObjectId(1), &factory_key()).unwrap();
    assert_eq!(c.get_log_entries(&mut s).unwrap().unlogged_boots, 1);
}

#[test]
fn entries_name_the_objects_a_command_used_and_its_result() {
    let mut cfg = DeviceConfig::factory();
    cfg.otp_aead_keys.push(otp_key_cfg(
        0x10,
        &h::<16>("808182838485868788898a8b8c8d8e8f"),
        [0x78, 0x56, 0x34, 0x12],
        "all",
    ));
    cfg.otp_aead_keys
        .push(otp_key_cfg(0x11, &[9; 16], [1, 0, 0, 0], "all"));
    cfg.command_audit = audit_on(&[
        CommandCode::DecryptOtp,
        CommandCode::CreateOtpAead,
        CommandCode::RewrapOtpAead,
    ]);
    let mut c = client(&cfg);
    let mut s = c.open_session(ObjectId(1), &factory_key()).unwrap();
    let aead = c
        .create_otp_aead(
            &mut s,
            ObjectId(0x10),
            Secret(h("000102030405060708090a0b0c0d0e0f")),
            Secret(h("010203040506")),
        )
        .unwrap();
    c.rewrap_otp_aead(&mut s, ObjectId(0x10), ObjectId(0x11), aead)
        .unwrap();
    c.decrypt_otp(
        &mut s,
        ObjectId(0x10),
        aead,
        h("2f5d71a4915dec304aa13ccf97bb0dbb"),
    )
    .unwrap();
    let r = c.decrypt_otp(&mut s, ObjectId(0x10), aead, [0; 16]);
    assert_eq!(code(r), ErrorCode::InvalidOtp);
    let e = c.get_log_entries(&mut s).unwrap().entries;
    assert_eq!(e.len(), 6);
    let fields = |e: &LogEntry| (e.command, e.length, e.target_key, e.second_key, e.result);
    assert_eq!(fields(&e[2]), (0x61, 24, 0x10, 0xffff, 0xe1));
    assert_eq!(fields(&e[3]), (0x63, 40, 0x10, 0x11, 0xe3));
    assert_eq!(fields(&e[4]), (0x60, 54, 0x10, 0xffff, 0xe0));
    assert_eq!(fields(&e[5]), (0x60, 54, 0x10, 0xffff, 0x7f));
    assert!(chain_holds(&e));
}

#[test]
fn options_read_back_and_unknown_ones_are_invalid_data() {
    let mut c = client(&DeviceConfig::factory());
    let mut s = c.open_session(ObjectId(1), &factory_key()).unwrap();
    assert_eq!(c.force_audit(&mut s).unwrap(), AuditSetting::Off);
    let all = c
        .get_option(&mut s, cmd::DeviceOption::CommandAudit)
        .unwrap()
        .command_settings()
        .unwrap();
    assert_eq!(all.len(), AUDITABLE_COMMANDS.len());
    assert!(all.iter().all(|(_, v)| *v == AuditSetting::Off));
    c.set_option(&mut s, &SetOption::force_audit(AuditSetting::Fixed))
        .unwrap();
    let r = c.set_option(&mut s, &SetOption::force_audit(AuditSetting::Off));
    assert_eq!(code(r), ErrorCode::InvalidData);
    assert_eq!(c.force_audit(&mut s).unwrap(), AuditSetting::Fixed);
    let r = c.get_option(&mut s, cmd::DeviceOption::FipsMode);
    assert_eq!(code(r), ErrorCode::InvalidData);
    let r = c.set_option(
        &mut s,
        &SetOption {
            option: cmd::DeviceOption::AlgorithmToggle,
            value: vec![9, 0],
        },
    );
    assert_eq!(code(r), ErrorCode::InvalidData);
}

#[test]
fn change_authentication_key_changes_only_the_sessions_own_key() {
    let mut c = client(&DeviceConfig::factory());
    let mut s = c.open_session(ObjectId(1), &factory_key()).unwrap();
    let head = cmd::NewObject {
        id: ObjectId(5),
        label: Label::default(),
        domains: Domains(1),
        capabilities: Capabilities::NONE.with(Capability::ChangeAuthenticationKey),
        algorithm: Algorithm::Aes128YubicoAuthentication,
    };
    let first = AuthKey::from_password(b"first");
    let second = AuthKey::from_password(b"second");
    c.send(
        &mut s,
        &cmd::PutAuthenticationKey {
            object: head,
            delegated: Capabilities::NONE,
            key: first.clone(),
        },
    )
    .unwrap();
    let change = |key: &AuthKey| cmd::ChangeAuthenticationKey {
        id: ObjectId(5),
        algorithm: Algorithm::Aes128YubicoAuthentication,
        key: key.clone(),
    };
    // Another session's key, even with every capability: invalid-id.
    assert_eq!(code(c.send(&mut s, &change(&second))), ErrorCode::InvalidId);
    let mut own = c.open_session(ObjectId(5), &first).unwrap();
    let r = c.send(
        &mut own,
        &cmd::ChangeAuthenticationKey {
            algorithm: Algorithm::Aes128YubicoOtp,
            ..change(&second)
        },
    );
    assert_eq!(code(r), ErrorCode::InvalidData);
    assert_eq!(c.send(&mut own, &change(&second)).unwrap().id, ObjectId(5));
    let old = c.open_session(ObjectId(5), &first);
    assert_eq!(old.unwrap_err(), Error::CardCryptogram);
    c.open_session(ObjectId(5), &second).unwrap();
}

#[test]
fn device_info_lists_every_algorithm_of_firmware_2_3_1() {
    let mut c = client(&DeviceConfig::factory());
    let info = c.device_info().unwrap();
    assert_eq!(info.algorithms.len(), 54);
    assert!(info.supports(Algorithm::AesCbc));
    assert!(info.supports(Algorithm::RsaPkcs1Sha1));
    assert!(!info.supports(Algorithm::AesKwp));
    assert_eq!((info.log_capacity, info.log_used), (62, 2));
}

/// The hook at the dispatch logs commands it was never told about: Export and Import
/// Wrapped (another file's handlers) name the wrap key first and the object second, as
/// the entries a real device printed for Import Wrapped do.
#[test]
fn commands_of_other_handlers_are_logged_with_their_objects() {
    let all = AUDITABLE_COMMANDS
        .iter()
        .flat_map(|c| [*c, 1])
        .collect::<Vec<u8>>();
    let mut cfg = DeviceConfig::factory();
    cfg.command_audit = all;
    let caps = Capabilities::parse("decrypt-otp:exportable-under-wrap").unwrap();
    cfg.otp_aead_keys.push(otp_key_cfg(
        0x10,
        &[7; 16],
        [1, 2, 3, 4],
        "decrypt-otp:exportable-under-wrap",
    ));
    let (mut a, mut b) = (
        client(&cfg),
        client(&DeviceConfig {
            otp_aead_keys: vec![],
            ..cfg.clone()
        }),
    );
    let wrap_head = cmd::NewObject {
        id: ObjectId(0x20),
        label: Label::default(),
        domains: Domains(1),
        capabilities: Capabilities::parse("export-wrapped:import-wrapped").unwrap(),
        algorithm: Algorithm::Aes128CcmWrap,
    };
    let mut sa = a.open_session(ObjectId(1), &factory_key()).unwrap();
    let mut sb = b.open_session(ObjectId(1), &factory_key()).unwrap();
    for (c, s) in [(&mut a, &mut sa), (&mut b, &mut sb)] {
        c.put_wrap_key(s, wrap_head, caps, SecretBytes::new([9; 16]))
            .unwrap();
    }
    let wrapped = a
        .export_wrapped(
            &mut sa,
            ObjectId(0x20),
            ObjectType::OtpAeadKey,
            ObjectId(0x10),
        )
        .unwrap();
    b.import_wrapped(&mut sb, ObjectId(0x20), wrapped).unwrap();
    let fields = |e: &LogEntry| (e.command, e.session_key, e.target_key, e.second_key);
    let ea = a.get_log_entries(&mut sa).unwrap().entries;
    let eb = b.get_log_entries(&mut sb).unwrap().entries;
    assert_eq!(fields(&ea[ea.len() - 2]), (0x4c, 1, 0x20, 0xffff), "{ea:?}");
    assert_eq!(fields(&ea[ea.len() - 1]), (0x4a, 1, 0x20, 0x10), "{ea:?}");
    assert_eq!(fields(&eb[eb.len() - 1]), (0x4b, 1, 0x20, 0x10), "{eb:?}");
    assert!(chain_holds(&ea) && chain_holds(&eb));
}
