use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use cairn::inspect::dump;
use cairn::tree::NodeKind;

use crate::cli::output::{self, count};
use crate::cli::{FilterArgs, GlobalArgs, load_index, open, usage, warn_skipped};

#[derive(Clone, Copy, ValueEnum)]
enum Archive {
    /// GNU tar (long names and link targets as GNU extension entries)
    Tar,
}

#[derive(Args)]
pub struct DumpArgs {
    /// Snapshot: id prefix, latest or latest~N, optionally with :PATH
    snapshot: String,
    /// The file or directory to write (like SNAPSHOT:PATH); without either,
    /// the whole snapshot as an archive
    path: Option<String>,
    /// Write an archive of this format. A directory is always written as one
    /// (tar, the only format); with this, a single file is too, with its
    /// metadata, instead of as its bare bytes
    #[arg(long, value_enum)]
    archive: Option<Archive>,
    /// Write into this new file (created with mode 0600; an existing file is
    /// never overwritten) instead of standard output
    #[arg(long, value_name = "FILE")]
    target: Option<PathBuf>,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(g: &GlobalArgs, a: DumpArgs) -> Result<ExitCode> {
    if a.path.is_some() && a.snapshot.contains(':') {
        return Err(usage(
            "give the path either as SNAPSHOT:PATH or as the second argument, not both",
        ));
    }
    if g.json && a.target.is_none() {
        return Err(usage(
            "dump writes the data itself to standard output; with --json, give --target FILE \
             and the summary is printed as JSON",
        ));
    }
    let repo = open(g)?;
    let sel = a.filter.resolve(&repo, &a.snapshot)?;
    warn_skipped(g, &sel.skipped);
    let index = load_index(g, &repo)?;
    let path = a
        .path
        .clone()
        .or(sel.path.clone())
        .unwrap_or_else(|| "/".into());
    let found = cairn::inspect::locate(&repo, &index, &sel.snapshot.tree, &path)
        .with_context(|| format!("in snapshot {}", sel.id.short()))?;
    let as_tar = a.archive.is_some() || found.tree.is_some();
    let file = match (&found.node, as_tar) {
        (Some(n), false) if n.kind == NodeKind::File => Some(n),
        (Some(n), false) => {
            return Err(usage(format!(
                "{} is not a file (it is a {:?}); `--archive tar` writes it as an archive \
                 entry",
                output::path(&found.path),
                n.kind
            )));
        }
        _ => None,
    };
    let (mut w, label): (Box<dyn Write>, PathBuf) = match &a.target {
        Some(t) => (Box::new(create(t)?), t.clone()),
        None => {
            let stdout = std::io::stdout();
            // A file's bytes come from the repository as they are: escape
            // sequences in them would reach the terminal.
            if stdout.is_terminal() {
                return Err(usage(if as_tar {
                    "standard output is a terminal: redirect the archive into a file or a \
                     pipe (`> x.tar`, `| tar -t`), or use --target FILE"
                } else {
                    "standard output is a terminal: redirect the file's bytes into a file or \
                     a pipe (`> x`, `| less`), or use --target FILE"
                }));
            }
            let w = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            (Box::new(w), PathBuf::from("standard output"))
        }
    };
    let written = match file {
        Some(n) => dump::write_file(&repo, &index, n, &mut w, &label).map(Done::File),
        None => {
            let mut skipped = |p: &Path| {
                if !g.quiet {
                    eprintln!(
                        "warning: {} is a socket, which a tar archive can't hold; left out",
                        output::path(p)
                    );
                }
            };
            dump::write_tar(
                &repo,
                &index,
                &found.path,
                found.node.as_ref(),
                found.tree.as_ref(),
                &mut w,
                &label,
                &mut skipped,
            )
            .and_then(|(w, s)| {
                w.flush().map_err(|e| cairn::Error::io(&label, e))?;
                Ok(Done::Tar(s))
            })
        }
    };
    drop(w);
    let done = match (written, &a.target) {
        (Ok(d), _) => d,
        (Err(e), Some(t)) => {
            // An archive cut short looks whole to a reader that doesn't
            // check its end; leave nothing rather than that.
            let _ = std::fs::remove_file(t);
            return Err(e.into());
        }
        (Err(e), None) => return Err(e.into()),
    };
    if let Some(t) = &a.target {
        report(g, t, &done)?;
    }
    Ok(ExitCode::SUCCESS)
}

enum Done {
    File(u64),
    Tar(dump::TarSummary),
}

fn create(t: &Path) -> Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(t);
    match f {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
            "{}: the file already exists; dump never overwrites one, so give a new name",
            output::path(t)
        ),
        Err(e) => Err(e).with_context(|| format!("creating {}", output::path(t))),
    }
}

fn report(g: &GlobalArgs, t: &Path, done: &Done) -> Result<()> {
    let mut out = super::Out::new();
    if g.json {
        let mut v = serde_json::json!({
            "message_type": "summary",
            "command": "dump",
            "target": t.display().to_string(),
        });
        match done {
            Done::File(bytes) => {
                v["archive"] = serde_json::Value::Null;
                v["bytes"] = (*bytes).into();
            }
            Done::Tar(s) => {
                if let (Some(o), Ok(serde_json::Value::Object(more))) =
                    (v.as_object_mut(), serde_json::to_value(s))
                {
                    o.extend(more);
                }
                v["archive"] = "tar".into();
            }
        }
        out.json(&v)?;
    } else if !g.quiet {
        let what = match done {
            Done::File(bytes) => output::bytes(*bytes),
            Done::Tar(s) => format!(
                "a tar archive of {}, {}, {} ({} of file data)",
                count(s.files + s.hardlinks, "file", "files"),
                count(s.dirs, "directory", "directories"),
                count(s.symlinks + s.specials, "other entry", "other entries"),
                output::bytes(s.bytes)
            ),
        };
        out.line(format_args!("wrote {}: {what}", output::path(t)))?;
    }
    out.flush()?;
    Ok(())
}
