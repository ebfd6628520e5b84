//! Segment creation and validation against wrong, hostile and garbage
//! segments, through the library.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use forkring::shm::RunName;
use forkring::shm::layout::Fingerprint;
use forkring::shm::segment::{self, Access, CreateError, OpenError, Segment, SegmentSpec};

fn run(tag: &str) -> RunName {
    RunName::new(&format!("tseg-{tag}-{}", std::process::id())).unwrap()
}

fn spec(size: usize, version: u32) -> SegmentSpec {
    SegmentSpec {
        part: "test",
        version,
        fingerprint: Fingerprint::new("test").num(7).finish(),
        size: Some(size),
    }
}

fn path(r: &RunName) -> String {
    format!("/dev/shm/{}", r.segment("test"))
}

struct Unlink(String);
impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn open(r: &RunName, s: &SegmentSpec) -> Result<Segment, OpenError> {
    Segment::open(r, s, Access::ReadWrite, Duration::from_millis(50))
}

#[test]
fn wrong_magic_version_size_fingerprint() {
    let r = run("fields");
    let _u = Unlink(path(&r));
    let good = spec(8192, 1);
    let seg = Segment::create(&r, &good, |_| {}).unwrap();
    drop(seg);
    assert!(open(&r, &good).is_ok());

    match open(&r, &spec(8192, 2)) {
        Err(OpenError::VersionMismatch {
            found: 1,
            expected: 2,
            name,
        }) => assert!(name.contains("test")),
        other => panic!("{other:?}"),
    }
    let mut fp = good.clone();
    fp.fingerprint ^= 1;
    assert!(matches!(
        open(&r, &fp),
        Err(OpenError::FingerprintMismatch { .. })
    ));
    match open(&r, &spec(4096, 1)) {
        Err(OpenError::SizeMismatch {
            found: 8192,
            expected: 4096,
            field,
            ..
        }) => assert_eq!(field, "file size"),
        other => panic!("{other:?}"),
    }
    // The header claims another total size than the file has.
    let mut bytes = std::fs::read(path(&r)).unwrap();
    bytes[16..24].copy_from_slice(&9999u64.to_le_bytes());
    std::fs::write(path(&r), &bytes).unwrap();
    assert!(matches!(
        open(&r, &good),
        Err(OpenError::SizeMismatch { found: 9999, .. })
    ));
    // Wrong magic.
    bytes[0..8].copy_from_slice(b"NOTFORKR");
    std::fs::write(path(&r), &bytes).unwrap();
    let e = open(&r, &good).unwrap_err();
    assert!(matches!(e, OpenError::BadMagic { .. }));
    assert!(e.to_string().contains("magic"), "{e}");
}

#[test]
fn wrong_owner_and_mode_are_refused() {
    let r = run("perm");
    let _u = Unlink(path(&r));
    let s = spec(4096, 1);
    drop(Segment::create(&r, &s, |_| {}).unwrap());
    std::fs::set_permissions(path(&r), std::fs::Permissions::from_mode(0o644)).unwrap();
    match open(&r, &s) {
        Err(OpenError::WrongMode { found: 0o644, .. }) => {}
        other => panic!("{other:?}"),
    }
    std::fs::set_permissions(path(&r), std::fs::Permissions::from_mode(0o600)).unwrap();
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(path(&r), Some(12345), None).unwrap();
        match open(&r, &s) {
            Err(OpenError::WrongOwner { found: 12345, .. }) => {}
            other => panic!("{other:?}"),
        }
    } else {
        eprintln!("skipped the owner check: changing a file's owner needs root");
    }
}

#[test]
fn garbage_and_uninitialised_segments_are_refused() {
    let r = run("garbage");
    let _u = Unlink(path(&r));
    // Random bytes.
    let mut x: u64 = 0x1234_5678;
    let garbage: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(path(&r), &garbage).unwrap();
    std::fs::set_permissions(path(&r), std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(
        open(&r, &spec(4096, 1)),
        Err(OpenError::BadMagic { .. })
    ));
    // All zero: a creator that died before publishing. Waited for, then refused.
    std::fs::write(path(&r), vec![0u8; 4096]).unwrap();
    let e = open(&r, &spec(4096, 1)).unwrap_err();
    assert!(matches!(e, OpenError::NotInitialized { .. }), "{e}");
    // The library's message is neutral; the command line adds what to do.
    assert!(operator_message(e.into(), &r).contains("forkring clean"));
    // Too small for a header.
    std::fs::write(path(&r), vec![0u8; 10]).unwrap();
    assert!(matches!(
        open(&r, &spec(4096, 1)),
        Err(OpenError::TooSmall { size: 10, .. })
    ));
    assert!(matches!(
        open(&run("absent"), &spec(4096, 1)),
        Err(OpenError::NotFound { .. })
    ));
}

/// What the operator reads for a segment error of run `r`.
fn operator_message(e: forkring::shm::SegmentsError, r: &RunName) -> String {
    let e = forkring::error::Error::Job(forkring::job::JobError::Segments(e));
    forkring::cli::report(e, Some(r)).message
}

#[test]
fn more_than_dev_shm_has_fails_cleanly_at_creation() {
    let r = run("nospace");
    let free = segment::shm_free_bytes().unwrap();
    let too_big = free + (1 << 30);
    let e = Segment::create(&r, &spec(too_big as usize, 1), |_| {}).unwrap_err();
    match &e {
        CreateError::NoSpace { needed, .. } => assert_eq!(*needed, too_big),
        other => panic!("{other:?}"),
    }
    let msg = operator_message(e.into(), &r);
    assert!(
        msg.contains("needs") && msg.contains("free") && msg.contains("--shm-size"),
        "{msg}"
    );
    assert!(
        !std::path::Path::new(&path(&r)).exists(),
        "a failed creation left a file"
    );
}

/// A run made by the previous forkring (control segment layout version 1)
/// is refused on open with the version error and the `forkring clean` hint.
#[test]
fn a_run_of_the_previous_layout_version_is_refused() {
    let r = run("oldver");
    let old = SegmentSpec {
        part: "control",
        version: 1,
        fingerprint: Fingerprint::new("control").num(9216).finish(),
        size: Some(128 + 9216),
    };
    let seg = Segment::create(&r, &old, |_| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_forkring"))
        .args([
            "run",
            "--name",
            r.as_str(),
            "--jobs",
            "image",
            "--size",
            "8",
        ])
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("layout_version is 1, this forkring expects 2"),
        "{t}"
    );
    assert!(t.contains(&format!("forkring clean {r}")), "{t}");
    segment::unlink(seg.name()).unwrap();
}
