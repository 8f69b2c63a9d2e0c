//! Reading a TOML file into a typed model while collecting every error, not
//! just the first: each error names the file, line, column, key and reason.
//!
//! How: the document is parsed once with spans. Deserialization into the
//! model (serde, `deny_unknown_fields`) stops at the first error, which
//! carries the key path (`serde_path_to_error`) and the span; the offending
//! key is then removed from the document and deserialization runs again,
//! until it succeeds. Removed keys fall back to their defaults, so semantic
//! validation can still run over the rest. Spans refer to the original
//! text, so line numbers stay right as keys are removed.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

/// At most this many syntax errors are listed (later ones are usually
/// consequences of the first).
const MAX_SYNTAX_ERRORS: usize = 10;
/// Bound on remove-and-retry rounds (a file has fewer bad keys than this).
const MAX_ROUNDS: usize = 1000;

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line and column, when the error points at a place in the file.
    pub position: Option<(usize, usize)>,
    /// The key, as a path such as `queue.segment_size` or `listener[1].address`
    /// (empty for errors about the file as a whole).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every error found in one file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A table key.
    Field(String),
    /// An array index.
    Index(usize),
}

/// Formats a key path as `a.b[2].c`.
pub fn key_string(path: &[Key]) -> String {
    let mut s = String::new();
    for k in path {
        match k {
            Key::Field(f) if s.is_empty() => s.push_str(f),
            Key::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            Key::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// A semantic problem found after deserialization: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// The key the problem is about.
    pub path: Vec<Key>,
    /// What is wrong.
    pub message: String,
}

impl Issue {
    /// An issue at `path` (given as `[Key]` steps).
    pub fn new(path: Vec<Key>, message: impl Into<String>) -> Self {
        Self {
            path,
            message: message.into(),
        }
    }
}

/// Builds key paths for issues: `at("queue").field("segment_size")`.
pub fn at(field: &str) -> Vec<Key> {
    vec![Key::Field(field.to_owned())]
}

/// Extends a key path.
pub trait KeyPath {
    /// Appends a table key.
    fn field(self, f: &str) -> Vec<Key>;
    /// Appends an array index.
    fn index(self, i: usize) -> Vec<Key>;
}

impl KeyPath for Vec<Key> {
    fn field(mut self, f: &str) -> Vec<Key> {
        self.push(Key::Field(f.to_owned()));
        self
    }
    fn index(mut self, i: usize) -> Vec<Key> {
        self.push(Key::Index(i));
        self
    }
}

/// A parsed document, kept for locating the keys of semantic issues.
pub struct Document<'a> {
    file: PathBuf,
    text: &'a str,
    root: Spanned<DeTable<'a>>,
}

impl Document<'_> {
    /// Turns semantic issues into located errors.
    pub fn locate(&self, issues: Vec<Issue>) -> Vec<ConfigError> {
        issues
            .into_iter()
            .map(|i| ConfigError {
                file: self.file.clone(),
                position: span_of(&self.root, &i.path).map(|s| line_col(self.text, s.start)),
                key: key_string(&i.path),
                message: i.message,
            })
            .collect()
    }
}

/// The outcome of [`parse`] for a syntactically valid file.
pub struct Parsed<'a, T> {
    /// The model; keys that had errors hold their defaults.
    pub value: T,
    /// The document, for locating semantic issues.
    pub doc: Document<'a>,
    /// Errors found while deserializing.
    pub errors: Vec<ConfigError>,
    /// Key paths of those errors: semantic checks under them are noise.
    pub bad_paths: Vec<Vec<Key>>,
}

impl<T> Parsed<'_, T> {
    /// Adds semantic issues (except those under keys that already failed)
    /// and returns every error in file order, or the value if there is none.
    pub fn finish(mut self, issues: Vec<Issue>) -> Result<T, ConfigErrors> {
        let fresh: Vec<Issue> = issues
            .into_iter()
            .filter(|i| !self.bad_paths.iter().any(|bad| i.path.starts_with(bad)))
            .collect();
        self.errors.extend(self.doc.locate(fresh));
        if self.errors.is_empty() {
            return Ok(self.value);
        }
        self.errors
            .sort_by_key(|e| e.position.unwrap_or((usize::MAX, 0)));
        Err(ConfigErrors(self.errors))
    }
}

