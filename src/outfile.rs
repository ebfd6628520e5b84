//! Output files: the output directory check and atomic writes.
//!
//! Every result file is written to a temporary name in its final directory,
//! flushed and fsynced, then renamed over the final name, and the directory
//! is fsynced. A reader therefore sees the old file or the complete new one,
//! never a half-written one, even if forkring dies in the middle.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// An output operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {path}: {err}")]
pub struct OutputError {
    /// What we tried.
    pub(crate) op: &'static str,
    /// The path.
    pub(crate) path: String,
    /// The cause.
    pub(crate) err: io::Error,
}

fn out_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> OutputError + 'a {
    move |err| OutputError {
        op,
        path: path.display().to_string(),
        err,
    }
}

/// Creates `dir` if needed, checks that we can create files in it, and
/// returns it as an absolute path. Run before any work starts.
pub(crate) fn prepare_dir(dir: &Path) -> Result<PathBuf, OutputError> {
    // create_dir_all's "File exists" would not say that a file is in the way.
    if let Ok(meta) = std::fs::metadata(dir)
        && !meta.is_dir()
    {
        return Err(OutputError {
            op: "use",
            path: dir.display().to_string(),
            err: io::Error::new(
                io::ErrorKind::NotADirectory,
                "it is a file, not a directory",
            ),
        });
    }
    std::fs::create_dir_all(dir).map_err(out_err("create directory", dir))?;
    let abs = std::fs::canonicalize(dir).map_err(out_err("resolve", dir))?;
    let probe = abs.join(format!(".forkring-probe-{}", std::process::id()));
    File::create(&probe).map_err(out_err("write into directory", &abs))?;
    let _ = std::fs::remove_file(&probe);
    Ok(abs)
}

/// Size and SHA-256 of a written file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Final path.
    pub(crate) path: PathBuf,
    /// Bytes written.
    pub bytes: u64,
    /// Lower-case hex SHA-256 of the content.
    pub sha256: String,
}

/// A writer that hashes and counts what passes through.
struct Hashing<W: Write> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `dest` atomically with the content `fill` produces.
pub fn write_atomic(
    dest: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<Written, OutputError> {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = dest.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(out_err("create", &tmp))?;
    let mut w = Hashing {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let result = fill(&mut w)
        .and_then(|()| w.flush())
        .and_then(|()| w.inner.get_ref().sync_all());
    if let Err(err) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(OutputError {
            op: "write",
            path: dest.display().to_string(),
            err,
        });
    }
    let Hashing {
        inner,
        hasher,
        bytes,
    } = w;
    drop(inner);
    if let Err(err) = std::fs::rename(&tmp, dest) {
        let _ = std::fs::remove_file(&tmp);
        return Err(OutputError {
            op: "rename into place",
            path: dest.display().to_string(),
            err,
        });
    }
    sync_dir(dest.parent().unwrap_or(Path::new(".")))?;
    Ok(Written {
        path: dest.to_path_buf(),
        bytes,
        sha256: hex(&hasher.finalize()),
    })
}

/// Why a job's working file (a file written as a job goes, whose committed
/// length is recorded in shared memory) cannot be resumed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkingError {
    /// Opening or truncating it failed.
    #[error(transparent)]
    Io(#[from] OutputError),
    /// It is gone although records were committed to it.
    #[error("{path} is missing, but {committed} bytes of records were committed to it")]
    Missing {
        /// The file.
        path: String,
        /// Committed length.
        committed: u64,
    },
    /// It is shorter than committed.
    #[error(
        "{path} is {len} bytes, shorter than the {committed} committed: it was truncated or replaced behind forkring's back"
    )]
    Short {
        /// The file.
        path: String,
        /// Its length.
        len: u64,
        /// Committed length.
        committed: u64,
    },
}

/// Opens a job's working file for appending after its committed length:
/// created only when nothing was committed yet (a missing file with
/// committed records is data lost, not a new start), cut back to
/// `committed` bytes (what a killed writer wrote past its last commit).
pub(crate) fn open_working(path: &Path, committed: u64) -> Result<File, WorkingError> {
    use std::io::{Seek, SeekFrom};
    let p = || path.display().to_string();
    let mut f = match OpenOptions::new()
        .create(committed == 0)
        .read(true)
        .write(true)
        .truncate(false)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(WorkingError::Missing {
                path: p(),
                committed,
            });
        }
        Err(e) => return Err(out_err("open", path)(e).into()),
    };
    let len = f
        .metadata()
        .map_err(out_err("read the size of", path))?
        .len();
    if len < committed {
        return Err(WorkingError::Short {
            path: p(),
            len,
            committed,
        });
    }
    f.set_len(committed).map_err(out_err("truncate", path))?;
    f.seek(SeekFrom::End(0)).map_err(out_err("seek in", path))?;
    Ok(f)
}

