//! The checks a plan file needs beyond its schema: references between sections,
//! password files, paths claimed by two classes, retention that keeps nothing,
//! intervals that make no sense. Every problem is collected; none stops the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use toml::Spanned;

use super::config::{Parsed, RawClass, RawRepository};
use super::{PasswordSource, Plan, Problem, RepositorySpec, Sources};
use crate::archiver::Excludes;

pub(super) struct Ctx<'a> {
    text: &'a str,
    base: &'a Path,
    pub(super) problems: &'a mut Vec<Problem>,
}

impl Ctx<'_> {
    pub(super) fn error(&mut self, span: Range<usize>, message: String) {
        self.problems
            .push(Problem::error_at(self.text, Some(span), message));
    }

    pub(super) fn warn(&mut self, span: Range<usize>, message: String) {
        self.problems
            .push(Problem::warning_at(self.text, Some(span), message));
    }

    /// Absolute, taken from the plan file's directory when relative, with `.`
    /// and `..` parts and trailing slashes gone (lexically: the paths may not
    /// exist on this machine).
    fn resolve(&self, p: &Path) -> PathBuf {
        let mut out = PathBuf::new();
        for c in self.base.join(p).components() {
            match c {
                Component::CurDir => {}
                Component::ParentDir => {
                    out.pop();
                }
                other => out.push(other),
            }
        }
        out
    }

    fn line(&self, span: &Range<usize>) -> usize {
        super::line_column(self.text, span.start).0
    }
}

/// A class or repository name: it goes into the `class=NAME` tag and into
/// file names later, so it is kept to letters, digits, `-`, `_` and `.`.
fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

pub fn validate(
    text: &str,
    file: &Path,
    base: &Path,
    parsed: Parsed,
    problems: &mut Vec<Problem>,
) -> Option<Plan> {
    let mut cx = Ctx {
        text,
        base,
        problems,
    };
    let plan = &parsed.plan;
    let mut repositories = Vec::new();
    for (name, raw) in in_file_order(&plan.repository) {
        let n = name.get_ref().as_str();
        if !name_ok(n) {
            cx.error(name.span(), bad_name("repository", n));
        }
        let lost = |key: &str| parsed.lost("repository", n, key);
        if let Some(r) = repository(&mut cx, n, name.span(), raw.get_ref(), &lost) {
            repositories.push(r);
        }
    }
    // Names of repositories that exist, even if their section has mistakes:
    // a class naming one of them is not a further mistake.
    let known: BTreeSet<&str> = plan
        .repository
        .keys()
        .map(|k| k.get_ref().as_str())
        .chain(
            parsed
                .removed
                .keys()
                .filter(|(s, _)| s == "repository")
                .map(|(_, n)| n.as_str()),
        )
        .collect();

    if plan.class.is_empty() && !parsed.removed.keys().any(|(s, _)| s == "class") {
        cx.error(
            0..0,
            "the plan has no [class.NAME] section: nothing would be backed up".into(),
        );
    }
    let mut claimed: Vec<(PathBuf, String, Range<usize>)> = Vec::new();
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut classes = Vec::new();
    for (name, raw) in in_file_order(&plan.class) {
        let n = name.get_ref().as_str();
        if !name_ok(n) {
            cx.error(name.span(), bad_name("class", n));
        }
        let raw = raw.get_ref();
        let lost = |key: &str| parsed.lost("class", n, key);
        used.extend(raw.repository.iter().map(|r| r.get_ref().clone()));
        used.extend(raw.copy_to.iter().map(|c| c.get_ref().clone()));
        references(&mut cx, name, raw, &known, &plan.repository, &lost);
        let sources = sources(&mut cx, name, raw, &lost);
        if let Some(sources) = &sources {
            claim(&mut cx, n, sources, raw, &mut claimed);
        }
        if let Some(c) = super::class::class(&mut cx, name, raw, sources, &lost) {
            classes.push(c);
        }
    }
    for name in plan.repository.keys() {
        if !used.contains(name.get_ref()) && parsed.removed.keys().all(|(s, _)| s != "class") {
            cx.warn(
                name.span(),
                format!("repository {:?} is not used by any class", name.get_ref()),
            );
        }
    }
    Some(Plan {
        file: file.to_path_buf(),
        repositories,
        classes,
    })
}

/// A section's entries in the order the file has them (a map sorts them by
/// name): "already backed up by" is said of the later one.
fn in_file_order<K: Ord, V>(map: &BTreeMap<Spanned<K>, V>) -> Vec<(&Spanned<K>, &V)> {
    let mut v: Vec<_> = map.iter().collect();
    v.sort_by_key(|(k, _)| k.span().start);
    v
}

fn bad_name(what: &str, name: &str) -> String {
    format!(
        "{what} name {name:?}: use letters, digits, '-', '_' and '.' only (not first), \
         since it becomes part of tags and file names"
    )
}

