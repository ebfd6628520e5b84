//! Named POSIX shared-memory segments: creation, validation on open,
//! typed views.
//!
//! Creation (`O_CREAT|O_EXCL`, mode 0600) reserves the whole size with
//! `posix_fallocate`, so a full /dev/shm is an error here and never a SIGBUS
//! later. Opening checks, in this order: owner uid, mode 0600, file size,
//! initialisation (waiting for it with a timeout), magic, header size, kind,
//! layout version, fingerprint, and sizes. Each failure is a typed error that
//! names the segment and the field.
//!
//! A creator holds an OFD lock on byte 0 of each segment it creates while
//! it keeps it open (see `lock.rs`); `forkring clean` never removes a
//! locked segment.
//!
//! Residual risk, by design of POSIX shm: a process of the *same user* that
//! truncates a segment while it is mapped makes every mapper take SIGBUS on
//! the lost pages. File seals would prevent that but only exist for memfd
//! files, which have no name in /dev/shm. Mode 0600 and the owner check keep
//! other users out.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap, shm_open, shm_unlink};
use nix::sys::stat::{Mode, fchmod, fstat};

use super::cell::ShmSafe;
use super::header::{HEADER_SIZE, MAGIC, MAX_KIND_LEN, SegmentHeader};
use super::name::{RunName, SHM_DIR};

/// What a segment must look like: its part name, layout version and
/// fingerprint, and (when known) its total size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSpec {
    /// Part name (`forkring.RUN.<part>`), at most 16 bytes; also stored in
    /// the header's `kind` field.
    pub part: &'static str,
    /// Layout version of this kind of segment.
    pub version: u32,
    /// Layout fingerprint (see `layout.rs`).
    pub fingerprint: u64,
    /// Total size in bytes including the header, when the opener knows it.
    pub size: Option<usize>,
}

/// How a segment is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `O_RDWR`, `PROT_READ | PROT_WRITE`.
    ReadWrite,
    /// `O_RDONLY`, `PROT_READ` (status). Only loads may be made through
    /// views of such a segment. The segment must be ours, except for root,
    /// who may look at any user's run.
    ReadOnly,
    /// `ReadOnly`, of a segment that must belong to the given uid
    /// (`status --user NAME`): another user's run, which that user shared
    /// with one of our groups (mode 0640, see [`share_with_group`]).
    ReadOnlyOf(u32),
}

impl Access {
    /// Whether stores may be made through the mapping.
    pub(crate) fn writable(self) -> bool {
        matches!(self, Access::ReadWrite)
    }

    /// Whether a segment owned by `owner` may be opened this way by a
    /// process of effective uid `euid`. Nobody writes into another user's
    /// segments; only root, or the caller that names the owner, reads them.
    fn owner_ok(self, owner: u32, euid: u32) -> bool {
        match self {
            Access::ReadWrite => owner == euid,
            Access::ReadOnly => owner == euid || euid == 0,
            Access::ReadOnlyOf(uid) => owner == uid,
        }
    }
}

/// Whether `mode` (permission bits) is one forkring gives its segments:
/// 0600, or 0640 once the run's owner shared it with a group
/// (`forkring run --group`). Nothing else: never writable by the group,
/// never readable by others.
pub(crate) fn mode_ok(mode: u32) -> bool {
    matches!(mode & 0o7777, 0o600 | 0o640)
}

/// A mapped segment. Unmapped on drop; never unlinked implicitly.
#[derive(Debug)]
pub struct Segment {
    name: String,
    fd: OwnedFd,
    /// Start of the mapping. Invariant: `len` bytes from here are mapped
    /// `MAP_SHARED` for the life of `self`; page aligned.
    base: NonNull<u8>,
    /// Mapping length; at least `HEADER_SIZE`.
    len: usize,
}

// SAFETY: the mapping is process-wide memory shared with other processes;
// all access goes through ShmSafe views (atomics/volatile copies) or through
// protocol-governed raw regions, never through unsynchronised references.
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

