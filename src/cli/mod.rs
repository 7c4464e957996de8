//! Command-line edge: flags → validated options → library calls. Errors become
//! `anyhow` with context here, and exit codes follow restic's so scripts carry over.

mod backup;
mod cat;
mod check;
mod copy;
mod drill;
mod forget;
mod generate;
mod init;
mod inspect;
mod key;
mod ls;
mod mount;
mod output;
mod password;
mod plan;
mod progress;
mod prune;
mod repair;
mod restore;
mod rewrite;
pub mod signals;
mod snapshots;
mod tag;
mod unlock;
mod version;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};

use cairn::crypto::KdfParams;
use cairn::repository::Repository;
use cairn::select::SnapshotFilter;

pub const EXIT_ERROR: u8 = 1;
/// A command line that can't be carried out as given; clap's own usage errors
/// exit with the same code.
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_PARTIAL: u8 = 3;
pub const EXIT_NO_REPO: u8 = 10;
pub const EXIT_LOCKED: u8 = 11;
pub const EXIT_WRONG_PASSWORD: u8 = 12;
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Content-addressed, deduplicating, encrypted backups"
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args, Clone)]
pub struct GlobalArgs {
    /// Repository: a directory, or object storage as s3:http(s)://HOST[:PORT]/BUCKET/PREFIX
    /// or s3:BUCKET/PREFIX (credentials, region and endpoint from the AWS_*
    /// variables)
    #[arg(short = 'r', long = "repo", env = "CAIRN_REPOSITORY", global = true)]
    pub repo: Option<PathBuf>,
    /// Read the password from this file (all of it but a final newline).
    /// Overrides the CAIRN_PASSWORD* variables
    #[arg(long, global = true, conflicts_with = "password_command")]
    pub password_file: Option<PathBuf>,
    /// Run this shell command and use its output as the password. Overrides
    /// the CAIRN_PASSWORD* variables
    #[arg(long, global = true)]
    pub password_command: Option<String>,
    /// Print only errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Machine-readable output (JSON)
    #[arg(long, global = true)]
    pub json: bool,
    /// Don't use the local cache of index files, snapshots and trees
    /// ($CAIRN_CACHE_DIR, else $XDG_CACHE_HOME/cairn, else ~/.cache/cairn)
    #[arg(long, global = true)]
    pub no_cache: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a new repository
    Init(init::InitArgs),
    /// Back up files and directories (or standard input)
    Backup(backup::BackupArgs),
    /// List snapshots
    Snapshots(snapshots::SnapshotsArgs),
    /// List the files in a snapshot
    Ls(ls::LsArgs),
    #[command(flatten)]
    Inspect(inspect::InspectCmd),
    /// Mount the repository as a read-only filesystem (FUSE) until unmounted or interrupted
    Mount(mount::MountArgs),
    /// Restore a snapshot, a sub-tree or a file
    Restore(restore::RestoreArgs),
    /// Copy snapshots from another repository (--from-repo) into this one
    Copy(copy::CopyArgs),
    /// Change the tags of snapshots (each changed one is replaced by a new snapshot)
    Tag(tag::TagArgs),
    /// Remove files and directories from existing snapshots (writes new snapshots)
    Rewrite(rewrite::RewriteArgs),
    /// Print a stored object (for inspection and debugging)
    Cat(cat::CatArgs),
    /// Verify the repository: structure, and with --read-data every byte
    Check(check::CheckArgs),
    /// Rehearse a restore: restore a random sample of a snapshot's files into a
    /// scratch directory, verify every byte and the metadata, record the result
    Drill(drill::DrillArgs),
    /// Remove snapshots by a retention policy (or by id)
    Forget(forget::ForgetArgs),
    /// Delete data no snapshot needs, and repack mostly unused packs
    Prune(prune::PruneCmd),
    /// Rebuild the index, salvage damaged packs, or rewrite snapshots that name lost data
    Repair(repair::RepairArgs),
    /// Remove stale locks (or all locks with --remove-all)
    Unlock(unlock::UnlockArgs),
    /// List, add and remove keys (passwords, or generated secret files), or change a
    /// password
    #[command(subcommand)]
    Key(key::KeyCmd),
    /// Backup plans: classes of data with their own schedule, retention and copies
    Plan(plan::PlanCmd),
    /// Print cairn's version and the repository format version it reads and writes
    Version,
    /// Write shell completions or man pages, generated from these definitions
    Generate(generate::GenerateArgs),
}

