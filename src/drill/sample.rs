//! Choosing what a drill restores: a uniform random sample of a snapshot's
//! regular files, drawn in one pass with bounded memory (reservoir sampling),
//! and the include patterns that make the restorer restore exactly those.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};
use crate::index::Index;
use crate::repository::Repository;
use crate::tree::{MAX_TREE_DEPTH, Node, NodeKind, Tree};

/// splitmix64: small, fast, and fixed forever, so that a `--seed` draws the same
/// sample in every cairn version (a library generator may change its stream).
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0), by multiply-shift: its bias, below
    /// n / 2^64, is far below anything a sample of files can show.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// Visits every node under `tree` (at `/`), parents first. A tree that can't
/// be read is passed to `unreadable` with its directory's path, and the walk
/// goes on beside it: a drill reports damage, it doesn't stop at it.
pub(super) fn walk_tolerant(
    repo: &Repository,
    index: &Index,
    tree: Tree,
    interrupt: &AtomicBool,
    visit: &mut dyn FnMut(&Path, &Node),
    unreadable: &mut dyn FnMut(&Path, String),
) -> Result<()> {
    let mut path = PathBuf::from("/");
    let mut stack: Vec<std::vec::IntoIter<Node>> = vec![tree.nodes.into_iter()];
    while let Some(level) = stack.last_mut() {
        if interrupt.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let Some(node) = level.next() else {
            stack.pop();
            if !stack.is_empty() {
                path.pop();
            }
            continue;
        };
        path.push(OsStr::from_bytes(&node.name));
        visit(&path, &node);
        let sub = match (node.kind, node.subtree) {
            (NodeKind::Dir, Some(sub)) => sub,
            _ => {
                path.pop();
                continue;
            }
        };
        if stack.len() >= MAX_TREE_DEPTH {
            unreadable(
                &path,
                format!("directories nest more than {MAX_TREE_DEPTH} levels deep; not entered"),
            );
            path.pop();
            continue;
        }
        match repo.load_tree(index, &sub) {
            Ok(t) => stack.push(t.nodes.into_iter()),
            Err(e) => {
                unreadable(&path, format!("its tree {sub} can't be read: {e}"));
                path.pop();
            }
        }
    }
    Ok(())
}

/// Algorithm R: after `seen` files, each of them is in the reservoir with
/// probability `want / seen`.
pub(super) struct Reservoir {
    want: u64,
    seen: u64,
    rng: Rng,
    pub(super) chosen: Vec<(PathBuf, Node)>,
}

impl Reservoir {
    pub(super) fn new(want: u64, seed: u64) -> Self {
        Self {
            want,
            seen: 0,
            rng: Rng::new(seed),
            chosen: Vec::new(),
        }
    }

    pub(super) fn offer(&mut self, path: &Path, node: &Node) {
        self.seen += 1;
        if (self.chosen.len() as u64) < self.want {
            self.chosen.push((path.to_path_buf(), node.clone()));
            return;
        }
        let j = self.rng.below(self.seen);
        if let Some(slot) = usize::try_from(j).ok().and_then(|j| self.chosen.get_mut(j)) {
            *slot = (path.to_path_buf(), node.clone());
        }
    }

    pub(super) fn seen(&self) -> u64 {
        self.seen
    }
}

/// An include pattern (see `archiver::Excludes`) matching exactly the path `p`
/// (absolute, as in the snapshot): glob metacharacters, the escape character and
/// surrounding white space (which the pattern reader trims) are bracketed or
/// escaped. A byte that is not UTF-8 can't be written in a pattern and becomes
/// `?`, which matches any one byte: at worst a sibling whose name differs only
/// there is restored too, and is simply not verified.
pub(super) fn exact_pattern(p: &Path) -> String {
    let mut out = String::with_capacity(p.as_os_str().len() + 8);
    for chunk in p.as_os_str().as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '?' | '*' | '[' | ']' | '{' | '}' => {
                    out.push('[');
                    out.push(c);
                    out.push(']');
                }
                '\\' => out.push_str("\\\\"),
                c if c.is_whitespace() => {
                    out.push('[');
                    out.push(c);
                    out.push(']');
                }
                c => out.push(c),
            }
        }
        for _ in chunk.invalid() {
            out.push('?');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archiver::Excludes;

    #[test]
    fn exact_patterns_match_only_their_path() {
        let tricky: [&[u8]; 7] = [
            b"/d/a*b",
            b"/d/[x]{y,z}?",
            b"/d/back\\slash",
            b"/d/ lead and trail ",
            b"/d/!not^a",
            b"/d/caf\xe9",
            b"/d/plain.txt",
        ];
        for raw in tricky {
            let p = Path::new(OsStr::from_bytes(raw));
            let inc = Excludes::includes(&[exact_pattern(p)]).unwrap();
            assert!(inc.is_excluded(p), "{p:?} matches its own pattern");
            for other in [
                b"/d/aXb".as_slice(),
                b"/d/x",
                b"/d/lead and trail",
                b"/d/plain_txt",
            ] {
                if other != raw {
                    assert!(
                        !inc.is_excluded(Path::new(OsStr::from_bytes(other))),
                        "{p:?} must not match {other:?}"
                    );
                }
            }
        }
    }

    /// Every file is about equally likely to be chosen, and a seed gives the
    /// same sample again.
    #[test]
    fn reservoir_is_uniform_and_seeded() {
        let node = crate::tree::tests::node(b"f", NodeKind::File);
        let mut counts = [0u32; 20];
        for seed in 0..2000 {
            let mut r = Reservoir::new(5, seed);
            for i in 0..20 {
                r.offer(Path::new(&format!("/{i}")), &node);
            }
            assert_eq!(r.chosen.len(), 5);
            for (p, _) in &r.chosen {
                let i: usize = p.to_str().unwrap()[1..].parse().unwrap();
                counts[i] += 1;
            }
        }
        // Expected 500 each.
        assert!(
            counts.iter().all(|&c| (400..600).contains(&c)),
            "{counts:?}"
        );
        let draw = |seed| {
            let mut r = Reservoir::new(3, seed);
            for i in 0..100 {
                r.offer(Path::new(&format!("/{i}")), &node);
            }
            r.chosen.into_iter().map(|(p, _)| p).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }
}
