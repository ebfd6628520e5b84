//! The consumer's running analytics and its position, committed together.
//!
//! Everything the consumer must not lose or count twice lives here: the ring
//! position up to which it has consumed, the next sequence number it
//! expects, the counters, the open batch's column sums, the last vector
//! (for interpolating the next gap), the sliding rate window, and the length
//! of its output file. One `CommittedBytes::commit` writes all of it; that
//! store is the consumer's commit point (see `consumer.rs`).
//!
//! Encoding: `HEADER_WORDS` u64 words, then `sums[dim]` and `sumsq[dim]` as
//! f64, `last[dim]` as f32 (padded to a word), `rates[window]` as f64.
//! Decoding validates every field that bounds an index or a loop.

/// Words of the fixed header.
pub(crate) const HEADER_WORDS: usize = 16;

/// The encoding below, for the stream segment's layout fingerprint: a build
/// that encodes the state differently refuses the segment instead of
/// misreading it.
pub(crate) const ENCODING: &[u8] =
    b"tail|finished,expected,received,filled,duplicates,gaps,batches,\
file_offset,batch_len|batch_filled,batch_first,has_last|window_len,last_seq,last_ts,window_pos,\
rate_mean,rate_std;sums f64,sumsq f64,last f32 pairs,rates f64";

/// Why a committed state was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("consumer state field {field} is {found} ({rule})")]
pub(crate) struct StateError {
    /// Field.
    pub(crate) field: &'static str,
    /// Value found.
    pub(crate) found: u64,
    /// The rule it breaks.
    pub(crate) rule: &'static str,
}

/// The consumer's state (decoded).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ConsumerState {
    /// Ring position: slots before it are consumed.
    pub(crate) tail: u32,
    /// The stream ended and the last batch was written.
    pub(crate) finished: bool,
    /// Next sequence number expected; everything below is accounted for
    /// (received or filled in). Invariant: `expected = received + filled`.
    pub(crate) expected: u64,
    /// Vectors received.
    pub(crate) received: u64,
    /// Vectors filled in by interpolation (or extrapolation at the ends).
    pub(crate) filled: u64,
    /// Vectors received with a sequence number already accounted for.
    pub(crate) duplicates: u64,
    /// Gaps detected (runs of missing sequence numbers).
    pub(crate) gaps: u64,
    /// Batches written.
    pub(crate) batches: u64,
    /// Length of the output file covered by this state.
    pub(crate) file_offset: u64,
    /// Vectors in the open batch (`< batch`).
    pub(crate) batch_len: u32,
    /// Filled-in vectors in the open batch.
    pub(crate) batch_filled: u32,
    /// Sequence number of the open batch's first vector.
    pub(crate) batch_first: u64,
    /// Whether `last` holds a received vector.
    pub(crate) has_last: bool,
    /// Sequence number of `last`.
    pub(crate) last_seq: u64,
    /// Producer timestamp of `last` (ns).
    pub(crate) last_ts: u64,
    /// Rate-window fill (`<= window`).
    pub(crate) window_len: u32,
    /// Next write position in `rates` (`< window`).
    pub(crate) window_pos: u32,
    /// Latest rate mean (vectors/s), NaN when unknown.
    pub(crate) rate_mean: f64,
    /// Latest rate standard deviation, NaN when unknown.
    pub(crate) rate_std: f64,
    /// Column sums of the open batch.
    pub(crate) sums: Vec<f64>,
    /// Column sums of squares of the open batch.
    pub(crate) sumsq: Vec<f64>,
    /// Last received vector.
    pub(crate) last: Vec<f32>,
    /// Instantaneous rates of the last `window_len` intervals.
    pub(crate) rates: Vec<f64>,
}

fn lo(w: u64) -> u32 {
    w as u32
}
fn hi(w: u64) -> u32 {
    (w >> 32) as u32
}
fn pack(lo: u32, hi: u32) -> u64 {
    lo as u64 | (hi as u64) << 32
}

