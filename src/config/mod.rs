//! Configuration: one TOML file plus environment overrides, validated into a typed
//! [`Config`].
//!
//! Sources, later ones win:
//! 1. the TOML file (`/etc/sipbridge/sipbridge.toml` by default);
//! 2. `SIPBRIDGE_<SECTION>__<KEY>` environment variables for the single sections
//!    (`SIPBRIDGE_NODE__MAX_CALLS=50`, `SIPBRIDGE_API__TOKEN=...`), values in TOML
//!    syntax (a bare word is a string);
//! 3. `SIPBRIDGE_TRUNK__<NAME>__<KEY>` and `SIPBRIDGE_AGENT__<NAME>__<KEY>` for one
//!    entry of `[[trunk]]` / `[[agent]]`, found by its `name` (case-insensitive, `-`
//!    written as `_`): `SIPBRIDGE_TRUNK__TELNYX__PASSWORD=...` keeps a password out of
//!    the file (systemd `EnvironmentFile=`).
//!
//! Errors: [`load`] reports *every* problem, each as `file:line: key.path: message`
//! (or `environment VAR: key.path: message`), unknown keys with the closest known
//! one. Secrets are [`Secret`]s and never print.

mod locate;
mod model;
mod reader;
mod schema;
mod secret;
pub mod values;

use std::fmt;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Value};

pub use model::*;
pub use secret::Secret;

use locate::Locator;
use reader::Issues;

/// Default config path, as installed by the Debian package.
pub const DEFAULT_PATH: &str = "/etc/sipbridge/sipbridge.toml";

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "SIPBRIDGE_";

/// Environment variables with this prefix that are not config overrides.
const ENV_NOT_CONFIG: &[&str] = &["SIPBRIDGE_CONFIG"];

/// A validated configuration and the warnings found while reading it.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The typed configuration.
    pub config: Config,
    /// Valid but suspicious settings (placeholder passwords, nothing routed, ...).
    pub warnings: Vec<String>,
    /// The file it came from.
    pub path: PathBuf,
}

/// One located config problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// `path/to/sipbridge.toml:14` or `environment SIPBRIDGE_NODE__MAX_CALLS`.
    pub origin: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// Key path (`trunk[1].inbound_allow[0]`); empty for whole-file problems.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.key, self.message)
        }
    }
}

/// Every problem found in a config; `Display` prints one per line.
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// The problems, in file order where known.
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

fn whole_file(path: &Path, message: String) -> ConfigError {
    ConfigError {
        problems: vec![ConfigProblem { origin: path.display().to_string(), line: None, key: String::new(), message }],
    }
}

/// `SIPBRIDGE_NODE__MAX_CALLS` → `["node", "max_calls"]`.
fn env_segments(var: &str) -> Option<Vec<String>> {
    let rest = var.strip_prefix(ENV_PREFIX)?;
    Some(rest.split("__").map(str::to_ascii_lowercase).collect())
}

/// Loads and validates the config at `path` with overrides from the process
/// environment.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    load_with_env(path, std::env::vars())
}

