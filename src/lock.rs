//! Lock files under `locks/` (format-spec/README.md §15).
//!
//! Shared locks (backup, restore, check) may coexist; an exclusive lock (prune,
//! forget, repair) excludes every other. A lock is stale when it is older than
//! [`STALE_AFTER`] without refresh, or when its process is provably gone: same
//! host, boot and PID namespace, and no such pid. Stale locks are ignored, and
//! removed automatically only when their process is provably gone.
//!
//! Hosts' clocks differ, so a lock dated in the future is fresh. A lock file that
//! can't be read may belong to a process this cairn can't understand: it keeps
//! exclusive operations out until its file time says it is stale.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::format::{self, FileKind, SealKind};
use crate::id::LockId;
use crate::repository::Repository;

pub const LOCK_MAX_LEN: u64 = 64 * 1024;
/// A lock not refreshed for this long is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub time: String,
    pub hostname: String,
    pub username: String,
    pub pid: u32,
    pub exclusive: bool,
    /// The holder's kernel boot id (`/proc/sys/kernel/random/boot_id`). Optional:
    /// locks of older writers lack it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The holder's PID namespace (the inode of `/proc/self/ns/pid`): containers
    /// sharing a hostname and a kernel differ here. Optional, like `boot_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_ns: Option<u64>,
    /// A claim on a backup plan's class (`plan run`): the holder is running
    /// that class. Claims keep two plan runs off one class; they don't
    /// conflict with other locks (the operations of the run take their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_class: Option<String>,
}

/// Where a process runs, as far as telling its pids apart goes: a pid means the
/// same process only on the same host, in the same boot and PID namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub hostname: Option<String>,
    pub boot_id: Option<String>,
    pub pid_ns: Option<u64>,
}

impl Place {
    /// This process's place, read once.
    pub fn here() -> &'static Place {
        static HERE: OnceLock<Place> = OnceLock::new();
        HERE.get_or_init(|| Place {
            hostname: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .filter(|h| !h.is_empty()),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
            pid_ns: {
                use std::os::unix::fs::MetadataExt;
                std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
            },
        })
    }
}

/// Whether `pid` names a process here. Only ESRCH says no: EPERM means it exists
/// under another user.
fn pid_running(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) != Err(nix::errno::Errno::ESRCH)
}

/// Whether a file last written at `file_time` has gone unreplaced for longer than
/// [`STALE_AFTER`] at `now`. Unknown or future file times are never stale.
fn file_stale(now: SystemTime, file_time: Option<SystemTime>) -> bool {
    file_time
        .and_then(|t| now.duration_since(t).ok())
        .is_some_and(|age| age > STALE_AFTER)
}

fn minutes(d: Duration) -> String {
    match d.as_secs() {
        s if s < 120 => format!("{s} s"),
        s => format!("{} min", s / 60),
    }
}

/// `t` in local time, for messages. (chrono's `From<SystemTime>` panics out of
/// range, and file times come from the storage.)
fn local_time(t: SystemTime) -> String {
    let secs = match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).ok(),
        Err(e) => i64::try_from(e.duration().as_secs()).ok().map(|s| -s),
    };
    secs.and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|d| {
            d.with_timezone(&chrono::Local)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
        })
        .unwrap_or_else(|| format!("{t:?}"))
}

impl Lock {
    /// A lock for this process, dated now.
    pub fn for_this_process(exclusive: bool) -> Lock {
        let here = Place::here();
        Lock {
            time: crate::snapshot::now_rfc3339(),
            hostname: crate::snapshot::hostname(),
            username: crate::snapshot::username(),
            pid: std::process::id(),
            exclusive,
            boot_id: here.boot_id.clone(),
            pid_ns: here.pid_ns,
            plan_class: None,
        }
    }

    /// The lock's `time`, if it parses.
    fn written(&self) -> Option<SystemTime> {
        chrono::DateTime::parse_from_rfc3339(&self.time)
            .ok()
            .map(SystemTime::from)
    }

    /// How far in the future the lock is dated, by our clock.
    fn ahead_by(&self, now: SystemTime) -> Option<Duration> {
        self.written()?.duration_since(now).ok()
    }

    /// Provably dead: written on this host, in this boot and PID namespace (all
    /// three known, in the lock and here), by a pid that is not running. Anything
    /// less proves nothing: containers share hostnames, and an old lock or one
    /// from another namespace names a pid we can't look up.
    pub fn process_gone(&self) -> bool {
        self.gone_given(Place::here(), pid_running)
    }

    fn gone_given(&self, here: &Place, running: impl Fn(i32) -> bool) -> bool {
        let same = |ours: Option<&str>, theirs: Option<&str>| ours.is_some() && ours == theirs;
        let same_place = same(here.hostname.as_deref(), Some(self.hostname.as_str()))
            && same(here.boot_id.as_deref(), self.boot_id.as_deref())
            && here.pid_ns.is_some()
            && here.pid_ns == self.pid_ns;
        // kill(0) probes our own process group, kill(-n) a group: only a positive
        // pid names one process.
        match i32::try_from(self.pid) {
            Ok(pid) if pid > 0 => same_place && !running(pid),
            _ => false,
        }
    }

