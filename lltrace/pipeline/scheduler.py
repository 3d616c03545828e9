"""Flow-matching scheduler as LongLive / Self-Forcing use it (shift 5.0, warped timesteps).

The model predicts the flow v = noise - x0 at x_t = (1 - sigma) x0 + sigma noise. A few-step
schedule [1000, 750, 500, 250] is "warped" through the shifted 1000-step table, so the sigma of
each step is the shifted one. Between steps the predicted x0 is re-noised to the next timestep.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

NUM_TRAIN_TIMESTEPS = 1000


@dataclass(frozen=True)
class FlowMatchScheduler:
    shift: float = 5.0
    sigma_min: float = 0.003 / 1.002  # Self-Forcing's FlowMatchScheduler(sigma_min=0.0, extra_one_step=True)
    sigma_max: float = 1.0

    def _table(self) -> tuple[torch.Tensor, torch.Tensor]:
        # 1000 shifted sigmas from sigma_max down (extra_one_step: linspace over 1001, drop the last)
        s = torch.linspace(self.sigma_max, self.sigma_min, NUM_TRAIN_TIMESTEPS + 1, dtype=torch.float64)[:-1]
        s = self.shift * s / (1 + (self.shift - 1) * s)
        return s, s * NUM_TRAIN_TIMESTEPS

    def warp(self, steps: tuple[int, ...] | list[int]) -> list[float]:
        """Map nominal steps (1000, 750, ...) to the shifted timesteps the model sees."""
        _, timesteps = self._table()
        table = torch.cat([timesteps, torch.zeros(1, dtype=torch.float64)])
        return [float(table[NUM_TRAIN_TIMESTEPS - int(s)]) for s in steps]

    def sigma(self, timestep: float) -> float:
        """Sigma of a (warped) timestep: the nearest entry of the shifted table; 0 for t = 0."""
        if timestep <= 0:
            return 0.0
        sigmas, timesteps = self._table()
        return float(sigmas[torch.argmin((timesteps - timestep).abs())])

    def to_x0(self, x_t: torch.Tensor, flow: torch.Tensor, timestep: float) -> torch.Tensor:
        s = self.sigma(timestep)
        return (x_t.float() - s * flow.float()).to(x_t.dtype)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timestep: float) -> torch.Tensor:
        s = self.sigma(timestep)
        return ((1 - s) * x0.float() + s * noise.float()).to(x0.dtype)
