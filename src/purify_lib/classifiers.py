"""The classifiers the five papers attack and defend, as plain ``nn.Module``\\ s returning logits.

Inputs are float N×C×H×W images in [0, 1], fed to the first layer as they are (no model here normalises;
the ones with batch norm do not need it). ``forward`` checks the input's rank, dtype, channels and size
(cheaply, with :func:`purify_lib.checks.check_image_shape`) but not its values: a range check on every
forward would cost a reduction over the batch, and attacks call ``forward`` thousands of times.

Build them with :func:`build`, which takes channels, size and classes from the dataset::

    model = build("lenet", "mnist")            # on get_device()
    model = build("allcnn", "cifar10", dropout_at_test=True)

=============  ===============================================================  ==============
name           source                                                           dropout
=============  ===============================================================  ==============
``lenet``      GanDef (paper 003) table 3, MNIST                                 none
``allcnn``     GanDef table 4, CIFAR-10 (He init)                                0.2, 0.5, 0.5
``defgan_a``   AE-GAN+rs (paper 002) table 5, classifier A (Defense-GAN's)       0.25, 0.5
``defgan_b``   AE-GAN+rs table 5, substitute B (convolutional)                   0.5
``defgan_c``   AE-GAN+rs table 5, substitute C (fully connected)                 0.5, 0.5
``convnet``    APE-GAN (paper 000) table 1, target "ConvNet" (Keras CIFAR-10)    0.25, 0.25, 0.5
``convnet1-3`` APE-GAN table 1, substitutes ConvNet1, ConvNet2, ConvNet3         none
``mnist_cnn``  APE-GAN++ (paper 001) fig. 3 (lost): the authors' code            0.25, 0.5
``cifar_cnn``  APE-GAN++ fig. 3 (lost): the authors' code                        none
``lenet5``     LeCun et al. 1998 (APE-GAN++'s "LeNet", its ref. 31)              none
``resnet18``   He et al. 2016, small-image variant                               none
``vgg16``      Simonyan & Zisserman 2015, small-image variant with batch norm    none
``densenet``   Huang et al. 2017, DenseNet-BC-40 (k = 12)                        none
=============  ===============================================================  ==============

Every model builds for every dataset shape (the layer tables are written for 28×28×1 or 32×32×3; the
flattened size is computed for the size at hand).

Dropout follows ``train()``/``eval()``. ``dropout_at_test=True`` keeps it on in eval mode too. The public
PyTorch APE-GAN code did this by accident (``F.dropout`` without the training flag), and APE-GAN++
inherited it: the classifier becomes randomised, gradients and predictions become noisy, and an attack
that does not average over the randomness (EOT) looks weaker than it is. The option exists so a chapter
can show that effect; it is off by default and is an error on a model without dropout.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from purify_lib.checks import check_image_shape
from purify_lib.data import DatasetInfo, info
from purify_lib.runtime import get_device


class Dropout(nn.Dropout):
    """``nn.Dropout`` that can stay active in eval mode (``at_test=True``); see the module docstring."""

    def __init__(self, p: float, at_test: bool = False) -> None:
        super().__init__(p)
        self.at_test = at_test

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, training=self.training or self.at_test)

    def extra_repr(self) -> str:
        return f"p={self.p}, at_test={self.at_test}"


class Classifier(nn.Module):
    """Base class: an image classifier that checks its input's shape and returns logits.

    Subclasses set ``self.body`` (any module mapping the images to logits).
    """

    def __init__(self, channels: int, size: int, num_classes: int) -> None:
        super().__init__()
        self.channels, self.size, self.num_classes = channels, size, num_classes
        self.body: nn.Module = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        check_image_shape(x, "x", channels=self.channels, size=(self.size, self.size))
        return self.body(x)

    def set_dropout_at_test(self, on: bool) -> None:
        """Keep dropout active in eval mode (``on=True``) or not; ``ValueError`` if there is none."""
        layers = [m for m in self.modules() if isinstance(m, Dropout)]
        if on and not layers:
            raise ValueError(f"dropout_at_test: {type(self).__name__} has no dropout layers")
        for m in layers:
            m.at_test = on


def _flat_size(features: nn.Module, channels: int, size: int) -> int:
    """How many numbers ``features`` produces for one image (a dry run on zeros)."""
    with torch.no_grad():
        return features(torch.zeros(1, channels, size, size)).numel()


# --- GanDef (paper 003), appendix tables 3 and 4 -----------------------------------------------------

class LeNet(Classifier):
    """GanDef table 3: conv5×5×32 (same) → maxpool 2 → ReLU → conv5×5×64 (same) → maxpool 2 → ReLU →
    dense 1024 → ReLU → dense 10. "Default" initialisation is read as the framework's: PyTorch's here."""

    def __init__(self, channels: int = 1, size: int = 28, num_classes: int = 10) -> None:
        super().__init__(channels, size, num_classes)
        features = nn.Sequential(
            nn.Conv2d(channels, 32, 5, padding=2), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(32, 64, 5, padding=2), nn.MaxPool2d(2), nn.ReLU())
        flat = _flat_size(features, channels, size)
        self.body = nn.Sequential(features, nn.Flatten(), nn.Linear(flat, 1024), nn.ReLU(),
                                  nn.Linear(1024, num_classes))


class AllCNN(Classifier):
    """GanDef table 4 (Springenberg et al.'s All-CNN with max pooling): dropout 0.2 on the input, three
    conv3×3×96, maxpool, dropout 0.5, three conv3×3×192, maxpool, dropout 0.5, conv3×3×192 (valid),
    two conv1×1×192, global average pooling, dense. He-normal initialisation on the convolutions (zero
    biases); the dense layer keeps PyTorch's default."""

    def __init__(self, channels: int = 3, size: int = 32, num_classes: int = 10,
                 dropout_at_test: bool = False) -> None:
        super().__init__(channels, size, num_classes)

        def conv(cin: int, cout: int, k: int, pad: int) -> list[nn.Module]:
            layer = nn.Conv2d(cin, cout, k, padding=pad)
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
            return [layer, nn.ReLU()]

        self.body = nn.Sequential(
            Dropout(0.2),
            *conv(channels, 96, 3, 1), *conv(96, 96, 3, 1), *conv(96, 96, 3, 1),
            nn.MaxPool2d(2), Dropout(0.5),
            *conv(96, 192, 3, 1), *conv(192, 192, 3, 1), *conv(192, 192, 3, 1),
            nn.MaxPool2d(2), Dropout(0.5),
            *conv(192, 192, 3, 0), *conv(192, 192, 1, 0), *conv(192, 192, 1, 0),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(192, num_classes))
        self.set_dropout_at_test(dropout_at_test)


# --- AE-GAN+rs (paper 002), table 5: Defense-GAN's classifier A and substitutes B, C -------------------

class DefGanA(Classifier):
    """Classifier A: Conv(64, 5×5, stride 1) → ReLU → Conv(64, 5×5, stride 2) → ReLU → Dropout(0.25) →
    FC(128) → ReLU → Dropout(0.5) → FC(10). The table gives no padding: we use "same" for the first
    convolution and "valid" for the second, the convention of the cleverhans models Defense-GAN built on
    (28×28 → 28×28 → 12×12). The table's final softmax is left out: models return logits."""

    def __init__(self, channels: int = 1, size: int = 28, num_classes: int = 10,
                 dropout_at_test: bool = False) -> None:
        super().__init__(channels, size, num_classes)
        features = nn.Sequential(nn.Conv2d(channels, 64, 5, padding=2), nn.ReLU(),
                                 nn.Conv2d(64, 64, 5, stride=2), nn.ReLU())
        flat = _flat_size(features, channels, size)
        self.body = nn.Sequential(features, Dropout(0.25), nn.Flatten(), nn.Linear(flat, 128), nn.ReLU(),
                                  Dropout(0.5), nn.Linear(128, num_classes))
        self.set_dropout_at_test(dropout_at_test)


class DefGanB(Classifier):
    """Substitute B: Conv(64, 8×8, 2) → ReLU → Conv(128, 6×6, 2) → ReLU → Conv(128, 5×5, 1) → ReLU →
    Dropout(0.5) → FC(10). Padding (not in the table): "same" for the first convolution, "valid" after,
    as in cleverhans (28×28 → 14×14 → 5×5 → 1×1)."""

    def __init__(self, channels: int = 1, size: int = 28, num_classes: int = 10,
                 dropout_at_test: bool = False) -> None:
        super().__init__(channels, size, num_classes)
        features = nn.Sequential(nn.Conv2d(channels, 64, 8, stride=2, padding=3), nn.ReLU(),
                                 nn.Conv2d(64, 128, 6, stride=2), nn.ReLU(),
                                 nn.Conv2d(128, 128, 5), nn.ReLU())
        flat = _flat_size(features, channels, size)
        self.body = nn.Sequential(features, Dropout(0.5), nn.Flatten(), nn.Linear(flat, num_classes))
        self.set_dropout_at_test(dropout_at_test)


class DefGanC(Classifier):
    """Substitute C (fully connected): FC(200) → ReLU → Dropout(0.5) → FC(200) → ReLU → Dropout(0.5) →
    FC(10)."""

    def __init__(self, channels: int = 1, size: int = 28, num_classes: int = 10,
                 dropout_at_test: bool = False) -> None:
        super().__init__(channels, size, num_classes)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, 200), nn.ReLU(),
                                  Dropout(0.5),
                                  nn.Linear(200, 200), nn.ReLU(), Dropout(0.5), nn.Linear(200, num_classes))
        self.set_dropout_at_test(dropout_at_test)


