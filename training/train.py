#!/usr/bin/env python3
"""Train Perch's example classifiers on Fashion-MNIST and export them to ONNX.

This is the recipe the people Perch serves follow: a custom weight-normalized Linear head, a learnable
Swish activation, focal loss, Adam with ReduceLROnPlateau, fixed seeds, checkpoints saved as a dict of
state_dicts, and ONNX exports with a dynamic batch axis from both exporters (legacy opset 13 and dynamo).

    python3 -m venv ~/.cache/perch-train-venv
    ~/.cache/perch-train-venv/bin/pip install torch onnx onnxscript numpy
    ~/.cache/perch-train-venv/bin/python training/train.py fashion-cnn-s
    ~/.cache/perch-train-venv/bin/python training/train.py fashion-resnet

Needs the Debian package `dataset-fashion-mnist`. Writes models/<name>/ (the two .onnx files, labels.txt,
training.json) and training/checkpoints/<name>.pt (not committed). torch is not on Perch's test path.
"""
import argparse
import gzip
import json
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DATA_DIR = "/usr/share/datasets/fashion-mnist"
# Per-pixel statistics of the Fashion-MNIST training set, on pixels scaled to [0, 1].
MEAN, STD = 0.2860, 0.3530
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
          "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_idx(path):
    """Reads an IDX file (gzip), as LeCun's MNIST format defines it: big-endian dims after a magic."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(kind):
    images = read_idx(os.path.join(DATA_DIR, f"{kind}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(DATA_DIR, f"{kind}-labels-idx1-ubyte.gz"))
    x = torch.from_numpy(images.astype(np.float32) / np.float32(255.0))
    x = ((x - MEAN) / STD).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


class WeightNormLinear(nn.Module):
    """Linear layer whose weight rows are divided by their L2 norm, then scaled by a learned gain."""

    def __init__(self, in_features, out_features):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.gain = nn.Parameter(torch.ones(out_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)

    def forward(self, x):
        norm = self.weight.norm(p=2, dim=1, keepdim=True).clamp_min(1e-12)
        return F.linear(x, self.weight / norm * self.gain.unsqueeze(1), self.bias)


class LearnableSwish(nn.Module):
    """x * sigmoid(beta * x), beta learned (Swish-beta, Ramachandran et al. 2017)."""

    def __init__(self, beta=1.0):
        super().__init__()
        self.beta = nn.Parameter(torch.tensor(float(beta)))

    def forward(self, x):
        return x * torch.sigmoid(self.beta * x)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017) for multi-class logits.

    alpha: None, a float (scales every sample), or a per-class sequence; gamma >= 0 (0 gives
    cross-entropy); reduction: 'mean', 'sum' or 'none'.
    """

    def __init__(self, alpha=None, gamma=2.0, reduction="mean"):
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be mean, sum or none, not {reduction!r}")
        if gamma < 0:
            raise ValueError("gamma must be >= 0")
        self.gamma = gamma
        self.reduction = reduction
        if alpha is None or isinstance(alpha, (int, float)):
            self.alpha = alpha
        else:
            self.register_buffer("alpha_per_class", torch.tensor(alpha, dtype=torch.float32))
            self.alpha = "per-class"

    def forward(self, logits, target):
        log_p = F.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
        loss = -((1.0 - log_p.exp()) ** self.gamma) * log_p
        if self.alpha == "per-class":
            loss = loss * self.alpha_per_class[target]
        elif self.alpha is not None:
            loss = loss * self.alpha
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss


