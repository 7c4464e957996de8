//! Tree blobs (format-spec/README.md, "Trees"): one per directory, listing its
//! entries sorted by name bytes. Files name their data blobs, directories their
//! subtree, so a snapshot's root tree is the top of a Merkle DAG.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::BlobId;

mod view;
pub use view::TreeView;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Chardev,
    Blockdev,
    Socket,
}

impl NodeKind {
    /// The kind's name, as stored and as `--json` writes it.
    pub fn name(self) -> &'static str {
        match self {
            NodeKind::File => "file",
            NodeKind::Dir => "dir",
            NodeKind::Symlink => "symlink",
            NodeKind::Fifo => "fifo",
            NodeKind::Chardev => "chardev",
            NodeKind::Blockdev => "blockdev",
            NodeKind::Socket => "socket",
        }
    }
}

/// Seconds and nanoseconds since the Unix epoch; a msgpack array `[secs, nanos]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp(pub i64, pub u32);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    #[serde(with = "name_bytes")]
    pub name: Vec<u8>,
    #[serde(with = "name_bytes")]
    pub value: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The entry's name: raw bytes, not necessarily UTF-8.
    #[serde(with = "name_bytes")]
    pub name: Vec<u8>,
    pub kind: NodeKind,
    /// Permission bits, including setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// User and group names, shared: the entries of a tree nearly all have
    /// the same few (see [`shared_text`]).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "shared_text")]
    pub user: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "shared_text")]
    pub group: Option<Arc<str>>,
    pub mtime: Timestamp,
    pub atime: Timestamp,
    pub ctime: Timestamp,
    /// File size in bytes; 0 for everything but files.
    pub size: u64,
    pub inode: u64,
    pub device: u64,
    pub links: u64,
    /// Device number of a character or block device.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u64,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_bytes")]
    pub link_target: Option<Vec<u8>>,
    /// Data blobs of a file, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<BlobId>,
    /// Tree blob of a directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<BlobId>,
    /// Extended attributes, sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Byte strings: msgpack `bin`; in JSON output a string when valid UTF-8, else an
/// array of byte values, so nothing is lost either way.
pub mod name_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(v) {
            Ok(text) if s.is_human_readable() => s.serialize_str(text),
            _ if s.is_human_readable() => s.collect_seq(v),
            _ => s.serialize_bytes(v),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(serde_bytes::ByteBuf::deserialize(d)?.into_vec())
    }
}

/// User and group names, stored as msgpack strings. Decoded, each thread
/// keeps the last few distinct ones it met and hands out the same copy again:
/// a tree of 18,000 entries of one owner holds one "root", not 36,000 (two
/// allocations per node, decoded and freed again on every re-backup).
pub mod shared_text {
    use std::cell::RefCell;
    use std::fmt;
    use std::sync::Arc;

    use serde::de::{Deserializer, Error, Visitor};
    use serde::{Serialize, Serializer};

    /// Distinct names each thread keeps...
    const KEPT: usize = 8;
    /// ...of at most this many bytes; a longer one gets a copy of its own.
    const LONGEST: usize = 64;

    thread_local! {
        static RECENT: RefCell<Vec<Arc<str>>> = const { RefCell::new(Vec::new()) };
    }

    /// `text` as a shared copy: one of the last few this thread made, if equal.
    fn intern(text: &str) -> Arc<str> {
        if text.len() > LONGEST {
            return Arc::from(text);
        }
        RECENT.with_borrow_mut(|recent| {
            if let Some(known) = recent.iter().find(|k| &***k == text) {
                return Arc::clone(known);
            }
            let new: Arc<str> = Arc::from(text);
            if recent.len() >= KEPT {
                recent.remove(0);
            }
            recent.push(Arc::clone(&new));
            new
        })
    }

    pub fn serialize<S: Serializer>(v: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
        // As `Option<String>` serializes: the same bytes as before.
        v.as_deref().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<str>>, D::Error> {
        d.deserialize_option(Name)
    }

    struct Name;

    impl<'de> Visitor<'de> for Name {
        type Value = Option<Arc<str>>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a user or group name")
        }

        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }

        fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(intern(v)))
        }
    }
}

mod opt_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => super::name_bytes::serialize(b, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<serde_bytes::ByteBuf>::deserialize(d)?.map(|b| b.into_vec()))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    #[serde(deserialize_with = "exact_nodes::deserialize")]
    pub nodes: Vec<Node>,
}

