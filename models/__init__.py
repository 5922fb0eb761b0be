"""recstream ranking models: DIN / DIEN / BaseModel with an embedding bank split from the top net.

Kept import-free on purpose so ``import models`` is cheap; import the submodules you need,
e.g. ``from models.train import build_model, fit`` or ``from models.registry import
load_checkpoint``. See docs/models.md.
"""
