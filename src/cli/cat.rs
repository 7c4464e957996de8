use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use cairn::backend::FileType;
use cairn::id::{BlobId, IndexId, KeyId, LockId, PackId, RecordId};
use cairn::repository::Repository;

use super::{FilterArgs, GlobalArgs, open_uncached, output, usage};

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Config,
    Snapshot,
    Index,
    /// A tree blob, as JSON (by id, or SNAPSHOT[:PATH])
    Tree,
    /// A data blob's raw bytes (file contents)
    Blob,
    Pack,
    Key,
    Lock,
    /// A record of a check or restore drill
    Record,
}

#[derive(Args)]
pub struct CatArgs {
    /// What to print
    kind: Kind,
    /// The object's id (a unique prefix for files; for `tree` also SNAPSHOT[:PATH])
    id: Option<String>,
    #[command(flatten)]
    filter: FilterArgs,
}

/// A stored file's full name from a unique prefix.
fn find_file(repo: &Repository, t: FileType, prefix: &str) -> Result<String> {
    let p = prefix.to_ascii_lowercase();
    let hits: Vec<String> = repo
        .backend()
        .list(t)?
        .into_iter()
        .map(|e| e.name)
        .filter(|n| n.starts_with(&p))
        .collect();
    match hits.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no {t:?} file starts with {prefix:?}"),
        _ => bail!(
            "{prefix:?} is ambiguous: {} {t:?} files start with it",
            hits.len()
        ),
    }
}

pub fn run(g: &GlobalArgs, a: CatArgs) -> Result<ExitCode> {
    let repo = open_uncached(g)?;
    let need_id = || {
        a.id.clone()
            .ok_or_else(|| usage("this kind of object needs an id"))
    };
    match a.kind {
        Kind::Config => output::print_json(repo.config())?,
        Kind::Snapshot => {
            let sel = a.filter.resolve(&repo, &need_id()?)?;
            output::print_json(&sel.snapshot)?;
        }
        Kind::Index => {
            let name = find_file(&repo, FileType::Index, &need_id()?)?;
            output::print_json(&repo.load_index_file(&IndexId::from_name(&name)?)?)?;
        }
        Kind::Tree => {
            let spec = need_id()?;
            let index = super::load_index(g, &repo)?;
            let tree = match BlobId::from_hex(&spec) {
                Ok(id) => repo.load_tree(&index, &id)?,
                Err(_) => {
                    let sel = a.filter.resolve(&repo, &spec)?;
                    let path = sel.path.unwrap_or_else(|| "/".into());
                    match cairn::walk::resolve(&repo, &index, &sel.snapshot.tree, &path)? {
                        cairn::walk::Selection::Dir { tree, .. } => tree,
                        cairn::walk::Selection::Node { path, .. } => {
                            bail!("{} is not a directory", path.display())
                        }
                    }
                }
            };
            output::print_json(&tree)?;
        }
        Kind::Blob => {
            let id = BlobId::from_hex(&need_id()?)?;
            let index = super::load_index(g, &repo)?;
            let data = repo.read_blob(&index, cairn::pack::BlobKind::Data, &id)?;
            std::io::stdout().lock().write_all(&data)?;
        }
        Kind::Pack => {
            let name = find_file(&repo, FileType::Pack, &need_id()?)?;
            let id = PackId::from_name(&name)?;
            let size = repo
                .backend()
                .list(FileType::Pack)?
                .into_iter()
                .find(|e| e.name == name)
                .map(|e| e.size)
                .context("pack vanished")?;
            let entries =
                cairn::pack::read_header(repo.backend(), repo.key(), repo.repo_id(), &id, size)?;
            output::print_json(
                &serde_json::json!({"id": name, "size": size, "blobs": entries.iter().map(|e| serde_json::json!({
                "type": format!("{:?}", e.kind).to_lowercase(), "id": e.id.to_hex(), "offset": e.offset,
                "length": e.length, "raw_length": e.raw_length,
            })).collect::<Vec<_>>()}),
            )?;
        }
        Kind::Key => {
            let name = find_file(&repo, FileType::Key, &need_id()?)?;
            let kf = cairn::keys::load_key_file(repo.backend(), &KeyId::from_name(&name)?)?;
            output::print_json(&serde_json::json!({
                "id": name, "repo_id": kf.repo_id.to_hex(), "created": kf.created,
                "hostname": kf.hostname, "username": kf.username,
                "kdf": {"algorithm": "argon2id", "memory_kib": kf.kdf.memory_kib,
                        "iterations": kf.kdf.iterations, "parallelism": kf.kdf.parallelism},
                "commitment": kf.commitment.map(hex::encode),
            }))?;
        }
        Kind::Lock => {
            let name = find_file(&repo, FileType::Lock, &need_id()?)?;
            output::print_json(&cairn::lock::load_lock(&repo, &LockId::from_name(&name)?)?)?;
        }
        Kind::Record => {
            let name = find_file(&repo, FileType::Record, &need_id()?)?;
            output::print_json(&cairn::record::load(&repo, &RecordId::from_name(&name)?)?)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
