//! Runs a parsed plan over a caller-provided arena: no allocation, no copies beyond the input.

use core::ops::Range;

use crate::cast::{aligned_words_mut, bytes_as_i8_mut};
use crate::kernels;
use crate::plan::{Op, Plan};
use crate::{Error, Problem};

/// Runs `plan` on `input` (the input tensor's bytes), using `arena` (at least
/// [`Plan::arena_size`] bytes, any alignment) for every activation and the scratch area. Returns
/// the output tensor's bytes, borrowed from the arena.
///
/// Never inlined: firmware/app/no-panic.sh proves, from this function in the linked ELF, that no
/// panic is reachable from inference.
#[inline(never)]
pub fn run<'r>(plan: &Plan, arena: &'r mut [u8], input: &[i8]) -> Result<&'r [i8], Error> {
    let given = arena.len();
    let Some(arena) = arena.get_mut(..plan.arena_size()) else {
        return Err(Error::ArenaTooSmall {
            needed: plan.arena_size() as u32,
            given: given as u32,
        });
    };
    let arena = bytes_as_i8_mut(arena);
    let x = plan.input();
    if input.len() != x.size {
        return Err(Error::InputSize {
            expected: x.size as u32,
            given: input.len() as u32,
        });
    }
    // The parser keeps every tensor inside the arena; the error only keeps a panic path out.
    match arena.get_mut(x.range()) {
        Some(dst) if dst.len() == input.len() => dst.copy_from_slice(input),
        _ => return Err(outside_arena(plan.input_id())),
    }
    for index in 0..plan.op_count() {
        run_op(plan, index, arena).map_err(|problem| Error::Op {
            index: index as u16,
            problem,
        })?;
    }
    let arena: &'r [i8] = arena;
    arena
        .get(plan.output().range())
        .ok_or(outside_arena(plan.output_id()))
}

fn outside_arena(index: u16) -> Error {
    Error::Tensor {
        index,
        problem: Problem::OutsideArena,
    }
}

/// Executes op `index` of `plan` in place in `arena`.
pub fn run_op(plan: &Plan, index: usize, arena: &mut [i8]) -> Result<(), Problem> {
    let d = plan.op(index)?;
    let tensor = |id| plan.tensor(id).ok_or(Problem::BadTensorId);
    let y = tensor(d.output)?.range();
    let x = tensor(d.inputs[0])?.range();
    if let Op::Reshape = d.op
        && x == y
    {
        return Ok(());
    }
    let x2 = match d.input_ids().get(1) {
        Some(&id) => tensor(id)?.range(),
        None => x.clone(),
    };
    let (offset, size) = plan.scratch();
    let parts = Parts::split(arena, offset..offset + size, y)?;
    let (input, input2) = (parts.get(&x)?, parts.get(&x2)?);
    let scratch = aligned_words_mut(&mut *parts.scratch);
    let output = &mut *parts.output;
    match &d.op {
        Op::Conv2d(p) => kernels::conv2d(p, input, output, scratch),
        Op::DepthwiseConv2d(p) => kernels::depthwise_conv2d(p, input, output, scratch),
        Op::FullyConnected(p) => kernels::fully_connected(p, input, output, scratch),
        Op::MaxPool(p) => kernels::max_pool(p, input, output),
        Op::AveragePool(p) => kernels::average_pool(p, input, output),
        Op::GlobalAveragePool(p) => kernels::global_average_pool(p, input, output),
        Op::Add(p) => kernels::add(p, input, input2, output),
        Op::Lookup(table) => kernels::lookup(table, input, output),
        Op::Reshape => kernels::reshape(input, output),
        Op::Softmax { table, depth } => kernels::softmax(table, *depth, input, output),
    }
}

/// The arena cut into the scratch area, the op's output and the read-only rest.
struct Parts<'s> {
    scratch: &'s mut [i8],
    output: &'s mut [i8],
    /// Read-only pieces with their start offsets.
    rest: [(usize, &'s [i8]); 3],
}

impl<'s> Parts<'s> {
    fn split(
        arena: &'s mut [i8],
        scratch: Range<usize>,
        output: Range<usize>,
    ) -> Result<Self, Problem> {
        let disjoint =
            scratch.is_empty() || output.end <= scratch.start || scratch.end <= output.start;
        if scratch.end > arena.len() || output.end > arena.len() || !disjoint {
            return Err(Problem::OutsideArena);
        }
        // split_at_mut_checked: the bounds above make every split valid; no panic path either way.
        let (below, rest) = arena
            .split_at_mut_checked(scratch.start)
            .ok_or(Problem::OutsideArena)?;
        let (scratch_part, above) = rest
            .split_at_mut_checked(scratch.len())
            .ok_or(Problem::OutsideArena)?;
        let (piece, base, other, other_base) = if output.end <= scratch.start {
            (below, 0, above, scratch.end)
        } else {
            (above, scratch.end, below, 0)
        };
        let (before, rest) = output
            .start
            .checked_sub(base)
            .and_then(|at| piece.split_at_mut_checked(at))
            .ok_or(Problem::OutsideArena)?;
        let (out, after) = rest
            .split_at_mut_checked(output.len())
            .ok_or(Problem::OutsideArena)?;
        Ok(Parts {
            scratch: scratch_part,
            output: out,
            rest: [(base, before), (output.end, after), (other_base, other)],
        })
    }

    fn get(&self, r: &Range<usize>) -> Result<&'s [i8], Problem> {
        for &(start, piece) in &self.rest {
            if r.start >= start
                && let Some(part) = piece.get(r.start - start..r.end.wrapping_sub(start))
            {
                return Ok(part);
            }
        }
        Err(Problem::Overlap)
    }
}
