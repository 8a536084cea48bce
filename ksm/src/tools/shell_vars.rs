//! Reads the variables a Debian `/etc/default/*` file sets, without running it. Such a file
//! is sourced by its init script as root, so it may hold any shell code; `ksm config
//! import-pyhsm` only needs what it assigns, and must not run an operator's file to learn
//! that. This reader takes the part of the shell those files use: assignments (quoted,
//! with `$NAME`/`${NAME}` expansion, `export`), `#` comments, `\` line continuations, and
//! the `[ "x$A" != "x" ] && B="…"` tests pyhsm's own file ends with. Anything else on a
//! line (command substitution, `if`, redirections, other commands) is reported as not
//! read, with its line number, and nothing on that line is applied.

use std::collections::{BTreeMap, BTreeSet};

/// A variable after the file has been read.
#[derive(Debug, Clone, PartialEq)]
pub struct Var {
    /// Its value.
    pub value: String,
    /// The line that last set it; `None`: set before the file (the init script's own).
    pub line: Option<usize>,
    /// Whether the file exports it (so a program the init script starts sees it).
    pub exported: bool,
}

/// What reading a file gave.
#[derive(Debug, Default)]
pub struct Sourced {
    /// Every variable, by name.
    pub vars: BTreeMap<String, Var>,
    /// Variables whose value some executed line read.
    pub referenced: BTreeSet<String>,
    /// Lines not read, each with why (never quoting the line: it may hold a passphrase).
    pub skipped: Vec<(usize, &'static str)>,
}

impl Sourced {
    /// A variable's value, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(|v| v.value.as_str())
    }
}

/// Part of a word: literal text (quoted or not) or a variable's value.
#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Lit { text: String, quoted: bool },
    Var(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(Vec<Seg>),
    And,
    Or,
    Semi,
}

/// Reads `text` as a sourced file would be, starting from `preset` variables.
pub fn read(text: &str, preset: &[(&str, &str)]) -> Sourced {
    let mut s = Sourced::default();
    for (name, value) in preset {
        s.vars.insert(
            name.to_string(),
            Var {
                value: value.to_string(),
                line: None,
                exported: false,
            },
        );
    }
    let mut logical = String::new();
    let mut first_line = 0;
    for (i, raw) in text.lines().enumerate() {
        if logical.is_empty() {
            first_line = i + 1;
        }
        if let Some(head) = raw.strip_suffix('\\') {
            logical.push_str(head);
            continue;
        }
        logical.push_str(raw);
        let line = std::mem::take(&mut logical);
        match tokens(&line) {
            Ok(toks) => {
                if let Err(why) = run_line(&mut s, &toks, first_line) {
                    s.skipped.push((first_line, why));
                }
            }
            Err(why) => s.skipped.push((first_line, why)),
        }
    }
    if !logical.is_empty() {
        s.skipped.push((first_line, "ends in a line continuation"));
    }
    s
}

/// Splits a line into words and the `&&`, `||`, `;` between them.
fn tokens(line: &str) -> Result<Vec<Token>, &'static str> {
    let mut out = Vec::new();
    let mut word: Vec<Seg> = Vec::new();
    let mut chars = line.chars().peekable();
    let lit = |word: &mut Vec<Seg>, c: char, quoted: bool| match word.last_mut() {
        Some(Seg::Lit { text, quoted: q }) if *q == quoted => text.push(c),
        _ => word.push(Seg::Lit {
            text: c.to_string(),
            quoted,
        }),
    };
    let end_word = |word: &mut Vec<Seg>, out: &mut Vec<Token>| {
        if !word.is_empty() {
            out.push(Token::Word(std::mem::take(word)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => end_word(&mut word, &mut out),
            '#' if word.is_empty() => break,
            ';' => {
                end_word(&mut word, &mut out);
                out.push(Token::Semi);
            }
            '&' if chars.peek() == Some(&'&') => {
                chars.next();
                end_word(&mut word, &mut out);
                out.push(Token::And);
            }
            '|' if chars.peek() == Some(&'|') => {
                chars.next();
                end_word(&mut word, &mut out);
                out.push(Token::Or);
            }
            '&' | '|' | '<' | '>' | '(' | ')' | '`' => {
                return Err("uses shell syntax other than assignments and tests")
            }
            '\'' => {
                // Single quotes: literal up to the next one (may be empty).
                word.push(Seg::Lit {
                    text: String::new(),
                    quoted: true,
                });
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => lit(&mut word, c, true),
                        None => return Err("has an unclosed quote"),
                    }
                }
            }
            '"' => {
                word.push(Seg::Lit {
                    text: String::new(),
                    quoted: true,
                });
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => lit(&mut word, c, true),
                            Some(c) => {
                                lit(&mut word, '\\', true);
                                lit(&mut word, c, true);
                            }
                            None => return Err("has an unclosed quote"),
                        },
                        Some('$') => word.push(dollar(&mut chars)?),
                        Some('`') => return Err("uses command substitution"),
                        Some(c) => lit(&mut word, c, true),
                        None => return Err("has an unclosed quote"),
                    }
                }
            }
            '\\' => {
                if let Some(c) = chars.next() {
                    lit(&mut word, c, true);
                }
            }
            '$' => word.push(dollar(&mut chars)?),
            c => lit(&mut word, c, false),
        }
    }
    end_word(&mut word, &mut out);
    Ok(out)
}

