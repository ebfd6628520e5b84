//! A single-producer single-consumer ring of fixed-size slots in shared
//! memory.
//!
//! Shape (after rtrb and the classic Lamport queue): the producer owns
//! `head` (the next slot it will fill), the consumer owns `tail` (the next
//! slot it will read). Both are `u32` positions that run on forever and wrap;
//! the slot of position `p` is `p & (capacity - 1)` and the fill level is
//! `head - tail` (wrapping), which must never exceed `capacity`.
//!
//! - `head` and `tail` sit on separate cache lines; each side keeps a
//!   private cached copy of the other side's index and re-reads the shared
//!   one only when the cached one says full (producer) or empty (consumer).
//! - Publication is batched: the producer may fill many slots and publish
//!   them with one store; the consumer releases many slots with one store.
//! - Blocking waits sleep on the other side's index as a futex word. The
//!   consumer may ask to be woken only once `wake_at` is reached, so a slow
//!   stream does not wake it for every message.
//! - The indices live in the segment, so either side can be killed and
//!   restarted and carry on where the ring says ([`RingProducer::attach`],
//!   [`RingConsumer::attach`]), or where its own committed record says
//!   (`resume_at`).
//! - Indices read from the segment are untrusted: every refresh checks
//!   `head - tail <= capacity` and reports [`RingError::Corrupt`] otherwise;
//!   slot addresses are masked, so no value can index outside the region.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use super::cell::{CachePadded, Param32, ShmSafe};
use super::segment::Segment;
use super::wait::{Deadline, FutexCell, SpinPolicy, TimedOut};

/// Largest capacity a ring may have (slots).
pub(crate) const MAX_CAPACITY: u32 = 1 << 28;
/// Largest slot size (bytes).
pub(crate) const MAX_SLOT_SIZE: u32 = 1 << 20;

#[repr(C)]
#[derive(Debug, Default)]
struct RingParams {
    /// Number of slots; a power of two in `1..=MAX_CAPACITY`. Immutable.
    capacity: Param32,
    /// Bytes per slot; a multiple of 8 in `8..=MAX_SLOT_SIZE`. Immutable.
    slot_size: Param32,
}

#[repr(C)]
#[derive(Debug, Default)]
struct HeadLine {
    /// Producer position; the consumer sleeps on it when the ring is empty.
    head: FutexCell,
    /// The head value at which a sleeping consumer wants to be woken.
    /// Written by the consumer just before it sleeps, read by the producer
    /// only when the consumer is counted as sleeping.
    wake_at: AtomicU32,
}

/// The shared control block of a ring. It is followed in its segment by the
/// slot array (`capacity * slot_size` bytes).
#[repr(C)]
#[derive(Debug, Default)]
pub struct Ring {
    params: CachePadded<RingParams>,
    head: CachePadded<HeadLine>,
    /// Consumer position; the producer sleeps on it when the ring is full.
    tail: CachePadded<FutexCell>,
}

// SAFETY: repr(C); fields are Param32/FutexCell/AtomicU32 (all ShmSafe and
// valid for every bit pattern) behind CachePadded.
unsafe impl ShmSafe for Ring {}

const _: () = assert!(std::mem::size_of::<Ring>() == 384);

/// Errors of ring attachment and use. They name the segment and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// Capacity or slot size in the segment are out of range.
    #[error("segment {segment}: ring field {field} = {found} is invalid ({expected})")]
    BadParam {
        /// Segment name.
        segment: String,
        /// `capacity` or `slot_size`.
        field: &'static str,
        /// Value found.
        found: u32,
        /// What was expected, in words.
        expected: &'static str,
    },
    /// The segment is smaller than the slot array it claims.
    #[error("segment {segment}: ring needs {needed} bytes of slots but the segment holds {have}")]
    TooSmall {
        /// Segment name.
        segment: String,
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        have: u64,
    },
    /// `head - tail` exceeds the capacity: the indices are corrupt.
    #[error(
        "segment {segment}: ring indices are corrupt (head {head}, tail {tail}, capacity {capacity})"
    )]
    Corrupt {
        /// Segment name.
        segment: String,
        /// Head found.
        head: u32,
        /// Tail found.
        tail: u32,
        /// Capacity.
        capacity: u32,
    },
    /// This process already holds that end of the ring.
    #[error("segment {segment}: this process already holds the ring's {side} end")]
    AlreadyClaimed {
        /// Segment name.
        segment: String,
        /// `producer` or `consumer`.
        side: &'static str,
    },
}