/// Errors of [`Segment::create`].
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The requested size is below the header size or too large to map.
    #[error("segment {name}: size {size} bytes is invalid")]
    InvalidSize {
        /// Segment name.
        name: String,
        /// Size asked for.
        size: u64,
    },
    /// The part name does not fit the header's kind field.
    #[error("segment {name}: part name longer than {MAX_KIND_LEN} bytes")]
    PartTooLong {
        /// Segment name.
        name: String,
    },
    /// A segment with this name exists already.
    #[error("segment {name} already exists in /dev/shm")]
    AlreadyExists {
        /// Segment name.
        name: String,
    },
    /// /dev/shm cannot hold the segment.
    #[error("segment {name} needs {} in /dev/shm, {} free", mib(*needed), mib(*free))]
    NoSpace {
        /// Segment name.
        name: String,
        /// Bytes needed.
        needed: u64,
        /// Bytes free at the time.
        free: u64,
    },
    /// Another system call failed.
    #[error("segment {name}: {op} failed: {errno}")]
    Os {
        /// Segment name.
        name: String,
        /// The call that failed.
        op: &'static str,
        /// Its error.
        errno: Errno,
    },
}

/// Errors of [`Segment::open`].
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No such segment.
    #[error("segment {name} does not exist in /dev/shm")]
    NotFound {
        /// Segment name.
        name: String,
    },
    /// The name is not a regular file (a FIFO, a device, a directory, a
    /// symbolic link): not a segment, whoever made it.
    #[error("/dev/shm/{name} is a {kind}, not a segment; refusing to use it")]
    NotRegular {
        /// Segment name.
        name: String,
        /// What it is.
        kind: &'static str,
    },
    /// The segment belongs to another user.
    #[error("segment {name} is owned by uid {found}, expected uid {expected}; refusing to use it")]
    WrongOwner {
        /// Segment name.
        name: String,
        /// Owner found.
        found: u32,
        /// The owner expected: our effective uid, or the user named with
        /// `status --user`.
        expected: u32,
    },
    /// The segment's mode is neither 0600 nor 0640.
    #[error(
        "segment {name} has mode {found:04o}, expected 0600 (or 0640 when shared with a group); refusing to use it"
    )]
    WrongMode {
        /// Segment name.
        name: String,
        /// Mode found.
        found: u32,
    },
    /// The file is smaller than a header.
    #[error("segment {name} is {size} bytes, smaller than its {HEADER_SIZE}-byte header")]
    TooSmall {
        /// Segment name.
        name: String,
        /// File size.
        size: u64,
    },
    /// The creator never published the header.
    #[error(
        "segment {name} is still uninitialised after {waited:?}; its creator may have died while creating it"
    )]
    NotInitialized {
        /// Segment name.
        name: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The magic is wrong: not a forkring segment, or garbage.
    #[error(
        "segment {name}: header field magic is {found:#018x}, expected {MAGIC:#018x} (\"FORKRING\")"
    )]
    BadMagic {
        /// Segment name.
        name: String,
        /// Magic found.
        found: u64,
    },
    /// The kernel refused to open it: another user's segment that is not
    /// shared with a group of ours.
    #[error(
        "segment {name} is another user's and is not shared with a group of yours (permission denied)"
    )]
    NoPermission {
        /// Segment name.
        name: String,
    },
    /// A header field has the wrong value.
    #[error("segment {name}: header field {field} is {found}, expected {expected}")]
    FieldMismatch {
        /// Segment name.
        name: String,
        /// Field name.
        field: &'static str,
        /// Value found.
        found: String,
        /// Value expected.
        expected: String,
    },
    /// The layout version differs (another forkring version made it).
    #[error(
        "segment {name}: header field layout_version is {found}, this forkring expects {expected}; it was made by another version"
    )]
    VersionMismatch {
        /// Segment name.
        name: String,
        /// Version found.
        found: u32,
        /// Version expected.
        expected: u32,
    },
    /// The layout fingerprint differs.
    #[error(
        "segment {name}: header field fingerprint is {found:#018x}, expected {expected:#018x}; it was made by a build with another layout"
    )]
    FingerprintMismatch {
        /// Segment name.
        name: String,
        /// Fingerprint found.
        found: u64,
        /// Fingerprint expected.
        expected: u64,
    },
    /// Header size, file size and expected size disagree.
    #[error("segment {name}: {field} is {found} bytes, expected {expected}")]
    SizeMismatch {
        /// Segment name.
        name: String,
        /// Which size.
        field: &'static str,
        /// Size found.
        found: u64,
        /// Size expected.
        expected: u64,
    },
    /// The header's total size and the file size differ, and the opener
    /// does not know which is right.
    #[error(
        "segment {name}: header field total_size is {header} bytes, but the file is {file} bytes"
    )]
    SizesDisagree {
        /// Segment name.
        name: String,
        /// The header's total_size.
        header: u64,
        /// The file's size.
        file: u64,
    },
    /// Another system call failed.
    #[error("segment {name}: {op} failed: {errno}")]
    Os {
        /// Segment name.
        name: String,
        /// The call that failed.
        op: &'static str,
        /// Its error.
        errno: Errno,
    },
}

