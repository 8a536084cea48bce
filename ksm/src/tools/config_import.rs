//! `ksm config import-pyhsm FILE`: pyhsm's `/etc/default/yhsm-yubikey-ksm` as an equivalent
//! `ksm.toml` on standard output, with a warning on standard error for each variable or flag
//! that does not carry over (and why), so that switching keeps the validator's URL.
//!
//! The facts, from Debian's packaging of pyhsm (Yubico's `python-pyhsm-dpkg`,
//! `debian/yhsm-yubikey-ksm.init` and `debian/yhsm-yubikey-ksm.default`) and from
//! `pyhsm/ksm/yubikey_ksm.py` (`parse_args`, `args_fixup`):
//! - the init script sets `DAEMON_ARGS="--pid-file /var/run/yhsm-yubikey-ksm.pid"` (and
//!   `NAME`, `DAEMON`, `PIDFILE`, `RUNASUSER=yhsm-ksmsrv`, …) and then sources the file;
//! - it reads `YHSM_KSM_ENABLE` (`true` or `false`: start at boot or not),
//!   `YHSM_KSM_UNLOCK_PASSPHRASE` (piped to `yhsm-keystore-unlock --stdin` before start),
//!   `YHSM_KSM_DEVICE` (the unlock's `--device`), `YHSM_KSM_KEYHANDLES`, and `DAEMON_ARGS`,
//!   which it passes, split on white space, to `yhsm-yubikey-ksm`;
//! - the file itself ends by appending `-D $YHSM_KSM_DEVICE` and
//!   `--key-handles $YHSM_KSM_KEYHANDLES` to `DAEMON_ARGS`; every other setting (AEAD
//!   directory, address, port, serve and stats URL, database URL, proxies, verbosity,
//!   request timeout) is a flag the operator appends to `DAEMON_ARGS`;
//! - `yhsm-yubikey-ksm` takes `-D/--device`, `-B/--aead-dir`, `-U/--serve-url`,
//!   `-S/--stats-url`, `-v/--verbose`, `-d/--daemon`, `--debug`, `--port`, `--addr`,
//!   `--reqtimeout` (whole seconds), `--key-handle/--key-handles HANDLE…`, `--pid-file`,
//!   `--db-url` (`env:NAME` reads it from the environment), `--proxy/--proxies IP…`; Python's
//!   argparse takes `--flag=value`, `-Dvalue`, unique prefixes of long flags, and the last of
//!   a repeated flag.
//!
//! What the file holds is never run (see [`super::shell_vars`]), and secrets (the unlock
//! passphrase, a password in the database URL) are never copied anywhere: the warning names
//! the variable, never its value.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::shell_vars::{self, Sourced};
use crate::settings::options::{ServeArgs, ServeOptions};
use crate::Error;

/// `ksm config`: configuration helpers.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ConfigCommand,
}

/// The `ksm config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print a ksm.toml equivalent to pyhsm's /etc/default/yhsm-yubikey-ksm (warnings about
    /// what does not carry over go to standard error; nothing of the file is run).
    ImportPyhsm(ImportArgs),
}

/// `ksm config import-pyhsm` arguments.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// pyhsm's defaults file, as its init script sources it.
    #[arg(value_name = "FILE", default_value = "/etc/default/yhsm-yubikey-ksm")]
    pub file: PathBuf,
}

/// Runs `ksm config …`.
pub fn run(args: ConfigArgs) -> Result<(), Error> {
    match args.command {
        ConfigCommand::ImportPyhsm(a) => {
            let text = std::fs::read_to_string(&a.file)
                .map_err(|e| Error::io(format!("read {}", a.file.display()), e))?;
            let imported = import(&text, &a.file)?;
            for w in &imported.warnings {
                eprintln!("warning: {w}");
            }
            print!("{}", imported.toml);
            Ok(())
        }
    }
}