    /// Why the lock is stale, or `None` if it is not. `file_time` is the lock
    /// file's modification time from the listing.
    pub fn stale_reason(&self, file_time: Option<SystemTime>) -> Option<String> {
        if self.process_gone() {
            return Some(format!("process {} is gone from this host", self.pid));
        }
        self.stale_by_time(SystemTime::now(), file_time)
    }

    pub fn is_stale(&self, file_time: Option<SystemTime>) -> bool {
        self.stale_reason(file_time).is_some()
    }

    fn stale_by_time(&self, now: SystemTime, file_time: Option<SystemTime>) -> Option<String> {
        let by_file = || {
            file_stale(now, file_time).then(|| {
                let age = file_time
                    .and_then(|t| now.duration_since(t).ok())
                    .unwrap_or_default();
                format!("its file has not been replaced for {}", minutes(age))
            })
        };
        match self.written().map(|t| now.duration_since(t)) {
            // Old by its writer's clock. Where the storage says when the file was
            // written, that must agree: a live holder whose clock runs behind ours
            // still replaces its file every REFRESH_EVERY.
            Some(Ok(age)) if age > STALE_AFTER => match file_time {
                Some(_) => by_file().map(|r| format!("not refreshed for {} and {r}", minutes(age))),
                None => Some(format!("not refreshed for {}", minutes(age))),
            },
            Some(Ok(_)) => None,
            // Dated in the future: the holder's clock runs ahead of ours, and its
            // lock is fresh — unless the file itself has gone unreplaced for
            // longer than a holder refreshing every REFRESH_EVERY would allow.
            Some(Err(_)) => by_file().map(|r| format!("dated in the future, but {r}")),
            // An authenticated lock with a time we can't parse: go by the file.
            None => by_file().map(|r| format!("its time is unreadable and {r}")),
        }
    }

    pub fn describe(&self, id: &LockId) -> String {
        let ahead = match self.ahead_by(SystemTime::now()) {
            Some(d) if d.as_secs() > 0 => format!(
                " (dated {} in the future: the clock of {} runs ahead of ours)",
                minutes(d),
                self.hostname
            ),
            _ => String::new(),
        };
        format!(
            "{} lock {} held by {}@{} (pid {}) since {}{ahead}",
            if self.exclusive {
                "exclusive"
            } else {
                "shared"
            },
            id.short(),
            self.username,
            self.hostname,
            self.pid,
            self.time
        )
    }
}

pub fn load_lock(repo: &Repository, id: &LockId) -> Result<Lock> {
    load_lock_named(repo, &id.to_hex())
}

fn load_lock_named(repo: &Repository, name: &str) -> Result<Lock> {
    let what = || format!("lock {name}");
    let plain = repo.load_sealed(
        FileKind::Lock,
        SealKind::Lock,
        FileType::Lock,
        name,
        LOCK_MAX_LEN,
        &what,
    )?;
    format::from_msgpack(&plain, &what)
}

/// One file under `locks/`, read or not.
pub struct Listed {
    pub id: LockId,
    /// The file name, as stored (it names the file even when it isn't `id`'s
    /// canonical spelling).
    pub name: String,
    /// The file's modification time, from the listing.
    pub modified: Option<SystemTime>,
    /// The lock, or why it can't be read: bad bytes, a name that isn't its hash,
    /// another repository's key, a newer format.
    pub lock: Result<Lock>,
}

impl Listed {
    /// Why the file can't be read, without repeating its name; `None` if it can.
    pub fn unreadable_because(&self) -> Option<String> {
        match &self.lock {
            Ok(_) => None,
            Err(Error::Corrupt { reason, .. }) => Some(reason.clone()),
            Err(e) => Some(e.to_string()),
        }
    }

    /// An unreadable lock is held by an unknown process until its file is
    /// [`STALE_AFTER`] old by file time. Where the storage gives no file time, it
    /// is held until `unlock --remove-all`.
    pub fn unreadable_is_stale(&self) -> bool {
        file_stale(SystemTime::now(), self.modified)
    }

    /// What an unreadable lock means and what to do about it, for `check`,
    /// `unlock` and the refusal of an exclusive lock.
    pub fn unreadable_advice(&self) -> String {
        let now = SystemTime::now();
        match self.modified {
            _ if file_stale(now, self.modified) => format!(
                "it is older than {} by its file time, so it blocks nothing; `cairn unlock` \
                 removes it",
                minutes(STALE_AFTER)
            ),
            Some(t) => format!(
                "it is taken as held by an unknown process: prune, forget and repair refuse to \
                 run until it is {} old by its file time (at {}); if no other cairn uses the \
                 repository, `cairn unlock --remove-all` removes it now",
                minutes(STALE_AFTER),
                t.checked_add(STALE_AFTER)
                    .map(local_time)
                    .unwrap_or_default()
            ),
            None => "it is taken as held by an unknown process, and the storage gives no file \
                     time to tell when it is stale: prune, forget and repair refuse to run until \
                     `cairn unlock --remove-all` removes it (make sure no other cairn uses the \
                     repository)"
                .to_string(),
        }
    }
}

