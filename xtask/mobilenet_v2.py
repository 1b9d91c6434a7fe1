"""MobileNetV2 (torchvision's architecture, 1000 classes, 3x224x224) with random weights, exported to
ONNX for the int8 benchmark (`cargo xtask bench-int8`), with calibration images as .npy.

torchvision itself is not needed (nor installed by Perch): the network is written out here layer for
layer as torchvision.models.mobilenet_v2 builds it (inverted residuals, ReLU6, BatchNorm, the same
initialization), so the benchmark measures the shapes Raspberry Pi users run.

usage: python mobilenet_v2.py OUT.onnx CALIBRATION.npy
"""

import sys

import numpy as np
import torch
from torch import nn


def conv_bn_relu6(inp, out, kernel=3, stride=1, groups=1):
    return nn.Sequential(
        nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, inp, out, stride, expand):
        super().__init__()
        hidden = int(round(inp * expand))
        self.residual = stride == 1 and inp == out
        layers = []
        if expand != 1:
            layers.append(conv_bn_relu6(inp, hidden, kernel=1))
        layers += [
            conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, classes=1000):
        super().__init__()
        settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
        layers = [conv_bn_relu6(3, 32, stride=2)]
        inp = 32
        for t, c, n, s in settings:
            for i in range(n):
                layers.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        layers.append(conv_bn_relu6(inp, 1280, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


def main():
    out, calibration = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    model = MobileNetV2().eval()
    # BatchNorm statistics that are not the identity, so folding them is exercised.
    rng = np.random.default_rng(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.from_numpy(rng.normal(0, 0.1, m.num_features).astype(np.float32)))
            m.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, m.num_features).astype(np.float32)))
    images = rng.uniform(0, 1, (32, 3, 224, 224)).astype(np.float32)
    np.save(calibration, images)
    # Perch's .npy datasets carry labels beside them (random weights: any label will do).
    np.save(calibration[: -len(".npy")] + ".labels.npy", np.zeros(len(images), dtype=np.int64))
    torch.onnx.export(
        model,
        torch.from_numpy(images[:1]),
        out,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=13,
        dynamo=False,
    )
    print(f"wrote {out} and {calibration}")


if __name__ == "__main__":
    main()