/// The pid file pyhsm's init script puts in `DAEMON_ARGS` before the file is read.
const INIT_PID_FILE: &str = "/var/run/yhsm-yubikey-ksm.pid";

/// The variables pyhsm's init script sets before it sources the file (a file may change
/// them, which changes nothing ksm does).
const INIT_PRESET: &[(&str, &str)] = &[
    ("PATH", "/sbin:/usr/sbin:/bin:/usr/bin"),
    ("DESC", "YubiHSM YubiKey KSM"),
    ("NAME", "yhsm-yubikey-ksm"),
    ("DAEMON", "/usr/sbin/yhsm-yubikey-ksm"),
    ("PIDFILE", INIT_PID_FILE),
    ("SCRIPTNAME", "/etc/init.d/yhsm-yubikey-ksm"),
    ("DAEMON_ARGS", "--pid-file /var/run/yhsm-yubikey-ksm.pid"),
    ("RUNASUSER", "yhsm-ksmsrv"),
    ("PROCESS_EXECUTABLE", "/usr/bin/python"),
];

/// The variables the init script reads from the file.
const INIT_READS: &[&str] = &[
    "YHSM_KSM_ENABLE",
    "YHSM_KSM_DEVICE",
    "YHSM_KSM_KEYHANDLES",
    "YHSM_KSM_UNLOCK_PASSPHRASE",
    "DAEMON_ARGS",
];

/// An import's result: the `ksm.toml` text and what did not carry over.
#[derive(Debug)]
pub struct Imported {
    /// The options, as the TOML says them.
    pub options: ServeOptions,
    /// `ksm.toml`, ready to be saved as `/etc/ksm/ksm.toml`.
    pub toml: String,
    /// One line each: a variable or flag that does not carry over, and what to do.
    pub warnings: Vec<String>,
}

/// A `yhsm-yubikey-ksm` flag: its names and how many values it takes.
struct Flag {
    short: Option<char>,
    long: &'static [&'static str],
    takes: Takes,
}

#[derive(Clone, Copy, PartialEq)]
enum Takes {
    Nothing,
    One,
    OneOrMore,
}

/// `yhsm-yubikey-ksm`'s flags (`parse_args` in `pyhsm/ksm/yubikey_ksm.py`).
const FLAGS: &[Flag] = &[
    flag(Some('D'), &["device"], Takes::One),
    flag(Some('B'), &["aead-dir"], Takes::One),
    flag(Some('U'), &["serve-url"], Takes::One),
    flag(Some('S'), &["stats-url"], Takes::One),
    flag(Some('v'), &["verbose"], Takes::Nothing),
    flag(Some('d'), &["daemon"], Takes::Nothing),
    flag(None, &["debug"], Takes::Nothing),
    flag(None, &["port"], Takes::One),
    flag(None, &["addr"], Takes::One),
    flag(None, &["reqtimeout"], Takes::One),
    flag(None, &["key-handle", "key-handles"], Takes::OneOrMore),
    flag(None, &["pid-file"], Takes::One),
    flag(None, &["db-url"], Takes::One),
    flag(None, &["proxy", "proxies"], Takes::OneOrMore),
    flag(Some('h'), &["help"], Takes::Nothing),
];

const fn flag(short: Option<char>, long: &'static [&'static str], takes: Takes) -> Flag {
    Flag { short, long, takes }
}

/// The flags `DAEMON_ARGS` gives, by the flag's first long name; the last of a repeated flag
/// wins, as with argparse.
type Given = std::collections::BTreeMap<&'static str, Vec<String>>;

