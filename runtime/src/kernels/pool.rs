//! int8 max pooling over NCHW planes, without padding: per output row, the column-wise maximum of the
//! kernel's input rows (contiguous, so vectorized), then the maximum along each output's window of
//! that row. tract 0.23.9's `OptMaxPool` walks every window through a generic patch iterator: on
//! fashion-cnn-s its three int8 pools took 18 us of a 75 us inference on x86-64.

use super::conv::Geometry;

/// Whether [`max_pool`] takes this geometry: no padding, at least one output, every output's window
/// inside the input.
pub fn fits(g: &Geometry) -> bool {
    g.pad_before == [0, 0] && g.pad_after == [0, 0] && !g.output.contains(&0) && g.check().is_ok()
}

/// Max-pools `x` (whole `[h][w]` planes) into `y` (whole `[oh][ow]` planes), plane by plane.
///
/// # Panics
/// When the geometry does not [`fit`](fits) or the buffers do not hold the same number of whole
/// planes.
pub fn max_pool(g: &Geometry, x: &[i8], y: &mut [i8]) {
    let ([h, w], [oh, ow]) = (g.input, g.output);
    assert!(fits(g) && x.len().is_multiple_of(h * w) && y.len() == x.len() / (h * w) * oh * ow, "max pool geometry");
    let ([kh, kw], [sy, sx], [dy, dx]) = (g.kernel, g.stride, g.dilation);
    if g.kernel == [2, 2] && g.stride == [2, 2] && g.dilation == [1, 1] {
        // The common 2x2 pooling: each output from two pairs, one pass, no row buffer.
        for (x, y) in x.chunks_exact(h * w).zip(y.chunks_exact_mut(oh * ow)) {
            for (oy, out) in y.chunks_exact_mut(ow).enumerate() {
                let (a, b) = (&x[2 * oy * w..][..2 * ow], &x[(2 * oy + 1) * w..][..2 * ow]);
                for (ox, o) in out.iter_mut().enumerate() {
                    *o = a[2 * ox].max(a[2 * ox + 1]).max(b[2 * ox].max(b[2 * ox + 1]));
                }
            }
        }
        return;
    }
    let mut columns = vec![0i8; w];
    for (x, y) in x.chunks_exact(h * w).zip(y.chunks_exact_mut(oh * ow)) {
        for (oy, out) in y.chunks_exact_mut(ow).enumerate() {
            let row = |ky: usize| &x[(oy * sy + ky * dy) * w..][..w];
            columns.copy_from_slice(row(0));
            for ky in 1..kh {
                columns.iter_mut().zip(row(ky)).for_each(|(m, &v)| *m = (*m).max(v));
            }
            if [kw, sx, dx] == [2, 2, 1] {
                out.iter_mut().zip(columns.chunks_exact(2)).for_each(|(o, p)| *o = p[0].max(p[1]));
            } else {
                for (ox, o) in out.iter_mut().enumerate() {
                    *o = (0..kw).map(|kx| columns[ox * sx + kx * dx]).max().expect("a kernel has columns");
                }
            }
        }
    }
}