/// A `$NAME` or `${NAME}` after its `$`; a lone `$` is literal.
fn dollar(chars: &mut std::iter::Peekable<std::str::Chars>) -> Result<Seg, &'static str> {
    let braced = chars.peek() == Some(&'{');
    if braced {
        chars.next();
    }
    let mut name = String::new();
    while let Some(&c) = chars.peek() {
        if c.is_ascii_alphanumeric() || c == '_' {
            name.push(c);
            chars.next();
        } else {
            break;
        }
    }
    if braced && chars.next() != Some('}') {
        return Err("uses a ${...} expansion other than ${NAME}");
    }
    if name.is_empty() {
        if braced || matches!(chars.peek(), Some('(' | '?' | '$' | '!' | '@' | '*' | '#')) {
            return Err("uses command substitution or a special parameter");
        }
        return Ok(Seg::Lit {
            text: "$".into(),
            quoted: false,
        });
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("uses a positional parameter");
    }
    Ok(Seg::Var(name))
}

/// Runs one line: commands joined by `&&`, `||` and `;`.
fn run_line(s: &mut Sourced, toks: &[Token], line: usize) -> Result<(), &'static str> {
    // Check the whole line first, so that nothing of a line we cannot read is applied.
    let mut commands: Vec<(Option<&Token>, Vec<&Vec<Seg>>)> = vec![(None, Vec::new())];
    for t in toks {
        match t {
            Token::Word(w) => commands.last_mut().map(|c| c.1.push(w)).unwrap_or(()),
            op => commands.push((Some(op), Vec::new())),
        }
    }
    for (_, words) in &commands {
        kind(words)?;
    }
    let mut ok = true;
    for (op, words) in commands {
        let run = match op {
            None | Some(Token::Semi) => true,
            Some(Token::And) => ok,
            Some(Token::Or) => !ok,
            Some(Token::Word(_)) => true,
        };
        if run && !words.is_empty() {
            ok = exec(s, &words, line)?;
        }
    }
    Ok(())
}

#[derive(PartialEq)]
enum Kind {
    Assign,
    Export,
    Test,
    NoOp(bool),
}

/// What a simple command is, if we can run it.
fn kind(words: &[&Vec<Seg>]) -> Result<Kind, &'static str> {
    let Some(first) = words.first() else {
        return Ok(Kind::NoOp(true));
    };
    let plain = |w: &Vec<Seg>| match w.as_slice() {
        [Seg::Lit {
            text,
            quoted: false,
        }] => Some(text.clone()),
        _ => None,
    };
    if words.iter().all(|w| assignment_name(w).is_some()) {
        return Ok(Kind::Assign);
    }
    match plain(first).as_deref() {
        Some("export") => Ok(Kind::Export),
        Some("[") if words.last().and_then(|w| plain(w)).as_deref() == Some("]") => Ok(Kind::Test),
        Some("test") => Ok(Kind::Test),
        Some(":" | "true") if words.len() == 1 => Ok(Kind::NoOp(true)),
        Some("false") if words.len() == 1 => Ok(Kind::NoOp(false)),
        _ => Err("runs a command (only assignments and tests are read)"),
    }
}

/// `NAME` of a `NAME=…` word.
fn assignment_name(w: &[Seg]) -> Option<String> {
    let Some(Seg::Lit {
        text,
        quoted: false,
    }) = w.first()
    else {
        return None;
    };
    let (name, _) = text.split_once('=')?;
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then(|| name.to_string())
}

fn expand(s: &mut Sourced, w: &[Seg]) -> String {
    let mut out = String::new();
    for seg in w {
        match seg {
            Seg::Lit { text, .. } => out.push_str(text),
            Seg::Var(name) => {
                s.referenced.insert(name.clone());
                out.push_str(s.get(name).unwrap_or_default());
            }
        }
    }
    out
}

