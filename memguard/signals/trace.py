"""Per-call store of the signals read during denoising, indexed by 0-based step and image."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


def token_distribution(mass: torch.Tensor) -> torch.Tensor:
    """Each row of a non-negative (N, T) attention mass as a distribution over tokens."""
    p = mass.float().clamp_min(1e-12)
    return p / p.sum(dim=-1, keepdim=True)


def entropy(mass: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each row of a non-negative (N, T) mass, normalized to a distribution."""
    p = token_distribution(mass)
    return -(p * p.log()).sum(dim=-1)


@dataclass
class StepSignals:
    timestep: float | None = None
    noise_norm: torch.Tensor | None = None  # (N,) ||eps_text - eps_uncond||_2 over the latent
    noise_rms: torch.Tensor | None = None  # (N,) the same divided by sqrt(latent elements)
    attention_sum: torch.Tensor | None = None  # (N, T) per-token attention mass, summed over layers
    attention_layers: int = 0
    attention_by_layer: dict[str, torch.Tensor] = field(default_factory=dict)  # layer -> (N, T)
    # layer -> (N,) each query's attention entropy over tokens (nats), averaged over heads and queries
    query_entropy_by_layer: dict[str, torch.Tensor] = field(default_factory=dict)
    noise_map: torch.Tensor | None = None  # (N, C, h, w) eps_text - eps_uncond, float32
    end_token_map_sum: torch.Tensor | None = None  # (N, h, w) end-token attention, summed over layers
    end_token_map_layers: int = 0
    hessian_rms: torch.Tensor | None = None  # (N,) RMS of (J_text - J_uncond)(eps_text - eps_uncond)
    # (N,) cos(eps_uncond, eps_text - eps_uncond) over channels, averaged over latent positions, of the
    # low-noise pass on this step's input (first step only)
    guidance_alignment: torch.Tensor | None = None
    latent_update_rms: torch.Tensor | None = None  # (N,) RMS of the step's latent update x_{t-1} - x_t


@dataclass
class SignalTrace:
    """Signals of one pipeline call. Tensors stay on the pipeline's device until summarized."""

    steps: dict[int, StepSignals] = field(default_factory=dict)
    end_token_index: torch.Tensor | None = None  # (N,) position of each image's end token, when known
    num_images: int = 0
    layer_queries: dict[str, int] = field(default_factory=dict)  # layer -> spatial positions it attends from

    def at(self, step: int) -> StepSignals:
        return self.steps.setdefault(step, StepSignals())

    def record_noise(self, step: int, eps_text: torch.Tensor, eps_uncond: torch.Tensor, keep_map: bool = False) -> None:
        diff = eps_text.float() - eps_uncond.float()  # statistics in float32 whatever the dtype
        norm = diff.flatten(1).norm(dim=1)
        entry = self.at(step)
        entry.noise_norm = norm
        entry.noise_rms = norm / math.sqrt(diff[0].numel())
        if keep_map:
            entry.noise_map = diff.detach()

    def record_attention(self, step: int, token_mass: torch.Tensor, layer: str | None = None) -> None:
        entry = self.at(step)
        token_mass = token_mass.float()
        if entry.attention_sum is None:
            entry.attention_sum = token_mass
        else:
            entry.attention_sum = entry.attention_sum + token_mass
        entry.attention_layers += 1
        if layer is not None:
            entry.attention_by_layer[layer] = token_mass

    def record_query_entropy(self, step: int, layer: str, entropy_per_image: torch.Tensor) -> None:
        """`entropy_per_image`: (N,) the mean over heads and queries of each query's entropy (nats)."""
        self.at(step).query_entropy_by_layer[layer] = entropy_per_image.float()

    def record_end_token_map(self, step: int, attention_map: torch.Tensor) -> None:
        """`attention_map`: (N, h, w) at the latent resolution."""
        entry = self.at(step)
        attention_map = attention_map.float()
        entry.end_token_map_sum = (
            attention_map if entry.end_token_map_sum is None else entry.end_token_map_sum + attention_map
        )
        entry.end_token_map_layers += 1

    def record_hessian(self, step: int, product: torch.Tensor) -> None:
        """`product`: (N, ...) the Jacobian-vector product (J_text - J_uncond)(eps_text - eps_uncond)."""
        flat = product.float().flatten(1)
        self.at(step).hessian_rms = flat.norm(dim=1) / math.sqrt(flat.shape[1])

    def record_guidance_alignment(self, step: int, eps_text: torch.Tensor, eps_uncond: torch.Tensor) -> None:
        """`eps_*`: (N, C, h, w) predictions of the low-noise pass. At each latent position, the cosine
        between the unconditional prediction and the guidance over the channels; then the mean over
        positions (float32 whatever the dtype)."""
        uncond = eps_uncond.float()
        guidance = eps_text.float() - uncond
        self.at(step).guidance_alignment = F.cosine_similarity(uncond, guidance, dim=1).flatten(1).mean(dim=1)

    def record_latent_update(self, step: int, before: torch.Tensor, after: torch.Tensor) -> None:
        """`before`, `after`: (N, C, h, w) the latents the step started from and ended with."""
        flat = (after.float() - before.float()).flatten(1)
        self.at(step).latent_update_rms = flat.norm(dim=1) / math.sqrt(flat.shape[1])

    def last_step(self) -> int | None:
        return max(self.steps) if self.steps else None

    def recorded_steps(self) -> list[int]:
        return sorted(self.steps)

    def noise_steps(self) -> list[int]:
        return [s for s in self.recorded_steps() if self.steps[s].noise_norm is not None]

    def token_mass(self, steps: list[int]) -> torch.Tensor | None:
        """(N, T) attention mass per token, averaged over layers and the given steps."""
        masses = [
            self.steps[s].attention_sum / self.steps[s].attention_layers
            for s in steps
            if s in self.steps and self.steps[s].attention_layers
        ]
        if not masses:
            return None
        return torch.stack(masses).mean(dim=0).cpu()

    def summarize(self, upto_step: int) -> list[dict[str, float]]:
        """Per image, the signals averaged over steps 0..upto_step-1 (the first `upto_step` steps)."""
        steps = [s for s in range(upto_step) if s in self.steps]
        columns: dict[str, torch.Tensor] = {}
        for name in ("noise_norm", "noise_rms"):
            values = [getattr(self.steps[s], name) for s in steps if getattr(self.steps[s], name) is not None]
            if values:
                columns[name] = torch.stack(values).mean(dim=0).cpu()
        mass = self.token_mass(steps)
        if mass is not None:
            columns["attention_entropy"] = entropy(mass)
            columns["attention_begin_mass"] = token_distribution(mass)[:, 0]
        if not columns:
            return []
        n_images = len(next(iter(columns.values())))
        return [{name: float(col[i]) for name, col in columns.items()} for i in range(n_images)]
