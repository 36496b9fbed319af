"""Our DeepLabV3+ against a plain reference DeepLabV3+ on the same timm encoder (docs/benchmarks.md: Speed).

The reference is the textbook network: timm `features_only` (stride-4 and last maps), ASPP (1x1, three atrous
3x3, image pooling upsampled bilinearly, 1x1 projection and dropout), 48-channel low-level projection, two 3x3
fusion convolutions, classifier, bilinear upsampling. Both take the same input, alternating, in training mode;
the medians of forward and backward (cross-entropy) seconds are printed and written as JSON.

    python benchmarks/scripts/reference_network.py --encoder resnet50d --crop 321 --batch 4 --threads 2 --repeats 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from semiseg.models.deeplabv3plus import ASPP_RATES, DeepLabV3Plus


def conv_bn_relu(cin, cout, kernel=1, dilation=1):
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation,
                                   bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ReferenceASPP(nn.Module):
    def __init__(self, cin, cout, rates):
        super().__init__()
        self.convs = nn.ModuleList([conv_bn_relu(cin, cout)] + [conv_bn_relu(cin, cout, 3, r) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv_bn_relu(cin, cout))
        self.project = nn.Sequential(conv_bn_relu(5 * cout, cout), nn.Dropout(0.5))

    def forward(self, x):
        pooled = F.interpolate(self.pool(x), x.shape[-2:], mode="bilinear", align_corners=True)
        return self.project(torch.cat([conv(x) for conv in self.convs] + [pooled], dim=1))


class ReferenceDeepLabV3Plus(nn.Module):
    def __init__(self, encoder, num_classes, output_stride=16):
        super().__init__()
        self.backbone = timm.create_model(encoder, pretrained=False, features_only=True, output_stride=output_stride,
                                          out_indices=(1, 4))
        low, high = self.backbone.feature_info.channels()
        self.aspp = ReferenceASPP(high, 256, ASPP_RATES[output_stride])
        self.reduce = conv_bn_relu(low, 48)
        self.fuse = nn.Sequential(conv_bn_relu(256 + 48, 256, 3), conv_bn_relu(256, 256, 3))
        self.classifier = nn.Conv2d(256, num_classes, 1)

    def forward(self, x):
        low, high = self.backbone(x)
        high = F.interpolate(self.aspp(high), low.shape[-2:], mode="bilinear", align_corners=True)
        out = self.classifier(self.fuse(torch.cat([self.reduce(low), high], dim=1)))
        return F.interpolate(out, x.shape[-2:], mode="bilinear", align_corners=True)


def timed_pass(network, x, y):
    start = time.perf_counter()
    logits = network(x)
    middle = time.perf_counter()
    F.cross_entropy(logits, y).backward()
    end = time.perf_counter()
    network.zero_grad(set_to_none=True)
    return middle - start, end - middle


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="resnet50d")
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--crop", type=int, default=321)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results/speed/reference_network.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    networks = {"ours": DeepLabV3Plus(args.encoder, args.classes, args.output_stride).train(),
                "reference": ReferenceDeepLabV3Plus(args.encoder, args.classes, args.output_stride).train()}
    x = torch.randn(args.batch, 3, args.crop, args.crop)
    y = torch.randint(0, args.classes, (args.batch, args.crop, args.crop))
    times = {name: [] for name in networks}
    for name, network in networks.items():  # warm-up
        timed_pass(network, x, y)
    for _ in range(args.repeats):
        for name, network in networks.items():
            times[name].append(timed_pass(network, x, y))
    result = {"settings": vars(args), "torch": torch.__version__}
    for name, pairs in times.items():
        forward, backward = (statistics.median(p[i] for p in pairs) for i in (0, 1))
        result[name] = {"forward_s": round(forward, 4), "backward_s": round(backward, 4)}
        print(f"{name:<10} forward {forward:.3f} s, backward {backward:.3f} s (median of {args.repeats})")
    ratio = (result["ours"]["forward_s"] + result["ours"]["backward_s"]) / \
        (result["reference"]["forward_s"] + result["reference"]["backward_s"])
    result["ratio_ours_over_reference"] = round(ratio, 3)
    print(f"ours / reference (forward + backward): {ratio:.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