/// Parses `DAEMON_ARGS` as argparse would parse `yhsm-yubikey-ksm`'s argv. A word that is
/// not a known flag is named by its place, never quoted: it may be a passphrase put there.
fn parse_daemon_args(words: &[&str], warnings: &mut Vec<String>) -> Given {
    let mut given = Given::new();
    let mut i = 0;
    let looks_like_flag = |w: &str| w.starts_with('-') && w.len() > 1;
    while i < words.len() {
        let word = words[i];
        i += 1;
        let place = format!("word {i} of DAEMON_ARGS (after the file is read)");
        let (flag, attached) = if let Some(long) = word.strip_prefix("--") {
            let (name, value) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let exact = FLAGS.iter().find(|f| f.long.contains(&name));
            let prefixed: Vec<&Flag> = FLAGS
                .iter()
                .filter(|f| f.long.iter().any(|l| l.starts_with(name)))
                .collect();
            match (exact, prefixed.as_slice()) {
                (Some(f), _) if !name.is_empty() => (f, value),
                (None, [f]) if !name.is_empty() => (*f, value),
                _ => {
                    warnings.push(format!("{place} is not a flag of yhsm-yubikey-ksm (pyhsm would not start with it); ignored"));
                    continue;
                }
            }
        } else if looks_like_flag(word) {
            let mut shorts = word[1..].chars();
            let Some(f) = shorts
                .next()
                .and_then(|c| FLAGS.iter().find(|f| f.short == Some(c)))
            else {
                warnings.push(format!("{place} is not a flag of yhsm-yubikey-ksm (pyhsm would not start with it); ignored"));
                continue;
            };
            let rest: String = shorts.collect();
            if f.takes == Takes::Nothing && !rest.is_empty() {
                // -vd: several flags without values.
                let mut unknown = false;
                for c in rest.chars() {
                    match FLAGS
                        .iter()
                        .find(|g| g.short == Some(c) && g.takes == Takes::Nothing)
                    {
                        Some(g) => {
                            given.insert(g.long[0], Vec::new());
                        }
                        None => unknown = true,
                    }
                }
                if unknown {
                    warnings.push(format!(
                        "{place} bundles with -{} letters that are not flags yhsm-yubikey-ksm takes there; they are ignored",
                        f.short.unwrap_or('?')
                    ));
                }
                (f, None)
            } else {
                (f, (!rest.is_empty()).then_some(rest))
            }
        } else {
            warnings.push(format!(
                "{place} is where a flag was expected (pyhsm would not start with it); ignored"
            ));
            continue;
        };
        let mut values: Vec<String> = attached.into_iter().collect();
        match flag.takes {
            Takes::Nothing => values.clear(),
            Takes::One if values.is_empty() => match words.get(i) {
                Some(v) if !looks_like_flag(v) => {
                    values.push(v.to_string());
                    i += 1;
                }
                _ => {
                    warnings.push(format!(
                        "DAEMON_ARGS has --{} without a value (pyhsm would not start); ignored",
                        flag.long[0]
                    ));
                    continue;
                }
            },
            Takes::One => {}
            Takes::OneOrMore => {
                while let Some(v) = words.get(i).filter(|v| !looks_like_flag(v)) {
                    values.push(v.to_string());
                    i += 1;
                }
                if values.is_empty() {
                    warnings.push(format!(
                        "DAEMON_ARGS has --{} without a value (pyhsm would not start); ignored",
                        flag.long[0]
                    ));
                    continue;
                }
            }
        }
        given.insert(flag.long[0], values);
    }
    given
}

