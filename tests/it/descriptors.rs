//! The walk asks for each entry's metadata relative to its directory, kept
//! open while its entries are probed. A directory of more than one probe group
//! (256 entries) stays open while the walk goes down into the subdirectories
//! of its earlier groups, so on a deep tree of large directories only a
//! bound on the depth that keeps descriptors open stops them from running
//! out. These trees nest deeper than a low descriptor limit allows.
//!
//! The tree is written to a tmpfs (tens of thousands of files): needs root to
//! mount it, and skips, saying why, without.

use std::fs;
use std::path::Path;

use crate::common::{self, Env};

/// `levels` directories nested in one another, each `d` the first of 300
/// entries (more than one probe group), the rest empty files.
fn write_deep(src: &Path, levels: usize) {
    let mut dir = src.to_path_buf();
    for level in 0..levels {
        dir = dir.join("d");
        fs::create_dir_all(&dir).expect("mkdir");
        for f in 0..299 {
            fs::write(dir.join(format!("f{f:03}")), b"").expect("write");
        }
        if level % 50 == 0 {
            fs::write(dir.join("level"), format!("{level}\n")).expect("write");
        }
    }
}

/// First and unchanged backups of a tree 150 levels deep of 300-entry
/// directories, run with at most 128 open descriptors, store every entry;
/// the restore is exact.
#[test]
fn a_deep_tree_of_large_directories_is_backed_up_within_a_low_descriptor_limit() {
    let env = Env::with_repo(&[]);
    let mnt = env.path("mnt");
    let Some(_mount) = common::tmpfs_or_skip(&mnt, "256m") else {
        return;
    };
    let src = mnt.join("src");
    write_deep(&src, 150);
    let limited = || {
        let mut c = env.bare_cmd_through(&["sh", "-c", "ulimit -n 128 && exec \"$0\" \"$@\""]);
        c.arg("--password-file").arg(&env.password_file);
        c
    };
    // 299 empty files a level, and three level markers.
    let files = 150 * 299 + 3;
    for (run, new, unchanged) in [("first", files, 0), ("unchanged", 0, files)] {
        let out = limited()
            .args(["backup", "--json", src.to_str().expect("utf-8")])
            .output()
            .expect("run cairn");
        assert!(
            out.status.success(),
            "{run} backup: {}\n{}",
            common::stderr(&out),
            common::stdout(&out)
        );
        let summary = common::last_json(&common::stdout(&out), "summary");
        assert_eq!(summary["files_new"], new, "{run}: {summary}");
        assert_eq!(summary["files_unchanged"], unchanged, "{run}: {summary}");
        let dirs = if run == "first" {
            "dirs_new"
        } else {
            "dirs_unchanged"
        };
        assert_eq!(summary[dirs], 151, "{run}: {summary}");
    }
    let restored = common::restored_contents(&env, "mnt/restored", &src);
    assert_eq!(restored, common::tree_contents(&src));
    assert_eq!(restored.len(), files + 150, "files and directories");
}
