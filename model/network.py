"""The reference CNN+LSTM; hyper-parameters come from the manifest."""

from __future__ import annotations

import torch
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Conv1d wants channels first; the LSTM wants time first (after batch).
        z = self.conv(x.transpose(1, 2)).transpose(1, 2)
        out, _ = self.lstm(z)
        return self.head(out[:, -1, :])


def build_network(arch: ArchitectureConfig) -> CNNLSTM:
    """A freshly initialised network in eval mode (serving is the common case)."""
    return CNNLSTM(arch).eval()
