"""Encoder specs: the strings that name an encoder on the command line and in an index's sidecar.

    pixel-<size>                          PixelEncoder (offline; testbed and tests)
    dinov2:<folder or hub id>[?pool=mean] DinoV2Encoder (CLS token by default)
    clip:<folder or hub id>               ClipVisionEncoder
    torchscript:<file>[?size=288&resize=short&mean=r,g,b&std=r,g,b]
                                          TorchScriptEncoder (SSCD and the like; square 320 by default)
    open_clip:<model>/<pretrained>        OpenClipEncoder (needs open_clip_torch and torchvision)

Options follow the last '?', as key=value pairs joined by '&'. An encoder's `name` is its spec with
only the options that differ from the defaults, so the same encoder always has the same name.
"""

from __future__ import annotations

from collections.abc import Callable

from .encoders import PIXEL_PREFIX, EncoderError, ImageEncoder, PixelEncoder

SPEC_FORMS = (
    "pixel-<size>",
    "dinov2:<folder or hub id>[?pool=mean]",
    "clip:<folder or hub id>",
    "torchscript:<file>[?size=N&resize=square|short]",
    "open_clip:<model>/<pretrained>",
)
SPEC_HELP = (
    "'pixel-32' (offline, testbed only), 'dinov2:FOLDER_OR_HUB_ID[?pool=mean]', 'clip:FOLDER_OR_HUB_ID', "
    "'torchscript:FILE.pt[?size=288&resize=short]' (e.g. SSCD, your own file) or "
    "'open_clip:MODEL/PRETRAINED' (needs torchvision)"
)


def encoder_from_name(spec: str, device: str = "cpu", batch_size: int | None = None) -> ImageEncoder:
    """Build the encoder a spec names (an index's sidecar stores its encoder's spec as `encoder`).

    Raises `EncoderError` (one line, naming the spec) for a bad spec or a model that cannot be loaded."""
    if not isinstance(spec, str) or not spec.strip():
        raise EncoderError(f"encoder spec must be a non-empty string, got {spec!r}")
    if spec.startswith(PIXEL_PREFIX):
        size = spec[len(PIXEL_PREFIX) :]
        if not size.isdigit():
            raise EncoderError(f"encoder spec {spec!r}: the pixel encoder's size must be a number, as in 'pixel-32'")
        return PixelEncoder(int(size))
    family, colon, rest = spec.partition(":")
    if not colon or family not in _BUILDERS:
        raise EncoderError(f"unknown encoder {spec!r} (expected one of: {', '.join(SPEC_FORMS)})")
    source, options = _split_options(spec, family, rest)
    if not source:
        raise EncoderError(f"encoder spec {spec!r}: nothing after '{family}:' (expected {_form(family)})")
    extra = {"device": device} | ({"batch_size": batch_size} if batch_size is not None else {})
    return _BUILDERS[family](spec, source, options, extra)


def _form(family: str) -> str:
    return next(form for form in SPEC_FORMS if form.startswith(family + ":"))


def _split_options(spec: str, family: str, rest: str) -> tuple[str, dict[str, str]]:
    source, question, query = rest.rpartition("?")
    if not question:
        return rest, {}
    options: dict[str, str] = {}
    for pair in query.split("&"):
        key, equals, value = pair.partition("=")
        if not equals or not key or not value:
            raise EncoderError(f"encoder spec {spec!r}: options after '?' are key=value pairs joined by '&'")
        if key not in _OPTIONS[family]:
            known = ", ".join(_OPTIONS[family]) or "none"
            raise EncoderError(f"encoder spec {spec!r}: unknown option {key!r} for {family} (known: {known})")
        options[key] = value
    return source, options


def _floats(spec: str, key: str, value: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise EncoderError(f"encoder spec {spec!r}: {key} must be numbers joined by ',', got {value!r}") from None


def _dinov2(spec, source, options, extra):
    from .transformers_encoders import DinoV2Encoder

    return DinoV2Encoder(source, pool=options.get("pool", "cls"), **extra)


def _clip(spec, source, options, extra):
    from .transformers_encoders import ClipVisionEncoder

    return ClipVisionEncoder(source, **extra)


def _torchscript(spec, source, options, extra):
    from .torchscript_encoder import IMAGENET_MEAN, IMAGENET_STD, TorchScriptEncoder

    size = options.get("size", "320")
    if not size.isdigit():
        raise EncoderError(f"encoder spec {spec!r}: size must be a whole number of pixels, got {size!r}")
    return TorchScriptEncoder(
        source,
        size=int(size),
        resize=options.get("resize", "square"),
        mean=_floats(spec, "mean", options["mean"]) if "mean" in options else IMAGENET_MEAN,
        std=_floats(spec, "std", options["std"]) if "std" in options else IMAGENET_STD,
        **extra,
    )


def _open_clip(spec, source, options, extra):
    from .open_clip_encoder import OpenClipEncoder

    model, slash, pretrained = source.partition("/")
    if not slash or not model or not pretrained:
        raise EncoderError(
            f"encoder spec {spec!r}: expected {_form('open_clip')}, e.g. open_clip:ViT-B-32/laion2b_s34b_b79k"
        )
    return OpenClipEncoder(model, pretrained, **extra)


_BUILDERS: dict[str, Callable[..., ImageEncoder]] = {
    "dinov2": _dinov2,
    "clip": _clip,
    "torchscript": _torchscript,
    "open_clip": _open_clip,
}
_OPTIONS: dict[str, tuple[str, ...]] = {
    "dinov2": ("pool",),
    "clip": (),
    "torchscript": ("size", "resize", "mean", "std"),
    "open_clip": (),
}
