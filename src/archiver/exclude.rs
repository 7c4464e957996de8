//! Exclude rules, restic-style: a pattern without `/` matches an entry's name at any
//! depth; a pattern with `/` matches the absolute path (anchored when it starts with
//! `/`, at any depth otherwise). `*` does not cross `/`; `**` does.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, IoContext, Result};

#[derive(Clone, Debug)]
pub struct Excludes {
    names: GlobSet,
    paths: GlobSet,
    patterns: Vec<String>,
    /// For each glob in `names` and `paths`, its index in `patterns`.
    name_pattern: Vec<usize>,
    path_pattern: Vec<usize>,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Self> {
        Self::named(patterns, "exclude")
    }

    /// The same matcher for `--include` patterns, whose errors say so.
    pub fn includes(patterns: &[String]) -> Result<Self> {
        Self::named(patterns, "include")
    }

    fn named(patterns: &[String], what: &str) -> Result<Self> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        let mut kept = Vec::new();
        let (mut name_pattern, mut path_pattern) = (Vec::new(), Vec::new());
        for raw in patterns {
            let p = raw.trim();
            if p.is_empty() {
                continue;
            }
            let p = p.strip_suffix('/').unwrap_or(p);
            let (set, pat) = if p.contains('/') {
                let anchored = if p.starts_with('/') {
                    p.to_string()
                } else {
                    format!("**/{p}")
                };
                path_pattern.push(kept.len());
                (&mut paths, anchored)
            } else {
                name_pattern.push(kept.len());
                (&mut names, p.to_string())
            };
            let glob = GlobBuilder::new(&pat)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::invalid(format!("{what} pattern {raw:?}: {e}")))?;
            set.add(glob);
            kept.push(p.to_string());
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::invalid(format!("{what} patterns: {e}")))
        };
        Ok(Self {
            names: build(names)?,
            paths: build(paths)?,
            patterns: kept,
            name_pattern,
            path_pattern,
        })
    }

    /// Reads patterns from a file: one per line, `#` starts a comment line.
    pub fn read_file(path: &Path) -> Result<Vec<String>> {
        let text = std::fs::read_to_string(path).at(path)?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect())
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    pub fn is_excluded(&self, path: &Path) -> bool {
        let by_name = path.file_name().is_some_and(|n| {
            self.names
                .is_match(Path::new(std::ffi::OsStr::from_bytes(n.as_bytes())))
        });
        by_name || self.paths.is_match(path)
    }

    /// Like [`Excludes::is_excluded`], and also sets `hits[i]` for every pattern
    /// `i` (in the order of [`Excludes::patterns`]) that matches `path`, so that
    /// a caller can tell which patterns never matched anything.
    pub fn mark_matches(&self, path: &Path, hits: &mut [bool]) -> bool {
        let mut any = false;
        let mut mark = |globs: Vec<usize>, to_pattern: &[usize]| {
            for g in globs {
                any = true;
                if let Some(h) = to_pattern.get(g).and_then(|&p| hits.get_mut(p)) {
                    *h = true;
                }
            }
        };
        if let Some(n) = path.file_name() {
            mark(self.names.matches(Path::new(n)), &self.name_pattern);
        }
        mark(self.paths.matches(path), &self.path_pattern);
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_and_path_patterns() {
        let e = Excludes::new(&[
            "*.tmp".into(),
            "/data/cache".into(),
            "logs/*.gz".into(),
            "".into(),
        ])
        .unwrap();
        assert!(e.is_excluded(Path::new("/x/y/a.tmp")));
        assert!(!e.is_excluded(Path::new("/x/y/a.tmpx")));
        assert!(e.is_excluded(Path::new("/data/cache")));
        assert!(!e.is_excluded(Path::new("/other/data/cache")));
        assert!(e.is_excluded(Path::new("/srv/logs/a.gz")));
        assert!(!e.is_excluded(Path::new("/srv/logs/sub/a.gz")));
        assert!(Excludes::new(&["a[".into()]).is_err());
    }

    #[test]
    fn matches_are_marked_per_pattern() {
        let e = Excludes::new(&["*.tmp".into(), "/data/cache".into(), "*.log".into()]).unwrap();
        let mut hits = vec![false; e.patterns().len()];
        assert!(e.mark_matches(Path::new("/data/cache"), &mut hits));
        assert!(e.mark_matches(Path::new("/x/a.tmp"), &mut hits));
        assert!(!e.mark_matches(Path::new("/x/a.txt"), &mut hits));
        assert_eq!(hits, [true, true, false]);
    }
}
