//! The module graph has no cycles (issue 19 point 2): reads every `src/**/*.rs`
//! file, collects which module uses which, and fails on a cycle
//!
//! * between top-level modules (`sip`, `call`, `media`, `store`, ...), and
//! * between the files of one module (`sip::inbound` ↔ `sip::forward`).
//!
//! An edge is a path that names another module: `use crate::a::b::..`,
//! `use super::..`, `use child::..` (in a `mod.rs`), and `crate::a::b::..` or
//! `super::..` anywhere in code. Comments, doc comments, string and character
//! literals, and `#[cfg(test)]` items (the `mod tests` blocks, test-only files)
//! are ignored. A path is attributed to the longest module prefix that is a file;
//! an item a `mod.rs` re-exports from one of its files (`pub use inbound::X`) is
//! attributed to that file. A module's own `mod.rs` (its facade) is not a node
//! of the per-module graph.
//!
//! Cycles still being removed are listed in [`KNOWN_CYCLE_EDGES`]. The test fails
//! on a cycle edge not in the list, and on a listed edge that is no longer part of
//! a cycle: the list only shrinks.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

/// The edges that close today's cycles, `(from, to)`, each the one pointing the
/// wrong way: without them both graphs are acyclic. Each names the code that makes
/// it; the list only shrinks (a listed edge that is gone or closes no cycle fails).
const KNOWN_CYCLE_EDGES: &[(&str, &str)] = &[
    // Empty since issue 19: every cycle between top-level modules and between
    // files of one module is gone. A new one fails this test; if one must be
    // tolerated for a while, list its closing edge here with the code behind it.
];

/// One source file: its module path (`store::calls`), where it is, its text.
struct File {
    module: String,
    path: String,
    text: String,
}

/// Where an edge was seen: `src/x/y.rs:12`.
type Evidence = String;
type Edges = BTreeMap<(String, String), Evidence>;

/// Every `src/**/*.rs` file of the library (not `main.rs`, a separate crate, nor
/// `lib.rs`, which only declares modules).
fn source_files(src: &Path) -> Vec<File> {
    let mut out = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap();
            let mut segments: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
            let last = segments.pop().unwrap();
            let stem = last.trim_end_matches(".rs");
            if segments.is_empty() && (stem == "lib" || stem == "main") {
                continue;
            }
            if stem != "mod" {
                segments.push(stem.to_string());
            }
            out.push(File {
                module: segments.join("::"),
                path: format!("src/{}", rel.display()),
                text: std::fs::read_to_string(&path).unwrap(),
            });
        }
    }
    out.sort_by(|a, b| a.module.cmp(&b.module));
    out
}

/// The code with comments and string/char literals blanked (newlines kept, so
/// lines still count right).
fn strip(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let prev_ident = i > 0 && ident(c[i - 1]);
        let at = |i: usize, k: usize| c.get(i + k).copied();
        if c[i] == '/' && at(i, 1) == Some('/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == '/' && at(i, 1) == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i, 1) == Some('*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && at(i, 1) == Some('/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
        } else if !prev_ident && (c[i] == 'r' || (c[i] == 'b' && at(i, 1) == Some('r'))) && {
            let start = if c[i] == 'r' { 1 } else { 2 };
            let hashes = (start..).take_while(|&k| at(i, k) == Some('#')).count();
            at(i, start + hashes) == Some('"')
        } {
            // Raw string: r"..", r#".."#, br"..".
            let start = if c[i] == 'r' { 1 } else { 2 };
            let hashes = (start..).take_while(|&k| at(i, k) == Some('#')).count();
            let end: String = std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
            let body = i + start + hashes + 1;
            let close = (body..c.len())
                .find(|&k| c[k..].iter().take(end.len()).copied().eq(end.chars()))
                .map_or(c.len(), |k| k + end.len());
            out.extend(c[i..close].iter().map(|&ch| blank(ch)));
            i = close;
        } else if c[i] == '"' || (!prev_ident && c[i] == 'b' && at(i, 1) == Some('"')) {
            let mut k = if c[i] == '"' { i + 1 } else { i + 2 };
            while k < c.len() && c[k] != '"' {
                k += if c[k] == '\\' { 2 } else { 1 };
            }
            let close = (k + 1).min(c.len());
            out.extend(c[i..close].iter().map(|&ch| blank(ch)));
            i = close;
        } else if c[i] == '\'' && (at(i, 1) == Some('\\') || at(i, 2) == Some('\'')) {
            // A char literal ('x', '\n', '\''); a lifetime has no closing quote.
            let from = if at(i, 1) == Some('\\') { i + 3 } else { i + 2 };
            let close = (from..c.len()).find(|&k| c[k] == '\'').map_or(c.len(), |k| k + 1);
            out.extend(c[i..close].iter().map(|&ch| blank(ch)));
            i = close;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// A token of stripped code: an identifier, `::`, or one punctuation character.
#[derive(Debug, Clone)]
struct Token {
    text: String,
    line: usize,
}

fn tokens(code: &str) -> Vec<Token> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch.is_alphanumeric() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Token { text: c[start..i].iter().collect(), line });
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push(Token { text: "::".into(), line });
            i += 2;
        } else {
            out.push(Token { text: ch.to_string(), line });
            i += 1;
        }
    }
    out
}

