//! Content-defined chunking: FastCDC v2020, normalization level 1, with the gear
//! table XORed with the repository's secret seed (format-spec/README.md, "Chunking").

use std::io::{self, Read};

use fastcdc::v2020::{FastCDC, Normalization};

use crate::config::ChunkerParams;

#[derive(Clone, Copy, Debug)]
pub struct Chunker {
    params: ChunkerParams,
    seed: u64,
}

impl Chunker {
    /// `params` must have passed `ChunkerParams::validate` (the config decoder does
    /// that); FastCDC panics on values outside its bounds.
    pub fn new(params: ChunkerParams, seed: u64) -> Self {
        Self { params, seed }
    }

    pub fn max_size(&self) -> usize {
        self.params.max_size as usize
    }

    pub fn avg_size(&self) -> usize {
        self.params.avg_size as usize
    }

    /// Length of the chunk that starts at `data[0]`. `data` must hold at least
    /// `max_size` bytes unless it is the rest of the stream; then the cut is the same
    /// whatever follows, which makes streaming and whole-buffer chunking agree.
    pub fn next_cut(&self, data: &[u8]) -> usize {
        if data.is_empty() {
            return 0;
        }
        let window = &data[..data.len().min(self.max_size())];
        let cdc = self.cdc(window);
        let (_, end) = cdc.cut(0, window.len());
        end.clamp(1, window.len())
    }

    /// Chunk boundaries of a whole buffer, as `(offset, length)`.
    pub fn cuts(&self, data: &[u8]) -> Vec<(usize, usize)> {
        self.cdc(data).map(|c| (c.offset, c.length)).collect()
    }

    fn cdc<'a>(&self, data: &'a [u8]) -> FastCDC<'a> {
        FastCDC::with_level_and_seed(
            data,
            self.params.min_size,
            self.params.avg_size,
            self.params.max_size,
            Normalization::Level1,
            self.seed,
        )
    }
}

/// A chunk's bytes, after one spare leading byte: a chunk that is stored raw
/// becomes its own payload in place (see `format::encode_chunk`), without a copy.
pub struct Chunk(Vec<u8>);

impl Chunk {
    pub fn copy_of(data: &[u8]) -> Self {
        let mut buf = Vec::with_capacity(data.len() + 1);
        buf.push(0);
        buf.extend_from_slice(data);
        Self(buf)
    }

    /// Takes over `buf`, whose first byte is spare and the rest the chunk.
    /// `None` if there is no first byte.
    pub fn from_spare_first(buf: Vec<u8>) -> Option<Self> {
        (!buf.is_empty()).then_some(Self(buf))
    }

    pub fn data(&self) -> &[u8] {
        self.0.get(1..).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.0.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffer, spare byte first.
    pub fn into_buffer(self) -> Vec<u8> {
        self.0
    }
}

/// Reads a stream and yields its chunks, holding at most one maximum-size chunk
/// plus one average-size one.
pub struct ChunkReader<R> {
    chunker: Chunker,
    reader: R,
    buf: Vec<u8>,
    start: usize,
    eof: bool,
}

impl<R: Read> ChunkReader<R> {
    pub fn new(chunker: Chunker, reader: R) -> Self {
        Self {
            chunker,
            reader,
            buf: Vec::new(),
            start: 0,
            eof: false,
        }
    }

    /// How many bytes the buffer is topped up to: a cut needs at most
    /// `max_size` bytes to be decided, and the extra average chunk keeps refills
    /// (and the move of the unconsumed rest that each one makes) rare. At the
    /// defaults that is 9 MiB, where two maximum chunks would be 16.
    fn window(&self) -> usize {
        self.chunker
            .max_size()
            .saturating_add(self.chunker.avg_size())
    }

    /// Moves the unconsumed bytes to the front and tops the buffer up to
    /// [`Self::window`] bytes (or the end of the stream). The buffer grows with
    /// what is actually read, so a small file costs a small buffer, and nothing
    /// is zero-filled before being read into.
    fn refill(&mut self) -> io::Result<()> {
        self.buf.drain(..self.start);
        self.start = 0;
        let need = self.window().saturating_sub(self.buf.len());
        let got = (&mut self.reader)
            .take(need as u64)
            .read_to_end(&mut self.buf)?;
        if got < need {
            self.eof = true;
        }
        Ok(())
    }

    /// Reserves room for a stream expected to be `len` bytes long.
    pub fn size_hint(&mut self, len: u64) {
        let cap = self
            .window()
            .min(usize::try_from(len).unwrap_or(usize::MAX).saturating_add(1));
        self.buf.reserve(cap);
    }

    /// The next chunk, or `None` at the end of the stream.
    ///
    /// A cut found before the end of the buffered bytes is final even when fewer
    /// than `max_size` bytes are buffered: FastCDC decides each position from the
    /// bytes before it. So the buffer is refilled (and its rest moved to the front)
    /// only when no cut lies within it, which keeps that copy small.
    pub fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        loop {
            let rest = self.buf.get(self.start..).unwrap_or_default();
            let whole = self.eof || rest.len() >= self.chunker.max_size();
            if !rest.is_empty() {
                let n = self.chunker.next_cut(rest);
                if whole || n < rest.len() {
                    let chunk = Chunk::copy_of(rest.get(..n).unwrap_or_default());
                    self.start += n;
                    return Ok(Some(chunk));
                }
            } else if self.eof {
                return Ok(None);
            }
            self.refill()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn streaming_agrees_with_whole_buffer() {
        let params = ChunkerParams {
            min_size: 1024,
            avg_size: 4096,
            max_size: 16384,
        };
        let c = Chunker::new(params, 42);
        // A reader that returns odd-sized short reads.
        struct Dribble<'a>(&'a [u8], usize);
        impl Read for Dribble<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                self.1 = self.1 % 7000 + 1;
                let n = self.1.min(out.len()).min(self.0.len());
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        // Content with cuts everywhere, with none (zeros: every chunk is cut at the
        // maximum), and runs of each that start and end mid-buffer.
        let mut mixed = data(50_000, 3);
        mixed.extend(vec![0u8; 40_000]);
        mixed.extend(data(30_001, 4));
        mixed.extend(vec![0u8; 16_384 * 3 + 5]);
        mixed.extend(data(777, 5));
        let inputs = [
            data(300_000, 7),
            vec![0u8; 100_000],
            mixed,
            data(16_384, 8),
            data(1023, 9),
            Vec::new(),
        ];
        for d in &inputs {
            let whole = c.cuts(d);
            let mut r = ChunkReader::new(c, Dribble(d, 0));
            let mut off = 0;
            let mut streamed = Vec::new();
            while let Some(ch) = r.next_chunk().unwrap() {
                assert_eq!(ch.data(), &d[off..off + ch.len()]);
                streamed.push((off, ch.len()));
                off += ch.len();
            }
            assert_eq!(whole, streamed, "{} bytes", d.len());
            assert_eq!(off, d.len());
            assert!(whole.iter().all(|&(_, l)| l <= 16384));
        }
    }

    #[test]
    fn seed_changes_boundaries() {
        let params = ChunkerParams {
            min_size: 1024,
            avg_size: 4096,
            max_size: 16384,
        };
        let d = data(200_000, 9);
        assert_ne!(
            Chunker::new(params, 1).cuts(&d),
            Chunker::new(params, 2).cuts(&d)
        );
    }
}
