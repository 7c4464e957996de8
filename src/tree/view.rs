//! A tree blob kept as its bytes, its nodes decoded one at a time.
//!
//! A backup compares each entry of a directory with its node in the parent
//! snapshot's tree. Decoding that tree whole held its plaintext and every
//! node at once: `usr`'s `man1` (17,912 entries) is 4.1 MiB of plaintext and
//! 5.9 MiB of nodes, the peak of an unchanged re-backup. A [`TreeView`] holds
//! the plaintext and where each node lies in it (16 bytes a node); a node is
//! decoded when its entry is compared, and dropped after.
//!
//! Everything [`Tree::decode`](super::Tree::decode) checks is still checked:
//! names (safe, strictly sorted) when the view is made, each node's fields
//! when it is decoded. A view is never more lenient than a whole decode about
//! what lies around the nodes: a backup keeps an unchanged directory's tree
//! blob as it is, so a blob a whole decode would refuse must not get through
//! here. So the scan refuses msgpack extension types (which the stored format
//! doesn't use, and which the whole decode's decoder passes over only in
//! part) and nesting deeper than [`MAX_NESTING`] (the whole decode refuses
//! past about a thousand levels).

// The lints `tree` denies outside tests (no unwrap, no indexing) hold here too.

use super::{Node, check_name_order};
use crate::error::{Error, Result};
use crate::id::BlobId;

/// How deeply containers may nest in a tree blob, counting the tree's own map
/// as 1: its nodes' fields are at level 4, and the deepest of them
/// (extended attributes) nest two more.
pub const MAX_NESTING: usize = 64;

/// Where one node's encoding and its name lie in the plaintext.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: u32,
    end: u32,
    name_start: u32,
    name_end: u32,
}

/// A tree blob's verified plaintext, with its nodes found but not decoded.
#[derive(Debug)]
pub struct TreeView {
    id: BlobId,
    plain: Vec<u8>,
    spans: Vec<Span>,
}

impl TreeView {
    /// Finds the nodes of tree `id` in its plaintext `plain`, and checks their
    /// names: safe, strictly sorted. The layout is that of format-spec §8: a
    /// map whose `nodes` is an array of maps, each with a `name`.
    pub fn new(plain: Vec<u8>, id: &BlobId) -> Result<Self> {
        let what = || format!("tree {id}");
        if u32::try_from(plain.len()).is_err() {
            return Err(Error::corrupt(what(), "longer than 4 GiB"));
        }
        let spans = find_nodes(&plain).map_err(|e| Error::corrupt(what(), e))?;
        let view = TreeView {
            id: *id,
            plain,
            spans,
        };
        let mut prev: Option<&[u8]> = None;
        for i in 0..view.spans.len() {
            let name = view.name(i);
            check_name_order(prev, name).map_err(|e| Error::corrupt(what(), e))?;
            prev = Some(name);
        }
        Ok(view)
    }