impl OpenError {
    /// Whether the name is taken by something that is not one of our
    /// segments (another user's file, a FIFO, a link): not damage that
    /// `forkring clean` may discard.
    pub(crate) fn is_foreign(&self) -> bool {
        matches!(
            self,
            OpenError::NotRegular { .. }
                | OpenError::WrongOwner { .. }
                | OpenError::NoPermission { .. }
        )
    }
}

/// A view did not fit the segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("segment {name}: bytes {offset}..{end} are outside its {len} bytes or misaligned")]
pub struct OutOfBounds {
    /// Segment name.
    pub(crate) name: String,
    /// Start of the requested range.
    pub(crate) offset: usize,
    /// End of the requested range.
    pub(crate) end: usize,
    /// Segment length.
    pub(crate) len: usize,
}

/// A raw byte range of a segment, for bulk data governed by a job's
/// protocol (pixels, shuffle arrays, ring slots).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Region<'a> {
    /// Invariant: `len` bytes from `ptr` lie in the mapping borrowed for `'a`.
    ptr: NonNull<u8>,
    len: usize,
    _seg: std::marker::PhantomData<&'a Segment>,
}

// SAFETY: points into a shared mapping that outlives 'a; access is governed
// by the owning job's protocol.
unsafe impl Send for Region<'_> {}
// SAFETY: as above.
unsafe impl Sync for Region<'_> {}

impl Region<'_> {
    /// Start of the range.
    pub(crate) fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }
    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Copies the 8-byte words `first..first + out.len()` of the region out
    /// with volatile reads: another process may write them at any time, so
    /// nothing is assumed about their values. Panics if the words are not
    /// all inside the region.
    pub(crate) fn read_words(&self, first: usize, out: &mut [u64]) {
        self.check_words(first, out.len());
        let p = self.ptr.as_ptr().cast::<u64>();
        for (i, w) in out.iter_mut().enumerate() {
            // SAFETY: word first + i lies inside the region (checked above),
            // which lies in the mapping for the region's lifetime; the
            // address is 8-aligned (checked above); a volatile read of a
            // plain u64 yields some value whatever another process does.
            *w = unsafe { p.add(first + i).read_volatile() };
        }
    }

    /// Copies `words` into the region's 8-byte words from `first` with
    /// volatile writes. The caller's protocol must give it these words.
    /// Panics if they are not all inside the region.
    pub(crate) fn write_words(&self, first: usize, words: &[u64]) {
        self.check_words(first, words.len());
        let p = self.ptr.as_ptr().cast::<u64>();
        for (i, w) in words.iter().enumerate() {
            // SAFETY: as in `read_words`; no reference into these bytes
            // exists (regions only hand out copies).
            unsafe { p.add(first + i).write_volatile(*w) };
        }
    }

    fn check_words(&self, first: usize, n: usize) {
        assert!(
            self.ptr.as_ptr() as usize % 8 == 0,
            "region is not 8-aligned"
        );
        assert!(
            first
                .checked_add(n)
                .and_then(|e| e.checked_mul(8))
                .is_some_and(|end| end <= self.len),
            "words {first}..{first}+{n} are outside the region of {} bytes",
            self.len
        );
    }
}

#[cfg(test)]
impl Region<'_> {
    /// A region over memory owned by a test (the test keeps it alive).
    pub(crate) fn from_raw_for_tests(ptr: *mut u8, len: usize) -> Self {
        Region {
            ptr: NonNull::new(ptr).expect("non-null test buffer"),
            len,
            _seg: std::marker::PhantomData,
        }
    }
}

fn mib(bytes: u64) -> String {
    let m = bytes as f64 / (1024.0 * 1024.0);
    if m >= 10.0 {
        format!("{m:.0} MiB")
    } else {
        format!("{m:.1} MiB")
    }
}

/// Free bytes in /dev/shm (for unprivileged users: `f_bavail`).
pub fn shm_free_bytes() -> Result<u64, Errno> {
    let st = nix::sys::statvfs::statvfs(SHM_DIR)?;
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}

fn shm_path(name: &str) -> String {
    format!("/{name}")
}

/// Environment variable of the start-up crash test hook: `N` (from 1) makes
/// the process that creates segments kill itself with SIGKILL at its N-th
/// creation step. Each segment has four steps: its file made and locked;
/// sized and mapped; initialised but unpublished; published.
pub const CRASH_POINT_ENV: &str = "FORKRING_TEST_CRASH_POINT";

