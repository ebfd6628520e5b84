//! Layout fingerprints: a 64-bit FNV-1a hash over a segment's kind and the
//! sizes and offsets of its shared structs, computed at compile time. Two
//! builds that disagree on any field placement disagree on the fingerprint,
//! and `Segment::open` refuses the segment instead of misreading it.

/// Builder for a layout fingerprint, usable in `const` context.
#[derive(Debug, Clone, Copy)]
pub struct Fingerprint(u64);

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Fingerprint {
    /// Starts a fingerprint for the segment kind `kind`.
    pub const fn new(kind: &str) -> Self {
        Fingerprint(FNV_OFFSET).bytes(kind.as_bytes())
    }

    /// Mixes in raw bytes.
    pub(crate) const fn bytes(self, b: &[u8]) -> Self {
        let mut h = self.0;
        let mut i = 0;
        while i < b.len() {
            h ^= b[i] as u64;
            h = h.wrapping_mul(FNV_PRIME);
            i += 1;
        }
        Fingerprint(h)
    }

    /// Mixes in a number (a size, offset or alignment).
    pub const fn num(self, n: usize) -> Self {
        self.bytes(&(n as u64).to_le_bytes())
    }

    /// The finished fingerprint.
    pub const fn finish(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differs_by_kind_and_numbers() {
        let a = Fingerprint::new("a").num(8).finish();
        let b = Fingerprint::new("a").num(16).finish();
        let c = Fingerprint::new("b").num(8).finish();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, Fingerprint::new("a").num(8).finish());
    }
}