/// A file that vanished between listing and reading: its lock was released.
fn vanished(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

/// Every lock file, read. Names that aren't 64 lowercase hex digits are not lock
/// files (format-spec §2; `check` notes them) and are left out.
///
/// A file that vanishes between the listing and its reading was released — or
/// replaced: a refresh writes the new lock, then removes the old one, and a
/// listing taken before the new one was written would miss a live holder. So a
/// pass that saw a file vanish is done again, with a new listing, until one sees
/// none vanish; after [`LIST_PASSES`] restless passes, taking a lock fails.
///
/// A name that vanished in the previous pass too is left out without making
/// the pass restless: the file is gone and only the listing still shows it.
/// Object storage does that for a while after an outage (a Garage node that
/// missed a deletion while it was down lists the file until it catches up);
/// what matters is that the new listing shows every lock written before it.
/// Passes after a restless one wait a little longer each time (50 ms doubling).
pub fn list_locks(repo: &Repository) -> Result<Vec<Listed>> {
    let mut gone: std::collections::HashSet<String> = std::collections::HashSet::new();
    for pass in 0..LIST_PASSES {
        if pass > 0 {
            let wait = Duration::from_millis(50u64 << (pass - 1).min(5));
            std::thread::sleep(wait);
        }
        let mut out = Vec::new();
        let mut restless = false;
        let mut gone_now = std::collections::HashSet::new();
        for e in repo.backend().list(FileType::Lock)? {
            let Ok(id) = LockId::from_name(&e.name) else {
                continue;
            };
            if gone.contains(&e.name) {
                // Gone at the last pass: don't read it again.
                gone_now.insert(e.name);
                continue;
            }
            let lock = load_lock_named(repo, &e.name);
            if lock.as_ref().err().is_some_and(vanished) {
                restless = true;
                gone_now.insert(e.name);
                continue;
            }
            out.push(Listed {
                id,
                name: e.name,
                modified: e.modified,
                lock,
            });
        }
        if !restless {
            return Ok(out);
        }
        gone.extend(gone_now);
    }
    Err(Error::Locked(format!(
        "lock files kept disappearing while this process read them ({LIST_PASSES} times): \
         another process is taking and releasing locks; try again"
    )))
}

/// Listings of `locks/` [`list_locks`] takes before it gives up.
const LIST_PASSES: usize = 8;

/// How often a held lock is rewritten with a fresh time.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

struct Held {
    id: LockId,
    /// Wall-clock time of the last successful write: a monotonic clock stops while
    /// a laptop sleeps, and the point is to notice exactly that.
    refreshed: SystemTime,
}

/// Held while an operation runs: refreshed in the background, removed when dropped.
pub struct LockGuard {
    repo: Arc<Repository>,
    held: Arc<Mutex<Held>>,
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

impl LockGuard {
    /// As if the last refresh had been `ago` ago (a machine that slept): for
    /// tests of the commit-point checks.
    #[cfg(test)]
    pub(crate) fn pretend_refreshed(&self, ago: Duration) {
        if let Ok(mut h) = self.held.lock() {
            h.refreshed = SystemTime::now() - ago;
        }
    }

    pub fn id(&self) -> LockId {
        self.held.lock().map(|h| h.id).unwrap_or(LockId([0; 32]))
    }

    /// When the storage last wrote this lock's file, by the storage's own clock
    /// (`None` where it gives no file times): what prune measures the age of other
    /// files against, since the storage's clock and ours may differ.
    pub fn file_time(&self) -> Result<Option<SystemTime>> {
        // A refresh between reading the id and listing renames the file: look again.
        for _ in 0..3 {
            let own = self.id().to_hex();
            if let Some(e) = self
                .repo
                .backend()
                .list(FileType::Lock)?
                .into_iter()
                .find(|e| e.name == own)
            {
                return Ok(e.modified);
            }
        }
        Ok(None)
    }

    /// Fails if the lock has not been refreshed for so long that others may have
    /// considered it stale (and, say, pruned what this operation relies on). A
    /// backup calls this before committing its snapshot.
    pub fn still_valid(&self) -> Result<()> {
        let refreshed = self
            .held
            .lock()
            .map(|h| h.refreshed)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let now = SystemTime::now();
        let age = now.duration_since(refreshed).unwrap_or_default();
        if lapsed(refreshed, now) {
            return Err(Error::Locked(format!(
                "this process could not refresh its lock for {} s (was the machine asleep?); \
                 stopping instead of committing, as other processes may treat the lock as stale",
                age.as_secs()
            )));
        }
        Ok(())
    }
}

fn write_lock(repo: &Repository, exclusive: bool, class: Option<&str>) -> Result<LockId> {
    let mut lock = Lock::for_this_process(exclusive);
    lock.plan_class = class.map(str::to_string);
    let (name, _) = repo.save_sealed(
        FileKind::Lock,
        SealKind::Lock,
        FileType::Lock,
        &format::to_msgpack(&lock),
    )?;
    LockId::from_hex(&name)
}

fn refresh_loop(
    repo: Arc<Repository>,
    held: Arc<Mutex<Held>>,
    exclusive: bool,
    class: Option<String>,
    stop: mpsc::Receiver<()>,
) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(REFRESH_EVERY) {
        // The new lock is written before the old one is removed, so there is no
        // moment without a lock. A failed write keeps the old time, and
        // `still_valid` notices once it is too old.
        if let Ok(new_id) = write_lock(&repo, exclusive, class.as_deref()) {
            if let Some(old) = record_refresh(&held, new_id, SystemTime::now()) {
                let _ = repo.backend().remove(FileType::Lock, &old.to_hex());
            }
        }
    }
}

/// Records a refresh that wrote lock `new_id` at `now`; returns the id it replaces.
/// A refresh after a gap in which others may have taken the lock for stale (the
/// process was stopped, the machine slept, writes failed) doesn't make the lock
/// valid again: what they did meanwhile is unknown, so `still_valid` keeps failing.
fn record_refresh(held: &Mutex<Held>, new_id: LockId, now: SystemTime) -> Option<LockId> {
    let mut h = held.lock().ok()?;
    let old = h.id;
    h.id = new_id;
    if !lapsed(h.refreshed, now) {
        h.refreshed = now;
    }
    Some(old)
}

/// Whether a lock last refreshed at `refreshed` may have been taken for stale by
/// `now`.
fn lapsed(refreshed: SystemTime, now: SystemTime) -> bool {
    let age = now.duration_since(refreshed).unwrap_or_default();
    age + REFRESH_EVERY > STALE_AFTER
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.stop = None;
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let id = self.id();
        let _ = self.repo.backend().remove(FileType::Lock, &id.to_hex());
    }
}

