//! Test vectors from the host simulation, read in place: the `.vectors` format `perch compile`
//! writes beside a `.pmc`.
//!
//! Little-endian: magic `PMCV`, u32 version (1), u32 count, u32 input length, u32 output length
//! (bytes), then `count` int8 inputs (already quantized with the plan's input scale and zero
//! point), `count` int8 outputs the host computed with the same kernels, `count` u8 true labels.

const MAGIC: &[u8; 4] = b"PMCV";
const VERSION: u32 = 1;
const HEADER: usize = 20;

/// Why the test vectors were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(target_os = "none", derive(defmt::Format))]
#[non_exhaustive]
pub enum VectorsError {
    /// Not a `.vectors` file.
    BadMagic,
    UnsupportedVersion(u32),
    /// The length does not match the header.
    BadLength,
    /// Input or output length differs from the plan's tensors.
    WrongPlan,
}

/// Parsed test vectors; every accessor is in bounds once [`TestVectors::parse`] succeeded.
#[derive(Clone, Copy, Debug)]
pub struct TestVectors<'a> {
    count: usize,
    input_len: usize,
    output_len: usize,
    inputs: &'a [u8],
    outputs: &'a [u8],
    labels: &'a [u8],
}

impl<'a> TestVectors<'a> {
    /// Checks the header and the length against the plan's input and output sizes.
    pub fn parse(
        bytes: &'a [u8],
        input_len: usize,
        output_len: usize,
    ) -> Result<Self, VectorsError> {
        let header = bytes.get(..HEADER).ok_or(VectorsError::BadLength)?;
        if &header[..4] != MAGIC {
            return Err(VectorsError::BadMagic);
        }
        let word = |i: usize| {
            let b = &header[4 + 4 * i..8 + 4 * i];
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        };
        if word(0) != VERSION {
            return Err(VectorsError::UnsupportedVersion(word(0)));
        }
        let (count, i, o) = (word(1) as usize, word(2) as usize, word(3) as usize);
        if (i, o) != (input_len, output_len) {
            return Err(VectorsError::WrongPlan);
        }
        let body = &bytes[HEADER..];
        let per_vector = i.checked_add(o).and_then(|n| n.checked_add(1));
        if per_vector.and_then(|n| n.checked_mul(count)) != Some(body.len()) {
            return Err(VectorsError::BadLength);
        }
        let (inputs, rest) = body.split_at(count * i);
        let (outputs, labels) = rest.split_at(count * o);
        Ok(TestVectors {
            count,
            input_len: i,
            output_len: o,
            inputs,
            outputs,
            labels,
        })
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Input `i` (int8 bytes). Panics if `i >= len()`.
    pub fn input(&self, i: usize) -> &'a [u8] {
        &self.inputs[i * self.input_len..(i + 1) * self.input_len]
    }

    /// The host simulation's output for input `i` (int8 bytes).
    pub fn expected(&self, i: usize) -> &'a [u8] {
        &self.outputs[i * self.output_len..(i + 1) * self.output_len]
    }

    /// The true class of input `i`.
    pub fn label(&self, i: usize) -> u8 {
        self.labels[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(count: u32, i: u32, o: u32) -> std::vec::Vec<u8> {
        let mut v = MAGIC.to_vec();
        for n in [VERSION, count, i, o] {
            v.extend(n.to_le_bytes());
        }
        let n = count as usize;
        v.extend((0..n * i as usize).map(|k| k as u8));
        v.extend((0..n * o as usize).map(|k| 100 + k as u8));
        v.extend((0..n).map(|k| k as u8 % 10));
        v
    }

    #[test]
    fn reads_inputs_outputs_and_labels_in_place() {
        let bytes = file(3, 4, 2);
        let v = TestVectors::parse(&bytes, 4, 2).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v.input(1), &[4, 5, 6, 7]);
        assert_eq!(v.expected(2), &[104, 105]);
        assert_eq!(v.label(2), 2);
    }

    #[test]
    fn refuses_other_files_and_other_plans() {
        let bytes = file(2, 4, 2);
        assert_eq!(
            TestVectors::parse(&bytes, 5, 2).unwrap_err(),
            VectorsError::WrongPlan
        );
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert_eq!(
            TestVectors::parse(&bad, 4, 2).unwrap_err(),
            VectorsError::BadMagic
        );
        let mut bad = bytes.clone();
        bad[4] = 2;
        assert_eq!(
            TestVectors::parse(&bad, 4, 2).unwrap_err(),
            VectorsError::UnsupportedVersion(2)
        );
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            TestVectors::parse(&long, 4, 2).unwrap_err(),
            VectorsError::BadLength
        );
    }

    #[test]
    fn truncated_or_absurd_counts_are_errors_not_panics() {
        let bytes = file(2, 4, 2);
        for n in 0..bytes.len() {
            assert!(TestVectors::parse(&bytes[..n], 4, 2).is_err(), "{n} bytes");
        }
        let mut huge = file(0, 4, 2);
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            TestVectors::parse(&huge, 4, 2).unwrap_err(),
            VectorsError::BadLength
        );
        let huge_len = file(0, u32::MAX, u32::MAX);
        let max = u32::MAX as usize;
        assert!(TestVectors::parse(&huge_len, max, max).is_ok());
    }
}
