//! The directories `cairn mount` makes up above the snapshots' trees:
//! `snapshots/<time>`, `ids/<short id>`, `hosts/<host>/<time>`,
//! `tags/<tag>/<time>`, and `latest` links (at the top and in each host's and
//! tag's directory). Built once, when mounting, from the snapshots the filters
//! chose; inode numbers 1 (the root) to [`Layout::len`].

use std::collections::{BTreeMap, HashMap};

use crate::id::SnapshotId;
use crate::snapshot::Snapshot;
use crate::tree::Timestamp;

/// The root directory's inode number (FUSE's).
pub const ROOT: u64 = 1;

/// One made-up entry.
pub enum VNode {
    /// A directory of made-up entries: (name, inode), in listing order.
    Dir(Vec<(Vec<u8>, u64)>),
    /// A symbolic link to a relative path.
    Link(Vec<u8>),
    /// A snapshot's root directory: its tree, below, comes from the repository.
    Snapshot(usize),
}

pub struct Entry {
    pub node: VNode,
    pub parent: u64,
    /// Path from the mount's root, for messages.
    pub path: String,
}

pub struct Layout {
    /// Entry of inode `i` at `i - 1`.
    entries: Vec<Entry>,
    /// The mounted snapshots, oldest first, with their directory names.
    pub snapshots: Vec<Mounted>,
    /// The newest snapshot's time: the made-up directories' times.
    pub time: Timestamp,
}

pub struct Mounted {
    pub id: SnapshotId,
    pub snapshot: Snapshot,
    /// Its directory's name under `snapshots/` and in its host's and tags'.
    pub name: String,
    pub time: Timestamp,
}

impl Layout {
    /// `snapshots` oldest first (as the repository lists them).
    pub fn new(snapshots: Vec<(SnapshotId, Snapshot)>) -> Layout {
        let snapshots = name_snapshots(snapshots);
        let mut b = Builder {
            entries: vec![Entry {
                node: VNode::Dir(Vec::new()),
                parent: ROOT,
                path: String::new(),
            }],
        };
        let all: Vec<usize> = (0..snapshots.len()).collect();
        let by_time = b.dir(ROOT, "snapshots");
        b.snapshot_dirs(by_time, &snapshots, &all);
        let ids = b.dir(ROOT, "ids");
        for (i, name) in id_names(&snapshots).into_iter().enumerate() {
            b.add(ids, &name, VNode::Snapshot(i));
        }
        for (top, key) in [
            (
                "hosts",
                (|s: &Snapshot| vec![s.hostname.clone()]) as fn(&Snapshot) -> Vec<String>,
            ),
            ("tags", |s: &Snapshot| s.tags.clone()),
        ] {
            let dir = b.dir(ROOT, top);
            let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
            for (i, m) in snapshots.iter().enumerate() {
                for k in key(&m.snapshot) {
                    let list = groups.entry(k).or_default();
                    if !list.contains(&i) {
                        list.push(i);
                    }
                }
            }
            for (group, members) in groups {
                let g = b.dir(dir, &escape(&group));
                b.snapshot_dirs(g, &snapshots, &members);
            }
        }
        if let Some(newest) = snapshots.last() {
            let target = format!("snapshots/{}", newest.name);
            b.add(ROOT, "latest", VNode::Link(target.into_bytes()));
        }
        Layout {
            entries: b.entries,
            time: snapshots.last().map(|m| m.time).unwrap_or_default(),
            snapshots,
        }
    }

    pub fn get(&self, ino: u64) -> Option<&Entry> {
        let i = usize::try_from(ino.checked_sub(1)?).ok()?;
        self.entries.get(i)
    }