/// Takes a lock: writes it first, then looks for conflicting ones, so that two
/// processes racing for conflicting locks can't both see "no conflict". Locks of
/// processes provably gone from this host are removed on the way.
pub fn acquire(repo: &Arc<Repository>, exclusive: bool) -> Result<LockGuard> {
    let guard = hold(repo, exclusive, None)?;
    let own = guard.id().to_hex();
    for other in list_locks(repo)? {
        if other.name == own {
            continue;
        }
        match &other.lock {
            Ok(l) if l.process_gone() => {
                let _ = repo.backend().remove(FileType::Lock, &other.name);
            }
            // A plan run's claim on a class guards nothing stored.
            Ok(l) if l.plan_class.is_some() => {}
            Ok(l) => {
                if (exclusive || l.exclusive) && !l.is_stale(other.modified) {
                    return Err(Error::Locked(format!(
                        "{}; wait for it to finish — if its process is gone, \
                         `cairn unlock --remove-all` removes it (plain `cairn unlock` only once \
                         it is stale)",
                        l.describe(&other.id)
                    )));
                }
            }
            // An unreadable lock may be a live process's (a newer cairn's, say):
            // nothing that deletes may run beside it. Shared operations may: a
            // backup checks its packs are still there before it commits, and
            // restore and check fail loudly on anything missing.
            Err(_) => {
                if exclusive && !other.unreadable_is_stale() {
                    return Err(Error::Locked(format!(
                        "lock file locks/{} can't be read ({}); {}",
                        other.name,
                        other.unreadable_because().unwrap_or_default(),
                        other.unreadable_advice()
                    )));
                }
            }
        }
    }
    Ok(guard)
}

/// Writes a lock and starts refreshing it; the caller looks for conflicts.
fn hold(repo: &Arc<Repository>, exclusive: bool, class: Option<&str>) -> Result<LockGuard> {
    let id = write_lock(repo, exclusive, class)?;
    let held = Arc::new(Mutex::new(Held {
        id,
        refreshed: SystemTime::now(),
    }));
    let (tx, rx) = mpsc::channel();
    let refresher = {
        let repo = Arc::clone(repo);
        let held = Arc::clone(&held);
        let class = class.map(str::to_string);
        std::thread::spawn(move || refresh_loop(repo, held, exclusive, class, rx))
    };
    Ok(LockGuard {
        repo: Arc::clone(repo),
        held,
        stop: Some(tx),
        refresher: Some(refresher),
    })
}

/// What [`claim_class`] found.
pub enum Claim {
    /// This process runs the class until the guard is dropped.
    Held(LockGuard),
    /// Another live claim on the class: who holds it.
    Busy(String),
}

