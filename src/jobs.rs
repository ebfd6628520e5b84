//! The registry: the only place that names the jobs. Adding a job is a
//! folder and one line here (see "Adding a job" in the README).

use crate::job::{Job, Registry};

/// Every job this forkring runs, in the order of their roles, their
/// sections of `summary.json` and their lines in `status`.
pub static ALL: Registry = &[
    &crate::image::JOB as &dyn Job,
    &crate::stream::JOB,
    &crate::tasks::JOB,
];
