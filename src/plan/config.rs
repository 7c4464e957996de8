//! The plan file as written: serde types that mirror its TOML, with the spans of
//! the values that later checks point at, and a reader that collects every
//! mistake serde finds instead of stopping at the first.
//!
//! Unknown keys are refused (`deny_unknown_fields`). serde stops at the first
//! error of a document, so [`parse`] removes the key that error points at and
//! deserializes again, until the rest is clean: each round reports one more
//! mistake, with its span.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::{Interval, Problem};
use crate::check::ReadData;
use crate::forget::Within;

/// A whole plan file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlan {
    #[serde(default)]
    pub repository: BTreeMap<Spanned<String>, Spanned<RawRepository>>,
    #[serde(default)]
    pub class: BTreeMap<Spanned<String>, Spanned<RawClass>>,
}

/// `[repository.NAME]`. The password sources are the CLI's flags: a password
/// file (or a key file made by `cairn key add --generate`, which is used the
/// same way) or a command that prints the password.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRepository {
    pub path: Option<Spanned<PathBuf>>,
    pub password_file: Option<Spanned<PathBuf>>,
    pub password_command: Option<Spanned<String>>,
}

/// `[class.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClass {
    pub paths: Option<Spanned<Vec<Spanned<PathBuf>>>>,
    pub command: Option<Spanned<String>>,
    pub stdin_filename: Option<Spanned<String>>,
    #[serde(default)]
    pub exclude: Vec<Spanned<String>>,
    pub every: Option<Spanned<Interval>>,
    pub keep: Option<Spanned<RawKeep>>,
    pub repository: Option<Spanned<String>>,
    #[serde(default)]
    pub copy_to: Vec<Spanned<String>>,
    pub check: Option<Spanned<RawCheck>>,
    pub drill: Option<Spanned<RawDrill>>,
    #[serde(default)]
    pub before: Vec<Spanned<String>>,
    #[serde(default)]
    pub after: Vec<Spanned<String>>,
    pub compression: Option<Spanned<i32>>,
    #[serde(default)]
    pub tags: Vec<Spanned<String>>,
}

