"""Classifiers: shapes on every dataset shape, the papers' parameter counts, input checks, dropout modes."""
from __future__ import annotations

import pytest
import torch

from purify_lib import classifiers
from purify_lib.data import info

SHAPES = {"mnist": (1, 28), "cifar10": (3, 32)}
WITH_DROPOUT = ("allcnn", "defgan_a", "defgan_b", "defgan_c", "convnet", "mnist_cnn")


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv(cin: int, cout: int, k: int) -> int:
    return k * k * cin * cout + cout


def dense(fan_in: int, fan_out: int) -> int:
    return fan_in * fan_out + fan_out


@pytest.mark.parametrize("dataset", list(SHAPES))
@pytest.mark.parametrize("name", classifiers.NAMES)
def test_every_classifier_gives_logits_for_both_shapes(name: str, dataset: str) -> None:
    channels, size = SHAPES[dataset]
    torch.manual_seed(0)
    model = classifiers.build(name, dataset, device="cpu").eval()
    out = model(torch.rand(2, channels, size, size))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


def test_classes_come_from_the_dataset() -> None:
    model = classifiers.build("defgan_c", "cifar100", device="cpu")
    assert model(torch.rand(3, 3, 32, 32)).shape == (3, 100)
    assert classifiers.build("defgan_c", info("gtsrb"), device="cpu").num_classes == 43


def test_lenet_parameter_count_matches_gandef_table_3() -> None:
    # conv 5×5×32 same, pool, conv 5×5×64 same, pool: 28 → 14 → 7, so the dense layer sees 7·7·64.
    expected = conv(1, 32, 5) + conv(32, 64, 5) + dense(7 * 7 * 64, 1024) + dense(1024, 10)
    assert expected == 3_274_634
    assert n_params(classifiers.build("lenet", "mnist", device="cpu")) == expected


def test_allcnn_parameter_count_matches_gandef_table_4() -> None:
    expected = (conv(3, 96, 3) + 2 * conv(96, 96, 3) + conv(96, 192, 3) + 2 * conv(192, 192, 3)
                + conv(192, 192, 3) + 2 * conv(192, 192, 1) + dense(192, 10))
    assert expected == 1_406_794
    assert n_params(classifiers.build("allcnn", "cifar10", device="cpu")) == expected


def test_defgan_a_parameter_count_matches_table_5() -> None:
    # Conv(64, 5×5, 1) same → 28×28, Conv(64, 5×5, 2) valid → 12×12, FC(128), FC(10).
    expected = conv(1, 64, 5) + conv(64, 64, 5) + dense(12 * 12 * 64, 128) + dense(128, 10)
    assert n_params(classifiers.build("defgan_a", "mnist", device="cpu")) == expected


def test_convnet_follows_the_keras_cifar10_example() -> None:
    # 32 → conv same 32 → conv valid 30 → pool 15 → conv same 15 → conv valid 13 → pool 6: FC-512 sees 6·6·64.
    expected = (conv(3, 32, 3) + conv(32, 32, 3) + conv(32, 64, 3) + conv(64, 64, 3)
                + dense(6 * 6 * 64, 512) + dense(512, 10))
    assert n_params(classifiers.build("convnet", "cifar10", device="cpu")) == expected


def test_mnist_cnn_is_the_apeganpp_code_net() -> None:
    # conv3 valid 28 → 26 → 24, maxpool 6 → 4: FC-128 sees 4·4·64 = 1,024 numbers (the code's
    # Linear(1024, 128)).
    expected = conv(1, 32, 3) + conv(32, 64, 3) + dense(1024, 128) + dense(128, 10)
    assert n_params(classifiers.build("mnist_cnn", "mnist", device="cpu")) == expected == 151_306


def test_cifar_cnn_is_the_apeganpp_code_net() -> None:
    # same-padded convs with batch norm (2 parameters per channel), maxpool 4 twice: 32 → 8 → 2, so FC-256
    # sees 2·2·128 = 512 numbers.
    expected = (conv(3, 64, 3) + conv(64, 64, 3) + conv(64, 128, 3) + conv(128, 128, 3)
                + 2 * (2 * 64 + 2 * 128)
                + dense(512, 256) + dense(256, 256) + dense(256, 10))
    assert n_params(classifiers.build("cifar_cnn", "cifar10", device="cpu")) == expected


def test_lenet5_has_the_classic_parameter_count() -> None:
    expected = conv(1, 6, 5) + conv(6, 16, 5) + dense(400, 120) + dense(120, 84) + dense(84, 10)
    assert n_params(classifiers.build("lenet5", "mnist", device="cpu")) == expected == 61_706


@pytest.mark.parametrize("bad, message", [
    (torch.rand(2, 3, 28, 28), "channels"),
    (torch.rand(2, 1, 32, 32), "size"),
    (torch.rand(1, 28, 28), "4-D"),
    (torch.zeros(2, 1, 28, 28, dtype=torch.uint8), "floating"),
])
def test_wrong_input_shape_raises(bad: torch.Tensor, message: str) -> None:
    model = classifiers.build("defgan_c", "mnist", device="cpu")
    with pytest.raises(ValueError, match=message):
        model(bad)


def test_forward_does_not_check_the_value_range() -> None:
    # Deliberate: a range check would cost a reduction per forward. Entry points check values instead.
    model = classifiers.build("defgan_c", "mnist", device="cpu").eval()
    assert model(torch.full((1, 1, 28, 28), 2.0)).shape == (1, 10)


@pytest.mark.parametrize("name", WITH_DROPOUT)
def test_dropout_follows_the_mode_unless_kept_at_test(name: str) -> None:
    x = torch.rand(4, 1, 28, 28)
    torch.manual_seed(0)
    model = classifiers.build(name, "mnist", device="cpu")
    assert torch.equal(model.eval()(x), model(x))
    assert not torch.equal(model.train()(x), model(x))

    torch.manual_seed(0)
    randomised = classifiers.build(name, "mnist", device="cpu", dropout_at_test=True).eval()
    assert not torch.equal(randomised(x), randomised(x))
    randomised.set_dropout_at_test(False)
    assert torch.equal(randomised(x), model.eval()(x))  # same seed, same weights, dropout now off


@pytest.mark.parametrize("name", sorted(set(classifiers.NAMES) - set(WITH_DROPOUT)))
def test_models_without_dropout_are_deterministic_and_reject_dropout_at_test(name: str) -> None:
    with pytest.raises(ValueError, match="option"):
        classifiers.build(name, "mnist", device="cpu", dropout_at_test=True)
    model = classifiers.build(name, "mnist", device="cpu").eval()
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    with pytest.raises(ValueError, match="no dropout"):
        model.set_dropout_at_test(True)


def test_build_rejects_unknown_names_and_options() -> None:
    with pytest.raises(ValueError, match="lenet"):
        classifiers.build("alexnet", "mnist")
    with pytest.raises(ValueError, match="unknown dataset"):
        classifiers.build("lenet", "imagenet")
    with pytest.raises(ValueError, match="option"):
        classifiers.build("lenet", "mnist", width=8)
    with pytest.raises(ValueError, match="depth"):
        classifiers.build("densenet", "mnist", depth=41)


def test_width_option_scales_resnet_and_vgg() -> None:
    for name in ("resnet18", "vgg16"):
        small = classifiers.build(name, "cifar10", device="cpu", width=16)
        assert n_params(small) < n_params(classifiers.build(name, "cifar10", device="cpu")) / 10
        assert small.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)
