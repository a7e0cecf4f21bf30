#!/usr/bin/env python3
"""Generate the example model files in examples/ (dev only: needs torch, safetensors).

Run:  python3 examples/make_examples.py

A small CNN + MLP image classifier (1x16x16 inputs, 10 classes):

    features.conv1  Conv2d(1, 8, 3, padding=1)    weight [8,1,3,3], bias [8]
    features.bn1    BatchNorm2d(8)                weight/bias/running_mean/running_var [8],
                                                  num_batches_tracked (int64, 0-d)
    features.conv2  Conv2d(8, 16, 3, padding=1)   weight [16,8,3,3], bias [16]
    features.bn2    BatchNorm2d(16)
    head.fc1        Linear(256, 64)               weight [64,256], bias [64]
    head.fc2        Linear(64, 10)                weight [10,64], bias [10]

Files written (deterministic: fixed seeds, single-threaded torch; idempotent):

base.safetensors / base.pt
    "Pretrained" model: 40 Adam steps (lr 3e-3) on a synthetic task
    (class-specific 16x16 templates + noise).
finetuned.safetensors / finetuned.pt
    base fine-tuned for 15 Adam steps (lr 1e-3) on a different synthetic task
    with everything frozen except the last two layers (head.fc1, head.fc2); the
    frozen backbone runs in eval mode, so its BatchNorm running statistics do
    not move either.  Exactly the 4 head.fc* tensors differ from base.
fp16.safetensors
    base with every floating-point tensor cast to float16
    (num_batches_tracked stays int64).
wider.safetensors
    A wider variant: head.fc1 [64,256] -> [96,256] and head.fc2 [10,64] ->
    [10,96] (reshaped layers), plus an added LayerNorm head.norm (weight/bias
    [96]); the features.* tensors are copied unchanged from base.

.safetensors files carry __metadata__ {"format": "pt"} (as transformers writes);
.pt files are torch.save(state_dict) in the default zip format.
"""

from __future__ import annotations

import json
import os
import struct
from collections import OrderedDict

import torch
import torch.nn as nn
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUTPUTS = ["base.safetensors", "base.pt", "finetuned.safetensors", "finetuned.pt",
           "fp16.safetensors", "wider.safetensors"]

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


class Net(nn.Module):
    def __init__(self, hidden: int = 64, norm: bool = False):
        super().__init__()
        self.features = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(1, 8, 3, padding=1), bn1=nn.BatchNorm2d(8), relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(8, 16, 3, padding=1), bn2=nn.BatchNorm2d(16), relu2=nn.ReLU(),
            pool2=nn.AdaptiveAvgPool2d(4),
        ))
        layers = OrderedDict(flatten=nn.Flatten(), fc1=nn.Linear(256, hidden))
        if norm:
            layers["norm"] = nn.LayerNorm(hidden)
        layers["relu"] = nn.ReLU()
        layers["fc2"] = nn.Linear(hidden, 10)
        self.head = nn.Sequential(layers)

    def forward(self, x):
        return self.head(self.features(x))


def synthetic(seed: int, n: int = 128):
    g = torch.Generator().manual_seed(seed)
    templates = torch.randn(10, 1, 16, 16, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    x = templates[y] + 0.5 * torch.randn(n, 1, 16, 16, generator=g)
    return x, y


def train(model, params, x, y, steps, lr, freeze_backbone=False):
    opt = torch.optim.Adam(params, lr=lr)
    model.train()
    if freeze_backbone:
        model.features.eval()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()


def sd_of(model):
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def st_save(sd, name):
    path = os.path.join(HERE, name)
    save_file(sd, path, metadata={"format": "pt"})
    # single metadata key -> header bytes are already deterministic
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        json.loads(f.read(n))


def main():
    for name in OUTPUTS:
        path = os.path.join(HERE, name)
        if os.path.exists(path):
            os.remove(path)

    torch.manual_seed(1)
    model = Net()
    x, y = synthetic(2)
    train(model, model.parameters(), x, y, steps=40, lr=3e-3)
    base = sd_of(model)

    for p in model.features.parameters():
        p.requires_grad_(False)
    x2, y2 = synthetic(3)
    train(model, list(model.head.parameters()), x2, y2, steps=15, lr=1e-3, freeze_backbone=True)
    finetuned = sd_of(model)

    fp16 = {k: (v.half() if v.is_floating_point() else v.clone()) for k, v in base.items()}

    torch.manual_seed(4)
    wide = Net(hidden=96, norm=True)
    wide.load_state_dict({k: v for k, v in base.items() if k.startswith("features.")}, strict=False)
    wider = sd_of(wide)

    st_save(base, "base.safetensors")
    st_save(finetuned, "finetuned.safetensors")
    st_save(fp16, "fp16.safetensors")
    st_save(wider, "wider.safetensors")
    torch.save(base, os.path.join(HERE, "base.pt"))
    torch.save(finetuned, os.path.join(HERE, "finetuned.pt"))

    changed = [k for k in base if not torch.equal(base[k], finetuned[k])]
    assert changed == ["head.fc1.weight", "head.fc1.bias", "head.fc2.weight", "head.fc2.bias"], changed
    for name in OUTPUTS:
        print(f"{os.path.getsize(os.path.join(HERE, name)):8d}  examples/{name}")
    print("finetuned vs base changed:", changed)


if __name__ == "__main__":
    main()
