//! `history.bin`: the (position, colour) chosen at each iteration, in order.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `"FORKHIST"` |
//! | 8 | 4 | version = 1 (u32 LE) |
//! | 12 | 4 | header size = 40 (u32 LE) |
//! | 16 | 4 | width (u32 LE) |
//! | 20 | 4 | height (u32 LE) |
//! | 24 | 8 | seed (u64 LE) |
//! | 32 | 8 | count of pairs (u64 LE) |
//! | 40 | 6 × count | pairs: position (u24 LE, `y * width + x`), colour (u24 LE, `0xRRGGBB`) |
//!
//! Applying the first N pairs to a black image gives the image after N
//! iterations.

use std::io::{self, Read, Write};
use std::path::Path;

/// File magic.
pub(crate) const MAGIC: [u8; 8] = *b"FORKHIST";
/// Format version.
pub(crate) const VERSION: u32 = 1;
/// Header size.
pub(crate) const HEADER_LEN: usize = 40;
/// Bytes per pair.
pub(crate) const PAIR_LEN: usize = 6;

/// The header of a history file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryHeader {
    /// Image width.
    pub width: u32,
    /// Image height.
    pub height: u32,
    /// Seed of the run.
    pub(crate) seed: u64,
    /// Number of pairs.
    pub(crate) count: u64,
}

impl HistoryHeader {
    /// Encodes the header.
    pub(crate) fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[16..20].copy_from_slice(&self.width.to_le_bytes());
        b[20..24].copy_from_slice(&self.height.to_le_bytes());
        b[24..32].copy_from_slice(&self.seed.to_le_bytes());
        b[32..40].copy_from_slice(&self.count.to_le_bytes());
        b
    }
}

/// Why a history file was refused.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Reading failed.
    #[error("{path}: {err}")]
    Io {
        /// File.
        path: String,
        /// Error.
        err: io::Error,
    },
    /// A header field is wrong.
    #[error(
        "{path}: header field {field} is {found}, expected {expected}; not a forkring history file?"
    )]
    Header {
        /// File.
        path: String,
        /// Field.
        field: &'static str,
        /// Value found.
        found: String,
        /// Value expected.
        expected: String,
    },
    /// An entry is out of range.
    #[error("{path}: pair {index} has position {position}, but the image has {pixels} pixels")]
    Position {
        /// File.
        path: String,
        /// Pair index.
        index: u64,
        /// Position found.
        position: u32,
        /// Pixels in the image.
        pixels: u64,
    },
}

/// A history file read into memory.
#[derive(Debug, Clone)]
pub struct History {
    /// The header.
    pub header: HistoryHeader,
    /// The pairs as stored (6 bytes each), validated.
    pairs: Vec<u8>,
}

#[inline]
fn u24(b: &[u8]) -> u32 {
    b[0] as u32 | (b[1] as u32) << 8 | (b[2] as u32) << 16
}

impl History {
    /// Reads and validates `path`.
    pub fn read(path: &Path) -> Result<History, HistoryError> {
        let p = path.display().to_string();
        let io = |err| HistoryError::Io {
            path: p.clone(),
            err,
        };
        let mut f = std::fs::File::open(path).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        let mut head = [0u8; HEADER_LEN];
        if len < HEADER_LEN as u64 {
            return Err(HistoryError::Header {
                path: p,
                field: "length",
                found: format!("{len} bytes"),
                expected: format!("at least {HEADER_LEN}"),
            });
        }
        f.read_exact(&mut head).map_err(io)?;
        let hdr = |field, found: String, expected: String| HistoryError::Header {
            path: p.clone(),
            field,
            found,
            expected,
        };
        if head[..8] != MAGIC {
            return Err(hdr(
                "magic",
                format!("{:?}", String::from_utf8_lossy(&head[..8])),
                "\"FORKHIST\"".into(),
            ));
        }
        let le32 =
            |r: std::ops::Range<usize>| u32::from_le_bytes(head[r].try_into().expect("4 bytes"));
        let le64 =
            |r: std::ops::Range<usize>| u64::from_le_bytes(head[r].try_into().expect("8 bytes"));
        let (version, hlen) = (le32(8..12), le32(12..16));
        if version != VERSION {
            return Err(hdr("version", version.to_string(), VERSION.to_string()));
        }
        if hlen as usize != HEADER_LEN {
            return Err(hdr("header size", hlen.to_string(), HEADER_LEN.to_string()));
        }
        let header = HistoryHeader {
            width: le32(16..20),
            height: le32(20..24),
            seed: le64(24..32),
            count: le64(32..40),
        };
        let pixels = header.width as u64 * header.height as u64;
        if header.width == 0 || header.height == 0 || pixels > super::settings::MAX_PIXELS {
            return Err(hdr(
                "width x height",
                format!("{}x{}", header.width, header.height),
                "at least 1x1 and at most 2^24 pixels".into(),
            ));
        }
        if header.count > pixels {
            return Err(hdr(
                "count",
                header.count.to_string(),
                format!("at most {pixels} (width x height)"),
            ));
        }
        let want = HEADER_LEN as u64 + header.count * PAIR_LEN as u64;
        if len != want {
            return Err(hdr(
                "length",
                format!("{len} bytes"),
                format!("{want} for {} pairs", header.count),
            ));
        }
        let mut pairs = vec![0u8; (header.count as usize) * PAIR_LEN];
        f.read_exact(&mut pairs).map_err(io)?;
        for (i, pair) in pairs.chunks_exact(PAIR_LEN).enumerate() {
            let position = u24(&pair[..3]);
            if position as u64 >= pixels {
                return Err(HistoryError::Position {
                    path: p,
                    index: i as u64,
                    position,
                    pixels,
                });
            }
        }
        Ok(History { header, pairs })
    }

