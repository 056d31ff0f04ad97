//! Run-time selection of the AVX2 builds of the pixel loops.
//!
//! Every pixel loop here is exact integer arithmetic, so its AVX2 build writes the same bytes as
//! its baseline build (unit tests compare them); the choice only changes speed.

/// Whether this CPU runs AVX2 code (std caches the CPUID probe).
#[inline]
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `dispatch_avx2!(fast, base, (args…))`: calls `fast(args…)` (a `#[target_feature(enable =
/// "avx2")]` function) when [`has_avx2`] says so, else `base(args…)`. Exactly one of them runs,
/// so the arguments are evaluated once.
macro_rules! dispatch_avx2 {
    ($fast:path, $base:path, ($($arg:expr),* $(,)?)) => {{
        #[cfg(target_arch = "x86_64")]
        let result = if $crate::simd::has_avx2() {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { $fast($($arg),*) }
        } else {
            $base($($arg),*)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let result = $base($($arg),*);
        result
    }};
}

pub(crate) use dispatch_avx2;