/// Reads pyhsm's defaults file `text` (named `file` in messages) into `ksm.toml`.
pub fn import(text: &str, file: &std::path::Path) -> Result<Imported, Error> {
    let config_error = |reason: String| Error::Config {
        path: file.to_path_buf(),
        reason,
    };
    let sourced = shell_vars::read(text, INIT_PRESET);
    let mut warnings = Vec::new();
    for (line, why) in &sourced.skipped {
        warnings.push(format!(
            "line {line} {why}: not read (pyhsm's init script would run it); check by hand what it did"
        ));
    }
    variable_warnings(&sourced, &mut warnings);

    let args = sourced.get("DAEMON_ARGS").unwrap_or_default().to_string();
    let words: Vec<&str> = args.split_whitespace().collect();
    let given = parse_daemon_args(&words, &mut warnings);
    let one = |name: &str| given.get(name).and_then(|v| v.last()).cloned();

    let mut o = empty_options();
    let mut source = Vec::<(&str, String)>::new();
    let mut from = |key: &'static str, flag: &str, said: bool| {
        source.push((
            key,
            if said {
                format!("{flag} in DAEMON_ARGS")
            } else {
                format!("pyhsm's default for {flag}")
            },
        ))
    };

    o.device = Some(vec![PathBuf::from(
        one("device").unwrap_or_else(|| "/dev/ttyACM0".into()),
    )]);
    from("device", "-D", given.contains_key("device"));
    o.aead_dir = Some(PathBuf::from(
        one("aead-dir").unwrap_or_else(|| "/var/cache/yubikey-ksm/aeads".into()),
    ));
    from("aead-dir", "-B", given.contains_key("aead-dir"));
    match given.get("key-handle") {
        Some(khs) => {
            o.key_handles = Some(khs.clone());
            from("key-handles", "--key-handles", true);
        }
        None => {
            return Err(config_error(
                "no key handles: DAEMON_ARGS has no --key-handles (the stock file adds YHSM_KSM_KEYHANDLES to it in its last line, when that is not empty), so pyhsm would not start; set YHSM_KSM_KEYHANDLES to the key handles the AEADs are under".into(),
            ))
        }
    }
    o.serve_url = Some(one("serve-url").unwrap_or_else(|| "/wsapi/decrypt?otp=".into()));
    from("serve-url", "-U", given.contains_key("serve-url"));
    if let Some(url) = one("stats-url") {
        o.stats_url = Some(url);
        from("stats-url", "-S", true);
    }
    o.addr = Some(listen_addr(one("addr").as_deref(), &mut warnings).map_err(config_error)?);
    from("addr", "--addr", given.contains_key("addr"));
    o.port = Some(match one("port") {
        Some(p) => p.parse().map_err(|_| {
            config_error(format!("--port {p:?} in DAEMON_ARGS is not a port number"))
        })?,
        None => 8002,
    });
    from("port", "--port", given.contains_key("port"));
    o.reqtimeout = Some(match one("reqtimeout") {
        Some(t) => t.parse().map_err(|_| {
            config_error(format!(
                "--reqtimeout {t:?} in DAEMON_ARGS is not a number of seconds"
            ))
        })?,
        None => 5.0,
    });
    from(
        "reqtimeout",
        "--reqtimeout",
        given.contains_key("reqtimeout"),
    );
    if let Some(p) = one("pid-file") {
        if p == INIT_PID_FILE {
            // The init script's own: systemd tracks the daemon without one.
        } else {
            warnings.push(format!("--pid-file {p} kept as pid-file: under ksm.service only /run/ksm is writable, so use a path there or remove it"));
            o.pid_file = Some(PathBuf::from(p));
            from("pid-file", "--pid-file", true);
        }
    }
    if let Some(url) = one("db-url") {
        o.db_url = Some(db_url(&url, &sourced, &mut warnings).map_err(config_error)?);
        from("db-url", "--db-url", true);
    }
    if let Some(proxies) = given.get("proxy") {
        let mut ips = Vec::new();
        for p in proxies {
            match p.parse::<IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) => warnings.push(format!("--proxies {p:?} is not an IP address (pyhsm compared it with the client's address, so it never matched); left out")),
            }
        }
        if !ips.is_empty() {
            o.proxies = Some(ips);
            from("proxies", "--proxies", true);
        }
    }
    if given.contains_key("verbose") || given.contains_key("debug") {
        let level = if given.contains_key("debug") {
            "debug"
        } else {
            "info"
        };
        warnings.push(format!("DAEMON_ARGS has {}: ksm.toml has no logging key; run `systemctl edit ksm` and add `[Service]` `Environment=RUST_LOG={level}`", if level == "debug" { "--debug" } else { "-v" }));
    }
    if given.contains_key("help") {
        warnings.push(
            "DAEMON_ARGS has -h/--help (pyhsm would print its help and exit); ignored".into(),
        );
    }

    // ksm must accept what we print: check it as `ksm serve --config` would.
    ServeArgs {
        config: None,
        demo: false,
        options: o.clone(),
        daemon: false,
    }
    .settings()
    .map_err(|e| config_error(format!("the settings it gives are not valid for ksm: {e}")))?;
    let toml = render(&o, &source, file)?;
    Ok(Imported {
        options: o,
        toml,
        warnings,
    })
}