/// Publishes a working file under its final name `dest` without giving it
/// up (it stays until the handoff is complete, so a failed handoff can be
/// retried). Same file system: a hard link to a temporary name, then an
/// atomic rename; elsewhere: an atomic copy. Returns its size and SHA-256;
/// a file that cannot be checksummed is an error, never an empty checksum.
pub(crate) fn publish_working(working: &Path, dest: &Path) -> Result<Written, OutputError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(working, &tmp).is_err() {
        return write_atomic(dest, |w| {
            let mut f = File::open(working)?;
            io::copy(&mut f, w).map(|_| ())
        });
    }
    std::fs::rename(&tmp, dest).map_err(|err| {
        let _ = std::fs::remove_file(&tmp);
        OutputError {
            op: "rename into place",
            path: dest.display().to_string(),
            err,
        }
    })?;
    sync_dir(dir)?;
    let bytes = std::fs::metadata(dest)
        .map_err(out_err("read the size of", dest))?
        .len();
    let sha256 = sha256_file(dest).map_err(out_err("checksum", dest))?;
    Ok(Written {
        path: dest.to_path_buf(),
        bytes,
        sha256,
    })
}

/// Removes the temporary files that an earlier writer of `dir` left when it
/// died mid-write: `.F.tmp-PID` for each result file name `F` of `names`,
/// whose writer PID is provably gone (no such process, or the process now
/// under that pid started after the file was last written). The caller owns
/// the output of the run (its supervisor lock). Returns the removed paths.
pub(crate) fn remove_stale_temps(dir: &Path, names: &[&str]) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(file) = file.to_str() else { continue };
        let Some(pid) = names.iter().find_map(|n| {
            file.strip_prefix(&format!(".{n}.tmp-"))
                .and_then(|p| p.parse::<u32>().ok())
        }) else {
            continue;
        };
        let Ok(meta) = e.metadata() else { continue };
        if pid == me || !meta.is_file() || writer_alive(pid, &meta) {
            continue;
        }
        if std::fs::remove_file(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    removed
}

/// Whether process `pid` may have written a file last modified as `meta`
/// says: it exists and started no later than that.
fn writer_alive(pid: u32, meta: &std::fs::Metadata) -> bool {
    let Some(ticks) = crate::procinfo::start_ticks(pid) else {
        return false;
    };
    match (crate::procinfo::start_unix_secs(ticks), meta.modified()) {
        (Some(started), Ok(modified)) => {
            let modified = modified
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            // Start times have clock-tick resolution: allow a second.
            started <= modified + 1.0
        }
        _ => true,
    }
}

/// Fsyncs a directory so that renames in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), OutputError> {
    // The parent of a bare file name (`x.png`) is "": the current directory.
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(out_err("sync directory", dir))
}

/// Lower-case hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a file, lower-case hex.
pub(crate) fn sha256_file(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hex(&h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// Writes an RGB8 image as a PNG to `w`.
pub(crate) fn encode_png(w: &mut dyn Write, width: u32, height: u32, rgb: &[u8]) -> io::Result<()> {
    let mut enc = png::Encoder::new(w, width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    // Random colours do not compress; partial images are mostly black and
    // compress well even without filtering. Fast keeps 48 MiB under a second.
    enc.set_compression(png::Compression::Fast);
    enc.set_filter(png::Filter::NoFilter);
    let mut writer = enc.write_header().map_err(io::Error::other)?;
    writer.write_image_data(rgb).map_err(io::Error::other)?;
    writer.finish().map_err(io::Error::other)
}

/// Decodes a PNG file into (width, height, RGB8 bytes).
pub fn decode_png(path: &Path) -> Result<(u32, u32, Vec<u8>), String> {
    let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let dec = png::Decoder::new(io::BufReader::new(f));
    let mut reader = dec
        .read_info()
        .map_err(|e| format!("{}: not a readable PNG: {e}", path.display()))?;
    let info = reader.info();
    if info.color_type != png::ColorType::Rgb || info.bit_depth != png::BitDepth::Eight {
        return Err(format!(
            "{}: PNG is {:?}/{:?}, expected 8-bit RGB",
            path.display(),
            info.color_type,
            info.bit_depth
        ));
    }
    let (w, h) = (info.width, info.height);
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| format!("{}: image too large", path.display()))?;
    let mut buf = vec![0u8; size];
    let frame = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("{}: corrupt PNG data: {e}", path.display()))?;
    buf.truncate(frame.buffer_size());
    Ok((w, h, buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_and_png_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let out = prepare_dir(&dir.path().join("a/b")).unwrap();
        let dest = out.join("x.png");
        let rgb: Vec<u8> = (0..2 * 3 * 3).map(|i| i as u8).collect();
        let w = write_atomic(&dest, |w| encode_png(w, 2, 3, &rgb)).unwrap();
        assert_eq!(w.bytes, std::fs::metadata(&dest).unwrap().len());
        assert_eq!(w.sha256, sha256_file(&dest).unwrap());
        assert_eq!(decode_png(&dest).unwrap(), (2, 3, rgb));
        // A failing fill leaves no file and no temporary behind.
        let r = write_atomic(&out.join("y"), |_| Err(io::Error::other("boom")));
        assert!(r.is_err());
        let names: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.png")]);
    }

    #[test]
    fn unwritable_dir_is_refused() {
        assert!(prepare_dir(Path::new("/proc/forkring-no")).is_err());
    }
}
