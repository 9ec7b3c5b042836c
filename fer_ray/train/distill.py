"""Knowledge distillation: a student also learns the softened probabilities of trained artifacts.

FER2013's labels are noisy (FER+'s ten crowd votes disagree with them on ~1 face in 4), and an
ensemble's probabilities carry what a single label cannot: which faces are ambiguous and between
which emotions. Matching them (Hinton et al., 2015) is the usual way to fold an ensemble's
accuracy into one network of the same cost at inference, so the shipped artifact stays one model,
one forward pass. The teachers see the same augmented batch as the student; their cost is one
forward pass each per step, without gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fer_ray.artifact import load_artifact
from fer_ray.preprocess import PreprocessConfig


class Teacher(nn.Module):
    """Frozen artifacts whose averaged softened probabilities a student matches.

    ``ids``: each artifact's ``name@sha256-prefix`` (what the run records, so a distilled model
    names the exact weights it learnt from).
    """

    def __init__(self, models: list[nn.Module], ids: list[str]):
        super().__init__()
        self.members = nn.ModuleList(models).eval().requires_grad_(False)
        self.ids = ids

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)  # a teacher never updates its batch-norm statistics

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor, temperature: float) -> torch.Tensor:
        """Mean over members of softmax(logits / temperature), (B, K) float32."""
        return torch.stack([F.softmax(m(x)["logits"].float() / temperature, dim=1) for m in self.members]).mean(0)


def load_teacher(paths: tuple[str, ...], preprocess: PreprocessConfig, device: torch.device | str = "cpu") -> Teacher:
    """The artifacts at ``paths`` (shipped names or directories) as one :class:`Teacher` on ``device``.

    Each must read faces the way the student does (same normalisation and size): they score the
    student's input tensor, and a teacher fed differently scaled pixels would teach noise.
    """
    models, ids = [], []
    for p in paths:
        art = load_artifact(p, device=device, engine="torch")
        if art.preprocess.to_dict() != preprocess.to_dict():
            raise ValueError(
                f"teacher {p} preprocesses faces as {art.preprocess.to_dict()}, the student as "
                f"{preprocess.to_dict()}: a teacher must read the student's input"
            )
        models.append(art.model)
        ids.append(art.model_id)
    return Teacher(models, ids).to(device)


def teacher_ids(paths: tuple[str, ...]) -> list[str]:
    """The ``model_id`` of each teacher, for the run's record (loads each artifact once, on CPU)."""
    return [load_artifact(p, engine="torch").model_id for p in paths]


def distill_loss(logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) at ``temperature``, times temperature² so its gradients keep the scale of
    the cross-entropy's whatever the temperature (Hinton et al.)."""
    log_p = F.log_softmax(logits.float() / temperature, dim=1)
    return F.kl_div(log_p, teacher_probs, reduction="batchmean") * temperature**2
