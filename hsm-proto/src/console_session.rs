//! A client for the configuration console: types lines at a YubiHSM 1 that sits at its text
//! console (`NO_CFG> `, `HSM> `, …) and reads what it answers, for `ksm provision`.
//!
//! The console echoes every typed character, so a key typed at it comes straight back on
//! the line. Nothing the device sends leaves this module unredacted: each [`Reply`] has a
//! display text in which the echo of a secret line is replaced by its mask (whatever the
//! device echoed, typo or not), every registered secret is masked wherever it reappears, and
//! in the answer to a secret line any run of [`HEX_RUN_MASK`] or more hex digits is masked
//! too (an error line that quotes the typed key). The raw bytes are kept only in wiped
//! buffers, and only to be parsed (`keylist`, `stored ok` lines); the echo of a secret line
//! is dropped from them.
//!
//! The texts the console prints (prompts, questions, line formats) are in
//! [`crate::console`]; this module only waits for them. Every wait has a deadline.

use std::io::{ErrorKind, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use tracing::debug;
use zeroize::Zeroizing;

use crate::console::{Prompt, ESC};
use crate::line::{open_serial, Line};
use crate::{Error, Result};

/// The most one answer may hold (a `keylist` of every slot fits many times over); more is
/// refused rather than buffered, so a babbling device cannot make us grow without bound.
pub const MAX_REPLY: usize = 64 * 1024;
/// In the answer to a secret line, runs of this many hex digits or more are masked (a uid is
/// 12 digits; key handles and flags the console prints are 8).
pub const HEX_RUN_MASK: usize = 12;
/// Registered secrets shorter than this are masked only in their own echo: masking every
/// occurrence of a short string would garble the transcript without hiding anything.
pub const MIN_GLOBAL_SECRET: usize = 8;
/// What replaces a secret that is not a typed line's own echo.
pub const REDACTED: &str = "<redacted>";
/// How long an `exit` (which prints nothing) is given to say something anyway.
pub const QUIET_WAIT: Duration = Duration::from_millis(300);
/// Longest part of the console's text quoted in an error.
const ERROR_TAIL: usize = 240;

/// One thing typed at the console: a line (sent with a carriage return) or ESC.
///
/// A secret line carries its text in a wiped string and a mask to show instead; the parts of
/// the text that its mask does not show are registered with the session, which masks them
/// wherever the device repeats them.
pub struct Typed {
    text: Zeroizing<String>,
    shown: String,
    secret: bool,
    esc: bool,
}

impl Typed {
    /// A line without secrets (`hsm 7fffffff`, `keyload`, `yes`), shown as typed.
    pub fn line(text: impl Into<String>) -> Typed {
        let text: String = text.into();
        Typed {
            shown: text.clone(),
            text: Zeroizing::new(text),
            secret: false,
            esc: false,
        }
    }

    /// A line holding secrets, shown as its first `keep` comma-separated fields followed by
    /// `mask` (and the trailing comma, if the line has one): a `keyload` line with `keep` 1 is
    /// shown `00000020,<mask>`; a master key with `keep` 0 as `<mask>`.
    pub fn secret(text: Zeroizing<String>, keep: usize, mask: &str) -> Typed {
        let mut shown: String = text.split(',').take(keep).flat_map(|f| [f, ","]).collect();
        shown.push_str(mask);
        if keep > 0 && text.ends_with(',') {
            shown.push(',');
        }
        Typed {
            text,
            shown,
            secret: true,
            esc: false,
        }
    }

    /// ESC (ends `keyload` and `dbload`; the console does not echo it).
    pub fn esc() -> Typed {
        Typed {
            text: Zeroizing::new(String::new()),
            shown: "<ESC>".into(),
            secret: false,
            esc: true,
        }
    }

    /// What a transcript shows for it.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// True for a line holding secrets.
    pub fn is_secret(&self) -> bool {
        self.secret
    }

    /// The fields of a secret line that its mask hides (for the session to mask anywhere).
    fn secret_parts(&self) -> Vec<Zeroizing<String>> {
        if !self.secret {
            return Vec::new();
        }
        let mut parts: Vec<Zeroizing<String>> = self
            .text
            .split(',')
            .filter(|f| !f.is_empty() && !self.shown.split(',').any(|s| s == *f))
            .map(|f| Zeroizing::new(f.to_string()))
            .collect();
        if parts.is_empty() && !self.text.is_empty() {
            parts.push(Zeroizing::new(self.text.to_string()));
        }
        parts
    }
}

impl std::fmt::Debug for Typed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Typed({:?})", self.shown)
    }
}