/// A creation step (see [`CRASH_POINT_ENV`]).
fn crash_point() {
    static STEPS: AtomicU32 = AtomicU32::new(0);
    let Some(n) = std::env::var(CRASH_POINT_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    else {
        return;
    };
    // Relaxed: a counter of this process's own steps, read by nobody else.
    if STEPS.fetch_add(1, Ordering::Relaxed) + 1 == n {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// What the header of a segment file says, read without mapping it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Publication {
    /// The creator published the header (magic set; not validated further).
    Published,
    /// Not published: the creator is initialising it or died doing so.
    /// `creator` is the (pid, start ticks) it recorded, if it got that far.
    Unpublished {
        /// Recorded creator.
        creator: Option<(u32, u64)>,
    },
}

/// Reads whether the segment file open as `fd` is published, with `pread`
/// (no mapping: the file may be truncated or corrupt).
pub(crate) fn publication(fd: BorrowedFd<'_>) -> Result<Publication, Errno> {
    let mut h = [0u8; 48];
    let mut got = 0;
    while got < h.len() {
        match nix::sys::uio::pread(fd, &mut h[got..], got as libc::off_t) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    if got == h.len() && u64::from_le_bytes(h[..8].try_into().expect("8 bytes")) != 0 {
        return Ok(Publication::Published);
    }
    let creator = (got == h.len())
        .then(|| {
            (
                u32::from_le_bytes(h[32..36].try_into().expect("4 bytes")),
                u64::from_le_bytes(h[40..48].try_into().expect("8 bytes")),
            )
        })
        .filter(|&(pid, _)| pid != 0);
    Ok(Publication::Unpublished { creator })
}

/// Unlinks the segment file `name` (as listed in /dev/shm). Missing is fine.
pub fn unlink(name: &str) -> Result<(), Errno> {
    match shm_unlink(shm_path(name).as_str()) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Flags of every open of an existing segment file: a FIFO named like a
/// segment must not block the open, and a symbolic link is not followed.
const OPEN_FLAGS: OFlag = OFlag::O_CLOEXEC
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_NOFOLLOW);

/// What a file type other than a regular file is called in messages.
fn non_regular_kind(mode: libc::mode_t) -> Option<&'static str> {
    Some(match mode & libc::S_IFMT {
        libc::S_IFREG => return None,
        libc::S_IFIFO => "FIFO",
        libc::S_IFDIR => "directory",
        libc::S_IFLNK => "symbolic link",
        libc::S_IFSOCK => "socket",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        _ => "file of unknown type",
    })
}

/// Opens the segment file `name` (as listed in /dev/shm) read-write, for
/// lock probes on segments that may be corrupt. Only a regular file is
/// opened for good (anything else is `EINVAL`); nothing else is checked.
pub(crate) fn open_raw(name: &str) -> Result<OwnedFd, Errno> {
    let fd = shm_open(
        shm_path(name).as_str(),
        OFlag::O_RDWR | OPEN_FLAGS,
        Mode::empty(),
    )?;
    if non_regular_kind(fstat(fd.as_fd())?.st_mode).is_some() {
        return Err(Errno::EINVAL);
    }
    Ok(fd)
}

/// Lets members of group `gid` read the segment file `name`: its group
/// becomes `gid` and its mode 0640 (`forkring run --group`). Only a regular
/// file of ours whose mode is already one we give (see [`mode_ok`]) is
/// changed; anything else is `EPERM`. The group is set before the mode, so
/// the file is never readable by a group the owner did not choose. Setting
/// a group we are not a member of fails with `EPERM` unless we are root.
pub(crate) fn share_with_group(name: &str, gid: u32) -> Result<(), Errno> {
    let fd = shm_open(
        shm_path(name).as_str(),
        OFlag::O_RDONLY | OPEN_FLAGS,
        Mode::empty(),
    )?;
    let st = fstat(fd.as_fd())?;
    if non_regular_kind(st.st_mode).is_some()
        || st.st_uid != nix::unistd::geteuid().as_raw()
        || !mode_ok(st.st_mode)
    {
        return Err(Errno::EPERM);
    }
    nix::unistd::fchown(fd.as_fd(), None, Some(nix::unistd::Gid::from_raw(gid)))?;
    fchmod(fd.as_fd(), Mode::S_IRUSR | Mode::S_IWUSR | Mode::S_IRGRP)
}

/// What keeps a file in /dev/shm from being plainly one of our segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Foreign {
    /// Not a regular file: a FIFO, a directory, a link...
    NotRegular(&'static str),
    /// A regular file of another user.
    OtherUser(u32),
}

impl std::fmt::Display for Foreign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Foreign::NotRegular(kind) => write!(f, "is a {kind}, not a segment"),
            Foreign::OtherUser(uid) => write!(
                f,
                "is owned by uid {uid}, not by us (uid {})",
                nix::unistd::geteuid().as_raw()
            ),
        }
    }
}

