"""Fooling the network: FGSM and PGD (L∞), untargeted or targeted, in the model input's pixel space.

What is perturbed is the model input after resize and crop, as pixels in [0, 1] *before* normalisation
(x·std + mean of the tensor the model sees); the gradient is taken through the normalisation, so the
perturbation respects the model's preprocessing. The perturbed input is clipped to [0, 1] and used as a
float tensor (no 8-bit rounding). ε and the PGD step are whole steps of 1/255, as on the page's slider.

The steps are Captum's (``captum.robust.FGSM`` / ``PGD``, Goodfellow et al. 2015 / Madry et al. 2018):
the loss is −log p(label); untargeted attacks climb it for the clean top-1 class, targeted ones descend it
for the target; gradient entries of magnitude at most 1e-6 leave their pixel unchanged; PGD starts at the
image, takes ``steps`` FGSM steps of ``step_size`` and projects onto the ε-ball and [0, 1] after each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from server.services.runtime.model_runtime import LoadedModel
from server.services.work.cancel import checkpoint

ATTACKS = ("fgsm", "pgd")
MAX_EPSILON = 16  # in 1/255
MAX_STEPS = 50  # the schema's bound; Settings.adversarial_max_steps may lower it on a server
ZERO_GRADIENT = 1e-6  # as captum.robust.FGSM.zero_thresh


@dataclass(frozen=True)
class AttackSpec:
    attack: str  # "fgsm" | "pgd"
    epsilon: int  # in 1/255
    steps: int = 1  # PGD only
    step_size: int = 1  # PGD only, in 1/255
    target: int | None = None  # None: untargeted

    @property
    def targeted(self) -> bool:
        return self.target is not None

    def without_epsilon(self) -> AttackSpec:
        """The attack with ε left open (what the smallest-flipping-ε search depends on)."""
        pgd = self.attack == "pgd"
        return AttackSpec(self.attack, 0, self.steps if pgd else 1, self.step_size if pgd else 0, self.target)


class PixelModel:
    """The model as a function of the input's pixels in [0, 1]: normalisation, then the model."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        channels = len(loaded.preprocess_fn.mean)
        self.mean = torch.tensor(loaded.preprocess_fn.mean, dtype=torch.float32).reshape(1, channels, 1, 1)
        self.std = torch.tensor(loaded.preprocess_fn.std, dtype=torch.float32).reshape(1, channels, 1, 1)

    def pixels(self, batch: torch.Tensor) -> torch.Tensor:
        """The model input (normalised, 1×C×H×W) as pixels in [0, 1]."""
        return (batch.float().cpu() * self.std + self.mean).clamp(0.0, 1.0).to(batch.device)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean.to(pixels.device)) / self.std.to(pixels.device)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.loaded.module(self.normalise(pixels))

    def loss_gradient(self, pixels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """∂(−log p(label))/∂pixels, row by row (B×C×H×W); no weight gradients (the parameters are frozen)."""
        x = pixels.detach().requires_grad_(True)
        with torch.enable_grad():
            return _gradient(self(x), labels, x)

    def clean_gradient(self, pixels: torch.Tensor, target: int | None,
                       known: torch.Tensor | None) -> tuple[torch.Tensor, int, torch.Tensor]:
        """One pass over the clean 1×C×H×W ``pixels``: (its logits N, the label attacked, the loss gradient).

        The label is ``target``, else the clean top-1 — of ``known`` (the logits a prediction filed already),
        else of this pass's own logits: the attack's forward is then also the image's prediction."""
        x = pixels.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self(x)
            clean = known if known is not None else logits.detach().float().cpu()[0]
            label = int(target) if target is not None else int(clean.argmax())
            labels = torch.tensor([label], dtype=torch.long, device=x.device)
            return clean, label, _gradient(logits, labels, x)


def _gradient(logits: torch.Tensor, labels: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """∂(Σ −log p(label))/∂x: autograd to the input only (nothing else in the graph needs a gradient)."""
    loss = -torch.log_softmax(logits.float(), dim=-1).gather(1, labels[:, None]).sum()
    (grad,) = torch.autograd.grad(loss, x)
    return grad


@dataclass(frozen=True)
class AttackBase:
    """What every attack on one image for one label shares, whatever ε, steps and step size: the clean
    pixels (1×C×H×W), the clean logits (N), the label attacked, the loss gradient at the clean pixels
    (FGSM's only gradient, PGD's first) and the clean pass's layer outputs with their norms (for the
    per-layer distances). With it kept, moving the ε slider costs one forward pass (FGSM)."""

    pixels: torch.Tensor
    logits: torch.Tensor
    label: int
    gradient: torch.Tensor
    outputs: dict[str, torch.Tensor]
    norms: dict[str, float] = field(default_factory=dict)  # ‖output‖₂ per layer, filled on first use

    @property
    def nbytes(self) -> int:
        tensors = (self.pixels, self.logits, self.gradient, *self.outputs.values())
        return sum(t.numel() * t.element_size() for t in tensors)


def fgsm_step(pixels: torch.Tensor, grad: torch.Tensor, size: torch.Tensor | float, targeted: bool) -> torch.Tensor:
    """One signed-gradient step of ``size`` (a float, or one per row: B×1×1×1), clipped to [0, 1]."""
    multiplier = -1 if targeted else 1
    moved = torch.where(grad.abs() > ZERO_GRADIENT, pixels + multiplier * size * torch.sign(grad), pixels)
    return moved.clamp(0.0, 1.0)


def perturb(model: PixelModel, pixels: torch.Tensor, label: int, spec: AttackSpec,
            epsilons: torch.Tensor | None = None, on_step: Callable[[], None] = checkpoint,
            first_gradient: torch.Tensor | None = None) -> torch.Tensor:
    """The perturbed pixels. ``pixels`` is 1×C×H×W, or B×C×H×W with ``epsilons`` (B, in [0, 1] units) for
    one attack per row (the smallest-flipping-ε search); ``on_step`` runs after every gradient;
    ``first_gradient``: the loss gradient at ``pixels`` (or at its one image, 1×C×H×W, for every row), when
    the caller took it already."""
    rows = pixels.shape[0]
    eps = torch.full((rows,), spec.epsilon / 255.0) if epsilons is None else epsilons
    eps = eps.to(pixels.device, pixels.dtype).reshape(rows, 1, 1, 1)
    labels = torch.full((rows,), label, dtype=torch.long, device=pixels.device)
    if spec.attack == "fgsm":
        grad = first_gradient if first_gradient is not None else model.loss_gradient(pixels, labels)
        on_step()
        size = spec.epsilon / 255.0 if epsilons is None else eps
        return fgsm_step(pixels, grad, size, spec.targeted)
    step = spec.step_size / 255.0
    current = pixels
    for i in range(spec.steps):
        grad = first_gradient if i == 0 and first_gradient is not None else model.loss_gradient(current, labels)
        on_step()
        moved = fgsm_step(current, grad, step, spec.targeted)
        if epsilons is None:
            radius = spec.epsilon / 255.0
            moved = pixels + torch.clamp(moved - pixels, -radius, radius)
        else:
            moved = pixels + torch.maximum(torch.minimum(moved - pixels, eps), -eps)
        current = moved.clamp(0.0, 1.0).detach()
    return current


def flipped(logits: torch.Tensor, clean_top: int, spec: AttackSpec) -> torch.Tensor:
    """Per row: whether the attack succeeded (the top-1 left the clean class; targeted: became the target)."""
    top = logits.argmax(dim=-1)
    return top == spec.target if spec.targeted else top != clean_top


def min_flip_epsilon(model: PixelModel, pixels: torch.Tensor, clean_top: int, spec: AttackSpec,
                     chunk: int = 4, first_gradient: torch.Tensor | None = None) -> int | None:
    """The smallest ε of the slider (1…16, in 1/255) at which the attack flips the top-1, or None.

    Every ε is an attack of its own (PGD's path depends on ε); they run ``chunk`` at a time as one batch,
    smallest first, and the search stops at the first chunk with a flip. ``first_gradient``: the loss
    gradient at ``pixels`` (1×C×H×W), when known — FGSM then needs no gradient at all, PGD one fewer."""
    for start in range(1, MAX_EPSILON + 1, chunk):
        values = list(range(start, min(MAX_EPSILON, start + chunk - 1) + 1))
        epsilons = torch.tensor(values, dtype=torch.float32) / 255.0
        batch = pixels.expand(len(values), *pixels.shape[1:]).contiguous()
        adversarial = perturb(model, batch, clean_top if not spec.targeted else int(spec.target or 0), spec, epsilons,
                              first_gradient=first_gradient)
        with torch.no_grad():
            hits = flipped(model(adversarial), clean_top, spec)
        checkpoint()
        for value, hit in zip(values, hits.tolist()):
            if hit:
                return value
    return None