class FashionCnnS(nn.Module):
    """Small enough for a Cortex-M4 in int8: ~29k parameters, 12.5 KiB peak activation."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), LearnableSwish(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), LearnableSwish(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), LearnableSwish(), nn.MaxPool2d(2),
        )
        self.dropout = nn.Dropout(0.2)
        self.head = WeightNormLinear(64 * 3 * 3, 10)

    def forward(self, x):
        return self.head(self.dropout(torch.flatten(self.features(x), 1)))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class FashionResNet(nn.Module):
    """ResNet for 28x28 grey images: a stem and three residual stages (28 -> 14 -> 7 -> 4), ~0.31 M params, ~10 M MACs."""

    def __init__(self, widths=(32, 32, 64, 128)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        self.stages = nn.Sequential(*[BasicBlock(widths[i], widths[i + 1], 2) for i in range(3)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = WeightNormLinear(widths[-1], 10)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


MODELS = {
    "fashion-cnn-s": dict(build=FashionCnnS, epochs=14, lr=2e-3, gamma=1.5, alpha=None, target=90.0),
    "fashion-resnet": dict(build=FashionResNet, epochs=9, lr=2e-3, gamma=1.5, alpha=None, target=92.5),
}


def evaluate(model, x, y, batch=1000):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    return 100.0 * correct / len(x)


def export(model, name, out_dir):
    model.eval()
    example = torch.zeros(1, 1, 28, 28)
    legacy = os.path.join(out_dir, f"{name}.onnx")
    torch.onnx.export(model, (example,), legacy, dynamo=False, opset_version=13,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    dynamo = os.path.join(out_dir, f"{name}.dynamo.onnx")
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(model, (example,), dynamo, dynamo=True, external_data=False,
                      input_names=["input"], output_names=["logits"],
                      dynamic_shapes={"x": {0: batch}})
    return [legacy, dynamo]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=sorted(MODELS))
    parser.add_argument("--epochs", type=int, help="override the recipe's epoch count")
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()

    recipe = MODELS[args.model]
    epochs = args.epochs or recipe["epochs"]
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    x_train, y_train = load_split("train")
    x_test, y_test = load_split("t10k")
    # The last 5k training images are held out to drive ReduceLROnPlateau; the test set is never seen.
    x_val, y_val = x_train[55000:], y_train[55000:]
    x_train, y_train = x_train[:55000], y_train[:55000]

    model = recipe["build"]()
    params = sum(p.numel() for p in model.parameters())
    criterion = FocalLoss(alpha=recipe["alpha"], gamma=recipe["gamma"], reduction="mean")
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe["lr"])
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.3, patience=1)
    ckpt_dir = os.path.join(ROOT, "training", "checkpoints")
    os.makedirs(ckpt_dir, exist_ok=True)
    history = []
    started = time.time()
    generator = torch.Generator().manual_seed(args.seed)
    best_val, best_state = -1.0, None
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        total = 0.0
        for i in range(0, len(order), 128):
            idx = order[i:i + 128]
            xb = x_train[idx]
            # Horizontal flips: garments look the same mirrored; cheap augmentation.
            flip = torch.rand(len(idx), generator=generator) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            optimizer.zero_grad()
            loss = criterion(model(xb), y_train[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        val = evaluate(model, x_val, y_val)
        scheduler.step(val)
        lr = optimizer.param_groups[0]["lr"]
        history.append(dict(epoch=epoch, loss=total / len(x_train), val_top1=val, lr=lr))
        print(f"{args.model} epoch {epoch}/{epochs}: loss {total / len(x_train):.4f} val {val:.2f}% lr {lr:.2e} "
              f"({time.time() - started:.0f}s)", flush=True)
        if val > best_val:
            best_val = val
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "epoch": epoch, "seed": args.seed},
                   os.path.join(ckpt_dir, f"{args.model}.pt"))
    model.load_state_dict(best_state)
    test = evaluate(model, x_test, y_test)
    print(f"{args.model}: test top-1 {test:.2f}% ({params} parameters)", flush=True)
    if test < recipe["target"]:
        print(f"warning: below the {recipe['target']}% target", file=sys.stderr)

    out_dir = os.path.join(ROOT, "models", args.model)
    os.makedirs(out_dir, exist_ok=True)
    files = export(model, args.model, out_dir)
    with open(os.path.join(out_dir, "labels.txt"), "w") as f:
        f.write("\n".join(LABELS) + "\n")
    record = dict(
        model=args.model, seed=args.seed, epochs=epochs, torch=torch.__version__, threads=args.threads,
        parameters=params, test_top1=round(test, 2), test_correct=int(round(test * 100)), test_images=len(x_test),
        best_val_top1=best_val, train_seconds=round(time.time() - started),
        preprocessing=dict(scale=1 / 255, mean=[MEAN], std=[STD], color="grayscale", size=[28, 28]),
        loss=dict(kind="focal", gamma=recipe["gamma"], alpha=recipe["alpha"], reduction="mean"),
        optimizer=dict(kind="adam", lr=recipe["lr"], scheduler="ReduceLROnPlateau(max, factor=0.3, patience=1)"),
        exports=[os.path.basename(f) for f in files], history=history,
    )
    with open(os.path.join(out_dir, "training.json"), "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