/// Options with nothing said.
fn empty_options() -> ServeOptions {
    toml::from_str("").unwrap_or_else(|_| ServeOptions::default())
}

/// Warnings about the file's variables: the init script's own that the file changed, a
/// passphrase that ksm will not use, and variables nothing reads.
fn variable_warnings(s: &Sourced, warnings: &mut Vec<String>) {
    match s.get("YHSM_KSM_ENABLE") {
        Some("true") => warnings.push("YHSM_KSM_ENABLE is true: once this ksm.toml is in /etc/ksm, run `systemctl enable --now ksm` (the package leaves the service stopped)".into()),
        Some("false") | None => warnings.push("YHSM_KSM_ENABLE is not true: pyhsm's KSM was not started at boot; ksm.service stays stopped until `systemctl enable --now ksm`".into()),
        Some(_) => warnings.push("YHSM_KSM_ENABLE is neither true nor false, so pyhsm's init script refused to start; ksm.service stays stopped until `systemctl enable --now ksm`".into()),
    }
    if s.get("YHSM_KSM_UNLOCK_PASSPHRASE")
        .is_some_and(|p| !p.is_empty())
    {
        warnings.push("YHSM_KSM_UNLOCK_PASSPHRASE holds the HSM's master key: ksm never reads it from a file; it is not copied. After every boot run `ksm keystore-unlock`, and remove the passphrase from the old file".into());
    }
    // The stock file's last lines put these two into DAEMON_ARGS; a file without them set
    // variables the daemon never saw.
    for name in ["YHSM_KSM_DEVICE", "YHSM_KSM_KEYHANDLES"] {
        if let Some(var) = s.vars.get(name) {
            if !var.value.is_empty() && !s.referenced.contains(name) {
                warnings.push(format!(
                    "line {} sets {name}, but no line adds it to DAEMON_ARGS, so pyhsm's daemon did not use it; ignored",
                    var.line.unwrap_or_default()
                ));
            }
        }
    }
    for (name, var) in &s.vars {
        let Some(line) = var.line else { continue };
        if INIT_READS.contains(&name.as_str()) || s.referenced.contains(name) {
            continue;
        }
        if INIT_PRESET.iter().any(|(n, _)| n == name) {
            warnings.push(format!("line {line} sets {name}, a variable of pyhsm's init script itself: ksm.service decides this (User=ksm, no pid file); ignored"));
            continue;
        }
        let hint = ["YHSM_DAEMON_", "YHSM_VAL_"]
            .iter()
            .find_map(|prefix| name.strip_prefix(prefix))
            .map(|rest| {
                let owner = if name.starts_with("YHSM_DAEMON_") {
                    "yhsm-daemon"
                } else {
                    "yhsm-validation-server"
                };
                let ksm = format!("YHSM_KSM_{rest}");
                if INIT_READS.contains(&ksm.as_str()) {
                    format!(" ({owner}'s variable: the KSM reads {ksm})")
                } else {
                    format!(" ({owner}'s variable)")
                }
            })
            .unwrap_or_default();
        warnings.push(format!(
            "line {line} sets {name}, which pyhsm's KSM init script does not read{hint}; ignored"
        ));
    }
}

