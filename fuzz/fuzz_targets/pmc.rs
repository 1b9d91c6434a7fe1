//! `.pmc` micro plans: the parser, then one inference on zeros, since the kernels must not panic on a
//! plan that parses but carries hostile shapes, offsets or requantization constants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use perch_micro::plan::AlignedBytes;

/// Firmware arenas are fixed at link time (a few hundred KB); a plan asking for more is refused there.
const MAX_ARENA: usize = 64 << 20;

fuzz_target!(|data: &[u8]| {
    let mut bytes = AlignedBytes::from(data);
    perch_fuzz::reseal_pmc(bytes.as_bytes_mut());
    let Ok(plan) = perch_micro::Plan::parse(bytes.as_bytes()) else { return };
    let input_len = plan.input().size;
    for index in 0..plan.op_count() {
        if let Ok(op) = plan.op(index) {
            let _ = (op.op.macs(input_len), op.op.scratch_words(input_len));
        }
    }
    if plan.arena_size() > MAX_ARENA {
        return;
    }
    let mut arena = vec![0u8; plan.arena_size()];
    let _ = perch_micro::run(&plan, &mut arena, &vec![0i8; input_len]);
});
