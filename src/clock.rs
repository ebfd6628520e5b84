//! The monotonic clock as plain nanoseconds, comparable across processes
//! (timestamps in the stream's ring, the image's timing fields).

/// Nanoseconds on CLOCK_MONOTONIC.
pub(crate) fn monotonic_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(t) => t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64,
        Err(_) => 0,
    }
}

/// CPU time this process has used (user + system), in nanoseconds, from the
/// scheduler's precise accounting (not the tick-sampled rusage figures).
pub(crate) fn process_cpu_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID) {
        Ok(t) => t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64,
        Err(_) => 0,
    }
}

/// CPU time of the calling thread, in nanoseconds (precise, as above).
pub(crate) fn thread_cpu_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID) {
        Ok(t) => t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64,
        Err(_) => 0,
    }
}

/// Sleeps until CLOCK_MONOTONIC reaches `deadline_ns` (absolute, so a
/// schedule of such sleeps does not drift however long each wake-up
/// takes). A signal may end the sleep early; callers re-check the time.
pub(crate) fn sleep_until_ns(deadline_ns: u64) {
    use nix::sys::time::TimeSpec;
    use nix::time::{ClockId, ClockNanosleepFlags, clock_nanosleep};
    let ts = TimeSpec::new(
        (deadline_ns / 1_000_000_000) as libc::time_t,
        (deadline_ns % 1_000_000_000) as libc::c_long,
    );
    let _ = clock_nanosleep(
        ClockId::CLOCK_MONOTONIC,
        ClockNanosleepFlags::TIMER_ABSTIME,
        &ts,
    );
}

/// Milliseconds since the Unix epoch on CLOCK_REALTIME.
pub(crate) fn unix_ms() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME) {
        Ok(t) => t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000,
        Err(_) => 0,
    }
}

/// A CLOCK_MONOTONIC instant (ns, as in the stream's slots) as RFC 3339
/// UTC, converted with the clocks' offset now (monotonic time is shared by
/// every process of the host since boot).
pub(crate) fn monotonic_to_utc(ns: u64) -> String {
    let now_mono = monotonic_ns();
    let now_ms = unix_ms() as i128;
    let ms = now_ms - (now_mono as i128 - ns as i128) / 1_000_000;
    crate::units::rfc3339_utc(ms.max(0) as u64)
}
