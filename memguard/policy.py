"""`Policy`: what the guard does with each intent verdict. Change the defaults here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import MemguardTypeError, MemguardValueError

PolicyAction = Literal["allow", "flag", "resample", "block"]
POLICY_ACTIONS: tuple[str, ...] = ("allow", "flag", "resample", "block")
Fallback = Literal["flag", "block"]
FALLBACKS: tuple[str, ...] = ("flag", "block")


@dataclass(frozen=True, kw_only=True)
class Policy:
    """Maps a memorized image's intent verdict to an action.

    Args:
        intended: every trigger is a concept the prompt asks for (default "allow": untouched, reported).
        unintended: no trigger is (default "resample" with the configured mitigation).
        mixed: both (default "resample"; mitigations spare the intended spans).
        max_attempts: re-samples allowed per image after the first generation.
        fallback: what happens when every attempt is still memorized: "flag" (return the last
            attempt, flagged) or "block" (black placeholder).
    """

    intended: PolicyAction = "allow"
    unintended: PolicyAction = "resample"
    mixed: PolicyAction = "resample"
    max_attempts: int = 3
    fallback: Fallback = "flag"

    def __post_init__(self) -> None:
        for name in ("intended", "unintended", "mixed"):
            if getattr(self, name) not in POLICY_ACTIONS:
                raise MemguardValueError(f"Policy.{name} must be one of {POLICY_ACTIONS}, got {getattr(self, name)!r}")
        if self.fallback not in FALLBACKS:
            raise MemguardValueError(f"Policy.fallback must be one of {FALLBACKS}, got {self.fallback!r}")
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise MemguardTypeError(f"Policy.max_attempts must be an int, got {type(self.max_attempts).__name__}")
        if self.max_attempts < 0:
            raise MemguardValueError(f"Policy.max_attempts must be >= 0, got {self.max_attempts}")

    @classmethod
    def uniform(cls, action: PolicyAction, **changes) -> Policy:
        """The same action for unintended and mixed memorization (intended stays allowed)."""
        return cls(unintended=action, mixed=action, **changes)

    def action_for(self, intent: str) -> PolicyAction | None:
        """The action for a verdict; None for "none" (not memorized)."""
        return None if intent == "none" else getattr(self, intent)

    @property
    def resamples(self) -> bool:
        return "resample" in (self.intended, self.unintended, self.mixed) and self.max_attempts > 0