/// Whether the file `name` in /dev/shm is something other than a regular
/// file we own. Does not follow symbolic links and opens nothing.
pub(crate) fn foreign(name: &str) -> Result<Option<Foreign>, Errno> {
    let st = nix::sys::stat::lstat(std::path::Path::new(SHM_DIR).join(name).as_path())?;
    if let Some(kind) = non_regular_kind(st.st_mode) {
        return Ok(Some(Foreign::NotRegular(kind)));
    }
    if st.st_uid != nix::unistd::geteuid().as_raw() {
        return Ok(Some(Foreign::OtherUser(st.st_uid)));
    }
    Ok(None)
}

/// Checks that the file `name` in /dev/shm is a complete forkring segment
/// of part `part`, whoever owns it: a regular file of mode 0600, published,
/// with our magic, header size and part name, and a total size equal to its
/// file size. Reads the header with `pread`; maps nothing. `Err` says what
/// is wrong.
pub(crate) fn check_foreign_segment(name: &str, part: &str) -> Result<(), String> {
    let fd = shm_open(
        shm_path(name).as_str(),
        OFlag::O_RDONLY | OPEN_FLAGS,
        Mode::empty(),
    )
    .map_err(|e| format!("cannot be opened ({e})"))?;
    let st = fstat(fd.as_fd()).map_err(|e| format!("cannot be examined ({e})"))?;
    if let Some(kind) = non_regular_kind(st.st_mode) {
        return Err(format!("is a {kind}, not a segment"));
    }
    if !mode_ok(st.st_mode) {
        return Err(format!(
            "has mode {:04o}, not 0600 or 0640",
            st.st_mode & 0o7777
        ));
    }
    let mut h = [0u8; 64];
    let mut got = 0;
    while got < h.len() {
        match nix::sys::uio::pread(fd.as_fd(), &mut h[got..], got as libc::off_t) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("cannot be read ({e})")),
        }
    }
    if got < h.len() {
        return Err(format!("is {got} bytes, smaller than a segment header"));
    }
    let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().expect("8 bytes"));
    let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().expect("4 bytes"));
    if u64_at(0) != MAGIC {
        return Err("has no forkring header (or an unpublished one)".into());
    }
    if u32_at(12) as usize != HEADER_SIZE {
        return Err(format!("has header_size {}", u32_at(12)));
    }
    if u64_at(16) != st.st_size.max(0) as u64 {
        return Err(format!(
            "has header field total_size {}, but the file is {} bytes",
            u64_at(16),
            st.st_size
        ));
    }
    let kind = &h[48..64];
    let end = kind.iter().position(|&b| b == 0).unwrap_or(kind.len());
    if &kind[..end] != part.as_bytes() {
        return Err(format!(
            "has header field kind {:?}, but its name says {part:?}",
            String::from_utf8_lossy(&kind[..end])
        ));
    }
    Ok(())
}

/// Whether the segment file `name` is the file open as `fd`.
fn still_named(name: &str, fd: BorrowedFd<'_>) -> bool {
    let named = nix::sys::stat::stat(std::path::Path::new(SHM_DIR).join(name).as_path());
    match (named, fstat(fd)) {
        (Ok(a), Ok(b)) => (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino),
        _ => false,
    }
}

/// Whether the segment file `name` exists.
pub(crate) fn exists(name: &str) -> bool {
    std::path::Path::new(SHM_DIR).join(name).exists()
}