# --- APE-GAN (paper 000), table 1: the CIFAR-10 ConvNet and its substitutes ---------------------------

def _convs(channels: int, spec: list[int | str], valid_second: bool = False) -> nn.Sequential:
    """3×3 convolutions with ReLU from a spec like ``[32, 32, "M", 64, "M"]`` ("M" = maxpool 2).

    ``valid_second``: the second convolution of each pair uses no padding (the Keras example's layout).
    """
    layers: list[nn.Module] = []
    cin, in_block = channels, 0
    for item in spec:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
            in_block = 0
            continue
        in_block += 1
        pad = 0 if (valid_second and in_block == 2) else 1
        layers += [nn.Conv2d(cin, int(item), 3, padding=pad), nn.ReLU()]
        cin = int(item)
    return nn.Sequential(*layers)


class ConvNet(Classifier):
    """APE-GAN's target "ConvNet", which the paper calls the original Keras CIFAR-10 example: conv3-32,
    conv3-32, maxpool, conv3-64, conv3-64, maxpool, FC-512, FC-10. Following that Keras example (which the
    table abbreviates: it shows neither ReLU nor dropout) the second convolution of each pair is "valid",
    and dropout 0.25 follows each pooling and 0.5 the FC-512 layer."""

    def __init__(self, channels: int = 3, size: int = 32, num_classes: int = 10,
                 dropout_at_test: bool = False) -> None:
        super().__init__(channels, size, num_classes)
        block1 = nn.Sequential(_convs(channels, [32, 32, "M"], valid_second=True), Dropout(0.25))
        block2 = nn.Sequential(_convs(32, [64, 64, "M"], valid_second=True), Dropout(0.25))
        features = nn.Sequential(block1, block2)
        flat = _flat_size(features, channels, size)
        self.body = nn.Sequential(features, nn.Flatten(), nn.Linear(flat, 512), nn.ReLU(), Dropout(0.5),
                                  nn.Linear(512, num_classes))
        self.set_dropout_at_test(dropout_at_test)


