"""The network's serving forward (``CNNLSTM.infer``) computes what ``forward`` does."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model.common.artifact import ArchitectureConfig
from model.common.features import NUM_FEATURES, WINDOW
from model.network import CNNLSTM, build_network


def _network(kernel_size: int = 5) -> CNNLSTM:
    """A seeded network whose BatchNorm statistics are not the identity, so that a
    serving path that skipped or misapplied them would show."""
    torch.manual_seed(0)
    arch = ArchitectureConfig(
        type="cnn_lstm",
        num_features=NUM_FEATURES,
        window=WINDOW,
        conv_channels=16,
        kernel_size=kernel_size,
        conv_layers=2,
        lstm_hidden=32,
        lstm_layers=2,
        head_hidden=16,
        dropout=0.1,
    )
    net = build_network(arch)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.running_mean.uniform_(-1.0, 1.0)
            module.running_var.uniform_(0.05, 0.2)
            module.weight.data.uniform_(1.0, 3.0)
            module.bias.data.uniform_(-0.5, 0.5)
    return net


@pytest.mark.parametrize("rows", [1, 3, 32])
@pytest.mark.parametrize("kernel_size", [5, 4])
def test_infer_equals_forward_on_the_cpu_in_fp32(rows: int, kernel_size: int) -> None:
    net = _network(kernel_size)
    x = torch.randn(rows, WINDOW, NUM_FEATURES)
    with torch.inference_mode():
        torch.testing.assert_close(net.infer(x), net(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rows", [1, 32])
def test_infer_equals_forward_under_bf16_autocast(rows: int) -> None:
    net = _network()
    x = torch.randn(rows, WINDOW, NUM_FEATURES)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        served, reference = net.infer(x).float(), net(x).float()
    # The same bf16 operations on the same values (identical on the demo model, session 27);
    # the margin is for a kernel that accumulates in another order.
    torch.testing.assert_close(served, reference, rtol=0, atol=1e-3)


def test_infer_in_training_mode_is_forward() -> None:
    """Training keeps the modules' own path: dropout draws and BatchNorm's running
    statistics move exactly as in ``forward``."""
    net, twin = _network().train(), _network().train()
    x = torch.randn(8, WINDOW, NUM_FEATURES)
    torch.manual_seed(1)
    served = net.infer(x)
    torch.manual_seed(1)
    reference = twin(x)
    torch.testing.assert_close(served, reference, rtol=0, atol=0)
    for a, b in zip(net.modules(), twin.modules(), strict=True):
        if isinstance(a, nn.BatchNorm1d):
            assert isinstance(b, nn.BatchNorm1d)
            torch.testing.assert_close(a.running_mean, b.running_mean, rtol=0, atol=0)


def test_infer_under_bf16_casts_the_lstm_once_and_keeps_the_state_dict() -> None:
    net = _network()
    keys = set(net.state_dict())
    x = torch.randn(4, WINDOW, NUM_FEATURES)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        first = net.infer(x)
        second = net.infer(x)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert {p.dtype for p in net.lstm.parameters()} == {torch.float32}  # the model's own
    assert set(net.state_dict()) == keys  # the cast copy is not part of the artifact


def test_a_weight_change_in_training_reaches_the_next_bf16_infer() -> None:
    """The cast LSTM is dropped when the network goes back to training: what ``infer``
    computes after new weights is what ``forward`` computes, never the old weights."""
    net = _network()
    x = torch.randn(8, WINDOW, NUM_FEATURES)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        before = net.infer(x).float()
    net.train()
    with torch.no_grad():
        for p in net.lstm.parameters():
            p.mul_(-1.5)
    net.eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        after, reference = net.infer(x).float(), net(x).float()
    torch.testing.assert_close(after, reference, rtol=0, atol=1e-3)
    assert not torch.allclose(after, before, atol=1e-2)
