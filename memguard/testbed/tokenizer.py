"""The CLIP tokenizer of Stable Diffusion, built offline.

Real SD uses OpenAI's CLIP BPE vocabulary (49,408 entries). open_clip ships that vocabulary as
``bpe_simple_vocab_16e6.txt.gz``; :func:`build_from_open_clip` converts it into the
``vocab.json`` + ``merges.txt`` pair that ``transformers.CLIPTokenizer`` reads, so any English prompt
tokenizes exactly as in real SD. The converted files ship once, as the testbed model's own
``model/tokenizer/`` (which `StableDiffusionPipeline.from_pretrained` reads), so loading needs neither
open_clip nor a model hub. Rebuild them with ``python -m memguard.testbed.tokenizer`` (needs
open_clip installed, ``--no-deps`` is enough).
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

from transformers import CLIPTokenizer

SHIPPED_TOKENIZER_DIR = Path(__file__).with_name("model") / "tokenizer"
MODEL_MAX_LENGTH = 77  # SD's text length; without it the SD pipeline overflows in transformers 5


def _bytes_to_unicode() -> dict[int, str]:
    # CLIP's reversible byte -> printable-unicode table (the same one GPT-2 uses).
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes), strict=True))


def build_from_open_clip() -> CLIPTokenizer:
    """Build the CLIP tokenizer from the BPE file that open_clip ships (no import of open_clip)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "building the CLIP tokenizer from source needs open_clip's BPE file: pip install --no-deps open_clip_torch"
        )
    bpe_path = Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]  # the slice CLIP's own simple_tokenizer uses
    symbols = list(_bytes_to_unicode().values())
    symbols += [s + "</w>" for s in symbols]
    merge_pairs = [tuple(m.split()) for m in merges]
    symbols += ["".join(pair) for pair in merge_pairs]
    symbols += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {s: i for i, s in enumerate(symbols)}
    # transformers 5 silently ignores vocab_file=/merges_file=; the keywords are vocab=/merges=.
    return CLIPTokenizer(vocab=vocab, merges=merge_pairs, model_max_length=MODEL_MAX_LENGTH)


def load_clip_tokenizer(path: str | Path | None = None) -> CLIPTokenizer:
    """Load the shipped CLIP tokenizer (or one saved at ``path``), offline."""
    folder = Path(path) if path is not None else SHIPPED_TOKENIZER_DIR
    if not any((folder / name).is_file() for name in ("tokenizer.json", "vocab.json")):
        raise FileNotFoundError(f"no CLIP tokenizer files (tokenizer.json or vocab.json + merges.txt) in {folder}")
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=MODEL_MAX_LENGTH)


if __name__ == "__main__":
    tokenizer = build_from_open_clip()
    tokenizer.save_pretrained(str(SHIPPED_TOKENIZER_DIR))
    print(f"wrote {len(tokenizer)}-entry CLIP tokenizer to {SHIPPED_TOKENIZER_DIR}")
