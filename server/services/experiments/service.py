"""The experiments as the API serves them: every result in one :class:`ResultCache` (single-flight, within
a byte budget), every computation admitted by the scheduler under its own label (cheap or heavy by its
measured duration) and stopped at checkpoints once nobody waits for it."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from server.services.experiments import adversarial as adv
from server.services.experiments import compare as cmp
from server.services.experiments import occlusion_probe as probe
from server.services.experiments.ablation import (
    AblationBase,
    AblationOutcome,
    AblationSpec,
    EditedModel,
    ablate,
    ablation_base,
)
from server.services.experiments.layer_changes import LayerChanges
from server.services.experiments.layer_split import LayerSplit, depth_layers
from server.services.feature_maps.activations import capture_layers
from server.services.runtime.cache import ResultCache
from server.services.runtime.hooks import forward_hooks
from server.services.runtime.inputs import ModelInputs
from server.services.runtime.model_runtime import LoadedModel
from server.services.runtime.outputs import ModelOutputs
from server.services.saliency.base import TopK
from server.services.saliency.cams import GradCAM
from server.services.work.cancel import checkpoint
from server.services.work.scheduler import Admit


@dataclass(frozen=True)
class AttackResult:
    """An attack on one image: the perturbed pixels (C×H×W in [0, 1], float32), the logits before and after
    (N), and per layer over depth, how far its output moved (relative L2)."""

    pixels: torch.Tensor
    perturbed: torch.Tensor
    before: torch.Tensor
    after: torch.Tensor
    layers: list[tuple[str, float]]

    @property
    def nbytes(self) -> int:
        return 4 * (self.pixels.numel() + self.perturbed.numel() + self.before.numel() + self.after.numel())


@dataclass(frozen=True)
class ProbeResult:
    clean: torch.Tensor  # N logits of the image without a patch
    logits: torch.Tensor  # P×N, one row per patch


class Experiments:
    def __init__(self, inputs: ModelInputs, outputs: ModelOutputs, admit: Admit | None = None,
                 budget_bytes: int = 64 * 1024 * 1024, probe_chunk: int = 16) -> None:
        self.inputs = inputs
        self.outputs = outputs
        self.admit = admit
        self.cache: ResultCache[Any] = ResultCache("experiments", budget_bytes)
        self.probe_chunk = max(1, probe_chunk)

    def _admitted(self, label: str, prior: str = "cheap") -> AbstractContextManager[Any]:
        return self.admit(label, prior) if self.admit is not None else nullcontext()

    @staticmethod
    def _key(loaded: LoadedModel, image_id: str, *rest: Any) -> tuple[Any, ...]:
        return (loaded.entry.id, loaded.variant, image_id, *rest)

    # --- ablation ------------------------------------------------------------------------------------------
    def split(self, loaded: LoadedModel, layer: str) -> LayerSplit:
        """The model traced for restarts after ``layer`` (once per loaded model and layer)."""
        key = (loaded.entry.id, loaded.variant, "split", layer)
        split = self.cache.get_or_compute(key, lambda: LayerSplit.trace(loaded.module, layer))
        if split.model is not loaded.module:  # the model was reloaded since
            self.cache.discard(key)
            split = self.cache.get_or_compute(key, lambda: LayerSplit.trace(loaded.module, layer))
        return split

    def ablation_base(self, loaded: LoadedModel, image_id: str, layer: str) -> AblationBase:
        def compute() -> AblationBase:
            split = self.split(loaded, layer)
            batch = self.inputs.batch(loaded, image_id)
            with self._admitted(f"experiments/ablation-base/{loaded.entry.id}"):
                return ablation_base(loaded, batch, layer, split)

        return self.cache.get_or_compute(self._key(loaded, image_id, "ablation-base", layer), compute)

    def ablation(self, loaded: LoadedModel, image_id: str, spec: AblationSpec) -> tuple[AblationOutcome, torch.Tensor]:
        """(the outcome with ``spec`` applied, the unedited logits)."""
        base = self.ablation_base(loaded, image_id, spec.layer)

        def compute() -> AblationOutcome:
            batch = self.inputs.batch(loaded, image_id)
            with self._admitted(f"experiments/ablation/{loaded.entry.id}"):
                return ablate(loaded, batch, base, spec)

        outcome = self.cache.get_or_compute(self._key(loaded, image_id, "ablation", spec), compute)
        return outcome, base.logits

    def ablation_gradcam(self, loaded: LoadedModel, image_id: str, spec: AblationSpec, cam_layer: str,
                         target: int | None) -> Any:
        """Grad-CAM at ``cam_layer`` of the model with ``spec`` applied (a :class:`SaliencyExplanation`-like
        map: ``values`` H×W in [0, 1], ``low``/``high`` the raw values they stand for, ``target``)."""

        def compute() -> Any:
            edited = LoadedModel(loaded.entry, loaded.variant, EditedModel(loaded, spec), loaded.device,
                                 loaded.preprocess_fn, loaded.lock, loaded.catalog)
            edited.__dict__["_modules_by_name"] = dict(loaded.module.named_modules())
            batch = self.inputs.batch(loaded, image_id)
            method = GradCAM()
            targets = [target] if target is not None else TopK(1)
            with self._admitted(f"experiments/ablation-gradcam/{loaded.entry.id}"):
                explanation = method.explain(edited, batch, cam_layer, targets)
            return _CamMap(explanation.targets[0], explanation.maps[0].values.numpy().astype(np.float32),
                           explanation.maps[0].low, explanation.maps[0].high)

        return self.cache.get_or_compute(self._key(loaded, image_id, "ablation-cam", spec, cam_layer, target), compute)

    # --- occlusion probe -----------------------------------------------------------------------------------
    def probe(self, loaded: LoadedModel, image_id: str, patches: list[probe.Patch]) -> ProbeResult:
        """Logits of the image with each patch pasted (one batched pass) and of the clean image."""
        model = adv.PixelModel(loaded)
        pixels = model.pixels(self.inputs.batch(loaded, image_id))
        clean = self.outputs.logits(loaded, image_id)
        with self._admitted(f"experiments/probe/{loaded.entry.id}"):
            blurs = {}  # one blurred copy per patch size (up to 64 sizes): admitted, and stopped when nobody waits
            for size in sorted({p.size for p in patches if p.fill == "blur"}):
                checkpoint()
                blurs[size] = self._blurred(loaded, image_id, pixels, size)
            logits = probe.probe_logits(model, pixels, patches, blurs, self.probe_chunk)
        return ProbeResult(clean, logits)

    def _blurred(self, loaded: LoadedModel, image_id: str, pixels: torch.Tensor, size: int) -> torch.Tensor:
        return self.cache.get_or_compute((loaded.entry.id, image_id, "blur", size), lambda: probe.blurred(pixels, size))

    # --- adversarial -----------------------------------------------------------------------------------------
    def attack_base(self, loaded: LoadedModel, image_id: str, target: int | None) -> adv.AttackBase:
        """The clean pass every attack on the image for this label shares (kept: an ε change reuses it). Its
        layer outputs are recorded while its gradient is taken, and with no prediction filed yet its logits
        become the image's prediction: no pass of its own for either."""

        def compute() -> adv.AttackBase:
            model = adv.PixelModel(loaded)
            pixels = model.pixels(self.inputs.batch(loaded, image_id))
            known = self.outputs.cached_logits(loaded, image_id)
            with self._admitted(f"experiments/adversarial-base/{loaded.entry.id}"):
                clean = LayerChanges(loaded.module, depth_layers(loaded.module))
                with forward_hooks(loaded, clean.hooks()):
                    logits, label, gradient = model.clean_gradient(pixels, target, known)
            if known is None:
                self.outputs.remember(loaded, image_id, logits)
            return adv.AttackBase(pixels, logits, label, gradient, clean.outputs)

        return self.cache.get_or_compute(self._key(loaded, image_id, "attack-base", target), compute)

    def attack(self, loaded: LoadedModel, image_id: str, spec: adv.AttackSpec) -> AttackResult:
        def compute() -> AttackResult:
            base = self.attack_base(loaded, image_id, spec.target)
            model = adv.PixelModel(loaded)
            prior = "heavy" if spec.attack == "pgd" and spec.steps > 10 else "cheap"
            with self._admitted(f"experiments/adversarial/{loaded.entry.id}/{spec.attack}", prior):
                perturbed = adv.perturb(model, base.pixels, base.label, spec, first_gradient=base.gradient)
                moved = LayerChanges(loaded.module, list(base.outputs), base.outputs, norms=base.norms)
                with forward_hooks(loaded, moved.hooks()), torch.inference_mode():
                    after = model(perturbed)
            return AttackResult(base.pixels[0].float().cpu(), perturbed[0].float().cpu(), base.logits,
                                after.float().cpu()[0], moved.ordered_changes())

        return self.cache.get_or_compute(self._key(loaded, image_id, "attack", spec), compute)

    def min_flip_epsilon(self, loaded: LoadedModel, image_id: str, spec: adv.AttackSpec) -> int | None:
        """The smallest ε (1/255 steps) flipping the top-1 with this attack (ε itself plays no part). FGSM's
        search reuses the clean gradient (forward passes only); PGD's, its first step."""
        search = spec.without_epsilon()

        def compute() -> dict[str, int | None]:
            base = self.attack_base(loaded, image_id, spec.target)
            model = adv.PixelModel(loaded)
            clean_top = int(base.logits.argmax())
            with self._admitted(f"experiments/min-flip/{loaded.entry.id}/{spec.attack}", "heavy"):
                return {"epsilon": adv.min_flip_epsilon(model, base.pixels, clean_top, search,
                                                        first_gradient=base.gradient)}

        return self.cache.get_or_compute(self._key(loaded, image_id, "min-flip", search), compute)["epsilon"]

    def cached_min_flip(self, loaded: LoadedModel, image_id: str, spec: adv.AttackSpec) -> tuple[bool, int | None]:
        search = spec.without_epsilon()
        hit = self.cache.get(self._key(loaded, image_id, "min-flip", search))
        return (False, None) if hit is None else (True, hit["epsilon"])

    # --- compare ---------------------------------------------------------------------------------------------
    def compare(self, loaded: LoadedModel, other: LoadedModel, image_id: str) -> tuple[bool, list[cmp.LayerMatch]]:
        """(matched by name, the matched layers with their cosine similarity)."""
        def compute() -> dict[str, Any]:
            outputs = self._depth_outputs(loaded, image_id)
            with_outputs = self._depth_outputs(other, image_id)
            by_name = cmp.same_architecture(loaded.module, other.module)
            names = [n for n in depth_layers(loaded.module) if n in outputs]
            with_names = [n for n in depth_layers(other.module) if n in with_outputs]
            pairs = cmp.match_layers(names, with_names, by_name)
            return {"by_name": by_name, "layers": cmp.compare_outputs(outputs, with_outputs, pairs)}

        key = self._key(loaded, image_id, "compare", other.entry.id, other.variant)
        found = self.cache.get_or_compute(key, compute)
        return found["by_name"], found["layers"]

    def _depth_outputs(self, loaded: LoadedModel, image_id: str) -> dict[str, np.ndarray]:
        batch = self.inputs.batch(loaded, image_id)
        checkpoint()
        with self._admitted(f"experiments/compare/{loaded.entry.id}"):
            captured = capture_layers(loaded, batch, keep=depth_layers(loaded.module))
        self.outputs.remember(loaded, image_id, captured.logits)
        return captured.outputs


@dataclass(frozen=True)
class _CamMap:
    target: int
    values: np.ndarray
    low: float
    high: float

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes)

