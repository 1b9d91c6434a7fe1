//! The arena planner: one offset per activation tensor so that tensors alive at the same time never
//! share bytes. Greedy by size (largest first, lowest offset that fits), as TFLite Micro's greedy
//! planner; liveness is op-granular: a tensor lives from the op that writes it to the last op that
//! reads it (the plan input from the start, the output to the end).

/// One tensor to place: size in bytes and the op interval `[first, last]` it lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    pub size: usize,
    pub first: usize,
    pub last: usize,
}

/// Offsets (4-byte aligned) for `tensors`, in the same order, and the arena size they need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub offsets: Vec<usize>,
    pub arena: usize,
}

const ALIGN: usize = 4;

fn align(v: usize) -> usize {
    v.div_ceil(ALIGN) * ALIGN
}

fn overlaps(a: &Lifetime, b: &Lifetime) -> bool {
    a.first <= b.last && b.first <= a.last
}

pub fn place(tensors: &[Lifetime]) -> Placement {
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| {
        tensors[b]
            .size
            .cmp(&tensors[a].size)
            .then(tensors[a].first.cmp(&tensors[b].first))
    });
    let mut offsets = vec![0usize; tensors.len()];
    let mut placed: Vec<usize> = Vec::new();
    for &t in &order {
        // Busy intervals among the placed tensors alive at the same time, by offset.
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&p| overlaps(&tensors[p], &tensors[t]))
            .map(|&p| (offsets[p], offsets[p] + tensors[p].size))
            .collect();
        busy.sort();
        let mut candidate = 0;
        for (start, end) in busy {
            if candidate + tensors[t].size <= start {
                break;
            }
            candidate = candidate.max(align(end));
        }
        offsets[t] = candidate;
        placed.push(t);
    }
    let arena = tensors
        .iter()
        .zip(&offsets)
        .map(|(t, o)| o + t.size)
        .max()
        .unwrap_or(0);
    Placement {
        offsets,
        arena: align(arena),
    }
}

/// The lower bound any placement needs: the largest total size of tensors alive at one op.
pub fn lower_bound(tensors: &[Lifetime]) -> usize {
    let last = tensors.iter().map(|t| t.last).max().unwrap_or(0);
    (0..=last)
        .map(|op| {
            tensors
                .iter()
                .filter(|t| t.first <= op && op <= t.last)
                .map(|t| align(t.size))
                .sum()
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(tensors: &[Lifetime], p: &Placement) -> bool {
        for i in 0..tensors.len() {
            for j in i + 1..tensors.len() {
                if overlaps(&tensors[i], &tensors[j]) {
                    let (a, b) = (
                        (p.offsets[i], p.offsets[i] + tensors[i].size),
                        (p.offsets[j], p.offsets[j] + tensors[j].size),
                    );
                    if a.0 < b.1 && b.0 < a.1 {
                        return false;
                    }
                }
            }
        }
        p.offsets.iter().all(|o| o % ALIGN == 0)
    }

    #[test]
    fn a_chain_reuses_memory_and_meets_the_bound() {
        // input -> a -> b -> c -> output: two tensors alive at each op.
        let t = |size, first, last| Lifetime { size, first, last };
        let tensors = [
            t(784, 0, 0),
            t(12544, 0, 1),
            t(3136, 1, 2),
            t(6272, 2, 3),
            t(10, 3, 3),
        ];
        let p = place(&tensors);
        assert!(valid(&tensors, &p));
        assert_eq!(p.arena, lower_bound(&tensors));
        assert!(p.arena < tensors.iter().map(|t| t.size).sum());
    }

    #[test]
    fn a_residual_block_keeps_the_skip_alive() {
        let t = |size, first, last| Lifetime { size, first, last };
        // x is read by op 0 and by the add at op 2.
        let tensors = [t(1000, 0, 2), t(1000, 0, 1), t(1000, 1, 2), t(1000, 2, 3)];
        let p = place(&tensors);
        assert!(valid(&tensors, &p));
        assert_eq!(lower_bound(&tensors), 3000);
        assert_eq!(p.arena, 3000);
    }

    #[test]
    fn random_graphs_are_valid_and_never_below_the_bound() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..500 {
            let ops = 1 + next(12);
            let tensors: Vec<Lifetime> = (0..1 + next(16))
                .map(|_| {
                    let first = next(ops);
                    Lifetime {
                        size: 1 + next(5000),
                        first,
                        last: first + next(ops - first),
                    }
                })
                .collect();
            let p = place(&tensors);
            assert!(valid(&tensors, &p), "{tensors:?} {p:?}");
            assert!(p.arena >= lower_bound(&tensors));
        }
    }
}
