//! Planning: the depth-first walk over the snapshot's trees. Directories, symlinks
//! and special files are made as they are met; files and hard links go into the
//! current batch, which is written whenever it is full, and a directory's
//! metadata is queued once the walk has left it. What is held at any time is one
//! batch and one frame per directory level, whatever the number of files.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::batch::Batch;
use super::{State, target};
use crate::archiver::Excludes;
use crate::error::{Error, Result};
use crate::tree::{Node, NodeKind, Tree};

/// The longest path the system can create, terminating NUL included.
const PATH_LIMIT: usize = libc::PATH_MAX as usize;

/// Include and exclude patterns, and which of them have matched an entry.
pub(super) struct Filters {
    includes: Excludes,
    excludes: Excludes,
    included_hits: Vec<bool>,
    excluded_hits: Vec<bool>,
}

impl Filters {
    pub(super) fn new(includes: &[String], excludes: &[String]) -> Result<Self> {
        let (includes, excludes) = (Excludes::includes(includes)?, Excludes::new(excludes)?);
        Ok(Self {
            included_hits: vec![false; includes.patterns().len()],
            excluded_hits: vec![false; excludes.patterns().len()],
            includes,
            excludes,
        })
    }

    fn all_included(&self) -> bool {
        self.includes.patterns().is_empty()
    }

    pub(super) fn excluded(&mut self, p: &Path) -> bool {
        self.excludes.mark_matches(p, &mut self.excluded_hits)
    }

    /// Whether `p` matches an include pattern (every path does when none is given).
    fn included(&mut self, p: &Path) -> bool {
        self.all_included() || self.includes.mark_matches(p, &mut self.included_hits)
    }

    /// Whether an entry at `p` (inside a directory restored whole when
    /// `inherited`) is one these filters let through: what `--delete` may remove
    /// when the snapshot lacks it.
    pub(super) fn lets_through(&mut self, p: &Path, inherited: bool) -> bool {
        !self.excluded(p) && (self.included(p) || inherited)
    }

    /// A warning for every pattern that matched no entry under `at` (nor, with
    /// `--delete`, any entry of the target).
    pub(super) fn warn_unmatched(&self, state: &State, at: &Path) {
        let sets = [
            ("--include", &self.includes, &self.included_hits),
            ("--exclude", &self.excludes, &self.excluded_hits),
        ];
        for (flag, set, hits) in sets {
            for (pattern, _) in set.patterns().iter().zip(hits).filter(|(_, hit)| !**hit) {
                state.warning(format!(
                    "{flag} {pattern:?} matched nothing in {}",
                    at.display()
                ));
            }
        }
    }
}

/// A directory on the walk's current path.
struct Frame {
    /// Its path in the snapshot.
    path: PathBuf,
    dest: PathBuf,
    /// `None` for the target itself, whose metadata is not the snapshot's to set.
    node: Option<Node>,
    /// Everything inside is restored: it or an ancestor matched the includes.
    included: bool,
    /// Is a real directory in the target now (in a dry run: would be).
    made: bool,
    /// Made by this restore: it holds nothing to compare with or delete.
    fresh: bool,
    /// Gets the snapshot's metadata once the walk leaves it.
    set_metadata: bool,
    /// Could not be made, or a kept non-directory is in its place: nothing under
    /// it is restored (that was reported once).
    failed: bool,
    /// The names the snapshot has in it, for `delete`.
    names: HashSet<Vec<u8>>,
}

pub(super) struct Walker<'s, 'a> {
    state: &'s State<'a>,
    filters: Filters,
    /// Directories from the target (first) down to the current one.
    stack: Vec<Frame>,
    /// How many frames from the bottom are made; the others are directories an
    /// include filter has walked into without finding anything to restore yet.
    made: usize,
    /// The target is the restored directory (not the place of one restored
    /// entry), so `delete` applies to it.
    target_restored: bool,
    /// The target, as [`super::prepare_target`] resolved it.
    target: PathBuf,
    batch: Batch,
}

impl<'s, 'a> Walker<'s, 'a> {
    pub(super) fn new(
        state: &'s State<'a>,
        filters: Filters,
        target: PathBuf,
        fresh: bool,
    ) -> Self {
        let root = Frame {
            path: PathBuf::from("/"),
            dest: target.clone(),
            node: None,
            included: filters.all_included(),
            made: true,
            fresh,
            set_metadata: false,
            failed: false,
            names: HashSet::new(),
        };
        Self {
            state,
            filters,
            stack: vec![root],
            made: 1,
            target_restored: false,
            target,
            batch: Batch::default(),
        }
    }

    /// Restores the contents of the directory at `path` whose tree is `tree`.
    pub(super) fn walk(&mut self, path: &Path, tree: &Tree) -> Result<()> {
        if let Some(root) = self.stack.first_mut() {
            root.path = path.to_path_buf();
        }
        self.target_restored = true;
        let state = self.state;
        crate::walk::walk(state.repo, state.index, tree, path, &mut |p, node| {
            self.visit(p, node)
        })
    }

