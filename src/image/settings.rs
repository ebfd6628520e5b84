//! The image job's settings and its options of `forkring run`.

use clap::{Arg, ArgMatches};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::job::{Common, Difference, Job, JobError, JobHost, JobSettings, Place, RoleKind};
use crate::shm::Access;

use super::JOB;
use super::host::ImageHost;

/// Number of distinct 24-bit colours: the largest image the job can paint.
pub(crate) const MAX_PIXELS: u64 = 1 << 24;

/// Image job settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSettings {
    /// Width in pixels (>= 1).
    pub width: u32,
    /// Height in pixels (>= 1); `width * height <= MAX_PIXELS`.
    pub height: u32,
    /// Seed of every random choice.
    pub seed: u64,
}

impl ImageSettings {
    /// Number of pixels, which is also the number of iterations.
    pub(crate) fn pixels(&self) -> u32 {
        // Validated at construction: width * height <= 2^24.
        (self.width as u64 * self.height as u64) as u32
    }

    /// Checks every bound (for the command line and for settings decoded
    /// from a control segment alike).
    pub(crate) fn validate(&self) -> Result<(), String> {
        check_size(self.width, self.height)
    }

    fn size(&self) -> String {
        format!("{}x{}", self.width, self.height)
    }
}

/// Parses `--size`: `N` (square) or `WxH`. Only the syntax: the range is
/// [`check_size`]'s.
pub(crate) fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = match s.split_once(['x', 'X']) {
        Some((w, h)) => (w, h),
        None => (s, s),
    };
    let num = |t: &str, what: &str| -> Result<u32, String> {
        let t = t.trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{what} {t:?} in size {s:?} is not a whole number; use N or WxH, e.g. 4096 or 640x480"
            ));
        }
        t.parse::<u32>().map_err(|_| {
            format!(
                "{what} {t} in size {s:?} is out of range; give at most {} pixels in all",
                crate::units::thousands(MAX_PIXELS)
            )
        })
    };
    Ok((num(w, "width")?, num(h, "height")?))
}

/// Checks an image size: each side at least 1, at most 2^24 pixels in all.
pub(crate) fn check_size(w: u32, h: u32) -> Result<(), String> {
    if w == 0 || h == 0 {
        return Err(format!(
            "size {w}x{h} has no pixels; width and height must be at least 1"
        ));
    }
    let pixels = w as u64 * h as u64;
    if pixels > MAX_PIXELS {
        let t = crate::units::thousands;
        return Err(format!(
            "size {w}x{h} has {} pixels, but there are only {} distinct 24-bit colours and no colour may repeat; use at most 4096x4096 (or any WxH with W*H <= {})",
            t(pixels),
            t(MAX_PIXELS),
            t(MAX_PIXELS)
        ));
    }
    Ok(())
}

const HEADING: &str = "Image job";

/// Adds `--size` to `forkring run`.
pub(super) fn run_options(cmd: clap::Command) -> clap::Command {
    cmd.arg(
        Arg::new("size")
            .long("size")
            .value_name("N|WxH")
            .value_parser(parse_size)
            .help("Image size: N (square) or WxH; at most 2^24 pixels [default: 4096]")
            .help_heading(HEADING),
    )
}

pub(super) fn options_given(m: &ArgMatches) -> Vec<String> {
    crate::job::given(m, &["size"])
}

pub(super) fn from_args(m: &ArgMatches, common: &Common) -> Result<ImageSettings, JobError> {
    let (width, height) = m
        .get_one::<(u32, u32)>("size")
        .copied()
        .unwrap_or((4096, 4096));
    let s = ImageSettings {
        width,
        height,
        seed: common.seed,
    };
    s.validate().map_err(JobError::Usage)?;
    Ok(s)
}

pub(super) fn decode(bytes: &[u8]) -> Result<Box<dyn JobSettings>, String> {
    let s: ImageSettings = crate::job::decode_bincode(bytes)?;
    s.validate()?;
    Ok(Box::new(s))
}

impl JobSettings for ImageSettings {
    fn job(&self) -> &'static dyn Job {
        &JOB
    }
    fn encode(&self) -> Vec<u8> {
        crate::job::encode_bincode(self)
    }
    fn clone_box(&self) -> Box<dyn JobSettings> {
        Box::new(self.clone())
    }
    fn roles(&self) -> Vec<(&'static RoleKind, u32)> {
        super::role::KINDS.iter().map(|k| (k, 1)).collect()
    }
    fn shm_bytes(&self) -> u64 {
        super::layout::shm_bytes(self)
    }
    fn differences(&self, requested: &dyn JobSettings) -> Vec<Difference> {
        let Some(b) = requested.downcast::<ImageSettings>() else {
            return Vec::new();
        };
        [
            Difference::of("--size", Some(self.size()), Some(b.size())),
            Difference::of("--seed", Some(self.seed), Some(b.seed)),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
    fn adopt_seed(&mut self, recorded: &dyn JobSettings) {
        if let Some(r) = recorded.downcast::<ImageSettings>() {
            self.seed = r.seed;
        }
    }
    fn ends_run(&self) -> bool {
        true
    }
    fn to_json(&self) -> Value {
        json!({ "size": self.size(), "width": self.width, "height": self.height, "seed": self.seed })
    }
    fn create(&self, at: Place<'_>) -> Result<Box<dyn JobHost>, JobError> {
        Ok(Box::new(ImageHost::create(at.run, self)?))
    }
    fn open(&self, at: Place<'_>, access: Access) -> Result<Box<dyn JobHost>, JobError> {
        Ok(Box::new(ImageHost::open(at.run, self, access)?))
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(s: &str) -> Result<(u32, u32), String> {
        let (w, h) = parse_size(s)?;
        check_size(w, h).map(|()| (w, h))
    }

    #[test]
    fn sizes() {
        let parse_size = size;
        assert_eq!(parse_size("4096"), Ok((4096, 4096)));
        assert_eq!(parse_size("3x5"), Ok((3, 5)));
        assert_eq!(parse_size("1"), Ok((1, 1)));
        assert!(parse_size("0").unwrap_err().contains("at least 1"));
        assert!(
            parse_size("5000")
                .unwrap_err()
                .contains("distinct 24-bit colours")
        );
        assert!(
            parse_size("10x")
                .unwrap_err()
                .contains("not a whole number")
        );
        assert!(
            parse_size("4294967296x1")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(parse_size("x").is_err());
        assert!(parse_size("16777216x1").is_ok());
        assert!(parse_size("16777217x1").is_err());
    }

    #[test]
    fn encode_decode_and_compare() {
        let s = ImageSettings {
            width: 4,
            height: 4,
            seed: 7,
        };
        let b = s.encode();
        let d = decode(&b).unwrap();
        assert_eq!(d.downcast::<ImageSettings>(), Some(&s));
        assert!(decode(&b[..b.len() / 2]).is_err());
        assert!(decode(&[0xff; 64]).is_err());
        let mut t = s.clone();
        t.seed = 8;
        let diff = s.differences(&t);
        assert_eq!(diff.len(), 1);
        assert_eq!(
            diff[0].to_string(),
            "--seed: the run has 7, you asked for 8"
        );
        assert!(s.differences(&s).is_empty());
    }
}