    /// Made-up inodes: 1 to this.
    pub fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

struct Builder {
    entries: Vec<Entry>,
}

impl Builder {
    fn add(&mut self, parent: u64, name: &str, node: VNode) -> u64 {
        let ino = self.entries.len() as u64 + 1;
        let parent_path = self
            .entries
            .get((parent - 1) as usize)
            .map(|e| e.path.clone())
            .unwrap_or_default();
        let path = if parent_path.is_empty() {
            name.to_string()
        } else {
            format!("{parent_path}/{name}")
        };
        self.entries.push(Entry { node, parent, path });
        if let Some(Entry {
            node: VNode::Dir(list),
            ..
        }) = self.entries.get_mut((parent - 1) as usize)
        {
            list.push((name.as_bytes().to_vec(), ino));
        }
        ino
    }

    fn dir(&mut self, parent: u64, name: &str) -> u64 {
        self.add(parent, name, VNode::Dir(Vec::new()))
    }

    /// One directory per snapshot of `members` (oldest first) in `dir`, and a
    /// `latest` link to the newest.
    fn snapshot_dirs(&mut self, dir: u64, snapshots: &[Mounted], members: &[usize]) {
        for &i in members {
            if let Some(m) = snapshots.get(i) {
                self.add(dir, &m.name, VNode::Snapshot(i));
            }
        }
        if let Some(m) = members.last().and_then(|&i| snapshots.get(i)) {
            self.add(dir, "latest", VNode::Link(m.name.clone().into_bytes()));
        }
    }
}

/// Each snapshot's directory name: its time in local time to the second
/// (`2026-11-30T02:22:45`), with `-1`, `-2`... after the first of several in
/// the same second, in the order given. A time that doesn't parse is shown
/// escaped as it is stored.
fn name_snapshots(snapshots: Vec<(SnapshotId, Snapshot)>) -> Vec<Mounted> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    snapshots
        .into_iter()
        .map(|(id, snapshot)| {
            let parsed = snapshot.time_parsed();
            let base = match parsed {
                Some(t) => t
                    .with_timezone(&chrono::Local)
                    .format("%Y-%m-%dT%H:%M:%S")
                    .to_string(),
                None => escape(&snapshot.time),
            };
            let n = seen.entry(base.clone()).or_insert(0);
            let name = if *n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            *n += 1;
            let time = parsed
                .map(|t| Timestamp(t.timestamp(), t.timestamp_subsec_nanos()))
                .unwrap_or_default();
            Mounted {
                id,
                snapshot,
                name,
                time,
            }
        })
        .collect()
}

/// Names under `ids/`: the short id, or the whole id for snapshots whose
/// short ids are the same.
fn id_names(snapshots: &[Mounted]) -> Vec<String> {
    let mut count: HashMap<String, usize> = HashMap::new();
    for m in snapshots {
        *count.entry(m.id.short()).or_insert(0) += 1;
    }
    snapshots
        .iter()
        .map(|m| {
            let short = m.id.short();
            if count.get(&short).copied().unwrap_or(0) > 1 {
                m.id.to_hex()
            } else {
                short
            }
        })
        .collect()
}

