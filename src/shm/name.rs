//! Run names and segment names.
//!
//! A run named `NAME` owns the segments `/dev/shm/forkring.NAME.<part>`.

use std::fmt;

/// Prefix of every forkring segment name in /dev/shm.
pub(crate) const PREFIX: &str = "forkring.";
/// Directory where Linux exposes POSIX shared-memory objects.
pub(crate) const SHM_DIR: &str = "/dev/shm";

/// A validated run name: 1 to 32 characters from `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunName(String);

/// Why a run name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunNameError {
    /// Empty or longer than 32 characters.
    #[error("run name {0:?} must be 1 to 32 characters long")]
    Length(String),
    /// Contains a character outside `[A-Za-z0-9_-]`.
    #[error("run name {name:?} contains {bad:?}; use only letters, digits, '_' and '-'")]
    Character {
        /// The name given.
        name: String,
        /// The first offending character.
        bad: char,
    },
}

impl RunName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, RunNameError> {
        if name.is_empty() || name.len() > 32 {
            return Err(RunNameError::Length(name.to_string()));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(RunNameError::Character {
                name: name.to_string(),
                bad,
            });
        }
        Ok(RunName(name.to_string()))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segment name of `part` of this run, as shown in /dev/shm
    /// (`forkring.NAME.part`).
    pub fn segment(&self, part: &str) -> String {
        format!("{PREFIX}{}.{part}", self.0)
    }
}

impl fmt::Display for RunName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for RunName {
    type Err = RunNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunName::new(s)
    }
}

/// Splits a /dev/shm file name into (run, part) if it is a forkring segment.
pub(crate) fn parse_segment_file(file: &str) -> Option<(RunName, &str)> {
    let rest = file.strip_prefix(PREFIX)?;
    let (run, part) = rest.split_once('.')?;
    Some((RunName::new(run).ok()?, part))
}

/// Every forkring segment in /dev/shm, as (run, part, file name).
pub(crate) fn list_segments() -> std::io::Result<Vec<(RunName, String, String)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(SHM_DIR)? {
        let entry = entry?;
        let Some(file) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if let Some((run, part)) = parse_segment_file(&file) {
            let part = part.to_string();
            out.push((run, part, file));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates() {
        assert!(RunName::new("default").is_ok());
        assert!(RunName::new("a-b_C9").is_ok());
        assert!(RunName::new(&"x".repeat(32)).is_ok());
        assert!(matches!(RunName::new(""), Err(RunNameError::Length(_))));
        assert!(matches!(
            RunName::new(&"x".repeat(33)),
            Err(RunNameError::Length(_))
        ));
        assert!(matches!(
            RunName::new("a.b"),
            Err(RunNameError::Character { bad: '.', .. })
        ));
        assert!(RunName::new("a/b").is_err());
        assert!(RunName::new("ä").is_err());
    }

    #[test]
    fn segment_names() {
        let r = RunName::new("r1").unwrap();
        assert_eq!(r.segment("control"), "forkring.r1.control");
        let (run, part) = parse_segment_file("forkring.r1.control").unwrap();
        assert_eq!(run, r);
        assert_eq!(part, "control");
        assert!(parse_segment_file("other.r1.x").is_none());
        assert!(parse_segment_file("forkring.bad name.x").is_none());
    }
}
