"""Partial fine-tuning of the last stage(s) of the backbone, cheap on a CPU.

The frozen prefix (stem + early stages) runs once per image and augmented view; its
activations are cached on disk like embeddings. Each epoch then costs only the unfrozen
stage(s) and the head: seconds on a laptop. BatchNorm statistics stay frozen (the whole
network runs in eval mode; only the unfrozen parameters receive gradients), the backbone
learns at a lower rate than the head, the best epoch on validation loss is kept (early
stopping; the frozen start is epoch 0), and a checkpoint after every epoch lets an interrupted
run resume with the same result as an uninterrupted one. The checkpoint carries an XXH3-128 checksum: a damaged
one is named, set aside (never deleted) and fine-tuning starts again (:mod:`.checkpoint`).
"""

from ._partial import finetune_model, parse_stages, stage_names

__all__ = ["finetune_model", "stage_names", "parse_stages"]
