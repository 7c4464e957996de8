use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use cairn::mount::MountFs;

use super::output::{bytes, count};
use super::{FilterArgs, GlobalArgs, open, output};

#[derive(Args)]
pub struct MountArgs {
    /// An existing directory to mount the repository on
    mountpoint: PathBuf,
    /// Let other users see the filesystem; the kernel then applies each
    /// entry's stored owner and permissions to them
    #[arg(long)]
    allow_other: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

/// How often the foreground loop looks for a signal or an unmount.
const POLL: Duration = Duration::from_millis(100);

pub fn run(g: &GlobalArgs, a: MountArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let meta = std::fs::metadata(&a.mountpoint)
        .with_context(|| format!("mountpoint {}", a.mountpoint.display()))?;
    if !meta.is_dir() {
        bail!("mountpoint {} is not a directory", a.mountpoint.display());
    }
    if !Path::new("/dev/fuse").exists() {
        bail!(
            "/dev/fuse is missing, so this system can't mount FUSE filesystems: load the \
             `fuse` kernel module (in a container, pass the device in)"
        );
    }
    let mountpoint = std::fs::canonicalize(&a.mountpoint)
        .with_context(|| format!("mountpoint {}", a.mountpoint.display()))?;
    let repo = open(g)?;
    // Shared, as long as the mount lasts, and taken before the snapshots and
    // the index are read: a prune must not delete packs that files here are
    // read from.
    let lock = cairn::lock::acquire(&repo, false)?;
    let filter = a.filter.filter()?;
    let (all, unreadable) = repo.list_snapshots_lenient()?;
    for (id, e) in &unreadable {
        eprintln!(
            "warning: snapshot {} is unreadable and is not mounted: {}",
            id.short(),
            output::printable(&e.to_string())
        );
    }
    let snapshots: Vec<_> = all.into_iter().filter(|(_, s)| filter.matches(s)).collect();
    if snapshots.is_empty() && !g.quiet {
        eprintln!("warning: no snapshot matches; the filesystem will list none");
    }
    let index = Arc::new(super::load_index(g, &repo)?);
    // Read failures are reported even with --quiet: they are data that can't
    // be had.
    let warn: cairn::mount::Warn =
        Box::new(|m: &str| eprintln!("warning: {}", output::printable(m)));
    let fs = MountFs::new(Arc::clone(&repo), index, snapshots, warn);
    let stats = fs.stats();
    let mounted = fs.snapshot_count();

    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoDev,
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::FSName("cairn".into()),
        fuser::MountOption::Subtype("cairn".into()),
    ];
    if a.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(4);
    let session = fuser::Session::new(fs, &mountpoint, &config)
        .with_context(|| format!("mounting the FUSE filesystem at {}", mountpoint.display()))?;
    let bg = session
        .spawn()
        .context("starting the filesystem's thread")?;

    let said = if g.json {
        json_line(&serde_json::json!({
            "message_type": "mounted",
            "mountpoint": mountpoint.display().to_string(),
            "snapshots": mounted,
        }))
    } else if !g.quiet {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "mounted {} read-only at {}; Ctrl-C or `umount {}` unmounts it",
            count(mounted, "snapshot", "snapshots"),
            output::path(&mountpoint),
            output::path(&mountpoint)
        )
        .and_then(|()| out.flush())
    } else {
        Ok(())
    };
    // No one to tell where it is mounted: unmount before stopping.
    let said = said.context("writing to standard output");

    let signalled = loop {
        if said.is_err() || super::signals::INTERRUPTED.load(Ordering::SeqCst) {
            break true;
        }
        if bg.guard.is_finished() {
            break false;
        }
        std::thread::sleep(POLL);
    };
    let mut detached = false;
    if signalled {
        detached = unmount(&mountpoint)?;
        if detached {
            eprintln!(
                "warning: {} was busy (a file or directory in it open); it is detached, \
                 and what still uses it gets errors from now on",
                output::path(&mountpoint)
            );
        }
    }
    // A lazily detached mount lives on until its last user lets go; the
    // session's thread would wait for that.
    if !detached {
        bg.join().context("the filesystem's session failed")?;
    }
    drop(lock);
    said?;

    let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    if g.json {
        output::print_json(&serde_json::json!({
            "message_type": "summary",
            "command": "mount",
            "mountpoint": mountpoint.display().to_string(),
            "snapshots": mounted,
            "unmounted_by": if signalled { "signal" } else { "umount" },
            "detached": detached,
            "reads": n(&stats.reads),
            "bytes_read": n(&stats.bytes_read),
            "blobs_read": n(&stats.blobs_read),
            "blob_cache_hits": n(&stats.cache_hits),
            "read_errors": n(&stats.read_errors),
            "duration_seconds": started.elapsed().as_secs_f64(),
        }))?;
    } else if !g.quiet {
        println!(
            "unmounted {} ({} of file contents read)",
            output::path(&mountpoint),
            bytes(n(&stats.bytes_read))
        );
    }
    if n(&stats.read_errors) > 0 {
        bail!(
            "{} failed (see the warnings); `cairn check --read-data` shows the damage",
            count(n(&stats.read_errors), "read", "reads")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One JSON line on standard output, flushed; a closed pipe is an error here
/// like any other, so the mount is undone before cairn stops.
fn json_line(v: &serde_json::Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v).map_err(std::io::Error::from)?;
    writeln!(out)?;
    out.flush()
}

/// Unmounts `mountpoint`; when it is busy, detaches it lazily instead and
/// returns true.
fn unmount(mountpoint: &Path) -> Result<bool> {
    let c = CString::new(mountpoint.as_os_str().as_bytes())
        .with_context(|| format!("unmounting {}", mountpoint.display()))?;
    // SAFETY: umount2 reads a NUL-terminated path and nothing else.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return Ok(false);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EBUSY) => {
            // SAFETY: as above.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
                Ok(true)
            } else {
                Err(std::io::Error::last_os_error())
                    .with_context(|| format!("detaching the busy mount {}", mountpoint.display()))
            }
        }
        // Unmounted meanwhile by someone else.
        Some(libc::EINVAL) => Ok(false),
        // Not root: the setuid helper may unmount it.
        Some(libc::EPERM) => {
            let status = std::process::Command::new("fusermount")
                .arg("-u")
                .arg(mountpoint)
                .status()
                .with_context(|| format!("running fusermount -u {}", mountpoint.display()))?;
            if !status.success() {
                bail!("fusermount -u {} failed", mountpoint.display());
            }
            Ok(false)
        }
        _ => Err(err).with_context(|| format!("unmounting {}", mountpoint.display())),
    }
}