impl ConsumerState {
    /// Words of an encoded state.
    pub(crate) fn words(dim: u32, window: u32) -> usize {
        HEADER_WORDS + 2 * dim as usize + (dim as usize).div_ceil(2) + window as usize
    }
    /// Bytes of an encoded state.
    pub(crate) fn bytes(dim: u32, window: u32) -> usize {
        8 * Self::words(dim, window)
    }

    /// The state of a consumer that has seen nothing.
    pub(crate) fn new(dim: u32, window: u32) -> Self {
        ConsumerState {
            tail: 0,
            finished: false,
            expected: 0,
            received: 0,
            filled: 0,
            duplicates: 0,
            gaps: 0,
            batches: 0,
            file_offset: 0,
            batch_len: 0,
            batch_filled: 0,
            batch_first: 0,
            has_last: false,
            last_seq: 0,
            last_ts: 0,
            window_len: 0,
            window_pos: 0,
            rate_mean: f64::NAN,
            rate_std: f64::NAN,
            sums: vec![0.0; dim as usize],
            sumsq: vec![0.0; dim as usize],
            last: vec![0.0; dim as usize],
            rates: vec![0.0; window as usize],
        }
    }

    /// Encodes into `out` (`words(dim, window)` words).
    pub(crate) fn encode(&self, out: &mut [u64]) {
        let dim = self.sums.len();
        let window = self.rates.len();
        assert_eq!(out.len(), Self::words(dim as u32, window as u32));
        out[0] = pack(self.tail, self.finished as u32);
        out[1] = self.expected;
        out[2] = self.received;
        out[3] = self.filled;
        out[4] = self.duplicates;
        out[5] = self.gaps;
        out[6] = self.batches;
        out[7] = self.file_offset;
        out[8] = pack(self.batch_len, self.batch_filled);
        out[9] = self.batch_first;
        out[10] = pack(self.has_last as u32, self.window_len);
        out[11] = self.last_seq;
        out[12] = self.last_ts;
        out[13] = self.window_pos as u64;
        out[14] = self.rate_mean.to_bits();
        out[15] = self.rate_std.to_bits();
        let mut i = HEADER_WORDS;
        for v in self.sums.iter().chain(&self.sumsq) {
            out[i] = v.to_bits();
            i += 1;
        }
        for pair in self.last.chunks(2) {
            let a = pair[0].to_bits();
            let b = pair.get(1).map_or(0, |x| x.to_bits());
            out[i] = pack(a, b);
            i += 1;
        }
        for r in &self.rates {
            out[i] = r.to_bits();
            i += 1;
        }
    }

    /// Decodes `words` read from shared memory, validating every field that
    /// bounds an index or a loop.
    pub(crate) fn decode(
        words: &[u64],
        dim: u32,
        window: u32,
        batch: u32,
    ) -> Result<Self, StateError> {
        assert_eq!(words.len(), Self::words(dim, window));
        let bad = |field, found: u64, rule| Err(StateError { field, found, rule });
        let mut s = ConsumerState::new(dim, window);
        s.tail = lo(words[0]);
        s.finished = match hi(words[0]) {
            0 => false,
            1 => true,
            f => return bad("finished", f as u64, "0 or 1"),
        };
        s.expected = words[1];
        s.received = words[2];
        s.filled = words[3];
        s.duplicates = words[4];
        s.gaps = words[5];
        s.batches = words[6];
        s.file_offset = words[7];
        s.batch_len = lo(words[8]);
        s.batch_filled = hi(words[8]);
        s.batch_first = words[9];
        s.has_last = match lo(words[10]) {
            0 => false,
            1 => true,
            f => return bad("has_last", f as u64, "0 or 1"),
        };
        s.window_len = hi(words[10]);
        s.last_seq = words[11];
        s.last_ts = words[12];
        s.window_pos = words[13] as u32;
        s.rate_mean = f64::from_bits(words[14]);
        s.rate_std = f64::from_bits(words[15]);
        if s.received.checked_add(s.filled) != Some(s.expected) {
            return bad("expected", s.expected, "must equal received + filled");
        }
        if s.batch_len >= batch.max(1) {
            return bad("batch_len", s.batch_len as u64, "below the batch size");
        }
        if s.batch_filled > s.batch_len {
            return bad("batch_filled", s.batch_filled as u64, "at most batch_len");
        }
        if s.window_len > window {
            return bad("window_len", s.window_len as u64, "at most the rate window");
        }
        if words[13] >= window.max(1) as u64 {
            return bad("window_pos", words[13], "below the rate window");
        }
        let d = dim as usize;
        let mut i = HEADER_WORDS;
        for k in 0..d {
            s.sums[k] = f64::from_bits(words[i + k]);
            s.sumsq[k] = f64::from_bits(words[i + d + k]);
        }
        i += 2 * d;
        for k in 0..d {
            let w = words[i + k / 2];
            s.last[k] = f32::from_bits(if k % 2 == 0 { lo(w) } else { hi(w) });
        }
        i += d.div_ceil(2);
        for k in 0..window as usize {
            s.rates[k] = f64::from_bits(words[i + k]);
        }
        Ok(s)
    }