/// `keep = {...}`: `forget`'s `--keep-*` options.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeep {
    #[serde(default)]
    pub last: u32,
    #[serde(default)]
    pub hourly: u32,
    #[serde(default)]
    pub daily: u32,
    #[serde(default)]
    pub weekly: u32,
    #[serde(default)]
    pub monthly: u32,
    #[serde(default)]
    pub yearly: u32,
    #[serde(default, deserialize_with = "within")]
    pub within: Option<Within>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `check = {...}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    pub every: Option<Spanned<Interval>>,
    #[serde(default, deserialize_with = "read_data")]
    pub read_data_subset: Option<ReadData>,
}

/// `drill = {...}`: how often, and how much of the newest snapshot to restore.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDrill {
    pub every: Option<Spanned<Interval>>,
    pub files: Option<Spanned<u32>>,
    pub percent: Option<Spanned<f64>>,
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Interval::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `forget --keep-within`'s durations, with months written `mo`: a bare `m`,
/// which `every` reads as minutes, is refused rather than read as months.
fn within<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Within>, D::Error> {
    let s = String::deserialize(d)?;
    let months = s.replace("mo", "M");
    if months.contains('m') {
        return Err(serde::de::Error::custom(format!(
            "keep.within: {s:?}: write months as `mo` (e.g. \"6mo\"); a bare `m` would be \
             minutes in `every` but months in `forget --keep-within`"
        )));
    }
    Within::parse(&months.replace('M', "m"))
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("keep.within: {e}")))
}

fn read_data<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ReadData>, D::Error> {
    let s = String::deserialize(d)?;
    ReadData::parse_subset(&s).map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "read_data_subset {s:?}: expected n/m (e.g. 2/7) or a percentage (e.g. 5%)"
        ))
    })
}

/// Rounds of "report, remove, retry" before giving up: a bound on the work a
/// file full of mistakes can cause.
const MAX_ROUNDS: usize = 200;

/// What [`parse`] made of a file: the parts that deserialized, and the keys
/// removed from sections after mistakes already reported (checks that would
/// miss them are skipped rather than report a second, misleading mistake).
/// Fields every section needs are `Option`s in the schema for the same reason:
/// a field dropped for a bad value must not take its whole section with it.
pub struct Parsed {
    pub plan: RawPlan,
    /// (`class` or `repository`, NAME) → the keys of that section that were
    /// removed; `*` when the whole section was.
    pub removed: BTreeMap<(String, String), BTreeSet<String>>,
}

impl Parsed {
    /// Whether `key` of section NAME (or all of it, `key` = `*`) was removed.
    pub fn lost(&self, section: &str, name: &str, key: &str) -> bool {
        self.removed
            .get(&(section.to_string(), name.to_string()))
            .is_some_and(|keys| keys.contains(key) || keys.contains("*"))
    }

    /// Whether any key of section NAME was removed.
    pub fn damaged(&self, section: &str, name: &str) -> bool {
        self.removed
            .contains_key(&(section.to_string(), name.to_string()))
    }
}

/// Parses `text`, pushing every syntax and schema mistake to `problems`. After
/// schema mistakes, what is left of the file is returned for the checks that
/// still make sense; after syntax errors, nothing.
pub fn parse(text: &str, problems: &mut Vec<Problem>) -> Option<Parsed> {
    let (root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        // What the parser recovered may be missing keys that are only mistyped:
        // checking it further would report mistakes that are not there.
        for e in syntax {
            problems.push(Problem::error_at(text, e.span(), e.message().to_string()));
        }
        return None;
    }
    let span = root.span();
    let mut root = Spanned::new(span.clone(), DeValue::Table(root.into_inner()));
    let mut removed: BTreeSet<String> = BTreeSet::new();
    let mut damaged: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for _ in 0..MAX_ROUNDS {
        let err = match RawPlan::deserialize(ValueDeserializer::from(root.clone())) {
            Ok(plan) => {
                return Some(Parsed {
                    plan,
                    removed: damaged,
                });
            }
            Err(e) => e,
        };
        let message = err.message().to_string();
        let at = err.span().unwrap_or(span.clone());
        // A field removed after an earlier mistake now reads as missing; that
        // was reported already.
        let echo = missing_field(&message).is_some_and(|f| removed.contains(f));
        if !echo {
            problems.push(Problem::error_at(text, Some(at.clone()), message));
        }
        let path = remove_at(&mut root, &at)?;
        if let [section, name, rest @ ..] = path.as_slice() {
            let key = rest.first().map_or("*", String::as_str);
            damaged
                .entry((section.clone(), name.clone()))
                .or_default()
                .insert(key.to_string());
        }
        removed.extend(path.last().cloned());
    }
    None
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// Removes the innermost key whose key or value span holds `at`; the path of
/// keys to it. Children are searched before their parent, whatever the parent's
/// span says: a table made by `[class.x]` headers has no one span covering its
/// keys.
fn remove_at(value: &mut Spanned<DeValue<'_>>, at: &Range<usize>) -> Option<Vec<String>> {
    let DeValue::Table(table) = value.get_mut() else {
        return None;
    };
    for (key, child) in table.iter_mut() {
        if let Some(mut inner) = remove_at(child, at) {
            inner.insert(0, key.get_ref().to_string());
            return Some(inner);
        }
    }
    let inside = |r: Range<usize>| !r.is_empty() && r.start <= at.start && at.end <= r.end;
    let hit = table
        .iter()
        .find(|(k, v)| inside(k.span()) || (!v.get_ref().is_table() && inside(v.span())))
        .or_else(|| table.iter().find(|(_, v)| inside(v.span())))
        .map(|(k, _)| k.clone())?;
    table.remove(&hit);
    Some(vec![hit.into_inner().into_owned()])
}
