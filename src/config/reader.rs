//! A cursor over the merged config tree (figment `Value`s) that turns it into typed
//! values while collecting *every* problem instead of stopping at the first.
//!
//! Each problem carries the key path in the form users write it
//! (`trunk[1].inbound_allow[0]`), from which `config::load` finds where the value
//! came from (file and line, or an environment variable). Unknown keys are reported with the closest known key.

use figment::value::{Dict, Value};

/// One problem found while reading the config, not yet located in a file.
#[derive(Debug, Clone)]
pub struct Issue {
    /// Key path, `trunk[1].inbound_allow[0]`.
    pub path: String,
    /// What is wrong, quoting the value and showing a valid example.
    pub message: String,
}

/// Collects issues while reading.
#[derive(Debug, Default)]
pub struct Issues(pub Vec<Issue>);

impl Issues {
    /// Records a problem at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Issue { path: path.into(), message: message.into() });
    }
}

/// The closest entry of `known` to `key`, if it is close enough to be a typo.
pub fn suggest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(key, k), *k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// A figment number as an integer (figment keeps signed and unsigned apart).
fn whole(n: figment::value::Num) -> Option<i128> {
    n.to_i128().or_else(|| n.to_u128().and_then(|u| i128::try_from(u).ok()))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(..) | Value::Char(..) => "a string",
        Value::Bool(..) => "a boolean",
        Value::Num(..) => "a number",
        Value::Empty(..) => "empty",
        Value::Dict(..) => "a table",
        Value::Array(..) => "a list",
    }
}

/// A table being read: remembers which keys were asked for so that the rest can be
/// reported as unknown by [`Table::finish`].
pub struct Table<'v> {
    path: String,
    dict: Option<&'v Dict>,
    known: &'static [&'static str],
}

impl<'v> Table<'v> {
    /// A table at `path` (empty for the root) whose allowed keys are `known`.
    /// A value that is not a table is reported and read as empty.
    pub fn new(path: String, value: Option<&'v Value>, known: &'static [&'static str], issues: &mut Issues) -> Self {
        let dict = match value {
            None => None,
            Some(Value::Dict(_, d)) => Some(d),
            Some(v) => {
                issues.push(&path, format!("must be a table, found {}", type_name(v)));
                None
            }
        };
        Self { path, dict, known }
    }

    /// The root table.
    pub fn root(dict: &'v Dict, known: &'static [&'static str]) -> Self {
        Self { path: String::new(), dict: Some(dict), known }
    }

    /// Whether the table was present at all.
    pub fn present(&self) -> bool {
        self.dict.is_some()
    }

    /// Path of this table (`trunk[1]`).
    pub fn path_of(&self) -> String {
        self.path.clone()
    }

    /// Path of a key inside this table.
    pub fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_string() } else { format!("{}.{key}", self.path) }
    }