    /// Number of pairs.
    pub fn len(&self) -> u64 {
        self.header.count
    }

    /// Whether the history holds no iteration.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pairs `(position, colour)` in order.
    pub fn pairs(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.pairs
            .chunks_exact(PAIR_LEN)
            .map(|p| (u24(&p[..3]), u24(&p[3..])))
    }

    /// The RGB8 image after the first `iterations` pairs (the rest black).
    pub fn replay(&self, iterations: u64) -> Vec<u8> {
        let pixels = self.header.width as usize * self.header.height as usize;
        let mut img = vec![0u8; pixels * 3];
        for (p, c) in self.pairs().take(iterations as usize) {
            let o = p as usize * 3; // p < pixels, validated in `read`
            img[o] = (c >> 16) as u8;
            img[o + 1] = (c >> 8) as u8;
            img[o + 2] = c as u8;
        }
        img
    }
}

/// Writes a history file's content to `w`: the header, then `count` pairs
/// produced by `pair(i)` (which may fail, e.g. on a corrupt segment).
pub(crate) fn write(
    w: &mut (impl Write + ?Sized),
    header: HistoryHeader,
    mut pair: impl FnMut(u64) -> io::Result<(u32, u32)>,
) -> io::Result<()> {
    w.write_all(&header.to_bytes())?;
    let mut buf = Vec::with_capacity(64 * 1024 * PAIR_LEN);
    for i in 0..header.count {
        let (p, c) = pair(i)?;
        buf.extend_from_slice(&p.to_le_bytes()[..3]);
        buf.extend_from_slice(&c.to_le_bytes()[..3]);
        if buf.len() >= 64 * 1024 * PAIR_LEN {
            w.write_all(&buf)?;
            buf.clear();
        }
    }
    w.write_all(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.bin");
        let header = HistoryHeader {
            width: 2,
            height: 2,
            seed: 9,
            count: 3,
        };
        let pairs = [(3u32, 0xff0000u32), (0, 0x00ff00), (2, 0x0000ff)];
        let mut f = std::fs::File::create(&path).unwrap();
        write(&mut f, header, |i| Ok(pairs[i as usize])).unwrap();
        drop(f);
        let h = History::read(&path).unwrap();
        assert_eq!(h.header, header);
        assert_eq!(h.pairs().collect::<Vec<_>>(), pairs);
        let img = h.replay(1);
        assert_eq!(&img[9..12], &[255, 0, 0]);
        assert_eq!(img.iter().map(|&b| b as u32).sum::<u32>(), 255);

        // Truncated file.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(
            History::read(&path)
                .unwrap_err()
                .to_string()
                .contains("length")
        );
        // Position out of range.
        let mut bad = bytes.clone();
        bad[HEADER_LEN] = 7;
        std::fs::write(&path, &bad).unwrap();
        assert!(
            History::read(&path)
                .unwrap_err()
                .to_string()
                .contains("position 7")
        );
        // Bad magic.
        let mut bad = bytes;
        bad[0] = b'X';
        std::fs::write(&path, &bad).unwrap();
        assert!(
            History::read(&path)
                .unwrap_err()
                .to_string()
                .contains("magic")
        );
    }
}