/// Snapshot filters shared by commands that choose snapshots (as restic's): they
/// decide which snapshots `latest`, `latest~N` and id prefixes may name. A
/// sub-tree is chosen by `SNAPSHOT:PATH` (or `--include`), never by `--path`.
#[derive(Args, Clone, Default)]
pub struct FilterArgs {
    /// Only snapshots of this host (repeatable)
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only snapshots with this tag (repeatable; all must match)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only snapshots that backed up this path (repeatable; all must match)
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
}

impl FilterArgs {
    /// Paths are made absolute and lose `.` parts and trailing slashes, as
    /// `backup` records them.
    pub fn filter(&self) -> Result<SnapshotFilter> {
        let paths = self
            .paths
            .iter()
            .map(|p| {
                std::path::absolute(p)
                    .map(|a| a.components().collect::<PathBuf>().display().to_string())
                    .with_context(|| format!("--path {p}"))
            })
            .collect::<Result<_>>()?;
        Ok(SnapshotFilter {
            hosts: self.hosts.clone(),
            tags: self.tags.clone(),
            paths,
        })
    }

    /// Resolves `SNAPSHOT[:PATH]` among the snapshots these filters let through.
    /// When none does and `--path` was given, says that `--path` chooses
    /// snapshots: restic users know that, others may have meant a sub-tree.
    pub fn resolve(&self, repo: &Repository, spec: &str) -> Result<cairn::select::Selected> {
        let filter = self.filter()?;
        cairn::select::resolve(repo, spec, &filter).map_err(|e| {
            if filter.paths.is_empty() {
                return e.into();
            }
            anyhow::Error::new(e).context(format!(
                "choosing {spec:?} among the snapshots that backed up {} (--path chooses \
                 snapshots; for a part of one, use SNAPSHOT:PATH or --include)",
                filter.paths.join(" and ")
            ))
        })
    }
}

/// The other repository of `copy` (which reads from it) and `init --from-repo`
/// (which shares its blob ids and chunking), with its own password sources,
/// chosen as the main password's are.
#[derive(Args, Clone, Default)]
pub struct FromRepoArgs {
    /// The other repository: copy reads snapshots from it; init shares its blob
    /// ids and chunking, so that copies between the two move blobs as they are
    #[arg(long = "from-repo", value_name = "DIR")]
    pub from_repo: Option<PathBuf>,
    /// Read the --from-repo password from this file. Overrides the
    /// CAIRN_FROM_PASSWORD* variables
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "from_password_command",
        requires = "from_repo"
    )]
    pub from_password_file: Option<PathBuf>,
    /// Run this shell command and use its output as the --from-repo password.
    /// Overrides the CAIRN_FROM_PASSWORD* variables
    #[arg(long, value_name = "COMMAND", requires = "from_repo")]
    pub from_password_command: Option<String>,
}

/// Argon2id cost of a new password key (`init`, `key add`). The defaults are
/// RFC 9106's second recommended option; existing keys keep the parameters
/// stored in them.
#[derive(Args, Clone)]
pub struct KdfArgs {
    /// Argon2id memory in KiB for the password key. Caps: 1 GiB, and memory ×
    /// iterations 4 GiB (e.g. 1 GiB × 4 or 256 MiB × 16)
    #[arg(long, value_name = "KIB", default_value_t = cairn::crypto::KDF_DEFAULT_MEMORY_KIB)]
    pub kdf_memory: u32,
    /// Argon2id iterations (passes over the memory); at most 16
    #[arg(long, value_name = "N", default_value_t = cairn::crypto::KDF_DEFAULT_ITERATIONS)]
    pub kdf_iterations: u32,
    /// Argon2id lanes (its parallelism parameter); at most 16, and at least 8 KiB
    /// of memory each
    #[arg(long, value_name = "N", default_value_t = cairn::crypto::KDF_DEFAULT_LANES)]
    pub kdf_lanes: u32,
}

impl KdfArgs {
    /// Values above the caps of format-spec §17 are refused, with the flags named.
    pub fn params(&self) -> Result<KdfParams> {
        let (m, it, p) = (self.kdf_memory, self.kdf_iterations, self.kdf_lanes);
        KdfParams::with_lanes(m, it, p)
            .with_context(|| format!("--kdf-memory {m} --kdf-iterations {it} --kdf-lanes {p}"))
    }
}

/// A command line that can't be carried out as given (flags that exclude each
/// other, a missing operand, a value out of range): exits [`EXIT_USAGE`].
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    Usage(msg.into()).into()
}

