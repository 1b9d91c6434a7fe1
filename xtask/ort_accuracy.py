"""ONNX Runtime's accuracy next to Perch's: the same ONNX model, the same preprocessing (Fashion-MNIST
mean/std) and the same calibration set (the first 1,000 training images), on the 10k test set.

Run by `cargo xtask accuracy-ort` (it makes the venv with onnxruntime from PyPI); usage:
  python ort_accuracy.py MODEL.onnx ...
Prints one Markdown row per model: ORT float top-1, ORT int8 top-1 (quantize_static, QDQ format,
per-channel int8 weights, int8 activations, MinMax calibration: Perch's default scheme), and the
top-1 agreement of ORT int8 with ORT float.
"""

import gzip
import os
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

MEAN, STD = 0.2860, 0.3530
DATA = "/usr/share/datasets/fashion-mnist"


def idx(name):
    with gzip.open(os.path.join(DATA, name), "rb") as f:
        data = f.read()
    return data


def images(prefix, count=None):
    raw = np.frombuffer(idx(f"{prefix}-images-idx3-ubyte.gz"), dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28)
    raw = raw if count is None else raw[:count]
    return ((raw.astype(np.float32) / 255.0 - MEAN) / STD).astype(np.float32)


def labels(prefix):
    return np.frombuffer(idx(f"{prefix}-labels-idx1-ubyte.gz"), dtype=np.uint8, offset=8).astype(np.int64)


class Reader(CalibrationDataReader):
    def __init__(self, name, batch):
        self.items = iter([{name: img[None]} for img in batch])

    def get_next(self):
        return next(self.items, None)


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def predict(sess, x):
    name = sess.get_inputs()[0].name
    out = []
    for start in range(0, len(x), 500):
        out.append(sess.run(None, {name: x[start:start + 500]})[0])
    return np.concatenate(out).argmax(axis=1)


def main():
    test_x, test_y = images("t10k"), labels("t10k")
    calib = images("train", 1000)
    print(f"onnxruntime {ort.__version__}, {len(test_y)} test images, calibration: first 1000 training images")
    print("| model | ORT float | ORT int8 (QDQ, per-channel, MinMax) | ORT int8 / float agreement |")
    print("|---|---:|---:|---:|")
    for path in sys.argv[1:]:
        model = onnx.load(path)
        name = model.graph.input[0].name
        with tempfile.TemporaryDirectory() as tmp:
            q = os.path.join(tmp, "int8.onnx")
            quantize_static(
                path, q, Reader(name, calib), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
            f = predict(session(path), test_x)
            i = predict(session(q), test_x)
        stem = os.path.basename(path).rsplit(".onnx", 1)[0]
        print(f"| {stem} | {100 * (f == test_y).mean():.2f}% | {100 * (i == test_y).mean():.2f}% | {100 * (f == i).mean():.2f}% |")


if __name__ == "__main__":
    main()
