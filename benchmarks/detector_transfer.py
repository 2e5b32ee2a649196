"""Does memguard's layer choice carry over to another model? Step-1 attention entropy, layer by layer.

The bottleneck rule (average the attention over the lowest-resolution cross-attention layers, then
take its entropy) was chosen on the shipped testbed. This script scores every cross-attention layer
alone at step 1 on a model folder, and a few layer-combination rules that need no memorized
examples: each layer's entropy is standardized by its mean and spread on the calibration prompts
(benign, apart from the evaluation sets), then the layers are averaged or maxed. Prompts and settings
are `benchmarks/detection.py`'s (the 18 memorized and mixed captions vs. 200 novel compositions,
DDIM 50, guidance 7.5); `--seeds 4 5 6 7` gives seeds that no rule was compared on.

    python benchmarks/detector_transfer.py [--model DIR] [--seeds 0 1 2 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _results import model_label, write_json
from detection import _record, testbed_prompts
from diffusers import StableDiffusionPipeline

from memguard.detection import AttentionEntropyDetector, BottleneckEntropyDetector
from memguard.detection.bottleneck import bottleneck_layers
from memguard.signals import SignalNeeds, cross_attention_layers
from memguard.testbed import MODEL_DIR
from memguard.testbed.data import calibration_prompts
from memguard.testbed.roc import auc, tpr_at_fpr

NEEDS = SignalNeeds(attention=True, attention_by_layer=True)
SHIPPED_RULE = "bottleneck: entropy of the mean attention (memguard's detector)"


def _rules(z: dict[str, torch.Tensor], bottleneck: list[str]) -> dict[str, torch.Tensor]:
    """Layer combinations on standardized entropies z[layer]: (seeds, prompts) each."""
    every = torch.stack(list(z.values()))
    low = torch.stack([z[name] for name in bottleneck])
    return {
        "mean of standardized entropies, bottleneck layers": low.mean(0),
        "max of standardized entropies, bottleneck layers": low.amax(0),
        "mean of standardized entropies, every layer": every.mean(0),
        "max of standardized entropies, every layer": every.amax(0),
    }


def _figures(positive: torch.Tensor, negative: torch.Tensor) -> dict:
    p, n = positive.flatten().tolist(), negative.flatten().tolist()
    return {"auc": round(auc(p, n), 3), "tpr_at_1pct_fpr": round(tpr_at_fpr(p, n, 0.01), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=MODEL_DIR)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "detector_transfer.json")
    args = parser.parse_args()
    started = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(str(args.model), safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    layers = sorted(cross_attention_layers(pipe.unet))
    bottleneck: list[str] = []  # filled from the first trace: which layers are lowest-resolution is a trace fact

    def scores(trace):
        bottleneck[:] = bottleneck_layers(trace)
        out = {layer: AttentionEntropyDetector(layer=layer).score(trace, 1) for layer in layers}
        out[SHIPPED_RULE] = BottleneckEntropyDetector().score(trace, 1)
        return out

    memorized, benign = testbed_prompts(200, args.model)
    positive = _record(pipe, memorized, args.seeds, NEEDS, 1, 50, 7.5, 25, scores)
    negative = _record(pipe, benign, args.seeds, NEEDS, 1, 50, 7.5, 25, scores)
    reference = _record(pipe, calibration_prompts(), [0], NEEDS, 1, 50, 7.5, 25, scores)

    def standardized(scored: dict) -> dict[str, torch.Tensor]:
        return {layer: (scored[layer] - reference[layer].mean()) / reference[layer].std() for layer in layers}

    rules_positive = _rules(standardized(positive), bottleneck)
    rules_negative = _rules(standardized(negative), bottleneck)
    result = dict(
        model=model_label(args.model),
        seeds=args.seeds,
        bottleneck_layers=bottleneck,
        layer_alone={layer: _figures(positive[layer], negative[layer]) for layer in layers},
        rules={
            SHIPPED_RULE: _figures(positive[SHIPPED_RULE], negative[SHIPPED_RULE]),
            **{name: _figures(rules_positive[name], rules_negative[name]) for name in rules_positive},
        },
        seconds=round(time.perf_counter() - started, 1),
    )
    write_json(result, args.out)


if __name__ == "__main__":
    main()
