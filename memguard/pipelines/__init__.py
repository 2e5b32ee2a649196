from .stable_diffusion import GuardedStableDiffusionPipeline, guard

__all__ = ["GuardedStableDiffusionPipeline", "guard"]
