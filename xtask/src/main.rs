//! Perch's task runner: `cargo xtask <task>`. Every CI step and every README command is one task here.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "cargo xtask <task>

tasks:
  setup        install what Perch needs (rustup targets, Debian packages); fast when already done
  demo         setup, build, then `perch build` fashion-cnn-s (float and int8 plans, micro plan, firmware
               ELF, report) and classify real test images with both plans
  test         setup, then the whole test suite: host tests, then the runtime's tests under qemu
  test-cross   the runtime's tests under qemu-aarch64 (Cortex-A72) and qemu-arm (Cortex-A7, NEON)
  test-firmware  on qemu-system-arm: the micro kernels (DSP vs portable, byte for byte) and the board
               app running fashion-cnn-s on 32 test images against the host simulation (Cortex-M4,
               thumbv6m on a Cortex-M3 board, the STM32F411 memory layout)
  goldens      rewrite the goldens from the committed models: tests/cases/*/ (plans, images, expected
               outputs, accuracy per target) and the board app's plan and test vectors
  device-binary [--target TRIPLE] [--no-server] [--relr]
               the board's perch-run, stripped and as small as it safely gets: the device profile with
               `lean-types` (BENCHMARKS.md, binary size), for aarch64-unknown-linux-gnu (default) or
               armv7-unknown-linux-gnueabihf; prints its path and size. --no-server leaves out `serve`;
               --relr links with rust-lld and packed relocations, 0.57 MB less, but the board then needs
               glibc 2.36 or newer (Raspberry Pi OS bookworm has it; Jetson's Ubuntu 20.04 and 22.04
               do not, and refuse to start it)
  measure      release binary sizes and the instruction count of one fashion-resnet inference on
               Cortex-A72 under qemu (needs ../shared/tools/insncount)
  accuracy-ort ONNX Runtime's float and int8 (quantize_static QDQ, same calibration) top-1 on the
               example models, beside Perch's (venv with onnxruntime from PyPI)
  bench-int8   float vs tract int8 vs Perch int8 kernels, fashion-cnn-s, fashion-resnet and MobileNetV2
               (224x224, random weights; exported with PyTorch if at hand): instructions per inference
               under qemu on Cortex-A72, A76, A7, and x86 latency against ONNX Runtime; into BENCHMARKS.md
  bench-ort    perch-run against ONNX Runtime (PyPI, in a venv), one thread, interleaved rounds, both
               example models float and int8; writes the table into BENCHMARKS.md
  bench-serve  load run: 64 concurrent clients for 30 s against perch-run serve on loopback
               (fashion-cnn-s): throughput, latency percentiles, errors, RSS over time
  fuzz [--time SECS] [TARGET]
               each cargo-fuzz target in fuzz/ (perch_plan, pmc, image, onnx, http), or one, for SECS
               seconds (default 30) from its kept corpus, with sanitizers on nightly; fails on any
               crash, timeout or out-of-memory (installs cargo-fuzz when missing)";

const RUST_TARGETS: &[&str] =
    &["aarch64-unknown-linux-gnu", "armv7-unknown-linux-gnueabihf", "thumbv7em-none-eabihf", "thumbv6m-none-eabi"];

const DEBIAN_PACKAGES: &[&str] = &[
    "qemu-user",
    "qemu-system-arm",
    "gcc-aarch64-linux-gnu",
    "gcc-arm-linux-gnueabihf",
    "libc6-dev-arm64-cross",
    "libc6-dev-armhf-cross",
    "binutils-arm-none-eabi",
    "dataset-fashion-mnist",
];

/// The example models whose plans and expected outputs are goldens in tests/cases.
const GOLDEN_MODELS: &[&str] = &["fashion-cnn-s", "fashion-resnet"];

type Result<T = ()> = std::result::Result<T, String>;

/// The workspace this xtask was run from. `cargo run` sets CARGO_MANIFEST_DIR for the process; the
/// compile-time value is only a fallback: cargo reuses a binary built from another clone with the
/// same sources (its fingerprints hold paths relative to the workspace), and with a target dir shared
/// between clones the baked-in path would run every step in that other clone.
fn root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest.parent().expect("xtask lives in the workspace").to_path_buf()
}

fn run(cmd: &mut Command) -> Result {
    eprintln!("+ {}", describe(cmd));
    let status = cmd.status().map_err(|e| format!("cannot start {}: {e}", describe(cmd)))?;
    if status.success() { Ok(()) } else { Err(format!("`{}` failed ({status})", describe(cmd))) }
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().map_err(|e| format!("cannot start {}: {e}", describe(cmd)))?;
    if !out.status.success() {
        return Err(format!("`{}` failed: {}", describe(cmd), String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program().to_string_lossy().into_owned())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn setup() -> Result {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    let missing: Vec<&str> = RUST_TARGETS.iter().copied().filter(|t| !installed.lines().any(|l| l.trim() == *t)).collect();
    if !missing.is_empty() {
        run(Command::new("rustup").args(["target", "add"]).args(&missing))?;
    }
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| !String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(true)
        })
        .collect();
    if !missing.is_empty() {
        let sudo = output(Command::new("id").arg("-u")).map(|u| u.trim() != "0").unwrap_or(true);
        let apt = |args: &[&str]| {
            let mut c = if sudo { Command::new("sudo") } else { Command::new("apt-get") };
            if sudo {
                c.arg("apt-get");
            }
            c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
            c
        };
        run(&mut apt(&["update", "-qq"]))?;
        run(apt(&["install", "-y", "-qq", "--no-install-recommends"]).args(&missing))?;
    }
    flip_link()?;
    eprintln!("setup: rustup targets, Debian packages and flip-link are in place");
    Ok(())
}

/// The firmware always links through flip-link (firmware/app/linker.sh refuses to link without it).
fn flip_link() -> Result {
    if Command::new("flip-link").arg("--version").output().is_ok() {
        return Ok(());
    }
    run(cargo().args(["install", "flip-link", "--locked"]))
}

/// Where cargo builds: CARGO_TARGET_DIR if set (CI keeps one outside the clone), else target/.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

fn bin(name: &str) -> PathBuf {
    target_dir().join("release").join(name)
}

fn demo() -> Result {
    setup()?;
    run(cargo().args(["build", "--release", "-p", "perch-host", "-p", "perch-run"]))?;
    let out = target_dir().join("demo");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let model = root().join("models/fashion-cnn-s/fashion-cnn-s.onnx");
    run(Command::new(bin("perch")).arg("inspect").arg(&model))?;
    // Every artifact: float and int8 plans, the micro plan for an STM32F411 with its test vectors,
    // the firmware ELF, the report.
    run(Command::new(bin("perch"))
        .current_dir(root())
        .arg("build")
        .arg(&model)
        .arg("-o")
        .arg(&out)
        .args(["--calibration", "fashion-mnist:train", "--eval-data", "fashion-mnist:test", "--chip", "stm32f411"])
        .args(["--mean", "0.2860", "--std", "0.3530"]))?;
    let images = out.join("images");
    let _ = std::fs::remove_dir_all(&images);
    run(Command::new(bin("perch")).args(["dataset", "export", "fashion-mnist:test", "--count", "8", "-o"]).arg(&images))?;
    for plan in ["fashion-cnn-s.perch", "fashion-cnn-s.int8.perch"] {
        run(Command::new(bin("perch-run")).arg("classify").arg("--plan").arg(out.join(plan)).arg(&images).args(["--top", "3"]))?;
    }
    eprintln!(
        "demo: artifacts in {}; the report is {}; images at {}",
        out.display(),
        out.join("report/report.html").display(),
        images.display()
    );
    Ok(())
}

/// Cross targets and the qemu command that runs their binaries as the named board would. The same
/// runners are in .cargo/config.toml for plain `cargo test --target ...`.
const CROSS: &[(&str, &str)] = &[
    // Cortex-A72: Raspberry Pi 4. qemu's default `-cpu max` would make tract pick SVE kernels.
    ("aarch64-unknown-linux-gnu", "qemu-aarch64 -cpu cortex-a72 -L /usr/aarch64-linux-gnu"),
    // Cortex-A7 with NEON: Raspberry Pi 2 class, 32-bit.
    ("armv7-unknown-linux-gnueabihf", "qemu-arm -cpu cortex-a7 -L /usr/arm-linux-gnueabihf"),
];

fn test_cross() -> Result {
    for (target, runner) in CROSS {
        let mut cmd = cargo();
        // With `multithread`, so Perch's int8 kernels are also checked split over threads on ARM, and
        // with `lean-types`, as the device binary is built (tract without code for f16, f64...).
        cmd.args(["test", "-p", "perch-runtime", "-p", "perch-run", "--target", target])
            .args(["--features", "perch-run/multithread,perch-run/lean-types"])
            // The CLI tests start perch-run themselves; no binfmt handler is assumed, so they go through qemu.
            .env("PERCH_TEST_RUNNER", runner)
            // qemu-user shows tract the host's /proc/cpuinfo, so NEON must be asserted (on a Pi it is
            // detected). Harmless on aarch64, where NEON is architectural.
            .env("TRACT_CPU_ARM32_NEON", "true");
        run(&mut cmd)?;
    }
    // Perch's int8 kernels again on a core with the dot product (SDOT; Cortex-A72 above has none).
    let mut cmd = cargo();
    // (`lean-types` too: the build above, reused.)
    cmd.args(["test", "-p", "perch-runtime", "--features", "multithread,lean-types", "--target", "aarch64-unknown-linux-gnu", "--lib", "kernels"])
        .env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER", "qemu-aarch64 -cpu cortex-a76 -L /usr/aarch64-linux-gnu");
    run(&mut cmd)
}

fn test() -> Result {
    setup()?;
    run(cargo().args(["test", "--workspace"]))?;
    // `multithread` is not a default feature (it costs the device binary 4.6 MB): its tests again with it.
    run(cargo().args(["test", "-p", "perch-runtime", "--features", "multithread", "--lib", "threads"]))?;
    run(cargo().args(["test", "-p", "perch-run", "--features", "multithread", "--test", "cli", "threads"]))?;
    test_cross()?;
    test_firmware()
}

/// The firmware builds for Cortex-M and runs under qemu-system-arm through the runners in its own
/// .cargo/config.toml; each run exits with the verdict. Commands run inside the firmware directories
/// (their .cargo/config.toml is not read with --manifest-path from here).
fn test_firmware() -> Result {
    flip_link()?;
    let target = target_dir().join("firmware");
    let in_dir = |dir: &str, args: &[&str]| -> Result {
        let mut cmd = cargo();
        cmd.current_dir(root().join(dir)).args(args).env("CARGO_TARGET_DIR", &target);
        run(&mut cmd)
    };
    // The kernels: DSP against portable, byte for byte (Cortex-M4), and the portable set on thumbv6m.
    in_dir("firmware/kernel-check", &["run", "--release", "--bin", "check"])?;
    in_dir("firmware/kernel-check", &["run", "--release", "--bin", "check", "--target", "thumbv6m-none-eabi"])?;
    // The board app: its host unit tests, then fashion-cnn-s's plan on 32 test images, every output
    // byte against the host simulation: Cortex-M4 (DSP), Cortex-M0-class code (thumbv6m), and the
    // STM32F411 memory layout (512K/128K: an over-size plan fails to link).
    in_dir("firmware", &["test", "--target", "host-tuple"])?;
    in_dir("firmware", &["run", "--release"])?;
    in_dir("firmware", &["run", "--release", "--target", "thumbv6m-none-eabi"])?;
    in_dir("firmware", &["run", "--release", "--features", "stm32f411"])
}

fn goldens() -> Result {
    for model in GOLDEN_MODELS {
        run(cargo().args(["run", "--release", "-p", "perch-tests", "--bin", "perch-goldens", "--", model]))?;
    }
    // Accuracy per model and target (tests/cases/<model>/<target>.json), measured now; tolerances kept.
    run(cargo().args(["test", "-p", "perch-tests", "--test", "regression"]).env("PERCH_BLESS_ACCURACY", "1"))?;
    // The board app's plan and test vectors, from the compiler as it is now.
    run(cargo().args(["build", "-p", "perch-host", "--bin", "perch"]))?;
    let plans = root().join("firmware/app/plans");
    run(Command::new(target_dir().join("debug/perch"))
        .arg("compile")
        .arg(root().join("models/fashion-cnn-s/fashion-cnn-s.onnx"))
        .args(["--target", "mcu", "--quantize", "int8", "--calibration", "fashion-mnist:train", "--chip", "stm32f411"])
        .args(["--mean", "0.2860", "--std", "0.3530", "--eval-data", "fashion-mnist:test", "--test-vectors", "32"])
        .arg(plans.join("fashion-cnn-s.vectors"))
        .arg("-o")
        .arg(plans.join("fashion-cnn-s.pmc")))?;
    eprintln!("goldens rewritten: review `git diff tests/cases firmware/app/plans` before committing");
    Ok(())
}

/// Instructions one classification costs under `qemu-aarch64 -cpu CPU`: (21 images - 11 images) / 10,
/// the difference removing process start, plan load and optimization.
fn qemu_per_image(plugin: &Path, perch_run: &Path, cpu: &str, plan: &Path, files: &[PathBuf]) -> Result<u64> {
    let mut counts = Vec::new();
    for n in [11usize, 21] {
        let mut cmd = Command::new("qemu-aarch64");
        cmd.args(["-cpu", cpu, "-L", "/usr/aarch64-linux-gnu", "-plugin"]).arg(plugin).arg(perch_run).args(["classify", "--plan"]).arg(plan);
        for i in 0..n {
            cmd.arg(&files[i % files.len()]);
        }
        let out = cmd.output().map_err(|e| e.to_string())?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(format!("perch-run failed under qemu ({}): {stderr}", out.status));
        }
        let total = stderr
            .lines()
            .find_map(|l| l.strip_prefix("insncount: total=")?.split_whitespace().next()?.parse::<u64>().ok())
            .ok_or_else(|| format!("no insncount line in: {stderr}"))?;
        counts.push(total);
    }
    Ok(counts[1].checked_sub(counts[0]).ok_or("21 images counted fewer instructions than 11")? / 10)
}

/// Builds the insncount plugin into the target dir.
fn insncount_plugin() -> Result<PathBuf> {
    let shared = root().join("../shared/tools/insncount");
    let plugin = target_dir().join("insncount/libinsncount.so");
    std::fs::create_dir_all(plugin.parent().expect("has parent")).map_err(|e| e.to_string())?;
    run(Command::new("gcc").args(["-shared", "-fPIC", "-O2", "-o"]).arg(&plugin).arg(shared.join("insncount.c")))?;
    Ok(plugin)
}

/// `count` Fashion-MNIST test images as PNG files under `dir`, sorted.
fn export_images(dir: &Path, count: usize) -> Result<Vec<PathBuf>> {
    let _ = std::fs::remove_dir_all(dir);
    run(Command::new(bin("perch")).args(["dataset", "export", "fashion-mnist:test", "--count", &count.to_string(), "-o"]).arg(dir))?;
    let mut files: Vec<PathBuf> = Vec::new();
    for class in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        for f in std::fs::read_dir(class.map_err(|e| e.to_string())?.path()).map_err(|e| e.to_string())? {
            files.push(f.map_err(|e| e.to_string())?.path());
        }
    }
    files.sort();
    Ok(files)
}

/// A qemu-user emulator: its command, sysroot and `-cpu`.
struct Qemu {
    command: &'static str,
    sysroot: &'static str,
    cpu: &'static str,
}

/// Instructions one inference costs under `qemu`: `perch-run bench --runs N` for two N, the difference
/// divided by their difference removing process start, plan load and optimization.
fn qemu_per_inference(plugin: &Path, qemu: &Qemu, perch_run: &Path, plan: &Path, runs: [usize; 2]) -> Result<u64> {
    let mut counts = Vec::new();
    for n in runs {
        let mut cmd = Command::new(qemu.command);
        cmd.args(["-cpu", qemu.cpu, "-L", qemu.sysroot, "-plugin"]).arg(plugin).arg(perch_run).args(["bench", "--plan"]).arg(plan);
        cmd.args(["--runs", &n.to_string(), "--warmup", "0", "--no-cold-start", "--json"]).env("TRACT_CPU_ARM32_NEON", "true");
        let out = cmd.output().map_err(|e| e.to_string())?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(format!("perch-run failed under {} -cpu {} ({}): {stderr}", qemu.command, qemu.cpu, out.status));
        }
        let total = stderr
            .lines()
            .find_map(|l| l.strip_prefix("insncount: total=")?.split_whitespace().next()?.parse::<u64>().ok())
            .ok_or_else(|| format!("no insncount line in: {stderr}"))?;
        counts.push(total);
    }
    Ok(counts[1].checked_sub(counts[0]).ok_or("more runs counted fewer instructions")? / (runs[1] - runs[0]) as u64)
}

/// The MobileNetV2-shaped benchmark network (xtask/mobilenet_v2.py, random weights) and its
/// calibration images, exported once with PyTorch: None when no Python with torch is at hand.
fn mobilenet_v2(dir: &Path) -> Result<Option<(PathBuf, PathBuf)>> {
    let (onnx, calibration) = (dir.join("mobilenet-v2.onnx"), dir.join("mobilenet-v2.calib.npy"));
    if onnx.exists() && calibration.exists() {
        return Ok(Some((onnx, calibration)));
    }
    let python = std::env::var_os("PERCH_TORCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/perch-train-venv/bin/python"));
    if !python.exists() {
        eprintln!(
            "MobileNetV2 skipped: it is exported with PyTorch, and {} does not exist (set PERCH_TORCH_PYTHON, or make \
             the training venv: README, \"Regenerating the models\")",
            python.display()
        );
        return Ok(None);
    }
    run(Command::new(python).arg(root().join("xtask/mobilenet_v2.py")).arg(&onnx).arg(&calibration))?;
    Ok(Some((onnx, calibration)))
}

/// Perch's int8 kernels against tract's int8 and against float, for fashion-cnn-s, fashion-resnet and
/// a MobileNetV2-shaped 224x224 network: instructions per inference under qemu on Cortex-A72 (Pi 4),
/// Cortex-A76 (Pi 5, SDOT) and Cortex-A7 (32-bit), and x86-64 latency against ONNX Runtime (float and
/// int8 QDQ, one thread, interleaved). Writes both tables into BENCHMARKS.md.
fn bench_int8() -> Result {
    setup()?;
    let plugin = insncount_plugin()?;
    let python = ort_venv()?;
    run(cargo().args(["build", "--release", "-p", "perch-host", "-p", "perch-run", "--bin", "perch", "--bin", "perch-run"]))?;
    let (aarch64, armv7) = ("aarch64-unknown-linux-gnu", "armv7-unknown-linux-gnueabihf");
    for target in [aarch64, armv7] {
        run(cargo().args(["build", "--release", "-p", "perch-run", "--target", target]))?;
    }
    let out = target_dir().join("bench-int8");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let fashion = ["--mean", "0.2860", "--std", "0.3530"];
    /// A benchmark model: name, ONNX file, calibration data, preprocessing, the two run counts.
    struct Model {
        name: String,
        onnx: PathBuf,
        calibration: String,
        preprocess: Vec<&'static str>,
        runs: [usize; 2],
    }
    let mut models: Vec<Model> = ["fashion-cnn-s", "fashion-resnet"]
        .iter()
        .map(|m| Model {
            name: m.to_string(),
            onnx: root().join(format!("models/{m}/{m}.onnx")),
            calibration: "fashion-mnist:train".into(),
            preprocess: fashion.to_vec(),
            runs: [11, 21],
        })
        .collect();
    if let Some((onnx, calibration)) = mobilenet_v2(&out)? {
        let preprocess = vec!["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"];
        models.push(Model { name: "mobilenet-v2".into(), onnx, calibration: calibration.display().to_string(), preprocess, runs: [1, 3] });
    }
    let (a64, a32) = (("qemu-aarch64", "/usr/aarch64-linux-gnu"), ("qemu-arm", "/usr/arm-linux-gnueabihf"));
    let cpus = [
        ("Cortex-A72", aarch64, a64, "cortex-a72"),
        ("Cortex-A76", aarch64, a64, "cortex-a76"),
        ("Cortex-A7", armv7, a32, "cortex-a7"),
    ];
    let mut insns = String::from(
        "Instructions per inference (batch 1, one thread) under qemu-user with `../shared/tools/insncount`: \
         `perch-run bench --runs N` for two N, the difference divided by the difference in N (plan load and \
         optimization cancel out). float = tract's f32 plan; tract int8 = the same int8 plan on tract 0.23.9's \
         quantized convolution (`perch compile --int8-kernels tract`); Perch int8 = on Perch's kernels (the default).\n\n\
         | model | CPU | float | tract int8 | Perch int8 | tract int8 / float | Perch int8 / float |\n|---|---|---:|---:|---:|---:|---:|\n",
    );
    let mut specs = Vec::new();
    for Model { name, onnx, calibration, preprocess, runs } in &models {
        let plan = |suffix: &str| out.join(format!("{name}{suffix}.perch"));
        let compile = |plan: &Path, extra: &[&str]| {
            run(Command::new(bin("perch")).arg("compile").arg(onnx).arg("-o").arg(plan).args(preprocess).args(extra))
        };
        let int8 = ["--quantize", "int8", "--calibration", calibration.as_str(), "--calibration-samples", "1000"];
        compile(&plan(""), &[])?;
        compile(&plan(".int8-tract"), &[&int8[..], &["--int8-kernels", "tract"]].concat())?;
        compile(&plan(".int8-perch"), &int8)?;
        for (cpu, target, (command, sysroot), qemu_cpu) in cpus {
            let perch_run = target_dir().join(target).join("release/perch-run");
            let qemu = Qemu { command, sysroot, cpu: qemu_cpu };
            let count = |p: &Path| qemu_per_inference(&plugin, &qemu, &perch_run, p, *runs);
            let (f, t, p) = (count(&plan(""))?, count(&plan(".int8-tract"))?, count(&plan(".int8-perch"))?);
            let line = format!(
                "| {name} | {cpu} | {f} | {t} | {p} | {:.2}x | {:.2}x |\n",
                t as f64 / f as f64,
                p as f64 / f as f64
            );
            print!("{line}");
            insns.push_str(&line);
        }
        specs.push(format!(
            "{name}={}:{}:{}:{}",
            onnx.display(),
            plan("").display(),
            plan(".int8-tract").display(),
            plan(".int8-perch").display()
        ));
    }
    write_benchmark_section("int8-insns", "## int8 kernels on ARM: instructions per inference (issue 6)", &format!("Command: `cargo xtask bench-int8`.\n\n{insns}"))?;
    let table = out.join("ort.md");
    run(Command::new(&python).arg(root().join("xtask/ort_bench.py")).arg(&table).arg(bin("perch-run")).args(["7", "100"]).args(&specs))?;
    let body = std::fs::read_to_string(&table).map_err(|e| e.to_string())?;
    write_benchmark_section("int8-x86", "## int8 kernels on x86-64 against ONNX Runtime (issue 6)", &format!("Command: `cargo xtask bench-int8`.\n\n{body}"))
}

/// ONNX Runtime's float and int8 (quantize_static QDQ, same calibration set) accuracy on the example
/// models, to set beside Perch's (tests/cases/<model>/<target>.json, `perch eval`).
fn accuracy_ort() -> Result {
    setup()?;
    let python = ort_venv()?;
    let models: Vec<PathBuf> = GOLDEN_MODELS.iter().map(|m| root().join(format!("models/{m}/{m}.onnx"))).collect();
    run(Command::new(python).arg(root().join("xtask/ort_accuracy.py")).args(&models))
}

fn device_binary(args: &[String]) -> Result {
    let usage = "usage: cargo xtask device-binary [--target TRIPLE] [--no-server] [--relr]";
    let (mut target, mut server, mut relr) = ("aarch64-unknown-linux-gnu", true, false);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--target" => {
                let t = args.next().ok_or(usage)?;
                target = CROSS.iter().map(|(t, _)| *t).find(|known| known == t).ok_or_else(|| {
                    format!("--target {t}: the device targets are {}", CROSS.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(", "))
                })?;
            }
            "--no-server" => server = false,
            "--relr" => relr = true,
            _ => return Err(format!("unknown argument {arg:?}\n{usage}")),
        }
    }
    setup()?;
    let mut cmd = cargo();
    cmd.args(["build", "--profile", "device", "-p", "perch-run", "--target", target, "--features", "lean-types"]);
    if !server {
        cmd.arg("--no-default-features");
    }
    if relr {
        // rust-lld, through the gcc wrapper rustup ships: the cross binutils' ld (2.40) cannot pack
        // AArch64 relocations. Only the target's crates see RUSTFLAGS with --target, so switching
        // --relr on or off rebuilds them.
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        let sysroot = output(Command::new(&rustc).current_dir(root()).args(["--print", "sysroot"]))?;
        let version = output(Command::new(&rustc).current_dir(root()).arg("-vV"))?;
        let host = version.lines().find_map(|l| l.strip_prefix("host: ")).ok_or("`rustc -vV` names no host")?;
        let gcc_ld = Path::new(sysroot.trim()).join("lib/rustlib").join(host).join("bin/gcc-ld");
        let flags = format!(
            "{} -C link-arg=-B{} -C link-arg=-fuse-ld=lld -C link-arg=-Wl,-z,pack-relative-relocs",
            std::env::var("RUSTFLAGS").unwrap_or_default(),
            gcc_ld.display()
        );
        eprintln!("RUSTFLAGS={}", flags.trim());
        cmd.env("RUSTFLAGS", flags.trim());
    }
    run(&mut cmd)?;
    let path = target_dir().join(target).join("device/perch-run");
    let size = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?.len();
    println!("{}: {size} bytes ({:.2} MB), stripped", path.display(), size as f64 / 1e6);
    if relr {
        println!("packed relocations: the board needs glibc 2.36 or newer (`ldd --version` there)");
    }
    Ok(())
}

fn measure() -> Result {
    setup()?;
    let plugin = insncount_plugin()?;
    let timed = |args: &[&str]| -> Result<f64> {
        let started = std::time::Instant::now();
        run(cargo().args(args))?;
        Ok(started.elapsed().as_secs_f64())
    };
    let mut build_times = vec![("x86-64 perch + perch-run", timed(&["build", "--release", "-p", "perch-host", "-p", "perch-run"])?)];
    for target in ["aarch64-unknown-linux-gnu", "armv7-unknown-linux-gnueabihf"] {
        let secs = timed(&["build", "--release", "-p", "perch-run", "--target", target])?;
        build_times.push((target, secs));
    }
    for (what, secs) in &build_times {
        println!("build {what}: {secs:.0} s (0 s when nothing changed: clean the target dir to time a clean build)");
    }
    let out = target_dir().join("measure");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let plan = out.join("fashion-resnet.perch");
    run(Command::new(bin("perch"))
        .arg("compile")
        .arg(root().join("models/fashion-resnet/fashion-resnet.onnx"))
        .args(["-o"])
        .arg(&plan)
        .args(["--mean", "0.2860", "--std", "0.3530"]))?;
    let files = export_images(&out.join("images"), 10)?;
    for (name, target) in [("x86-64", None), ("aarch64", Some("aarch64-unknown-linux-gnu")), ("armv7", Some("armv7-unknown-linux-gnueabihf"))] {
        let path = match target {
            None => bin("perch-run"),
            Some(t) => target_dir().join(t).join("release/perch-run"),
        };
        let stripped = out.join(format!("perch-run-{name}.stripped"));
        let strip = match target {
            None => "strip",
            Some("aarch64-unknown-linux-gnu") => "aarch64-linux-gnu-strip",
            Some(_) => "arm-linux-gnueabihf-strip",
        };
        run(Command::new(strip).arg("-o").arg(&stripped).arg(&path))?;
        let size = std::fs::metadata(&stripped).map_err(|e| e.to_string())?.len();
        println!("size {name}: perch-run stripped {size} bytes ({:.2} MB)", size as f64 / 1e6);
    }
    let aarch64 = target_dir().join("aarch64-unknown-linux-gnu/release/perch-run");
    let per_image = qemu_per_image(&plugin, &aarch64, "cortex-a72", &plan, &files)?;
    println!("insncount cortex-a72: fashion-resnet, one image classified (decode + preprocess + inference): {per_image} instructions");
    Ok(())
}

/// The venv holding ONNX Runtime for `bench-ort`, made (and the packages installed from PyPI) on first use.
fn ort_venv() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
    let venv = PathBuf::from(home).join(".cache/perch-ort-venv");
    let python = venv.join("bin/python");
    if !python.is_file() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    let check = Command::new(&python).args(["-c", "import onnxruntime, onnx, numpy"]).output();
    if !check.is_ok_and(|o| o.status.success()) {
        run(Command::new(venv.join("bin/pip")).args(["install", "-q", "onnxruntime==1.32.0", "onnx==1.23.2", "numpy"]))?;
    }
    Ok(python)
}

/// Replaces the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in BENCHMARKS.md, or
/// appends the section with `heading` when the markers are not there yet.
fn write_benchmark_section(name: &str, heading: &str, body: &str) -> Result {
    let path = root().join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (begin, end) = (format!("<!-- {name}:begin -->"), format!("<!-- {name}:end -->"));
    let block = format!("{begin}\n{body}{end}");
    let new = match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if b < e => format!("{}{block}{}", &text[..b], &text[e + end.len()..]),
        _ => format!("{}\n\n{heading}\n\n{block}\n", text.trim_end()),
    };
    write_atomically(&path, new.as_bytes())
}

/// Writes `path` whole or not at all: a temporary file beside it, renamed over it (and removed if
/// anything fails), so an interrupted run never leaves a half-written BENCHMARKS.md.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("{}: {e}", path.display()));
    }
    Ok(())
}

/// perch-run against ONNX Runtime on this machine: see xtask/ort_bench.py.
fn bench_ort() -> Result {
    setup()?;
    let python = ort_venv()?;
    run(cargo().args(["build", "--release", "-p", "perch-host", "-p", "perch-run", "--bin", "perch", "--bin", "perch-run"]))?;
    let out = target_dir().join("bench-ort");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let mut specs = Vec::new();
    for model in ["fashion-cnn-s", "fashion-resnet"] {
        let onnx = root().join(format!("models/{model}/{model}.onnx"));
        let plan = |suffix: &str| out.join(format!("{model}{suffix}.perch"));
        let compile = |plan: &Path, extra: &[&str]| {
            run(Command::new(bin("perch")).arg("compile").arg(&onnx).arg("-o").arg(plan).args(["--mean", "0.2860", "--std", "0.3530"]).args(extra))
        };
        let int8 = ["--quantize", "int8", "--calibration", "fashion-mnist:train", "--calibration-samples", "1000"];
        compile(&plan(""), &[])?;
        compile(&plan(".int8"), &int8)?;
        compile(&plan(".int8-per-tensor"), &[&int8[..], &["--weight-scales", "per-tensor"]].concat())?;
        specs.push(format!(
            "{model}={}:{}:{}:{}",
            onnx.display(),
            plan("").display(),
            plan(".int8").display(),
            plan(".int8-per-tensor").display()
        ));
    }
    let table = out.join("table.md");
    run(Command::new(&python)
        .arg(root().join("xtask/ort_bench.py"))
        .arg(&table)
        .arg(bin("perch-run"))
        .args(["15", "200"])
        .args(&specs))?;
    let body = std::fs::read_to_string(&table).map_err(|e| e.to_string())?;
    let body = format!("Command: `cargo xtask bench-ort` (x86-64 here; see the caveats below the table).\n\n{body}");
    write_benchmark_section("bench-ort", "## perch-run vs ONNX Runtime (issue 5)", &body)
}

/// The load run: perch-run serve (release) with fashion-cnn-s, and the `load` example as 64 clients.
fn bench_serve() -> Result {
    run(cargo().args(["build", "--release", "-p", "perch-run", "-p", "perch-runtime", "--bin", "perch-run", "--example", "load"]))?;
    let out = target_dir().join("bench-serve");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let plan = root().join("tests/cases/fashion-cnn-s/model.perch");
    let log = std::fs::File::create(out.join("serve.log")).map_err(|e| e.to_string())?;
    let mut server = Command::new(bin("perch-run"))
        .args(["serve", "--port", "18080", "--models"])
        .arg(format!("fashion-cnn-s={}", plan.display()))
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start perch-run serve: {e}"))?;
    let image = root().join("tests/cases/fashion-cnn-s/images/00000.png");
    let result = run(Command::new(target_dir().join("release/examples/load"))
        .args(["http://127.0.0.1:18080", "fashion-cnn-s"])
        .arg(&image)
        .args(["64", "30"]));
    // SIGTERM, as a service manager stops it; the server drains and exits 0.
    let _ = Command::new("kill").arg(server.id().to_string()).status();
    let status = server.wait().map_err(|e| e.to_string())?;
    result?;
    if !status.success() {
        return Err(format!("perch-run serve exited with {status}; see {}", out.join("serve.log").display()));
    }
    Ok(())
}

/// The cargo-fuzz targets of fuzz/, each with its corpus in fuzz/corpus/<target>/ and, where it has one,
/// a dictionary fuzz/<target>.dict.
const FUZZ_TARGETS: &[&str] = &["perch_plan", "pmc", "image", "onnx", "http"];

fn fuzz(args: &[String]) -> Result {
    let usage = || format!("usage: cargo xtask fuzz [--time SECS] [{}]", FUZZ_TARGETS.join("|"));
    let mut seconds = 30u64;
    let mut only = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--time" => seconds = args.next().and_then(|s| s.parse().ok()).filter(|&s| s > 0).ok_or_else(usage)?,
            t if only.is_none() && FUZZ_TARGETS.contains(&t) => only = Some(t),
            other => return Err(format!("unexpected `{other}`; {}", usage())),
        }
    }
    if !output(Command::new("rustup").args(["toolchain", "list"]))?.lines().any(|l| l.starts_with("nightly")) {
        run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    }
    if Command::new("cargo-fuzz").arg("--version").output().is_err() {
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let dir = root().join("fuzz");
    // `cargo +nightly` through rustup, not this cargo: and none of the variables `cargo xtask` set for
    // the root workspace (fuzz/ has its own target dir, sanitizer flags and toolchain).
    let nightly_cargo = || {
        let mut c = Command::new("cargo");
        c.arg("+nightly").current_dir(&dir);
        for var in ["CARGO", "RUSTUP_TOOLCHAIN", "RUSTC", "RUSTDOC", "CARGO_TARGET_DIR", "RUSTFLAGS"] {
            c.env_remove(var);
        }
        c
    };
    // -O: dependencies built as shipped; fuzz/Cargo.toml keeps overflow checks on in Perch's crates.
    run(nightly_cargo().args(["fuzz", "build", "-O"]))?;
    let targets = only.map_or_else(|| FUZZ_TARGETS.to_vec(), |t| vec![t]);
    for target in targets {
        // New inputs go to a scratch corpus (listed first); the kept one is only read.
        let scratch = dir.join("target/smoke-corpus").join(target);
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
        let mut cmd = nightly_cargo();
        cmd.args(["fuzz", "run", "-O", target]).arg(&scratch).arg(dir.join("corpus").join(target));
        cmd.args(["--", &format!("-max_total_time={seconds}"), "-rss_limit_mb=4096", "-timeout=60"]);
        let dict = dir.join(format!("{target}.dict"));
        if dict.exists() {
            cmd.arg(format!("-dict={}", dict.display()));
        }
        run(&mut cmd).map_err(|e| format!("{e}\nfuzz target {target} failed: the input that broke it is in fuzz/artifacts/{target}/"))?;
    }
    eprintln!("fuzz: {} target(s), {seconds} s each, no crash", only.map_or(FUZZ_TARGETS.len(), |_| 1));
    Ok(())
}

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "setup" => setup(),
        "demo" => demo(),
        "test" => test(),
        "test-cross" => test_cross(),
        "goldens" => goldens(),
        "device-binary" => device_binary(&std::env::args().skip(2).collect::<Vec<_>>()),
        "measure" => measure(),
        "accuracy-ort" => accuracy_ort(),
        "test-firmware" => test_firmware(),
        "bench-int8" => bench_int8(),
        "bench-ort" => bench_ort(),
        "bench-serve" => bench_serve(),
        "fuzz" => fuzz(&std::env::args().skip(2).collect::<Vec<_>>()),
        _ => {
            eprintln!("{USAGE}");
            return if task.is_empty() || task == "help" || task == "--help" { ExitCode::SUCCESS } else { ExitCode::FAILURE };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: {e}");
            ExitCode::FAILURE
        }
    }
}