    /// The raw value of `key`.
    pub fn value(&self, key: &str) -> Option<&'v Value> {
        debug_assert!(self.known.contains(&key), "{key} not declared as known");
        self.dict.and_then(|d| d.get(key))
    }

    /// Records that a required key is missing.
    pub fn missing(&self, key: &str, issues: &mut Issues, hint: &str) {
        issues.push(self.key_path(key), format!("missing; {hint}"));
    }

    /// A string value.
    pub fn string(&self, key: &str, issues: &mut Issues) -> Option<String> {
        let v = self.value(key)?;
        match v {
            Value::String(_, s) => Some(s.clone()),
            Value::Char(_, c) => Some(c.to_string()),
            // Environment overrides are typed by figment: "5060" arrives as a number.
            Value::Num(_, n) => whole(*n).map(|i| i.to_string()),
            other => {
                issues.push(self.key_path(key), format!("must be a string, found {}", type_name(other)));
                None
            }
        }
    }

    /// A string parsed by `parse`, whose error sentence is reported as is.
    pub fn parsed<T>(&self, key: &str, issues: &mut Issues, parse: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        let s = self.string(key, issues)?;
        match parse(&s) {
            Ok(t) => Some(t),
            Err(e) => {
                issues.push(self.key_path(key), e);
                None
            }
        }
    }

    /// One of a fixed set of words.
    pub fn choice<T: Copy>(&self, key: &str, issues: &mut Issues, choices: &[(&str, T)]) -> Option<T> {
        self.parsed(key, issues, |s| {
            choices.iter().find(|(name, _)| *name == s).map(|(_, t)| *t).ok_or_else(|| {
                let names: Vec<String> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
                format!("{s:?} is not one of {}", names.join(", "))
            })
        })
    }

    /// A boolean.
    pub fn bool(&self, key: &str, issues: &mut Issues) -> Option<bool> {
        match self.value(key)? {
            Value::Bool(_, b) => Some(*b),
            other => {
                issues.push(self.key_path(key), format!("must be true or false, found {}", type_name(other)));
                None
            }
        }
    }

    /// An integer within `min..=max`.
    pub fn integer(&self, key: &str, issues: &mut Issues, min: i64, max: i64) -> Option<i64> {
        let v = self.value(key)?;
        let n = match v {
            Value::Num(_, n) => whole(*n),
            Value::String(_, s) => s.trim().parse::<i128>().ok(),
            _ => None,
        };
        match n {
            Some(n) if n >= i128::from(min) && n <= i128::from(max) => Some(n as i64),
            Some(n) => {
                issues.push(self.key_path(key), format!("{n} is out of range ({min} to {max})"));
                None
            }
            None => {
                let shown = match v {
                    Value::String(_, s) => format!("{s:?} is not a whole number"),
                    other => format!("must be a whole number, found {}", type_name(other)),
                };
                issues.push(self.key_path(key), shown);
                None
            }
        }
    }

    fn list(&self, key: &str, issues: &mut Issues) -> Option<&'v [Value]> {
        match self.value(key)? {
            Value::Array(_, items) => Some(items),
            other => {
                issues.push(self.key_path(key), format!("must be a list, found {}", type_name(other)));
                None
            }
        }
    }

    /// A list of strings each parsed by `parse`; bad items are reported one by one
    /// (`key[i]`) and left out.
    pub fn parsed_list<T>(
        &self,
        key: &str,
        issues: &mut Issues,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<Vec<T>> {
        let items = self.list(key, issues)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let path = format!("{}[{i}]", self.key_path(key));
            match item {
                Value::String(_, s) => match parse(s) {
                    Ok(t) => out.push(t),
                    Err(e) => issues.push(path, e),
                },
                other => issues.push(path, format!("must be a string, found {}", type_name(other))),
            }
        }
        Some(out)
    }

    /// A sub-table with its own known keys.
    pub fn table(&self, key: &str, known: &'static [&'static str], issues: &mut Issues) -> Table<'v> {
        Table::new(self.key_path(key), self.value(key), known, issues)
    }

    /// An array of tables (`[[trunk]]`), each with the same known keys.
    pub fn tables(&self, key: &str, known: &'static [&'static str], issues: &mut Issues) -> Vec<Table<'v>> {
        let Some(items) = self.list(key, issues) else { return Vec::new() };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| Table::new(format!("{}[{i}]", self.key_path(key)), Some(item), known, issues))
            .collect()
    }

    /// Reports every key of this table that is not in `known`.
    pub fn finish(self, issues: &mut Issues) {
        let Some(dict) = self.dict else { return };
        for k in dict.keys() {
            if self.known.contains(&k.as_str()) {
                continue;
            }
            let hint = match suggest(k, self.known) {
                Some(s) => format!("unknown key (did you mean \"{s}\"?)"),
                None => format!("unknown key (known keys here: {})", self.known.join(", ")),
            };
            issues.push(self.key_path(k), hint);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys_only() {
        assert_eq!(suggest("pasword", &["username", "password"]), Some("password"));
        assert_eq!(suggest("inbound_alow", &["inbound_allow", "numbers"]), Some("inbound_allow"));
        assert_eq!(suggest("zzz", &["username", "password"]), None);
    }
}
