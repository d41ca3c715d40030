"""A user's models-file workspace for tests (a factory module on sys.path, weights for a torchvision, a timm and
a factory entry, labels) and the models file naming them: shared by the models-file and experiments tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

FACTORY = '''
import torch
from torch import nn


class Small(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(4, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes))

    def forward(self, x):
        return self.head(self.features(x))


def build(classes: int = 3) -> nn.Module:
    return Small(classes)


def not_a_module(**kwargs):
    return "a string"
'''


def make_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with a factory module (on sys.path) and good weights for three architectures."""
    package = tmp_path / f"usernets_{tmp_path.name.replace('-', '_')}"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "small.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(3)
    from importlib import import_module

    import timm
    import torchvision

    small = import_module(f"{package.name}.small")
    torch.save(small.build(classes=3).state_dict(), tmp_path / "small.pt")
    torch.save(torchvision.models.get_model("resnet18", weights=None, num_classes=5).state_dict(), tmp_path / "r18.pt")
    torch.save(timm.create_model("test_efficientnet", pretrained=False, num_classes=4).state_dict(), tmp_path / "te.pt")
    (tmp_path / "labels.txt").write_text("cat\ndog\nfox\nowl\neel\n")
    return tmp_path


def good_file(folder: Path) -> str:
    package = f"usernets_{folder.name.replace('-', '_')}"
    return textwrap.dedent(f'''
        [[model]]
        id = "my-resnet"
        title = "ResNet-18 on my 5 classes"
        torchvision = "resnet18"
        kwargs = {{ num_classes = 5 }}
        weights = "r18.pt"
        labels = "labels.txt"
        input = {{ channels = 3, height = 64, width = 64 }}
        resize = 72
        mean = [0.485, 0.456, 0.406]
        std = [0.229, 0.224, 0.225]

        [[model]]
        id = "tiny-timm"
        title = "timm test_efficientnet, 4 classes"
        timm = "test_efficientnet"
        kwargs = {{ num_classes = 4 }}
        weights = "te.pt"
        labels = ["a", "b", "c", "d"]

        [[model]]
        id = "small-factory"
        title = "My small grey CNN"
        factory = "{package}.small:build"
        kwargs = {{ classes = 3 }}
        weights = "small.pt"
        labels = ["zero", "one", "two"]
        input = {{ channels = 1, height = 28, width = 28 }}
        grayscale = true
        mean = [0.5]
        std = [0.5]
    ''')


def write(folder: Path, text: str, name: str = "models.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path