/// Removes `#[cfg(test)]` items; returns the rest and the names of test-only
/// child modules declared as files (`#[cfg(test)] mod tests;`).
fn without_test_items(toks: Vec<Token>) -> (Vec<Token>, Vec<String>) {
    let is = |toks: &[Token], i: usize, s: &str| toks.get(i).is_some_and(|t| t.text == s);
    let mut keep = Vec::with_capacity(toks.len());
    let mut test_files = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let cfg_test = ["#", "[", "cfg", "(", "test", ")", "]"].iter().enumerate().all(|(k, s)| is(&toks, i + k, s));
        if !cfg_test {
            keep.push(toks[i].clone());
            i += 1;
            continue;
        }
        i += 7;
        // Further attributes of the same item.
        while is(&toks, i, "#") && is(&toks, i + 1, "[") {
            i = skip_group(&toks, i + 1);
        }
        // The item: up to `;` or through its `{ .. }` block, at bracket depth 0.
        let start = i;
        let mut depth = 0i32;
        while i < toks.len() {
            match toks[i].text.as_str() {
                "(" | "[" => depth += 1,
                ")" | "]" => depth -= 1,
                ";" if depth == 0 => {
                    let item = &toks[start..i];
                    if let Some(m) = item.iter().position(|t| t.text == "mod") {
                        if let Some(name) = item.get(m + 1) {
                            test_files.push(name.text.clone());
                        }
                    }
                    i += 1;
                    break;
                }
                "{" if depth == 0 => {
                    i = skip_group(&toks, i);
                    break;
                }
                _ => {}
            }
            i += 1;
        }
    }
    (keep, test_files)
}

