use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::{GlobalArgs, open, output};

#[derive(Args)]
pub struct UnlockArgs {
    /// Remove every lock, readable or not, not only stale ones (make sure no other
    /// cairn is running)
    #[arg(long)]
    remove_all: bool,
}

pub fn run(g: &GlobalArgs, a: UnlockArgs) -> Result<ExitCode> {
    let repo = open(g)?;
    let done = cairn::lock::unlock(&repo, a.remove_all)?;
    for u in &done {
        if g.json {
            output::print_json(&serde_json::json!({
                "message_type": "lock", "id": u.id.to_hex(), "removed": u.removed, "lock": u.description,
                "reason": u.reason,
            }))?;
        } else if !g.quiet {
            let verb = if u.removed { "removed" } else { "kept" };
            println!(
                "{verb}: {}; {}",
                output::printable(&u.description),
                output::printable(&u.reason)
            );
        }
    }
    if g.json {
        output::print_json(&serde_json::json!({
            "message_type": "summary",
            "command": "unlock",
            "locks_seen": done.len(),
            "locks_removed": done.iter().filter(|u| u.removed).count(),
        }))?;
    } else if !g.quiet && done.is_empty() {
        println!("no locks");
    }
    Ok(ExitCode::SUCCESS)
}