_SUBSTITUTES: dict[str, tuple[list[int | str], list[int]]] = {
    # Table 1 columns. The extracted table prints each "maxpool" row and the "FC-10" row only once, under
    # ConvNet; we read them as cells spanning all four columns (every column needs its FC-10).
    "convnet1": ([32, 32, "M", 64, 64, "M", 128, 128, "M"], [1024]),
    "convnet2": ([32, "M", 64, "M", 128, "M"], [1024]),
    "convnet3": ([32, 32, "M", 64, 64, "M", 128, "M"], [512, 4096]),
}


class SubstituteConvNet(Classifier):
    """APE-GAN's substitutes ConvNet1–3 (table 1): 3×3 "same" convolutions with ReLU, 2×2 max pooling,
    fully connected ReLU layers, FC-10. No dropout (the table shows none)."""

    def __init__(self, variant: str, channels: int = 3, size: int = 32, num_classes: int = 10) -> None:
        super().__init__(channels, size, num_classes)
        if variant not in _SUBSTITUTES:
            raise ValueError(f"variant: expected one of {', '.join(_SUBSTITUTES)}, got {variant!r}")
        spec, widths = _SUBSTITUTES[variant]
        features = _convs(channels, spec)
        head: list[nn.Module] = []
        cin = _flat_size(features, channels, size)
        for width in widths:
            head += [nn.Linear(cin, width), nn.ReLU()]
            cin = width
        self.body = nn.Sequential(features, nn.Flatten(), *head, nn.Linear(cin, num_classes))