fn assign(s: &mut Sourced, w: &[Seg], line: usize, export: bool) {
    let full = expand(s, w);
    let (name, value) = full.split_once('=').unwrap_or((&full, ""));
    let exported = export || s.vars.get(name).is_some_and(|v| v.exported);
    s.vars.insert(
        name.to_string(),
        Var {
            value: value.to_string(),
            line: Some(line),
            exported,
        },
    );
}

/// Runs a simple command; its exit status as a bool.
fn exec(s: &mut Sourced, words: &[&Vec<Seg>], line: usize) -> Result<bool, &'static str> {
    match kind(words)? {
        Kind::NoOp(ok) => Ok(ok),
        Kind::Assign => {
            for w in words {
                assign(s, w, line, false);
            }
            Ok(true)
        }
        Kind::Export => {
            for w in &words[1..] {
                if assignment_name(w).is_some() {
                    assign(s, w, line, true);
                } else {
                    let name = expand(s, w);
                    s.referenced.remove(&name);
                    let var = s.vars.entry(name).or_insert(Var {
                        value: String::new(),
                        line: Some(line),
                        exported: false,
                    });
                    var.exported = true;
                }
            }
            Ok(true)
        }
        Kind::Test => {
            let args: Vec<String> = words.iter().map(|w| expand(s, w)).collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let inner = match args.as_slice() {
                ["[", inner @ .., "]"] | ["test", inner @ ..] => inner,
                _ => return Err("has a test ksm cannot read"),
            };
            test(inner).ok_or("has a test ksm cannot read")
        }
    }
}

/// `test`'s answer for the forms default files use.
fn test(args: &[&str]) -> Option<bool> {
    Some(match args {
        ["!", rest @ ..] => !test(rest)?,
        [a, "=" | "==", b] => a == b,
        [a, "!=", b] => a != b,
        ["-n", a] => !a.is_empty(),
        ["-z", a] => a.is_empty(),
        [a] => !a.is_empty(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_quotes_and_expansion() {
        let s = read(
            "# comment\nA=\"one two\"  # trailing\nB='$A'\nC=\"$A three\"\nD=${A}x\nE=\nexport F=\"f\"\nG=g; export G\n",
            &[],
        );
        assert_eq!(s.get("A"), Some("one two"));
        assert_eq!(s.get("B"), Some("$A"));
        assert_eq!(s.get("C"), Some("one two three"));
        assert_eq!(s.get("D"), Some("one twox"));
        assert_eq!(s.get("E"), Some(""));
        assert!(s.vars["F"].exported && s.vars["G"].exported);
        assert!(!s.vars["A"].exported);
        assert_eq!(s.vars["C"].line, Some(4));
        assert!(s.skipped.is_empty(), "{:?}", s.skipped);
        assert!(s.referenced.contains("A"));
    }

    #[test]
    fn pyhsm_tests_and_preset_variables() {
        let s = read(
            "X=\"x\"\n[ \"x$X\" != \"x\" ] && ARGS=\"$ARGS -D $X\"\n[ \"x$Y\" != \"x\" ] && ARGS=\"$ARGS --key-handles $Y\"\n[ -z \"$Y\" ] || Z=1\n",
            &[("ARGS", "--pid-file /p")],
        );
        assert_eq!(s.get("ARGS"), Some("--pid-file /p -D x"));
        assert_eq!(s.get("Z"), None);
        assert_eq!(s.vars["ARGS"].line, Some(2));
    }

    #[test]
    fn continuations_and_escapes() {
        let s = read("A=\"a \\\nb\"\nB=\\$A\nC=\"q\\\"q\"\n", &[]);
        assert_eq!(s.get("A"), Some("a b"));
        assert_eq!(s.get("B"), Some("$A"));
        assert_eq!(s.get("C"), Some("q\"q"));
    }

    #[test]
    fn what_is_not_read_is_named_by_line_and_applies_nothing() {
        let s = read(
            "A=$(cat /etc/secret)\nB=1 && rm -rf /tmp/x\nif true; then C=1; fi\nD=\"open\nE=`id`\nF=${G:-x}\nH=ok\n",
            &[],
        );
        let lines: Vec<usize> = s.skipped.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(s.get("A"), None);
        assert_eq!(s.get("B"), None, "nothing of a skipped line is applied");
        assert_eq!(s.get("C"), None);
        assert_eq!(s.get("H"), Some("ok"));
    }
}
