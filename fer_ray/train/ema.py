"""An exponential moving average of the weights, the model a run validates and exports when asked: it smooths
out the noise of the final updates at no cost at inference (as timm does). Batch-norm statistics are averaged
with the parameters, so no extra pass over the data; the run validates both (``val_acc``, ``val_acc_raw``)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightEMA:
    """``decay`` per optimizer step, warmed up as ``min(decay, (1 + n) / (10 + n))`` after n updates so
    the average forgets the random initialisation within the first epoch (timm's ModelEmaV2 does the same)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(getattr(model, "module", model)).eval().requires_grad_(False)

    def rate(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        keep = self.rate()
        ours, theirs = self.module.state_dict(), getattr(model, "module", model).state_dict()
        floats = [(ours[k], theirs[k].detach()) for k in ours if ours[k].is_floating_point()]
        torch._foreach_lerp_([a for a, _ in floats], [b for _, b in floats], 1.0 - keep)
        for k, v in ours.items():
            if not v.is_floating_point():  # e.g. batch norm's step counter
                v.copy_(theirs[k])

    def state_dict(self) -> dict:
        return {"weights": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
