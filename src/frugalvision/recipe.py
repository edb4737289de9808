"""One training recipe: every option of ``train``, fine-tuning and ``tune``, typed and validated once.

A :class:`Recipe` is a frozen dataclass with keyword-only fields. It is checked in one place
(:meth:`Recipe.__post_init__`), against the declared table :data:`CONSTRAINTS` and the combination rules of
:func:`_combination_problems`, and every problem is said in one message. The CLI builds one from its options,
``train(data, recipe)`` takes one (or its fields as keywords), and ``tune`` searches recipes. Every field has
an effect on every path, frozen or fine-tuned, or the combination is refused here with the reason: nothing is
silently ignored.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace

from .backbones.registry import DEFAULT_BACKBONE
from .exceptions import DataError

__all__ = ["Recipe", "CONSTRAINTS", "FINETUNE_DEFAULTS", "as_recipe", "parse_finetune"]

_STAGES = re.compile(r"^(last-stage|last|1-stage|all|\d+(-stages?)?)$")


def parse_finetune(spec) -> int | None:
    """``None`` -> None; 'last-stage' -> 1; '2-stages' / '2' / 2 -> 2 (how many final stages are trained)."""
    if spec is None:
        return None
    if isinstance(spec, int) and not isinstance(spec, bool):
        return spec if spec >= 1 else 0
    s = str(spec).strip().lower()
    if s in ("last-stage", "last", "1-stage"):
        return 1
    head = s.split("-")[0]
    return int(head) if head.isdigit() and _STAGES.match(s) else 0


def _positive_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def _fraction(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1


#: Fine-tuning's own settings (``Recipe.finetune_params``), chosen on fashion4 (see frugalvision.finetune).
FINETUNE_DEFAULTS = {"lr_backbone": 1e-4, "lr_head": 1e-3, "weight_decay": 1e-4, "batch_size": 32, "patience": 8,
                     "schedule": "cosine", "max_seconds": None}  # max_seconds: stop after the epoch that passes it

#: Each field: (check, what it takes). Checked once, when a Recipe is made.
CONSTRAINTS = {
    "backbone": (lambda v: isinstance(v, str) and v != "", "a backbone name (frugalvision backbones) or timm:<name>"),
    "weights": (lambda v: v is None or isinstance(v, str), "a path to local weights, or nothing"),
    "precision": (lambda v: v in (None, "fp32", "int8", "auto"),
                  "fp32, int8, auto, or nothing (int8 where the shipped quantized graph can run, else fp32)"),
    "features": (lambda v: v in ("last", "multi"), "last (the pooled last layer) or multi (plus pooled stages)"),
    "crop_pct": (lambda v: v is None or (_positive_number(v) and v <= 1), "a centre-crop fraction in (0, 1]"),
    "finetune": (lambda v: v is None or (parse_finetune(v) or 0) >= 1, "'last-stage', 'N-stages' (N >= 1), or nothing"),
    "epochs": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a whole number >= 1"),
    "finetune_params": (lambda v: isinstance(v, dict) and set(v) <= set(FINETUNE_DEFAULTS),
                        f"a dict with keys among {', '.join(FINETUNE_DEFAULTS)}"),
    "head": (lambda v: v in ("linear", "mlp"), "linear or mlp"),
    "head_params": (lambda v: isinstance(v, dict), "a dict of head parameters"),
    "C": (lambda v: v == "auto" or _positive_number(v), "a positive number or 'auto'"),
    "class_weight": (lambda v: v in (None, "balanced"), "'balanced' or nothing"),
    "views": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a whole number >= 0"),
    "augment": (lambda v: v in (None, "light", "default", "strong"), "light, default or strong"),
    "balance_by_augmentation": (lambda v: isinstance(v, bool), "true or false"),
    "val_size": (lambda v: v is None or _fraction(v), "a fraction in [0, 1), or nothing (the default)"),
    "test_size": (lambda v: v is None or _fraction(v), "a fraction in [0, 1), or nothing (the default)"),
    "few_shot": (lambda v: v in (None, True, False), "true, false, or nothing (chosen from the data)"),
    "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    "calibrate": (lambda v: isinstance(v, bool), "true or false"),
    "goals": (lambda v: all(isinstance(g, str) for g in v), "goals such as 'accuracy>=0.9'"),
    "targets": (lambda v: all(isinstance(t, str) for t in v), "targets such as 'defective:recall>=0.9'"),
    "reject": (lambda v: isinstance(v, bool), "true or false"),
    "accept_rate": (lambda v: _positive_number(v) and v <= 1, "a share in (0, 1]"),
}


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """How to train a model; see ``frugalvision train --help`` for each option.

    Parameters
    ----------
    backbone, weights, precision, crop_pct :
        The network that embeds images: registry name, local weights file, precision, centre crop. Precision:
        ``fp32``, ``int8`` (the shipped quantized graph), ``auto`` (int8 only when the int8 model loses at most 0.5
        point against the fp32 model on validation) or None, the default: int8 where the shipped quantized graph
        can run (its backbone, its weights, frozen, on ONNX Runtime), else fp32 (:meth:`Recipe.precision_in_effect`).
    features :
        ``last``: the pooled last layer; ``multi``: plus the average- and max-pooled intermediate stages from the
        same pass (mid-level texture and edge features: what pays on data unlike ImageNet; see the README).
    finetune, epochs, finetune_params :
        Also train the last stage(s) of the backbone (``'last-stage'``, ``'2-stages'``), with early stopping;
        ``finetune_params`` overrides :data:`FINETUNE_DEFAULTS` (learning rates, weight decay, batch, patience).
    head, head_params, C, class_weight :
        The classifier on the embeddings (``linear``: exact CAM; ``mlp``), its regularisation (``'auto'``: chosen
        on validation log-loss) and class weighting.
    views, augment, balance_by_augmentation :
        Augmented views per training image and their policy (fine-tuning: views per epoch cycle, 8 when 0).
    val_size, test_size, seed :
        The held-out fractions (stratified, seeded; copies of one image stay in one split); by default 0.15 each;
        the small-data path has no validation split (cross-validation on the training images replaces it).
    few_shot :
        The small-data path (:mod:`frugalvision.small_data`): True, False, or None to use it when the smallest
        class has fewer than ``FEW_SHOT_BELOW`` images and no option asks for the usual path.
    calibrate, goals, targets, reject, accept_rate :
        Softmax temperature on validation; what "good enough" means; operating points chosen on validation;
        the "none of these" score and the share of normal validation images its threshold keeps.
    """

    backbone: str = DEFAULT_BACKBONE
    weights: str | None = None
    precision: str | None = None
    features: str = "last"
    crop_pct: float | None = None
    finetune: str | None = None
    epochs: int = 24
    finetune_params: dict = None  # type: ignore[assignment]  # -> {} (keys of FINETUNE_DEFAULTS)
    head: str = "linear"
    head_params: dict = None  # type: ignore[assignment]  # -> {}
    C: float | str = "auto"
    class_weight: str | None = None
    views: int = 0
    augment: str | None = None
    balance_by_augmentation: bool = False
    few_shot: bool | None = None
    val_size: float | None = None
    test_size: float | None = None
    seed: int = 0
    calibrate: bool = True
    goals: tuple = ()
    targets: tuple = ()
    reject: bool = True
    accept_rate: float = 0.95

    def __post_init__(self):
        # Normalise the forms people pass (a list, one string, a Path), then check everything once.
        set_ = object.__setattr__
        set_(self, "head_params", dict(self.head_params or {}))
        set_(self, "finetune_params", dict(self.finetune_params or {}))
        for name in ("goals", "targets"):
            v = getattr(self, name)
            set_(self, name, (v,) if isinstance(v, str) else tuple(v or ()))
        if self.weights is not None and not isinstance(self.weights, str):
            set_(self, "weights", str(self.weights))
        if isinstance(self.C, str) and self.C != "auto":
            try:
                set_(self, "C", float(self.C))
            except ValueError:
                pass
        problems = [f"{name} = {getattr(self, name)!r}: expected {what}"
                    for name, (check, what) in CONSTRAINTS.items() if not check(getattr(self, name))]
        problems += _combination_problems(self) if not problems else []
        if problems:
            raise DataError("The training recipe cannot be used: " + "; ".join(problems) + ".")

    def precision_in_effect(self, engine: str = "auto") -> str:
        """The precision a run uses: as given, else int8 where the shipped quantized graph can run (the backbone
        has one, with its shipped weights, frozen, not on eager PyTorch), else fp32. On every development set int8
        was within 0.5 point of fp32 and never significantly worse (paired; see the README's "int8"), and 1.7x
        faster."""
        if self.precision is not None:
            return self.precision
        from .backbones.shipped import int8_backbones

        if self.finetune or self.weights is not None or engine == "torch":
            return "fp32"
        return "int8" if self.backbone in int8_backbones() else "fp32"

    @property
    def finetune_stages(self) -> int | None:
        return parse_finetune(self.finetune)

    def split_sizes(self, small_data: bool) -> tuple[float, float]:
        """``(val_size, test_size)`` in effect: as given, else 0.15 each; the small-data path has no validation
        split (cross-validation replaces it) and keeps the test split, so evaluate and report judge held-out
        images (``test_size=0`` fits on every labelled image; then only the cross-validated estimate judges it)."""
        return (0.0 if small_data and self.val_size is None else 0.15 if self.val_size is None else self.val_size,
                0.15 if self.test_size is None else self.test_size)

    @property
    def finetune_settings(self) -> dict:
        return {**FINETUNE_DEFAULTS, **self.finetune_params}

    @property
    def augment_policy(self) -> str:
        """The augmentation policy in effect: 'light' for fine-tuning, 'default' for frozen views, unless given."""
        return self.augment or ("light" if self.finetune else "default")

    def replace(self, **changes) -> "Recipe":
        return replace(self, **changes)

    def to_json(self) -> dict:
        d = asdict(self)
        d["goals"], d["targets"] = list(self.goals), list(self.targets)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Recipe":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _combination_problems(r: Recipe) -> list[str]:
    """Options that cannot go together, each with the reason and what to do instead."""
    out = []
    if r.finetune and r.precision == "int8":
        out.append("--precision int8 cannot go with --finetune: the int8 graph holds the shipped ImageNet weights, "
                   "not fine-tuned ones (a fine-tuned backbone runs in fp32; use --precision fp32 or auto)")
    if r.finetune and r.balance_by_augmentation:
        out.append("--balance-by-augmentation cannot go with --finetune: fine-tuning cycles through the same views "
                   "of every image; use --class-weight balanced, which fine-tuning applies to its loss and head")
    if r.head != "linear" and r.C != "auto":
        out.append(f"--C sets the linear head's regularisation; the {r.head} head has its own (head_params)")
    if r.epochs != 24 and not r.finetune:
        out.append("--epochs counts fine-tuning epochs: it needs --finetune (a frozen backbone's head has no epochs)")
    if r.finetune_params and not r.finetune:
        out.append("finetune_params apply only with --finetune")
    if r.finetune_settings["schedule"] not in ("cosine", "constant"):
        out.append("finetune_params['schedule'] must be 'cosine' or 'constant'")
    ms = r.finetune_settings["max_seconds"]
    if ms is not None and not _positive_number(ms):
        out.append("finetune_params['max_seconds'] must be a positive number of seconds (or None: no limit)")
    val, test = r.split_sizes(False)
    if val + test >= 1:
        out.append(f"val_size + test_size = {val + test:g} leaves no training images")
    if r.finetune and val == 0:
        out.append("--finetune needs a validation split for early stopping (val_size > 0)")
    if r.few_shot:
        why = {"--finetune": r.finetune, "--head mlp": r.head != "linear", "--C": r.C != "auto",
               "--val-size": r.val_size is not None and r.val_size > 0}
        clash = [k for k, v in why.items() if v]
        if clash:
            out.append(f"--few-shot cannot go with {', '.join(clash)}: the small-data path fits a linear head on every "
                       f"labelled image and chooses it, and its C, by cross-validation (no validation split to "
                       f"fine-tune or stop on); use --no-few-shot for the usual path")
    if r.head == "linear" and set(r.head_params) - {"C", "class_weight"}:
        out.append(f"head_params {sorted(set(r.head_params) - {'C', 'class_weight'})} do not apply to the linear head")
    return out


def as_recipe(recipe: Recipe | None = None, **options) -> Recipe:
    """``recipe`` with ``options`` applied, or a new Recipe of ``options``; unknown names are refused."""
    known = {f.name for f in fields(Recipe)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise DataError(f"Unknown training option(s) {', '.join(unknown)}; a Recipe takes {', '.join(sorted(known))}.")
    if recipe is None:
        return Recipe(**options)
    if not isinstance(recipe, Recipe):
        raise DataError(f"recipe must be a frugalvision.Recipe, got {type(recipe).__name__}.")
    return recipe.replace(**options) if options else recipe