impl Segment {
    /// Creates segment `part` of `run` with the exact size `spec.size`,
    /// zero-filled, lets `init` fill in the body, then publishes the header.
    /// On any error nothing is left in /dev/shm.
    pub fn create(
        run: &RunName,
        spec: &SegmentSpec,
        init: impl FnOnce(&Segment),
    ) -> Result<Segment, CreateError> {
        let name = run.segment(spec.part);
        if spec.part.len() > MAX_KIND_LEN {
            return Err(CreateError::PartTooLong { name });
        }
        let size = spec.size.unwrap_or(0);
        if size < HEADER_SIZE || size > isize::MAX as usize / 2 {
            return Err(CreateError::InvalidSize {
                name,
                size: size as u64,
            });
        }
        let os = |op, errno| CreateError::Os {
            name: name.clone(),
            op,
            errno,
        };
        let free = shm_free_bytes().map_err(|e| os("statvfs /dev/shm", e))?;
        if size as u64 > free {
            return Err(CreateError::NoSpace {
                name,
                needed: size as u64,
                free,
            });
        }
        let fd = match shm_open(
            shm_path(&name).as_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC,
            Mode::S_IRUSR | Mode::S_IWUSR,
        ) {
            Ok(fd) => fd,
            Err(Errno::EEXIST) => return Err(CreateError::AlreadyExists { name }),
            Err(e) => return Err(os("shm_open", e)),
        };
        // The creator holds byte 0 of every segment it creates for as long as
        // it keeps the segment open, from the first instant: a free lock on
        // an unpublished segment proves its creator dead (`forkring clean`
        // and a resuming `run` rely on it). Someone who found this name
        // abandoned and holds its lock is removing it: leave it to them.
        match super::lock::try_lock(fd.as_fd(), 0) {
            // Locked, and still ours by name: someone who took this file for
            // abandoned and removed it before we locked it has let it go.
            Ok(true) if still_named(&name, fd.as_fd()) => {}
            Ok(_) => return Err(CreateError::AlreadyExists { name }),
            Err(e) => {
                let _ = unlink(&name);
                return Err(os(
                    "fcntl(F_OFD_SETLK)",
                    Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                ));
            }
        }
        crash_point();
        // From here on, remove the file again if anything fails.
        let result = (|| {
            // The umask may have cleared bits of 0600; set it exactly.
            fchmod(fd.as_fd(), Mode::S_IRUSR | Mode::S_IWUSR).map_err(|e| os("fchmod", e))?;
            nix::unistd::ftruncate(fd.as_fd(), size as libc::off_t)
                .map_err(|e| os("ftruncate", e))?;
            match nix::fcntl::posix_fallocate(fd.as_fd(), 0, size as libc::off_t) {
                Ok(()) => {}
                Err(Errno::ENOSPC) => {
                    return Err(CreateError::NoSpace {
                        name: name.clone(),
                        needed: size as u64,
                        free: shm_free_bytes().unwrap_or(0),
                    });
                }
                Err(e) => return Err(os("posix_fallocate", e)),
            }
            let base = map(&fd, size, Access::ReadWrite).map_err(|e| os("mmap", e))?;
            Ok(base)
        })();
        let base = match result {
            Ok(b) => b,
            Err(e) => {
                let _ = unlink(&name);
                return Err(e);
            }
        };
        crash_point();
        let seg = Segment {
            name,
            fd,
            base,
            len: size,
        };
        // (The control segment's byte 0 is its supervisor lock, taken above;
        // a supervisor that resumes a run takes it over.)
        seg.header().write_fields(
            spec.part,
            spec.version,
            size as u64,
            spec.fingerprint,
            std::process::id(),
            crate::procinfo::own_start_ticks(),
        );
        init(&seg);
        crash_point();
        seg.header().publish();
        crash_point();
        Ok(seg)
    }