/// The ends of a ring this process holds, by segment name and side. A
/// ring has one producer and one consumer; across processes the role locks
/// enforce it, within a process this list does.
static CLAIMED: std::sync::Mutex<Vec<(String, &'static str)>> = std::sync::Mutex::new(Vec::new());

/// Proof that this process holds one end of a ring; released on drop.
#[derive(Debug)]
struct Claim {
    segment: String,
    side: &'static str,
}

impl Claim {
    fn take(segment: &str, side: &'static str) -> Result<Claim, RingError> {
        let mut c = CLAIMED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if c.iter().any(|(s, d)| s == segment && *d == side) {
            return Err(RingError::AlreadyClaimed {
                segment: segment.to_string(),
                side,
            });
        }
        c.push((segment.to_string(), side));
        Ok(Claim {
            segment: segment.to_string(),
            side,
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        CLAIMED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|(s, d)| !(*s == self.segment && *d == self.side));
    }
}

impl Ring {
    /// Bytes a ring with these parameters occupies (control block + slots),
    /// or `None` if the parameters are out of range.
    pub(crate) fn bytes_for(capacity: u32, slot_size: u32) -> Option<usize> {
        if !capacity.is_power_of_two()
            || capacity > MAX_CAPACITY
            || slot_size == 0
            || slot_size % 8 != 0
            || slot_size > MAX_SLOT_SIZE
        {
            return None;
        }
        (capacity as usize)
            .checked_mul(slot_size as usize)?
            .checked_add(std::mem::size_of::<Ring>())
    }

    /// Sets the parameters of a freshly created (zeroed) ring.
    pub(crate) fn init(&self, capacity: u32, slot_size: u32) {
        debug_assert!(Self::bytes_for(capacity, slot_size).is_some());
        self.params.capacity.set(capacity);
        self.params.slot_size.set(slot_size);
    }

    /// Wakes both sides so they re-check their stop conditions.
    pub(crate) fn kick(&self) {
        self.head.head.kick();
        self.tail.kick();
    }
}

/// A validated view of a ring inside a segment.
#[derive(Debug, Clone, Copy)]
pub struct RingView<'a> {
    ctl: &'a Ring,
    /// Start of the slot array. Invariant: `capacity * slot_size` bytes from
    /// here lie inside the mapping of the segment borrowed for `'a`.
    slots: NonNull<u8>,
    /// Invariant: a power of two, `<= MAX_CAPACITY`.
    capacity: u32,
    /// Invariant: a multiple of 8, `<= MAX_SLOT_SIZE`.
    slot_size: u32,
    segment: &'a str,
}

// SAFETY: the view only points into a MAP_SHARED mapping that outlives it;
// which side may touch which slot is governed by the ring protocol.
unsafe impl Send for RingView<'_> {}

impl<'a> RingView<'a> {
    /// Validates the ring at byte `offset` of `seg` and the slot array after
    /// it.
    pub(crate) fn new(seg: &'a Segment, offset: usize) -> Result<Self, RingError> {
        let ctl: &Ring = seg.view(offset).map_err(|_| RingError::TooSmall {
            segment: seg.name().to_string(),
            needed: (offset + std::mem::size_of::<Ring>()) as u64,
            have: seg.len() as u64,
        })?;
        let capacity = ctl.params.capacity.get();
        let slot_size = ctl.params.slot_size.get();
        let bad = |field, found, expected| RingError::BadParam {
            segment: seg.name().to_string(),
            field,
            found,
            expected,
        };
        if !capacity.is_power_of_two() || capacity > MAX_CAPACITY {
            return Err(bad("capacity", capacity, "a power of two up to 2^28"));
        }
        if slot_size == 0 || slot_size % 8 != 0 || slot_size > MAX_SLOT_SIZE {
            return Err(bad("slot_size", slot_size, "a multiple of 8 up to 1 MiB"));
        }
        let needed = capacity as u64 * slot_size as u64;
        let start = offset + std::mem::size_of::<Ring>();
        let region = seg
            .region(start, needed as usize)
            .map_err(|_| RingError::TooSmall {
                segment: seg.name().to_string(),
                needed,
                have: seg.len().saturating_sub(start) as u64,
            })?;
        Ok(RingView {
            ctl,
            slots: region.ptr(),
            capacity,
            slot_size,
            segment: seg.name(),
        })
    }

    /// Number of slots.
    pub(crate) fn capacity(&self) -> u32 {
        self.capacity
    }
    /// Bytes per slot.
    pub(crate) fn slot_size(&self) -> usize {
        self.slot_size as usize
    }
    /// The shared control block.
    pub(crate) fn control(&self) -> &'a Ring {
        self.ctl
    }

    /// Pointer to the slot of position `pos`.
    #[inline]
    fn slot_ptr(&self, pos: u32) -> *mut u8 {
        let index = (pos & (self.capacity - 1)) as usize;
        debug_assert!(index < self.capacity as usize);
        // SAFETY: `index < capacity`, and `capacity * slot_size` bytes from
        // `slots` are inside the mapping (field invariant), so the offset
        // stays in bounds of one allocation.
        unsafe { self.slots.as_ptr().add(index * self.slot_size as usize) }
    }

    fn check(&self, head: u32, tail: u32) -> Result<u32, RingError> {
        let fill = head.wrapping_sub(tail);
        if fill > self.capacity {
            Err(RingError::Corrupt {
                segment: self.segment.to_string(),
                head,
                tail,
                capacity: self.capacity,
            })
        } else {
            Ok(fill)
        }
    }
}