    /// Restores the one entry `node` at `path` into the target.
    pub(super) fn single(&mut self, path: &Path, node: &Node) -> Result<()> {
        if let Some(root) = self.stack.first_mut() {
            root.path = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        }
        self.visit(path, node)?;
        Ok(())
    }

    /// Closes the directories still open, writes the last batch, and hands back
    /// the filters with what they matched.
    pub(super) fn finish(mut self) -> Result<Filters> {
        while let Some(frame) = self.stack.pop() {
            self.close(frame)?;
        }
        self.state.progress.set_totals_final();
        self.batch.flush(self.state)?;
        Ok(self.filters)
    }

    /// One node of the walk (parents before children); returns whether to
    /// descend into it.
    fn visit(&mut self, p: &Path, node: &Node) -> Result<bool> {
        if self.state.interrupted() {
            return Err(Error::Interrupted);
        }
        // Nodes arrive parents first: close the directories the walk has left.
        while self.stack.len() > 1 && self.stack.last().is_some_and(|f| !p.starts_with(&f.path)) {
            if let Some(frame) = self.stack.pop() {
                self.made = self.made.min(self.stack.len());
                self.close(frame)?;
            }
        }
        let Some(parent) = self.stack.last_mut() else {
            return Ok(false);
        };
        if self.state.opts.delete {
            parent.names.insert(node.name.clone());
        }
        let inherited = parent.included;
        let dest = parent.dest.join(OsStr::from_bytes(&node.name));
        if self.filters.excluded(p) {
            return Ok(false);
        }
        let included = self.filters.included(p) || inherited;
        // A directory above that could not be made: reported once, when it failed.
        if self.stack.get(self.made).is_some_and(|f| f.failed) {
            return Ok(false);
        }
        if dest.as_os_str().len() >= PATH_LIMIT {
            // Nothing at or below it can be created: one error, not one per
            // entry, and no paths that grow with a forged tree's depth.
            let shown: String = dest.to_string_lossy().chars().take(200).collect();
            self.state.error(format!(
                "{shown}…: not restored, nor anything under it: the path is longer \
                 than the {PATH_LIMIT} bytes the system allows"
            ));
            return Ok(false);
        }
        if node.kind == NodeKind::Dir {
            self.stack.push(Frame {
                path: p.to_path_buf(),
                dest,
                node: Some(node.clone()),
                included,
                made: false,
                fresh: false,
                set_metadata: false,
                failed: false,
                names: HashSet::new(),
            });
            // Not included: walked into to look for included entries, and made
            // only when one turns up.
            return Ok(!included || self.make_frames());
        }
        if included && self.make_frames() {
            let fresh = self.stack.last().is_some_and(|f| f.fresh);
            if node.kind == NodeKind::File {
                self.batch.add_file(dest, node, fresh);
            } else if target::make_special(self.state, &dest, node, fresh) {
                self.batch.meta.push((dest, node.clone()));
            }
            if self.batch.is_full() {
                self.batch.flush(self.state)?;
            }
        }
        Ok(false)
    }

    /// Makes the directories on the current path that are not made yet: those
    /// an include filter walked into before finding something to restore in
    /// them. They are restored like any other directory, metadata included.
    fn make_frames(&mut self) -> bool {
        while self.made < self.stack.len() {
            let i = self.made;
            let parent_fresh = i > 0 && self.stack.get(i - 1).is_some_and(|f| f.fresh);
            let Some(frame) = self.stack.get_mut(i) else {
                return false;
            };
            if frame.failed {
                return false;
            }
            let Some(node) = frame.node.as_ref() else {
                return false;
            };
            match target::make_dir(self.state, &frame.dest, node, parent_fresh) {
                Some(made) => {
                    frame.made = true;
                    frame.fresh = made.fresh;
                    frame.set_metadata = made.set_metadata;
                    self.made += 1;
                }
                None => {
                    frame.failed = true;
                    return false;
                }
            }
        }
        self.stack.last().is_some_and(|f| !f.failed)
    }

    /// The walk has left `frame`: remove what the snapshot lacks in it, and queue
    /// its metadata, which nothing written later in the walk can disturb.
    fn close(&mut self, frame: Frame) -> Result<()> {
        if !frame.made || frame.failed {
            return Ok(());
        }
        let restored = frame.node.is_some() || self.target_restored;
        if self.state.opts.delete && restored && !frame.fresh {
            target::delete_extras(
                self.state,
                &mut self.filters,
                &self.target,
                (&frame.path, &frame.dest),
                &frame.names,
                frame.included,
            );
        }
        if let (Some(node), true) = (frame.node, frame.set_metadata) {
            self.batch.dirs.push((frame.dest, node));
            if self.batch.is_full() {
                self.batch.flush(self.state)?;
            }
        }
        Ok(())
    }
}
