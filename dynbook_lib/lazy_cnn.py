"""Full profile of the lazy-training chapter: VGG-11 on CIFAR-10 trained as ``alpha (f(w) - f(w0))``.

Chizat, Oyallon & Bach (2019, Sec. 5) train VGG-11 and ResNet-18 on CIFAR-10 with the square loss on one-hot targets,
scaling the centred model by ``alpha`` and the step by ``1/alpha^2``, and see the test accuracy fall as ``alpha``
grows (the network becomes its linearisation). Here: VGG-11 without batch normalisation (batch statistics would make
``f(w0)`` depend on the batch), SGD with momentum, float64 for ``alpha > 100`` (in float32 the difference
``f(w) - f(w0)`` of a very lazy model is lost to rounding, as the paper notes).

Without batch norm, PyTorch's default init (uniform with variance ``1 / (3 fan_in)``) loses about a factor 1.6 of
activation scale per ReLU layer: through VGG-11's eight convolutions the RMS falls by about 60 times, and the network
at init is nearly constant across inputs, which is not a standard network at ``alpha = 1``. :func:`vgg11` therefore
draws He's init (normal, variance ``2 / fan_in`` before a ReLU, ``1 / fan_in`` for the output layer, zero biases),
under which every layer keeps the scale of its input; :func:`activation_rms` measures it.

CIFAR-10 comes from :func:`dynbook_lib.data.downloads.cifar10_tensors` (no torchvision needed).
"""

from __future__ import annotations

import torch
from torch import nn

from dynbook_lib.core.progress import progress
from dynbook_lib.data.downloads import cifar10_tensors
from dynbook_lib.lazy import Rescaled
from dynbook_lib.models import seeded

__all__ = ["activation_rms", "cifar10_tensors", "he_init_", "train_scaled_cnn", "vgg11"]
VGG11_LAYOUT = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def vgg11_features(*, width: float = 1.0, batchnorm: bool = False) -> tuple[list[nn.Module], int]:
    """VGG-11's convolutional layers for 32 x 32 RGB inputs (``Conv - [BatchNorm] - ReLU``, max-pooling as in the
    layout), with ``width`` scaling the channels; returns the layers and the number of output channels (the spatial
    size is 1 x 1 at the end). Parameters are drawn from torch's global generator: seed around it."""
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG11_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            out = max(1, int(item * width))
            layers += [nn.Conv2d(channels, out, 3, padding=1)] + ([nn.BatchNorm2d(out)] if batchnorm else [])
            layers.append(nn.ReLU())
            channels = out
    return layers, channels


def he_init_(model: nn.Module) -> nn.Module:
    """He et al.'s (2015) init in place: every ``Conv2d`` / ``Linear`` weight normal with variance ``2 / fan_in``,
    except the last layer's (``1 / fan_in``: no ReLU follows it); biases zero. Draws from torch's global generator."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for i, layer in enumerate(layers):
        gain = 1.0 if i == len(layers) - 1 else 2.0
        fan_in = layer.weight[0].numel()
        with torch.no_grad():
            layer.weight.normal_(0.0, (gain / fan_in) ** 0.5)
            if layer.bias is not None:
                layer.bias.zero_()
    return model


def vgg11(num_classes: int = 10, *, width: float = 1.0, seed: int = 0, init: str = "he") -> nn.Sequential:
    """VGG-11 for 32 x 32 inputs (Simonyan & Zisserman 2015, CIFAR variant), no batch norm; ``width`` scales the
    channels (the tests use a thin one). Weights drawn from ``seed`` without touching the global random state.

    ``init="he"`` (default): :func:`he_init_`, under which activations keep their scale through the layers;
    ``init="torch"``: PyTorch's default, under which they shrink by about 60 times (see the module's docstring).
    """
    if init not in ("he", "torch"):
        raise ValueError(f"unknown init {init!r}; expected 'he' or 'torch'")

    def build() -> nn.Sequential:
        layers, channels = vgg11_features(width=width)
        net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels, num_classes))
        return he_init_(net) if init == "he" else net

    return seeded(build, seed)


def activation_rms(model: nn.Sequential, x: torch.Tensor) -> list[float]:
    """Root-mean-square of the activations after each ReLU of a sequential network, and of its output (last entry)."""
    rms = []
    with torch.no_grad():
        for layer in model:
            x = layer(x)
            if isinstance(layer, nn.ReLU):
                rms.append(float(x.pow(2).mean().sqrt()))
        rms.append(float(x.pow(2).mean().sqrt()))
    return rms


def train_scaled_cnn(
    data: dict[str, torch.Tensor],
    alpha: float,
    *,
    epochs: int,
    seed: int,
    device: torch.device | str = "cpu",
    lr: float = 0.01,
    batch_size: int = 128,
    width: float = 1.0,
) -> float:
    """Train ``alpha (f(w) - f(w0))`` (VGG-11) on the square loss to one-hot targets; return the test accuracy.

    The loss is ``(1/2) ||F(x) - onehot(y)||^2`` averaged over the batch, SGD with momentum 0.9 and step
    ``lr / alpha^2``; float64 when ``alpha > 100``.
    """
    dtype = torch.float64 if alpha > 100 else torch.float32
    model = vgg11(10, width=width, seed=seed).to(device=device, dtype=dtype)
    scaled = Rescaled(model, alpha)
    opt = torch.optim.SGD(model.parameters(), lr=lr / alpha**2, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    x_train, y_train = data["x_train"], data["y_train"]

    for _ in progress(range(epochs), desc=f"alpha={alpha:g}", leave=False):
        order = torch.randperm(len(x_train), generator=gen)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            x = x_train[idx].to(device=device, dtype=dtype)
            target = nn.functional.one_hot(y_train[idx], 10).to(device=device, dtype=dtype)
            loss = 0.5 * ((scaled(x) - target) ** 2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(data["x_test"]), 1000):
            x = data["x_test"][start : start + 1000].to(device=device, dtype=dtype)
            correct += int((scaled(x).argmax(1).cpu() == data["y_test"][start : start + 1000]).sum())
    return correct / len(data["x_test"])
