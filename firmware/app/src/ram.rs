//! RAM use, measured: the statics from the linker's symbols, and the stack by painting:
//! [`paint_stack`] fills the free stack with a pattern at boot, [`stack_high_water`] finds the
//! deepest word the program overwrote since. The stack is cortex-m-rt's: from `_stack_start`
//! (initial SP) down to `_stack_end` (top of RAM down to the statics; with flip-link, the space
//! below the statics down to the bottom of RAM).

const PAINT: u32 = 0xC0FF_EE5A;
/// Bytes below the stack pointer left unpainted (see [`paint_stack`]).
const MARGIN: usize = 64;

unsafe extern "C" {
    static _stack_start: u32;
    static _stack_end: u32;
    static __sdata: u32;
    static __edata: u32;
    static __sbss: u32;
    static __ebss: u32;
    static __suninit: u32;
    static __euninit: u32;
}

/// Bytes of `.data`, `.bss` and `.uninit` (the arena is in `.bss`).
pub fn statics() -> usize {
    // Linker symbols: only their addresses are used.
    let span = |start: *const u32, end: *const u32| end as usize - start as usize;
    span(&raw const __sdata, &raw const __edata)
        + span(&raw const __sbss, &raw const __ebss)
        + span(&raw const __suninit, &raw const __euninit)
}

fn bounds() -> (usize, usize) {
    // Linker symbols: only their addresses are used.
    (
        &raw const _stack_end as usize,
        &raw const _stack_start as usize,
    )
}

/// Bytes the stack can grow to: the RAM the statics leave.
pub fn stack_size() -> usize {
    let (bottom, top) = bounds();
    top - bottom
}

/// Paints the stack below the caller's frame. Call first thing in `main`.
#[inline(never)]
pub fn paint_stack() {
    let (bottom, _) = bounds();
    // Everything below the stack pointer is free (no interrupt is enabled yet), but the compiler
    // may push this function's own registers after reading it: keep a margin. The margin is
    // counted as used, which costs nothing: the measured run goes far deeper.
    let sp = (cortex_m::register::msp::read() as usize & !3) - MARGIN;
    let mut p = bottom;
    while p < sp {
        // SAFETY: [bottom, sp) is unused stack memory, word aligned, owned by nobody.
        unsafe { core::ptr::write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
}

/// Bytes of stack used since [`paint_stack`]: from the stack's top down to the deepest overwritten
/// word.
pub fn stack_high_water() -> usize {
    let (bottom, top) = bounds();
    let mut p = bottom;
    // SAFETY: reads of stack memory below the live frames, word aligned.
    while p < top && unsafe { core::ptr::read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    top - p
}
