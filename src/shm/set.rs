//! A job's set of segments: the errors of creating, opening and validating
//! them, and the guard that removes a partly created set.

use super::ring::RingError;
use super::segment::{CreateError, OpenError, OutOfBounds, Segment, unlink};

/// Errors of creating, opening and validating the segments of a job. The
/// messages name the segment and the field; what to do about it is the
/// command line's business.
#[derive(Debug, thiserror::Error)]
pub enum SegmentsError {
    /// Creating a segment failed.
    #[error(transparent)]
    Create(#[from] CreateError),
    /// Opening a segment failed.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// A region did not fit its segment.
    #[error(transparent)]
    Layout(#[from] OutOfBounds),
    /// A ring is malformed.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// A task table is malformed.
    #[error(transparent)]
    Table(#[from] super::taskq::TableError),
    /// A parameter in a segment disagrees with the run's settings.
    #[error("segment {segment}: field {field} is {found}, but the run's settings say {expected}")]
    Param {
        /// Segment name.
        segment: String,
        /// Field name.
        field: &'static str,
        /// Value found.
        found: u64,
        /// Value expected.
        expected: u64,
    },
    /// Shared state violates an invariant.
    #[error("segment {segment}: {detail}")]
    Corrupt {
        /// Segment name.
        segment: String,
        /// What is wrong.
        detail: String,
    },
    /// The settings ask for a layout out of range.
    #[error("settings are out of range: {0}")]
    Settings(String),
}

impl SegmentsError {
    /// `Ok` if parameter `field` of `seg` holds the expected value.
    pub(crate) fn check_param(
        seg: &Segment,
        field: &'static str,
        found: u64,
        expected: u64,
    ) -> Result<(), Self> {
        if found == expected {
            Ok(())
        } else {
            Err(SegmentsError::Param {
                segment: seg.name().to_string(),
                field,
                found,
                expected,
            })
        }
    }

    /// A corruption of `segment`.
    pub(crate) fn corrupt(segment: &str, detail: impl Into<String>) -> Self {
        SegmentsError::Corrupt {
            segment: segment.to_string(),
            detail: detail.into(),
        }
    }

    /// Whether the error says the segment's content cannot be used (it is
    /// corrupt, uninitialised, or from another version), as opposed to an
    /// environment problem such as a missing segment or a full /dev/shm.
    pub(crate) fn is_damage(&self) -> bool {
        !matches!(
            self,
            SegmentsError::Create(_)
                | SegmentsError::Settings(_)
                | SegmentsError::Open(OpenError::NotFound { .. } | OpenError::Os { .. })
        ) && !self.is_foreign()
    }

    /// Whether a segment's name is taken by something that is not one of
    /// our segments (see `OpenError::is_foreign`).
    pub(crate) fn is_foreign(&self) -> bool {
        matches!(self, SegmentsError::Open(e) if e.is_foreign())
    }
}

/// Segments created so far for one purpose (a job's set, a whole run).
/// Dropped armed, it unlinks every one of them, last created first: a
/// creation that fails part-way leaves nothing in /dev/shm. [`keep`]
/// disarms it once the whole set exists.
///
/// [`keep`]: CreatedSegments::keep
#[derive(Debug, Default)]
pub struct CreatedSegments {
    names: Vec<String>,
}

impl CreatedSegments {
    /// An empty, armed guard.
    pub(crate) fn new() -> Self {
        CreatedSegments::default()
    }
    /// Adds a segment (by its /dev/shm name) to remove on failure.
    pub(crate) fn add(&mut self, name: &str) {
        self.names.push(name.to_string());
    }
    /// Adds every name of `names`.
    pub(crate) fn extend<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        self.names.extend(names.into_iter().map(str::to_string));
    }
    /// Disarms the guard: the segments stay.
    pub(crate) fn keep(mut self) {
        self.names.clear();
    }
}

impl Drop for CreatedSegments {
    fn drop(&mut self) {
        for n in self.names.iter().rev() {
            let _ = unlink(n);
        }
    }
}