# --- APE-GAN++ (paper 001), fig. 3: MNIST-CNN, CIFAR-CNN, and LeNet-5 -------------------------------

class MnistCNN(Classifier):
    """APE-GAN++'s MNIST-CNN. The paper's fig. 3 was lost in extraction; this is the network of the authors'
    public code (Afreadyang/APE-GAN-Plus-Plus, ``models.py``): conv3-32 (valid) → ReLU → conv3-64 (valid) →
    ReLU → maxpool 6 → dropout 0.25 → FC-128 (no activation: the code has none) → dropout 0.5 → FC-10.

    On 28×28 that is 28 → 26 → 24 → 4, so the first dense layer sees 4·4·64 = 1,024 numbers. The code drops
    whole channels of the pooled maps (``dropout2d``) where we drop single values, and it calls dropout
    without the training flag, i.e. **always on**, at test and attack time too: ``dropout_at_test=True``
    reproduces that (chapter 3 shows what it does to table II); the default is off in eval mode.
    """

    def __init__(self, channels: int = 1, size: int = 28, num_classes: int = 10,
                 dropout_at_test: bool = False) -> None:
        super().__init__(channels, size, num_classes)
        features = nn.Sequential(nn.Conv2d(channels, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(),
                                 nn.MaxPool2d(6))
        flat = _flat_size(features, channels, size)
        self.body = nn.Sequential(features, Dropout(0.25), nn.Flatten(), nn.Linear(flat, 128), Dropout(0.5),
                                  nn.Linear(128, num_classes))
        self.set_dropout_at_test(dropout_at_test)


class CifarCNN(Classifier):
    """APE-GAN++'s CIFAR-CNN, from the authors' code (fig. 3 lost): [conv3-64 (same) → BN → ReLU] ×2 →
    maxpool 4 → [conv3-128 → BN → ReLU] ×2 → maxpool 4 → FC-256 → ReLU → FC-256 → ReLU → FC-10. No dropout.
    On 32×32 the first dense layer sees 2·2·128 = 512 numbers."""

    def __init__(self, channels: int = 3, size: int = 32, num_classes: int = 10) -> None:
        super().__init__(channels, size, num_classes)

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

        features = nn.Sequential(*block(channels, 64), *block(64, 64), nn.MaxPool2d(4),
                                 *block(64, 128), *block(128, 128), nn.MaxPool2d(4))
        flat = _flat_size(features, channels, size)
        self.body = nn.Sequential(features, nn.Flatten(), nn.Linear(flat, 256), nn.ReLU(),
                                  nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, num_classes))


class LeNet5(Classifier):
    """LeNet-5 (LeCun et al. 1998), APE-GAN++'s "LeNet" (its ref. 31; the registry's ``lenet`` is GanDef's
    larger net): conv5-6 → ReLU → maxpool 2 → conv5-16 (valid) → ReLU → maxpool 2 → FC-120 → ReLU → FC-84 →
    ReLU → FC-10. The first convolution pads by 2, so a 28×28 digit is handled like the original 32×32 input
    (28 → 28 → 14 → 10 → 5: the dense layers see 5·5·16 = 400 numbers, 61,706 parameters in all). ReLU and
    max pooling replace the 1998 net's scaled tanh and trainable subsampling, as in every modern port."""

    def __init__(self, channels: int = 1, size: int = 28, num_classes: int = 10) -> None:
        super().__init__(channels, size, num_classes)
        features = nn.Sequential(nn.Conv2d(channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))
        flat = _flat_size(features, channels, size)
        self.body = nn.Sequential(features, nn.Flatten(), nn.Linear(flat, 120), nn.ReLU(), nn.Linear(120, 84),
                                  nn.ReLU(), nn.Linear(84, num_classes))


# --- standard deep models, adapted to 28×28 and 32×32 --------------------------------------------------

class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(Classifier):
    """ResNet-18 (basic blocks 2-2-2-2) for small images: a 3×3 stride-1 stem without the initial max
    pooling, stages of ``width``·(1, 2, 4, 8) channels (64 → 512 by default), global average pooling."""

    def __init__(self, channels: int, size: int, num_classes: int, width: int = 64) -> None:
        super().__init__(channels, size, num_classes)
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(width),
                                   nn.ReLU()]
        cin = width
        for stage, mult in enumerate((1, 2, 4, 8)):
            cout = width * mult
            layers += [_BasicBlock(cin, cout, 1 if stage == 0 else 2), _BasicBlock(cout, cout, 1)]
            cin = cout
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))


