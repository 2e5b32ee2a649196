"""`VerificationIndex`: a faiss index of protected/training image embeddings, to check generations
against post hoc (nearest neighbours by cosine similarity).

Kinds (all inner product on L2-normalized rows, so the score is cosine similarity):
- "flat" (`IndexFlatIP`): exact, no training, memory 4*dim bytes per image, search time linear in
  the count. Right up to ~1M vectors, or whenever exact answers matter more than latency.
- "ivf" (`IndexIVFFlat`): k-means clusters (`nlist`, default ~4*sqrt(n)); a search visits `nprobe`
  of them. Trained at build time on a sample, so build the index from the whole (or a
  representative) collection. Same memory as flat, searches many times faster at millions of
  vectors; recall rises with `nprobe`.
- "hnsw" (`IndexHNSWFlat`): a graph (`hnsw_m` links per vector, ~8*m extra bytes each); no training,
  incremental adds, the fastest searches with high recall, but the slowest build.

Files: `save(path)` writes faiss's own format at `path` and a JSON sidecar at ``path + ".json"``
(encoder spec and fingerprint, dims, count, kind, parameters, the image ids and the index file's
SHA-256); never pickle. `load` checks they agree (an index file beside another save's sidecar would
give every match another image's id), and that the encoder searching the index is the one that
built it.

Limits on loading (see docs/limits.md): the sidecar is at most `MAX_SIDECAR_BYTES` (1 GiB, some 15
million ids of 60 characters), nested at most 32 levels, and every field has its type (`dims` an
int in 1..65,536, `count` an int, `ids` that many distinct strings, `params` ints >= 1). The index
file must be at least as large as the vectors the sidecar announces (4 bytes x dims x count) before
faiss reads it. faiss's binary format itself is trusted: load index files you built.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

from ..errors import MemguardTypeError, MemguardValueError, require_positive_int, shown
from ..safe_parse import FileTooLarge, JsonSyntaxError, ParseError, cannot_open, parse_json, read_limited, type_name
from .encoders import EncoderError, ImageEncoder, ImageLike, PixelEncoder, encode_in_batches, encoder_fingerprint
from .specs import encoder_from_name

IndexKind = Literal["flat", "ivf", "hnsw"]
INDEX_KINDS: tuple[str, ...] = ("flat", "ivf", "hnsw")
FORMAT_VERSION = 1
_FAISS_CLASSES = {"flat": faiss.IndexFlatIP, "ivf": faiss.IndexIVFFlat, "hnsw": faiss.IndexHNSWFlat}
MAX_SIDECAR_BYTES = 1 << 30
MAX_DIMS = 65_536
SIMILARITY_TOLERANCE = 1e-6


class IndexFileError(MemguardValueError):
    """An index file and its sidecar are missing, unreadable or disagree."""


@dataclass(frozen=True)
class IndexParams:
    """Tuning of the approximate kinds (ignored by "flat")."""

    nlist: int | None = None  # ivf: clusters; None: ~4*sqrt(count), at most count/39 (faiss's minimum per cluster)
    nprobe: int = 16  # ivf: clusters visited per search
    hnsw_m: int = 32  # hnsw: graph links per vector
    ef_construction: int = 80  # hnsw: candidate list while building
    ef_search: int = 64  # hnsw: candidate list while searching

    def __post_init__(self) -> None:
        for name in ("nlist", "nprobe", "hnsw_m", "ef_construction", "ef_search"):
            value = getattr(self, name)
            if name == "nlist" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise MemguardTypeError(f"IndexParams.{name} must be an int, got {type_name(value)}")
            if not 1 <= value <= 2**31 - 1:  # faiss keeps them in C ints
                raise MemguardValueError(f"IndexParams.{name} must be in 1..2**31-1, got {value}")


@dataclass(frozen=True)
class Match:
    """A protected image near the query, and their cosine similarity (1: the same embedding)."""

    id: str
    similarity: float


@dataclass(frozen=True)
class CopyCheck:
    """The nearest protected images of one query, and whether the closest reaches the threshold."""

    matches: list[Match] = field(default_factory=list)
    threshold: float = 1.0

    @property
    def top(self) -> Match | None:
        return self.matches[0] if self.matches else None

    @property
    def copied(self) -> bool:
        # float32 cosine of two identical images lands within a few 1e-7 of 1: threshold 1.0 means "identical"
        threshold = min(self.threshold, 1.0 - SIMILARITY_TOLERANCE)
        return bool(self.matches) and self.matches[0].similarity >= threshold


def check_indexable(encoder: ImageEncoder) -> None:
    """Refuse an encoder whose rows `load` would refuse: before encoding, not after saving."""
    if not 1 <= encoder.dim <= MAX_DIMS:
        raise MemguardValueError(f"encoder {encoder.name!r} makes {encoder.dim}-dim rows; an index holds 1..{MAX_DIMS}")


def checked_threshold(threshold, name: str = "threshold") -> float:
    """A copy threshold: a real number (NumPy's included) in [-1, 1], the range of cosine similarity."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise MemguardTypeError(f"{name} must be a number, got {type_name(threshold)}")
    value = float(threshold)
    if not math.isfinite(value) or not -1.0 <= value <= 1.0:
        raise MemguardValueError(f"{name} is a cosine similarity in [-1, 1], got {shown(value)}")
    return value


def _checked_ids(ids) -> list[str]:
    if isinstance(ids, (str, bytes)):  # a string is a sequence of one-letter ids: never what was meant
        raise MemguardTypeError("ids must be a sequence of ids, one per image, not one string")
    return [str(i) for i in ids]


class VerificationIndex:
    """Embeddings of protected images in a faiss index, with their ids, and the encoder that made them."""

    def __init__(self, index: faiss.Index, ids: list[str], encoder: ImageEncoder, kind: IndexKind, params: IndexParams):
        self.index, self.ids, self.encoder, self.kind, self.params = index, ids, encoder, kind, params

    @classmethod
    def build(
        cls,
        images: Iterable[ImageLike],
        ids: Sequence[str],
        encoder: ImageEncoder | str | None = None,
        *,
        kind: IndexKind = "flat",
        params: IndexParams | None = None,
        batch_size: int = 1024,
    ) -> VerificationIndex:
        """Encode `images` (paths, PIL images or arrays), one id each, into a new index of `kind`.

        `encoder`: an encoder, or its spec (e.g. "dinov2:facebook/dinov2-small"; see `encoder_from_name`);
        None: the offline pixel encoder (testbed only)."""
        if kind not in INDEX_KINDS:
            raise ValueError(f"kind must be one of {INDEX_KINDS}, got {kind!r}")
        encoder = _as_encoder(encoder) if encoder is not None else PixelEncoder()
        check_indexable(encoder)
        if params is None:
            params = IndexParams()
        elif not isinstance(params, IndexParams):
            raise MemguardTypeError(f"params must be an IndexParams, got {type_name(params)}")
        batch_size = require_positive_int(batch_size, "batch_size")
        ids = _checked_ids(ids)
        if len(set(ids)) != len(ids):
            raise ValueError("image ids must be unique")
        if isinstance(images, Sequence) and len(images) != len(ids):  # before encoding them all
            _check_count(len(images), len(ids))
        if kind == "ivf":  # k-means needs the vectors before the first add
            vectors = np.concatenate([np.zeros((0, encoder.dim), np.float32), *encode_in_batches(encoder, images)])
            _check_count(len(vectors), len(ids))
            if len(vectors) == 0:
                raise ValueError("an IVF index needs at least one image to train on")
            index = _new_ivf(encoder.dim, vectors, params)
            index.add(vectors)
            return cls(index, ids, encoder, kind, params)
        index = faiss.IndexFlatIP(encoder.dim) if kind == "flat" else _new_hnsw(encoder.dim, params)
        for batch in encode_in_batches(encoder, images, batch_size):
            index.add(batch)
        _check_count(index.ntotal, len(ids))
        return cls(index, ids, encoder, kind, params)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def add(self, images: Sequence[ImageLike], ids: Sequence[str]) -> None:
        """Add more protected images (an IVF index keeps the clusters it was trained with)."""
        ids = _checked_ids(ids)
        if len(ids) != len(images):
            raise ValueError(f"got {len(images)} images but {len(ids)} ids")
        if set(ids) & set(self.ids) or len(set(ids)) != len(ids):
            raise ValueError("image ids must be unique (an id is already in the index or repeated)")
        vectors = self.encoder.encode(images)
        # ids first: a search running meanwhile may see the new rows, and must find their ids
        before = len(self.ids)
        self.ids.extend(ids)
        try:
            self.index.add(vectors)
        except BaseException:
            del self.ids[before:]
            raise

    def search(self, images: Sequence[ImageLike], k: int = 5) -> list[list[Match]]:
        """The `k` nearest protected images of each query, most similar first."""
        k = require_positive_int(k, "k")
        queries = self.encoder.encode(images)
        if len(queries) == 0 or len(self) == 0:
            return [[] for _ in range(len(queries))]
        self._set_search_params()
        similarities, positions = self.index.search(queries, min(k, len(self)))
        return [
            [Match(self.ids[p], float(s)) for s, p in zip(row_s, row_p, strict=True) if p >= 0]
            for row_s, row_p in zip(similarities, positions, strict=True)
        ]

    def check(self, images: Sequence[ImageLike], threshold: float, k: int = 1) -> list[CopyCheck]:
        """Per image: its nearest protected images and whether the closest is at least `threshold` similar."""
        threshold = checked_threshold(threshold)
        return [CopyCheck(matches, threshold) for matches in self.search(images, k)]

    def save(self, path: str | os.PathLike) -> None:
        """Write the index at `path` and its sidecar beside it. Both are written in full before either
        replaces a file there; the sidecar records the index file's hash, so a pair that a crash between
        the two renames leaves mixed is refused by `load`. IndexFileError names what failed."""
        path = Path(path)
        if not path.parent.is_dir():
            raise IndexFileError(f"cannot save the index at {path}: no folder {path.parent}")
        index_tmp, sidecar_tmp = _temporary(path), _temporary(sidecar_path(path))
        try:
            faiss.write_index(self.index, str(index_tmp))
            digest = _file_sha256(index_tmp)
            sidecar_tmp.write_text(json.dumps(self._sidecar(digest)) + "\n")
            os.replace(index_tmp, path)
            os.replace(sidecar_tmp, sidecar_path(path))
        except (OSError, RuntimeError, ValueError) as err:  # faiss raises RuntimeError for its own I/O errors
            for tmp in (index_tmp, sidecar_tmp):
                _remove_quietly(tmp)
            why = cannot_open(err).strip().splitlines()[-1]  # faiss's messages start with its C++ location
            raise IndexFileError(f"cannot save the index at {path} ({why})") from None

    def _sidecar(self, index_sha256: str) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "encoder": self.encoder.name,
            "encoder_fingerprint": encoder_fingerprint(self.encoder),
            "dims": int(self.index.d),
            "count": len(self),
            "metric": "inner_product",
            "params": asdict(self.params),
            "faiss_version": faiss.__version__,
            "index_sha256": index_sha256,
            "ids": self.ids,
        }

    @classmethod
    def load(
        cls, path: str | os.PathLike, encoder: ImageEncoder | str | None = None, *, device: str = "cpu"
    ) -> VerificationIndex:
        """Read an index and its sidecar. `encoder` (an encoder or its spec) defaults to the one the
        sidecar names, loaded on `device`; either way it must be the encoder that built the index."""
        path = Path(path)
        meta = _read_sidecar(path)
        if encoder is not None:
            encoder = _as_encoder(encoder, device)
            _check_same_encoder(path, meta, encoder)
        if path.stat().st_size < 4 * meta["dims"] * meta["count"]:
            raise IndexFileError(
                f"{path} does not match its sidecar (the file is too small for {meta['count']} vectors "
                f"of {meta['dims']} dims)"
            )
        if "index_sha256" in meta and _file_sha256(path) != meta["index_sha256"]:
            raise IndexFileError(
                f"{path} is not the index file its sidecar {sidecar_path(path).name} was written with (another "
                "save's, or a save interrupted between the two files): its ids would name the wrong images; "
                "save or build the index again"
            )
        try:
            index = faiss.read_index(str(path))
        except RuntimeError:
            raise IndexFileError(f"{path} is not a readable faiss index") from None
        if index.d != meta["dims"] or index.ntotal != meta["count"] or len(meta["ids"]) != meta["count"]:
            raise IndexFileError(
                f"{path} does not match its sidecar (index: {index.d} dims, {index.ntotal} vectors; sidecar: "
                f"{meta['dims']} dims, {meta['count']} vectors, {len(meta['ids'])} ids)"
            )
        concrete = faiss.downcast_index(index)  # a view: `index` keeps owning the C++ object
        if not isinstance(concrete, _FAISS_CLASSES[meta["kind"]]):
            raise IndexFileError(f"{path} holds a {type(concrete).__name__}, its sidecar says kind {meta['kind']!r}")
        if encoder is None:
            try:
                encoder = encoder_from_name(meta["encoder"], device=device)
            except EncoderError as err:
                raise IndexFileError(
                    f"{path}: cannot load the encoder it was built with ({err}); "
                    "pass that encoder explicitly (encoder=, or --encoder on the command line)"
                ) from None
        if encoder.dim != meta["dims"]:
            raise IndexFileError(f"encoder {encoder.name!r} makes {encoder.dim}-dim rows, the index has {meta['dims']}")
        _check_same_encoder(path, meta, encoder)  # also when rebuilt from the sidecar: the model there may have changed
        try:
            params = IndexParams(**meta["params"])
        except (TypeError, ValueError) as err:
            raise IndexFileError(f"{sidecar_path(path)}: params: {err}") from None
        return cls(index, list(meta["ids"]), encoder, meta["kind"], params)

    def _set_search_params(self) -> None:
        if self.kind == "ivf":
            self.index.nprobe = min(self.params.nprobe, self.index.nlist)
        elif self.kind == "hnsw":
            self.index.hnsw.efSearch = self.params.ef_search


