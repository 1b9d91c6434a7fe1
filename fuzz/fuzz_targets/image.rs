//! Image bytes to model input, as `perch-run classify` and `serve` do it: decode with limits, then
//! preprocess (colour, resize, crop, normalize) for a few kinds of model input, both channel policies.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use perch_runtime::plan::{Dim, InputSpec, Layout};
use perch_runtime::preprocess::{Color, Filter, Resize, decode_image};
use perch_runtime::{ChannelPolicy, Plan, Preprocess};

static TARGETS: LazyLock<Vec<(Preprocess, InputSpec)>> = LazyLock::new(|| {
    let plan =
        Plan::from_bytes(include_bytes!("../../tests/cases/fashion-cnn-s/model.perch")).expect("the golden plan loads");
    let input = |c: usize, h: usize, w: usize, layout| InputSpec {
        name: "input".into(),
        shape: match layout {
            Layout::Nchw => vec![Dim::Fixed(1), Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)],
            Layout::Nhwc => vec![Dim::Fixed(1), Dim::Fixed(h), Dim::Fixed(w), Dim::Fixed(c)],
        },
        layout,
        dtype: "f32".into(),
    };
    let rgb_crop = Preprocess {
        color: Color::Rgb,
        resize: Some(Resize::ShorterSide(32)),
        filter: Filter::Bicubic,
        center_crop: Some((28, 24)),
        max_pixel_value: 255.0,
        mean: vec![0.485, 0.456, 0.406],
        std: vec![0.229, 0.224, 0.225],
    };
    let bgr_crop_only = Preprocess {
        color: Color::Bgr,
        resize: None,
        filter: Filter::Nearest,
        center_crop: Some((8, 8)),
        max_pixel_value: 255.0,
        mean: vec![0.5; 3],
        std: vec![0.5; 3],
    };
    let targets = vec![
        (plan.manifest.preprocess.clone(), plan.manifest.input.clone()),
        (rgb_crop, input(3, 24, 28, Layout::Nhwc)),
        (bgr_crop_only, input(3, 8, 8, Layout::Nchw)),
    ];
    for (p, i) in &targets {
        p.check_against(i).expect("a valid preprocessing");
    }
    targets
});

fuzz_target!(|data: &[u8]| {
    let Ok(image) = decode_image(data) else { return };
    for (preprocess, input) in TARGETS.iter() {
        for policy in [ChannelPolicy::Strict, ChannelPolicy::Convert] {
            let _ = preprocess.apply(&image, input, policy);
        }
    }
});
