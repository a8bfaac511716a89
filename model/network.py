"""The reference CNN+LSTM; hyper-parameters come from the manifest."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from model.common.artifact import ArchitectureConfig


class CNNLSTM(nn.Module):
    """``[B, T, F]`` normalised features -> ``[B, 2]``: (scaled expected return, up logit).

    The convolutions pick up local bar patterns, the LSTM integrates them over the
    window, and the head reads the last time step, which has seen the whole window.
    """

    def __init__(self, arch: ArchitectureConfig) -> None:
        super().__init__()
        self.arch = arch
        layers: list[nn.Module] = []
        channels = arch.num_features
        for _ in range(arch.conv_layers):
            layers += [
                # Centred padding keeps T unchanged; BatchNorm makes the bias redundant.
                nn.Conv1d(
                    channels,
                    arch.conv_channels,
                    arch.kernel_size,
                    padding=arch.kernel_size // 2,
                    bias=False,
                ),
                nn.BatchNorm1d(arch.conv_channels),
                nn.GELU(),
            ]
            channels = arch.conv_channels
        self.conv = nn.Sequential(*layers)
        self.lstm = nn.LSTM(
            input_size=channels,
            hidden_size=arch.lstm_hidden,
            num_layers=arch.lstm_layers,
            batch_first=True,
            dropout=arch.dropout if arch.lstm_layers > 1 else 0.0,
        )
        self.head = nn.Sequential(
            nn.Linear(arch.lstm_hidden, arch.head_hidden),
            nn.GELU(),
            nn.Dropout(arch.dropout),
            nn.Linear(arch.head_hidden, 2),
        )
        self._cast_lstms: dict[torch.dtype, nn.LSTM] = {}  # see _lstm_in

    def train(self, mode: bool = True) -> CNNLSTM:
        self._cast_lstms.clear()  # weights are about to change: the casts would go stale
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Conv1d wants channels first; the LSTM wants time first (after batch).
        z = self.conv(x.transpose(1, 2)).transpose(1, 2)
        out, _ = self.lstm(z)
        return self.head(out[:, -1, :])

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` for serving. On the CPU in eval mode the convolutions run as 2-D
        ones over ``[B, F, 1, T]`` in channels-last memory, which is ``x``'s own memory, and
        the LSTM reads their output as it lies: no copy on the way in or out. There
        :meth:`forward`'s transposes cost a copy and a oneDNN layout reorder around each
        convolution. Same arithmetic (bit-identical under bf16 autocast, within 1e-7 in
        fp32); 6-10 % faster under bf16 and 0-5 % in fp32 at 1-32 rows (BENCHMARKS.md,
        session 27). Under bf16 autocast the LSTM runs on a copy of its weights cast once
        (:meth:`_lstm_in`). Training and CUDA use :meth:`forward`, and so does an ONNX
        export."""
        if self.training or x.device.type != "cpu":
            return self(x)
        pad = (0, self.arch.kernel_size // 2)  # as built in __init__
        z = x.unsqueeze(1).permute(0, 3, 1, 2)  # [B, F, 1, T], channels-last: a view of x
        for layer in self.conv:
            if isinstance(layer, nn.Conv1d):
                z = F.conv2d(z, layer.weight.unsqueeze(2), layer.bias, padding=pad)
            elif isinstance(layer, nn.BatchNorm1d):
                stats = (layer.running_mean, layer.running_var)
                z = F.batch_norm(z, *stats, layer.weight, layer.bias, eps=layer.eps)
            else:
                z = layer(z)
        z = z.permute(0, 2, 3, 1).squeeze(1)  # [B, T, C]: contiguous as it lies
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
        out, _ = self._lstm_in(dtype)(z if dtype is None else z.to(dtype))
        return self.head(out[:, -1, :])

    def _lstm_in(self, dtype: torch.dtype | None) -> nn.LSTM:
        """The LSTM with its weights in ``dtype``, cast once (None: the LSTM itself).
        Autocast would cast every weight again on every forward; the copy computes the
        same (bit-identical) and a 32-row bf16 forward took ~5 % less (session 27). Not a
        submodule: no state dict, no ``.to()``; ``train()`` drops it, and serving never
        changes weights after load."""
        if dtype is None:
            return self.lstm
        lstm = self._cast_lstms.get(dtype)
        if lstm is None:
            lstm = self._cast_lstms[dtype] = copy.deepcopy(self.lstm).to(dtype)
        return lstm


def build_network(arch: ArchitectureConfig) -> CNNLSTM:
    """A freshly initialised network in eval mode (serving is the common case)."""
    return CNNLSTM(arch).eval()