def _as_encoder(encoder: ImageEncoder | str, device: str = "cpu") -> ImageEncoder:
    if isinstance(encoder, str):
        return encoder_from_name(encoder, device=device)
    if not callable(getattr(encoder, "encode", None)) or not hasattr(encoder, "name") or not hasattr(encoder, "dim"):
        raise EncoderError(
            "encoder must be an encoder spec (str) or an image encoder with name, dim and encode(images), "
            f"got {type(encoder).__name__}"
        )
    return encoder


def _check_same_encoder(path: Path, meta: dict, encoder: ImageEncoder) -> None:
    """Embeddings of two encoders are not comparable: refuse unless the fingerprints agree (the name,
    for sidecars written before fingerprints, and for encoders of your own without one)."""
    built_name, built_fingerprint = meta["encoder"], meta.get("encoder_fingerprint")
    if built_fingerprint is None:
        same = encoder.name == built_name
    else:
        same = encoder_fingerprint(encoder) == built_fingerprint
    if same:
        return
    if encoder.name == built_name:
        raise IndexFileError(
            f"{path} was built with encoder {built_name!r}, whose weights or preprocessing differ from the model "
            f"loaded from there now (fingerprint {built_fingerprint}, now {encoder_fingerprint(encoder)}): "
            "rebuild the index, or load the model it was built with"
        )
    raise IndexFileError(
        f"{path} was built with encoder {built_name!r}, not {encoder.name!r}: "
        "embeddings of different encoders are not comparable"
    )


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def default_nlist(count: int) -> int:
    return max(1, min(int(4 * math.sqrt(count)), count // 39))


def _new_ivf(dim: int, vectors: np.ndarray, params: IndexParams) -> faiss.Index:
    nlist = params.nlist or default_nlist(len(vectors))
    if nlist > len(vectors):
        raise ValueError(f"nlist={nlist} clusters need at least as many images, got {len(vectors)}")
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.own_fields = True  # with the quantizer: the Python wrapper must not outlive it
    quantizer.this.disown()
    # faiss samples at most 256 points per cluster itself; a fixed seed makes builds repeatable
    index.cp.seed = 1234
    index.train(vectors)
    return index


def _new_hnsw(dim: int, params: IndexParams) -> faiss.Index:
    index = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = params.ef_construction
    return index


def _check_count(vectors: int, ids: int) -> None:
    if vectors != ids:
        raise ValueError(f"got {vectors} images but {ids} ids")


def _read_sidecar(path: Path) -> dict:
    sidecar = sidecar_path(path)
    try:
        if not path.is_file():
            raise IndexFileError(f"index file {path} not found")
    except (OSError, ValueError) as err:  # ValueError: a NUL in the path
        raise IndexFileError(f"index file {path} cannot be read ({cannot_open(err)})") from None
    try:
        meta = parse_json(read_limited(sidecar, MAX_SIDECAR_BYTES).decode("utf-8"))
    except FileTooLarge as err:
        raise IndexFileError(f"{sidecar}: {err}") from None
    except UnicodeDecodeError:
        raise IndexFileError(f"{sidecar} is not UTF-8 text") from None
    except (OSError, ValueError):
        raise IndexFileError(f"{path} has no sidecar {sidecar.name} (written by VerificationIndex.save)") from None
    except JsonSyntaxError as err:
        raise IndexFileError(f"{sidecar} is not valid JSON (line {err.line})") from None
    except ParseError as err:
        raise IndexFileError(f"{sidecar}: {err.message}") from None
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if isinstance(version, bool) or version != FORMAT_VERSION:
        raise IndexFileError(f"{sidecar}: unsupported format_version (this memguard reads {FORMAT_VERSION})")
    missing = sorted({"kind", "encoder", "dims", "count", "params", "ids"} - set(meta))
    if missing:
        raise IndexFileError(f"{sidecar}: missing field(s) {missing}")
    _check_sidecar_fields(sidecar, meta)
    return meta


def _check_sidecar_fields(sidecar: Path, meta: dict) -> None:
    def fail(name: str, message: str):
        raise IndexFileError(f"{sidecar}: {name}: {message}")

    if not isinstance(meta["kind"], str) or meta["kind"] not in INDEX_KINDS:
        fail("kind", f"unknown kind {shown(meta['kind'])} (known: {', '.join(INDEX_KINDS)})")
    if not isinstance(meta["encoder"], str) or not meta["encoder"]:
        fail("encoder", f"expected an encoder name, got {type_name(meta['encoder'])}")
    for name, low, high in (("dims", 1, MAX_DIMS), ("count", 0, None)):
        value = meta[name]
        if isinstance(value, bool) or not isinstance(value, int):
            fail(name, f"expected an integer, got {type_name(value)}")
        if value < low or (high is not None and value > high):
            fail(name, f"must be in {low}..{high if high is not None else ''}, got {shown(value)}")
    ids = meta["ids"]
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        fail("ids", "expected a list of strings")
    if len(set(ids)) != len(ids):
        fail("ids", "an id is repeated")
    digest = meta.get("index_sha256")
    if digest is not None and not (isinstance(digest, str) and re.fullmatch("[0-9a-f]{64}", digest)):
        fail("index_sha256", "expected 64 hexadecimal digits")
    if not isinstance(meta["params"], dict):
        fail("params", f"expected a mapping, got {type_name(meta['params'])}")


def _temporary(path: Path) -> Path:
    """Where `path` is written before it replaces the file there: a crash never leaves half a file."""
    return path.with_name(path.name + ".tmp")


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()
