//! The layer check of ARCHITECTURE.md, run with the test command.
//!
//! Reads every `src/**/*.rs` of the library (not `src/bin`, whose binaries see the library
//! from outside), collects the modules each one names through `crate::…`, `super::…` and
//! `self::…` paths (in `use` trees, grouped ones included, and inline in code), and checks the
//! edges between top-level modules against the rules written in ARCHITECTURE.md:
//!
//! - dependencies point inward: composition → front ends → services → ports and adapters →
//!   domain; an edge from an inner layer to an outer one is a violation;
//! - front ends (`radius`, `federation`, `web`, `admin`) never import `store`, `directory`,
//!   `policy` or `tapcode`;
//! - `metrics` never imports `signin`, `radius` or any other front end or service;
//! - no cycles between top-level modules.
//!
//! Test code (`#[cfg(test)]` modules, inline or in their own file) is not counted: a unit test
//! may build a fake of any port.
//!
//! The check is a ratchet. Today's code has violations, listed in [`KNOWN_VIOLATIONS`] and
//! [`KNOWN_CYCLES`] with the refactor that removes each. A violation not on the list fails the
//! test, and so does a listed one that no longer exists: whoever removes one deletes its line,
//! so the list stays exact.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Where each top-level module of the library stands. Lower numbers are further in.
fn layer(module: &str) -> Option<(u8, &'static str)> {
    Some(match module {
        // Domain: pure types and rules, no I/O.
        "model" | "clock" | "dn" | "group_ref" | "policy" | "tapcode" => (1, "domain"),
        // Ports (traits) with their adapters underneath (store::sqlite/postgres,
        // directory::ldap/ldif), and the audit trail's writer.
        "store" | "directory" | "audit" => (2, "port"),
        // Services: every decision front ends ask for.
        "service" | "signin" | "sync" | "onboarding" => (3, "service"),
        // Front ends: protocol adapters only (parse, call a service, render).
        "radius" | "federation" | "web" | "admin" => (4, "front end"),
        // Composition root and the admin CLI's library half.
        "daemon" | "tapctl" => (5, "composition"),
        // Cross-cutting infrastructure any layer may use: validated configuration (the only
        // reader of files and the environment), the metric registry every layer counts in
        // (its `/metrics` listener is a front end, but may only import what the registry
        // may), logging, TLS set-up, the systemd protocol, generated documentation.
        "config" | "metrics" | "logging" | "tls" | "http_listener" | "notify" | "watchdog"
        | "reload" | "docs" => (0, "infrastructure"),
        _ => return None,
    })
}

const FRONT_ENDS: &[&str] = &["radius", "federation", "web", "admin"];
/// What a front end must never import (ARCHITECTURE.md, DESIGN.md §4).
const FRONT_END_FORBIDDEN: &[&str] = &["store", "directory", "policy", "tapcode"];
/// What `metrics` must never import: its label types live with the code that produces them.
const METRICS_FORBIDDEN: &[&str] = &[
    "signin",
    "radius",
    "web",
    "federation",
    "admin",
    "service",
    "sync",
];

/// Violations in today's code, by file and imported module, each with the change that removes
/// it. Exact: an entry that is gone must be deleted here.
const KNOWN_VIOLATIONS: &[(&str, &str, &str)] = &[];

/// Cycles between top-level modules in today's code (as sorted module sets), each with the
/// change that breaks it. Exact, like [`KNOWN_VIOLATIONS`].
const KNOWN_CYCLES: &[(&[&str], &str)] = &[];

/// The files that may read the system clock (ARCHITECTURE.md: time only through `Clock`), how
/// many reads each may hold, and why. Everything else is handed a `Clock` or a `now`, tests
/// included, so a manual clock moves every time the code sees.
const WALL_CLOCK_READERS: &[(&str, usize, &str)] = &[
    (
        "src/clock.rs",
        1,
        "`SystemClock`, the `Clock` the daemon hands everyone",
    ),
    (
        "src/tapctl.rs",
        1,
        "`parse_time`: the CLI's relative `--start`, against the operator's clock",
    ),
];

/// Calls that read the wall clock (chrono, std, the `time` crate).
const WALL_CLOCK_CALLS: &[&str] = &[
    "Utc::now(",
    "Local::now(",
    "SystemTime::now(",
    "now_utc(",
    "now_local(",
];

