//! Puts memory.x where the linker finds it, and writes the test network: a `.pmc` plan shaped like
//! fashion-cnn-s (random weights), an input, and the output the host computes with the same
//! crate's portable kernels. The firmware runs the plan and must produce these bytes exactly.

use perch_micro::kernels::{Clamp, Padding, Shape, Window};
use perch_micro::plan::{PlanBuilder, TensorDesc};
use perch_micro::tables::{activation, lookup_table};

struct Rng(u32);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }
    fn i8s(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| self.next() as i8).collect()
    }
}

fn main() {
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    std::fs::copy("memory.x", out.join("memory.x")).unwrap();
    println!("cargo::rustc-link-search={}", out.display());
    println!("cargo::rerun-if-changed=memory.x");
    println!("cargo::rerun-if-changed=build.rs");

    let mut rng = Rng(0xF00D_CAFE);
    let mut b = PlanBuilder::new();
    let t = |b: &mut PlanBuilder, h, w, c, scale, zero_point| {
        b.tensor(TensorDesc {
            shape: Shape::new(h, w, c),
            scale,
            zero_point,
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
    let x = t(&mut b, 28, 28, 1, 1.0 / 255.0, -128);
    b.set_input(x).set_label_count(10);
    let mut cur = x;
    let (mut h, mut c, mut scale) = (28usize, 1usize, 1.0f32 / 255.0);
    for cout in [16usize, 32, 64] {
        let conv = t(&mut b, h, h, cout, 0.05, -10);
        let depth = 9 * c;
        // Weight scales that keep the outputs in range: ~1 / (127 * sqrt(depth) * input scale).
        let ws = vec![0.05 / (scale * 127.0 * (depth as f32).sqrt() * 4.0); cout];
        let bias: Vec<i32> = (0..cout)
            .map(|_| (rng.next() % 2001) as i32 - 1000)
            .collect();
        b.conv2d(
            cur,
            conv,
            same,
            Clamp::NONE,
            &rng.i8s(cout * depth),
            &bias,
            &ws,
        );
        let swish = t(&mut b, h, h, cout, 0.04, -20);
        b.lookup(
            conv,
            swish,
            &lookup_table(activation::swish(1.3), (0.05, -10), (0.04, -20)),
        );
        let pooled = t(&mut b, h / 2, h / 2, cout, 0.04, -20);
        b.max_pool(swish, pooled, pool, Clamp::NONE);
        (cur, h, c, scale) = (pooled, h / 2, cout, 0.04);
    }
    let flat = t(&mut b, 1, 1, h * h * c, scale, -20);
    b.reshape(cur, flat);
    let logits = t(&mut b, 1, 1, 10, 0.1, 0);
    let ws = vec![0.1 / (scale * 127.0 * ((h * h * c) as f32).sqrt()); 10];
    b.fully_connected(
        flat,
        logits,
        Clamp::NONE,
        &rng.i8s(10 * h * h * c),
        &[0; 10],
        &ws,
    );
    b.set_output(logits);
    let plan_bytes = b.build().expect("test network plan");
    let plan = perch_micro::Plan::parse(&plan_bytes).unwrap();
    let input = rng.i8s(28 * 28);
    let mut arena = vec![0u8; plan.arena_size()];
    let expected = perch_micro::run(&plan, &mut arena, &input)
        .unwrap()
        .to_vec();
    let macs: usize = (0..plan.op_count())
        .map(|i| {
            let d = plan.op(i).unwrap();
            d.op.macs(plan.tensor(d.inputs[0]).unwrap().size)
        })
        .sum();
    std::fs::write(out.join("net.pmc"), plan_bytes.as_bytes()).unwrap();
    std::fs::write(
        out.join("net_input.bin"),
        input.iter().map(|&v| v as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(
        out.join("net_expected.bin"),
        expected.iter().map(|&v| v as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(
        out.join("net.rs"),
        format!(
            "pub const NET_MACS: usize = {macs};\npub const NET_ARENA: usize = {};\n",
            plan.arena_size()
        ),
    )
    .unwrap();
}