    /// Adds a vector to the open batch.
    #[inline]
    pub(crate) fn add_to_batch(&mut self, seq: u64, v: &[f32], filled: bool) {
        if self.batch_len == 0 {
            self.batch_first = seq;
            self.sums.iter_mut().for_each(|x| *x = 0.0);
            self.sumsq.iter_mut().for_each(|x| *x = 0.0);
        }
        for ((s, q), &x) in self.sums.iter_mut().zip(self.sumsq.iter_mut()).zip(v) {
            let x = x as f64;
            *s += x;
            *q += x * x;
        }
        self.batch_len += 1;
        if filled {
            self.batch_filled += 1;
        }
    }

    /// Column means and (population) standard deviations of the open batch.
    pub(crate) fn batch_mean_std(&self) -> (Vec<f64>, Vec<f64>) {
        let n = self.batch_len.max(1) as f64;
        self.sums
            .iter()
            .zip(&self.sumsq)
            .map(|(&s, &q)| {
                let m = s / n;
                (m, (q / n - m * m).max(0.0).sqrt())
            })
            .unzip()
    }

    /// Records a received vector's timestamp in the rate window.
    #[inline]
    pub(crate) fn add_rate_sample(&mut self, ts: u64) {
        if self.has_last && !self.rates.is_empty() {
            let dt = ts.saturating_sub(self.last_ts).max(1);
            let pos = self.window_pos as usize % self.rates.len();
            self.rates[pos] = 1e9 / dt as f64;
            self.window_pos = ((pos + 1) % self.rates.len()) as u32;
            self.window_len = (self.window_len + 1).min(self.rates.len() as u32);
        }
        self.last_ts = ts;
    }

    /// Mean and standard deviation of the instantaneous rates in the window
    /// (vectors/s), or NaN while the window is empty.
    pub(crate) fn rate_stats(&self) -> (f64, f64) {
        let n = self.window_len as usize;
        if n == 0 {
            return (f64::NAN, f64::NAN);
        }
        let r = &self.rates[..n.min(self.rates.len())];
        let mean = r.iter().sum::<f64>() / n as f64;
        let var = r.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        (mean, var.sqrt())
    }
}