/// A tree's nodes, decoded into a vector of the length the blob declares
/// rather than one grown by doubling. serde's own sequence visitor starts at
/// most 1 MiB of elements and doubles from there: a tree of 17,914 entries
/// (`usr`'s `man1`) was decoded into room for 29,952, 3 MiB more than it
/// needed, at the peak of a re-backup. Here each step grows by what is
/// declared to remain, but never by more than is already there, so a hostile
/// length gets at most twice the room of the nodes actually decoded.
mod exact_nodes {
    use std::fmt;

    use serde::Deserializer;
    use serde::de::{SeqAccess, Visitor};

    use super::Node;

    /// Elements reserved before any is decoded, whatever the declared length.
    const FIRST: usize = 1024;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Node>, D::Error> {
        d.deserialize_seq(Nodes)
    }

    struct Nodes;

    impl<'de> Visitor<'de> for Nodes {
        type Value = Vec<Node>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a sequence of tree nodes")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Node>, A::Error> {
            let mut nodes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(FIRST));
            while let Some(node) = seq.next_element()? {
                if nodes.len() == nodes.capacity() {
                    let most = nodes.len().max(FIRST);
                    let left = match seq.size_hint() {
                        Some(n) => n.saturating_add(1).min(most),
                        None => most,
                    };
                    nodes.reserve_exact(left);
                }
                nodes.push(node);
            }
            Ok(nodes)
        }
    }
}

/// How deep directories may nest below a snapshot's root tree (format-spec §17).
/// Readers refuse to go deeper; a backup records a deeper directory as an error.
/// Every path a backup can reach by absolute name on Linux (at most 4095 bytes,
/// so at most 2047 levels) is well inside it.
pub const MAX_TREE_DEPTH: usize = 4096;

/// A name that can be created inside a directory without escaping it.
pub fn is_safe_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

impl Tree {
    /// Sorts by name; encoding a tree twice gives the same bytes.
    pub fn encode(&mut self) -> Vec<u8> {
        // Unstable: no scratch copy of the nodes. It could order differently
        // only nodes of one name, which readers refuse in a tree anyway.
        self.nodes.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        crate::format::to_msgpack(self)
    }

    /// Decodes and validates a tree blob. Names must be safe and strictly sorted
    /// (so, unique): a repository that names `..` or holds a symlink and a directory
    /// of the same name can't steer a restore outside its target.
    pub fn decode(bytes: &[u8], id: &BlobId) -> Result<Self> {
        let what = || format!("tree {id}");
        let tree: Tree = crate::format::from_msgpack(bytes, &what)?;
        let mut prev: Option<&[u8]> = None;
        for n in &tree.nodes {
            check_name_order(prev, &n.name).map_err(|e| Error::corrupt(what(), e))?;
            prev = Some(&n.name);
            n.check().map_err(|e| Error::corrupt(what(), e))?;
        }
        Ok(tree)
    }

    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.position(name).and_then(|i| self.nodes.get(i))
    }

    /// Where the node named `name` is in this (decoded, so sorted) tree.
    pub fn position(&self, name: &[u8]) -> Option<usize> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
    }
}

/// `name` is safe, and comes after `prev` (the name before it in a tree).
fn check_name_order(prev: Option<&[u8]>, name: &[u8]) -> std::result::Result<(), String> {
    if !is_safe_name(name) {
        return Err(format!(
            "unsafe entry name {:?}",
            String::from_utf8_lossy(name)
        ));
    }
    match prev {
        Some(p) if p >= name => Err("entries are not sorted or not unique".into()),
        _ => Ok(()),
    }
}