/// What to wait for after typing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// The console is back at a prompt.
    Prompt,
    /// The console asks this question (its text ends the output, no newline after it). A
    /// prompt instead ends the wait too: the command was refused.
    Ask(String),
    /// One non-empty line after the echo (the banner of `keyload`, the answer to a key line);
    /// a prompt ends the wait too.
    Answer,
    /// Nothing in particular: whatever arrives within [`QUIET_WAIT`] (`exit`).
    Nothing,
}

impl Expect {
    fn describe(&self) -> String {
        match self {
            Expect::Prompt => "return to a prompt".into(),
            Expect::Ask(q) => format!("ask {:?}", q.trim_end()),
            Expect::Answer => "answer".into(),
            Expect::Nothing => "stay quiet".into(),
        }
    }
}

/// The console's answer to one typed input.
pub struct Reply {
    /// What the device sent, less the echo of a secret line; wiped when dropped.
    raw: Zeroizing<String>,
    /// The redacted text, for transcripts and logs.
    text: String,
    /// The prompt it ended with, if any.
    prompt: Option<Prompt>,
}

impl Reply {
    /// The redacted text: what may be printed or logged.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The prompt the answer ended with.
    pub fn prompt(&self) -> Option<Prompt> {
        self.prompt
    }

    /// True if the answer ended with the question `q`.
    pub fn asked(&self, q: &str) -> bool {
        self.raw.ends_with(q)
    }

    /// True if one of the answer's lines is `line` (surrounding white space ignored).
    pub fn has_line(&self, line: &str) -> bool {
        self.raw.lines().any(|l| l.trim() == line.trim())
    }

    /// True if the answer contains `text`.
    pub fn contains(&self, text: &str) -> bool {
        self.raw.contains(text)
    }

    /// Every line `parse` accepts, in order: for `keylist`, `dblist`, `sysinfo`. The values
    /// parsed must not carry the text of an answer to a secret line onwards.
    pub fn parse_lines<T>(&self, parse: impl Fn(&str) -> Option<T>) -> Vec<T> {
        self.raw.lines().filter_map(parse).collect()
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reply({:?})", self.text)
    }
}

/// A session at the console of one device.
pub struct ConsoleSession {
    line: Box<dyn Line>,
    /// Every secret typed so far (see [`Typed::secret`]), masked wherever it reappears.
    secrets: Vec<Zeroizing<String>>,
    /// Everything the device sent, redacted.
    transcript: String,
    prompt: Option<Prompt>,
}

impl ConsoleSession {
    /// Opens a serial device (exclusively, as the driver does).
    pub fn open(path: &Path) -> Result<ConsoleSession> {
        let port = open_serial(path, Duration::from_millis(100))?;
        Ok(ConsoleSession::new(Box::new(port)))
    }

    /// A session on any line.
    pub fn new(line: Box<dyn Line>) -> ConsoleSession {
        ConsoleSession {
            line,
            secrets: Vec::new(),
            transcript: String::new(),
            prompt: None,
        }
    }

    /// The prompt the console showed last.
    pub fn prompt(&self) -> Option<Prompt> {
        self.prompt
    }

    /// Everything the device sent so far, redacted.
    pub fn transcript(&self) -> &str {
        &self.transcript
    }