/// Claims plan class `class` for this process, across every machine that uses
/// the repository: writes a claim, then lists `locks/`; if another live claim
/// on the class exists, this one is withdrawn and the class is busy. Two runs
/// that claim at the same moment may both withdraw (the class then waits for
/// the next run); they never both go on.
pub fn claim_class(repo: &Arc<Repository>, class: &str) -> Result<Claim> {
    let guard = hold(repo, false, Some(class))?;
    let own = guard.id().to_hex();
    for other in list_locks(repo)? {
        if other.name == own {
            continue;
        }
        if let Ok(l) = &other.lock {
            if l.plan_class.as_deref() == Some(class)
                && !l.process_gone()
                && !l.is_stale(other.modified)
            {
                return Ok(Claim::Busy(l.describe(&other.id)));
            }
        }
    }
    Ok(Claim::Held(guard))
}

/// What `unlock` did with one lock file.
pub struct Unlocked {
    pub id: LockId,
    pub description: String,
    pub removed: bool,
    /// Why it was removed or kept.
    pub reason: String,
}

/// Removes stale locks, or every lock with `all`. An unreadable lock is stale once
/// its file time is [`STALE_AFTER`] old (it might belong to a running process
/// until then).
pub fn unlock(repo: &Repository, all: bool) -> Result<Vec<Unlocked>> {
    let mut out = Vec::new();
    for l in list_locks(repo)? {
        let (description, stale_reason) = match &l.lock {
            Ok(lock) => (lock.describe(&l.id), lock.stale_reason(l.modified)),
            Err(_) => (
                format!(
                    "lock file locks/{} can't be read ({})",
                    l.name,
                    l.unreadable_because().unwrap_or_default()
                ),
                l.unreadable_is_stale()
                    .then(|| format!("older than {} by its file time", minutes(STALE_AFTER))),
            ),
        };
        let removed = all || stale_reason.is_some();
        let reason = match (stale_reason, &l.lock) {
            (Some(why), _) => format!("stale: {why}"),
            (None, _) if all => "--remove-all".to_string(),
            (None, Ok(_)) => "not stale".to_string(),
            (None, Err(_)) => l.unreadable_advice(),
        };
        if removed {
            match repo.backend().remove(FileType::Lock, &l.name) {
                Err(e) if !vanished(&e) => return Err(e),
                _ => {}
            }
        }
        out.push(Unlocked {
            id: l.id,
            description,
            removed,
            reason,
        });
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backend::LocalBackend;
    use crate::crypto::KdfParams;
    use crate::repository::InitOptions;

    /// A new repository with a cheap key, in a scratch directory (`r` in it).
    pub(crate) fn repo() -> (tempfile::TempDir, Arc<Repository>) {
        let dir = tempfile::tempdir().unwrap();
        let opts = InitOptions {
            kdf: Some(KdfParams::new(64, 1).unwrap()),
            ..Default::default()
        };
        let r = Repository::init(
            Arc::new(LocalBackend::new(dir.path().join("r"))),
            b"pw",
            opts,
        )
        .unwrap();
        (dir, Arc::new(r))
    }

    /// The sorted names of the repository's files of type `t`.
    pub(crate) fn names(repo: &Repository, t: crate::backend::FileType) -> Vec<String> {
        let mut v: Vec<String> = repo
            .backend()
            .list(t)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_lock_not_refreshed_in_time_refuses_to_commit() {
        let (_dir, repo) = repo();
        let guard = acquire(&repo, false).unwrap();
        assert!(guard.still_valid().is_ok());
        // As if the machine had slept for an hour.
        guard.pretend_refreshed(Duration::from_secs(3600));
        assert!(matches!(guard.still_valid(), Err(Error::Locked(_))));
    }

    /// A process stopped (Ctrl-Z, a VM paused, a laptop asleep) for longer than
    /// the staleness window may find its refresher running before its next commit
    /// point: the refresh writes a fresh lock file, but others may already have
    /// taken the old one for stale and acted on it (a backup committed a snapshot
    /// a prune's plan doesn't know of). The lock must stay invalid.
    #[test]
    fn a_refresh_after_a_lapse_does_not_make_the_lock_valid_again() {
        let (_dir, repo) = repo();
        let guard = acquire(&repo, true).unwrap();
        // Stopped for an hour; the refresher runs first on waking.
        guard.pretend_refreshed(Duration::from_secs(3600));
        record_refresh(&guard.held, guard.id(), SystemTime::now());
        assert!(matches!(guard.still_valid(), Err(Error::Locked(_))));
        // An ordinary refresh, on time, keeps a valid lock valid.
        guard.pretend_refreshed(REFRESH_EVERY);
        record_refresh(&guard.held, guard.id(), SystemTime::now());
        assert!(guard.still_valid().is_ok());
    }

    #[test]
    fn shared_locks_coexist_and_exclusive_ones_conflict() {
        let (_dir, repo) = repo();
        let a = acquire(&repo, false).unwrap();
        let b = acquire(&repo, false).unwrap();
        assert!(matches!(acquire(&repo, true), Err(Error::Locked(_))));
        drop((a, b));
        let x = acquire(&repo, true).unwrap();
        assert!(matches!(acquire(&repo, false), Err(Error::Locked(_))));
        drop(x);
        assert!(repo.backend().list(FileType::Lock).unwrap().is_empty());
    }

    fn dated(t: SystemTime) -> Lock {
        let mut l = Lock::for_this_process(true);
        l.hostname = "elsewhere".into();
        l.time = chrono::DateTime::<chrono::Utc>::from(t)
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, false);
        l
    }

    const MIN: Duration = Duration::from_secs(60);

    /// A local repository whose lock file `old` is "refreshed" the moment it is
    /// first read: `new` appears and `old` is gone, as when a holder's refresh
    /// runs between another process's listing and its reading.
    struct RefreshedWhileRead {
        inner: LocalBackend,
        swap: Mutex<Option<(String, String, Vec<u8>)>>,
    }

    impl crate::backend::Backend for RefreshedWhileRead {
        fn location(&self) -> String {
            self.inner.location()
        }
        fn create(&self) -> Result<()> {
            self.inner.create()
        }
        fn is_repository(&self) -> Result<bool> {
            self.inner.is_repository()
        }
        fn list(&self, t: FileType) -> Result<Vec<crate::backend::Entry>> {
            self.inner.list(t)
        }
        fn read(&self, t: FileType, name: &str, max: u64) -> Result<Vec<u8>> {
            let mut swap = self.swap.lock().unwrap();
            if let Some((old, new, bytes)) = swap.as_ref().filter(|(old, ..)| old == name) {
                self.inner.write(FileType::Lock, new, bytes)?;
                self.inner.remove(FileType::Lock, old)?;
                *swap = None;
            }
            self.inner.read(t, name, max)
        }
        fn read_range(&self, t: FileType, name: &str, off: u64, len: u64) -> Result<Vec<u8>> {
            self.inner.read_range(t, name, off, len)
        }
        fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<()> {
            self.inner.write(t, name, data)
        }
        fn remove(&self, t: FileType, name: &str) -> Result<()> {
            self.inner.remove(t, name)
        }
    }

    /// A local repository whose listing of `locks/` keeps showing a lock file
    /// that is gone, as object storage does after an outage (a node that
    /// missed the deletion lists it until it catches up).
    struct PhantomLock {
        inner: LocalBackend,
        phantom: String,
    }

    impl crate::backend::Backend for PhantomLock {
        fn location(&self) -> String {
            self.inner.location()
        }
        fn create(&self) -> Result<()> {
            self.inner.create()
        }
        fn is_repository(&self) -> Result<bool> {
            self.inner.is_repository()
        }
        fn list(&self, t: FileType) -> Result<Vec<crate::backend::Entry>> {
            let mut l = self.inner.list(t)?;
            if t == FileType::Lock {
                l.push(crate::backend::Entry {
                    name: self.phantom.clone(),
                    size: 100,
                    modified: Some(SystemTime::now()),
                });
            }
            Ok(l)
        }
        fn read(&self, t: FileType, name: &str, max: u64) -> Result<Vec<u8>> {
            self.inner.read(t, name, max)
        }
        fn read_range(&self, t: FileType, name: &str, off: u64, len: u64) -> Result<Vec<u8>> {
            self.inner.read_range(t, name, off, len)
        }
        fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<()> {
            self.inner.write(t, name, data)
        }
        fn remove(&self, t: FileType, name: &str) -> Result<()> {
            self.inner.remove(t, name)
        }
    }

    /// A lock file that the listing shows but that reads as gone, pass after
    /// pass, is gone: locks are taken (shared and exclusive) and a real
    /// exclusive lock beside it is still seen.
    #[test]
    fn a_listed_lock_that_stays_gone_is_not_a_holder() {
        let (dir, _repo) = repo();
        let backend = Arc::new(PhantomLock {
            inner: LocalBackend::new(dir.path().join("r")),
            phantom: "ab".repeat(32),
        });
        let repo = Arc::new(Repository::open(backend, b"pw").unwrap());
        drop(acquire(&repo, false).expect("shared lock beside a phantom"));
        let held = acquire(&repo, true).expect("exclusive lock beside a phantom");
        let err = acquire(&repo, false)
            .err()
            .expect("the real holder conflicts");
        assert!(err.to_string().contains("exclusive lock"), "{err}");
        drop(held);
    }

    /// A live exclusive lock refreshed between another process's listing and
    /// reading must still be seen: its old file vanished, its new one wasn't
    /// listed, and taking that for "released" let a prune run beside a backup.
    #[test]
    fn a_lock_refreshed_while_being_listed_still_conflicts() {
        let (dir, repo) = repo();
        let sealed = |l: &Lock| {
            let (name, _) = repo
                .save_sealed(
                    FileKind::Lock,
                    SealKind::Lock,
                    FileType::Lock,
                    &format::to_msgpack(l),
                )
                .unwrap();
            name
        };
        let held = dated(SystemTime::now());
        let old = sealed(&held);
        let new = sealed(&Lock {
            time: crate::snapshot::now_rfc3339(),
            ..held
        });
        let new_bytes = repo
            .backend()
            .read(FileType::Lock, &new, LOCK_MAX_LEN)
            .unwrap();
        repo.backend().remove(FileType::Lock, &new).unwrap();
        let backend = Arc::new(RefreshedWhileRead {
            inner: LocalBackend::new(dir.path().join("r")),
            swap: Mutex::new(Some((old, new.clone(), new_bytes))),
        });
        let racing = Arc::new(Repository::open(backend, b"pw").unwrap());
        let err = acquire(&racing, true)
            .err()
            .expect("the refreshed lock conflicts");
        assert!(matches!(err, Error::Locked(_)), "{err}");
        assert!(err.to_string().contains("exclusive lock"), "{err}");
        assert!(
            repo.backend()
                .list(FileType::Lock)
                .unwrap()
                .iter()
                .any(|e| e.name == new)
        );
    }

    #[test]
    fn lock_dated_in_the_future_is_fresh_until_its_file_is_stale() {
        let now = SystemTime::now();
        let ahead = dated(now + 10 * MIN);
        assert_eq!(ahead.stale_by_time(now, None), None);
        assert_eq!(ahead.stale_by_time(now, Some(now)), None);
        assert_eq!(ahead.stale_by_time(now, Some(now - 29 * MIN)), None);
        // Far ahead: fresh while its file is being replaced...
        let far = dated(now + 100_000 * MIN);
        assert_eq!(far.stale_by_time(now, Some(now - 4 * MIN)), None);
        assert_eq!(far.stale_by_time(now, None), None);
        assert!(!far.is_stale(Some(now)));
        // ...stale once its file is older than a refresh would allow.
        assert!(far.stale_by_time(now, Some(now - 31 * MIN)).is_some());
        assert!(ahead.stale_by_time(now, Some(now - 31 * MIN)).is_some());
        // A file time in the future says nothing either.
        assert_eq!(far.stale_by_time(now, Some(now + 60 * MIN)), None);
    }

    /// A lock is stale by time when its own time says so and, where the storage
    /// gives one, its file time agrees: a live holder whose clock runs 40 minutes
    /// behind still writes a new file every 5 minutes.
    #[test]
    fn lock_is_stale_by_time_only_when_its_time_and_file_time_agree() {
        let now = SystemTime::now();
        assert_eq!(dated(now - 29 * MIN).stale_by_time(now, None), None);
        assert_eq!(
            dated(now - MIN).stale_by_time(now, Some(now - 60 * MIN)),
            None
        );
        assert!(dated(now - 31 * MIN).stale_by_time(now, None).is_some());
        assert_eq!(
            dated(now - 40 * MIN).stale_by_time(now, Some(now - MIN)),
            None,
            "a holder whose clock runs behind, refreshing its file"
        );
        assert!(
            dated(now - 40 * MIN)
                .stale_by_time(now, Some(now - 31 * MIN))
                .is_some()
        );
        let mut bad_time = dated(now);
        bad_time.time = "yesterday".into();
        assert_eq!(bad_time.stale_by_time(now, Some(now)), None);
        assert_eq!(bad_time.stale_by_time(now, None), None);
        assert!(bad_time.stale_by_time(now, Some(now - 31 * MIN)).is_some());
    }

    fn place() -> Place {
        Place {
            hostname: Some("box".into()),
            boot_id: Some("b00t".into()),
            pid_ns: Some(4026531836),
        }
    }

    fn lock_from(p: &Place, pid: u32) -> Lock {
        Lock {
            time: crate::snapshot::now_rfc3339(),
            hostname: p.hostname.clone().unwrap(),
            username: "u".into(),
            pid,
            exclusive: false,
            boot_id: p.boot_id.clone(),
            pid_ns: p.pid_ns,
            plan_class: None,
        }
    }

    const NOBODY_RUNS: fn(i32) -> bool = |_| false;

    #[test]
    fn same_host_boot_and_namespace_and_no_such_pid_is_dead() {
        let here = place();
        assert!(lock_from(&here, 4242).gone_given(&here, NOBODY_RUNS));
        assert!(!lock_from(&here, 4242).gone_given(&here, |pid| pid == 4242));
    }

    #[test]
    fn same_host_other_pid_namespace_is_not_dead() {
        let here = place();
        let mut l = lock_from(&here, 4242);
        l.pid_ns = Some(4026532999);
        assert!(!l.gone_given(&here, NOBODY_RUNS));
        let mut l = lock_from(&here, 4242);
        l.boot_id = Some("another boot".into());
        assert!(!l.gone_given(&here, NOBODY_RUNS));
        let mut l = lock_from(&here, 4242);
        l.hostname = "other".into();
        assert!(!l.gone_given(&here, NOBODY_RUNS));
    }

    #[test]
    fn lock_or_host_missing_identity_fields_is_not_dead() {
        let here = place();
        let mut old = lock_from(&here, 4242);
        old.boot_id = None;
        assert!(!old.gone_given(&here, NOBODY_RUNS));
        let mut old = lock_from(&here, 4242);
        old.pid_ns = None;
        assert!(!old.gone_given(&here, NOBODY_RUNS));
        // Nor when this host can't tell its own.
        let l = lock_from(&here, 4242);
        for blind in [
            Place {
                boot_id: None,
                ..place()
            },
            Place {
                pid_ns: None,
                ..place()
            },
            Place {
                hostname: None,
                ..place()
            },
        ] {
            assert!(!l.gone_given(&blind, NOBODY_RUNS), "{blind:?}");
        }
        // An old lock (no fields) from this very host and a dead pid: alive
        // until stale by time.
        let mut dead_pid = lock_from(&here, 0);
        dead_pid.hostname = crate::snapshot::hostname();
        dead_pid.boot_id = None;
        dead_pid.pid_ns = None;
        dead_pid.pid = exited_pid();
        assert!(!dead_pid.process_gone());
    }

    #[test]
    fn pid_zero_or_too_large_is_never_dead() {
        let here = place();
        for pid in [0, u32::MAX, i32::MAX as u32 + 1] {
            assert!(
                !lock_from(&here, pid).gone_given(&here, NOBODY_RUNS),
                "{pid}"
            );
        }
        // And through the real probe: kill(0) would probe our process group,
        // kill(-1) every process.
        let mut l = Lock::for_this_process(false);
        for pid in [0, u32::MAX] {
            l.pid = pid;
            assert!(!l.process_gone(), "{pid}");
        }
    }

    fn exited_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn this_process_is_alive_and_an_exited_one_is_dead() {
        let mut l = Lock::for_this_process(false);
        assert!(!l.process_gone());
        if Place::here().boot_id.is_some() && Place::here().pid_ns.is_some() {
            l.pid = exited_pid();
            assert!(l.process_gone());
        }
    }

    #[test]
    fn identity_fields_are_optional_on_the_wire() {
        #[derive(Serialize, Deserialize)]
        struct Before {
            time: String,
            hostname: String,
            username: String,
            pid: u32,
            exclusive: bool,
        }
        let old = Before {
            time: "2026-11-24T10:15:30.123456789+01:00".into(),
            hostname: "h".into(),
            username: "u".into(),
            pid: 7,
            exclusive: true,
        };
        let bytes = format::to_msgpack(&old);
        let l: Lock = format::from_msgpack(&bytes, &|| "lock".into()).unwrap();
        assert_eq!((l.boot_id.as_deref(), l.pid_ns), (None, None));
        // Written without them, a lock is byte for byte what older cairns wrote.
        assert_eq!(format::to_msgpack(&l), bytes);
        let mut new = l.clone();
        new.boot_id = Some("b".into());
        new.pid_ns = Some(9);
        let back: Lock =
            format::from_msgpack(&format::to_msgpack(&new), &|| "lock".into()).unwrap();
        assert_eq!(back, new);
    }

    /// Writes garbage under a lock name, with a file time `age` in the past.
    fn junk_lock(repo: &Repository, name: &str, age: Duration) {
        repo.backend()
            .write(FileType::Lock, name, b"not a lock")
            .unwrap();
        let path = repo.backend().location() + "/locks/" + name;
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(SystemTime::now() - age)
            .unwrap();
    }

    #[test]
    fn unreadable_lock_blocks_exclusive_locks_until_stale_by_file_time() {
        let (_dir, repo) = repo();
        let name = "ab".repeat(32);
        junk_lock(&repo, &name, MIN);
        // Shared locks go ahead; exclusive ones are refused, naming the file.
        drop(acquire(&repo, false).unwrap());
        match acquire(&repo, true) {
            Err(Error::Locked(m)) => assert!(m.contains(&name), "{m}"),
            _ => panic!("an unreadable lock must block an exclusive one"),
        }
        // Plain unlock keeps it and says why.
        let u = unlock(&repo, false).unwrap();
        assert!(!u[0].removed && u[0].reason.contains("unknown process"));
        // Stale by its file time: blocks nothing, and plain unlock removes it.
        repo.backend().remove(FileType::Lock, &name).unwrap();
        junk_lock(&repo, &name, 31 * MIN);
        drop(acquire(&repo, true).unwrap());
        let u = unlock(&repo, false).unwrap();
        assert!(
            u[0].removed && u[0].reason.contains("file time"),
            "{}",
            u[0].reason
        );
        assert!(repo.backend().list(FileType::Lock).unwrap().is_empty());
    }
}
