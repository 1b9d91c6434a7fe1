//! The MCU path for fashion-cnn-s: the int8 graph lowered to a `.pmc` micro plan whose arena the
//! planner packs to the lower bound; simulated on the host with perch-micro (the firmware's own
//! code), its top-1 on the 10k test set is within 0.5 pt of float and agrees with the SBC int8 plan
//! on >= 99% of images; and the plan and test vectors the board app embeds are exactly what the
//! compiler writes today.

use perch_datasets::Dataset;
use perch_host::mcu;
use perch_host::quantize::Scheme;
use perch_runtime::{ChannelPolicy, Classifier};
use perch_tests::*;

#[test]
fn fashion_cnn_s_on_the_mcu() {
    let path = model_path("fashion-cnn-s", "onnx");
    let (_, float_plan) = compile_plan(&path).unwrap();
    let (_, int8_plan, _, int8_graph) = compile_int8_plan(&path, Scheme::default(), 1000).unwrap();
    let manifest = int8_plan.manifest.clone();
    let lowered = mcu::compile(&int8_graph, &manifest).unwrap();
    assert_eq!(lowered.activations, lowered.lower_bound, "a chain of layers packs to the lower bound");
    let budget = mcu::budget(&lowered).unwrap();
    mcu::check_fits(&lowered, &budget, &mcu::chips::find("stm32f411").unwrap()).unwrap();
    let tiny = mcu::Chip { name: "tiny", core: "Cortex-M0", flash: 32 * 1024, ram: 8 * 1024 };
    assert!(matches!(mcu::check_fits(&lowered, &budget, &tiny), Err(mcu::McuError::TooBig { .. })));

    // The board app's embedded plan and vectors are this compiler's output (`cargo xtask goldens`
    // rewrites them after an intended change; review the diff).
    let app = root().join("firmware/app/plans");
    let committed = std::fs::read(app.join("fashion-cnn-s.pmc")).unwrap();
    assert!(committed == lowered.bytes.as_bytes(), "firmware/app/plans/fashion-cnn-s.pmc is stale: run `cargo xtask goldens`");
    let test = Dataset::open("fashion-mnist:test").unwrap();
    let mut sim = mcu::Simulator::new(&lowered, &manifest).unwrap();
    let vectors = mcu::test_vectors(&mut sim, &test, 32).unwrap();
    assert!(std::fs::read(app.join("fashion-cnn-s.vectors")).unwrap() == vectors, "fashion-cnn-s.vectors is stale: run `cargo xtask goldens`");

    // Accuracy of the simulated MCU, against float and against the SBC int8 plan.
    let mcu_top1 = mcu::predictions(&mut sim, &test, test.len(), |_| {}).unwrap();
    let float = Classifier::new(float_plan, 100).unwrap();
    let sbc = Classifier::new(int8_plan, 100).unwrap();
    let f = perch_host::accuracy::evaluate(&float, &test, ChannelPolicy::Strict, |_| {}).unwrap();
    let s = perch_host::accuracy::evaluate(&sbc, &test, ChannelPolicy::Strict, |_| {}).unwrap();
    let correct = mcu_top1.iter().zip(test.labels()).filter(|(p, l)| p == l).count();
    let top1 = 100.0 * correct as f64 / test.len() as f64;
    let agree = mcu_top1.iter().zip(&s.predicted).filter(|(a, b)| a == b).count() as f64 / test.len() as f64;
    println!("fashion-cnn-s: float {:.2}%, MCU {top1:.2}%, SBC int8 {:.2}%, MCU/SBC agreement {:.2}%", f.top1(), s.top1(), 100.0 * agree);
    assert!((top1 - f.top1()).abs() <= 0.5, "MCU {top1:.2}% vs float {:.2}%", f.top1());
    assert!(agree >= 0.99, "MCU and SBC int8 agree on {:.2}%", 100.0 * agree);
}