/// Index just past the bracket group opening at `open` (`(`, `[` or `{`).
fn skip_group(toks: &[Token], open: usize) -> usize {
    let mut depth = 0i32;
    let mut i = open;
    while i < toks.len() {
        match toks[i].text.as_str() {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    toks.len()
}

fn is_ident(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Parses a path tree from `i` (`a::b::{c, d::e}`, `a::*`); returns every path
/// it names and the index after it. `self` in a group names the prefix itself.
fn path_tree(toks: &[Token], mut i: usize, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    let mut path = prefix.to_vec();
    loop {
        match toks.get(i).map(|t| t.text.as_str()) {
            Some("{") => {
                i += 1;
                while i < toks.len() && toks[i].text != "}" {
                    i = path_tree(toks, i, &path, out);
                    if toks.get(i).is_some_and(|t| t.text == ",") {
                        i += 1;
                    }
                }
                return i + 1;
            }
            Some("*") => {
                out.push(path);
                return i + 1;
            }
            Some("self") if !path.is_empty() => {
                i += 1;
            }
            Some(s) if is_ident(s) => {
                path.push(s.to_string());
                i += 1;
            }
            _ => {
                out.push(path);
                return i;
            }
        }
        if toks.get(i).is_some_and(|t| t.text == "::") {
            i += 1;
        } else {
            if toks.get(i).is_some_and(|t| t.text == "as") {
                i += 2;
            }
            out.push(path);
            return i;
        }
    }
}

/// A path a file names: absolute segments from the crate root, its line, and
/// whether it is re-exported (`pub use`).
struct Named {
    path: Vec<String>,
    line: usize,
    reexport: bool,
}

/// Every module path this file names; and its test-only child modules.
fn named_paths(file: &File, modules: &BTreeSet<String>) -> (Vec<Named>, Vec<String>) {
    let (toks, test_files) = without_test_items(tokens(&strip(&file.text)));
    let here: Vec<String> = file.module.split("::").map(String::from).collect();
    let parent = &here[..here.len() - 1];
    let child_of_here = |name: &str| modules.contains(&format!("{}::{name}", file.module));
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i].text.as_str();
        let after_path_sep = i > 0 && toks[i - 1].text == "::";
        let starts_path = toks.get(i + 1).is_some_and(|n| n.text == "::");
        let in_use = i > 0 && toks[i - 1].text == "use";
        // `pub use`, `pub(crate) use`, ...
        let reexport = in_use
            && (i >= 2 && toks[i - 2].text == "pub"
                || i >= 3 && toks[i - 2].text == ")" && toks[..i - 2].iter().rev().take(5).any(|t| t.text == "pub"));
        if after_path_sep || !(starts_path || in_use && t == "{") {
            i += 1;
            continue;
        }
        let line = toks[i].line;
        let mut paths = Vec::new();
        let next = path_tree(&toks, i, &[], &mut paths);
        for p in paths {
            let absolute: Option<Vec<String>> = match p.first().map(String::as_str) {
                Some("crate") => Some(p[1..].to_vec()),
                Some("super") => {
                    let ups = p.iter().take_while(|s| *s == "super").count();
                    let base = parent.len().checked_sub(ups - 1).map(|n| &parent[..n]);
                    base.map(|b| b.iter().chain(&p[ups..]).cloned().collect())
                }
                Some("self") => Some(here.iter().chain(&p[1..]).cloned().collect()),
                Some(first) if in_use && child_of_here(first) => Some(here.iter().chain(&p).cloned().collect()),
                _ => None,
            };
            if let Some(path) = absolute.filter(|a| !a.is_empty()) {
                out.push(Named { path, line, reexport });
            }
        }
        i = next.max(i + 1);
    }
    (out, test_files)
}

/// The module graph at file level: module path → modules it names (resolved to
/// the file that defines them), with where.
fn build(files: &[File]) -> Edges {
    let mut modules: BTreeSet<String> = files.iter().map(|f| f.module.clone()).collect();
    let mut parsed = Vec::new();
    for f in files {
        let (paths, test_files) = named_paths(f, &modules);
        for t in test_files {
            modules.remove(&format!("{}::{t}", f.module));
        }
        parsed.push((f, paths));
    }
    parsed.retain(|(f, _)| modules.contains(&f.module));
    // What modules re-export (`pub use`): (module, name) → the module defining
    // it. A path through a re-export is an edge to where the code is (an item a
    // `mod.rs` re-exports from its `inbound.rs` is `inbound`'s), not to the alias.
    let mut reexports: BTreeMap<(String, String), String> = BTreeMap::new();
    for (f, paths) in &parsed {
        for n in paths.iter().filter(|n| n.reexport) {
            let (m, rest) = longest_module(&modules, &n.path);
            match rest.as_slice() {
                [] => reexports.insert((f.module.clone(), n.path.last().unwrap().clone()), m),
                [item] => reexports.insert((f.module.clone(), item.clone()), m),
                _ => None,
            };
        }
    }
    let mut edges = Edges::new();
    for (f, paths) in &parsed {
        for Named { path, line, reexport } in paths {
            let (mut m, mut rest) = longest_module(&modules, path);
            // Follow re-exports (a chain of them, never in a loop).
            for _ in 0..8 {
                match rest.first().and_then(|name| reexports.get(&(m.clone(), name.clone()))) {
                    Some(r) if *r != m && !(*reexport && m == f.module) => {
                        m = r.clone();
                        rest.remove(0);
                    }
                    _ => break,
                }
            }
            if !m.is_empty() && m != f.module {
                edges.entry((f.module.clone(), m)).or_insert_with(|| format!("{}:{line}", f.path));
            }
        }
    }
    edges
}

/// The longest prefix of `path` that is a module, and the rest.
fn longest_module(modules: &BTreeSet<String>, path: &[String]) -> (String, Vec<String>) {
    for n in (1..=path.len()).rev() {
        let m = path[..n].join("::");
        if modules.contains(&m) {
            return (m, path[n..].to_vec());
        }
    }
    (String::new(), path.to_vec())
}

fn top(m: &str) -> &str {
    m.split("::").next().unwrap()
}

/// Edges between top-level modules.
fn top_level(edges: &Edges) -> Edges {
    let mut out = Edges::new();
    for ((a, b), at) in edges {
        if top(a) != top(b) {
            out.entry((top(a).to_string(), top(b).to_string())).or_insert_with(|| at.clone());
        }
    }
    out
}

/// Edges between the files of one module (its `mod.rs` left out).
fn within_modules(edges: &Edges) -> Edges {
    edges
        .iter()
        .filter(|((a, b), _)| top(a) == top(b) && a.contains("::") && b.contains("::"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A shortest path `from` → … → `to` over `edges`, if any.
fn path(edges: &Edges, from: &str, to: &str) -> Option<Vec<String>> {
    let mut previous: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = VecDeque::from([from.to_string()]);
    while let Some(n) = queue.pop_front() {
        if n == to {
            let mut p = vec![n];
            while let Some(b) = previous.get(p.last().unwrap()) {
                p.push(b.clone());
            }
            p.reverse();
            return Some(p);
        }
        for (a, b) in edges.keys() {
            if *a == n && b != from && !previous.contains_key(b) {
                previous.insert(b.clone(), n.clone());
                queue.push_back(b.clone());
            }
        }
    }
    None
}

/// The edges that lie on a cycle, each with one cycle through it
/// (`a -> b -> .. -> a`, each step with where it is seen).
fn cycle_edges(edges: &Edges) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    for (a, b) in edges.keys() {
        if let Some(back) = path(edges, b, a) {
            let mut cycle = vec![a.clone()];
            cycle.extend(back);
            let steps: Vec<String> = cycle
                .windows(2)
                .map(|w| format!("{} -> {} ({})", w[0], w[1], edges[&(w[0].clone(), w[1].clone())]))
                .collect();
            out.insert((a.clone(), b.clone()), format!("{}\n      {}", cycle.join(" -> "), steps.join("\n      ")));
        }
    }
    out
}

/// What is wrong with the graph given the known cycle edges (the edges that
/// close today's cycles, each pointing the wrong way); empty when fine. Without
/// the known edges both graphs must be acyclic; each known edge must still exist
/// and still close a cycle.
fn problems(edges: &Edges, known: &[(&str, &str)]) -> Vec<String> {
    let known: BTreeSet<(String, String)> = known.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    let mut out = Vec::new();
    let graphs = [("top-level modules", top_level(edges)), ("files of one module", within_modules(edges))];
    for (graph, edges) in &graphs {
        let rest: Edges =
            edges.iter().filter(|(k, _)| !known.contains(*k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        for ((a, b), cycle) in cycle_edges(&rest) {
            out.push(format!("new cycle between {graph}: {a} -> {b}; the cycle:\n      {cycle}"));
        }
    }
    for (a, b) in &known {
        let Some((_, edges)) = graphs.iter().find(|(_, e)| e.contains_key(&(a.clone(), b.clone()))) else {
            out.push(format!("{a} -> {b} is in KNOWN_CYCLE_EDGES but no longer exists: remove it from the list"));
            continue;
        };
        if path(edges, b, a).is_none() {
            out.push(format!(
                "{a} -> {b} is in KNOWN_CYCLE_EDGES but is no longer on a cycle: remove it from the list"
            ));
        }
    }
    out
}

#[test]
fn modules_have_no_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = source_files(&src);
    assert!(files.len() > 50, "read only {} files under {}", files.len(), src.display());
    let edges = build(&files);
    let top = top_level(&edges);
    assert!(top.contains_key(&("webhook".into(), "store".into())), "the edge webhook -> store was not found");
    let found = problems(&edges, KNOWN_CYCLE_EDGES);
    assert!(found.is_empty(), "module cycles:\n  {}", found.join("\n  "));
}

/// `docs/architecture.md`'s table of edges between top-level modules (its
/// section "Modules and the one-way arrows") is the graph the code has: a row
/// `| \`a\`, \`b\` | c, d (a remark) |` says a and b name exactly c and d; "nothing
/// of the crate" is none. Modules without a row name nothing (`fuzzing`, the
/// fuzz targets' entry points, is not a product module and has no row). On a
/// difference the test prints the graph as it is.
#[test]
fn the_architecture_doc_shows_the_graph_as_it_is() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let mut documented: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let table = doc.split("The exact edges").nth(1).expect("docs/architecture.md has the table of edges");
    for line in table.lines().skip_while(|l| !l.starts_with('|')).take_while(|l| l.starts_with('|')).skip(2) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 2, "a row of two cells: {line}");
        let names = |cell: &str| -> BTreeSet<String> {
            cell.split(',')
                .map(|n| n.split('(').next().unwrap().trim().trim_matches('`').to_string())
                .filter(|n| !n.is_empty() && n != "nothing of the crate")
                .collect()
        };
        for from in names(cells[0]) {
            documented.insert(from, names(cells[1]));
        }
    }
    let edges = top_level(&build(&source_files(&root.join("src"))));
    let mut actual: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, b) in edges.keys().filter(|(a, _)| a != "fuzzing") {
        actual.entry(a.clone()).or_default().insert(b.clone());
    }
    for (m, to) in &documented {
        if to.is_empty() {
            actual.entry(m.clone()).or_default();
        }
    }
    let graph: Vec<String> = edges.iter().map(|((a, b), at)| format!("{a} -> {b}  ({at})")).collect();
    assert_eq!(documented, actual, "docs/architecture.md's edges differ from the code's:\n  {}", graph.join("\n  "));
}

