//! `perch compile` and `perch inspect`'s front door: ONNX bytes to a decluttered tract graph, then the
//! analysis `perch inspect` prints.
#![no_main]

use libfuzzer_sys::fuzz_target;
use perch_host::analysis;

fuzz_target!(|data: &[u8]| {
    // import_bytes turns a panic inside tract into ImportError::Tract.
    perch_fuzz::allow_caught_panics();
    let Ok(imported) = perch_host::import::import_bytes(data, "fuzz.onnx", None) else { return };
    if let Ok(a) = analysis::analyze(&imported.model) {
        let _ = analysis::unsupported(&imported.model, &a);
    }
});
