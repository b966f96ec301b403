//! Finds the line of a key path (`trunk[1].inbound_allow[0]`) in the TOML file
//! text, using toml_edit's spans. Used only to render errors; the values themselves
//! come from figment.

use toml_edit::{ImDocument, Item, Table, Value};

/// Line index over one TOML document.
pub struct Locator {
    doc: Option<ImDocument<String>>,
    line_starts: Vec<usize>,
}

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key));
        }
        while let Some(r) = rest.strip_prefix('[') {
            let Some((n, after)) = r.split_once(']') else { break };
            if let Ok(i) = n.parse() {
                out.push(Seg::Index(i));
            }
            rest = after;
        }
    }
    out
}

impl Locator {
    /// Indexes `text` (a TOML document that already parsed once).
    pub fn new(text: &str) -> Self {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Self { doc: ImDocument::parse(text.to_string()).ok(), line_starts }
    }

    /// 1-based line of a byte offset.
    pub fn line_of_offset(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= offset)
    }

    /// 1-based line of the deepest part of `path` present in the document.
    pub fn line(&self, path: &str) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let mut span: Option<std::ops::Range<usize>> = None;
        let mut node = Node::Table(doc.as_table());
        for seg in segments(path) {
            let next = match (&node, seg) {
                (Node::Table(t), Seg::Key(k)) => {
                    if let Some(key) = t.key(k) {
                        span = key.span().or(span);
                    }
                    t.get(k).map(Node::Item)
                }
                (Node::Item(Item::Table(t)), Seg::Key(k)) => {
                    if let Some(key) = t.key(k) {
                        span = key.span().or(span);
                    }
                    t.get(k).map(Node::Item)
                }
                (Node::Item(Item::Value(Value::InlineTable(t))) | Node::Value(Value::InlineTable(t)), Seg::Key(k)) => {
                    if let Some(key) = t.key(k) {
                        span = key.span().or(span);
                    }
                    t.get(k).map(Node::Value)
                }
                (Node::Item(Item::ArrayOfTables(a)), Seg::Index(i)) => a.get(i).map(|t| {
                    span = t.span().or(span.clone());
                    Node::Table(t)
                }),
                (Node::Item(Item::Value(Value::Array(a))) | Node::Value(Value::Array(a)), Seg::Index(i)) => {
                    a.get(i).map(|v| {
                        span = v.span().or(span.clone());
                        Node::Value(v)
                    })
                }
                _ => None,
            };
            match next {
                Some(n) => {
                    let leaf = match &n {
                        Node::Item(Item::Value(v)) => Some(v),
                        Node::Value(v) => Some(*v),
                        _ => None,
                    };
                    if let Some(v) = leaf.filter(|v| !matches!(v, Value::Array(_) | Value::InlineTable(_))) {
                        span = v.span().or(span);
                    }
                    node = n;
                }
                None => break,
            }
        }
        span.map(|s| self.line_of_offset(s.start))
    }
}

enum Node<'a> {
    Table(&'a Table),
    Item(&'a Item),
    Value(&'a Value),
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "[node]\nname = \"a\"\n\n[[trunk]]\nname = \"t0\"\n\n[[trunk]]\nname = \"t1\"\ninbound_allow = [\n  \"1.2.3.4\",\n  \"64.16.250\",\n]\n";

    #[test]
    fn finds_lines_of_nested_keys() {
        let l = Locator::new(DOC);
        assert_eq!(l.line("node.name"), Some(2));
        assert_eq!(l.line("trunk[1]"), Some(7));
        assert_eq!(l.line("trunk[1].name"), Some(8));
        assert_eq!(l.line("trunk[1].inbound_allow[1]"), Some(11));
        // A missing key falls back to the deepest part that exists.
        assert_eq!(l.line("trunk[1].password"), Some(7));
        assert_eq!(l.line("nothing"), None);
    }
}
