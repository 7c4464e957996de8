//! Tree blobs: a decoded tree never names an entry that could escape a restore target.
#![no_main]
use cairn::id::BlobId;
use cairn::tree::{Tree, is_safe_name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut tree) = Tree::decode(data, &BlobId([0; 32])) {
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
    }
});
