//! Host simulation speed of a fashion-cnn-s-shaped plan (portable kernels): run with
//! `cargo test -p perch-micro --features std --release --test host_speed -- --ignored --nocapture`.

use perch_micro::kernels::{Clamp, Padding, Shape, Window};
use perch_micro::plan::{PlanBuilder, TensorDesc};
use perch_micro::{Plan, run};

#[test]
#[ignore = "a benchmark, not a test"]
fn fashion_cnn_s_shapes_per_image() {
    let mut b = PlanBuilder::new();
    let t = |b: &mut PlanBuilder, h, c, s| {
        b.tensor(TensorDesc {
            shape: Shape::new(h, h, c),
            scale: s,
            zero_point: -3,
            offset: None,
        })
    };
    let same = Window {
        kernel_h: 3,
        kernel_w: 3,
        stride_h: 1,
        stride_w: 1,
        padding: Padding {
            top: 1,
            left: 1,
            bottom: 1,
            right: 1,
        },
    };
    let pool = Window {
        kernel_h: 2,
        kernel_w: 2,
        stride_h: 2,
        stride_w: 2,
        padding: Padding::default(),
    };
    let x = t(&mut b, 28, 1, 0.01);
    b.set_input(x);
    let (mut cur, mut h, mut c) = (x, 28, 1);
    for cout in [16, 32, 64] {
        let y = t(&mut b, h, cout, 0.05);
        let w: Vec<i8> = (0..cout * 9 * c).map(|i| (i * 31 % 255) as i8).collect();
        b.conv2d(
            cur,
            y,
            same,
            Clamp::NONE,
            &w,
            &vec![7; cout],
            &vec![0.001; cout],
        );
        let l = t(&mut b, h, cout, 0.05);
        b.lookup(y, l, &core::array::from_fn(|i| i as u8 as i8));
        let p = t(&mut b, h / 2, cout, 0.05);
        b.max_pool(l, p, pool, Clamp::NONE);
        (cur, h, c) = (p, h / 2, cout);
    }
    let f = b.tensor(TensorDesc {
        shape: Shape::new(1, 1, h * h * c),
        scale: 0.05,
        zero_point: -3,
        offset: None,
    });
    b.reshape(cur, f);
    let o = b.tensor(TensorDesc {
        shape: Shape::new(1, 1, 10),
        scale: 0.1,
        zero_point: 0,
        offset: None,
    });
    let w: Vec<i8> = (0..10 * h * h * c).map(|i| (i * 7 % 255) as i8).collect();
    b.fully_connected(f, o, Clamp::NONE, &w, &[0; 10], &[0.001; 10]);
    let bytes = b.build().unwrap();
    let plan = Plan::parse(&bytes).unwrap();
    let mut arena = vec![0u8; plan.arena_size()];
    let input = vec![5i8; 28 * 28];
    let n = 200;
    let start = std::time::Instant::now();
    for _ in 0..n {
        run(&plan, &mut arena, &input).unwrap();
    }
    let per = start.elapsed() / n;
    println!(
        "host simulation: {per:?} per image ({:.1} s per 10k images)",
        per.as_secs_f64() * 1e4
    );
}