/// The producing side of a ring. At most one may exist per ring: within a
/// process the claim enforces it, across processes the role lock in the
/// control segment does.
#[derive(Debug)]
pub struct RingProducer<'a> {
    _claim: Claim,
    view: RingView<'a>,
    /// Our head: slots before it are published.
    head: u32,
    /// Last tail we read; `head - cached_tail <= capacity` always.
    cached_tail: u32,
}

impl<'a> RingProducer<'a> {
    /// Attaches where the ring's own head says.
    pub fn attach(view: RingView<'a>) -> Result<Self, RingError> {
        let head = view.ctl.head.head.load_relaxed();
        Self::resume_at(view, head)
    }

    /// Attaches at `head` (a committed position from the caller's record,
    /// which may be ahead of the ring's if we died between committing and
    /// publishing) and publishes it.
    pub(crate) fn resume_at(view: RingView<'a>, head: u32) -> Result<Self, RingError> {
        let claim = Claim::take(view.segment, "producer")?;
        let tail = view.ctl.tail.load();
        view.check(head, tail)?;
        let p = RingProducer {
            _claim: claim,
            view,
            head,
            cached_tail: tail,
        };
        if view.ctl.head.head.load_relaxed() != head {
            // SYNC POINT: release of the slots before `head` (written by our
            // previous incarnation, committed in its record).
            view.ctl.head.head.publish(head);
        }
        Ok(p)
    }

    /// Number of free slots, re-reading the consumer's tail only when the
    /// cached one shows fewer than `want` free.
    #[inline]
    pub fn free(&mut self, want: u32) -> Result<u32, RingError> {
        let mut free = self.view.capacity - self.head.wrapping_sub(self.cached_tail);
        if free < want {
            // SYNC POINT: acquire side of the consumer's `release`: the
            // consumer has finished reading every slot before `tail`, so we
            // may overwrite them.
            let tail = self.view.ctl.tail.load();
            free = self.view.capacity - self.view.check(self.head, tail)?;
            self.cached_tail = tail;
        }
        Ok(free)
    }

    /// The `k`-th free slot after head. Panics unless `k < free(..)` as last
    /// returned: writing a slot the consumer may be reading is never allowed.
    #[inline]
    pub fn slot_mut(&mut self, k: u32) -> &mut [u8] {
        assert!(
            k < self.view.capacity - self.head.wrapping_sub(self.cached_tail),
            "ring slot {k} is not free"
        );
        let p = self.view.slot_ptr(self.head.wrapping_add(k));
        // SAFETY: the slot lies in the mapping (slot_ptr); it is between head
        // and tail + capacity, which the protocol gives to the producer alone,
        // and `&mut self` prevents a second reference from this side.
        unsafe { std::slice::from_raw_parts_mut(p, self.view.slot_size as usize) }
    }