    pub fn id(&self) -> &BlobId {
        &self.id
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The name of node `i` (empty past the end).
    fn name(&self, i: usize) -> &[u8] {
        self.spans.get(i).map_or(&[], |s| self.name_at(s))
    }

    fn name_at(&self, s: &Span) -> &[u8] {
        self.plain
            .get(s.name_start as usize..s.name_end as usize)
            .unwrap_or_default()
    }

    /// Where the node named `name` is.
    pub fn position(&self, name: &[u8]) -> Option<usize> {
        self.spans
            .binary_search_by(|s| self.name_at(s).cmp(name))
            .ok()
    }

    /// Node `i`, decoded and checked as [`Tree::decode`](super::Tree::decode)
    /// checks each node.
    pub fn node(&self, i: usize) -> Result<Node> {
        let what = || format!("tree {}", self.id);
        let bytes = self
            .spans
            .get(i)
            .and_then(|s| self.plain.get(s.start as usize..s.end as usize))
            .ok_or_else(|| Error::corrupt(what(), format!("it has no entry {i}")))?;
        let node: Node = crate::format::from_msgpack(bytes, &what)?;
        if node.name != self.name(i) {
            return Err(Error::corrupt(
                what(),
                format!("entry {i} names itself in two ways"),
            ));
        }
        node.check().map_err(|e| Error::corrupt(what(), e))?;
        Ok(node)
    }

    /// The node named `name` and where it is, if there is one.
    pub fn find(&self, name: &[u8]) -> Option<(usize, Result<Node>)> {
        let i = self.position(name)?;
        Some((i, self.node(i)))
    }
}

/// Finds each node of an encoded tree, without decoding any.
fn find_nodes(plain: &[u8]) -> std::result::Result<Vec<Span>, String> {
    let mut r = Reader { buf: plain, pos: 0 };
    let Item::Map(fields) = r.item()? else {
        return Err("not a map".into());
    };
    let mut spans = None;
    for _ in 0..fields {
        let Some(key) = r.key(2)? else {
            return Err("a field is not named by a string".into());
        };
        if key != b"nodes" {
            r.skip(2)?;
            continue;
        }
        if spans.is_some() {
            return Err("two lists of nodes".into());
        }
        let Item::Array(n) = r.item()? else {
            return Err("its nodes are not a list".into());
        };
        // A node with a name takes at least 7 bytes: a hostile count
        // reserves at most about twice the blob's own length (16-byte spans).
        let room = usize::try_from(n).unwrap_or(usize::MAX).min(r.left() / 7);
        let mut found = Vec::with_capacity(room);
        for _ in 0..n {
            found.push(r.node()?);
        }
        spans = Some(found);
    }
    spans.ok_or_else(|| "no list of nodes".into())
}

/// One msgpack header, with the bytes of a string or binary.
enum Item<'a> {
    Map(u64),
    Array(u64),
    Str(&'a [u8]),
    Bin(&'a [u8]),
    /// Anything else, read whole.
    Scalar,
}

/// A bounds-checked msgpack reader over a plaintext.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: u64) -> std::result::Result<&'a [u8], String> {
        let n = usize::try_from(n).map_err(|_| "a length overflows")?;
        let end = self.pos.checked_add(n).ok_or("a length overflows")?;
        let bytes = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| format!("truncated at byte {}", self.pos))?;
        self.pos = end;
        Ok(bytes)
    }

    /// A big-endian unsigned integer of `n` bytes.
    fn int(&mut self, n: u64) -> std::result::Result<u64, String> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |v, &b| (v << 8) | u64::from(b)))
    }

    /// The next header, and the payload of anything that is not a container.
    fn item(&mut self) -> std::result::Result<Item<'a>, String> {
        let marker = self.take(1)?.first().copied().unwrap_or(0xc1);
        Ok(match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Item::Scalar,
            0x80..=0x8f => Item::Map(u64::from(marker & 0x0f)),
            0x90..=0x9f => Item::Array(u64::from(marker & 0x0f)),
            0xa0..=0xbf => Item::Str(self.take(u64::from(marker & 0x1f))?),
            0xc4..=0xc6 => {
                let n = self.int(1 << (marker - 0xc4))?;
                Item::Bin(self.take(n)?)
            }
            0xd9..=0xdb => {
                let n = self.int(1 << (marker - 0xd9))?;
                Item::Str(self.take(n)?)
            }
            0xc7..=0xc9 | 0xd4..=0xd8 => {
                return Err(format!(
                    "an extension type at byte {}, which trees don't use",
                    self.pos - 1
                ));
            }
            0xca => self.take(4).map(|_| Item::Scalar)?,
            0xcb => self.take(8).map(|_| Item::Scalar)?,
            0xcc..=0xcf => self.take(1 << (marker - 0xcc)).map(|_| Item::Scalar)?,
            0xd0..=0xd3 => self.take(1 << (marker - 0xd0)).map(|_| Item::Scalar)?,
            0xdc | 0xdd => Item::Array(self.int(2 << (marker - 0xdc))?),
            0xde | 0xdf => Item::Map(self.int(2 << (marker - 0xde))?),
            0xc1 => return Err(format!("invalid byte at {}", self.pos - 1)),
        })
    }

    /// Skips one value at nesting `level`, without recursing. Every value
    /// read takes at least a byte, so this ends with the buffer; containers
    /// nested past [`MAX_NESTING`] are refused.
    fn skip(&mut self, level: usize) -> std::result::Result<(), String> {
        // Values left to read in each container open inside the value (on
        // the stack: this runs for every field of every node).
        let mut open = [0u64; MAX_NESTING];
        let mut depth: usize = 0;
        let mut first = true;
        loop {
            match depth.checked_sub(1).and_then(|top| open.get_mut(top)) {
                Some(0) => {
                    depth -= 1;
                    continue;
                }
                Some(left) => *left -= 1,
                None if first => first = false,
                None => return Ok(()),
            }
            let n = match self.item()? {
                Item::Array(n) => n,
                Item::Map(n) => n.saturating_mul(2),
                Item::Str(_) | Item::Bin(_) | Item::Scalar => continue,
            };
            let slot = (level + depth <= MAX_NESTING)
                .then(|| open.get_mut(depth))
                .flatten()
                .ok_or_else(|| {
                    format!(
                        "containers nest deeper than {MAX_NESTING} levels at byte {}",
                        self.pos
                    )
                })?;
            *slot = n;
            depth += 1;
        }
    }

    /// A map's key at nesting `level`: its bytes if it is a string, `None`
    /// (and passed over) if it is anything else.
    fn key(&mut self, level: usize) -> std::result::Result<Option<&'a [u8]>, String> {
        let start = self.pos;
        match self.item()? {
            Item::Str(k) => Ok(Some(k)),
            Item::Bin(_) | Item::Scalar => Ok(None),
            Item::Array(_) | Item::Map(_) => {
                self.pos = start;
                self.skip(level)?;
                Ok(None)
            }
        }
    }

    /// One node: a map with a `name`, as string or binary.
    fn node(&mut self) -> std::result::Result<Span, String> {
        let start = self.pos;
        let Item::Map(fields) = self.item()? else {
            return Err(format!("the entry at byte {start} is not a map"));
        };
        let mut name = None;
        for _ in 0..fields {
            if self.key(4)? == Some(b"name") {
                let (Item::Str(n) | Item::Bin(n)) = self.item()? else {
                    return Err(format!(
                        "the entry at byte {start} has a name that is not bytes"
                    ));
                };
                if name.is_some() {
                    return Err(format!("the entry at byte {start} has two names"));
                }
                name = Some((self.pos - n.len(), self.pos));
            } else {
                self.skip(4)?;
            }
        }
        let (name_start, name_end) =
            name.ok_or_else(|| format!("the entry at byte {start} has no name"))?;
        // The whole blob is shorter than 4 GiB (checked by `TreeView::new`).
        let at = |p: usize| u32::try_from(p).map_err(|_| "longer than 4 GiB".to_string());
        Ok(Span {
            start: at(start)?,
            end: at(self.pos)?,
            name_start: at(name_start)?,
            name_end: at(name_end)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::tests::node;
    use crate::tree::{NodeKind, Tree, Xattr};

    fn id() -> BlobId {
        BlobId([7; 32])
    }

    /// A tree with every kind of field, and names long enough to take each
    /// string length encoding.
    fn sample() -> Tree {
        sized(70_000)
    }

    /// [`sample`] with extended attribute values of `big` bytes.
    fn sized(big: usize) -> Tree {
        let mut nodes = Vec::new();
        for (i, len) in [1usize, 31, 32, 255, 256, 300].iter().enumerate() {
            let name: Vec<u8> = std::iter::repeat_n(b'a' + i as u8, *len).collect();
            let mut n = node(&name, NodeKind::File);
            n.content = (0..i as u8).map(|b| BlobId([b; 32])).collect();
            n.xattrs = vec![Xattr {
                name: b"user.x".to_vec(),
                value: vec![i as u8; if i == 3 { big } else { i }],
            }];
            n.user = Some("ada".into());
            n.size = u64::MAX >> i;
            nodes.push(n);
        }
        nodes.push(node(b"dir", NodeKind::Dir));
        nodes.push(node(b"link", NodeKind::Symlink));
        Tree { nodes }
    }

    /// Every node of a view is the node `Tree::decode` gives, found by its
    /// name; a name that isn't there is not found.
    #[test]
    fn a_view_gives_the_nodes_a_whole_decode_gives() {
        let mut tree = sample();
        let bytes = tree.encode();
        let whole = Tree::decode(&bytes, &id()).unwrap();
        let view = TreeView::new(bytes, &id()).unwrap();
        assert_eq!(view.len(), whole.nodes.len());
        for (i, n) in whole.nodes.iter().enumerate() {
            assert_eq!(view.position(&n.name), Some(i));
            assert_eq!(&view.node(i).unwrap(), n);
            let (at, found) = view.find(&n.name).unwrap();
            assert_eq!((at, &found.unwrap()), (i, n));
        }
        for missing in [&b"0"[..], b"b", b"zzz", b"dir0"] {
            assert!(view.position(missing).is_none(), "{missing:?}");
        }
        assert!(view.node(view.len()).is_err());

        let empty = TreeView::new(Tree::default().encode(), &id()).unwrap();
        assert!(empty.is_empty() && empty.position(b"a").is_none());
    }

    /// Fields this version doesn't know, before and after the nodes and in
    /// them, are passed over, as a whole decode passes over them.
    #[test]
    fn unknown_fields_are_passed_over() {
        #[derive(serde::Serialize)]
        struct Later<'a> {
            before: Vec<Vec<u64>>,
            nodes: Vec<LaterNode<'a>>,
            after: std::collections::BTreeMap<String, f64>,
        }
        #[derive(serde::Serialize)]
        struct LaterNode<'a> {
            extra: (i64, bool, Option<u8>),
            #[serde(flatten)]
            node: &'a Node,
        }
        let mut tree = sample();
        tree.encode(); // sorts
        let later = Later {
            before: vec![vec![1, 1 << 40], vec![]],
            nodes: tree
                .nodes
                .iter()
                .map(|node| LaterNode {
                    extra: (-5, true, None),
                    node,
                })
                .collect(),
            after: [("x".to_string(), 1.5)].into_iter().collect(),
        };
        let bytes = crate::format::to_msgpack(&later);
        let whole = Tree::decode(&bytes, &id()).unwrap();
        assert_eq!(whole, tree);
        let view = TreeView::new(bytes, &id()).unwrap();
        for (i, n) in tree.nodes.iter().enumerate() {
            assert_eq!(&view.node(i).unwrap(), n);
        }
    }

    /// Every msgpack encoding of lengths and numbers, in fields passed over
    /// and in the layout, reads as a whole decode reads it.
    #[test]
    fn every_width_of_length_and_number_is_read() {
        let mut tree = sized(4);
        tree.encode(); // sorts
        let mut b = vec![0xde, 0x00, 0x02]; // map16, 2 fields
        b.extend_from_slice(&[0xd9, 3]); // str8 key
        b.extend_from_slice(b"pad");
        b.extend_from_slice(&[0xdc, 0x00, 0x09]); // array16 of 9:
        b.extend_from_slice(&[0xd0, 0x9c]); // i8
        b.extend_from_slice(&[0xd1, 0xff, 0x00]); // i16
        b.extend_from_slice(&[0xd2, 0xff, 0, 0, 0]); // i32
        b.extend_from_slice(&[0xcd, 1, 0]); // u16
        b.extend_from_slice(&[0xce, 1, 0, 0, 0]); // u32
        b.extend_from_slice(&[0xca, 0x3f, 0x80, 0, 0]); // f32
        b.extend_from_slice(&[0xdf, 0, 0, 0, 1, 0xda, 0, 1, b'k', 0xdd, 0, 0, 0, 0]); // map32 {str16: array32}
        b.extend_from_slice(&[0xdb, 0, 0, 0, 1, b'x']); // str32
        b.extend_from_slice(&[0xc6, 0, 0, 0, 1, 7]); // bin32
        b.extend_from_slice(&[0xda, 0, 5]); // str16 key
        b.extend_from_slice(b"nodes");
        b.push(0xdd); // array32
        b.extend_from_slice(&(tree.nodes.len() as u32).to_be_bytes());
        for n in &tree.nodes {
            b.extend_from_slice(&crate::format::to_msgpack(n));
        }
        let whole = Tree::decode(&b, &id()).unwrap();
        assert_eq!(whole, tree);
        let view = TreeView::new(b, &id()).unwrap();
        assert_eq!(view.len(), tree.nodes.len());
        for (i, n) in tree.nodes.iter().enumerate() {
            assert_eq!(&view.node(i).unwrap(), n);
        }
    }

    /// Extension types, which the stored format doesn't use, are refused
    /// wherever they are: the whole decode's decoder would read only their
    /// type byte when passing over one, and what follows differently.
    #[test]
    fn extension_types_are_refused() {
        for ext in [
            &[0xd4, 1, 0][..],
            &[0xd5, 1, 0, 0],
            &[0xd6, 1, 0, 0, 0, 0],
            &[0xd7, 1, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0xd8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0xc7, 1, 1, 0],
            &[0xc8, 0, 1, 1, 0],
            &[0xc9, 0, 0, 0, 1, 1, 0],
        ] {
            let mut b = vec![0x82, 0xa1, b'x'];
            b.extend_from_slice(ext);
            b.push(0xa5);
            b.extend_from_slice(b"nodes");
            b.push(0x90);
            let err = TreeView::new(b, &id()).unwrap_err().to_string();
            assert!(err.contains("extension type"), "{ext:?}: {err}");
        }
    }

    /// What a whole decode refuses for its names, a view refuses when it is
    /// made; what it refuses in one node, the view refuses for that node.
    #[test]
    fn what_a_whole_decode_refuses_a_view_refuses() {
        let names = |names: &[&[u8]]| Tree {
            nodes: names.iter().map(|n| node(n, NodeKind::File)).collect(),
        };
        for bad in [
            names(&[b"b", b"a"]),
            names(&[b"a", b"a"]),
            names(&[b".."]),
            names(&[b"a/b"]),
            names(&[b""]),
        ] {
            // Not `encode`, which sorts.
            let bytes = crate::format::to_msgpack(&bad);
            assert!(Tree::decode(&bytes, &id()).is_err());
            let err = TreeView::new(bytes, &id()).unwrap_err().to_string();
            assert!(err.contains(&id().to_string()), "{err}");
        }

        let mut dir_with_content = node(b"d", NodeKind::Dir);
        dir_with_content.content = vec![BlobId([1; 32])];
        let mut bad_nanos = node(b"e", NodeKind::File);
        bad_nanos.mtime.1 = 1_000_000_000;
        let tree = Tree {
            nodes: vec![node(b"a", NodeKind::File), dir_with_content, bad_nanos],
        };
        let bytes = crate::format::to_msgpack(&tree);
        assert!(Tree::decode(&bytes, &id()).is_err());
        let view = TreeView::new(bytes, &id()).unwrap();
        assert!(view.node(0).is_ok());
        assert!(view.node(1).is_err());
        assert!(view.node(2).is_err());
    }

    /// Truncated, cut or hostile bytes give an error, never a panic, and a
    /// node count far beyond the bytes reserves nothing for it.
    #[test]
    fn hostile_bytes_are_refused() {
        let bytes = sized(4).encode();
        for cut in 0..bytes.len() {
            let _ = TreeView::new(bytes[..cut].to_vec(), &id());
        }
        for at in 0..bytes.len() {
            let mut b = bytes.clone();
            b[at] ^= 0x5a;
            if let Ok(v) = TreeView::new(b, &id()) {
                for i in 0..v.len() {
                    let _ = v.node(i);
                }
            }
        }
        // {"nodes": array32 of 4 billion}
        let mut huge = vec![0x81, 0xa5];
        huge.extend_from_slice(b"nodes");
        huge.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0x80]);
        assert!(TreeView::new(huge, &id()).is_err());
        // Nested deep in a field passed over: up to the limit, and a
        // million deep (refused without recursing).
        let nested = |levels: usize| {
            let mut b = vec![0x82, 0xa1, b'x'];
            b.extend(std::iter::repeat_n(0x91, levels));
            b.push(0xc0);
            b.push(0xa5);
            b.extend_from_slice(b"nodes");
            b.push(0x90);
            b
        };
        // The tree's map is level 1, so its fields' values start at level 2.
        assert!(
            TreeView::new(nested(MAX_NESTING - 1), &id())
                .unwrap()
                .is_empty()
        );
        assert!(Tree::decode(&nested(MAX_NESTING - 1), &id()).is_ok());
        for levels in [MAX_NESTING, 1_000_000] {
            let err = TreeView::new(nested(levels), &id())
                .unwrap_err()
                .to_string();
            assert!(err.contains("nest deeper than 64"), "{err}");
        }
        // Not a map; no nodes; nodes twice; a node without a name.
        for bad in [
            &[0x90][..],
            &[0x80],
            &[
                0x82, 0xa5, b'n', b'o', b'd', b'e', b's', 0x90, 0xa5, b'n', b'o', b'd', b'e', b's',
                0x90,
            ],
            &[0x81, 0xa5, b'n', b'o', b'd', b'e', b's', 0x91, 0x80],
            &[
                0x81, 0xa5, b'n', b'o', b'd', b'e', b's', 0x91, 0x81, 0xa4, b'n', b'a', b'm', b'e',
                0x01,
            ],
        ] {
            assert!(TreeView::new(bad.to_vec(), &id()).is_err(), "{bad:?}");
        }
    }
}