/// The checker itself: an artificial cycle is found and shown, and what must be
/// ignored is.
#[cfg(test)]
mod checker {
    use super::*;

    fn files(sources: &[(&str, &str)]) -> Vec<File> {
        sources
            .iter()
            .map(|(m, t)| File { module: m.to_string(), path: format!("src/{m}.rs"), text: t.to_string() })
            .collect()
    }

    #[test]
    fn an_artificial_cycle_between_top_level_modules_is_found_with_its_path() {
        let g = build(&files(&[
            ("a", "pub mod x;"),
            ("a::x", "use crate::b::Thing;"),
            ("b", "fn f() { let _ = crate::c::g(); }"),
            ("c", "use crate::{a::{self, x::Y}, d};"),
            ("d", ""),
        ]));
        let found = problems(&g, &[]);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found[0].contains("a -> b -> c -> a"), "{}", found[0]);
        assert!(found[0].contains("src/a::x.rs:1"), "{}", found[0]);
        // The edge that closes it, listed, passes; a listed edge that is gone, or
        // that closes no cycle, fails.
        assert!(problems(&g, &[("c", "a")]).is_empty());
        let stale = problems(&g, &[("c", "a"), ("b", "a"), ("c", "d")]);
        assert_eq!(stale.len(), 2, "{stale:#?}");
        assert!(stale[0].contains("b -> a is in KNOWN_CYCLE_EDGES but no longer exists"), "{}", stale[0]);
        assert!(stale[1].contains("c -> d is in KNOWN_CYCLE_EDGES but is no longer on a cycle"), "{}", stale[1]);
    }

    #[test]
    fn a_cycle_between_files_of_one_module_is_found_through_reexports() {
        let g = build(&files(&[
            ("sip", "mod forward; mod inbound; pub use inbound::Inbound;"),
            ("sip::forward", "use super::Inbound;"),
            ("sip::inbound", "fn f() { super::forward::go(); crate::sip::Config::default(); }"),
        ]));
        let found = problems(&g, &[]);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found.iter().any(|p| p.contains("sip::forward -> sip::inbound -> sip::forward")), "{found:#?}");
    }

    #[test]
    fn comments_literals_and_test_items_make_no_edges() {
        let g = build(&files(&[
            ("a", "use crate::b;\n#[cfg(test)]\nmod t;"),
            ("a::t", "use crate::z::Q;"),
            (
                "b",
                "// use crate::a;\n/// crate::a::x\n/* crate::a::y /* nested */ crate::a */\n\
                 fn f<'a>(s: &'a str) -> char { let _ = \"crate::a::s\"; let _ = r#\"crate::a\"#; '\"' }\n\
                 #[cfg(test)]\n#[allow(unused)]\nmod tests { use crate::a::Z; }\n\
                 #[cfg(test)]\nuse crate::a::W;",
            ),
        ]));
        let keys: Vec<_> = g.keys().cloned().collect();
        assert_eq!(keys, [("a".to_string(), "b".to_string())]);
    }
}
