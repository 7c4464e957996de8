//! `cairn version`: the program's version and the repository format it speaks.

use std::process::ExitCode;

use anyhow::Result;

use super::{GlobalArgs, output};

/// Cargo features compiled in that change what cairn can do.
fn features() -> Vec<&'static str> {
    let mut f = Vec::new();
    if cfg!(feature = "s3") {
        f.push("s3");
    }
    f
}

pub fn run(g: &GlobalArgs) -> Result<ExitCode> {
    let version = env!("CARGO_PKG_VERSION");
    let format = cairn::format::FORMAT_VERSION;
    if g.json {
        output::print_json(&serde_json::json!({
            "program": "cairn",
            "version": version,
            "format_version": format,
            "features": features(),
        }))?;
    } else {
        println!("cairn {version}");
        println!("repository format version {format} (reads and writes version {format} only)");
        let f = features();
        if f.is_empty() {
            println!("features: none (directories only; no object storage)");
        } else {
            println!("features: {}", f.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}
