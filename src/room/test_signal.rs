//! Test signals for the room's unit tests: sine tones and a Goertzel level
//! measurement (a single-frequency DFT, Hann-windowed, so tones that do not fall
//! on a bin still measure within a fraction of a dB).

/// `len` samples of a sine at `freq` Hz sampled at `rate` Hz, peak `amplitude`.
pub fn tone(freq: f64, rate: u32, amplitude: f64, len: usize) -> Vec<i16> {
    (0..len)
        .map(|n| (amplitude * (2.0 * std::f64::consts::PI * freq * n as f64 / f64::from(rate)).sin()).round() as i16)
        .collect()
}

/// Peak amplitude of the `freq` Hz component of `samples` (at `rate` Hz).
pub fn amplitude(samples: &[i16], freq: f64, rate: u32) -> f64 {
    let n = samples.len();
    if n == 0 {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut window_sum = 0.0;
    for (i, &x) in samples.iter().enumerate() {
        let hann = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos();
        window_sum += hann;
        let s0 = f64::from(x) * hann + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power.max(0.0).sqrt() / window_sum
}

/// Heap allocations made by the calling thread so far (counted by the test
/// binary's global allocator below), for "does not allocate per tick" tests.
pub fn allocations() -> u64 {
    ALLOCATIONS.with(|a| a.get())
}

thread_local! {
    static ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The system allocator, counting allocations per thread (test builds only).
struct Counting;

// SAFETY: every call is forwarded unchanged to `System`; the counter is a
// const-initialised thread-local `Cell` (no allocation, no lazy init).
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;
