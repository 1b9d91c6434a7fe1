"""Perch (perch-run bench) against ONNX Runtime, same model, input and machine, one thread each.

Run by `cargo xtask bench-ort`, which builds perch-run, compiles the plans and makes the venv; usage:
  python ort_bench.py OUT.md PERCH_RUN ROUNDS RUNS NAME=ONNX:FLOAT.perch:INT8.perch[:INT8B.perch] ...

For each model: float ONNX on ORT vs the float plan; ORT's quantize_static QDQ model (calibrated on the
first 1,000 Fashion-MNIST training images, per-channel int8 weights, uint8 activations) vs each Perch
int8 plan. Rounds interleave the tools (ORT, Perch, ORT, Perch, ...) so that machine noise hits both;
each round is RUNS inferences after a warm-up, and a round's figure is its median latency. The table
shows the median of the rounds' medians.
"""

import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

MEAN, STD = 0.2860, 0.3530
TRAIN = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def synthetic_input(n):
    """perch_runtime::bench::synthetic_input: xorshift32 from seed 1, mapped to [-2, 2)."""
    x = 1
    out = np.empty(n, dtype=np.float32)
    for i in range(n):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        out[i] = np.float32((x >> 8) / float(1 << 24) * 4.0 - 2.0)
    return out


def calibration_images(count):
    with gzip.open(TRAIN, "rb") as f:
        data = f.read()
    images = np.frombuffer(data, dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28)[:count]
    return ((images.astype(np.float32) / 255.0 - MEAN) / STD).astype(np.float32)


class Reader(CalibrationDataReader):
    def __init__(self, name, images):
        self.items = iter([{name: img[None]} for img in images])

    def get_next(self):
        return next(self.items, None)


def calibration_for(onnx_path):
    """`X.calib.npy` beside `X.onnx` when there is one (the MobileNetV2 benchmark), else Fashion-MNIST."""
    npy = onnx_path[: -len(".onnx")] + ".calib.npy"
    return np.load(npy) if os.path.exists(npy) else calibration_images(1000)


def quantize(onnx_path, out_path):
    model = onnx.load(onnx_path)
    name = model.graph.input[0].name
    quantize_static(
        onnx_path,
        out_path,
        Reader(name, calibration_for(onnx_path)),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )


def ort_session(path, profile=False):
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.inter_op_num_threads = 1
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile:
        o.enable_profiling = True
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def ort_round(sess, feed, runs, warmup):
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter_ns()
        sess.run(None, feed)
        times.append((time.perf_counter_ns() - t) / 1e3)
    return statistics.median(times)


def perch_round(perch_run, plan, runs, warmup):
    out = subprocess.run(
        [perch_run, "bench", "--plan", plan, "--runs", str(runs), "--warmup", str(warmup), "--json", "--no-cold-start"],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)["latency_us"]["p50"]


def perch_profile(perch_run, plan, runs):
    out = subprocess.run(
        [perch_run, "bench", "--plan", plan, "--runs", str(runs), "--json", "--no-cold-start", "--profile"],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)["profile_by_op"]


def ort_profile(path, feed, runs):
    sess = ort_session(path, profile=True)
    for _ in range(runs):
        sess.run(None, feed)
    trace = sess.end_profiling()
    with open(trace) as f:
        events = json.load(f)
    os.remove(trace)
    # Per node, the median of its runs (the first runs pay for allocations), then summed per op.
    per_node = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            per_node.setdefault((e["name"], op), []).append(e["dur"])
    by_op = {}
    for (_, op), durs in per_node.items():
        by_op[op] = by_op.get(op, 0.0) + statistics.median(durs)
    total = sum(by_op.values()) or 1.0
    return sorted(((op, us, us / total) for op, us in by_op.items()), key=lambda x: -x[1])


def fmt_ops(ops, n=4):
    return ", ".join(f"{op} {us:.0f} us" for op, us, _ in ops[:n])


def main():
    out_md, perch_run, rounds, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    warmup = 20
    rows, notes = [], []
    for spec in sys.argv[5:]:
        name, rest = spec.split("=", 1)
        onnx_path, float_plan, *int8_plans = rest.split(":")
        qdq = os.path.join(os.path.dirname(float_plan), f"{name}.ort-qdq.onnx")
        quantize(onnx_path, qdq)
        def kind(plan):
            kernels = " (tract's kernels)" if "tract" in plan else " (Perch's kernels)" if "perch" in plan else ""
            return "int8" + kernels + (" (per-tensor weights)" if "per-tensor" in plan else "")

        pairs = [("float32", onnx_path, float_plan)] + [(kind(p), qdq, p) for p in int8_plans]
        for kind, ort_model, plan in pairs:
            sess = ort_session(ort_model)
            inp = sess.get_inputs()[0]
            shape = [1] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
            feed = {inp.name: synthetic_input(int(np.prod(shape))).reshape(shape)}
            ort_t, perch_t = [], []
            for r in range(rounds):
                ort_t.append(ort_round(sess, feed, runs, warmup))
                perch_t.append(perch_round(perch_run, plan, runs, warmup))
                print(f"{name} {kind} round {r + 1}/{rounds}: ORT {ort_t[-1]:.1f} us, Perch {perch_t[-1]:.1f} us", file=sys.stderr)
            o, p = statistics.median(ort_t), statistics.median(perch_t)
            rows.append((name, kind, o, p, p / o, min(ort_t), min(perch_t)))
            if p > o:
                # About 2 s of profiled runs each (2,000 runs for the small models).
                profile_runs = max(10, min(2000, int(2e6 / p)))
                tract_ops = [(x["op"], x["us_per_run"], x["share"]) for x in perch_profile(perch_run, plan, profile_runs)]
                ort_ops = ort_profile(ort_model, feed, profile_runs)
                notes.append(f"- **{name} {kind}**: Perch {p:.0f} us vs ORT {o:.0f} us. tract by op: {fmt_ops(tract_ops)}. "
                             f"ORT by op: {fmt_ops(ort_ops)}.")
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [
        f"Machine: {cpu}, {os.cpu_count()} CPUs; onnxruntime {ort.__version__} (PyPI wheel), Python {platform.python_version()}; "
        f"perch-run release build. Batch 1, one thread each, the same synthetic input; {rounds} interleaved rounds of "
        f"{runs} inferences after {warmup} warm-up runs; figures are the median over rounds of each round's median "
        f"latency (best round in brackets).",
        "",
        "| model | precision | ORT 1 thread | Perch | Perch / ORT |",
        "|---|---|---:|---:|---:|",
    ]
    for name, kind, o, p, ratio, omin, pmin in rows:
        lines.append(f"| {name} | {kind} | {o:.1f} us ({omin:.1f}) | {p:.1f} us ({pmin:.1f}) | {ratio:.2f}x |")
    if notes:
        lines += ["", "Where Perch is slower (time per op per inference, from `perch-run bench --profile` and ORT's "
                  "`enable_profiling`; up to 2,000 runs):", ""] + notes
    with open(out_md, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