/// [`load`] with an explicit environment (tests; `SIPBRIDGE_*` entries are used).
pub fn load_with_env(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Loaded, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| whole_file(path, format!("cannot read the config file: {e}")))?;
    if let Err(e) = text.parse::<toml_edit::ImDocument<String>>() {
        let locator = Locator::new(&text);
        let line = e.span().map(|s| locator.line_of_offset(s.start));
        let msg = e.message().trim().replace('\n', "; ");
        return Err(ConfigError {
            problems: vec![ConfigProblem {
                origin: match line {
                    Some(l) => format!("{}:{l}", path.display()),
                    None => path.display().to_string(),
                },
                line,
                key: String::new(),
                message: format!("TOML syntax error: {msg}"),
            }],
        });
    }

    // Sort environment overrides: single sections go through figment, named list
    // entries are applied below, anything else is an error.
    let mut origins: Vec<(String, String)> = Vec::new(); // (key path, env var)
    let mut named: Vec<(String, String, String, String)> = Vec::new(); // (section, name, key, value)
    let mut env_problems = Vec::new();
    let mut section_vars: Vec<(String, String)> = Vec::new();
    for (var, value) in env {
        if !var.starts_with(ENV_PREFIX) || ENV_NOT_CONFIG.contains(&var.as_str()) {
            continue;
        }
        let segs = env_segments(&var).unwrap_or_default();
        match segs.as_slice() {
            [section, name, key] if section == "trunk" || section == "agent" => {
                named.push((section.clone(), name.clone(), key.clone(), value));
            }
            [section, rest @ ..]
                if !rest.is_empty()
                    && schema::SECTIONS.contains(&section.as_str())
                    && section != "trunk"
                    && section != "agent"
                    && section != "route" =>
            {
                origins.push((segs.join("."), var.clone()));
                section_vars.push((var, value));
            }
            _ => env_problems.push(ConfigProblem {
                origin: format!("environment {var}"),
                line: None,
                key: String::new(),
                message: "not a config override: use SIPBRIDGE_<SECTION>__<KEY> (e.g. SIPBRIDGE_NODE__MAX_CALLS) \
                          or SIPBRIDGE_TRUNK__<NAME>__<KEY> / SIPBRIDGE_AGENT__<NAME>__<KEY>"
                    .into(),
            }),
        }
    }
    if !env_problems.is_empty() {
        return Err(ConfigError { problems: env_problems });
    }

    // Section overrides are parsed the way figment's `Env` provider parses values
    // (`Value::from_str`: numbers, booleans, arrays in TOML syntax; anything else a
    // string) and merged over the file.
    let mut overrides = Dict::new();
    for (var, value) in &section_vars {
        let segs = env_segments(var).unwrap_or_default();
        insert_path(&mut overrides, &segs, parse_env_value(value));
    }
    let figment = Figment::from(Toml::file_exact(path)).merge(Serialized::defaults(overrides));
    let mut root: Dict = match figment.extract::<Dict>() {
        Ok(d) => d,
        Err(e) => return Err(whole_file(path, e.to_string())),
    };

    for (section, name, key, value) in named {
        let var = format!("{ENV_PREFIX}{}__{}__{}", section.to_uppercase(), name.to_uppercase(), key.to_uppercase());
        let entries = match root.get_mut(&section) {
            Some(Value::Array(_, entries)) => entries,
            _ => {
                env_problems.push(ConfigProblem {
                    origin: format!("environment {var}"),
                    line: None,
                    key: String::new(),
                    message: format!("there is no [[{section}]] in the file to override"),
                });
                continue;
            }
        };
        let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
        let hit = entries.iter_mut().enumerate().find(|(_, e)| {
            e.as_dict().and_then(|d| d.get("name")).and_then(Value::as_str).is_some_and(|n| norm(n) == norm(&name))
        });
        match hit {
            Some((i, Value::Dict(_, d))) => {
                d.insert(key.clone(), parse_env_value(&value));
                origins.push((format!("{section}[{i}].{key}"), var));
            }
            _ => env_problems.push(ConfigProblem {
                origin: format!("environment {var}"),
                line: None,
                key: String::new(),
                message: format!("no [[{section}]] is named {name:?}"),
            }),
        }
    }
    if !env_problems.is_empty() {
        return Err(ConfigError { problems: env_problems });
    }

    let mut issues = Issues::default();
    let mut warnings = Vec::new();
    let config = schema::read(&root, &mut issues, &mut warnings);
    match config {
        Some(config) if issues.0.is_empty() => Ok(Loaded { config, warnings, path: path.to_path_buf() }),
        _ => {
            let locator = Locator::new(&text);
            let mut problems: Vec<ConfigProblem> = issues
                .0
                .into_iter()
                .map(|issue| {
                    let from_env =
                        origins.iter().find(|(p, _)| issue.path == *p || issue.path.starts_with(&format!("{p}[")));
                    match from_env {
                        Some((_, var)) => ConfigProblem {
                            origin: format!("environment {var}"),
                            line: None,
                            key: issue.path,
                            message: issue.message,
                        },
                        None => {
                            let line = locator.line(&issue.path);
                            ConfigProblem {
                                origin: match line {
                                    Some(l) => format!("{}:{l}", path.display()),
                                    None => path.display().to_string(),
                                },
                                line,
                                key: issue.path,
                                message: issue.message,
                            }
                        }
                    }
                })
                .collect();
            problems.sort_by_key(|p| (p.line.is_none(), p.line));
            Err(ConfigError { problems })
        }
    }
}

fn parse_env_value(value: &str) -> Value {
    value.parse::<Value>().unwrap_or_else(|_| Value::from(value.to_string()))
}

fn insert_path(dict: &mut Dict, segs: &[String], value: Value) {
    match segs {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict.entry(first.clone()).or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, d) = entry {
                insert_path(d, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests;
