//! Chunking: cuts tile the input, respect the size bounds, and a streaming reader
//! finds the same boundaries as whole-buffer chunking.
#![no_main]
use cairn::chunker::{ChunkReader, Chunker};
use cairn::config::ChunkerParams;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((seed, data)) = data.split_first_chunk::<8>() else {
        return;
    };
    let params = ChunkerParams {
        min_size: 64,
        avg_size: 256,
        max_size: 1024,
    };
    let chunker = Chunker::new(params, u64::from_le_bytes(*seed));
    let cuts = chunker.cuts(data);
    let mut next = 0;
    for (i, &(offset, len)) in cuts.iter().enumerate() {
        assert_eq!(offset, next);
        assert!(len <= 1024);
        assert!(len >= 64 || i + 1 == cuts.len());
        next += len;
    }
    assert_eq!(next, data.len());
    let mut reader = ChunkReader::new(chunker, data);
    let mut streamed = Vec::new();
    let mut at = 0;
    while let Some(c) = reader.next_chunk().expect("reading a slice") {
        assert_eq!(c.data(), &data[at..at + c.len()]);
        at += c.len();
        streamed.push(c.len());
    }
    let lengths: Vec<usize> = cuts.iter().map(|c| c.1).collect();
    assert_eq!(streamed, lengths);
});