/// Set while `check` runs: its errors are the report, not a reason to run it.
static IN_CHECK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    if matches!(cli.command, Cmd::Check(_)) {
        IN_CHECK.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let g = &cli.global;
    match cli.command {
        Cmd::Init(a) => init::run(g, a),
        Cmd::Backup(a) => backup::run(g, a),
        Cmd::Snapshots(a) => snapshots::run(g, a),
        Cmd::Ls(a) => ls::run(g, a),
        Cmd::Restore(a) => restore::run(g, a),
        Cmd::Copy(a) => copy::run(g, a),
        Cmd::Cat(a) => cat::run(g, a),
        Cmd::Check(a) => check::run(g, a),
        Cmd::Drill(a) => drill::run(g, a),
        Cmd::Unlock(a) => unlock::run(g, a),
        Cmd::Forget(a) => forget::run(g, a),
        Cmd::Prune(a) => prune::run(g, a),
        Cmd::Mount(a) => mount::run(g, a),
        Cmd::Repair(a) => repair::run(g, a),
        Cmd::Tag(a) => tag::run(g, a),
        Cmd::Rewrite(a) => rewrite::run(g, a),
        Cmd::Key(c) => key::run(g, c),
        Cmd::Plan(a) => plan::run(g, a),
        Cmd::Inspect(c) => inspect::run(g, c),
        Cmd::Version => version::run(g),
        Cmd::Generate(a) => generate::run(g, a, Cli::command()),
    }
}

pub fn repo_path(g: &GlobalArgs) -> Result<PathBuf> {
    g.repo
        .clone()
        .ok_or_else(|| usage("no repository given: use -r/--repo or set CAIRN_REPOSITORY"))
}

/// Opens the repository with the local cache, for commands that read it.
pub fn open(g: &GlobalArgs) -> Result<Arc<Repository>> {
    let repo = open_with(g, !g.no_cache)?;
    warn_if_missing(g, &repo, &repo_path(g)?);
    Ok(repo)
}

/// Opens the repository without the cache, for commands that audit or rewrite it
/// (`check`, `prune`, `repair`, `forget`, `cat`): they must see its own bytes.
pub fn open_uncached(g: &GlobalArgs) -> Result<Arc<Repository>> {
    let repo = open_with(g, false)?;
    warn_if_missing(g, &repo, &repo_path(g)?);
    Ok(repo)
}

/// [`open_uncached`] without the comparison with what this user saw before:
/// for `check`, which makes it itself.
pub fn open_for_check(g: &GlobalArgs) -> Result<Arc<Repository>> {
    open_with(g, false)
}

/// Compares the repository with what this user's cairn saw there before
/// (`cairn::seen`); `None` where there is no cache directory to keep that in.
pub fn observe(g: &GlobalArgs, repo: &Repository) -> Option<cairn::seen::Observation> {
    let base = cairn::cache::base_dir()?;
    match cairn::seen::observe(repo, &base) {
        Ok(o) => {
            if let (Some(why), false) = (&o.reset, g.quiet) {
                eprintln!(
                    "warning: the record of what this user saw in the repository could not be \
                     read ({}); it starts afresh",
                    output::printable(why)
                );
            }
            Some(o)
        }
        Err(e) => {
            if !g.quiet {
                eprintln!(
                    "warning: could not compare the repository with what this user saw there \
                     before: {}",
                    output::printable(&e.to_string())
                );
            }
            None
        }
    }
}

/// Warns (even with --quiet: it is about data gone) when snapshot or index
/// files this user saw are gone and no cairn command recorded removing them.
pub fn warn_if_missing(g: &GlobalArgs, repo: &Repository, location: &std::path::Path) {
    if let Some(o) = observe(g, repo) {
        if o.anything_missing() {
            eprintln!(
                "warning: {}",
                output::printable(&o.describe(&location.display().to_string()))
            );
        }
    }
}

fn open_with(g: &GlobalArgs, cached: bool) -> Result<Arc<Repository>> {
    let path = repo_path(g)?;
    let backend = cairn::backend::open(&path)?;
    // Check before asking for a password: no point prompting for a typo'd path.
    if !backend.is_repository()? {
        return Err(cairn::Error::NotARepository(path.display().to_string()).into());
    }
    if !g.quiet {
        for (p, mode) in backend.exposed_secrets() {
            eprintln!(
                "warning: {} can be read by other users (mode {mode:04o}): with a key file \
                 anyone can guess the password offline; `chmod 600` it (cairn creates \
                 repository files 0600 and directories 0700)",
                output::path(&p)
            );
        }
    }
    let pw = password::get(g, false)?;
    let mut repo = Repository::open(backend, &pw)?;
    if cached {
        if let Some(base) = cairn::cache::base_dir() {
            repo.enable_cache(&base);
        }
    }
    Ok(Arc::new(repo))
}