    /// Opens and validates segment `part` of `run`. Waits up to `init_wait`
    /// for a segment whose creator is still initialising it.
    pub fn open(
        run: &RunName,
        spec: &SegmentSpec,
        access: Access,
        init_wait: Duration,
    ) -> Result<Segment, OpenError> {
        let name = run.segment(spec.part);
        let os = |op, errno| OpenError::Os {
            name: name.clone(),
            op,
            errno,
        };
        let flags = if access.writable() {
            OFlag::O_RDWR
        } else {
            OFlag::O_RDONLY
        } | OPEN_FLAGS;
        let fd = match shm_open(shm_path(&name).as_str(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Err(OpenError::NotFound { name }),
            Err(Errno::ELOOP) => {
                return Err(OpenError::NotRegular {
                    name,
                    kind: "symbolic link",
                });
            }
            Err(Errno::EACCES) => return Err(OpenError::NoPermission { name }),
            Err(e) => return Err(os("shm_open", e)),
        };
        // Nothing is read before the file is known to be a regular file.
        let st = fstat(fd.as_fd()).map_err(|e| os("fstat", e))?;
        if let Some(kind) = non_regular_kind(st.st_mode) {
            return Err(OpenError::NotRegular { name, kind });
        }
        let euid = nix::unistd::geteuid().as_raw();
        if !access.owner_ok(st.st_uid, euid) {
            return Err(OpenError::WrongOwner {
                name,
                found: st.st_uid,
                expected: match access {
                    Access::ReadOnlyOf(uid) => uid,
                    _ => euid,
                },
            });
        }
        let mode = st.st_mode & 0o7777;
        if !mode_ok(mode) {
            return Err(OpenError::WrongMode { name, found: mode });
        }
        let file_size = st.st_size.max(0) as u64;
        if file_size < HEADER_SIZE as u64 {
            return Err(OpenError::TooSmall {
                name,
                size: file_size,
            });
        }
        if file_size > isize::MAX as u64 / 2 {
            return Err(OpenError::SizeMismatch {
                name,
                field: "file size",
                found: file_size,
                expected: spec.size.unwrap_or(0) as u64,
            });
        }
        let len = file_size as usize;
        let base = map(&fd, len, access).map_err(|e| os("mmap", e))?;
        let seg = Segment {
            name,
            fd,
            base,
            len,
        };
        seg.validate(spec, init_wait)?;
        Ok(seg)
    }

    fn validate(&self, spec: &SegmentSpec, init_wait: Duration) -> Result<(), OpenError> {
        let name = || self.name.clone();
        let start = Instant::now();
        let mut magic = self.header().magic();
        while magic == 0 {
            if start.elapsed() >= init_wait {
                return Err(OpenError::NotInitialized {
                    name: name(),
                    waited: init_wait,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
            magic = self.header().magic();
        }
        let h = self.header().fields();
        if h.magic != MAGIC {
            return Err(OpenError::BadMagic {
                name: name(),
                found: h.magic,
            });
        }
        if h.header_size as usize != HEADER_SIZE {
            return Err(OpenError::FieldMismatch {
                name: name(),
                field: "header_size",
                found: h.header_size.to_string(),
                expected: HEADER_SIZE.to_string(),
            });
        }
        if h.kind != spec.part {
            return Err(OpenError::FieldMismatch {
                name: name(),
                field: "kind",
                found: format!("{:?}", h.kind),
                expected: format!("{:?}", spec.part),
            });
        }
        if h.layout_version != spec.version {
            return Err(OpenError::VersionMismatch {
                name: name(),
                found: h.layout_version,
                expected: spec.version,
            });
        }
        if h.fingerprint != spec.fingerprint {
            return Err(OpenError::FingerprintMismatch {
                name: name(),
                found: h.fingerprint,
                expected: spec.fingerprint,
            });
        }
        // The size the opener knows (from the run's settings) is the truth
        // that the file and the header are checked against; without it,
        // neither is known right, and the message says they disagree.
        match spec.size {
            Some(want) => {
                if self.len != want {
                    return Err(OpenError::SizeMismatch {
                        name: name(),
                        field: "file size",
                        found: self.len as u64,
                        expected: want as u64,
                    });
                }
                if h.total_size != want as u64 {
                    return Err(OpenError::SizeMismatch {
                        name: name(),
                        field: "header field total_size",
                        found: h.total_size,
                        expected: want as u64,
                    });
                }
            }
            None if h.total_size != self.len as u64 => {
                return Err(OpenError::SizesDisagree {
                    name: name(),
                    header: h.total_size,
                    file: self.len as u64,
                });
            }
            None => {}
        }
        Ok(())
    }

    /// Segment name as listed in /dev/shm.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Mapped length in bytes (= file size).
    pub(crate) fn len(&self) -> usize {
        self.len
    }
    /// The descriptor (for liveness locks).
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The header.
    pub(crate) fn header(&self) -> &SegmentHeader {
        // SAFETY: `len >= HEADER_SIZE` and the base is page aligned, so a
        // SegmentHeader (128 bytes, align 128) fits at offset 0; it is
        // ShmSafe, so a shared reference to it is sound under concurrent
        // writes by other processes.
        unsafe { self.base.cast::<SegmentHeader>().as_ref() }
    }

    /// A shared view of a `T` at byte `offset`, bounds- and alignment-checked.
    pub fn view<T: ShmSafe>(&self, offset: usize) -> Result<&T, OutOfBounds> {
        let size = std::mem::size_of::<T>();
        let end = offset.checked_add(size);
        match end {
            Some(end) if end <= self.len && offset % std::mem::align_of::<T>() == 0 => {
                // SAFETY: `offset..end` is inside the mapping, so the offset
                // pointer stays in bounds.
                let p = unsafe { self.base.add(offset) }.cast::<T>();
                // SAFETY: `p` is in the mapping and aligned for T (the base
                // is page aligned); T is ShmSafe: valid for every bit pattern
                // and only accessed through atomics or volatile copies, so a
                // shared reference is sound while other processes write the
                // same bytes. The reference borrows `self`, which keeps the
                // mapping alive.
                Ok(unsafe { p.as_ref() })
            }
            _ => Err(OutOfBounds {
                name: self.name.clone(),
                offset,
                end: end.unwrap_or(usize::MAX),
                len: self.len,
            }),
        }
    }

    /// The view of a `T` right after the header: a segment's fixed body.
    pub fn body<T: ShmSafe>(&self) -> Result<&T, OutOfBounds> {
        self.view(HEADER_SIZE)
    }

    /// A raw byte range, bounds-checked.
    pub(crate) fn region(&self, offset: usize, len: usize) -> Result<Region<'_>, OutOfBounds> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(Region {
                // SAFETY: offset <= len of the mapping, so the result is in
                // bounds (or one past the end for an empty range) and
                // non-null.
                ptr: unsafe { self.base.add(offset) },
                len,
                _seg: std::marker::PhantomData,
            }),
            end => Err(OutOfBounds {
                name: self.name.clone(),
                offset,
                end: end.unwrap_or(usize::MAX),
                len: self.len,
            }),
        }
    }
}