impl Node {
    /// The fields present are those of the node's kind, and its times are
    /// valid.
    fn check(&self) -> std::result::Result<(), String> {
        let consistent = match self.kind {
            NodeKind::Dir => self.subtree.is_some() && self.content.is_empty(),
            NodeKind::File => self.subtree.is_none(),
            NodeKind::Symlink => {
                self.link_target.is_some() && self.subtree.is_none() && self.content.is_empty()
            }
            _ => self.subtree.is_none() && self.content.is_empty(),
        };
        let nanos_ok = [self.mtime, self.atime, self.ctime]
            .iter()
            .all(|t| t.1 < 1_000_000_000);
        if !consistent || !nanos_ok {
            return Err(format!(
                "entry {:?} has fields that don't fit its kind",
                self.name_lossy()
            ));
        }
        Ok(())
    }

    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn node(name: &[u8], kind: NodeKind) -> Node {
        Node {
            name: name.to_vec(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            user: None,
            group: None,
            mtime: Timestamp(1, 2),
            atime: Timestamp(3, 4),
            ctime: Timestamp(5, 6),
            size: 0,
            inode: 1,
            device: 1,
            links: 1,
            rdev: 0,
            link_target: (kind == NodeKind::Symlink).then(|| b"target".to_vec()),
            content: vec![],
            subtree: (kind == NodeKind::Dir).then_some(BlobId([1; 32])),
            xattrs: vec![],
        }
    }

    /// Names decode to one shared copy per distinct name, encode as strings
    /// exactly as before, and a long or absent one comes through too.
    #[test]
    fn user_and_group_names_are_shared_and_encoded_as_strings() {
        #[derive(Serialize)]
        struct Plain<'a> {
            user: Option<&'a str>,
        }
        #[derive(Serialize, Deserialize)]
        struct Shared {
            #[serde(default, with = "shared_text")]
            user: Option<Arc<str>>,
        }
        let shared = Shared {
            user: Some("ada".into()),
        };
        let bytes = crate::format::to_msgpack(&shared);
        assert_eq!(
            bytes,
            crate::format::to_msgpack(&Plain { user: Some("ada") })
        );

        let long = "x".repeat(100);
        let mut t = Tree {
            nodes: ["a", "b", "c", "d"]
                .iter()
                .zip([Some("root"), Some("root"), None, Some(long.as_str())])
                .map(|(name, user)| Node {
                    user: user.map(Arc::from),
                    group: Some("staff".into()),
                    ..node(name.as_bytes(), NodeKind::File)
                })
                .collect(),
        };
        let id = BlobId([0; 32]);
        let back = Tree::decode(&t.encode(), &id).unwrap();
        assert_eq!(back, t);
        let (a, b) = (&back.nodes[0], &back.nodes[1]);
        assert!(Arc::ptr_eq(
            a.user.as_ref().unwrap(),
            b.user.as_ref().unwrap()
        ));
        assert!(Arc::ptr_eq(
            a.group.as_ref().unwrap(),
            b.group.as_ref().unwrap()
        ));
        assert_eq!(back.nodes[2].user, None);
        assert_eq!(back.nodes[3].user.as_deref(), Some(long.as_str()));
    }

    #[test]
    fn round_trip_non_utf8_and_sorted() {
        let mut t = Tree {
            nodes: vec![
                node(b"z\xff\xfe", NodeKind::File),
                node(b"a", NodeKind::Dir),
                node(b"l", NodeKind::Symlink),
            ],
        };
        let bytes = t.encode();
        let back = Tree::decode(&bytes, &BlobId([0; 32])).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.nodes[0].name, b"a");
        assert!(back.find(b"z\xff\xfe").is_some());
    }

    #[test]
    fn nodes_are_decoded_into_room_for_exactly_their_number() {
        for n in [0, 1, 1023, 1024, 1025, 5000, 17_914] {
            let mut t = Tree {
                nodes: (0..n)
                    .map(|i| node(format!("e{i:06}").as_bytes(), NodeKind::File))
                    .collect(),
            };
            let back = Tree::decode(&t.encode(), &BlobId([0; 32])).unwrap();
            assert_eq!(back.nodes.len(), n);
            assert_eq!(back.nodes.capacity(), n, "{n} nodes");
        }
        // A length far beyond the nodes that follow is an error, found after
        // reserving no more than the first step.
        let mut t = Tree {
            nodes: vec![node(b"a", NodeKind::File), node(b"b", NodeKind::File)],
        };
        let bytes = t.encode();
        let at = bytes.iter().position(|&b| b == 0x92).unwrap();
        let mut hostile = bytes[..at].to_vec();
        hostile.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
        hostile.extend_from_slice(&bytes[at + 1..]);
        assert!(Tree::decode(&hostile, &BlobId([0; 32])).is_err());
    }

    #[test]
    fn unsafe_names_and_duplicates_are_refused() {
        for bad in [&b".."[..], b".", b"a/b", b"", b"a\0"] {
            let t = Tree {
                nodes: vec![node(bad, NodeKind::File)],
            };
            let bytes = crate::format::to_msgpack(&t);
            assert!(Tree::decode(&bytes, &BlobId([0; 32])).is_err(), "{bad:?}");
        }
        let t = Tree {
            nodes: vec![node(b"x", NodeKind::Symlink), node(b"x", NodeKind::Dir)],
        };
        assert!(Tree::decode(&crate::format::to_msgpack(&t), &BlobId([0; 32])).is_err());
        let mut d = node(b"d", NodeKind::Dir);
        d.subtree = None;
        let t = Tree { nodes: vec![d] };
        assert!(Tree::decode(&crate::format::to_msgpack(&t), &BlobId([0; 32])).is_err());
    }
}
