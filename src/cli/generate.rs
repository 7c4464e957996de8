//! `cairn generate`: shell completions and man pages, made from the same clap
//! definitions that parse the command line, so they never drift from it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use clap_complete::Shell;

use super::GlobalArgs;
use super::output::{self, count};

#[derive(Args)]
pub struct GenerateArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Write shell completion scripts into DIR: cairn.bash, _cairn (zsh) and
    /// cairn.fish
    Completions {
        /// Directory to write into (created if missing)
        dir: PathBuf,
        /// Only for this shell (repeatable)
        #[arg(long = "shell", value_enum, value_name = "SHELL")]
        shells: Vec<ShellName>,
    },
    /// Write man pages into DIR: cairn.1 and one per subcommand
    /// (cairn-backup.1, cairn-key-add.1, ...)
    Man {
        /// Directory to write into (created if missing)
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ShellName {
    Bash,
    Zsh,
    Fish,
}

impl ShellName {
    fn shell(self) -> Shell {
        match self {
            ShellName::Bash => Shell::Bash,
            ShellName::Zsh => Shell::Zsh,
            ShellName::Fish => Shell::Fish,
        }
    }
}

/// `cmd` is the whole command line's definition (`Cli::command()`).
pub fn run(g: &GlobalArgs, a: GenerateArgs, cmd: clap::Command) -> Result<ExitCode> {
    let (dir, written) = match a.what {
        What::Completions { dir, shells } => {
            let shells = if shells.is_empty() {
                vec![ShellName::Bash, ShellName::Zsh, ShellName::Fish]
            } else {
                shells
            };
            make_dir(&dir)?;
            let mut written = Vec::new();
            for s in shells {
                let mut cmd = cmd.clone();
                let path = clap_complete::generate_to(s.shell(), &mut cmd, "cairn", &dir)
                    .with_context(|| {
                        format!("writing {} completions into {}", s.shell(), dir.display())
                    })?;
                written.push(("completions", path));
            }
            (dir, written)
        }
        What::Man { dir } => {
            make_dir(&dir)?;
            let mut written = Vec::new();
            let mut cmd = cmd.disable_help_subcommand(true);
            cmd.build();
            man_pages(&cmd, &dir, &mut written)?;
            (dir, written)
        }
    };
    if g.json {
        for (kind, path) in &written {
            output::print_json(&serde_json::json!({
                "message_type": "generated",
                "kind": kind,
                "path": path.display().to_string(),
            }))?;
        }
        output::print_json(&serde_json::json!({
            "message_type": "summary",
            "command": "generate",
            "files": written.len(),
            "dir": dir.display().to_string(),
        }))?;
    } else if !g.quiet {
        for (_, path) in &written {
            println!("{}", output::path(path));
        }
        println!("{} written", count(written.len(), "file", "files"));
    }
    Ok(ExitCode::SUCCESS)
}

fn make_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// One page for `cmd` and one for each (visible) subcommand, recursively.
fn man_pages(
    cmd: &clap::Command,
    dir: &Path,
    written: &mut Vec<(&'static str, PathBuf)>,
) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, dir, written)?;
    }
    let man = clap_mangen::Man::new(cmd.clone());
    let path = man
        .generate_to(dir)
        .with_context(|| format!("writing {} into {}", man.get_filename(), dir.display()))?;
    written.push(("man", path));
    Ok(())
}