/// `--addr` as ksm takes it: an IP address. Python bound `""` to every address and resolved
/// names; `localhost` is taken as 127.0.0.1, other names must be replaced by hand.
fn listen_addr(addr: Option<&str>, warnings: &mut Vec<String>) -> Result<IpAddr, String> {
    match addr {
        None => Ok(IpAddr::from([127, 0, 0, 1])),
        Some("") => {
            warnings.push("--addr is empty, which Python takes as every IPv4 address: addr = 0.0.0.0 (consider allow = [...])".into());
            Ok(IpAddr::from([0, 0, 0, 0]))
        }
        Some("localhost") => Ok(IpAddr::from([127, 0, 0, 1])),
        Some(a) => a.parse().map_err(|_| {
            format!("--addr {a:?} in DAEMON_ARGS is not an IP address; ksm listens on an address, not a name: put the address it resolves to")
        }),
    }
}

/// `--db-url`: `env:NAME` resolved as pyhsm would (only if the file exports NAME), and a
/// password taken out (ksm refuses URLs with one; it is named, never copied).
fn db_url(url: &str, s: &Sourced, warnings: &mut Vec<String>) -> Result<String, String> {
    let url = match url.strip_prefix("env:") {
        Some(name) => match s.vars.get(name) {
            Some(v) if v.exported => v.value.clone(),
            _ => {
                return Err(format!("--db-url env:{name} reads the URL from the environment, and this file does not export {name}: give the URL itself"))
            }
        },
        None => url.to_string(),
    };
    let (url, had_password) = aead_store::DbUrl::without_password(&url);
    if had_password {
        warnings.push("--db-url carries a password (in its user part or a password parameter): not copied. Put it in a file only ksm can read (mode 0600, owner ksm) and set db-password-file, or use ~/.pgpass or peer authentication".into());
    }
    Ok(url)
}

