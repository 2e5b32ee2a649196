"""Wrap a pipeline you already have: the guard shares its modules and adds a report per image.

python examples/wrap_existing_pipeline.py [MODEL]   # MODEL: a diffusers id or path; default: the testbed
"""

import json
import sys

import torch
from diffusers import StableDiffusionPipeline

import memguard
from memguard import testbed

if len(sys.argv) > 1:
    pipe = StableDiffusionPipeline.from_pretrained(sys.argv[1])
else:
    pipe = StableDiffusionPipeline.from_pretrained(testbed.MODEL_DIR)

guarded = memguard.guard(pipe, memguard.GuardConfig(policy=memguard.Policy.uniform("flag")))  # the same unet, no copies
out = guarded("a small red circle on a blue background", generator=torch.Generator().manual_seed(0))
print(json.dumps(out.memorization[0].to_dict()))
