//! A job's progress as named counters with units: a generic view that the
//! live display, log lines, systemd's `STATUS=` and `status --json` print
//! without knowing the job.

use serde::{Deserialize, Serialize};

/// A counter's value: a count, or a measured figure (absent while unknown).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CounterValue {
    /// A count.
    Count(u64),
    /// A measured figure; `None` while not known yet.
    Figure(Option<f64>),
}

/// One named counter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counter {
    /// What is counted or measured, e.g. `received`, `rate`.
    pub name: String,
    /// The value.
    pub value: CounterValue,
    /// Its unit: what a count counts (`vectors`), or a figure's unit (`Hz`).
    pub unit: String,
    /// For a count with a known end: the count at completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

impl Counter {
    /// A count of `unit`s, optionally out of `total`.
    pub fn count(name: &str, value: u64, unit: &str, total: Option<u64>) -> Counter {
        Counter {
            name: name.to_string(),
            value: CounterValue::Count(value),
            unit: unit.to_string(),
            total,
        }
    }
    /// A measured figure in `unit` (NaN and infinities mean unknown).
    pub(crate) fn figure(name: &str, value: f64, unit: &str) -> Counter {
        Counter {
            name: name.to_string(),
            value: CounterValue::Figure(value.is_finite().then_some(value)),
            unit: unit.to_string(),
            total: None,
        }
    }
    /// The value of a count (0 for a figure).
    pub(crate) fn as_count(&self) -> u64 {
        match self.value {
            CounterValue::Count(n) => n,
            CounterValue::Figure(_) => 0,
        }
    }
}

/// A job's progress. `counters[0]` is the job's main counter: the display
/// shows its rate, and with a total a bar, a percentage and an ETA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The job's name.
    pub job: String,
    /// Its counters, main counter first.
    pub counters: Vec<Counter>,
}

impl Progress {
    /// The main counter's count.
    pub(crate) fn main(&self) -> u64 {
        self.counters.first().map_or(0, Counter::as_count)
    }
}
