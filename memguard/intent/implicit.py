"""Implicit intent: a prompt that refers to a registered concept without naming it.

Phrases of the prompt (word windows) are embedded with a text encoder and searched in a faiss
inner-product index over the registry's names, aliases and descriptions; a concept whose best
similarity reaches the threshold counts as mentioned. Which encoder: open_clip's text tower when
open_clip imports (`OpenClipTextEmbedder`), or the pipeline's own CLIP text encoder
(`PipelineTextEmbedder`, always available offline). Calibrate the threshold on benign prompts of
the same encoder with `ImplicitMatcher.calibrate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import faiss
import numpy as np
import torch

from .registry import IntentRegistry, Mention, words_with_offsets


class ImplicitIntentUnavailable(ImportError):
    """The requested text encoder cannot be loaded here (e.g. open_clip without torchvision)."""


class TextEmbedder(Protocol):
    name: str

    def embed(self, texts: Sequence[str]) -> np.ndarray:  # (n, d) float32, rows L2-normalised
        ...


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    faiss.normalize_L2(vectors)
    return vectors


class PipelineTextEmbedder:
    """The diffusion pipeline's CLIP text encoder (pooled end-of-text state): offline, no extra weights."""

    def __init__(self, pipe):
        self.tokenizer, self.text_encoder = pipe.tokenizer, pipe.text_encoder
        self.name = f"pipeline:{type(self.text_encoder).__name__}"

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        tokens = self.tokenizer(
            list(texts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        device = self.text_encoder.device
        output = self.text_encoder(tokens.input_ids.to(device))
        return _normalise(output.pooler_output.float().cpu().numpy())


class OpenClipTextEmbedder:
    """open_clip's text tower; needs `pip install memguard[clip]` and locally available weights."""

    def __init__(self, model_name: str = "ViT-B-32", pretrained: str | None = "laion2b_s34b_b79k", device="cpu"):
        try:
            import open_clip
        except Exception as error:  # open_clip imports torchvision, which CPU-only machines may lack
            raise ImplicitIntentUnavailable(
                f"implicit intent with open_clip is unavailable here: `import open_clip` failed "
                f"({type(error).__name__}); use PipelineTextEmbedder or install memguard[clip]"
            ) from error
        self.model, _, _ = open_clip.create_model_and_transforms(model_name, pretrained=pretrained, device=device)
        self.tokenize = open_clip.get_tokenizer(model_name)
        self.device = device
        self.name = f"open_clip:{model_name}:{pretrained}"

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        features = self.model.encode_text(self.tokenize(list(texts)).to(self.device))
        return _normalise(features.float().cpu().numpy())


class ImplicitMatcher:
    """Finds implicit mentions of `registry`'s concepts with `embedder` and a faiss index."""

    def __init__(self, registry: IntentRegistry, embedder: TextEmbedder, threshold: float, max_window: int = 6):
        if not 0 < max_window:
            raise ValueError(f"max_window must be >= 1, got {max_window}")
        self.registry, self.embedder, self.threshold, self.max_window = registry, embedder, float(threshold), max_window
        phrases, owners = [], []
        for index, concept in enumerate(registry.concepts):
            for phrase in (*concept.phrases, concept.description):
                if phrase:
                    phrases.append(phrase)
                    owners.append(index)
        self._owners = np.array(owners, dtype=np.int64)
        vectors = embedder.embed(phrases) if phrases else np.zeros((0, 1), np.float32)
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        if len(phrases):
            self.index.add(vectors)

    def _windows(self, prompt: str) -> list[tuple[int, int]]:
        words = words_with_offsets(prompt)
        windows = {(words[0][1], words[-1][2])} if words else set()
        for size in range(2, self.max_window + 1):
            for i in range(len(words) - size + 1):
                windows.add((words[i][1], words[i + size - 1][2]))
        return sorted(windows)

    def best_similarities(self, prompt: str) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """(concepts,) best similarity per concept over the prompt's windows, and where it was found."""
        n = len(self.registry.concepts)
        best, where = np.full(n, -1.0, np.float32), [(0, 0)] * n
        windows = self._windows(prompt)
        if not windows or self.index.ntotal == 0:
            return best, where
        vectors = self.embedder.embed([prompt[s:e] for s, e in windows])
        similarities, ids = self.index.search(vectors, min(self.index.ntotal, 8))
        for w, (row_sim, row_ids) in enumerate(zip(similarities, ids, strict=False)):
            for sim, idx in zip(row_sim, row_ids, strict=False):
                if idx < 0:
                    continue
                owner = int(self._owners[idx])
                if sim > best[owner]:
                    best[owner], where[owner] = float(sim), windows[w]
        return best, where

    def find(self, prompt: str, explicit: Sequence[Mention] = ()) -> list[Mention]:
        named = {m.concept.name for m in explicit}
        best, where = self.best_similarities(prompt)
        return [
            Mention(concept, *where[i], how="implicit", similarity=float(best[i]))
            for i, concept in enumerate(self.registry.concepts)
            if best[i] >= self.threshold and concept.name not in named
        ]

    @classmethod
    def calibrate(
        cls, registry: IntentRegistry, embedder: TextEmbedder, benign_prompts: Sequence[str], target_fpr: float = 0.01
    ) -> ImplicitMatcher:
        """A matcher whose threshold lets at most `target_fpr` of benign prompts match any concept."""
        if not benign_prompts:
            raise ValueError("calibrating implicit intent needs benign prompts")
        probe = cls(registry, embedder, threshold=np.inf)
        maxima = np.array([probe.best_similarities(p)[0].max(initial=-1.0) for p in benign_prompts])
        threshold = float(np.quantile(maxima, 1 - target_fpr, method="higher")) + 1e-6
        return cls(registry, embedder, threshold, probe.max_window)
