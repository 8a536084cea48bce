//! Response frames: whatever a device sends back, the driver answers with a checked response
//! or an error, never a panic.
//!
//! Why: the bytes on the line come from a USB device, a pty, or (through the daemon's sharing
//! socket) another process. A panic in the driver would kill the HSM owner thread of the
//! daemon, so every byte sequence must end in `Ok` or `Err`.
//!
//! Input: a request frame (`bcnt, cmd, payload`, as the driver writes it) followed by the
//! bytes the "device" answers. For that command the target
//! 1. decodes the answer's payload (after its two header bytes) with the command's response
//!    type, as `Hsm::send` does, and checks that whatever decodes encodes back to the same
//!    bytes (the emulator answers with the very same types, so encode and decode must agree);
//! 2. sends the request through the real driver, `Hsm::send`, over a line whose far end
//!    answers with those bytes: a success must be an OK response whose frame is exactly the
//!    head of the answer;
//! 3. passes the raw request frame through `Hsm::exchange_frame` (the sharing socket's path):
//!    a success must return exactly the head of the answer, marked as this command's response.
#![no_main]
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hsm_proto::cmd::{self, Command, Message, Response};
use hsm_proto::codec::Writer;
use hsm_proto::emulator::Engine;
use hsm_proto::line::Line;
use hsm_proto::{Hsm, Status, Timeouts, RESPONSE_BIT};
use ksm_fuzz::{device_config, lock, with_command, DEMO_DEVICE};
use libfuzzer_sys::fuzz_target;

/// The far end of the driver's line. While `engine` is set it is the emulator, so the
/// driver's start-up (resync, system info, link test) passes. After that, the first frame
/// the driver writes is answered with `reply`; everything else it writes (resync bursts,
/// console probes) gets no answer.
struct FarEnd {
    engine: Option<Engine>,
    reply: Option<Vec<u8>>,
    out: VecDeque<u8>,
}

/// The driver's end: reads what the far end queued, and times out at once when nothing is
/// queued (nothing more will come), so no input makes the target wait.
#[derive(Clone)]
struct ScriptedLine(Arc<Mutex<FarEnd>>);

impl Read for ScriptedLine {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut end = lock(&self.0);
        if end.out.is_empty() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let n = buf.len().min(end.out.len());
        for (slot, b) in buf.iter_mut().zip(end.out.drain(..n)) {
            *slot = b;
        }
        Ok(n)
    }
}

impl Write for ScriptedLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut end = lock(&self.0);
        let end = &mut *end;
        if let Some(engine) = &mut end.engine {
            let answer = engine.feed(buf);
            end.out.extend(answer);
        } else if buf.iter().any(|b| *b != 0) {
            if let Some(reply) = end.reply.take() {
                end.out.extend(reply);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Line for ScriptedLine {
    fn set_read_timeout(&mut self, _t: Duration) -> io::Result<()> {
        Ok(())
    }

    fn clear_input(&mut self) -> io::Result<()> {
        lock(&self.0).out.clear();
        Ok(())
    }
}

/// One driver, opened once on the demo device; each input only re-arms its line.
struct Device {
    hsm: Hsm,
    line: ScriptedLine,
}

impl Device {
    /// The next frame the driver writes is answered with `answer`, and nothing left over from
    /// the previous exchange is still queued.
    fn arm(&self, answer: &[u8]) {
        let mut end = lock(&self.line.0);
        end.out.clear();
        end.reply = Some(answer.to_vec());
    }
}

fn device() -> &'static Mutex<Device> {
    static DEVICE: OnceLock<Mutex<Device>> = OnceLock::new();
    DEVICE.get_or_init(|| {
        let line = ScriptedLine(Arc::new(Mutex::new(FarEnd {
            engine: Some(Engine::new(&device_config(DEMO_DEVICE))),
            reply: None,
            out: VecDeque::new(),
        })));
        let hsm = Hsm::open(Box::new(line.clone()), Timeouts::default())
            .expect("the driver opens the demo emulator");
        lock(&line.0).engine = None;
        Mutex::new(Device { hsm, line })
    })
}

/// The payload bytes of a message, as the emulator would send them.
fn encoded<M: Message>(m: &M) -> Vec<u8> {
    let mut w = Writer::new();
    m.encode(&mut w);
    w.into_inner()
}

/// Steps 1 to 3 of the module comment for request type `C`.
fn exchange<C: Command>(request: &[u8], answer: &[u8]) {
    if let Some(payload) = answer.get(2..) {
        if let Ok(resp) = cmd::decode_exact::<C::Response>(C::OPCODE, payload) {
            assert_eq!(
                encoded(&resp),
                payload,
                "{} response does not re-encode to its bytes: {resp:?}",
                C::OPCODE
            );
        }
    }

    let mut dev = lock(device());
    if let Ok(req) = cmd::decode_exact::<C>(C::OPCODE, &request[2..]) {
        dev.arm(answer);
        if let Ok(resp) = dev.hsm.send(&req) {
            assert_eq!(
                resp.status(),
                Status::Ok,
                "send returned a refusal as success"
            );
            let frame = cmd::encode_response::<C>(&resp).expect("a decoded response fits a frame");
            assert!(
                answer.starts_with(&frame),
                "{} accepted, but its frame is not the head of the answer",
                C::OPCODE
            );
        }
    }
    shared(&mut dev, request, answer);
}

/// Step 3 alone: what the sharing socket does with any request frame.
fn shared(dev: &mut Device, request: &[u8], answer: &[u8]) {
    dev.arm(answer);
    if let Ok(frame) = dev.hsm.exchange_frame(request) {
        assert!(answer.starts_with(&frame), "exchange_frame invented bytes");
        assert_eq!(frame.get(1), Some(&(request[1] | RESPONSE_BIT)));
        assert_eq!(usize::from(frame[0]), frame.len() - 1);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(&bcnt) = data.first() else { return };
    let len = usize::from(bcnt) + 1;
    if bcnt == 0 || data.len() < len {
        return;
    }
    let (request, answer) = data.split_at(len);
    let op = hsm_proto::Opcode::from_u8(request[1]);
    with_command!(
        op,
        exchange(request, answer),
        shared(&mut lock(device()), request, answer)
    );
});
