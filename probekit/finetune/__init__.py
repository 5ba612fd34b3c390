"""Fine-tuning with the official BAT recipes: the FT column next to the probes.

`probekit.finetune.finetune(backbone, dataset)` (CLI `probekit finetune`, or `probekit.evaluate(...,
probes=["finetune"])`) trains the whole encoder with the official linear head on live inputs and writes a
result record with probe name "finetune" (shown as FT).
"""

from probekit.finetune.recipes import DATASET_RECIPE, RECIPES, FinetuneRecipe, get_recipe, list_recipes, recipe_for
from probekit.finetune.run import FinetuneOutcome, finetune, finetune_record, resolve_recipe

__all__ = ["DATASET_RECIPE", "RECIPES", "FinetuneOutcome", "FinetuneRecipe", "finetune", "finetune_record",
           "get_recipe", "list_recipes", "recipe_for", "resolve_recipe"]
