//! `.perch` plans: container, manifest, NNEF graph (tract-nnef), then what opening a plan for
//! inference does (optimize for the batch, run once on zeros).
#![no_main]

use libfuzzer_sys::fuzz_target;
use perch_runtime::{Classifier, Plan};

fuzz_target!(|data: &[u8]| {
    // Plan::from_bytes turns a panic inside tract-nnef into PlanError::Graph.
    perch_fuzz::allow_caught_panics();
    let bytes = perch_fuzz::reseal_perch(data);
    let Ok(plan) = Plan::from_bytes(&bytes) else { return };
    let _ = plan.summary();
    let batch = plan.manifest.input.fixed_batch().unwrap_or(1);
    let Ok(classifier) = Classifier::new(plan, batch) else { return };
    let zeros = vec![0f32; classifier.values_per_image()];
    if let Ok(rows) = classifier.run(&zeros) {
        for row in rows {
            let _ = classifier.top_k(&row, 5);
        }
    }
});