/// Parses `text` (read from `file`) into `T`, collecting every error.
/// Syntax errors stop here; deserialization errors are collected in the
/// result so that semantic checks can run over the rest.
pub fn parse<'a, T: DeserializeOwned>(
    file: &Path,
    text: &'a str,
) -> Result<Parsed<'a, T>, ConfigErrors> {
    let (root, syntax) = DeTable::parse_recoverable(text);
    let error_at =
        |span: Option<std::ops::Range<usize>>, key: String, message: String| ConfigError {
            file: file.to_owned(),
            position: span.map(|s| line_col(text, s.start)),
            key,
            message,
        };
    if !syntax.is_empty() {
        let errors = syntax.iter().take(MAX_SYNTAX_ERRORS);
        return Err(ConfigErrors(
            errors
                .map(|e| error_at(e.span(), String::new(), e.message().to_owned()))
                .collect(),
        ));
    }
    let mut work = root.clone();
    let mut errors = Vec::new();
    let mut bad_paths = Vec::new();
    let mut removed: HashMap<usize, Vec<usize>> = HashMap::new();
    for _ in 0..MAX_ROUNDS {
        let de = toml::de::Deserializer::from(work.clone());
        match serde_path_to_error::deserialize::<_, T>(de) {
            Ok(value) => {
                let doc = Document {
                    file: file.to_owned(),
                    text,
                    root,
                };
                return Ok(Parsed {
                    value,
                    doc,
                    errors,
                    bad_paths,
                });
            }
            Err(e) => {
                let path: Vec<Segment> = e.path().iter().cloned().collect();
                let (keys, progressed) = remove_at(work.get_mut(), &path, &mut removed);
                errors.push(error_at(
                    e.inner().span(),
                    key_string(&keys),
                    e.inner().message().to_owned(),
                ));
                bad_paths.push(keys);
                if !progressed {
                    break;
                }
            }
        }
    }
    errors.sort_by_key(|e| e.position.unwrap_or((usize::MAX, 0)));
    Err(ConfigErrors(errors))
}

/// A mutable position in the document while walking a path.
enum Node<'r, 'a> {
    Table(&'r mut DeTable<'a>),
    /// An array and the start of its span (its identity across rounds).
    Array(&'r mut DeArray<'a>, usize),
    Leaf,
}

fn node<'r, 'a>(v: &'r mut Spanned<DeValue<'a>>) -> Node<'r, 'a> {
    let start = v.span().start;
    match v.get_mut() {
        DeValue::Table(t) => Node::Table(t),
        DeValue::Array(a) => Node::Array(a, start),
        _ => Node::Leaf,
    }
}

/// Removes the value at `path` from the document. Returns the path with
/// original array indices (earlier removals shift later elements), and
/// whether anything was removed.
fn remove_at(
    root: &mut DeTable<'_>,
    path: &[Segment],
    removed: &mut HashMap<usize, Vec<usize>>,
) -> (Vec<Key>, bool) {
    let mut keys = Vec::new();
    let mut at = Node::Table(root);
    for (i, seg) in path.iter().enumerate() {
        let last = i + 1 == path.len();
        at = match (seg, at) {
            (Segment::Map { key }, Node::Table(t)) => {
                keys.push(Key::Field(key.clone()));
                if last {
                    return (keys, t.remove(key.as_str()).is_some());
                }
                match t.get_mut(key.as_str()) {
                    Some(v) => node(v),
                    None => return (keys, false),
                }
            }
            (Segment::Seq { index }, Node::Array(a, id)) => {
                let gone = removed.entry(id).or_default();
                let original = gone
                    .iter()
                    .fold(*index, |orig, g| if *g <= orig { orig + 1 } else { orig });
                keys.push(Key::Index(original));
                if last {
                    if *index >= a.len() {
                        return (keys, false);
                    }
                    let old = std::mem::replace(a, std::iter::empty().collect());
                    *a = old
                        .into_iter()
                        .enumerate()
                        .filter(|(j, _)| j != index)
                        .map(|(_, v)| v)
                        .collect();
                    gone.push(original);
                    gone.sort_unstable();
                    return (keys, true);
                }
                match a.get_mut(*index) {
                    Some(v) => node(v),
                    None => return (keys, false),
                }
            }
            (Segment::Enum { variant }, at) => {
                keys.push(Key::Field(variant.clone()));
                at
            }
            _ => return (keys, false),
        };
    }
    (keys, false)
}

/// The span of the value at `path` (original indices), or of the nearest
/// ancestor that exists.
fn span_of<'a>(root: &'a Spanned<DeTable<'a>>, path: &[Key]) -> Option<std::ops::Range<usize>> {
    let mut span = None;
    let mut table = Some(root.get_ref());
    let mut array: Option<&DeArray<'a>> = None;
    for k in path {
        let next = match (k, table, array) {
            (Key::Field(f), Some(t), _) => t.get(f.as_str()),
            (Key::Index(i), _, Some(a)) => a.get(*i),
            _ => None,
        };
        let Some(v) = next else { break };
        span = Some(v.span());
        (table, array) = match v.get_ref() {
            DeValue::Table(t) => (Some(t), None),
            DeValue::Array(a) => (None, Some(a)),
            _ => (None, None),
        };
    }
    span
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, col)
}
