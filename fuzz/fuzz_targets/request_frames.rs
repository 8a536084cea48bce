//! Request frames: whatever bytes arrive, the emulator answers like a device and never
//! panics, and every request it understands is one the driver could have written.
//!
//! Why: the emulator is the soft HSM behind `ksm serve --demo` and staging set-ups, and its
//! engine parses the same request types the driver encodes; a request decoder that panics or
//! disagrees with its encoder would break both. The bytes are fed one at a time to a fresh
//! engine for the demo device and for pyhsm's test set-up (locked key store, an admin OTP, and
//! `hsm ffffffff`'s debug flag, so `MONITOR_EXIT` reaches the console), and checked against the
//! framing rule of the wire protocol, written out here independently of the engine:
//! - while framing, a zero byte or a byte count over 97 is skipped (resync, line noise);
//!   otherwise a frame is the count byte and that many more bytes;
//! - the engine answers nothing until a frame is complete, then exactly one response frame
//!   for that command (`bcnt, cmd | 0x80, payload`), except `MONITOR_EXIT`, which answers
//!   nothing or drops to the console;
//! - a request that decodes re-encodes to the very frame it came from, and the answer is
//!   either a bare status (the emulator's reply to what it refuses to parse) or a response
//!   the driver decodes, with the echoed fields the driver checks.
//!
//! The whole input is also fed in one piece to another fresh engine, which must not panic.
#![no_main]
#![forbid(unsafe_code)]

use std::sync::OnceLock;

use hsm_proto::cmd::{self, Command, Response};
use hsm_proto::codec::MAX_PAYLOAD;
use hsm_proto::emulator::{Engine, ResolvedConfig};
use hsm_proto::{Flags, Opcode, RESPONSE_BIT};
use ksm_fuzz::{device_config, with_command, DEMO_DEVICE, PYHSM_TEST_DEVICE};
use libfuzzer_sys::fuzz_target;

fn devices() -> &'static [ResolvedConfig; 2] {
    static DEVICES: OnceLock<[ResolvedConfig; 2]> = OnceLock::new();
    DEVICES.get_or_init(|| {
        // Every opcode but NULL has a request type in `with_command!`.
        for op in Opcode::ALL.iter().filter(|op| **op != Opcode::Null) {
            assert!(with_command!(*op, known(), false), "{op} missing");
        }
        let pyhsm = device_config(PYHSM_TEST_DEVICE);
        assert!(
            pyhsm.system_flags.contains(Flags::DEBUG),
            "pyhsm's `hsm ffffffff`"
        );
        [device_config(DEMO_DEVICE), pyhsm]
    })
}

fn known<C: Command>() -> bool {
    true
}

/// The wire protocol's framing, as a reference for the engine's.
#[derive(Default)]
struct Framer {
    pending: Vec<u8>,
}

impl Framer {
    /// Takes one byte; returns the frame it completes.
    fn push(&mut self, b: u8) -> Option<Vec<u8>> {
        if self.pending.is_empty() && (b == 0 || usize::from(b) > MAX_PAYLOAD + 1) {
            return None;
        }
        self.pending.push(b);
        if self.pending.len() == usize::from(self.pending[0]) + 1 {
            return Some(std::mem::take(&mut self.pending));
        }
        None
    }
}

/// Checks the engine's answer to one complete request frame of type `C`.
fn answered<C: Command>(frame: &[u8], out: &[u8]) {
    let Ok(req) = cmd::decode_exact::<C>(C::OPCODE, &frame[2..]) else {
        return;
    };
    assert_eq!(
        cmd::encode_request(&req).ok().as_deref(),
        Some(frame),
        "{} request does not re-encode to its frame: {req:?}",
        C::OPCODE
    );
    if C::OPCODE == Opcode::MonitorExit || out.len() <= 3 {
        return;
    }
    let resp = cmd::decode_exact::<C::Response>(C::OPCODE, &out[2..])
        .unwrap_or_else(|e| panic!("{} answer the driver cannot decode: {e}", C::OPCODE));
    if let Err(e) = req.check_echo(&resp) {
        panic!(
            "{} answer fails the driver's echo check ({e}), status {}",
            C::OPCODE,
            resp.status()
        );
    }
}

fn run(cfg: &ResolvedConfig, data: &[u8]) {
    let mut engine = Engine::new(cfg);
    let mut framer = Framer::default();
    for &b in data {
        let was_console = engine.in_console();
        let out = engine.feed(&[b]);
        if was_console {
            // The console echoes and prints prompts; leaving it starts framing afresh.
            if !engine.in_console() {
                framer = Framer::default();
            }
            continue;
        }
        let Some(frame) = framer.push(b) else {
            assert!(
                out.is_empty(),
                "answer before a frame was complete: {out:02x?}"
            );
            continue;
        };
        let op = Opcode::from_u8(frame[1]);
        if op == Opcode::MonitorExit {
            assert!(
                out.is_empty() || engine.in_console(),
                "MONITOR_EXIT answered with a frame"
            );
            continue;
        }
        assert!(!engine.in_console(), "{op} dropped to the console");
        assert!(
            (3..=MAX_PAYLOAD + 2).contains(&out.len())
                && usize::from(out[0]) == out.len() - 1
                && out[1] == frame[1] | RESPONSE_BIT,
            "{op}: not one response frame: {out:02x?}"
        );
        with_command!(op, answered(&frame, &out), ());
    }
}

fuzz_target!(|data: &[u8]| {
    for cfg in devices() {
        run(cfg, data);
        let _ = Engine::new(cfg).feed(data);
    }
});
