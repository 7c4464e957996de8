use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use cairn::config::ChunkerParams;
use cairn::crypto::MasterKey;
use cairn::repository::{InitOptions, Repository};

use super::{FromRepoArgs, GlobalArgs, KdfArgs, open_source, output, password, repo_path};

#[derive(Args)]
pub struct InitArgs {
    /// Chunk sizes MIN,AVG,MAX in bytes or with K/M suffixes [default: 512K,1M,8M,
    /// or with --from-repo that repository's]
    #[arg(long, value_name = "MIN,AVG,MAX", conflicts_with = "from_repo")]
    chunker_params: Option<String>,
    /// zstd level for new data: 0 stores raw, 1-22 trade speed for size
    #[arg(long, value_name = "N", default_value_t = cairn::config::DEFAULT_COMPRESSION)]
    compression: i32,
    /// Target pack size in MiB
    #[arg(long, value_name = "MIB", default_value_t = 16)]
    pack_size: u32,
    #[command(flatten)]
    kdf: KdfArgs,
    #[command(flatten)]
    from: FromRepoArgs,
}

pub fn run(g: &GlobalArgs, a: InitArgs) -> Result<ExitCode> {
    let path = repo_path(g)?;
    let chunker = match &a.chunker_params {
        Some(s) => ChunkerParams::parse(s)?,
        None => ChunkerParams::default(),
    };
    let pack_size = a
        .pack_size
        .checked_mul(1024 * 1024)
        .context("--pack-size is too large")?;
    let kdf = a.kdf.params()?;
    let backend = cairn::backend::open(&path)?;
    // Refuse a non-empty directory (or prefix in a bucket, or a bucket that
    // can't be reached) before asking for a password.
    if cairn::backend::is_remote(&path) {
        backend.create()?;
    } else if let Ok(mut rd) = std::fs::read_dir(&path) {
        if rd.next().is_some() {
            return Err(cairn::Error::RepositoryExists(path.display().to_string()).into());
        }
    }
    // The other repository is only read, its config and a key file: no lock, and
    // no cache to fill.
    let from = match &a.from.from_repo {
        Some(_) => {
            let uncached = GlobalArgs {
                no_cache: true,
                ..g.clone()
            };
            Some(open_source(&uncached, &a.from)?)
        }
        None => None,
    };
    let pw = password::get(g, true)?;
    let opts = InitOptions {
        chunker: from.as_ref().map_or(chunker, |f| f.config().chunker),
        compression: a.compression,
        pack_size,
        kdf: Some(kdf),
        share_ids_with: from
            .as_ref()
            .map(|f| MasterKey::from_bytes(&f.key().to_bytes())),
    };
    let repo = Repository::init(backend, &pw, opts)
        .with_context(|| format!("creating repository {}", path.display()))?;
    if g.json {
        output::print_json(&serde_json::json!({
            "message_type": "initialized",
            "repository": path.display().to_string(),
            "id": repo.repo_id().to_hex(),
            "shares_ids_with": from.as_ref().map(|f| f.repo_id().to_hex()),
        }))?;
    } else if !g.quiet {
        let c = repo.config();
        println!(
            "created cairn repository {} at {}\n  chunks {}/{}/{} (min/avg/max), zstd level {}, packs of {}",
            repo.repo_id().short(),
            path.display(),
            output::bytes(u64::from(c.chunker.min_size)),
            output::bytes(u64::from(c.chunker.avg_size)),
            output::bytes(u64::from(c.chunker.max_size)),
            c.compression,
            output::bytes(u64::from(c.pack_size)),
        );
        if let (Some(f), Some(p)) = (&from, &a.from.from_repo) {
            println!(
                "  shares blob ids and chunking with repository {} at {}: copies between \
                 the two move blobs as they are",
                f.repo_id().short(),
                p.display()
            );
        }
        println!("  keep the password safe: without it the data can't be read back");
    }
    Ok(ExitCode::SUCCESS)
}