/// Each line of `code` (comments and literals already blanked by [`strip`]) that reads the
/// wall clock, as its 1-based number.
fn wall_clock_reads(code: &str) -> Vec<usize> {
    code.lines()
        .enumerate()
        .filter(|(_, line)| {
            let squeezed: String = line.chars().filter(|c| !c.is_whitespace()).collect();
            WALL_CLOCK_CALLS.iter().any(|call| squeezed.contains(call))
        })
        .map(|(n, _)| n + 1)
        .collect()
}

/// One `crate::` reference: the file and line it is on, the top-level module it names.
#[derive(Clone, Debug)]
struct Reference {
    file: PathBuf,
    line: usize,
    target: String,
}

/// The module path of a source file: `src/a/b.rs` and `src/a/b/mod.rs` are `["a", "b"]`,
/// `src/lib.rs` is `[]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs").to_owned();
    if stem != "mod" && stem != "lib" {
        parts.push(stem);
    }
    parts
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// `text` with comments, string and char literals blanked out (newlines kept, so line numbers
/// stay right).
fn strip(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !ident_before(&chars, i) {
            // Raw string: r"…" or r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            out.extend(std::iter::repeat_n(' ', j - i));
            i = j;
            while i < chars.len() {
                if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
                    out.extend(std::iter::repeat_n(' ', hashes + 1));
                    i += hashes + 1;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && is_char_literal(&chars, i) {
            let end = if chars.get(i + 1) == Some(&'\\') {
                (i + 3..chars.len())
                    .find(|&k| chars[k] == '\'')
                    .unwrap_or(i)
            } else {
                i + 2
            };
            out.extend(std::iter::repeat_n(' ', end + 1 - i));
            i = end + 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// `'x'`, `'\n'`, `'\u{1F600}'`, not a lifetime `'a`.
fn is_char_literal(chars: &[char], i: usize) -> bool {
    matches!(
        (chars.get(i + 1), chars.get(i + 2)),
        (Some('\\'), _) | (Some(_), Some('\''))
    )
}

/// `code` with every `#[cfg(test)]` item (a `mod tests { … }` block) blanked out, and the
/// names of `#[cfg(test)] mod x;` declarations (test modules in files of their own).
fn without_tests(code: &str) -> (String, Vec<String>) {
    let mut out: Vec<char> = code.chars().collect();
    let mut test_files = Vec::new();
    let marker: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut i = 0;
    while i + marker.len() <= out.len() {
        if out[i..i + marker.len()] != marker[..] {
            i += 1;
            continue;
        }
        let start = i;
        let mut j = i + marker.len();
        // The item after the attribute ends at its `;` or at the brace closing its block.
        let mut depth = 0usize;
        let mut header = String::new();
        while j < out.len() {
            let c = out[j];
            if c == '{' {
                depth += 1;
            } else if c == '}' {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    break;
                }
            } else if c == ';' && depth == 0 {
                let words: Vec<&str> = header.split_whitespace().collect();
                if let Some(pos) = words.iter().position(|w| *w == "mod") {
                    if let Some(name) = words.get(pos + 1) {
                        test_files.push(name.to_string());
                    }
                }
                break;
            }
            if depth == 0 {
                header.push(c);
            }
            j += 1;
        }
        for c in out.iter_mut().take((j + 1).min(code.len())).skip(start) {
            if *c != '\n' {
                *c = ' ';
            }
        }
        i = j + 1;
    }
    (out.into_iter().collect(), test_files)
}

/// The first segment a path names, resolved from `here` (the module the code is in):
/// `crate::a::…` is `a`; `super::…` and `self::…` climb from `here`.
fn resolve(here: &[String], segments: &[&str]) -> Option<String> {
    let mut base: Vec<String> = here.to_vec();
    let mut rest = segments;
    match rest.first() {
        Some(&"crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some(&"super") | Some(&"self") => {
            while let Some(&first) = rest.first() {
                match first {
                    "super" => {
                        base.pop()?;
                    }
                    "self" => {}
                    _ => break,
                }
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    base.extend(rest.iter().map(|s| s.to_string()));
    base.into_iter().next()
}

/// Every path prefix a `use` tree names, expanded: `crate::{a, b::{c, d}}` gives `crate::a`,
/// `crate::b::c`, `crate::b::d`.
fn expand_tree(tree: &str) -> Vec<Vec<String>> {
    fn parse(tokens: &[String], pos: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let mut path: Vec<String> = prefix.to_vec();
        while *pos < tokens.len() {
            let token = tokens[*pos].as_str();
            match token {
                "{" => {
                    *pos += 1;
                    loop {
                        parse(tokens, pos, &path, out);
                        match tokens.get(*pos).map(String::as_str) {
                            Some(",") => *pos += 1,
                            Some("}") => {
                                *pos += 1;
                                break;
                            }
                            _ => break,
                        }
                        if tokens.get(*pos).map(String::as_str) == Some("}") {
                            *pos += 1;
                            break;
                        }
                    }
                    return;
                }
                "," | "}" => break,
                "::" => *pos += 1,
                "as" => {
                    *pos += 2;
                }
                _ => {
                    path.push(token.to_owned());
                    *pos += 1;
                }
            }
        }
        if path.len() > prefix.len() {
            out.push(path);
        }
    }
    let mut tokens = Vec::new();
    let mut word = String::new();
    let chars: Vec<char> = tree.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' || c == '*' {
            word.push(c);
        } else {
            if !word.is_empty() {
                tokens.push(std::mem::take(&mut word));
            }
            if c == ':' && chars.get(i + 1) == Some(&':') {
                tokens.push("::".to_owned());
                i += 1;
            } else if matches!(c, '{' | '}' | ',') {
                tokens.push(c.to_string());
            }
        }
        i += 1;
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    let mut out = Vec::new();
    let mut pos = 0;
    parse(&tokens, &mut pos, &[], &mut out);
    out
}

/// The references of one file's code (tests already removed).
fn references(file: &Path, here: &[String], code: &str) -> Vec<Reference> {
    let mut found = Vec::new();
    let line_of = |offset: usize| code[..offset].matches('\n').count() + 1;
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    // `use` trees, whole (grouped ones span lines); the inline scan below skips them.
    let mut use_spans = Vec::new();
    let mut at = 0;
    while let Some(found_at) = code[at..].find("use ") {
        let start = at + found_at;
        at = start + 4;
        if start > 0 && is_ident(bytes[start - 1]) {
            continue;
        }
        let Some(end) = code[start..].find(';') else {
            break;
        };
        use_spans.push(start..start + end);
        let tree = &code[start + 4..start + end];
        for path in expand_tree(tree) {
            let segments: Vec<&str> = path.iter().map(String::as_str).collect();
            if let Some(target) = resolve(here, &segments) {
                found.push(Reference {
                    file: file.to_owned(),
                    line: line_of(start),
                    target,
                });
            }
        }
    }
    // Inline paths in code: `crate::a::f()`, `super::b::T`.
    for keyword in ["crate::", "super::"] {
        let mut at = 0;
        while let Some(found_at) = code[at..].find(keyword) {
            let start = at + found_at;
            at = start + keyword.len();
            let in_use = use_spans.iter().any(|span| span.contains(&start));
            if in_use || start > 0 && (is_ident(bytes[start - 1]) || bytes[start - 1] == b':') {
                continue;
            }
            let rest = &code[start..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let segments: Vec<&str> = rest[..end].split("::").filter(|s| !s.is_empty()).collect();
            if let Some(target) = resolve(here, &segments) {
                found.push(Reference {
                    file: file.to_owned(),
                    line: line_of(start),
                    target,
                });
            }
        }
    }
    found
}

/// Every file's references to other top-level modules: (file, its top-level module, target)
/// with the first place.
fn file_edges() -> BTreeMap<(String, String, String), Reference> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut files = walk(&src);
    files.retain(|f| !f.starts_with(src.join("bin")));
    files.sort();
    // Files that are test modules of their parent (`#[cfg(test)] mod tests;`).
    let mut test_files: BTreeSet<PathBuf> = BTreeSet::new();
    let mut parsed = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).expect("readable source");
        let (code, tests) = without_tests(&strip(&text));
        let dir = if file
            .file_name()
            .is_some_and(|n| n == "mod.rs" || n == "lib.rs")
        {
            file.parent().expect("a parent").to_path_buf()
        } else {
            file.with_extension("")
        };
        for name in tests {
            test_files.insert(dir.join(format!("{name}.rs")));
            test_files.insert(dir.join(&name).join("mod.rs"));
        }
        parsed.push((file.clone(), code));
    }
    let mut edges = BTreeMap::new();
    for (file, code) in parsed {
        if test_files
            .iter()
            .any(|t| file == *t || file.starts_with(t.with_extension("")))
        {
            continue;
        }
        let here = module_path(&src, &file);
        let Some(from) = here.first().cloned() else {
            continue; // lib.rs declares the modules; it imports nothing.
        };
        let name = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        for reference in references(&file, &here, &code) {
            if reference.target != from && layer(&reference.target).is_some() {
                edges
                    .entry((name.clone(), from.clone(), reference.target.clone()))
                    .or_insert(reference);
            }
        }
    }
    edges
}

/// Edges between top-level modules, each with one place that makes it.
fn module_graph() -> BTreeMap<(String, String), Reference> {
    let mut edges = BTreeMap::new();
    for ((_, from, to), reference) in file_edges() {
        edges.entry((from, to)).or_insert(reference);
    }
    edges
}

/// Why `from → to` breaks a rule, if it does.
fn violation(from: &str, to: &str) -> Option<String> {
    let (from_rank, from_layer) = layer(from)?;
    let (to_rank, to_layer) = layer(to)?;
    if FRONT_ENDS.contains(&from) && FRONT_END_FORBIDDEN.contains(&to) {
        return Some(format!("front end `{from}` imports `{to}`"));
    }
    if from == "metrics" && METRICS_FORBIDDEN.contains(&to) {
        return Some(format!("`metrics` imports `{to}`"));
    }
    if from_rank != 0 && to_rank > from_rank {
        return Some(format!(
            "{from_layer} `{from}` imports {to_layer} `{to}` (dependencies point inward)"
        ));
    }
    None
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(edges: &BTreeSet<(String, String)>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = edges.iter().flat_map(|(a, b)| [a, b]).collect();
    let nodes: Vec<&String> = nodes.into_iter().collect();
    let index_of = |n: &String| nodes.iter().position(|m| *m == n).expect("a node");
    let mut adjacency = vec![Vec::new(); nodes.len()];
    for (a, b) in edges {
        adjacency[index_of(a)].push(index_of(b));
    }
    struct State {
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        found: Vec<Vec<usize>>,
    }
    fn visit(v: usize, adjacency: &[Vec<usize>], s: &mut State) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in &adjacency[v] {
            match s.index[w] {
                None => {
                    visit(w, adjacency, s);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(i) if s.on_stack[w] => s.low[v] = s.low[v].min(i),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        index: vec![None; nodes.len()],
        low: vec![0; nodes.len()],
        on_stack: vec![false; nodes.len()],
        stack: Vec::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in 0..nodes.len() {
        if state.index[v].is_none() {
            visit(v, &adjacency, &mut state);
        }
    }
    let mut result: Vec<Vec<String>> = state
        .found
        .into_iter()
        .map(|c| {
            let mut names: Vec<String> = c.into_iter().map(|i| nodes[i].clone()).collect();
            names.sort();
            names
        })
        .collect();
    result.sort();
    result
}

fn place(reference: &Reference) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = reference.file.strip_prefix(root).unwrap_or(&reference.file);
    format!("{}:{}", file.display(), reference.line)
}

#[test]
fn every_top_level_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let unplaced: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .filter(|m| layer(m).is_none())
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules without a layer in tests/layering.rs (add them, and to ARCHITECTURE.md): {unplaced:?}"
    );
}

#[test]
fn layer_rules_hold_apart_from_the_known_violations() {
    let edges = file_edges();
    let mut found: BTreeMap<(String, String), String> = BTreeMap::new();
    for ((file, from, to), reference) in &edges {
        if let Some(why) = violation(from, to) {
            found.insert(
                (file.clone(), to.clone()),
                format!("{why}, at {}", place(reference)),
            );
        }
    }
    println!("layer violations found ({}):", found.len());
    for why in found.values() {
        println!("  {why}");
    }
    let known: BTreeSet<(String, String)> = KNOWN_VIOLATIONS
        .iter()
        .map(|(a, b, _)| (a.to_string(), b.to_string()))
        .collect();
    let new: Vec<&String> = found
        .iter()
        .filter(|(edge, _)| !known.contains(*edge))
        .map(|(_, why)| why)
        .collect();
    let gone: Vec<&(String, String)> = known.iter().filter(|e| !found.contains_key(*e)).collect();
    assert!(
        new.is_empty(),
        "new layer violations (see ARCHITECTURE.md; front ends call a service instead):\n  {}",
        new.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    assert!(
        gone.is_empty(),
        "violations listed in KNOWN_VIOLATIONS no longer exist; delete their lines: {gone:?}"
    );
}

#[test]
fn no_import_cycles_apart_from_the_known_ones() {
    let edges = module_graph();
    let found = cycles(&edges.keys().cloned().collect());
    println!("import cycles between top-level modules ({}):", found.len());
    for cycle in &found {
        let members: BTreeSet<&String> = cycle.iter().collect();
        let inside: Vec<String> = edges
            .iter()
            .filter(|((a, b), _)| members.contains(a) && members.contains(b))
            .map(|((a, b), r)| format!("{a} -> {b} ({})", place(r)))
            .collect();
        println!("  {}: {}", cycle.join(", "), inside.join("; "));
    }
    let known: BTreeSet<Vec<String>> = KNOWN_CYCLES
        .iter()
        .map(|(c, _)| {
            let mut c: Vec<String> = c.iter().map(|s| s.to_string()).collect();
            c.sort();
            c
        })
        .collect();
    let found: BTreeSet<Vec<String>> = found.into_iter().collect();
    let new: Vec<&Vec<String>> = found.difference(&known).collect();
    let gone: Vec<&Vec<String>> = known.difference(&found).collect();
    assert!(new.is_empty(), "new import cycles: {new:?}");
    assert!(
        gone.is_empty(),
        "cycles listed in KNOWN_CYCLES no longer exist; delete their lines: {gone:?}"
    );
}

#[test]
fn the_reader_sees_grouped_relative_and_inline_paths() {
    let here: Vec<String> = vec!["web".into(), "signin".into()];
    let code = "use crate::{model::User, store::{Store, StoreError}};\n\
                use super::super::policy::x;\n\
                use self::inner::Thing;\n\
                fn f() { crate::tapcode::verify(); let _ = \"crate::admin\"; }\n";
    let targets: BTreeSet<String> = references(Path::new("x.rs"), &here, &strip(code))
        .into_iter()
        .map(|r| r.target)
        .collect();
    let expected: BTreeSet<String> = ["model", "store", "policy", "web", "tapcode"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(targets, expected);
    let (code, test_files) = without_tests(
        "use crate::model::User;\n#[cfg(test)]\nmod tests {\n use crate::store::Store;\n}\n#[cfg(test)]\nmod other;\n",
    );
    let targets: Vec<String> = references(Path::new("x.rs"), &here, &code)
        .into_iter()
        .map(|r| r.target)
        .collect();
    assert_eq!(targets, vec!["model".to_owned()]);
    assert_eq!(test_files, vec!["other".to_owned()]);
}

#[test]
fn the_system_clock_is_read_only_through_clock() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = walk(&root.join("src"));
    files.sort();
    let mut found: Vec<String> = Vec::new();
    for file in files {
        let name = file.strip_prefix(root).unwrap().display().to_string();
        let code = strip(&fs::read_to_string(&file).unwrap());
        let reads = wall_clock_reads(&code);
        let allowed = WALL_CLOCK_READERS
            .iter()
            .find(|(f, _, _)| *f == name)
            .map_or(0, |(_, n, _)| *n);
        if reads.len() > allowed {
            found.extend(reads.iter().map(|line| format!("{name}:{line}")));
        }
    }
    assert!(
        found.is_empty(),
        "the system clock is read outside `Clock` (take an `Arc<dyn Clock>` or a `now` \
         parameter; tests use `ManualClock` or a fixed time): {found:?}"
    );
}

#[test]
fn the_clock_check_sees_calls_and_not_comments_or_text() {
    let code = "// chrono::Utc::now() in a comment\n\
                let s = \"Utc::now()\";\n\
                let t = chrono::Utc :: now ();\n\
                let u = std::time::SystemTime::now();\n";
    assert_eq!(wall_clock_reads(&strip(code)), vec![3, 4]);
}

/// Longest file in `src/` that need not say why it is not split (CONTRIBUTING.md).
const LONG_FILE_LINES: usize = 800;
/// What a longer file's module doc says, followed by its reason.
const LONG_FILE_MARK: &str = "Over 800 lines on purpose";
/// Longest route handler of a front end, signature to closing brace (the architecture's
/// "handlers become a few lines each": parse with extractors, call a service, render).
const HANDLER_LINES: usize = 25;
/// The front ends' files: where routers name their handlers and the handlers live.
const FRONT_END_DIRS: &[&str] = &["src/web", "src/federation", "src/admin"];
const FRONT_END_FILES: &[&str] = &["src/metrics/http.rs"];

#[test]
fn long_files_say_why_they_are_not_split() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = walk(&root.join("src"));
    files.extend(walk(&root.join("src").join("bin")));
    files.sort();
    files.dedup();
    let mut unexplained = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        let lines = text.lines().count();
        let doc: String = text
            .lines()
            .take_while(|line| line.starts_with("//!") || line.starts_with("#!"))
            .collect::<Vec<_>>()
            .join(" ")
            .replace("//!", " ");
        let doc = doc.split_whitespace().collect::<Vec<_>>().join(" ");
        if lines > LONG_FILE_LINES && !doc.contains(LONG_FILE_MARK) {
            let name = file.strip_prefix(root).unwrap().display().to_string();
            unexplained.push(format!("{name} ({lines} lines)"));
        }
    }
    assert!(
        unexplained.is_empty(),
        "files over {LONG_FILE_LINES} lines whose module doc does not say \
         \"{LONG_FILE_MARK}: <why>\"; split them along a seam or say why not: {unexplained:?}"
    );
}

/// The handler names a router's `get(…)`, `post(…)`, `patch(…)`, `put(…)`, `delete(…)`,
/// `fallback(…)` and `method_not_allowed_fallback(…)` calls name in `code` (literals and
/// comments blanked).
fn routed_handlers(code: &str) -> BTreeSet<String> {
    let squeezed: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    let mut names = BTreeSet::new();
    for call in [
        "get(",
        "post(",
        "patch(",
        "put(",
        "delete(",
        "fallback(",
        "method_not_allowed_fallback(",
    ] {
        for (at, _) in squeezed.match_indices(call) {
            let before = squeezed[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &squeezed[at + call.len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let closes = rest[name.len()..].starts_with(')');
            if closes && !name.is_empty() && name.chars().next().is_some_and(char::is_lowercase) {
                names.insert(name);
            }
        }
    }
    names
}

/// `(name, first line, lines)` of each `fn` in `code` whose body closes at its own indentation.
fn function_spans(code: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut spans = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let Some(after) = [
            "pub async fn ",
            "async fn ",
            "pub fn ",
            "fn ",
            "pub(crate) async fn ",
        ]
        .iter()
        .find_map(|prefix| trimmed.strip_prefix(prefix)) else {
            continue;
        };
        let name: String = after
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let close = format!("{}}}", " ".repeat(indent));
        if let Some(end) = (start + 1..lines.len()).find(|&i| lines[i] == close) {
            spans.push((name, start + 1, end - start + 1));
        }
    }
    spans
}

#[test]
fn front_end_handlers_stay_short() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut too_long = Vec::new();
    let mut seen = 0;
    let groups: Vec<Vec<PathBuf>> = FRONT_END_DIRS
        .iter()
        .map(|dir| walk(&root.join(dir)))
        .chain(FRONT_END_FILES.iter().map(|file| vec![root.join(file)]))
        .collect();
    for files in groups {
        let codes: Vec<(String, String)> = files
            .iter()
            .filter(|file| !file.ends_with("tests.rs"))
            .map(|file| {
                let name = file.strip_prefix(root).unwrap().display().to_string();
                (
                    name,
                    without_tests(&strip(&fs::read_to_string(file).unwrap())).0,
                )
            })
            .collect();
        let handlers: BTreeSet<String> = codes
            .iter()
            .flat_map(|(_, code)| routed_handlers(code))
            .collect();
        for (name, code) in &codes {
            for (function, line, lines) in function_spans(code) {
                if !handlers.contains(&function) {
                    continue;
                }
                seen += 1;
                if lines > HANDLER_LINES {
                    too_long.push(format!("{name}:{line} {function} ({lines} lines)"));
                }
            }
        }
    }
    assert!(
        seen >= 40,
        "the check found only {seen} handlers: is it still reading the routers?"
    );
    assert!(
        too_long.is_empty(),
        "route handlers over {HANDLER_LINES} lines (move parsing into extractors and the \
         decision into a service): {too_long:?}"
    );
}

#[test]
fn the_handler_check_reads_routes_and_measures_bodies() {
    let code = "Router::new().route(\"/a\", get(home).post(identify))\n\
                .route(\"/b\", axum::routing::delete(remove)).fallback(not_found);\n\
                let x = Some(get(&map));\n\
                async fn home() -> R {\n    one();\n}\n\
                pub async fn identify(\n    a: A,\n) -> R {\n    two();\n    three();\n}\n";
    let routed: Vec<String> = routed_handlers(code).into_iter().collect();
    assert_eq!(routed, ["home", "identify", "not_found", "remove"]);
    let spans = function_spans(code);
    assert_eq!(
        spans,
        [("home".to_owned(), 4, 3), ("identify".to_owned(), 7, 6)]
    );
}
