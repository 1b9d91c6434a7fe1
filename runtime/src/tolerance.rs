//! Named tolerances for comparing float outputs, so every test says which promise it checks.

/// How close two float outputs must be: `|a - b| <= abs + rel * |b|` element-wise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tolerance {
    /// Bit-identical.
    Exact,
    /// Same machine, same math, a different graph path (ONNX import vs the reloaded plan): 1e-5.
    Close,
    /// Another CPU's float kernels (NEON vs AVX: other FMA and summation orders): 1e-4.
    CrossArch,
}

impl Tolerance {
    pub fn bounds(self) -> (f32, f32) {
        match self {
            Tolerance::Exact => (0.0, 0.0),
            Tolerance::Close => (1e-5, 1e-5),
            Tolerance::CrossArch => (1e-4, 1e-4),
        }
    }

    /// `Err` names the first element out of bounds.
    pub fn check(self, got: &[f32], want: &[f32]) -> Result<(), String> {
        if got.len() != want.len() {
            return Err(format!("{} values, expected {}", got.len(), want.len()));
        }
        let (abs, rel) = self.bounds();
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let ok = if self == Tolerance::Exact { g.to_bits() == w.to_bits() } else { (g - w).abs() <= abs + rel * w.abs() };
            if !ok {
                return Err(format!("value {i}: got {g}, expected {w} ({self:?}: |diff| <= {abs} + {rel}*|expected|)"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_bite() {
        assert!(Tolerance::Close.check(&[1.0, 2.0], &[1.0, 2.00001]).is_ok());
        assert!(Tolerance::Close.check(&[1.0], &[1.001]).is_err());
        assert!(Tolerance::CrossArch.check(&[10.0], &[10.0009]).is_ok());
        assert!(Tolerance::CrossArch.check(&[10.0], &[10.01]).is_err());
        assert!(Tolerance::Exact.check(&[0.1], &[0.1 + f32::EPSILON]).is_err());
        assert!(Tolerance::Close.check(&[1.0], &[1.0, 2.0]).is_err());
        assert!(Tolerance::Close.check(&[f32::NAN], &[1.0]).is_err());
    }
}
