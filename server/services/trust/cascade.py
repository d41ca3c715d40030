"""Cascading model randomisation (Adebayo et al., 2018, "Sanity Checks for Saliency Maps").

The model's parameterised parts are grouped into *units* — whole blocks for deep models, single layers for
small ones — and re-initialised one unit per step, from the output back towards the input, on a private
copy of the weights: the shared, served model is never touched.

Units: starting from the whole model, every container is split into its children (those with
parameters), level by level, as long as the model then has at most ``max_steps`` units (see
:func:`cascade_units`); a normalisation layer
(batch, group, layer norm) joins the unit before it, so "conv + its batch norm" is one step. Registration
order stands for forward order (true of the sequential classifiers ConvScope serves; a module that never
runs, such as GoogLeNet's auxiliary heads, is re-initialised at its turn without effect).

Re-initialising is each layer's own ``reset_parameters()`` (PyTorch's default initialisation, what the
layer had before training) and ``reset_running_stats()`` for normalisation layers, under
``torch.manual_seed(step_seed(seed, step))`` on the CPU; a parameter no reset covers gets a Kaiming-uniform
(matrices) or zero (vectors) re-initialisation. The test re-does this by hand.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@dataclass(frozen=True)
class Unit:
    """One randomisation step's modules: ``names`` (dotted, as ``named_modules`` gives them)."""

    names: tuple[str, ...]

    @property
    def label(self) -> str:
        if len(self.names) <= 3:
            return " + ".join(self.names)
        return f"{self.names[0]} … {self.names[-1]} ({len(self.names)} modules)"


Member = tuple[str, nn.Module]


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _is_container(module: nn.Module) -> bool:
    """Parameters only in children (a module with its own parameters is one unit)."""
    return not any(True for _ in module.parameters(recurse=False)) and any(
        _has_params(child) for child in module.children())


def _grouped(members: list[Member]) -> list[list[Member]]:
    """Each member its own group, except that a normalisation layer joins the group before it."""
    groups: list[list[Member]] = []
    for name, module in members:
        if groups and isinstance(module, NORM_TYPES):
            groups[-1].append((name, module))
        else:
            groups.append([(name, module)])
    return groups


def _children(member: Member) -> list[list[Member]]:
    name, module = member
    prefix = f"{name}." if name else ""
    return _grouped([(prefix + n, child) for n, child in module.named_children() if _has_params(child)])


def _chunks(groups: list[list[Member]], count: int) -> list[list[Member]]:
    """``groups`` joined into ``count`` consecutive units of near-equal length."""
    count = max(1, min(count, len(groups)))
    bounds = [round(i * len(groups) / count) for i in range(count + 1)]
    return [[m for g in groups[a:b] for m in g] for a, b in zip(bounds, bounds[1:], strict=False)]


def cascade_units(model: nn.Module, max_steps: int) -> list[Unit]:
    """The model's units in forward (registration) order; the cascade runs them in reverse.

    Level by level, every container unit is split into its children while the model then has at most
    ``max_steps`` units (so the steps are all blocks, or all layers). When a whole level does not fit, each
    container's children are joined into consecutive runs, in proportion to their number, and the
    splitting ends there."""
    units: list[list[Member]] = [[("", model)]]
    while True:
        splits = {i: _children(u[0]) for i, u in enumerate(units) if len(u) == 1 and _is_container(u[0][1])}
        if not splits:
            break
        need = sum(len(c) for c in splits.values())
        room = max(1, max_steps) - (len(units) - len(splits))
        full = need <= room or units == [[("", model)]] and room < len(splits) + 1
        quota = {i: len(c) if full else max(1, room * len(c) // need) for i, c in splits.items()}
        if not full and all(q == 1 for q in quota.values()):
            break
        units = [piece for i, u in enumerate(units)
                 for piece in (_chunks(splits[i], quota[i]) if i in splits else [u])]
        if not full:
            break
    return [Unit(tuple(name for name, _ in u)) for u in units]


def step_seed(seed: int, step: int) -> int:
    """The RNG seed of cascade step ``step`` (1 = the unit nearest the output)."""
    return int(seed) * 1_000_003 + int(step)


def reinitialise(module: nn.Module) -> None:
    """Re-initialise every parameter and running statistic in ``module``'s subtree (on the CPU RNG)."""
    covered: set[int] = set()
    for sub in module.modules():
        if hasattr(sub, "reset_parameters") and any(True for _ in sub.parameters(recurse=False)):
            sub.reset_parameters()
            covered.update(id(p) for p in sub.parameters(recurse=False))
        if isinstance(sub, nn.modules.batchnorm._NormBase) and sub.track_running_stats:
            sub.reset_running_stats()
    with torch.no_grad():
        for param in module.parameters():
            if id(param) in covered:
                continue
            if param.dim() > 1:
                nn.init.kaiming_uniform_(param, a=math.sqrt(5))
            else:
                param.zero_()


def randomise_step(model: nn.Module, unit: Unit, seed: int, step: int) -> None:
    """Re-initialise ``unit``'s modules of ``model`` (a private copy) in place, seeded.

    The new values are drawn on a CPU copy of each module, so they are the same on every device, then
    copied into the model's own tensors."""
    modules = dict(model.named_modules())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(step_seed(seed, step))
        for name in unit.names:
            target = modules[name]
            fresh = copy.deepcopy(target).to("cpu")
            reinitialise(fresh)
            with torch.no_grad():
                for mine, new in zip(target.state_dict(keep_vars=True).values(),
                                     fresh.state_dict(keep_vars=True).values(), strict=True):
                    mine.copy_(new.to(mine.device, mine.dtype))


def private_copy(model: nn.Module) -> nn.Module:
    """A deep copy whose parameters are frozen, in eval mode: randomising it leaves ``model`` untouched."""
    twin = copy.deepcopy(model)
    for param in twin.parameters():
        param.requires_grad_(False)
    return twin.eval()
