"""Knowledge distillation (Hinton et al., 2015): a student also learns the softened probabilities of trained
artifacts, which say which of FER2013's noisily labelled faces are ambiguous, and between which emotions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fer_ray.inference.artifact import Artifact, load_artifact
from fer_ray.preprocess import PreprocessConfig


class Teacher:
    """Frozen artifacts whose averaged softened probabilities a student matches; ``ids`` (their ``model_id``s)
    go in the run's record. ``flip_tta``: each also scores the mirrored batch, as the shipped models are scored."""

    def __init__(self, artifacts: list[Artifact], flip_tta: bool = False):
        self.artifacts, self.flip_tta = artifacts, flip_tta
        self.ids = [a.model_id for a in artifacts]
        for a in artifacts:
            if a.engine_name == "torch":  # never trained: batch norm keeps its running statistics
                a.model.eval().requires_grad_(False)

    @staticmethod
    def _logits(art: Artifact, x: torch.Tensor) -> torch.Tensor:
        if art.engine_name == "torch":
            return art.model(x)["logits"].float()  # under the caller's autocast, like the student
        return torch.from_numpy(art.predict_logits(x.float())).to(x.device)

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor, temperature: float) -> torch.Tensor:
        """Mean over members (and views) of softmax(logits / temperature), (B, K) float32."""
        views = torch.cat([x, x.flip(-1)]) if self.flip_tta else x
        probs = [F.softmax(self._logits(a, views) / temperature, dim=1) for a in self.artifacts]
        if self.flip_tta:
            probs = [q for p in probs for q in p.split(len(x))]
        return torch.stack(probs).mean(0)


def load_teacher(
    paths: tuple[str, ...],
    preprocess: PreprocessConfig,
    device: torch.device | str = "cpu",
    engine: str = "torch",
    flip_tta: bool = False,
    threads: int = 1,
) -> Teacher:
    """The artifacts at ``paths`` (shipped names or directories) as one :class:`Teacher`; ``torch`` runs them on
    ``device``, the ONNX engines on the CPU with ``threads``. Each must preprocess faces as the student does."""
    arts = []
    for p in paths:
        art = load_artifact(p, device=device if engine == "torch" else "cpu", engine=engine, threads=threads)
        if art.preprocess.to_dict() != preprocess.to_dict():
            raise ValueError(
                f"teacher {p} preprocesses faces as {art.preprocess.to_dict()}, the student as "
                f"{preprocess.to_dict()}: a teacher must read the student's input"
            )
        arts.append(art)
    return Teacher(arts, flip_tta)


def distill_loss(logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) at ``temperature``, times temperature² so its gradients keep the scale of
    the cross-entropy's whatever the temperature (Hinton et al.)."""
    log_p = F.log_softmax(logits.float() / temperature, dim=1)
    return F.kl_div(log_p, teacher_probs, reduction="batchmean") * temperature**2
