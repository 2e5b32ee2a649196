"""The intent verdict of one memorized image: intended, unintended or mixed, with its trigger spans.

How it decides (one place to change it):
1. No registered concept is mentioned (explicitly, or implicitly when a matcher is set): every
   trigger span is unintended -> "unintended".
2. Allowed concepts are mentioned: the *residual* -- the same score for the prompt with each of those
   mentions replaced by its concept's stand-in (an ordinary subject, from the registry; deleted when
   it has none), over a few fresh starting noises -- says whether the rest of the prompt memorizes
   by itself. At or under the threshold, the concepts explain the signal -> "intended";
   above it, something else is being reproduced too -> "mixed".
A mention of a concept whose registry policy is "unintended" is an unintended trigger.
Attention shares on a small or unusual model can be near-uniform, so they describe the spans but
do not decide the verdict; the residual does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..report import Trigger
from .attribution import WordShare, span_share, trigger_spans, word_shares
from .implicit import ImplicitMatcher
from .registry import IntentRegistry, Mention

Intent = Literal["none", "intended", "unintended", "mixed"]
INTENTS: tuple[str, ...] = ("none", "intended", "unintended", "mixed")


@dataclass
class IntentVerdict:
    intent: Intent
    triggers: list[Trigger] = field(default_factory=list)
    mentions: list[Mention] = field(default_factory=list)
    residual_score: float | None = None
    reference_score: float | None = None  # mixed: the score of the intended mentions alone
    note: str | None = None

    @property
    def intended_spans(self) -> list[tuple[int, int]]:
        """Character ranges a mitigation must not touch: allowed concepts the prompt mentions."""
        return [(m.start, m.end) for m in self.mentions if m.concept.policy == "allow"]

    @property
    def unintended_triggers(self) -> list[Trigger]:
        return [t for t in self.triggers if not t.intended]

    def judge_resample(self, score: float, threshold: float) -> IntentVerdict:
        """The verdict of a re-sample of the same prompt, from its score alone: under the threshold
        it is clean; a mixed prompt whose re-sample scores no more than its intended mentions alone
        now reproduces only what was asked for; otherwise the first verdict stands."""
        if not score > threshold:
            return IntentVerdict("none")
        if self.intent == "mixed" and self.reference_score is not None and score <= self.reference_score:
            intended = [t for t in self.triggers if t.intended]
            return IntentVerdict(
                "intended",
                intended,
                self.mentions,
                self.residual_score,
                self.reference_score,
                "re-sample scores no higher than the intended concepts alone",
            )
        return self


def without_spans(prompt: str, spans: list[tuple[int, int]]) -> str:
    """`prompt` with the character ranges removed and the whitespace tidied."""
    return with_stand_ins(prompt, [(start, end, "") for start, end in spans])


_ARTICLE_BEFORE = re.compile(r"\b(?:the|a|an)\s*$", re.IGNORECASE)
_ARTICLE = re.compile(r"(?:the|a|an)\b", re.IGNORECASE)


def with_stand_ins(prompt: str, replacements: list[tuple[int, int, str]]) -> str:
    """`prompt` with each character range [start, end) replaced by its words ("" removes it), the
    whitespace tidied. A stand-in that brings its own article drops the one before the range ("the
    Velmora crest" with the mention "Velmora crest" and the stand-in "a circle" reads "a circle")."""
    for start, end, words in sorted(replacements, reverse=True):
        before, after = prompt[:start], prompt[end:]
        if words and _ARTICLE.match(words):
            before = _ARTICLE_BEFORE.sub("", before)
        if words and not re.match(r"[,.;:!?)]", after):
            words += " "
        prompt = before + " " + words + after
    return re.sub(r"\s+", " ", prompt).strip()


@dataclass
class IntentResolver:
    registry: IntentRegistry | None = None
    implicit: ImplicitMatcher | None = None
    min_trigger_ratio: float = 1.0  # a trigger word carries >= this times the uniform share

    @property
    def can_clear(self) -> bool:
        """Whether a memorized prompt can be judged intended or mixed (the registry allows a concept):
        only then is a residual score ever asked for."""
        return self.registry is not None and any(c.policy == "allow" for c in self.registry.concepts)

    def mentions(self, prompt: str) -> list[Mention]:
        if self.registry is None:
            return []
        explicit = self.registry.find_mentions(prompt)
        implicit = self.implicit.find(prompt, explicit) if self.implicit is not None else []
        taken = [(m.start, m.end) for m in explicit]
        implicit = [m for m in implicit if not any(s < m.end and m.start < e for s, e in taken)]
        return sorted(explicit + implicit, key=lambda m: m.start)

    def resolve(
        self,
        prompt: str | None,
        *,
        memorized: bool,
        token_scores: torch.Tensor | None,
        offsets: list[tuple[int, int]] | None,
        threshold: float,
        residual: Callable[[str], float],
    ) -> IntentVerdict:
        if not memorized:
            return IntentVerdict("none")
        if prompt is None:
            return IntentVerdict(
                "unintended", note="the call passed prompt_embeds: no text to attribute or match against the registry"
            )
        mentions = self.mentions(prompt)
        shares: list[WordShare] = []
        note = None
        if token_scores is not None and offsets is not None:
            shares = word_shares(prompt, token_scores, offsets)
        else:
            note = "attribution unavailable (no attention recorded, or the tokenizer reports no offsets)"

        def mention_span(m: Mention) -> Trigger:
            allowed = m.concept.policy == "allow"
            return Trigger(
                prompt[m.start : m.end], m.start, m.end, span_share(shares, m.start, m.end), m.concept.name, allowed
            )

        # Trigger spans overlapping a mention keep their words outside it ("crest on Saltmarsh"
        # around the mention "crest" still leaves "on Saltmarsh" as an unintended trigger).
        others = [
            piece
            for t in trigger_spans(prompt, shares, self.min_trigger_ratio)
            for piece in _outside(prompt, t, mentions, shares)
        ]
        allowed = [m for m in mentions if m.concept.policy == "allow"]
        refused = [m for m in mentions if m.concept.policy != "allow"]
        if not allowed:
            triggers = sorted([mention_span(m) for m in refused] + others, key=lambda t: t.start)
            if not triggers:  # no attribution: the whole prompt is the trigger
                triggers = [Trigger(prompt, 0, len(prompt), 1.0)]
            return IntentVerdict("unintended", triggers, mentions, note=note)
        # A prompt that is all concept has no rest to memorize. Otherwise each concept gives way to its
        # stand-in, so the rest is scored as an ordinary prompt, not as a subjectless remainder.
        has_rest = bool(without_spans(prompt, [(m.start, m.end) for m in allowed]))
        rest = with_stand_ins(prompt, [(m.start, m.end, m.concept.stand_in) for m in allowed])
        residual_score = float(residual(rest)) if has_rest else float("-inf")
        if residual_score <= threshold and not refused:
            return IntentVerdict("intended", [mention_span(m) for m in allowed], mentions, residual_score, note)
        if not others:  # the rest memorizes, though attention singled out no word: all of it
            others = [
                Trigger(prompt[s:e], s, e, span_share(shares, s, e))
                for s, e in _gaps(prompt, [(m.start, m.end) for m in mentions])
            ]
        triggers = sorted([mention_span(m) for m in mentions] + others, key=lambda t: t.start)
        # What the wanted concepts produce by themselves: a re-sample of a mixed prompt that scores
        # no higher has shed the unintended part (see `IntentVerdict.judge_resample`).
        reference = float(residual(" ".join(prompt[m.start : m.end] for m in allowed)))
        return IntentVerdict("mixed", triggers, mentions, residual_score, reference, note)


def _outside(prompt: str, trigger: Trigger, mentions: list[Mention], shares: list[WordShare]) -> list[Trigger]:
    """`trigger` without the parts covered by registry mentions (itself when none overlaps)."""
    inside = [(m.start, m.end) for m in mentions if m.start < trigger.end and trigger.start < m.end]
    if not inside:
        return [trigger]
    text = prompt[trigger.start : trigger.end]
    local = [(max(a, trigger.start) - trigger.start, min(b, trigger.end) - trigger.start) for a, b in inside]
    pieces = []
    for a, b in _gaps(text, local):
        start, end = trigger.start + a, trigger.start + b
        pieces.append(Trigger(prompt[start:end], start, end, span_share(shares, start, end)))
    return pieces


def _gaps(prompt: str, taken: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The stretches of `prompt` outside `taken` that contain a word, trimmed of spaces and punctuation."""
    gaps, cursor = [], 0
    for start, end in sorted(taken) + [(len(prompt), len(prompt))]:
        piece = prompt[cursor:start]
        match = re.search(r"\w(.*\w)?", piece, re.S)
        if match:
            gaps.append((cursor + match.start(), cursor + match.end()))
        cursor = max(cursor, end)
    return gaps
