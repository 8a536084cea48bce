//! Which parts of `ksm` may name which: the arrows run one way, so a part can be read,
//! changed and tested without the parts above it. The device module (what `-D` names,
//! opening it, the sharing socket's client) is used by the daemon and the tools and uses
//! neither; the owner loop and the device kinds it drives are used by the pool and never
//! name it back.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

use std::path::{Path, PathBuf};

/// The code of `path` (relative to `ksm/src`), comments left out.
fn code(path: &Path) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `.rs` file below `dir` (relative to `ksm/src`).
fn files_below(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut todo = vec![root.join(dir)];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = entry.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p.strip_prefix(&root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_device_module_names_no_part_of_the_daemon() {
    let files = files_below("device");
    assert!(files.len() >= 3, "{files:?}");
    for f in files {
        assert!(
            !code(&f).contains("crate::daemon"),
            "{} names the daemon",
            f.display()
        );
    }
}

#[test]
fn the_owner_loop_and_the_devices_never_name_the_pool() {
    for f in [
        "daemon/owner.rs",
        "daemon/hsm1_owner.rs",
        "daemon/hsm2_owner.rs",
        "daemon/hsm2_audit.rs",
    ] {
        let code = code(Path::new(f));
        assert!(!code.contains("daemon::pool"), "{f} names the pool");
    }
    // The loop is generic over the devices, so it names neither kind.
    let owner = code(Path::new("daemon/owner.rs"));
    for kind in ["hsm1_owner", "hsm2_owner", "hsm2_audit"] {
        assert!(!owner.contains(kind), "the owner loop names {kind}");
    }
    // Neither kind names the other.
    assert!(!code(Path::new("daemon/hsm1_owner.rs")).contains("hsm2_owner"));
    assert!(!code(Path::new("daemon/hsm2_owner.rs")).contains("hsm1_owner"));
    assert!(!code(Path::new("daemon/hsm1_owner.rs")).contains("hsm2_audit"));
    // The YubiHSM 2's owner uses its audit part, which works with the session it is handed
    // and never names the owner back.
    assert!(code(Path::new("daemon/hsm2_owner.rs")).contains("hsm2_audit"));
    assert!(!code(Path::new("daemon/hsm2_audit.rs")).contains("hsm2_owner"));
}

/// Which file of `ksm/src` names which: an edge A → B for each path in A's code (not its
/// comments or strings) that leads into B, with one such path kept to show.
mod graph {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;
    use std::str::FromStr;

    use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};

    /// A module's path below the crate root (`["daemon", "config"]`).
    type ModPath = Vec<String>;

    /// The files of `ksm/src` by module path, and their edges.
    pub struct Graph {
        /// Module path → file (relative to `ksm/src`), for every file module of the library.
        pub files: BTreeMap<ModPath, String>,
        /// File → file it names → one path that names it.
        pub edges: BTreeMap<String, BTreeMap<String, String>>,
        /// Module → name it re-exports (`pub use`) → the path of what it re-exports.
        reexports: BTreeMap<ModPath, BTreeMap<String, ModPath>>,
    }

    impl Graph {
        /// Reads every library file below `ksm/src` (the binary's `main.rs` names the
        /// library as `ksm::`, from outside).
        pub fn of_ksm() -> Graph {
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
            let mut files = BTreeMap::new();
            for f in super::files_below(".") {
                let rel = f
                    .strip_prefix(".")
                    .unwrap_or(&f)
                    .to_string_lossy()
                    .into_owned();
                if rel == "main.rs" {
                    continue;
                }
                let mut segs: ModPath = rel
                    .trim_end_matches(".rs")
                    .split('/')
                    .map(str::to_string)
                    .collect();
                if segs.last().is_some_and(|s| s == "mod" || s == "lib") {
                    segs.pop();
                }
                files.insert(segs, rel);
            }
            let mut graph = Graph {
                files,
                edges: BTreeMap::new(),
                reexports: BTreeMap::new(),
            };
            let mut named_by = BTreeMap::new();
            for (module, file) in graph.files.clone() {
                let text = std::fs::read_to_string(src.join(&file)).unwrap();
                let tokens = TokenStream::from_str(&text)
                    .unwrap_or_else(|e| panic!("{file}: does not lex: {e:?}"));
                let tokens: Vec<TokenTree> = tokens.into_iter().collect();
                // Twice: the first finds the modules this file names (`use crate::daemon;`),
                // so the second can follow them when named by their last part alone
                // (`daemon::serve::run`).
                let mut first = Vec::new();
                walk(&tokens, &module, &BTreeMap::new(), &mut first);
                let bound: BTreeMap<String, ModPath> = first
                    .into_iter()
                    .filter(|(p, _, _)| graph.files.contains_key(p))
                    .filter_map(|(p, alias, _)| Some((alias.or_else(|| p.last().cloned())?, p)))
                    .collect();
                let mut named = Vec::new();
                walk(&tokens, &module, &bound, &mut named);
                for (p, alias, public) in &named {
                    if let (true, Some(name)) =
                        (*public, alias.clone().or_else(|| p.last().cloned()))
                    {
                        graph
                            .reexports
                            .entry(module.clone())
                            .or_default()
                            .insert(name, p.clone());
                    }
                }
                named_by.insert(file, named);
            }
            for (file, named) in named_by {
                for (path, _, _) in named {
                    let target = graph.file_of(&path);
                    if target != file {
                        graph
                            .edges
                            .entry(file.clone())
                            .or_default()
                            .entry(target)
                            .or_insert_with(|| path.join("::"));
                    }
                }
            }
            graph
        }

        /// The file a path from the crate root leads into: that of its longest prefix that
        /// is a file module (an inline module or an item lives in its parent's file), or,
        /// if the item there is a re-export, the file of what it re-exports.
        fn file_of(&self, path: &[String]) -> String {
            let n = (0..=path.len())
                .rev()
                .find(|n| self.files.contains_key(&path[..*n]))
                .unwrap_or_else(|| panic!("{} is in no file", path.join("::")));
            let again = path
                .get(n)
                .and_then(|item| self.reexports.get(&path[..n])?.get(item));
            match again {
                Some(target) if target.as_slice() != path => {
                    let mut whole = target.clone();
                    whole.extend_from_slice(&path[n + 1..]);
                    self.file_of(&whole)
                }
                _ => self.files[&path[..n]].clone(),
            }
        }

        /// A circle of files, each naming the next (the path that does so shown), if any.
        pub fn circle(&self) -> Option<Vec<(String, String)>> {
            // Depth first; a file met again while still on the stack closes a circle.
            let mut done = BTreeSet::new();
            for start in self.files.values() {
                let mut stack: Vec<(String, Vec<String>)> = Vec::new();
                if done.contains(start) {
                    continue;
                }
                stack.push((start.clone(), self.next(start)));
                while let Some((file, todo)) = stack.last_mut() {
                    let Some(next) = todo.pop() else {
                        done.insert(file.clone());
                        stack.pop();
                        continue;
                    };
                    if let Some(at) = stack.iter().position(|(f, _)| *f == next) {
                        let ring: Vec<&String> = stack[at..].iter().map(|(f, _)| f).collect();
                        let mut out = Vec::new();
                        for (i, f) in ring.iter().enumerate() {
                            let to = ring.get(i + 1).copied().unwrap_or(&next);
                            out.push(((*f).clone(), self.edges[*f][to].clone()));
                        }
                        return Some(out);
                    }
                    if !done.contains(&next) {
                        let after = self.next(&next);
                        stack.push((next, after));
                    }
                }
            }
            None
        }

        fn next(&self, file: &str) -> Vec<String> {
            self.edges
                .get(file)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default()
        }
    }

    /// A path made absolute, the name `use ... as NAME` gives it, and whether a `pub use`
    /// names it (a re-export: the item is named here, and lives there).
    type Named = (ModPath, Option<String>, bool);

    /// Collects, from `tokens` (code of module `module`), every path that starts at
    /// `crate`, `super`, `self`, a child module or a module `bound` names, made absolute.
    fn walk(
        tokens: &[TokenTree],
        module: &ModPath,
        bound: &BTreeMap<String, ModPath>,
        out: &mut Vec<Named>,
    ) {
        let children = children(tokens);
        let mut i = 0;
        while i < tokens.len() {
            // `mod name { ... }`: an inline module, a module path of its own in this file.
            if let (TokenTree::Ident(m), Some(TokenTree::Ident(name)), Some(TokenTree::Group(g))) =
                (&tokens[i], tokens.get(i + 1), tokens.get(i + 2))
            {
                if m == "mod" && g.delimiter() == Delimiter::Brace {
                    let mut inner = module.clone();
                    inner.push(name.to_string());
                    walk(
                        &g.stream().into_iter().collect::<Vec<_>>(),
                        &inner,
                        bound,
                        out,
                    );
                    i += 3;
                    continue;
                }
            }
            match &tokens[i] {
                TokenTree::Group(g) => walk(
                    &g.stream().into_iter().collect::<Vec<_>>(),
                    module,
                    bound,
                    out,
                ),
                TokenTree::Ident(id) if !after_path_sep(tokens, i) && is_sep(tokens, i + 1) => {
                    let first = id.to_string();
                    let base = match first.as_str() {
                        "crate" => Some(Vec::new()),
                        "self" => Some(module.clone()),
                        "super" => Some(module[..module.len().saturating_sub(1)].to_vec()),
                        _ if children.contains(&first) => {
                            let mut m = module.clone();
                            m.push(first);
                            Some(m)
                        }
                        _ => bound.get(&first).cloned(),
                    };
                    if let Some(base) = base {
                        let from = out.len();
                        let public = reexport(tokens, i);
                        i = tail(tokens, i + 1, base, out);
                        out[from..].iter_mut().for_each(|n| n.2 = public);
                        continue;
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }

    /// Follows `::a::b`, `::{a, b::c}` or `::*` from `tokens[at]` (a `::`) on a path
    /// that so far is `path`; returns the index after it.
    fn tail(tokens: &[TokenTree], mut at: usize, mut path: ModPath, out: &mut Vec<Named>) -> usize {
        while is_sep(tokens, at) {
            match tokens.get(at + 2) {
                Some(TokenTree::Ident(id)) if id == "super" => {
                    path.pop();
                }
                Some(TokenTree::Ident(id)) => path.push(id.to_string()),
                Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
                    let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                    for piece in
                        inner.split(|t| matches!(t, TokenTree::Punct(p) if p.as_char() == ','))
                    {
                        match piece.first() {
                            Some(TokenTree::Ident(id)) if id == "self" => {
                                out.push((path.clone(), alias(piece, 1), false))
                            }
                            Some(TokenTree::Ident(id)) => {
                                let mut p = path.clone();
                                p.push(id.to_string());
                                tail(piece, 1, p, out);
                            }
                            _ => {}
                        }
                    }
                    return at + 3;
                }
                _ => break,
            }
            at += 3;
        }
        out.push((path, alias(tokens, at), false));
        at
    }

    /// Whether the path at `tokens[at]` follows `pub use` (or `pub(crate) use`).
    fn reexport(tokens: &[TokenTree], at: usize) -> bool {
        let is =
            |i: usize, word: &str| matches!(tokens.get(i), Some(TokenTree::Ident(w)) if w == word);
        at >= 2
            && is(at - 1, "use")
            && (is(at - 2, "pub")
                || (at >= 3
                    && matches!(&tokens[at - 2], TokenTree::Group(g) if g.delimiter() == Delimiter::Parenthesis)
                    && is(at - 3, "pub")))
    }

    /// `as NAME` at `tokens[at..]`.
    fn alias(tokens: &[TokenTree], at: usize) -> Option<String> {
        match (tokens.get(at), tokens.get(at + 1)) {
            (Some(TokenTree::Ident(a)), Some(TokenTree::Ident(name))) if a == "as" => {
                Some(name.to_string())
            }
            _ => None,
        }
    }

    /// The modules `tokens` declares with `mod name;` (each in a file of its own).
    fn children(tokens: &[TokenTree]) -> BTreeSet<String> {
        tokens
            .windows(3)
            .filter_map(|w| match w {
                [TokenTree::Ident(m), TokenTree::Ident(name), TokenTree::Punct(p)]
                    if m == "mod" && p.as_char() == ';' =>
                {
                    Some(name.to_string())
                }
                _ => None,
            })
            .collect()
    }

    /// Whether `tokens[at..]` starts with `::`.
    fn is_sep(tokens: &[TokenTree], at: usize) -> bool {
        matches!(
            (tokens.get(at), tokens.get(at + 1)),
            (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
                if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':'
        )
    }

    /// Whether `tokens[at]` comes right after a `::` (the middle of a path, or a path from
    /// outside the crate).
    fn after_path_sep(tokens: &[TokenTree], at: usize) -> bool {
        at >= 2 && is_sep(tokens, at - 2)
    }
}

/// Draws the edges for a test: `from → to (path)`.
fn show(edges: &[(String, String)]) -> String {
    edges
        .iter()
        .map(|(f, p)| format!("  {f} names crate::{p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn no_two_files_of_ksm_src_name_each_other_in_a_circle() {
    let graph = graph::Graph::of_ksm();
    // The graph is read right: a few edges every tree has.
    assert!(graph.files.len() > 40, "{:?}", graph.files.keys());
    assert!(graph.edges["cli.rs"].contains_key("daemon/serve.rs"));
    assert!(graph.edges["lib.rs"].contains_key("error.rs"));
    if let Some(circle) = graph.circle() {
        panic!("a circle of imports:\n{}", show(&circle));
    }
}

#[test]
fn the_daemon_names_no_tool_and_the_device_module_no_daemon() {
    let graph = graph::Graph::of_ksm();
    let mut wrong = Vec::new();
    for (from, tos) in &graph.edges {
        for (to, path) in tos {
            let bad = (from.starts_with("daemon/") && to.starts_with("tools/"))
                || (from.starts_with("device/") && to.starts_with("daemon/"))
                || (from.starts_with("tools/") && to.starts_with("daemon/"));
            if bad {
                wrong.push((from.clone(), path.clone()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "names across the layers:\n{}",
        show(&wrong)
    );
}
