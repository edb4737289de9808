"""Partial fine-tuning of the last stage(s) of the backbone, cheap on a CPU: the code behind
``frugalvision.finetune`` (its docstring says more).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from ..exceptions import DataError
from .checkpoint import read_checkpoint

__all__ = ["finetune_model", "stage_names", "parse_stages"]


def stage_names(model) -> list[str]:
    """Stage module paths of a timm CNN, first to last."""
    if hasattr(model, "blocks"):
        return [f"blocks.{i}" for i in range(len(model.blocks))]
    if hasattr(model, "layer4"):
        return [f"layer{i}" for i in range(1, 5)]
    if hasattr(model, "stages"):
        return [f"stages.{i}" for i in range(len(model.stages))]
    raise DataError(f"Don't know the stages of {type(model).__name__}; fine-tuning supports EfficientNet, ResNet "
                    f"and ConvNeXt-style timm models.")


def parse_stages(spec) -> int:
    """'last-stage' -> 1, '2-stages' / '2' / 2 -> 2."""
    if isinstance(spec, int):
        n = spec
    else:
        s = str(spec).strip().lower()
        n = 1 if s in ("last-stage", "last", "1-stage") else int(s.split("-")[0]) if s.split("-")[0].isdigit() else 0
    if n < 1:
        raise DataError(f"--finetune takes 'last-stage' or 'N-stages' (N >= 1), got {spec!r}.")
    return n


class _Split:
    """The network cut in two: a frozen prefix (cached) and a trainable suffix + head."""

    def __init__(self, backbone, n_stages: int):
        import torch

        model = backbone.model
        names = stage_names(model)
        if n_stages > len(names):
            raise DataError(f"The backbone has {len(names)} stages; cannot fine-tune {n_stages}.")
        self.backbone = backbone
        self.first = names[-n_stages]
        self.trainable_names = names[-n_stages:]
        # Everything after the cut is trainable: the last stage(s) and the head conv/BN of EfficientNets.
        children = list(model.named_children())
        # The tail starts after the container of the *last* stage (blocks for EfficientNet, layer4 for ResNet).
        idx_stage = [n for n, _ in children].index(self.trainable_names[-1].split(".")[0])
        tail = [n for n, _ in children[idx_stage + 1:] if n not in ("global_pool", "classifier", "fc", "head")]
        self.tail_names = tail
        model.requires_grad_(False)
        for n in self.trainable_names + tail:
            model.get_submodule(n).requires_grad_(True)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.torch = torch

    def prefix(self, x):
        """Normalised NCHW -> activation entering the first trainable stage."""
        model = self.backbone.model
        x = model.bn1(model.conv_stem(x)) if hasattr(model, "conv_stem") else model.maxpool(model.act1(model.bn1(model.conv1(x))))
        if hasattr(model, "blocks"):
            k = int(self.first.split(".")[1])
            for blk in model.blocks[:k]:
                x = blk(x)
        else:
            for name in stage_names(model)[: stage_names(model).index(self.first)]:
                x = model.get_submodule(name)(x)
        return x

    def suffix(self, a):
        """Activation -> pooled embedding (through the trainable stages and tail)."""
        model = self.backbone.model
        for n in self.trainable_names + self.tail_names:
            a = model.get_submodule(n)(a)
        return model.forward_head(a, pre_logits=True)


def _compact(act: np.ndarray) -> np.ndarray:
    """Activations as float16 when they fit its range (65,504), else unchanged."""
    return act.astype(np.float16) if not act.size or max(float(act.max()), -float(act.min())) < 6e4 else act


def _prefix_engine(split: _Split, spec, weights_id: str, n_stages: int, engine: str = "auto", cache_dir=None):
    """An engine whose 'embedding' is the flattened prefix activation (cached like embeddings).

    The prefix is frozen, so it is exported to ONNX like a backbone (keyed by weights and cut point).
    """
    import torch

    from ..config import cache_root
    from ..features.engine import make_engine

    class Prefix(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bb = split.backbone
            self.spec = spec

        def forward(self, images):
            a = split.prefix(self.bb.normalise(images))
            return a, a.flatten(1)

    mod = Prefix().eval()
    mod.weights_id = f"{weights_id}|prefix-before-{split.first}"
    return make_engine(backbone=mod, engine=engine, onnx_dir=cache_root(cache_dir) / "onnx", threads=1)


def finetune_model(data, recipe, *, out=None, engine: str = "auto", cache_dir=None, split_file=None,
                   progress: bool = True):
    """The fine-tuning path of :func:`frugalvision.train`: returns a :class:`Model`.

    The frozen model gives the split and the starting linear head; the last ``recipe.finetune`` stages and a
    linear head are trained on cached prefix activations of ``recipe.views`` augmented views (8 when 0) with the
    backbone at a lower rate than the head (``recipe.finetune_settings``), keeping the epoch with the lowest
    validation loss. Then the recipe's head stage runs on the fine-tuned embeddings exactly as on frozen ones:
    head and C, class weights, temperature, operating point, "none of these" score, goals.

    Defaults chosen on fashion4 (28-px product photos, 1,360 training images): a backbone rate 10x below the head's,
    8 light views, patience 8, cosine decay. There the last stage alone did not beat the frozen backbone (92.8 %
    mean test accuracy over 3 splits vs 93.25 %); 2 stages reached 94.25 % on one split (frozen 93.5 %).
    ``finetune_checkpoint.safetensors`` is written to ``out`` after every epoch; the same command resumes from it
    (a damaged checkpoint is set aside with a warning and fine-tuning starts again).
    """
    from .._optional import require_torch

    require_torch("Fine-tuning")
    import torch

    from ..backbones.build import build_backbone
    from ..features.augment import augmented_decoder, view_name
    from ..features.extract import Extractor
    from ..model import Model
    from ..fitting import _summary, assemble_model, embed_dataset, fit_frozen, fit_head_stage, make_extractor

    st = recipe.finetune_settings
    lr_backbone, lr_head, weight_decay = st["lr_backbone"], st["lr_head"], st["weight_decay"]
    batch_size, patience, schedule = int(st["batch_size"]), int(st["patience"]), st["schedule"]
    n_stages, epochs, seed = recipe.finetune_stages, recipe.epochs, recipe.seed
    views, augment = recipe.views or 8, recipe.augment_policy
    backbone, weights = recipe.backbone, recipe.weights
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    # 1. The frozen model: the split (the recipe's sizes and seed) and a linear head to start from.
    frozen = recipe.replace(finetune=None, epochs=24, finetune_params={}, precision="fp32", head="linear",
                            head_params={}, C="auto", views=0, augment=None, goals=(), targets=(), reject=False,
                            balance_by_augmentation=False, features="last")
    ex = make_extractor(frozen, "fp32", engine=engine, cache_dir=cache_dir, progress=progress)
    val_size, test_size = recipe.split_sizes(False)
    td = embed_dataset(data, ex, split_file=split_file, val_size=val_size, test_size=test_size, seed=recipe.seed)
    base = fit_frozen(td, ex, frozen, data)
    bb = build_backbone(backbone, weights)
    split = _Split(bb, n_stages)
    pre = Extractor(backbone, engine=_prefix_engine(split, bb.spec, bb.weights_id, n_stages, engine, cache_dir),
                    cache_dir=cache_dir,
                    crop_pct=base.preprocessing["crop_pct"], progress=progress, pool="thread")
    tr = td.table[td.table["split"] == "train"]
    va = td.table[td.table["split"] == "val"]
    if len(va) == 0:
        raise DataError("Fine-tuning needs a validation split for early stopping; use val_size > 0.")
    classes = list(base.classes)
    y_tr = np.array([classes.index(c) for c in tr["label"]])
    y_va = np.array([classes.index(c) for c in va["label"]])
    # 2. Prefix activations: clean train/val once, and each augmented view once. Held as float16 (batches are
    # widened to float32 as they are used): the views are most of fine-tuning's memory (2 stages of Lite0:
    # 88 KB an image and view in float32, 1.7 GB for 2,167 images x 9), and float16's 3 digits are far finer than
    # the augmentation's own noise.
    act_views = [(_compact(pre(tr["path"].tolist()).X), y_tr)]
    for k in range(views):
        e = pre(tr["path"].tolist(), view=view_name(augment, k),
                decoder=augmented_decoder(pre.preprocessing, augment, k))
        act_views.append((_compact(e.X), y_tr[e.ok]))
        del e
    act_va = _compact(pre(va["path"].tolist()).X)
    shape = _act_shape(split, bb.spec.input_size)
    # 3. Train the suffix + head, keeping the epoch with the lowest validation loss.
    head = torch.nn.Linear(bb.spec.embed_dim, len(classes))
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(base.head.coef_, dtype=torch.float32))
        head.bias.copy_(torch.as_tensor(base.head.intercept_, dtype=torch.float32))
    named = {f"backbone.{n}": p for n, p in bb.model.named_parameters() if p.requires_grad}
    named.update({f"head.{n}": p for n, p in head.named_parameters()})
    opt = torch.optim.AdamW([{"params": split.params, "lr": lr_backbone}, {"params": head.parameters(), "lr": lr_head}],
                            weight_decay=weight_decay)
    config = {"backbone": backbone, "stages": n_stages, "lr_backbone": lr_backbone, "lr_head": lr_head,
              "weight_decay": weight_decay, "batch_size": batch_size, "views": views, "augment": augment,
              "seed": seed, "n_train": int(len(tr)), "epochs": epochs, "patience": patience, "schedule": schedule,
              "class_weight": recipe.class_weight, "activations": "float16"}  # a float32-era checkpoint restarts
    # Class weights (--class-weight balanced) apply to the fine-tuning loss as to the head.
    loss_weight = None
    if recipe.class_weight == "balanced":
        counts = np.bincount(y_tr, minlength=len(classes)).astype(np.float32)
        loss_weight = torch.as_tensor(len(y_tr) / (len(classes) * np.maximum(counts, 1)), dtype=torch.float32)
    ckpt = out / "finetune_checkpoint.safetensors" if out is not None else None
    state = {"epoch": 0, "bad_epochs": 0, "history": [], "resumed_from_epoch": None}
    best = None
    # A damaged checkpoint is named, set aside and not used (read_checkpoint gives None): a fresh start.
    found = read_checkpoint(ckpt) if ckpt is not None and ckpt.exists() else None
    if found is not None:
        meta, tensors = found
        if meta.get("config") == config:
            with torch.no_grad():
                for n, p in named.items():
                    p.copy_(torch.from_numpy(tensors[n]))
            best = {n[5:]: torch.from_numpy(v) for n, v in tensors.items() if n.startswith("best.")}
            _load_opt(opt, tensors, list(named.values()))
            state = {**meta["state"], "resumed_from_epoch": meta["state"]["epoch"]}
    bb.model.eval()  # BatchNorm statistics frozen; only requires_grad parameters learn
    base_lrs = [g["lr"] for g in opt.param_groups]

    def run_epoch(epoch: int) -> float:
        # Epoch e trains on view e mod (views + 1), the clean image first. One generator per epoch, so a
        # resumed run sees the same batches as an uninterrupted one.
        X, y = act_views[(epoch - 1) % len(act_views)]
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).numpy()
        tl = 0.0
        for s in range(0, len(y), batch_size):
            bi = perm[s:s + batch_size]
            a = torch.from_numpy(np.asarray(X[bi], dtype=np.float32)).view(-1, *shape)
            if schedule == "cosine":  # from the position in the run, so a resumed run continues the same curve
                f = 0.5 * (1 + np.cos(np.pi * min((epoch - 1 + s / len(y)) / epochs, 1.0)))
                for g, lr0 in zip(opt.param_groups, base_lrs):
                    g["lr"] = lr0 * f
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(head(split.suffix(a)), torch.as_tensor(y[bi]), weight=loss_weight)
            loss.backward()
            opt.step()
            tl += float(loss.detach()) * len(bi)
        return tl / len(y)

    def say(msg):
        if progress:
            print(msg, flush=True)

    if state["epoch"] == 0:  # epoch 0 is a candidate: no epoch beating the frozen start on validation keeps it
        loss0, acc0 = _validate(split, head, act_va, y_va, shape)[:2]
        state.update(best_val_loss=loss0, best_epoch=0, start_val_loss=loss0, start_val_accuracy=acc0)
        best = {n: p.detach().clone() for n, p in named.items()}
    max_seconds = st.get("max_seconds")
    for epoch in range(state["epoch"] + 1, epochs + 1):
        if state["bad_epochs"] >= patience:
            break
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:  # the time budget (tune --budget)
            state["stopped_by_budget"] = True
            say(f"  time budget of {max_seconds:.0f} s reached after epoch {epoch - 1}: keeping the best epoch so far")
            break
        tl = run_epoch(epoch)
        val_loss, val_acc, _ = _validate(split, head, act_va, y_va, shape)
        state["history"].append({"epoch": epoch, "train_loss": tl, "val_loss": val_loss, "val_accuracy": val_acc})
        say(f"  epoch {epoch}/{epochs}: train loss {tl:.4f}, val loss {val_loss:.4f}, val accuracy {val_acc:.3f}")
        if val_loss < state["best_val_loss"] - 1e-4:
            state.update(best_val_loss=val_loss, bad_epochs=0, best_epoch=epoch, best_val_accuracy=val_acc)
            best = {n: p.detach().clone() for n, p in named.items()}
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        if ckpt is not None:
            _save_checkpoint(ckpt, named, best, opt, state, config)
    if state["best_epoch"] == 0:
        say(f"  no epoch beat the frozen backbone on validation (loss {state['start_val_loss']:.4f}): keeping it")
    # The selected weights; then the recipe's head stage on the embeddings of the fine-tuned network.
    with torch.no_grad():
        for n, p in named.items():
            p.copy_(best[n])
    names = np.asarray(classes)
    tensors = {k: v.detach().numpy().copy() for k, v in bb.model.state_dict().items()}
    digest = hashlib.sha256(b"".join(tensors[k].tobytes() for k in sorted(tensors))).hexdigest()[:16]
    backbone_meta = {**base.info.to_json()["backbone"], "weights_id": f"finetuned:{digest}",
                     "base_weights_id": base.info.backbone.weights_id, "precision": "fp32"}
    # The head stage reads the embeddings the saved model will compute at inference (its exported network), not
    # the training loop's torch suffix: near-constant features differ in the last bits between the two, and a
    # standardised head turns such bits into large weights. When no epoch beat the frozen start the backbone is
    # unchanged, and its cached embeddings are those.
    X_tr, X_va = td.part("train")[0], td.part("val")[0]
    if recipe.features == "multi":  # the fine-tuned (or kept) network's graph with its pooled stages
        from ..config import cache_root
        from ..features.engine import make_engine

        bb.weights_id = backbone_meta["weights_id"]
        mex = Extractor(backbone, engine=make_engine(backbone=bb, engine="onnx", features="multi",
                                                     onnx_dir=cache_root(cache_dir) / "onnx"),
                        cache_dir=cache_dir, crop_pct=base.preprocessing["crop_pct"], progress=progress)
        X_tr, X_va = mex(tr["path"].tolist()).X, mex(va["path"].tolist()).X
        backbone_meta.update(features="multi", embed_dim=mex.embed_dim)
    elif state["best_epoch"] > 0:
        probe = Model(base.head, {**json.loads(json.dumps(base.info.to_json())), "backbone": backbone_meta},
                      backbone_tensors=tensors)
        X_tr = probe.embed(tr["path"].tolist(), engine=engine, cache_dir=cache_dir, progress=progress).X
        X_va = probe.embed(va["path"].tolist(), engine=engine, cache_dir=cache_dir, progress=progress).X
    fit = fit_head_stage(X_tr, names[y_tr], X_va, names[y_va], recipe)
    finetune_info = {**config, "epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
                     "best_val_loss": state["best_val_loss"], "best_val_accuracy": state.get("best_val_accuracy"),
                     "start_val_loss": state.get("start_val_loss"),
                     "start_val_accuracy": state.get("start_val_accuracy"),
                     "history": state["history"],
                     "resumed_from_epoch": state["resumed_from_epoch"],
                     "stopped_by_budget": bool(state.get("stopped_by_budget")),
                     "trainable": split.trainable_names + split.tail_names,
                     "seconds": time.perf_counter() - t0}
    summary = _summary(td, fit, data, X_va, names[y_va])
    # The views trained the backbone (each epoch one view); the head stage is fitted on clean images.
    summary["augmentation"] = {"policy": augment, "views": views, "balance_by_augmentation": False,
                               "augmented_rows": 0}
    summary["precision_check"] = ({"chosen": "fp32", "reason": "a fine-tuned backbone runs in fp32 (the int8 graph "
                                   "holds the shipped weights)"} if recipe.precision == "auto" else None)
    return assemble_model(fit, backbone=backbone_meta, preprocessing=base.info.preprocessing.to_dict(),
                          recipe=recipe, summary=summary, td=td, backbone_tensors=tensors, finetune=finetune_info)


def _act_shape(split: _Split, size: int):
    import torch

    with torch.no_grad():
        a = split.prefix(torch.zeros(1, 3, size, size))
    return tuple(a.shape[1:])


def _validate(split, head, act, y, shape):
    import torch

    with torch.no_grad():
        logits = torch.cat([head(split.suffix(torch.from_numpy(np.asarray(act[s:s + 64], dtype=np.float32)).view(-1, *shape)))
                            for s in range(0, len(act), 64)])
        loss = float(torch.nn.functional.cross_entropy(logits, torch.as_tensor(y)))
    return loss, float((logits.argmax(1).numpy() == y).mean()), logits.numpy()


def _save_checkpoint(path: Path, named, best, opt, state, config):
    from .checkpoint import write_checkpoint

    tensors = {n: p.detach().numpy().copy() for n, p in named.items()}
    tensors.update({f"best.{n}": v.numpy().copy() for n, v in (best or {}).items()})
    params = list(named.values())
    for i, p in enumerate(params):
        st = opt.state.get(p, {})
        for k in ("exp_avg", "exp_avg_sq"):
            if k in st:
                tensors[f"opt.{i}.{k}"] = st[k].numpy().copy()
        if "step" in st:
            tensors[f"opt.{i}.step"] = np.asarray([float(st["step"])], dtype=np.float32)
    # One file, written atomically, with a checksum over tensors and loop state (see .checkpoint).
    write_checkpoint(path, tensors, {"state": state, "config": config})


def _load_opt(opt, tensors, params):
    import torch

    for i, p in enumerate(params):
        if f"opt.{i}.exp_avg" in tensors:
            opt.state[p] = {"exp_avg": torch.from_numpy(tensors[f"opt.{i}.exp_avg"]),
                            "exp_avg_sq": torch.from_numpy(tensors[f"opt.{i}.exp_avg_sq"]),
                            "step": torch.tensor(float(tensors[f"opt.{i}.step"][0]))}
