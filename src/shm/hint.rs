//! Cache prefetch hints. They never fault and never change program
//! semantics; they only move cache lines earlier.

/// Asks the CPU to fetch the cache line at `p` for reading. Only a hint:
/// never faults, whatever `p` is.
#[inline(always)]
pub(crate) fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is an architectural hint that never faults, for any
    // address; SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Whether this CPU has PREFETCHW (checked once by the caller).
pub(crate) fn has_prefetchw() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid;
        // PREFETCHW is CPUID.80000001H:ECX[bit 8] ("3dnowprefetch").
        #[allow(unused_unsafe)]
        // SAFETY: CPUID exists on every x86_64 CPU; leaf 0x8000_0001 is read
        // only after leaf 0x8000_0000 says it exists.
        let ecx = unsafe {
            if __cpuid(0x8000_0000).eax < 0x8000_0001 {
                return false;
            }
            __cpuid(0x8000_0001).ecx
        };
        ecx & (1 << 8) != 0
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Asks the CPU to fetch the cache line at `p` in exclusive state, ready to
/// be written: a line the peer process modified last is then taken over
/// before our store needs it, instead of during the store. `has_w` must come
/// from [`has_prefetchw`]; without it this is a read prefetch.
#[inline(always)]
pub(crate) fn prefetch_write(p: *const u8, has_w: bool) {
    #[cfg(target_arch = "x86_64")]
    if has_w {
        // SAFETY: PREFETCHW is a hint that never faults, for any address;
        // the caller checked that the CPU implements it. It touches no
        // registers but the address operand, and no stack.
        unsafe {
            std::arch::asm!("prefetchw [{0}]", in(reg) p, options(nostack, preserves_flags, readonly))
        };
        return;
    }
    prefetch(p);
}
