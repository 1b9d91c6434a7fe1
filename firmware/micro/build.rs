//! Picks the kernel set at build time. Stable Rust reports no Arm target features to build
//! scripts, so the target name and the rustflags decide: thumbv7em (Cortex-M4/M7, DSP always
//! present) gets the SMLAD/SXTB16 kernels (`cfg(perch_dsp)`), and so does thumbv8m.main when the
//! rustflags name a core with the DSP extension (`-C target-cpu=cortex-m33`, `cortex-m35p`,
//! `cortex-m55`, `cortex-m85`) or the feature itself (`-C target-feature=+dsp`). Everything else
//! (thumbv6m, thumbv7m, a v8-M core without DSP, the host) gets the portable kernels.
//! `PERCH_MICRO_PORTABLE=1` forces the portable set anywhere.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(perch_dsp)");
    println!("cargo::rerun-if-env-changed=PERCH_MICRO_PORTABLE");
    let target = std::env::var("TARGET").unwrap_or_default();
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let flags: Vec<&str> = flags.split('\x1f').collect();
    let v8m_dsp = flags.iter().any(|f| {
        ["cortex-m33", "cortex-m35p", "cortex-m55", "cortex-m85"]
            .iter()
            .any(|cpu| f.ends_with(&format!("target-cpu={cpu}")))
            || (f.contains("target-feature=") && f.contains("+dsp"))
    }) || flags.windows(2).any(|w| {
        (w[0] == "-C" || w[0] == "--codegen")
            && (["cortex-m33", "cortex-m35p", "cortex-m55", "cortex-m85"]
                .iter()
                .any(|cpu| w[1] == format!("target-cpu={cpu}"))
                || (w[1].starts_with("target-feature=") && w[1].contains("+dsp")))
    });
    let forced_portable = std::env::var("PERCH_MICRO_PORTABLE").is_ok_and(|v| v == "1");
    let dsp = target.starts_with("thumbv7em") || (target.starts_with("thumbv8m.main") && v8m_dsp);
    if dsp && !forced_portable {
        println!("cargo::rustc-cfg=perch_dsp");
    }
}