fn repository(
    cx: &mut Ctx<'_>,
    name: &str,
    at: Range<usize>,
    raw: &RawRepository,
    lost: &dyn Fn(&str) -> bool,
) -> Option<RepositorySpec> {
    let path = match &raw.path {
        Some(p) => Some(repository_path(cx, name, p)),
        None if lost("path") => None,
        None => {
            cx.error(at.clone(), format!("repository {name:?} has no path"));
            None
        }
    };
    let password = match (&raw.password_file, &raw.password_command) {
        (Some(_), Some(c)) => {
            cx.error(
                c.span(),
                format!(
                    "repository {name:?} has both password_file and password_command; keep one"
                ),
            );
            None
        }
        (None, None) if lost("password_file") || lost("password_command") => None,
        (None, None) => {
            cx.error(
                at,
                format!(
                    "repository {name:?} has no password_file or password_command: a plan \
                     runs unattended, with no terminal to ask on"
                ),
            );
            None
        }
        (Some(f), None) => password_file(cx, name, f).map(PasswordSource::File),
        (None, Some(c)) if c.get_ref().trim().is_empty() => {
            cx.error(
                c.span(),
                format!("repository {name:?}: password_command is empty"),
            );
            None
        }
        (None, Some(c)) => Some(PasswordSource::Command(c.get_ref().clone())),
    };
    Some(RepositorySpec {
        name: name.to_string(),
        path: path?,
        password: password?,
    })
}

/// The repository's path, resolved; a warning when no repository is there yet
/// (a NAS may be unmounted while the plan is written).
fn repository_path(cx: &mut Ctx<'_>, name: &str, p: &Spanned<PathBuf>) -> PathBuf {
    // Object storage is taken as written, and not reached while validating.
    if crate::backend::is_remote(p.get_ref()) {
        let text = p.get_ref().to_string_lossy();
        if let Err(e) = crate::backend::S3Location::parse(&text) {
            cx.error(p.span(), format!("repository {name:?}: {e}"));
        }
        return p.get_ref().clone();
    }
    let path = cx.resolve(p.get_ref());
    if !path.join("config").is_file() {
        let why = if path.exists() {
            "is not a cairn repository yet (no `config` file)"
        } else {
            "does not exist (or is not mounted)"
        };
        cx.warn(
            p.span(),
            format!(
                "repository {name:?}: {} {why}; create it with `cairn init -r {}`",
                path.display(),
                path.display()
            ),
        );
    }
    path
}

/// The file must open for reading now (`plan run` reads it unattended); a
/// regular file others can read is a warning, as for `--password-file`. Only
/// regular files are opened: opening a FIFO would wait for a writer.
fn password_file(cx: &mut Ctx<'_>, name: &str, f: &Spanned<PathBuf>) -> Option<PathBuf> {
    let path = cx.resolve(f.get_ref());
    let unreadable = |e: std::io::Error| {
        format!(
            "repository {name:?}: password file {} can't be read: {e}",
            path.display()
        )
    };
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) => {
            cx.error(f.span(), unreadable(e));
            return None;
        }
    };
    if meta.is_dir() {
        cx.error(
            f.span(),
            format!(
                "repository {name:?}: password file {} is a directory",
                path.display()
            ),
        );
        return None;
    }
    if !meta.is_file() {
        return Some(path);
    }
    if let Err(e) = std::fs::File::open(&path) {
        cx.error(f.span(), unreadable(e));
        return None;
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o044 != 0 {
        cx.warn(
            f.span(),
            format!(
                "repository {name:?}: password file {p} is readable by other users (mode \
                 {mode:04o}); anyone who can read it can open the repository: `chmod 600 {p}`",
                p = path.display()
            ),
        );
    }
    Some(path)
}

/// `repository` and `copy_to` name defined repositories, and no copy goes
/// back into the class's own repository (by name or by path).
fn references(
    cx: &mut Ctx<'_>,
    name: &Spanned<String>,
    raw: &RawClass,
    known: &BTreeSet<&str>,
    defined: &BTreeMap<Spanned<String>, Spanned<RawRepository>>,
    lost: &dyn Fn(&str) -> bool,
) {
    let class = name.get_ref();
    let names = if known.is_empty() {
        "none".to_string()
    } else {
        known.iter().copied().collect::<Vec<_>>().join(", ")
    };
    let path_of = |n: &str| {
        defined
            .iter()
            .find(|(k, _)| k.get_ref() == n)
            .and_then(|(_, r)| r.get_ref().path.as_ref())
            .map(|p| cx.resolve(p.get_ref()))
    };
    let mut out = Vec::new();
    let main = raw.repository.as_ref().map(|r| r.get_ref().as_str());
    match &raw.repository {
        None if !lost("repository") => out.push((
            name.span(),
            format!("class {class:?} has no repository = NAME (defined: {names})"),
        )),
        Some(r) if !known.contains(r.get_ref().as_str()) => out.push((
            r.span(),
            format!(
                "class {class:?}: no repository named {:?} (defined: {names})",
                r.get_ref()
            ),
        )),
        _ => {}
    }
    let main_path = main.and_then(path_of);
    let mut seen = BTreeSet::new();
    for c in &raw.copy_to {
        let n = c.get_ref();
        let msg = if !known.contains(n.as_str()) {
            format!("class {class:?}: copy_to names no repository {n:?} (defined: {names})")
        } else if Some(n.as_str()) == main {
            format!("class {class:?} copies to its own repository {n:?}")
        } else if main_path.is_some() && path_of(n) == main_path {
            format!(
                "class {class:?}: copy_to repository {n:?} is at the same path as its \
                 repository {:?}; a copy must go to another place",
                main.unwrap_or_default()
            )
        } else if !seen.insert(n.clone()) {
            format!("class {class:?}: copy_to names {n:?} twice")
        } else {
            continue;
        };
        out.push((c.span(), msg));
    }
    for (span, msg) in out {
        cx.error(span, msg);
    }
}

