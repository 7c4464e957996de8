//! The local backend's listings over directories holding whatever a shared disk
//! may hold: names that aren't 64 lowercase hex digits, `.tmp-` names of every
//! shape, non-UTF-8 bytes, directories and symlinks where files belong, in every
//! directory of the layout and in pack subdirectories that shouldn't exist.
//! Listings name only regular files of their own directory (never temporary
//! ones), `list_temporary` only temporary files of the layout, and nothing is
//! read or removed through a name the backend doesn't accept.
#![no_main]
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use cairn::backend::{Backend, FileType, LocalBackend};
use cairn::id::is_file_name;
use cairn_fuzz::{scratch_base, some_bytes};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

struct Place {
    _dir: tempfile::TempDir,
    backend: LocalBackend,
    /// A file beside the repository: symlinks point at it, and it must survive.
    outside: PathBuf,
}

fn place() -> &'static Place {
    static PLACE: OnceLock<Place> = OnceLock::new();
    PLACE.get_or_init(|| {
        let dir = tempfile::tempdir_in(scratch_base()).expect("scratch dir");
        let backend = LocalBackend::new(dir.path().join("repo"));
        backend.create().expect("create");
        let outside = dir.path().join("outside");
        fs::write(&outside, b"keep").expect("write outside");
        Place {
            _dir: dir,
            backend,
            outside,
        }
    })
}

const DIRS: [&str; 9] = [
    "",
    "keys",
    "data",
    "data/00",
    "index",
    "snapshots",
    "locks",
    "records",
    "data/zz",
];

fn name(u: &mut Unstructured) -> Result<Vec<u8>> {
    let hex = b"0123456789abcdef";
    Ok(match u.int_in_range(0..=3)? {
        0 => some_bytes(u, 80)?,
        1 => {
            let mut n = b".tmp-".to_vec();
            for _ in 0..u.int_in_range(0..=18)? {
                n.push(if u.ratio(7, 8)? {
                    *u.choose(hex)?
                } else {
                    u.arbitrary()?
                });
            }
            n
        }
        _ => {
            let mut n: Vec<u8> = (0..64)
                .map(|_| u.choose(hex).copied())
                .collect::<Result<_>>()?;
            if u.arbitrary()? {
                let i = u.choose_index(n.len())?;
                n[i] = u.arbitrary()?;
            }
            if u.ratio(1, 4)? {
                n.truncate(u.int_in_range(0..=64)?);
            }
            n
        }
    })
}

fn creatable(n: &[u8]) -> bool {
    !n.is_empty()
        && n.len() <= 255
        && n != b"."
        && n != b".."
        && !n.contains(&b'/')
        && !n.contains(&0)
}

/// The file type whose listing covers `dir`, if any.
fn type_of(dir: &str) -> Option<FileType> {
    match dir {
        "keys" => Some(FileType::Key),
        "index" => Some(FileType::Index),
        "snapshots" => Some(FileType::Snapshot),
        "locks" => Some(FileType::Lock),
        "records" => Some(FileType::Record),
        d if d.starts_with("data/") => Some(FileType::Pack),
        _ => None,
    }
}

/// Makes entries as the input says (recording each in `made`), then lists.
fn run(u: &mut Unstructured, p: &Place, made: &mut Vec<PathBuf>) -> Result<()> {
    let root = p.backend.root();
    // (dir, name) of every regular file made.
    let mut files = BTreeSet::new();
    for _ in 0..u.int_in_range(0..=8)? {
        let dir = *u.choose(&DIRS)?;
        let n = name(u)?;
        if !creatable(&n) {
            continue;
        }
        let d = root.join(dir);
        if !d.exists() {
            fs::create_dir(&d).expect("mkdir");
            made.push(d.clone());
        }
        let path = d.join(OsStr::from_bytes(&n));
        if fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        match u.int_in_range(0..=3)? {
            0 => fs::create_dir(&path).expect("mkdir"),
            1 => std::os::unix::fs::symlink(&p.outside, &path).expect("symlink"),
            _ => {
                fs::write(&path, &n).expect("write");
                files.insert((dir, n.clone()));
            }
        }
        made.push(path);
    }
    for t in FileType::all() {
        let listed = p.backend.list(t).expect("list");
        let expected: BTreeSet<&[u8]> = files
            .iter()
            .filter(|(d, n)| {
                type_of(d) == Some(t) && std::str::from_utf8(n).is_ok() && !n.starts_with(b".tmp-")
            })
            .map(|(_, n)| n.as_slice())
            .collect();
        let got: BTreeSet<&[u8]> = listed.iter().map(|e| e.name.as_bytes()).collect();
        if t != FileType::Config {
            assert_eq!(got, expected, "listing of {t:?}");
        }
        for e in &listed {
            let read = p.backend.read(t, &e.name, 1 << 20);
            if !is_file_name(&e.name) && t != FileType::Config {
                assert!(read.is_err(), "read {t:?} {:?}", e.name);
            } else if t != FileType::Pack {
                assert!(read.is_ok(), "could not read {t:?} {:?}", e.name);
            }
        }
    }
    let temps = p.backend.list_temporary().expect("list temporary");
    let expected: BTreeSet<String> = files
        .iter()
        .filter(|(d, n)| {
            *d != "data/zz"
                && n.len() == 21
                && n.starts_with(b".tmp-")
                && n[5..].iter().all(|b| b"0123456789abcdef".contains(b))
        })
        .map(|(d, n)| {
            let n = String::from_utf8_lossy(n);
            if d.is_empty() {
                n.into_owned()
            } else {
                format!("{d}/{n}")
            }
        })
        .collect();
    let got: BTreeSet<String> = temps.iter().map(|e| e.name.clone()).collect();
    assert_eq!(got, expected, "temporary files");
    // Removing by any other name is refused.
    for _ in 0..u.int_in_range(0..=3)? {
        let n = String::from_utf8_lossy(&name(u)?).into_owned();
        let n = if u.arbitrary()? {
            format!("{}/{n}", u.choose(&DIRS)?)
        } else {
            n
        };
        let r = p.backend.remove_temporary(&n);
        if !got.contains(&n) {
            assert!(r.is_err(), "removed {n:?}");
        }
    }
    assert_eq!(fs::read(&p.outside).expect("outside file"), b"keep");
    Ok(())
}

fn clean(made: &[PathBuf]) {
    for p in made.iter().rev() {
        match fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => {
                let _ = fs::remove_dir_all(p);
            }
            Ok(_) => {
                let _ = fs::remove_file(p);
            }
            Err(_) => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let p = place();
    let mut made = Vec::new();
    let _ = run(&mut Unstructured::new(data), p, &mut made);
    // The next run starts from the bare layout.
    clean(&made);
});
