//! Tree blobs: a decoded tree never names an entry that could escape a restore target.
//! A tree read a node at a time (`TreeView`, as a backup reads its parent)
//! checks what a whole decode checks, gives the same nodes, and accepts no
//! blob a whole decode refuses.
#![no_main]
use cairn::id::BlobId;
use cairn::tree::{Tree, TreeView, is_safe_name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = Tree::decode(data, &BlobId([0; 32])).ok();
    if let Some(mut tree) = whole.clone() {
        for pair in tree.nodes.windows(2) {
            assert!(pair[0].name < pair[1].name);
        }
        for n in &tree.nodes {
            assert!(is_safe_name(&n.name));
        }
        // Re-encoding a valid tree gives a tree that decodes to the same nodes.
        let again = tree.encode();
        let back = Tree::decode(&again, &BlobId([0; 32])).expect("re-encoded tree decodes");
        assert_eq!(back, tree);
        // As stored by this version, a view finds every node.
        let view = TreeView::new(again, &BlobId([0; 32])).expect("re-encoded tree views");
        assert_eq!(view.len(), tree.nodes.len());
        for (i, n) in tree.nodes.iter().enumerate() {
            assert_eq!(view.position(&n.name), Some(i));
            assert_eq!(&view.node(i).expect("node of a valid tree"), n);
        }
    }
    // Each node a view gives is safe, in order, and the node a whole decode
    // gives. A view that gives every node is never more lenient than a whole
    // decode: a backup keeps such a tree's id for an unchanged directory.
    if let Ok(view) = TreeView::new(data.to_vec(), &BlobId([0; 32])) {
        let mut prev: Option<Vec<u8>> = None;
        let mut all = true;
        for i in 0..view.len() {
            let Ok(n) = view.node(i) else {
                all = false;
                continue;
            };
            assert!(is_safe_name(&n.name));
            assert!(prev.as_ref().is_none_or(|p| *p < n.name));
            assert_eq!(view.position(&n.name), Some(i));
            if let Some(tree) = &whole {
                assert_eq!(tree.nodes.get(i), Some(&n));
            }
            prev = Some(n.name);
        }
        if all {
            let tree = whole.expect("a tree whose every node a view gives decodes whole");
            assert_eq!(tree.nodes.len(), view.len());
        }
    }
});
