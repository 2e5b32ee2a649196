"""Intent: which prompt words carry the memorization signal, and did the user ask for it?"""

from .attribution import ATTRIBUTION_METHODS, AttributionMethod
from .implicit import ImplicitIntentUnavailable, ImplicitMatcher, OpenClipTextEmbedder, PipelineTextEmbedder
from .registry import IntendedConcept, IntentRegistry, Mention, RegistryError
from .resolver import INTENTS, Intent, IntentResolver, IntentVerdict

__all__ = [
    "ATTRIBUTION_METHODS",
    "AttributionMethod",
    "INTENTS",
    "ImplicitIntentUnavailable",
    "ImplicitMatcher",
    "IntendedConcept",
    "Intent",
    "IntentRegistry",
    "IntentResolver",
    "IntentVerdict",
    "Mention",
    "OpenClipTextEmbedder",
    "PipelineTextEmbedder",
    "RegistryError",
]