fn sources(
    cx: &mut Ctx<'_>,
    name: &Spanned<String>,
    raw: &RawClass,
    lost: &dyn Fn(&str) -> bool,
) -> Option<Sources> {
    let class = name.get_ref();
    let paths = raw.paths.as_ref().filter(|p| !p.get_ref().is_empty());
    match (paths, &raw.command) {
        (Some(p), Some(c)) => {
            cx.error(
                c.span(),
                format!(
                    "class {class:?} has both paths (line {}) and command; a class backs up \
                     one or the other",
                    cx.line(&p.span())
                ),
            );
            None
        }
        (None, None) if lost("paths") || lost("command") => None,
        (None, None) => {
            let at = raw.paths.as_ref().map_or(name.span(), |p| p.span());
            cx.error(
                at,
                format!("class {class:?} has neither paths nor command: nothing to back up"),
            );
            None
        }
        (Some(p), None) => {
            if let Some(s) = &raw.stdin_filename {
                cx.error(
                    s.span(),
                    format!("class {class:?}: stdin_filename goes with command, not paths"),
                );
            }
            for e in &raw.exclude {
                if let Err(err) = Excludes::new(std::slice::from_ref(e.get_ref())) {
                    cx.error(e.span(), format!("class {class:?}: {err}"));
                }
            }
            let list = p
                .get_ref()
                .iter()
                .map(|p| cx.resolve(p.get_ref()))
                .collect();
            Some(Sources::Paths(list))
        }
        (None, Some(c)) => {
            if let Some(e) = raw.exclude.first() {
                cx.error(
                    e.span(),
                    format!("class {class:?}: exclude applies to paths, not to a command's output"),
                );
            }
            if c.get_ref().trim().is_empty() {
                cx.error(c.span(), format!("class {class:?}: command is empty"));
                return None;
            }
            let file = match &raw.stdin_filename {
                Some(s) => {
                    let n = s.get_ref();
                    if n.is_empty() || n.contains('/') || n == "." || n == ".." {
                        cx.error(
                            s.span(),
                            format!(
                                "class {class:?}: stdin_filename {n:?} must be a file name, \
                                 without '/'"
                            ),
                        );
                        return None;
                    }
                    n.clone()
                }
                None => class.clone(),
            };
            Some(Sources::Command {
                command: c.get_ref().clone(),
                stdin_filename: file,
            })
        }
    }
}

/// Records the class's paths; a path already given (here or by another class)
/// is a mistake, a path inside another class's path a warning (its files
/// would be backed up twice).
fn claim(
    cx: &mut Ctx<'_>,
    class: &str,
    sources: &Sources,
    raw: &RawClass,
    claimed: &mut Vec<(PathBuf, String, Range<usize>)>,
) {
    let (Sources::Paths(list), Some(spans)) = (sources, &raw.paths) else {
        return;
    };
    for (path, raw_path) in list.iter().zip(spans.get_ref()) {
        let span = raw_path.span();
        if !path.exists() {
            cx.warn(
                span.clone(),
                format!("class {class:?}: {} does not exist (yet)", path.display()),
            );
        }
        let mut msg = None;
        for (other, owner, at) in claimed.iter() {
            let line = cx.line(at);
            let whose = if owner == class {
                "this class".to_string()
            } else {
                format!("class {owner:?}")
            };
            if other == path {
                msg = Some((
                    true,
                    format!(
                        "class {class:?}: {} is already backed up by {whose} (line {line})",
                        path.display()
                    ),
                ));
                break;
            }
            if owner != class && (path.starts_with(other) || other.starts_with(path)) {
                msg = Some((
                    false,
                    format!(
                        "class {class:?}: {} overlaps {} of class {owner:?} (line {line}); \
                         the files they share are backed up by both classes",
                        path.display(),
                        other.display()
                    ),
                ));
            }
        }
        match msg {
            Some((true, m)) => cx.error(span, m),
            Some((false, m)) => {
                cx.warn(span.clone(), m);
                claimed.push((path.clone(), class.to_string(), span));
            }
            None => claimed.push((path.clone(), class.to_string(), span)),
        }
    }
}
