//! The consumer's running analytics and its position, committed together.
//!
//! Everything the consumer must not lose or count twice lives here: the ring
//! position up to which it has consumed, the next sequence number it
//! expects, the counters, the open batch's column sums and which of its
//! vectors were filled in, the last vector (for interpolating the next gap),
//! the sliding rate window, and the length of its output file. One
//! `CommittedBytes::commit` writes all of it; that store is the consumer's
//! commit point (see `consumer.rs`).
//!
//! Encoding: `HEADER_WORDS` u64 words, then `sums[dim]` and `sumsq[dim]` as
//! f64, `last[dim]` as f32 (padded to a word), the open batch's filled-in
//! bitmap (`ceil(batch / 64)` words), then the window's send timestamps and
//! lateness (`window` words each). Decoding validates every field that
//! bounds an index or a loop.
//!
//! The rate window holds the last `window` *received* vectors (filled-in
//! vectors have no timestamp). Its figures ([`WindowStats`]):
//! - rate = (n − 1) / (t_last − t_first), vectors per second, over the n
//!   send timestamps in the window: robust to bursts, unlike a mean of
//!   instantaneous rates 1/dt, which explodes when a late producer catches
//!   up with its schedule;
//! - interval jitter = population standard deviation of the n − 1 intervals
//!   between consecutive send timestamps, in µs;
//! - lateness = send time − scheduled time of each vector (the producer's
//!   absolute deadline, carried in its slot), max and p99 (nearest rank) over
//!   the window, in µs; unknown with `--rate max`, which has no schedule.

/// Words of the fixed header.
pub(crate) const HEADER_WORDS: usize = 20;

/// The encoding below, for the stream segment's layout fingerprint: a build
/// that encodes the state differently refuses the segment instead of
/// misreading it.
pub(crate) const ENCODING: &[u8] =
    b"v2:tail|finished,expected,received,filled,duplicates,gaps,batches,\
file_offset,batch_len|batch_filled,batch_first,has_last|window_len,last_seq,last_ts,window_pos,\
rate_hz,interval_std_us,lateness_max_us,lateness_p99_us,reserved,reserved;\
sums f64,sumsq f64,last f32 pairs,filled bitmap u64[batch/64],window ts u64,window lateness u64";

/// Lateness of a vector sent with no schedule (`--rate max`).
pub(crate) const NO_SCHEDULE: u64 = u64::MAX;

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

/// The rate window's figures (NaN while unknown).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct WindowStats {
    /// Received vectors in the window.
    pub(crate) vectors: u32,
    /// (n − 1) / (t_last − t_first), vectors per second.
    pub(crate) rate_hz: f64,
    /// Population standard deviation of the send intervals, µs.
    pub(crate) interval_std_us: f64,
    /// Largest lateness against the producer's schedule, µs.
    pub(crate) lateness_max_us: f64,
    /// 99th percentile (nearest rank) of the lateness, µs.
    pub(crate) lateness_p99_us: f64,
}

