"""DPO on the kept subset with Ray Train (docs/design.md §7): TRL's DPOTrainer with core's LP-DPO loss in every
worker, LoRA or full fine-tuning, Ray Train checkpoints and resume, per-language held-out evaluation.

``load_train_config`` is cheap to import; ``run_training`` starts Ray (import it from :mod:`.run`).
"""

from .config import TrainConfig, load_train_config

__all__ = ["TrainConfig", "load_train_config", "run_training"]


def __getattr__(name: str):
    if name == "run_training":
        from .run import run_training

        return run_training
    raise AttributeError(name)