    /// Checks the device is at its console: a carriage return must bring a prompt within
    /// `timeout`. Silence (a device in HSM mode waits for the rest of a frame) or bytes that
    /// are not console text are [`Error::NotAtConsole`].
    pub fn probe(&mut self, timeout: Duration) -> Result<Prompt> {
        let hint = "hold the button while plugging the YubiHSM in (it blinks slowly at the console), then run this again";
        let reply = match self.send(&Typed::line(""), &Expect::Prompt, timeout) {
            Ok(r) => r,
            Err(Error::ConsoleTimeout { said, .. }) => {
                let what = if said.is_empty() {
                    format!("nothing answered a carriage return within {timeout:?}")
                } else {
                    format!("no console prompt within {timeout:?}, only {said:?}")
                };
                return Err(Error::NotAtConsole(format!("{what}: {hint}")));
            }
            Err(Error::ConsoleBinary) => {
                return Err(Error::NotAtConsole(format!(
                    "the device answered with binary data (HSM mode?): {hint}"
                )))
            }
            Err(e) => return Err(e),
        };
        reply
            .prompt
            .ok_or_else(|| Error::NotAtConsole(format!("no console prompt: {hint}")))
    }

    /// Types `input` and reads until `expect` is met; `timeout` bounds the wait. A prompt
    /// where a question or answer was expected ends the wait early (the caller decides what
    /// it means); silence until the deadline is [`Error::ConsoleTimeout`].
    pub fn send(&mut self, input: &Typed, expect: &Expect, timeout: Duration) -> Result<Reply> {
        if input.secret {
            // Whatever is still on its way belongs before the echo we are about to cut out.
            self.drain_pending()?;
        }
        for part in input.secret_parts() {
            if !self.secrets.iter().any(|s| **s == *part) {
                self.secrets.push(part);
            }
        }
        // Sized once so the typed text is never left behind in an outgrown allocation.
        let mut bytes = Zeroizing::new(Vec::with_capacity(input.text.len() + 1));
        if input.esc {
            bytes.push(ESC);
        } else {
            bytes.extend_from_slice(input.text.as_bytes());
            bytes.push(b'\r');
        }
        self.line.write_all(&bytes)?;
        self.line.flush()?;
        let (buf, outcome) = self.read_reply(expect, timeout)?;
        let reply = self.reply(input, &buf);
        debug!(typed = ?input.shown, answer = ?reply.text, "console");
        if input.esc {
            // Not echoed: mark it where it was typed.
            self.transcript.push_str(&input.shown);
        }
        self.transcript.push_str(&reply.text);
        if let Some(p) = reply.prompt {
            self.prompt = Some(p);
        }
        match outcome {
            Outcome::Met => Ok(reply),
            Outcome::TimedOut => Err(Error::ConsoleTimeout {
                waiting_for: format!("{} after {:?}", expect.describe(), input.shown),
                after: timeout,
                said: tail(&reply.text),
            }),
        }
    }

    /// Builds the reply: echo of a secret line cut out of the raw text and shown masked.
    fn reply(&self, input: &Typed, all: &str) -> Reply {
        let prompt = Prompt::at_end(all);
        if !input.secret {
            return Reply {
                raw: Zeroizing::new(all.to_string()),
                text: redact(all, &self.secrets, None),
                prompt,
            };
        }
        // The echo is everything up to the first newline (the echoed carriage return).
        let (after_echo, rest) = match all.find('\n') {
            Some(i) => (true, &all[i + 1..]),
            None => (false, ""),
        };
        let mut text = input.shown.clone();
        text.push_str(if after_echo {
            "\r\n"
        } else {
            " <echo cut off>"
        });
        text.push_str(&redact(rest, &self.secrets, Some(HEX_RUN_MASK)));
        Reply {
            raw: Zeroizing::new(rest.to_string()),
            text,
            prompt,
        }
    }