_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG16(Classifier):
    """VGG-16 for small images: the 13 3×3 convolutions of configuration D, each with batch norm and ReLU,
    five 2×2 max poolings with ``ceil_mode`` (so 28×28 ends at 1×1 like 32×32), one linear layer (the usual
    CIFAR variant, instead of the ImageNet net's three 4096-wide layers). ``width`` scales the channels
    (64 by default)."""

    def __init__(self, channels: int, size: int, num_classes: int, width: int = 64) -> None:
        super().__init__(channels, size, num_classes)
        layers: list[nn.Module] = []
        cin = channels
        for item in _VGG16:
            if item == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
                continue
            cout = int(item) * width // 64
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            cin = cout
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))


class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, 4 * growth, 1, bias=False),
                                 nn.BatchNorm2d(4 * growth), nn.ReLU(),
                                 nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.net(x)], 1)


class DenseNet(Classifier):
    """DenseNet-BC (Huang et al. 2017, the CIFAR variant): a 3×3 stem of 2k channels, three dense blocks of
    (depth − 4)/6 bottleneck layers (BN-ReLU-conv1×1 to 4k, BN-ReLU-conv3×3 to k), transitions with
    compression 0.5 and 2×2 average pooling, BN-ReLU, global average pooling. Defaults depth 40, growth
    k = 12 (DenseNet-BC-40, about 0.18 M parameters): small enough for a CPU."""

    def __init__(self, channels: int, size: int, num_classes: int, depth: int = 40, growth: int = 12) -> None:
        super().__init__(channels, size, num_classes)
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth: expected 6n + 4 with n ≥ 1 (e.g. 40, 100), got {depth}")
        per_block = (depth - 4) // 6
        cin = 2 * growth
        layers: list[nn.Module] = [nn.Conv2d(channels, cin, 3, padding=1, bias=False)]
        for block in range(3):
            for _ in range(per_block):
                layers.append(_DenseLayer(cin, growth))
                cin += growth
            if block < 2:
                cout = cin // 2
                layers += [nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False),
                           nn.AvgPool2d(2)]
                cin = cout
        self.body = nn.Sequential(*layers, nn.BatchNorm2d(cin), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(),
                                  nn.Linear(cin, num_classes))


# --- registry ----------------------------------------------------------------------------------------

Builder = Callable[..., Classifier]

REGISTRY: dict[str, Builder] = {
    "lenet": LeNet,
    "allcnn": AllCNN,
    "defgan_a": DefGanA,
    "defgan_b": DefGanB,
    "defgan_c": DefGanC,
    "convnet": ConvNet,
    "convnet1": lambda c, s, k, **o: SubstituteConvNet("convnet1", c, s, k, **o),
    "convnet2": lambda c, s, k, **o: SubstituteConvNet("convnet2", c, s, k, **o),
    "convnet3": lambda c, s, k, **o: SubstituteConvNet("convnet3", c, s, k, **o),
    "mnist_cnn": MnistCNN,
    "cifar_cnn": CifarCNN,
    "lenet5": LeNet5,
    "resnet18": ResNet18,
    "vgg16": VGG16,
    "densenet": DenseNet,
}
NAMES: tuple[str, ...] = tuple(REGISTRY)


def build(name: str, dataset: str | DatasetInfo, *, device: str | torch.device | None = None,
          **options: object) -> Classifier:
    """Build classifier ``name`` for ``dataset``'s channels, image size and classes.

    Args:
        name: one of :data:`NAMES`.
        dataset: a dataset name (see :func:`purify_lib.data.info`) or its :class:`DatasetInfo`.
        device: where to put the model (default :func:`purify_lib.profiles.get_device`).
        **options: model options, e.g. ``dropout_at_test=True`` (models with dropout), ``width`` (resnet18,
            vgg16), ``depth`` and ``growth`` (densenet). An option the model lacks is a ``ValueError``.

    Returns:
        The freshly initialised model, in train mode, on ``device``.
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown classifier {name!r}: expected one of {', '.join(NAMES)}")
    ds = dataset if isinstance(dataset, DatasetInfo) else info(dataset)
    try:
        model = REGISTRY[name](ds.channels, ds.size, ds.num_classes, **options)
    except TypeError as err:
        raise ValueError(f"{name}: unsupported option(s) {sorted(options)} ({err})") from None
    return model.to(device if device is not None else get_device())
