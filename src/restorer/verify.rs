//! Reading restored files back.

use std::fs::File;
use std::io::Read;

use super::State;
use super::plan::FileJob;
use crate::error::{Error, IoContext, Result};
use crate::pack::BlobKind;

/// Reads a restored file back and checks every chunk against its blob id.
pub(super) fn verify_file(state: &State, job: &FileJob) -> Result<()> {
    let dest = &job.dest;
    let mut f = File::open(dest).at(dest)?;
    let key = state.repo.key();
    let mut offset = 0u64;
    let mut buf = Vec::new();
    for id in &job.node.content {
        let (_, entry) = state
            .index
            .get(BlobKind::Data, id)
            .ok_or_else(|| Error::Missing {
                what: format!("data blob {id}"),
                reason: "not in the index".into(),
            })?;
        buf.resize(entry.raw_length as usize, 0);
        f.read_exact(&mut buf).at(dest)?;
        if key.blob_id(&buf) != *id {
            return Err(Error::corrupt(
                dest.display().to_string(),
                format!(
                    "bytes {offset}..{} differ from blob {id}",
                    offset + buf.len() as u64
                ),
            ));
        }
        offset += buf.len() as u64;
    }
    let mut extra = [0u8; 1];
    if f.read(&mut extra).at(dest)? != 0 {
        return Err(Error::corrupt(
            dest.display().to_string(),
            format!("longer than the {offset} bytes restored"),
        ));
    }
    Ok(())
}