    /// Reads until `expect` is met or the deadline passes. The text is ASCII (anything else
    /// is refused as it arrives), held in a buffer allocated once and wiped when dropped.
    fn read_reply(
        &mut self,
        expect: &Expect,
        timeout: Duration,
    ) -> Result<(Zeroizing<String>, Outcome)> {
        let wait = match expect {
            Expect::Nothing => timeout.min(QUIET_WAIT),
            _ => timeout,
        };
        let deadline = Instant::now() + wait;
        let mut buf = Zeroizing::new(String::with_capacity(MAX_REPLY));
        let mut lines = LineState::default();
        let mut chunk = Zeroizing::new([0u8; 256]);
        loop {
            if met(expect, &buf, &lines) {
                return Ok((buf, Outcome::Met));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let outcome = if *expect == Expect::Nothing {
                    Outcome::Met
                } else {
                    Outcome::TimedOut
                };
                return Ok((buf, outcome));
            }
            self.line.set_read_timeout(left)?;
            let n = match self.line.read(&mut chunk[..]) {
                Ok(0) => return Err(Error::Closed),
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                    continue
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if buf.len() + n > MAX_REPLY {
                return Err(Error::TooLong {
                    what: "console answer",
                    len: buf.len() + n,
                    max: MAX_REPLY,
                });
            }
            for &b in &chunk[..n] {
                if is_binary(b) {
                    return Err(Error::ConsoleBinary);
                }
                lines.push(b);
                buf.push(char::from(b));
            }
        }
    }

    /// Reads what has already arrived (a few milliseconds' wait) into the transcript.
    fn drain_pending(&mut self) -> Result<()> {
        let (buf, _) = self.read_reply(&Expect::Nothing, Duration::from_millis(20))?;
        if !buf.is_empty() {
            let text = redact(&buf, &self.secrets, Some(HEX_RUN_MASK));
            self.transcript.push_str(&text);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Met,
    TimedOut,
}

/// Where the answer's lines stand, kept as bytes arrive (so a long answer is not rescanned
/// after every read).
#[derive(Debug, Default)]
struct LineState {
    /// A newline has arrived: the echo of the typed line is complete.
    echoed: bool,
    /// The current line has something other than white space.
    content: bool,
    /// A complete non-blank line has arrived after the echo.
    answered: bool,
}

impl LineState {
    fn push(&mut self, b: u8) {
        if b == b'\n' {
            if self.echoed && self.content {
                self.answered = true;
            }
            self.echoed = true;
            self.content = false;
        } else if !b.is_ascii_whitespace() {
            self.content = true;
        }
    }
}

/// Longer than any prompt, so a prompt at the end of a text is at the end of this much of it.
const PROMPT_TAIL: usize = 64;

/// True once `text` satisfies `expect`. Looks only at the end of the text.
fn met(expect: &Expect, text: &str, lines: &LineState) -> bool {
    let at_prompt = Prompt::at_end(&text[text.len().saturating_sub(PROMPT_TAIL)..]).is_some();
    match expect {
        Expect::Prompt => at_prompt,
        Expect::Ask(q) => at_prompt || text.ends_with(q.as_str()),
        Expect::Answer => at_prompt || lines.answered,
        Expect::Nothing => false,
    }
}

/// A byte the console never prints as text: HSM-mode framing, or noise. Tab, CR, LF and
/// backspace are text; so is everything printable in ASCII.
fn is_binary(b: u8) -> bool {
    !(b.is_ascii_graphic() || matches!(b, b' ' | b'\r' | b'\n' | b'\t' | 0x08))
}

/// The end of a redacted text, for an error message.
fn tail(text: &str) -> String {
    let start = text.len().saturating_sub(ERROR_TAIL);
    // ASCII (or our own masks), so any index is a char boundary; be safe anyway.
    let start = (start..=text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].to_string()
}

/// `text` with every registered secret (of at least [`MIN_GLOBAL_SECRET`] characters,
/// compared without case) and, if `hex_min` is given, every run of at least that many hex
/// digits replaced by [`REDACTED`]. Built piece by piece from what is kept, so no copy of a
/// secret is ever made.
pub fn redact(text: &str, secrets: &[Zeroizing<String>], hex_min: Option<usize>) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(s) = secrets.iter().find(|s| {
            s.len() >= MIN_GLOBAL_SECRET
                && bytes
                    .get(i..i + s.len())
                    .is_some_and(|w| w.eq_ignore_ascii_case(s.as_bytes()))
        }) {
            out.push_str(REDACTED);
            i += s.len();
            continue;
        }
        if let Some(min) = hex_min {
            if bytes[i].is_ascii_hexdigit() && (i == 0 || !bytes[i - 1].is_ascii_hexdigit()) {
                let run = bytes[i..]
                    .iter()
                    .take_while(|b| b.is_ascii_hexdigit())
                    .count();
                if run >= min {
                    out.push_str(REDACTED);
                    i += run;
                    continue;
                }
            }
        }
        // Char by char: `text` may hold our own non-ASCII masks.
        let ch = text[i..].chars().next().unwrap_or('?');
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::io::{self, Read};
    use std::sync::{Arc, Mutex};

    use crate::console::{keyload_banner, stored_ok, KeyLoadLine, ASK_MASTER_KEY};
    use crate::scripted_line::{FarEnd, Scripted};
    use crate::{AesKey, Flags, KeyHandle};

    const KEY: &str = "fd919884f2db9928396eb20fd8f82b80b5cbc112c4d0af880e3280f08101ca70";

    /// A scripted console: echoes what is typed (ESC not echoed, CR as CR LF), then answers
    /// each line through `answer`; behind a [`Scripted`] line, its bytes go out one per
    /// read, as a slow serial line would.
    struct Console {
        typed: Vec<u8>,
        answer: Box<dyn FnMut(&str) -> String + Send>,
        /// Echo this instead of what was typed (a line's echo gone wrong).
        echo_override: Option<Vec<u8>>,
        log: Arc<Mutex<Vec<u8>>>,
    }

    impl Console {
        fn new(answer: impl FnMut(&str) -> String + Send + 'static) -> Scripted<Console> {
            Scripted::new(Console {
                typed: Vec::new(),
                answer: Box::new(answer),
                echo_override: None,
                log: Arc::new(Mutex::new(Vec::new())),
            })
        }
    }

    impl FarEnd for Console {
        fn answer(&mut self, buf: &[u8], out: &mut VecDeque<u8>) {
            self.log.lock().unwrap().extend_from_slice(buf);
            for &b in buf {
                match b {
                    ESC => {
                        let a = (self.answer)("<ESC>");
                        out.extend(a.bytes());
                    }
                    b'\r' => {
                        let line = String::from_utf8(std::mem::take(&mut self.typed)).unwrap();
                        match self.echo_override.take() {
                            Some(e) => out.extend(e),
                            None => out.extend(line.bytes()),
                        }
                        out.extend(b"\r\n");
                        let a = (self.answer)(&line);
                        out.extend(a.bytes());
                    }
                    _ => self.typed.push(b),
                }
            }
        }
    }

    /// A console line that never answers.
    struct Silent;
    impl Read for Silent {
        fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
            std::thread::sleep(Duration::from_millis(5));
            Err(ErrorKind::TimedOut.into())
        }
    }
    impl Write for Silent {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Line for Silent {
        fn set_read_timeout(&mut self, _t: Duration) -> io::Result<()> {
            Ok(())
        }
    }

    const T: Duration = Duration::from_secs(2);

    fn key_line(kh: u32) -> Typed {
        let l = KeyLoadLine {
            handle: KeyHandle(kh),
            key: AesKey::from_hex(KEY).unwrap(),
        };
        Typed::secret(l.to_line(), 1, "<key of 0x20 from device.toml>")
    }

    /// A device at `NO_CFG> ` that stores keys: what the tool sees of `keyload`.
    fn keyload_console() -> Scripted<Console> {
        Console::new(|line| match line {
            "" => "NO_CFG> ".into(),
            "keyload" => format!("{}\r\n", keyload_banner(Flags(0x40))),
            "<ESC>" => "\r\nHSM (keys changed)> ".into(),
            l => match KeyLoadLine::parse(l) {
                Some(k) => format!("{}\r\n", stored_ok(k.handle)),
                None => "Invalid key line\r\n".into(),
            },
        })
    }

    #[test]
    fn the_echo_of_a_key_line_never_reaches_the_transcript() {
        let console = keyload_console();
        let log = console.far.log.clone();
        let mut s = ConsoleSession::new(Box::new(console));
        assert_eq!(s.probe(T).unwrap(), Prompt::NoConfig);
        let banner = s.send(&Typed::line("keyload"), &Expect::Answer, T).unwrap();
        assert!(banner.has_line(&keyload_banner(Flags(0x40))));
        let r = s.send(&key_line(0x20), &Expect::Answer, T).unwrap();
        assert!(r.has_line(&stored_ok(KeyHandle(0x20))), "{r:?}");
        assert_eq!(
            r.text(),
            "00000020,<key of 0x20 from device.toml>\r\n00000020 - stored ok\r\n"
        );
        let end = s.send(&Typed::esc(), &Expect::Prompt, T).unwrap();
        assert_eq!(end.prompt(), Some(Prompt::KeysChanged));
        // The key went to the device, and nowhere else.
        assert!(String::from_utf8_lossy(&log.lock().unwrap()).contains(KEY));
        let t = s.transcript();
        assert!(!t.contains(KEY) && !t.contains(&KEY[..16]), "{t}");
        assert!(
            t.ends_with("stored ok\r\n<ESC>\r\nHSM (keys changed)> "),
            "{t}"
        );
        assert!(!format!("{r:?}").contains(&KEY[..16]));
    }

    #[test]
    fn a_mistyped_or_mangled_echo_is_masked_whole() {
        let mut console = keyload_console();
        // The device echoes a line that differs from what was typed in one digit.
        let mut wrong = format!("00000020,{KEY}").into_bytes();
        wrong[20] = b'0';
        console.far.echo_override = Some(wrong.clone());
        let mut s = ConsoleSession::new(Box::new(console));
        let r = s.send(&key_line(0x20), &Expect::Answer, T).unwrap();
        let wrong = String::from_utf8(wrong).unwrap();
        assert!(!r.text().contains(&wrong[9..40]), "{}", r.text());
        assert!(
            r.text().starts_with("00000020,<key of 0x20"),
            "{}",
            r.text()
        );
        assert!(!s.transcript().contains(&wrong[9..40]));
    }

    #[test]
    fn an_error_line_quoting_the_key_is_masked() {
        // The answer after the echo repeats the key exactly, then in upper case, then cut.
        let mut s = ConsoleSession::new(Box::new(Console::new(|l| {
            if l.is_empty() {
                return "HSM> ".into();
            }
            format!(
                "bad line {l} / {} / {}\r\nHSM> ",
                l.to_uppercase(),
                &l[9..40]
            )
        })));
        let r = s.send(&key_line(0x21), &Expect::Prompt, T).unwrap();
        let t = r.text();
        assert!(!t.to_lowercase().contains(&KEY[..16]), "{t}");
        assert!(!t.contains(&KEY[10..40]), "{t}");
        assert!(t.contains("bad line 00000021,<redacted>"), "{t}");
        // Later answers to plain lines mask the registered key too, without hex-run rules.
        let r = s
            .send(&Typed::line(format!("echo {KEY}")), &Expect::Prompt, T)
            .unwrap();
        assert!(!r.text().contains(KEY), "{}", r.text());
    }

    #[test]
    fn master_key_and_dbload_lines_show_only_their_masks() {
        let mut s = ConsoleSession::new(Box::new(Console::new(|l| {
            if l.starts_with("00001,") {
                "00001 - inserted ok\r\n".into()
            } else {
                "Confirm current config being erased (type yes) ".into()
            }
        })));
        let mk = Typed::secret(Zeroizing::new("badabada".into()), 0, "<master key>");
        assert_eq!(mk.shown(), "<master key>");
        let r = s.send(&mk, &Expect::Ask("(type yes) ".into()), T).unwrap();
        assert!(r.text().starts_with("<master key>\r\n"), "{}", r.text());
        assert!(!s.transcript().contains("badabada"));
        let db = Typed::secret(
            Zeroizing::new(
                "00001,ftftftfteeee,f0f1f2f3f4f5,4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d,".into(),
            ),
            2,
            "<uid, AES key>",
        );
        assert_eq!(db.shown(), "00001,ftftftfteeee,<uid, AES key>,");
        let r = s.send(&db, &Expect::Answer, T).unwrap();
        assert!(r.has_line("00001 - inserted ok"));
        let t = s.transcript();
        assert!(
            !t.contains("f0f1f2f3f4f5") && !t.contains("4d4d4d4d"),
            "{t}"
        );
        assert!(t.contains("ftftftfteeee"), "{t}");
    }

    #[test]
    fn a_question_or_a_refusal_ends_the_wait() {
        let mut s = ConsoleSession::new(Box::new(Console::new(|l| match l {
            "hsm 7fffffff" => {
                "Enabled flags 7fffffff = x\r\nEnter master key (g to generate) ".into()
            }
            _ => "Key store not decrypted\r\nHSM (keys not decrypted)> ".into(),
        })));
        let r = s
            .send(
                &Typed::line("hsm 7fffffff"),
                &Expect::Ask(ASK_MASTER_KEY.into()),
                T,
            )
            .unwrap();
        assert!(r.asked(ASK_MASTER_KEY) && r.prompt().is_none());
        let r = s
            .send(
                &Typed::line("keylist"),
                &Expect::Ask(ASK_MASTER_KEY.into()),
                T,
            )
            .unwrap();
        assert!(!r.asked(ASK_MASTER_KEY));
        assert_eq!(r.prompt(), Some(Prompt::KeysNotDecrypted));
        assert_eq!(s.prompt(), Some(Prompt::KeysNotDecrypted));
    }

    #[test]
    fn silence_and_binary_are_not_a_console() {
        let mut s = ConsoleSession::new(Box::new(Silent));
        let start = Instant::now();
        let e = s.probe(Duration::from_millis(200)).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(
            matches!(&e, Error::NotAtConsole(m) if m.contains("nothing answered") && m.contains("hold the button")),
            "{e}"
        );
        // An HSM-mode frame (a status byte, a command byte with the response bit).
        let mut s = ConsoleSession::new(Box::new(Console::new(|_| "\u{2}\u{1}".into())));
        let e = s.probe(T).unwrap_err();
        assert!(
            matches!(&e, Error::NotAtConsole(m) if m.contains("binary")),
            "{e}"
        );
        // Text, but never a prompt: times out with what it said.
        let mut s = ConsoleSession::new(Box::new(Console::new(|_| "hello\r\n".into())));
        let e = s.probe(Duration::from_millis(100)).unwrap_err();
        assert!(
            matches!(&e, Error::NotAtConsole(m) if m.contains("hello")),
            "{e}"
        );
    }

    #[test]
    fn a_timeout_names_what_was_awaited_and_never_the_secret() {
        let mut s = ConsoleSession::new(Box::new(Console::new(|_| String::new())));
        let e = s
            .send(&key_line(0x20), &Expect::Answer, Duration::from_millis(100))
            .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::ConsoleTimeout { .. }), "{msg}");
        assert!(msg.contains("<key of 0x20"), "{msg}");
        assert!(!msg.contains(&KEY[..16]), "{msg}");
    }