impl WindowStats {
    /// Nothing known yet.
    pub(crate) const UNKNOWN: WindowStats = WindowStats {
        vectors: 0,
        rate_hz: f64::NAN,
        interval_std_us: f64::NAN,
        lateness_max_us: f64::NAN,
        lateness_p99_us: f64::NAN,
    };
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
    /// Vectors filled in: by interpolation between the received neighbours,
    /// or, before the first and after the last received vector, by holding
    /// the nearest one.
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
    /// Producer's send timestamp of `last` (CLOCK_MONOTONIC ns).
    pub(crate) last_ts: u64,
    /// Rate-window fill (`<= window`).
    pub(crate) window_len: u32,
    /// Next write position in the window (`< window`).
    pub(crate) window_pos: u32,
    /// Latest published window figures (for observers).
    pub(crate) published: WindowStats,
    /// Column sums of the open batch.
    pub(crate) sums: Vec<f64>,
    /// Column sums of squares of the open batch.
    pub(crate) sumsq: Vec<f64>,
    /// Last received vector.
    pub(crate) last: Vec<f32>,
    /// Bit i: the open batch's vector `batch_first + i` was filled in.
    pub(crate) filled_bits: Vec<u64>,
    /// Send timestamps of the window's vectors (ring, `window_pos` next).
    pub(crate) window_ts: Vec<u64>,
    /// Lateness (ns) of the window's vectors, [`NO_SCHEDULE`] if unknown.
    pub(crate) window_late: Vec<u64>,
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

/// Words of the open batch's filled-in bitmap.
fn bitmap_words(batch: u32) -> usize {
    (batch as usize).div_ceil(64)
}

impl ConsumerState {
    /// Words of an encoded state.
    pub(crate) fn words(dim: u32, window: u32, batch: u32) -> usize {
        HEADER_WORDS
            + 2 * dim as usize
            + (dim as usize).div_ceil(2)
            + bitmap_words(batch)
            + 2 * window as usize
    }
    /// Bytes of an encoded state.
    pub(crate) fn bytes(dim: u32, window: u32, batch: u32) -> usize {
        8 * Self::words(dim, window, batch)
    }

    /// The state of a consumer that has seen nothing.
    pub(crate) fn new(dim: u32, window: u32, batch: u32) -> Self {
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
            published: WindowStats::UNKNOWN,
            sums: vec![0.0; dim as usize],
            sumsq: vec![0.0; dim as usize],
            last: vec![0.0; dim as usize],
            filled_bits: vec![0; bitmap_words(batch)],
            window_ts: vec![0; window as usize],
            window_late: vec![NO_SCHEDULE; window as usize],
        }
    }

