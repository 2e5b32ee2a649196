"""`SignalNeeds`: which signals a detector reads, so the recorder computes only those.

The defaults are the free ones (the CFG batch and the attention the taps see anyway); the others
cost memory (maps, the previous step's latents), extra compute (the Hessian product, the low-noise
pass) or a full run (last-step maps).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SignalNeeds:
    noise: bool = True  # ||eps(x_t, c) - eps(x_t, "")|| per step: free under classifier-free guidance
    attention: bool = False  # per-token attention mass, summed over the recorded layers
    attention_by_layer: bool = False  # the same, kept per layer (one-layer detectors)
    # per layer, each query's entropy over the prompt tokens, averaged over heads and queries: free (the
    # same attention probabilities), one more reduction over them
    attention_query_entropy: bool = False
    noise_map_first_step: bool = False  # the spatial eps difference of the first step (local detectors)
    end_token_map_last_step: bool = False  # where the end token is attended at the last step (post hoc)
    hessian_first_step: bool = False  # one Jacobian-vector product of the UNet at the first step
    # one extra CFG-batch UNet pass on the first step's input at the schedule's low-noise end: the cosine
    # between the unconditional prediction and the guidance eps(x, c) - eps(x, "") (anisotropy)
    guidance_alignment_first_step: bool = False
    # ||x_{t-1} - x_t|| of each step's latent update: free (the step callback's latents), keeps one copy
    latent_updates: bool = False
    all_steps: bool = False  # needs steps after the decision step (late-step or post hoc detectors)

    def union(self, other: SignalNeeds) -> SignalNeeds:
        return SignalNeeds(**{name: getattr(self, name) or getattr(other, name) for name in self.__dataclass_fields__})

    @property
    def full_run(self) -> bool:
        """The score exists only once the last step ran: no early decision."""
        return self.end_token_map_last_step or self.all_steps