    #[test]
    fn exit_waits_only_briefly_and_a_flood_is_refused() {
        let mut s = ConsoleSession::new(Box::new(Console::new(|_| String::new())));
        let start = Instant::now();
        s.send(&Typed::line("exit"), &Expect::Nothing, T).unwrap();
        assert!(start.elapsed() < Duration::from_secs(1));
        let mut s = ConsoleSession::new(Box::new(Console::new(|_| "x".repeat(MAX_REPLY + 1))));
        assert!(matches!(
            s.send(&Typed::line("dblist"), &Expect::Prompt, T),
            Err(Error::TooLong { .. })
        ));
    }

    #[test]
    fn redact_masks_secrets_and_long_hex_runs_only() {
        let secrets = [Zeroizing::new("abcdef0123456789".to_string())];
        assert_eq!(
            redact("k=ABCDEF0123456789 x", &secrets, None),
            "k=<redacted> x"
        );
        assert_eq!(
            redact("00000020 - stored ok", &secrets, Some(HEX_RUN_MASK)),
            "00000020 - stored ok"
        );
        assert_eq!(
            redact("uid f0f1f2f3f4f5 ok", &[], Some(HEX_RUN_MASK)),
            "uid <redacted> ok"
        );
        assert_eq!(
            redact("SysId: 000102030405060708090a0b", &[], None),
            "SysId: 000102030405060708090a0b"
        );
        // Short secrets are masked only in their own echo.
        let short = [Zeroizing::new("bada".to_string())];
        assert_eq!(redact("badabada", &short, None), "badabada");
    }
}