/// A host name or tag (any text, from the repository) as a directory name:
/// `%`, `/` and NUL become `%25`, `%2F`, `%00`; an empty name is `%`, and `.`
/// and `..` start with `%2E`. Different texts give different names.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            '\0' => out.push_str("%00"),
            c => out.push(c),
        }
    }
    match out.as_str() {
        "" => "%".into(),
        "." => "%2E".into(),
        ".." => "%2E.".into(),
        _ => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::BlobId;

    fn snap(time: &str, host: &str, tags: &[&str]) -> Snapshot {
        Snapshot {
            time: time.into(),
            hostname: host.into(),
            username: "u".into(),
            uid: 0,
            gid: 0,
            paths: vec!["/d".into()],
            tags: tags.iter().map(|t| t.to_string()).collect(),
            tree: BlobId([0; 32]),
            parent: None,
            original: None,
            replaces: None,
            excludes: vec![],
            program_version: String::new(),
            summary: Default::default(),
            errors: vec![],
            warnings: vec![],
        }
    }

    fn lookup<'a>(l: &'a Layout, path: &str) -> &'a Entry {
        let mut ino = ROOT;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let Some(Entry {
                node: VNode::Dir(list),
                ..
            }) = l.get(ino)
            else {
                panic!("{path}: not a directory before {part}");
            };
            ino = list
                .iter()
                .find(|(n, _)| n == part.as_bytes())
                .unwrap_or_else(|| panic!("{path}: no {part}"))
                .1;
        }
        l.get(ino).unwrap()
    }

    fn names(l: &Layout, path: &str) -> Vec<String> {
        match &lookup(l, path).node {
            VNode::Dir(list) => list
                .iter()
                .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
                .collect(),
            _ => panic!("{path} is not a directory"),
        }
    }

    #[test]
    fn same_second_names_are_unique_and_groups_link_their_latest() {
        // Nanoseconds apart: the same second, so -1 and -2 follow.
        let t = |n: u32| {
            chrono::DateTime::from_timestamp(1_800_000_000, n)
                .unwrap()
                .with_timezone(&chrono::Local)
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, false)
        };
        let list = vec![
            (SnapshotId([1; 32]), snap(&t(1), "a", &["x"])),
            (SnapshotId([2; 32]), snap(&t(2), "b/c", &["x", "y"])),
            (SnapshotId([3; 32]), snap(&t(3), "a", &[])),
        ];
        let l = Layout::new(list);
        let base = l.snapshots[0].name.clone();
        assert_eq!(
            names(&l, "snapshots"),
            [
                base.clone(),
                format!("{base}-1"),
                format!("{base}-2"),
                "latest".into()
            ]
        );
        assert_eq!(
            names(&l, ""),
            ["snapshots", "ids", "hosts", "tags", "latest"]
        );
        assert_eq!(names(&l, "ids"), ["01010101", "02020202", "03030303"]);
        assert_eq!(names(&l, "hosts"), ["a", "b%2Fc"]);
        assert_eq!(
            names(&l, "hosts/a"),
            [base.clone(), format!("{base}-2"), "latest".into()]
        );
        assert_eq!(
            names(&l, "tags/x"),
            [base.clone(), format!("{base}-1"), "latest".into()]
        );
        match &lookup(&l, "latest").node {
            VNode::Link(t) => assert_eq!(t, format!("snapshots/{base}-2").as_bytes()),
            _ => panic!("latest is not a link"),
        }
        match &lookup(&l, "hosts/b%2Fc/latest").node {
            VNode::Link(t) => assert_eq!(t, format!("{base}-1").as_bytes()),
            _ => panic!("not a link"),
        }
        assert!(matches!(lookup(&l, "tags/y").node, VNode::Dir(_)));
        assert!(matches!(
            lookup(&l, &format!("hosts/a/{base}-2")).node,
            VNode::Snapshot(2)
        ));
        assert_eq!(lookup(&l, "tags/x/latest").path, "tags/x/latest");
    }

    #[test]
    fn colliding_short_ids_are_written_whole_and_no_snapshots_means_no_latest() {
        let mut a = [7u8; 32];
        a[31] = 1;
        let list = vec![
            (
                SnapshotId([7; 32]),
                snap("2026-01-01T00:00:00+00:00", "h", &[]),
            ),
            (SnapshotId(a), snap("2026-01-02T00:00:00+00:00", "h", &[])),
        ];
        let l = Layout::new(list);
        let ids = names(&l, "ids");
        assert_eq!(ids.len(), 2);
        assert!(ids.iter().all(|n| n.len() == 64), "{ids:?}");

        let empty = Layout::new(vec![]);
        assert_eq!(names(&empty, ""), ["snapshots", "ids", "hosts", "tags"]);
        assert!(names(&empty, "snapshots").is_empty());
    }

    #[test]
    fn escaped_names_are_safe_and_distinct() {
        let texts = ["", ".", "..", "%", "/", "a/b", "a%2Fb", "x\0", "ok"];
        let escaped: Vec<String> = texts.iter().map(|t| escape(t)).collect();
        for e in &escaped {
            assert!(crate::tree::is_safe_name(e.as_bytes()), "{e:?}");
        }
        let mut unique = escaped.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), texts.len(), "{escaped:?}");
        assert_eq!(escape("ok"), "ok");
    }
}
