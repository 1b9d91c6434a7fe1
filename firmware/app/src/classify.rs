//! From the output scores to classes.

use heapless::Vec;

/// A class and its int8 score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ranked {
    pub class: u16,
    pub score: i8,
}

#[cfg(target_os = "none")]
impl defmt::Format for Ranked {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{=u16}:{=i8}", self.class, self.score)
    }
}

/// The `K` highest scores, best first; ties go to the lower class index (as the host's argmax).
pub fn top_k<const K: usize>(scores: &[i8]) -> Vec<Ranked, K> {
    let mut best: Vec<Ranked, K> = Vec::new();
    for (class, &score) in scores.iter().enumerate() {
        let r = Ranked {
            class: class as u16,
            score,
        };
        // First place whose score is lower: equal scores keep their earlier (lower) class.
        let at = best
            .iter()
            .position(|b| score > b.score)
            .unwrap_or(best.len());
        if at < K {
            if best.is_full() {
                best.pop();
            }
            // Cannot fail: there is room after the pop.
            let _ = best.insert(at, r);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes<const K: usize>(scores: &[i8]) -> std::vec::Vec<u16> {
        top_k::<K>(scores).iter().map(|r| r.class).collect()
    }

    #[test]
    fn best_first_ties_to_the_lower_class() {
        assert_eq!(classes::<3>(&[5, 9, -3, 9, 7]), [1, 3, 4]);
        assert_eq!(
            top_k::<1>(&[-128, -128])[0],
            Ranked {
                class: 0,
                score: -128
            }
        );
        assert_eq!(classes::<4>(&[1, 2]), [1, 0]);
        assert!(top_k::<3>(&[]).is_empty());
    }
}