    /// Encodes into `out` (`words(dim, window, batch)` words).
    pub(crate) fn encode(&self, out: &mut [u64]) {
        let dim = self.sums.len();
        let window = self.window_ts.len();
        assert_eq!(
            out.len(),
            HEADER_WORDS + 2 * dim + dim.div_ceil(2) + self.filled_bits.len() + 2 * window
        );
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
        out[13] = pack(self.window_pos, self.published.vectors);
        out[14] = self.published.rate_hz.to_bits();
        out[15] = self.published.interval_std_us.to_bits();
        out[16] = self.published.lateness_max_us.to_bits();
        out[17] = self.published.lateness_p99_us.to_bits();
        out[18] = 0;
        out[19] = 0;
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
        for w in self
            .filled_bits
            .iter()
            .chain(&self.window_ts)
            .chain(&self.window_late)
        {
            out[i] = *w;
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
        assert_eq!(words.len(), Self::words(dim, window, batch));
        let bad = |field, found: u64, rule| Err(StateError { field, found, rule });
        let mut s = ConsumerState::new(dim, window, batch);
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
        s.window_pos = lo(words[13]);
        // A state never committed is all zeros: nothing is known yet.
        s.published = match hi(words[13]) {
            0 => WindowStats::UNKNOWN,
            vectors => WindowStats {
                vectors,
                rate_hz: f64::from_bits(words[14]),
                interval_std_us: f64::from_bits(words[15]),
                lateness_max_us: f64::from_bits(words[16]),
                lateness_p99_us: f64::from_bits(words[17]),
            },
        };
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
        if s.window_pos >= window.max(1) {
            return bad("window_pos", s.window_pos as u64, "below the rate window");
        }
        if s.published.vectors > window {
            return bad(
                "window_vectors",
                s.published.vectors as u64,
                "at most the rate window",
            );
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
        for v in s
            .filled_bits
            .iter_mut()
            .chain(s.window_ts.iter_mut())
            .chain(s.window_late.iter_mut())
        {
            *v = words[i];
            i += 1;
        }
        // Only the open batch's first batch_len bits count (the rest are
        // left from the previous batch and cleared when the next starts).
        let marked: u32 = s
            .filled_bits
            .iter()
            .enumerate()
            .map(|(k, w)| {
                let bits = (s.batch_len as usize).saturating_sub(64 * k).min(64);
                let mask = if bits == 64 {
                    u64::MAX
                } else {
                    (1u64 << bits) - 1
                };
                (w & mask).count_ones()
            })
            .sum();
        if marked != s.batch_filled {
            return bad(
                "filled_bits",
                marked as u64,
                "must mark batch_filled vectors",
            );
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
            self.filled_bits.iter_mut().for_each(|x| *x = 0);
        }
        for ((s, q), &x) in self.sums.iter_mut().zip(self.sumsq.iter_mut()).zip(v) {
            let x = x as f64;
            *s += x;
            *q += x * x;
        }
        if filled {
            let i = self.batch_len as usize;
            if let Some(w) = self.filled_bits.get_mut(i / 64) {
                *w |= 1 << (i % 64);
            }
            self.batch_filled += 1;
        }
        self.batch_len += 1;
    }

    /// The open batch's filled-in sequence numbers as inclusive ranges
    /// `[first, last]`, in order.
    pub(crate) fn batch_filled_ranges(&self) -> Vec<[u64; 2]> {
        let mut out: Vec<[u64; 2]> = Vec::new();
        for i in 0..self.batch_len as usize {
            let on = self
                .filled_bits
                .get(i / 64)
                .is_some_and(|w| w >> (i % 64) & 1 == 1);
            if !on {
                continue;
            }
            let seq = self.batch_first + i as u64;
            match out.last_mut() {
                Some(r) if r[1] + 1 == seq => r[1] = seq,
                _ => out.push([seq, seq]),
            }
        }
        out
    }

    /// Column means and population standard deviations (divided by n, the
    /// batch's vector count) of the open batch.
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

    /// Records a received vector's send timestamp and scheduled time
    /// (`due_ns`, 0 when the producer has no schedule) in the rate window.
    #[inline]
    pub(crate) fn add_rate_sample(&mut self, sent_ns: u64, due_ns: u64) {
        let w = self.window_ts.len();
        if w > 0 {
            let pos = self.window_pos as usize % w;
            self.window_ts[pos] = sent_ns;
            self.window_late[pos] = if due_ns == 0 {
                NO_SCHEDULE
            } else {
                sent_ns.saturating_sub(due_ns)
            };
            self.window_pos = ((pos + 1) % w) as u32;
            self.window_len = (self.window_len + 1).min(w as u32);
        }
        self.last_ts = sent_ns;
    }

    /// The window's entries from oldest to newest: (send ns, lateness ns).
    fn window(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let w = self.window_ts.len();
        let n = (self.window_len as usize).min(w);
        let start = (self.window_pos as usize + w - n) % w.max(1);
        (0..n).map(move |k| {
            let i = (start + k) % w;
            (self.window_ts[i], self.window_late[i])
        })
    }

    /// The rate window's figures (see the module docs).
    pub(crate) fn window_stats(&self) -> WindowStats {
        let mut st = WindowStats::UNKNOWN;
        st.vectors = self.window_len;
        let n = self.window_len as usize;
        if n == 0 {
            return st;
        }
        let mut first = None;
        let mut prev: Option<u64> = None;
        let (mut sum, mut sumsq, mut intervals) = (0.0f64, 0.0f64, 0u32);
        let mut late: Vec<u64> = Vec::with_capacity(n);
        for (ts, l) in self.window() {
            first.get_or_insert(ts);
            if let Some(p) = prev {
                let dt = ts.saturating_sub(p) as f64 / 1e3;
                sum += dt;
                sumsq += dt * dt;
                intervals += 1;
            }
            prev = Some(ts);
            if l != NO_SCHEDULE {
                late.push(l);
            }
        }
        if let (Some(a), Some(b)) = (first, prev)
            && b > a
        {
            st.rate_hz = (n - 1) as f64 * 1e9 / (b - a) as f64;
        }
        if intervals > 0 {
            let m = sum / intervals as f64;
            st.interval_std_us = (sumsq / intervals as f64 - m * m).max(0.0).sqrt();
        }
        if !late.is_empty() {
            // Nearest rank: the smallest value with at least 99% of the
            // window at or below it.
            let rank = (late.len() * 99).div_ceil(100).max(1) - 1;
            let (_, p99, _) = late.select_nth_unstable(rank);
            st.lateness_p99_us = *p99 as f64 / 1e3;
            st.lateness_max_us = late.iter().copied().max().unwrap_or(0) as f64 / 1e3;
        }
        st
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
        let mut s = ConsumerState::new(3, 4, 100);
        s.tail = 77;
        s.expected = 10;
        s.received = 8;
        s.filled = 2;
        s.add_to_batch(5, &[1.0, 2.0, 3.0], false);
        s.add_to_batch(6, &[3.0, 2.0, 1.0], true);
        s.has_last = true;
        s.last = vec![0.5, -0.5, 0.25];
        s.add_rate_sample(1_000_000, 990_000);
        s.add_rate_sample(2_000_000, 0);
        s.published = s.window_stats();
        s
    }

    #[test]
    fn encode_decode_round_trip() {
        let s = sample();
        let mut w = vec![0u64; ConsumerState::words(3, 4, 100)];
        s.encode(&mut w);
        let d = ConsumerState::decode(&w, 3, 4, 100).unwrap();
        assert_eq!(d.tail, 77);
        assert_eq!(d.sums, s.sums);
        assert_eq!(d.last, s.last);
        assert_eq!(d.window_ts, s.window_ts);
        assert_eq!(d.window_late, s.window_late);
        assert_eq!(d.filled_bits, s.filled_bits);
        assert_eq!(d.window_len, 2);
        assert_eq!(d.batch_len, 2);
        assert_eq!(d.published.rate_hz, 1000.0);
        assert_eq!(d.batch_filled_ranges(), vec![[6, 6]]);
    }

    /// A batch closed with filled-in vectors leaves its marks until the next
    /// batch starts: they are not the open batch's.
    #[test]
    fn marks_of_a_closed_batch_do_not_count() {
        let mut s = ConsumerState::new(1, 2, 100);
        s.add_to_batch(0, &[0.0], true);
        s.expected = 1;
        s.filled = 1;
        s.batch_len = 0;
        s.batch_filled = 0;
        let mut w = vec![0u64; ConsumerState::words(1, 2, 100)];
        s.encode(&mut w);
        let d = ConsumerState::decode(&w, 1, 2, 100).unwrap();
        assert!(d.batch_filled_ranges().is_empty());
    }

    #[test]
    fn decode_rejects_corruption() {
        let s = sample();
        let mut w = vec![0u64; ConsumerState::words(3, 4, 100)];
        s.encode(&mut w);
        let field = |f: &dyn Fn(&mut Vec<u64>)| {
            let mut bad = w.clone();
            f(&mut bad);
            ConsumerState::decode(&bad, 3, 4, 100).unwrap_err().field
        };
        assert_eq!(field(&|b| b[8] = pack(100, 0)), "batch_len");
        assert_eq!(field(&|b| b[1] = 11), "expected");
        assert_eq!(field(&|b| b[13] = pack(4, 0)), "window_pos");
        assert_eq!(field(&|b| b[13] = pack(0, 5)), "window_vectors");
        assert_eq!(field(&|b| b[10] = pack(2, 0)), "has_last");
        let bitmap = HEADER_WORDS + 2 * 3 + 2;
        assert_eq!(field(&|b| b[bitmap] = 0b111), "filled_bits");
    }

    #[test]
    fn batch_statistics_match_direct_computation() {
        let rows = [[1.0f32, -2.0], [3.0, 4.0], [5.5, 0.5], [-1.0, 2.0]];
        let mut s = ConsumerState::new(2, 2, 10);
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
    fn filled_ranges_cover_exactly_the_filled_vectors() {
        let mut s = ConsumerState::new(1, 2, 200);
        let filled = |i: u64| (3..=5).contains(&i) || i == 9 || (63..=65).contains(&i) || i == 199;
        for i in 0..200u64 {
            s.add_to_batch(1000 + i, &[0.0], filled(i));
        }
        assert_eq!(s.batch_filled, 8);
        assert_eq!(
            s.batch_filled_ranges(),
            vec![[1003, 1005], [1009, 1009], [1063, 1065], [1199, 1199]]
        );
        // A new batch starts with no marks.
        let mut t = ConsumerState::new(1, 2, 200);
        t.add_to_batch(7, &[0.0], true);
        t.batch_len = 0;
        t.batch_filled = 0;
        t.add_to_batch(8, &[0.0], false);
        assert!(t.batch_filled_ranges().is_empty());
    }

    #[test]
    fn interpolation_is_the_straight_line() {
        let mut out = [0.0f32; 2];
        interpolate(10, &[0.0, 10.0], 14, &[4.0, 2.0], 11, &mut out);
        assert_eq!(out, [1.0, 8.0]);
        interpolate(10, &[0.0, 10.0], 14, &[4.0, 2.0], 13, &mut out);
        assert_eq!(out, [3.0, 4.0]);
    }

    /// The figure the old definition got wrong: a producer 5 ms late that
    /// then catches up (five vectors within microseconds) still sent 1000
    /// vectors per second over the window.
    #[test]
    fn window_rate_is_robust_to_a_late_burst() {
        let mut s = ConsumerState::new(1, 100, 100);
        for k in 0..100u64 {
            let due = 1_000_000_000 + k * 1_000_000;
            let sent = if (40..45).contains(&k) {
                // Woken 5 ms late at due(40); caught up by due(45).
                1_000_000_000 + 45 * 1_000_000 + (k - 40) * 2_000
            } else {
                due + 10_000
            };
            s.add_rate_sample(sent, due);
        }
        let w = s.window_stats();
        assert_eq!(w.vectors, 100);
        assert!((w.rate_hz - 1000.0).abs() < 1e-6, "{w:?}");
        assert_eq!(w.lateness_max_us, 5_000.0, "{w:?}");
        // 100 values: the p99 is the 99th smallest, i.e. the second largest.
        assert_eq!(w.lateness_p99_us, 4_002.0, "{w:?}");
        assert!(w.interval_std_us > 100.0, "{w:?}");
    }

    #[test]
    fn window_slides_and_ignores_what_left_it() {
        let mut s = ConsumerState::new(1, 3, 10);
        for (i, ts) in [1_000_000u64, 2_000_000, 3_000_000, 5_000_000]
            .iter()
            .enumerate()
        {
            s.add_rate_sample(*ts, 0);
            assert_eq!(s.window_len as usize, (i + 1).min(3));
        }
        // The window holds 2, 3, 5 ms: two intervals over 3 ms.
        let w = s.window_stats();
        assert!((w.rate_hz - 2000.0 / 3.0).abs() < 1e-9, "{w:?}");
        assert!((w.interval_std_us - 500.0).abs() < 1e-9, "{w:?}");
        assert!(w.lateness_p99_us.is_nan() && w.lateness_max_us.is_nan());
        // Perfectly regular: no jitter.
        let mut r = ConsumerState::new(1, 10, 10);
        for k in 0..10 {
            r.add_rate_sample(k * 1_000_000, 0);
        }
        assert_eq!(r.window_stats().interval_std_us, 0.0);
        assert_eq!(r.window_stats().rate_hz, 1000.0);
        assert!(ConsumerState::new(1, 3, 10).window_stats().rate_hz.is_nan());
    }
}