/// The `ksm.toml` text: a header, then each key with where its value came from.
fn render(
    o: &ServeOptions,
    source: &[(&str, String)],
    file: &std::path::Path,
) -> Result<String, Error> {
    let table = toml::Table::try_from(o).map_err(|e| Error::Usage(e.to_string()))?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# ksm.toml made by `ksm config import-pyhsm` from {}.",
        file.display()
    );
    let _ = writeln!(
        out,
        "# Keys not listed have ksm's defaults (see the example ksm.toml in the package's docs)."
    );
    for (key, from) in source {
        if let Some(v) = table.get(*key) {
            let _ = writeln!(out, "{key} = {v}   # {from}");
        }
    }
    // What we print must read back as what we mean.
    let back: ServeOptions =
        toml::from_str(&out).map_err(|e| Error::Usage(format!("internal: {e}")))?;
    if &back != o {
        return Err(Error::Usage(
            "internal: the printed ksm.toml does not read back".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// pyhsm's stock file as Debian shipped it, with key handles set and a few flags added
    /// the way its comments show.
    const STOCK: &str = r#"# Should the KSM be started?
YHSM_KSM_ENABLE="true"
YHSM_KSM_DEVICE="/dev/serial/by-id/usb-Yubico_Yubico_YubiHSM_0001-if00"
YHSM_KSM_KEYHANDLES="0x20 1234 KSM1"
YHSM_KSM_UNLOCK_PASSPHRASE="00112233445566778899aabbccddeeff"
DAEMON_ARGS="$DAEMON_ARGS --aead-dir /srv/aeads"
DAEMON_ARGS="$DAEMON_ARGS --addr 10.1.2.3"
DAEMON_ARGS="$DAEMON_ARGS --port 8003"
[ "x$YHSM_KSM_DEVICE" != "x" ] && DAEMON_ARGS="$DAEMON_ARGS -D $YHSM_KSM_DEVICE"
[ "x$YHSM_KSM_KEYHANDLES" != "x" ] && DAEMON_ARGS="$DAEMON_ARGS --key-handles $YHSM_KSM_KEYHANDLES"
"#;

    fn imp(text: &str) -> Imported {
        import(text, Path::new("/etc/default/yhsm-yubikey-ksm")).unwrap()
    }

    #[test]
    fn the_stock_file_carries_over() {
        let i = imp(STOCK);
        let o = &i.options;
        assert_eq!(
            o.device,
            Some(vec![PathBuf::from(
                "/dev/serial/by-id/usb-Yubico_Yubico_YubiHSM_0001-if00"
            )])
        );
        assert_eq!(
            o.key_handles,
            Some(vec!["0x20".into(), "1234".into(), "KSM1".into()])
        );
        assert_eq!(o.aead_dir, Some(PathBuf::from("/srv/aeads")));
        assert_eq!(o.addr, Some("10.1.2.3".parse().unwrap()));
        assert_eq!(o.port, Some(8003));
        assert_eq!(o.serve_url.as_deref(), Some("/wsapi/decrypt?otp="));
        assert_eq!(o.reqtimeout, Some(5.0));
        assert_eq!(o.pid_file, None, "the init script's pid file is not ksm's");
        let parsed: ServeOptions = toml::from_str(&i.toml).unwrap();
        assert_eq!(&parsed, o);
        assert!(
            i.toml.contains("port = 8003   # --port in DAEMON_ARGS"),
            "{}",
            i.toml
        );
        // The passphrase is named, never copied.
        let all = format!("{}{}", i.toml, i.warnings.join("\n"));
        assert!(!all.contains("00112233445566778899aabbccddeeff"), "{all}");
        assert!(i
            .warnings
            .iter()
            .any(|w| w.contains("YHSM_KSM_UNLOCK_PASSPHRASE")));
        assert!(i
            .warnings
            .iter()
            .any(|w| w.contains("systemctl enable --now ksm")));
    }

    #[test]
    fn every_flag_of_yhsm_yubikey_ksm() {
        let i = imp(concat!(
            "export KSM_DB=\"postgresql://ksm:Sekr1tpw@db1:5432/ksm?sslmode=require\"\n",
            "DAEMON_ARGS=\"-D /dev/ttyACM1 -B/srv/a -U /yhsm/validate? -S /wsapi/stats -v --debug -d \"\n",
            "DAEMON_ARGS=\"$DAEMON_ARGS --port=8010 --addr ::1 --reqtimeout 7 --key-handle 0x21 --pid-file /run/ksm/ksm.pid\"\n",
            "DAEMON_ARGS=\"$DAEMON_ARGS --db-url env:KSM_DB --proxy 192.0.2.1 2001:db8::1 proxy.example.org --key-h 0x22 0x23\"\n",
        ));
        let o = &i.options;
        assert_eq!(o.device, Some(vec![PathBuf::from("/dev/ttyACM1")]));
        assert_eq!(o.aead_dir, Some(PathBuf::from("/srv/a")));
        assert_eq!(o.serve_url.as_deref(), Some("/yhsm/validate?"));
        assert_eq!(o.stats_url.as_deref(), Some("/wsapi/stats"));
        assert_eq!(o.port, Some(8010));
        assert_eq!(o.addr, Some("::1".parse().unwrap()));
        assert_eq!(o.reqtimeout, Some(7.0));
        assert_eq!(
            o.key_handles,
            Some(vec!["0x22".into(), "0x23".into()]),
            "the last --key-handles wins, as with argparse; unique prefixes count"
        );
        assert_eq!(o.pid_file, Some(PathBuf::from("/run/ksm/ksm.pid")));
        assert_eq!(
            o.db_url.as_deref(),
            Some("postgresql://ksm@db1:5432/ksm?sslmode=require")
        );
        assert_eq!(
            o.proxies,
            Some(vec![
                "192.0.2.1".parse().unwrap(),
                "2001:db8::1".parse().unwrap()
            ])
        );
        let all = format!("{}{}", i.toml, i.warnings.join("\n"));
        assert!(!all.contains("Sekr1tpw"), "{all}");
        for expected in ["password", "proxy.example.org", "RUST_LOG=debug"] {
            assert!(all.contains(expected), "{expected} in {all}");
        }
        let parsed: ServeOptions = toml::from_str(&i.toml).unwrap();
        assert_eq!(&parsed, o);
    }

    #[test]
    fn unknown_and_unused_variables_are_named() {
        let i = imp(concat!(
            "YHSM_DAEMON_DEVICE=\"/dev/ttyACM1\"\n",
            "YHSM_KSM_KEYHANDLES=\"0x20\"\n",
            "MY_DIR=/srv/a\n",
            "UNUSED=1\n",
            "RUNASUSER=someone\n",
            "YHSM_KSM_DEVICE=/dev/ttyACM9\n",
            "DAEMON_ARGS=\"$DAEMON_ARGS -B $MY_DIR --frobnicate\"\n",
            "DAEMON_ARGS=\"$DAEMON_ARGS --key-handles $YHSM_KSM_KEYHANDLES\"\n",
            "A=$(cat /etc/x)\n",
        ));
        let w = i.warnings.join("\n");
        assert!(
            w.contains("line 1 sets YHSM_DAEMON_DEVICE")
                && w.contains("the KSM reads YHSM_KSM_DEVICE"),
            "{w}"
        );
        assert!(w.contains("line 4 sets UNUSED"), "{w}");
        assert!(
            !w.contains("sets MY_DIR"),
            "a helper variable DAEMON_ARGS reads is used: {w}"
        );
        assert!(w.contains("line 5 sets RUNASUSER"), "{w}");
        assert!(
            // After the init script's `--pid-file PATH`, and `-B /srv/a`.
            w.contains("word 5 of DAEMON_ARGS (after the file is read) is not a flag"),
            "{w}"
        );
        assert!(
            !w.contains("frobnicate"),
            "an unknown word is not quoted: {w}"
        );
        assert!(w.contains("line 9"), "{w}");
        assert!(
            w.contains("line 6 sets YHSM_KSM_DEVICE, but no line adds it to DAEMON_ARGS"),
            "{w}"
        );
        assert_eq!(
            i.options.device,
            Some(vec![PathBuf::from("/dev/ttyACM0")]),
            "YHSM_DAEMON_DEVICE is not the KSM's device"
        );
        assert_eq!(i.options.aead_dir, Some(PathBuf::from("/srv/a")));
    }

    #[test]
    fn what_ksm_cannot_take_is_an_error_that_names_it() {
        let file = Path::new("/etc/default/yhsm-yubikey-ksm");
        let err = |text: &str| import(text, file).unwrap_err();
        let e = err("YHSM_KSM_KEYHANDLES=\"\"\n");
        assert!(e.to_string().contains("no key handles"), "{e}");
        // Set, but never handed to the daemon (the stock file's last lines are missing).
        let e = err("YHSM_KSM_KEYHANDLES=\"0x20\"\n");
        assert!(e.to_string().contains("no key handles"), "{e}");
        assert_eq!(e.exit_code(), 2);
        let e = err("DAEMON_ARGS=\"--key-handles 0x20 --addr ksm.example.org\"\n");
        assert!(e.to_string().contains("not an IP address"), "{e}");
        let e = err("DAEMON_ARGS=\"--key-handles 0x20 --port 99999\"\n");
        assert!(e.to_string().contains("--port"), "{e}");
        let e = err("DAEMON_ARGS=\"--key-handles 0xzzzzz\"\n");
        assert!(e.to_string().contains("not valid for ksm"), "{e}");
        let e =
            err("KSM_DB=sqlite:////x.db\nDAEMON_ARGS=\"--key-handles 1 --db-url env:KSM_DB\"\n");
        assert!(e.to_string().contains("does not export KSM_DB"), "{e}");
    }
}
