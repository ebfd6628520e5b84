//! The binary format of exported vectors (`--export`): one NATS message
//! holds consecutive vectors of one batch, as the consumer saw them, gaps
//! filled in. Version 1, all integers little-endian:
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 4 | magic `FKRV` |
//! | 4 | 2 | version, 1 |
//! | 6 | 2 | header length `H` in bytes (a multiple of 8; readers skip what they do not know) |
//! | 8 | 4 | `dim`: values per vector |
//! | 12 | 4 | `count`: vectors in this message (1 or more) |
//! | 16 | 8 | `first`: sequence number of the first vector; the others follow without gaps |
//! | 24 | 8 | `batch`: index of the batch the vectors belong to (0-based) |
//! | 32 | 2 | `R`: bytes of the run name |
//! | 34 | R | the run name, UTF-8 |
//! | 34 + R | to `H` | zero padding |
//! | H | ⌈count / 8⌉ | filled-in flags: bit `i % 8` of byte `i / 8` is 1 if vector `first + i` was missing and filled in by interpolation |
//! | then | to a multiple of 4 | zero padding |
//! | then | 4 · dim · count | the values, f32 LE, vector after vector |
//!
//! The message's `Nats-Msg-Id` is `RUN:FIRST` (see `export.rs`).

/// Magic bytes.
pub(crate) const MAGIC: [u8; 4] = *b"FKRV";
/// Format version.
pub(crate) const VERSION: u16 = 1;
/// Fixed part of the header, before the run name.
const FIXED: usize = 34;

/// One message's vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct Vectors {
    /// Run name.
    pub run: String,
    /// Batch index.
    pub batch: u64,
    /// Sequence number of the first vector.
    pub first: u64,
    /// Values per vector.
    pub dim: u32,
    /// Filled-in flag of each vector.
    pub filled: Vec<bool>,
    /// `dim * filled.len()` values.
    pub values: Vec<f32>,
}

/// Header length for a run name of `run_len` bytes.
fn header_len(run_len: usize) -> usize {
    (FIXED + run_len).div_ceil(8) * 8
}

/// Bytes of a message of `count` vectors of `dim` values for a run name of
/// `run_len` bytes.
pub(crate) fn message_len(run_len: usize, dim: u32, count: u32) -> usize {
    let flags = (count as usize).div_ceil(8);
    let values_at = (header_len(run_len) + flags).div_ceil(4) * 4;
    values_at + 4 * dim as usize * count as usize
}

/// Builds messages one vector at a time, reusing its buffer.
#[derive(Debug, Default)]
pub(crate) struct Builder {
    buf: Vec<u8>,
    run_len: usize,
    dim: u32,
    count: u32,
    /// Capacity in vectors (the flags area is sized for it).
    cap: u32,
}

impl Builder {
    /// Starts a message of up to `cap` vectors.
    pub(crate) fn start(&mut self, run: &str, dim: u32, batch: u64, first: u64, cap: u32) {
        debug_assert!(run.len() <= u16::MAX as usize && cap > 0);
        let h = header_len(run.len());
        let buf = &mut self.buf;
        buf.clear();
        buf.resize(message_len(run.len(), dim, cap), 0);
        buf[0..4].copy_from_slice(&MAGIC);
        buf[4..6].copy_from_slice(&VERSION.to_le_bytes());
        buf[6..8].copy_from_slice(&(h as u16).to_le_bytes());
        buf[8..12].copy_from_slice(&dim.to_le_bytes());
        buf[16..24].copy_from_slice(&first.to_le_bytes());
        buf[24..32].copy_from_slice(&batch.to_le_bytes());
        buf[32..34].copy_from_slice(&(run.len() as u16).to_le_bytes());
        buf[FIXED..FIXED + run.len()].copy_from_slice(run.as_bytes());
        self.run_len = run.len();
        self.dim = dim;
        self.count = 0;
        self.cap = cap;
    }

    /// Vectors so far.
    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    /// Appends a vector (`dim` values). Returns false when full.
    pub(crate) fn push(&mut self, values: &[f32], filled: bool) -> bool {
        debug_assert_eq!(values.len(), self.dim as usize);
        if self.count == self.cap {
            return false;
        }
        let h = header_len(self.run_len);
        let i = self.count as usize;
        if filled {
            self.buf[h + i / 8] |= 1 << (i % 8);
        }
        let values_at = (h + (self.cap as usize).div_ceil(8)).div_ceil(4) * 4;
        let at = values_at + 4 * self.dim as usize * i;
        for (k, v) in values.iter().enumerate() {
            self.buf[at + 4 * k..at + 4 * k + 4].copy_from_slice(&v.to_le_bytes());
        }
        self.count += 1;
        true
    }

    /// Finishes the message: the final count, the flags moved up against
    /// the values if the message is not full. Returns its bytes.
    pub(crate) fn finish(&mut self) -> &[u8] {
        let h = header_len(self.run_len);
        let n = self.count;
        self.buf[12..16].copy_from_slice(&n.to_le_bytes());
        if n < self.cap {
            let old_at = (h + (self.cap as usize).div_ceil(8)).div_ceil(4) * 4;
            let new_at = (h + (n as usize).div_ceil(8)).div_ceil(4) * 4;
            let bytes = 4 * self.dim as usize * n as usize;
            self.buf.copy_within(old_at..old_at + bytes, new_at);
            // Padding between the flags and the values is zero.
            for b in &mut self.buf[h + (n as usize).div_ceil(8)..new_at] {
                *b = 0;
            }
            self.buf.truncate(new_at + bytes);
            self.cap = n;
        }
        &self.buf[..]
    }
}