fn map(fd: &OwnedFd, len: usize, access: Access) -> Result<NonNull<u8>, Errno> {
    let prot = if access.writable() {
        ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
    } else {
        ProtFlags::PROT_READ
    };
    let len = std::num::NonZeroUsize::new(len).ok_or(Errno::EINVAL)?;
    // SAFETY: a fresh mapping chosen by the kernel (no address hint), of a
    // file we hold open; it aliases no Rust object.
    let p = unsafe { mmap(None, len, prot, MapFlags::MAP_SHARED, fd.as_fd(), 0)? };
    Ok(p.cast())
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping made in create/open;
        // every reference into it borrows `self`, so none outlives this.
        let _ = unsafe { munmap(self.base.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::Param64;
    use crate::shm::layout::Fingerprint;

    #[test]
    fn only_0600_and_0640_are_our_modes() {
        for m in [0o600, 0o640, 0o100_600, 0o100_640] {
            assert!(mode_ok(m), "{m:o}");
        }
        for m in [0o644, 0o660, 0o620, 0o604, 0o700, 0o400, 0o1600, 0o4640, 0] {
            assert!(!mode_ok(m), "{m:o}");
        }
    }

    #[test]
    fn nobody_writes_another_users_segment() {
        // (owner, our euid): who may open how.
        assert!(Access::ReadWrite.owner_ok(1000, 1000));
        assert!(!Access::ReadWrite.owner_ok(999, 1000));
        assert!(
            !Access::ReadWrite.owner_ok(999, 0),
            "root writes no other user's"
        );
        assert!(Access::ReadOnly.owner_ok(1000, 1000));
        assert!(!Access::ReadOnly.owner_ok(999, 1000));
        assert!(Access::ReadOnly.owner_ok(999, 0), "root looks at any run");
        assert!(Access::ReadOnlyOf(999).owner_ok(999, 1000));
        assert!(
            !Access::ReadOnlyOf(999).owner_ok(1000, 1000),
            "only the named owner"
        );
        assert!(!Access::ReadOnlyOf(999).owner_ok(998, 0));
        assert!(!Access::ReadOnlyOf(999).writable() && !Access::ReadOnly.writable());
    }

    fn spec(size: usize) -> SegmentSpec {
        SegmentSpec {
            part: "unit",
            version: 3,
            fingerprint: Fingerprint::new("unit").num(size).finish(),
            size: Some(size),
        }
    }

    fn run(tag: &str) -> RunName {
        RunName::new(&format!("ut-{tag}-{}", std::process::id())).unwrap()
    }

    #[test]
    fn create_open_round_trip() {
        let r = run("rt");
        let s = spec(4096);
        let seg = Segment::create(&r, &s, |seg| {
            seg.body::<Param64>().unwrap().set(42);
        })
        .unwrap();
        let other = Segment::open(&r, &s, Access::ReadOnly, Duration::from_millis(10)).unwrap();
        assert_eq!(other.body::<Param64>().unwrap().get(), 42);
        assert_eq!(other.header().fields().creator_pid, std::process::id());
        assert!(matches!(
            Segment::create(&r, &s, |_| {}),
            Err(CreateError::AlreadyExists { .. })
        ));
        assert!(seg.view::<Param64>(4096).is_err());
        assert!(seg.view::<Param64>(4092).is_err());
        assert!(seg.view::<Param64>(131).is_err());
        assert!(seg.region(4000, 97).is_err());
        unlink(seg.name()).unwrap();
    }
}