/// Opens the repository `--from-repo` names, with its own password, for
/// reading (with the local cache unless --no-cache).
pub fn open_source(g: &GlobalArgs, f: &FromRepoArgs) -> Result<Arc<Repository>> {
    let path = f
        .from_repo
        .clone()
        .ok_or_else(|| usage("no source repository given: use --from-repo"))?;
    let backend = cairn::backend::open(&path)?;
    if !backend.is_repository()? {
        return Err(cairn::Error::NotARepository(path.display().to_string()))
            .with_context(|| "--from-repo".to_string());
    }
    let pw = password::get_from(f, g.quiet)?;
    let mut repo = Repository::open(backend, &pw)
        .with_context(|| format!("opening the source repository {}", path.display()))?;
    if !g.no_cache {
        if let Some(base) = cairn::cache::base_dir() {
            repo.enable_cache(&base);
        }
    }
    warn_if_missing(g, &repo, &path);
    Ok(Arc::new(repo))
}

/// The repository's index, leaving out (with a warning) index files that can't be
/// read: for commands that only read, one damaged index file must not stop them.
pub fn load_index(g: &GlobalArgs, repo: &Repository) -> Result<cairn::index::Index> {
    let quiet = g.quiet;
    Ok(repo.load_index(&mut |id, e| {
        if !quiet {
            eprintln!(
                "warning: index {id} is unreadable and was left out ({}); blobs only it \
                 lists look missing. `cairn check` reports it, `cairn repair index` rebuilds it",
                output::printable(&e.to_string())
            );
        }
    })?)
}

/// Says which snapshots could not be read while choosing one.
pub fn warn_skipped(g: &GlobalArgs, skipped: &[(cairn::id::SnapshotId, cairn::Error)]) {
    if g.quiet {
        return;
    }
    for (id, e) in skipped {
        eprintln!(
            "warning: snapshot {} is unreadable and was skipped: {}",
            id.short(),
            output::printable(&e.to_string())
        );
    }
}

/// Whether the command failed writing its output into a pipe whose reader has
/// gone (`cairn ls ... | head`). Only standard output is written that way:
/// storage errors are never of this kind (object storage's are mapped to
/// others, naming the object).
pub fn is_broken_stdout(err: &anyhow::Error) -> bool {
    // A library error decides alone: its own source (a broken pipe to a
    // command a plan runs, say) is not standard output.
    match library_error(err) {
        Some(cairn::Error::Io { path, source }) => {
            path.as_os_str() == "standard output" && source.kind() == std::io::ErrorKind::BrokenPipe
        }
        Some(_) => false,
        None => err.chain().any(|e| {
            e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        }),
    }
}

/// The library error inside an anyhow chain, if any.
fn library_error(err: &anyhow::Error) -> Option<&cairn::Error> {
    err.chain().find_map(|e| e.downcast_ref::<cairn::Error>())
}

pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| e.downcast_ref::<Usage>().is_some()) {
        return EXIT_USAGE;
    }
    match library_error(err) {
        Some(cairn::Error::NotARepository(_)) => EXIT_NO_REPO,
        Some(cairn::Error::Locked(_)) => EXIT_LOCKED,
        Some(cairn::Error::WrongPassword { .. }) => EXIT_WRONG_PASSWORD,
        Some(cairn::Error::Interrupted) => EXIT_INTERRUPTED,
        _ => EXIT_ERROR,
    }
}

/// What to do next, for errors where that is not obvious.
pub fn hint(err: &anyhow::Error) -> &'static str {
    let in_check = IN_CHECK.load(std::sync::atomic::Ordering::Relaxed);
    match library_error(err) {
        Some(cairn::Error::Corrupt { .. }) if !in_check => {
            "\nrun `cairn check --read-data` to see the extent of the damage"
        }
        _ => "",
    }
}

/// One line: the context chain joined with ": ", control characters escaped
/// (messages name paths and values taken from the repository).
pub fn render_error(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in err.chain() {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    output::printable(&parts.join(": ")).into_owned()
}