    /// Publishes the next `n` slots (which must have been free). Wakes the
    /// consumer if it sleeps and asked for this fill level.
    #[inline]
    pub fn publish(&mut self, n: u32) {
        assert!(n <= self.view.capacity - self.head.wrapping_sub(self.cached_tail));
        self.head = self.head.wrapping_add(n);
        let line = &self.view.ctl.head;
        // SYNC POINT: release of the `n` slot contents; acquired by the
        // consumer's `available`.
        if line.head.store_and_check(self.head) {
            let wake_at = line.wake_at.load(Ordering::Relaxed);
            if self.head.wrapping_sub(wake_at) as i32 >= 0 {
                line.head.wake();
            }
        }
    }

    /// Wakes the consumer unconditionally (end of stream, stop).
    pub(crate) fn flush_wake(&self) {
        self.view.ctl.head.head.wake();
    }

    /// Copies `msg` into one slot and publishes it if there is room.
    pub fn try_push(&mut self, msg: &[u8]) -> Result<bool, RingError> {
        if self.free(1)? == 0 {
            return Ok(false);
        }
        let n = msg.len().min(self.view.slot_size as usize);
        self.slot_mut(0)[..n].copy_from_slice(&msg[..n]);
        self.publish(1);
        Ok(true)
    }

    /// Waits until at least `want` slots are free (clamped to capacity).
    pub(crate) fn wait_free(
        &mut self,
        want: u32,
        policy: SpinPolicy,
        deadline: impl Into<Deadline>,
    ) -> Result<Result<u32, TimedOut>, RingError> {
        let want = want.clamp(1, self.view.capacity);
        let free = self.free(want)?;
        if free >= want {
            return Ok(Ok(free));
        }
        let head = self.head;
        let cap = self.view.capacity;
        let waited = self.view.ctl.tail.wait_until(
            |tail| {
                let fill = head.wrapping_sub(tail);
                // A corrupt tail ends the wait; `free` reports it below.
                fill > cap || cap - fill >= want
            },
            policy,
            deadline,
        );
        match waited {
            Ok(_) => self.free(want).map(Ok),
            Err(t) => Ok(Err(t)),
        }
    }
}

/// The consuming side of a ring. At most one per ring (see
/// [`RingProducer`]).
#[derive(Debug)]
pub struct RingConsumer<'a> {
    _claim: Claim,
    view: RingView<'a>,
    /// Our tail: slots before it are released.
    tail: u32,
    /// Last head we read; `cached_head - tail <= capacity` always.
    cached_head: u32,
}

impl<'a> RingConsumer<'a> {
    /// Attaches where the ring's own tail says.
    pub fn attach(view: RingView<'a>) -> Result<Self, RingError> {
        let tail = view.ctl.tail.load_relaxed();
        Self::resume_at(view, tail)
    }

    /// Attaches at `tail` (a committed position from the caller's record)
    /// and publishes it.
    pub(crate) fn resume_at(view: RingView<'a>, tail: u32) -> Result<Self, RingError> {
        let claim = Claim::take(view.segment, "consumer")?;
        let head = view.ctl.head.head.load();
        view.check(head, tail)?;
        if view.ctl.tail.load_relaxed() != tail {
            // SYNC POINT: release: slots before `tail` are no longer read.
            view.ctl.tail.publish(tail);
        }
        Ok(RingConsumer {
            _claim: claim,
            view,
            tail,
            cached_head: head,
        })
    }

