//! Reading files in the target back and checking them against the snapshot.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::State;
use crate::pack::BlobKind;
use crate::tree::Node;

/// Reads `dest` and checks that it holds exactly `node`'s blobs, chunk by chunk.
/// The error says what differs, without the path (the caller names it).
pub(super) fn check_file(state: &State, dest: &Path, node: &Node) -> Result<(), String> {
    let mut f = File::open(dest).map_err(|e| format!("opening it: {e}"))?;
    let key = state.repo.key();
    let mut offset = 0u64;
    let mut buf = Vec::new();
    for id in &node.content {
        let (_, entry) = state
            .index
            .get(BlobKind::Data, id)
            .ok_or_else(|| format!("data blob {id} is not in the index"))?;
        buf.resize(entry.raw_length as usize, 0);
        f.read_exact(&mut buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => format!(
                "it ends within bytes {offset}..{} of blob {id}",
                offset + buf.len() as u64
            ),
            _ => format!("reading it: {e}"),
        })?;
        if key.blob_id(&buf) != *id {
            return Err(format!(
                "bytes {offset}..{} differ from blob {id}",
                offset + buf.len() as u64
            ));
        }
        offset += buf.len() as u64;
    }
    let mut extra = [0u8; 1];
    match f.read(&mut extra) {
        Ok(0) => Ok(()),
        Ok(_) => Err(format!("it is longer than the {offset} bytes restored")),
        Err(e) => Err(format!("reading it: {e}")),
    }
}