/// Why a message does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a forkring vectors message: {0}")]
pub struct WireError(pub String);

/// The vector count of a message, after checking its header and length
/// (cheaper than [`decode`]; for the exporter's check of its own slots).
pub(crate) fn peek_count(b: &[u8]) -> Result<u32, WireError> {
    if b.len() < FIXED || b[0..4] != MAGIC || b[4..6] != VERSION.to_le_bytes() {
        return Err(WireError("bad header".into()));
    }
    let dim = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
    let count = u32::from_le_bytes(b[12..16].try_into().expect("4 bytes"));
    let run_len = u16::from_le_bytes([b[32], b[33]]) as usize;
    let expected = (header_len(run_len) + (count as usize).div_ceil(8)).div_ceil(4) as u128 * 4
        + 4 * dim as u128 * count as u128;
    if dim == 0 || count == 0 || expected != b.len() as u128 {
        return Err(WireError(format!(
            "{} bytes do not match {count} vectors of {dim}",
            b.len()
        )));
    }
    Ok(count)
}

/// Decodes a message (untrusted bytes).
pub fn decode(b: &[u8]) -> Result<Vectors, WireError> {
    let bad = |s: &str| WireError(s.to_string());
    if b.len() < FIXED {
        return Err(bad("shorter than the fixed header"));
    }
    if b[0..4] != MAGIC {
        return Err(bad("wrong magic"));
    }
    let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let version = u16_at(4);
    if version != VERSION {
        return Err(WireError(format!(
            "version {version}, this reader knows {VERSION}"
        )));
    }
    let h = u16_at(6) as usize;
    let dim = u32_at(8);
    let count = u32_at(12);
    let first = u64_at(16);
    let batch = u64_at(24);
    let run_len = u16_at(32) as usize;
    if h % 8 != 0 || h < FIXED + run_len || h > b.len() {
        return Err(bad("header length out of range"));
    }
    if count == 0 || dim == 0 {
        return Err(bad("no vectors"));
    }
    let run = std::str::from_utf8(&b[FIXED..FIXED + run_len])
        .map_err(|_| bad("run name is not UTF-8"))?
        .to_string();
    let flags = count as usize;
    let values_at = (h + flags.div_ceil(8)).div_ceil(4) * 4;
    let n = (dim as u64)
        .checked_mul(count as u64)
        .filter(|n| *n <= (b.len() as u64) / 4)
        .ok_or_else(|| bad("count × dim does not fit the message"))? as usize;
    if values_at + 4 * n != b.len() {
        return Err(WireError(format!(
            "{} bytes, but the header says {}",
            b.len(),
            values_at + 4 * n
        )));
    }
    let filled = (0..flags)
        .map(|i| b[h + i / 8] >> (i % 8) & 1 == 1)
        .collect();
    let values = b[values_at..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    Ok(Vectors {
        run,
        batch,
        first,
        dim,
        filled,
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(run: &str, n: u32, cap: u32) -> Vec<u8> {
        let mut b = Builder::default();
        b.start(run, 3, 7, 100, cap);
        for i in 0..n {
            let v = [i as f32, -(i as f32), 0.5];
            assert!(b.push(&v, i % 3 == 1));
        }
        b.finish().to_vec()
    }

    #[test]
    fn round_trip_full_and_partial() {
        for (n, cap) in [(1, 1), (5, 5), (3, 64), (9, 16), (64, 64)] {
            let m = build("r-1", n, cap);
            assert_eq!(m.len(), message_len(3, 3, n), "{n}/{cap}");
            let v = decode(&m).unwrap();
            assert_eq!(v.run, "r-1");
            assert_eq!((v.batch, v.first, v.dim), (7, 100, 3));
            assert_eq!(v.filled.len(), n as usize);
            for i in 0..n as usize {
                assert_eq!(v.filled[i], i % 3 == 1);
                assert_eq!(&v.values[3 * i..3 * i + 3], &[i as f32, -(i as f32), 0.5]);
            }
        }
    }

    #[test]
    fn full_builder_refuses_more() {
        let mut b = Builder::default();
        b.start("r", 1, 0, 0, 2);
        assert!(b.push(&[1.0], false));
        assert!(b.push(&[2.0], false));
        assert!(!b.push(&[3.0], false));
        assert_eq!(b.count(), 2);
    }

    #[test]
    fn damaged_messages_are_refused() {
        let m = build("run", 4, 4);
        assert!(decode(&m[..m.len() - 1]).is_err());
        assert!(decode(&m[..10]).is_err());
        let mut x = m.clone();
        x[0] = b'X';
        assert!(decode(&x).is_err());
        let mut x = m.clone();
        x[4] = 2;
        assert!(decode(&x).unwrap_err().0.contains("version 2"));
        let mut x = m.clone();
        x[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&x).is_err());
        let mut x = m.clone();
        x[8..12].copy_from_slice(&0u32.to_le_bytes());
        assert!(decode(&x).is_err());
        let mut x = m;
        x[6..8].copy_from_slice(&9999u16.to_le_bytes());
        assert!(decode(&x).is_err());
    }
}