    /// The view this consumer reads.
    pub(crate) fn view(&self) -> RingView<'a> {
        self.view
    }
    /// Our tail position.
    pub(crate) fn tail(&self) -> u32 {
        self.tail
    }

    /// Number of published, unread slots, re-reading head only when the
    /// cached one shows fewer than `want`.
    #[inline]
    pub fn available(&mut self, want: u32) -> Result<u32, RingError> {
        let mut avail = self.cached_head.wrapping_sub(self.tail);
        if avail < want {
            // SYNC POINT: acquire side of the producer's `publish`: the
            // contents of every slot before `head` are visible.
            let head = self.view.ctl.head.head.load();
            avail = self.view.check(head, self.tail)?;
            self.cached_head = head;
        }
        Ok(avail)
    }

    /// Copies the `k`-th unread slot into `out` (up to the slot size) with
    /// volatile word reads: nothing is assumed about bytes another process
    /// could be writing, whatever the protocol says. Panics unless
    /// `k < available(..)` as last returned.
    #[inline]
    pub fn copy_slot(&self, k: u32, out: &mut [u64]) {
        assert!(
            k < self.cached_head.wrapping_sub(self.tail),
            "ring slot {k} is not published"
        );
        let p = self.view.slot_ptr(self.tail.wrapping_add(k)).cast::<u64>();
        let words = (self.view.slot_size as usize / 8).min(out.len());
        for (i, w) in out[..words].iter_mut().enumerate() {
            let src = p.wrapping_add(i);
            // SAFETY: i < slot_size / 8 (slot sizes are multiples of 8), so
            // the word is inside the slot, which lies in the mapping and is
            // 8-aligned (64-aligned array, 8-multiple slots); a volatile read
            // of a plain u64.
            *w = unsafe { src.read_volatile() };
        }
    }

    /// Copies the `k`-th unread slot into `out` (up to the slot size and a
    /// whole number of words) with volatile word reads, as [`copy_slot`].
    ///
    /// [`copy_slot`]: RingConsumer::copy_slot
    pub(crate) fn copy_slot_bytes(&self, k: u32, out: &mut [u8]) {
        let mut word = [0u64; 1];
        let words = (self.view.slot_size as usize).min(out.len()) / 8;
        for i in 0..words {
            self.copy_slot_word(k, i, &mut word);
            out[8 * i..8 * i + 8].copy_from_slice(&word[0].to_ne_bytes());
        }
    }

    #[inline]
    fn copy_slot_word(&self, k: u32, i: usize, out: &mut [u64; 1]) {
        assert!(
            k < self.cached_head.wrapping_sub(self.tail),
            "ring slot {k} is not published"
        );
        assert!(i < self.view.slot_size as usize / 8);
        let p = self.view.slot_ptr(self.tail.wrapping_add(k)).cast::<u64>();
        // SAFETY: i < slot_size / 8, so the word is inside the slot, which
        // lies in the mapping and is 8-aligned (see `copy_slot`).
        out[0] = unsafe { p.wrapping_add(i).read_volatile() };
    }

    /// Releases the next `n` slots to the producer.
    #[inline]
    pub fn release(&mut self, n: u32) {
        assert!(n <= self.cached_head.wrapping_sub(self.tail));
        self.tail = self.tail.wrapping_add(n);
        // SYNC POINT: release: we are done reading these slots; acquired by
        // the producer's `free`.
        self.view.ctl.tail.publish(self.tail);
    }

    /// Copies one message out into `out` if one is available.
    pub fn try_pop(&mut self, out: &mut [u8]) -> Result<bool, RingError> {
        if self.available(1)? == 0 {
            return Ok(false);
        }
        self.copy_slot_bytes(0, out);
        self.release(1);
        Ok(true)
    }

    /// Waits until at least `want` slots are available (clamped to
    /// capacity); the producer wakes us once that many are there.
    pub(crate) fn wait_available(
        &mut self,
        want: u32,
        policy: SpinPolicy,
        deadline: impl Into<Deadline>,
    ) -> Result<Result<u32, TimedOut>, RingError> {
        let want = want.clamp(1, self.view.capacity);
        let avail = self.available(want)?;
        if avail >= want {
            return Ok(Ok(avail));
        }
        let tail = self.tail;
        let cap = self.view.capacity;
        let line = &self.view.ctl.head;
        // Read by the producer only after it sees us counted as a sleeper
        // (the SeqCst increment inside wait_until orders this store first).
        line.wake_at
            .store(tail.wrapping_add(want), Ordering::Relaxed);
        let waited = line.head.wait_until(
            |head| {
                let fill = head.wrapping_sub(tail);
                fill > cap || fill >= want
            },
            policy,
            deadline,
        );
        match waited {
            Ok(_) => self.available(want).map(Ok),
            Err(t) => {
                // Whatever arrived below the threshold is still usable.
                Ok(Err(t))
            }
        }
    }
}