/// The vector at `seq` on the straight line through (`a_seq`, `a`) and
/// (`b_seq`, `b`), written into `out`.
pub(crate) fn interpolate(a_seq: u64, a: &[f32], b_seq: u64, b: &[f32], seq: u64, out: &mut [f32]) {
    let t = if b_seq > a_seq {
        (seq - a_seq) as f64 / (b_seq - a_seq) as f64
    } else {
        0.0
    };
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = (x as f64 + (y as f64 - x as f64) * t) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ConsumerState {
        let mut s = ConsumerState::new(3, 4);
        s.tail = 77;
        s.expected = 10;
        s.received = 8;
        s.filled = 2;
        s.add_to_batch(5, &[1.0, 2.0, 3.0], false);
        s.add_to_batch(6, &[3.0, 2.0, 1.0], true);
        s.has_last = true;
        s.last = vec![0.5, -0.5, 0.25];
        s.add_rate_sample(1_000_000);
        s.add_rate_sample(2_000_000);
        s
    }

    #[test]
    fn encode_decode_round_trip() {
        let s = sample();
        let mut w = vec![0u64; ConsumerState::words(3, 4)];
        s.encode(&mut w);
        let d = ConsumerState::decode(&w, 3, 4, 100).unwrap();
        assert_eq!(d.tail, 77);
        assert_eq!(d.sums, s.sums);
        assert_eq!(d.last, s.last);
        assert_eq!(d.rates, s.rates);
        assert_eq!(d.window_len, 2);
        assert_eq!(d.batch_len, 2);
    }

    #[test]
    fn decode_rejects_corruption() {
        let s = sample();
        let mut w = vec![0u64; ConsumerState::words(3, 4)];
        s.encode(&mut w);
        let mut bad = w.clone();
        bad[8] = pack(100, 0); // batch_len = batch
        assert_eq!(
            ConsumerState::decode(&bad, 3, 4, 100).unwrap_err().field,
            "batch_len"
        );
        let mut bad = w.clone();
        bad[1] = 11; // expected != received + filled
        assert_eq!(
            ConsumerState::decode(&bad, 3, 4, 100).unwrap_err().field,
            "expected"
        );
        let mut bad = w.clone();
        bad[13] = 4;
        assert_eq!(
            ConsumerState::decode(&bad, 3, 4, 100).unwrap_err().field,
            "window_pos"
        );
        let mut bad = w;
        bad[10] = pack(2, 0);
        assert_eq!(
            ConsumerState::decode(&bad, 3, 4, 100).unwrap_err().field,
            "has_last"
        );
    }

    #[test]
    fn batch_statistics_match_direct_computation() {
        let rows = [[1.0f32, -2.0], [3.0, 4.0], [5.5, 0.5], [-1.0, 2.0]];
        let mut s = ConsumerState::new(2, 1);
        for (i, r) in rows.iter().enumerate() {
            s.add_to_batch(i as u64, r, false);
        }
        let (m, sd) = s.batch_mean_std();
        for c in 0..2 {
            let col: Vec<f64> = rows.iter().map(|r| r[c] as f64).collect();
            let mean = col.iter().sum::<f64>() / 4.0;
            let std = (col.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 4.0).sqrt();
            assert!((m[c] - mean).abs() < 1e-12);
            assert!((sd[c] - std).abs() < 1e-12);
        }
    }

    #[test]
    fn interpolation_is_the_straight_line() {
        let mut out = [0.0f32; 2];
        interpolate(10, &[0.0, 10.0], 14, &[4.0, 2.0], 11, &mut out);
        assert_eq!(out, [1.0, 8.0]);
        interpolate(10, &[0.0, 10.0], 14, &[4.0, 2.0], 13, &mut out);
        assert_eq!(out, [3.0, 4.0]);
    }

    #[test]
    fn rate_window_slides() {
        let mut s = ConsumerState::new(1, 3);
        s.has_last = true;
        s.last_ts = 0;
        for (i, ts) in [1_000_000u64, 2_000_000, 3_000_000, 5_000_000]
            .iter()
            .enumerate()
        {
            s.add_rate_sample(*ts);
            assert_eq!(s.window_len as usize, (i + 1).min(3));
        }
        // Window now holds 1000, 1000, 500 Hz.
        let (m, sd) = s.rate_stats();
        assert!((m - 2500.0 / 3.0).abs() < 1e-9, "{m}");
        assert!(sd > 0.0);
    }
}
