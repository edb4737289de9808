"""The labelling loop without a browser: :class:`LabelSession` (the page in :mod:`.app` drives the same object).

A session holds the images (paths; the images themselves are only read, never moved or written), the classes,
the decisions so far (loaded from and saved to the manifest of :mod:`.manifest`, so it resumes), and the cached
embeddings. It chooses what to label next (:mod:`.strategy`), guesses each image's class with a head refitted
on the labels (logistic regression on CL2N embeddings, or the head the last estimate chose), and estimates the
accuracy with the small-data path's cross-validation (:func:`frugalvision.small_data.fit_small_data`).

Example::

    from frugalvision.label import LabelSession
    s = LabelSession("unlabelled/", ["cat", "dog"], manifest="labelled/manifest.csv")
    s.prepare()                         # embeddings (cached), once
    for item in s.next_batch(10):
        s.record(item["path"], "cat")   # or "none" (not any class), "skip"
    s.undo()
    s.estimate()                        # CV accuracy, Wilson interval, counts, advice
"""

from __future__ import annotations

import datetime as _dt
import getpass
import os
import threading
from pathlib import Path

import numpy as np

from ..exceptions import DataError
from . import strategy as _strategy
from .manifest import NONE, SKIP, read_labels, write_labels

__all__ = ["RESERVED", "LabelSession", "LoopModel", "loop_model"]

#: Answers that are not a class (a class cannot have these names).
RESERVED = (NONE, SKIP)
#: Labelled images from which the guesses include "none of these" (as the small-data path's threshold).
MIN_NONE_GUESS = 20
#: Above this many labels the estimate cross-validates the chosen head only (5 folds, once), to stay live.
FULL_CV_UP_TO = 300


class LoopModel:
    """A linear head on CL2N embeddings: ``logits = (x - c) @ W.T / |x - c|`` (the loop's guesses and margins)."""

    def __init__(self, W, c, classes, b=None, temperature: float = 1.0):
        self.W, self.c, self.classes = np.asarray(W, np.float32), np.asarray(c, np.float32), list(classes)
        self.b = np.zeros(len(self.classes), np.float32) if b is None else np.asarray(b, np.float32)
        self.temperature = temperature

    def logits(self, X, *, rows: int = 1024) -> np.ndarray:
        # In blocks of rows: the centred copy of 10,000 embeddings is 50 MB of fresh memory a refit, which cost
        # more than the arithmetic.
        X = np.asarray(X, np.float32)
        out = np.empty((len(X), len(self.classes)), np.float32)
        for s in range(0, len(X), rows):
            Z = X[s:s + rows] - self.c
            Z /= np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
            out[s:s + rows] = Z @ self.W.T + self.b
        return out

    def proba(self, X) -> np.ndarray:
        z = self.logits(X) / self.temperature
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict_index(self, X) -> np.ndarray:
        return self.logits(X).argmax(axis=1)


class _NoneGuess:
    """The loop's "none of these" guess, scored for a row when it is shown and remembered until the next refit.
    Scoring every image at each refit (a kNN over the labelled images) was half of the wait after a batch at
    10,000 images and 2,000 labels, for the 12 images a batch shows."""

    def __init__(self, model: LoopModel, state, threshold: float):
        self.model, self.state, self.threshold = model, state, threshold
        self._seen: dict[int, bool] = {}

    def __call__(self, X: np.ndarray, i: int) -> bool:
        from ..ood import ood_score

        hit = self._seen.get(i)
        if hit is None:
            x = X[i:i + 1]
            hit = self._seen[i] = bool(ood_score(self.state, x, self.model.logits(x))[0] > self.threshold)
        return hit


def loop_model(X, y, classes, kind: str = "cl2n", C: float | None = 10.0) -> LoopModel:
    """Fit the loop's head on labelled embeddings (``kind``/``C`` as in :data:`frugalvision.small_data.CANDIDATES`;
    ``standard`` falls back to CL2N logistic regression, which has the same deployed form here)."""
    from ..small_data import _fit

    classes = list(classes)
    X = np.asarray(X, np.float64)
    y_idx = np.array([classes.index(str(v)) for v in y])
    c = X.mean(axis=0)
    if len(np.unique(y_idx)) < 2 or kind == "centroid":
        W, _ = _fit("centroid", None, X, y_idx, len(classes))
    else:
        W, _ = _fit("cl2n", C if kind == "cl2n" and C else 10.0, X, y_idx, len(classes))
    missing = ~np.isin(np.arange(len(classes)), y_idx)
    W[missing] = 0.0
    b = np.where(missing, -1e4, 0.0)  # a class without labels is never guessed
    # cosines to centroids are in [-1, 1]: a temperature of 0.1 gives usable probabilities
    return LoopModel(W, c, classes, b, temperature=0.1 if len(np.unique(y_idx)) < 2 or kind == "centroid" else 1.0)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _default_labeller() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name on this system
        return "labeller"


class LabelSession:
    """One labelling run: images, classes, decisions (saved after every change), embeddings, model, batches.

    Parameters
    ----------
    images : path or list of paths
        Folders (searched for images) and/or image files. Images already in ``manifest`` join the pool.
    classes : list of str, optional
        The classes (default: the labels in ``manifest``). At least 2; ``none`` and ``skip`` are reserved.
    manifest : path, optional
        Where decisions are saved (and loaded from, to resume). None keeps them in memory only.
    embeddings : array (n_images, d), optional
        Precomputed embeddings in the order of the images (tests, benchmarks); else computed by ``backbone``.
    strategy : {'auto', 'typiclust', 'margin', 'margin_diverse', 'random'}
    goal : float
        Accuracy the stop advice aims at (the estimate's interval above it: stop).
    """

    def __init__(self, images, classes=None, manifest=None, *, embeddings=None, backbone: str = "efficientnet_lite0",
                 labeller: str | None = None, strategy: str = "auto", goal: float = 0.9, seed: int = 0):
        from ..data.discover import list_image_files

        if strategy not in _strategy.STRATEGIES:
            raise ValueError(f"Unknown strategy {strategy!r}: use one of {', '.join(_strategy.STRATEGIES)}.")
        self.manifest_path = Path(manifest) if manifest is not None else None
        self.backbone, self.strategy, self.goal, self.seed = backbone, strategy, float(goal), seed
        self.labeller = labeller or _default_labeller()
        if isinstance(images, (str, os.PathLike)) or embeddings is None:
            paths = list_image_files(images)
        else:
            paths = [str(p) for p in images]  # given with their embeddings: kept as they are, in order
        saved = read_labels(self.manifest_path) if self.manifest_path and self.manifest_path.exists() else None
        known = set(paths)
        if saved is not None and embeddings is None:
            extra = [p for p in saved["path"] if p not in known and os.path.exists(p)]
            paths += extra
            known.update(extra)
        self.paths = list(dict.fromkeys(paths))
        self.index = {p: i for i, p in enumerate(self.paths)}
        self.classes = self._classes(classes, saved)
        self.records: dict[str, dict] = {}   # path -> manifest row, in labelling order
        self.foreign: list[dict] = []        # saved rows whose file is not in the pool (kept as they are)
        if saved is not None:
            for row in saved.to_dict("records"):
                if row["decision"] == "label" and row["label"] not in self.classes:
                    raise DataError(f"'{self.manifest_path}' labels '{row['path']}' as {row['label']!r}, which is not "
                                    f"one of the classes ({', '.join(self.classes)}). Add it to --classes.")
                (self.records.__setitem__(row["path"], row) if row["path"] in self.index
                 else self.foreign.append(row))
        self.history: list[tuple[str, dict | None]] = []  # (path, previous record) of this visit, for undo
        self._X = None if embeddings is None else np.asarray(embeddings, np.float32)
        if self._X is not None and len(self._X) != len(self.paths):
            raise ValueError(f"embeddings has {len(self._X)} rows for {len(self.paths)} images; give one row per "
                             f"image, in order.")
        self.ok = None if self._X is None else np.ones(len(self.paths), bool)
        self.failures: list[tuple[str, str]] = []
        self.progress = {"done": 0, "total": len(self.paths), "stage": "waiting"}
        self._Z = None
        self._model: LoopModel | None = None
        self._proba = None
        self._none = None                     # the "none of these" guess (_NoneGuess), once there is one
        self._ood = None                      # (state, threshold) once there are enough labels
        self._head = ("cl2n", 10.0)           # kind, C of the loop's guesses (the last estimate's choice)
        self._estimates: list[dict] = []      # history: n, accuracy, ci
        self._batch: list[str] = []
        self._lock = threading.RLock()
        self._decisions = 0                   # decisions recorded or undone so far (what a refit saw)
        self._fitted_on = -1                  # ... when the installed guesses were fitted

    # -- set-up ------------------------------------------------------------------------------------------
    def _classes(self, classes, saved) -> list[str]:
        if classes is None or (isinstance(classes, str) and not classes.strip()):
            if saved is None:
                raise DataError("No classes: pass them (--classes cat,dog,...) or a manifest that has labels.")
            classes = sorted({v for v, d in zip(saved["label"], saved["decision"]) if d == "label" and v})
        elif isinstance(classes, str):
            classes = classes.split(",")
        classes = [str(c).strip() for c in classes]
        classes = [c for c in dict.fromkeys(classes) if c]
        reserved = [c for c in classes if c.lower() in RESERVED]
        if reserved:
            raise DataError(f"Class name {reserved[0]!r} is reserved for the answers 'none of these' and 'skip'; "
                            f"rename that class (e.g. '{reserved[0]}_class').")
        if len(classes) < 2:
            raise DataError(f"Need at least 2 classes to label, got {classes!r}. Pass --classes a,b[,c...].")
        return classes

    def prepare(self, progress=None, chunk: int = 256) -> LabelSession:
        """Compute (or load from the cache) every embedding, then the selection space. ``progress(done, total)``
        is called after every chunk; ``self.progress`` says the same for the page."""
        if self._X is None:
            from ..features.extract import Extractor

            ex = Extractor(self.backbone, progress=False)
            n = len(self.paths)
            self.progress = {"done": 0, "total": n, "stage": "embedding"}
            X, ok = None, np.zeros(n, bool)
            for start in range(0, n, chunk):
                emb = ex(self.paths[start:start + chunk])
                if X is None:
                    X = np.zeros((n, emb.X.shape[1]), np.float32)
                X[start:start + chunk][emb.ok] = emb.X
                ok[start:start + chunk] = emb.ok
                self.failures += list(emb.failures)
                self.progress = {"done": min(n, start + chunk), "total": n, "stage": "embedding"}
                if progress:
                    progress(self.progress["done"], n)
            self._X, self.ok = (X if X is not None else np.zeros((0, 1), np.float32)), ok
        self.progress = {**self.progress, "stage": "clustering"}
        Z = np.zeros((len(self.paths), 1), np.float32)
        if self.ok.any():
            Zok = _strategy.selection_space(self._X[self.ok], seed=self.seed)
            Z = np.zeros((len(self.paths), Zok.shape[1]), np.float32)
            Z[self.ok] = Zok
        self._Z = Z
        self.refit()
        self.progress = {"done": len(self.paths), "total": len(self.paths), "stage": "ready"}
        return self

    @property
    def ready(self) -> bool:
        return self._Z is not None

    def _need_ready(self):
        if not self.ready:
            raise RuntimeError("Call prepare() first: it computes the embeddings the loop chooses with.")

    # -- decisions ---------------------------------------------------------------------------------------
    def _labelled(self):
        """(rows, labels) of the images labelled with a class (readable ones)."""
        rows = [(self.index[p], r["label"]) for p, r in self.records.items()
                if r["decision"] == "label" and self.ok is not None and self.ok[self.index[p]]]
        if not rows:
            return np.zeros(0, int), np.zeros(0, object)
        idx, lab = zip(*rows)
        return np.array(idx), np.array(lab, dtype=object)

    def counts(self) -> dict:
        """Decisions so far: per class, ``none``, ``skip``, and ``labelled``/``unlabelled`` totals."""
        with self._lock:
            out = {c: 0 for c in self.classes}
            out[NONE] = out[SKIP] = 0
            for r in self.records.values():
                out[r["label"] if r["decision"] == "label" else r["decision"]] += 1
            usable = int(self.ok.sum()) if self.ok is not None else len(self.paths)
            return {"per_class": {c: out[c] for c in self.classes}, "none": out[NONE], "skip": out[SKIP],
                    "labelled": sum(out[c] for c in self.classes), "decided": len(self.records),
                    "images": len(self.paths), "unreadable": len(self.paths) - usable,
                    "left": usable - sum(1 for p in self.records if self.ok is None or self.ok[self.index[p]])}

    def record(self, path, label: str, *, save: bool = True, guess: str | None = None) -> dict:
        """Record ``label`` (a class, ``"none"`` = not any class, ``"skip"``) for ``path``; saved at once."""
        path = str(path)
        if path not in self.index:
            raise ValueError(f"'{path}' is not one of this session's images.")
        label = str(label)
        if label not in self.classes and label not in RESERVED:
            raise ValueError(f"Unknown label {label!r}: use one of {', '.join(self.classes)}, "
                             f"'{NONE}' (not any class) or '{SKIP}'.")
        with self._lock:
            if guess is None:
                guess = self.guess(path)["guess"] or ""
            decision = "label" if label in self.classes else label
            row = {"path": path, "label": label if decision == "label" else "", "labelled_by": self.labeller,
                   "labelled_at": _now(), "decision": decision, "status": "keep" if decision == "label" else "exclude",
                   "model_guess": guess}
            previous = self.records.pop(path, None)
            self.records[path] = row
            try:
                if save:
                    self.save()
            except BaseException:  # not saved: not kept either, so the page and the file agree
                self.records.pop(path, None)
                if previous is not None:
                    self.records[path] = previous
                raise
            self.history.append((path, previous))
            self._decisions += 1
            return dict(row)

    def undo(self, *, save: bool = True) -> str | None:
        """Take back the last decision of this visit; returns its path (None when there is nothing to undo)."""
        with self._lock:
            if not self.history:
                return None
            path, previous = self.history[-1]
            current = self.records.pop(path, None)
            if previous is not None:
                self.records[path] = previous
            try:
                if save:
                    self.save()
            except BaseException:
                self.records.pop(path, None)
                if current is not None:
                    self.records[path] = current
                raise
            self.history.pop()
            self._decisions += 1
            if path in self.index and path not in self._batch:
                self._batch.insert(0, path)
            return path

    def save(self):
        """Write the manifest (atomically); nothing when the session has no manifest path."""
        if self.manifest_path is None:
            return None
        with self._lock:
            return write_labels(self.manifest_path, list(self.records.values()) + self.foreign)

    # -- model -------------------------------------------------------------------------------------------
    def refit(self) -> LoopModel | None:
        """Refit the guesses' head on every class label (fast: one fit on cached embeddings)."""
        self._need_ready()
        with self._lock:
            idx, lab = self._labelled()
            kind, C = self._head
            ood = self._ood
            seen = self._decisions
        if len(idx) == 0:
            model, proba = None, None
        else:
            model = loop_model(self._X[idx], lab, self.classes, kind, C)
            proba = model.proba(self._X)
            proba[~self.ok] = 1.0 / len(self.classes)
        none = _NoneGuess(model, *ood) if ood is not None and model is not None else None
        with self._lock:
            # Two refits can run at once (the page's after a batch, the estimate's in the background): one that saw
            # fewer decisions never replaces the guesses of one that saw more.
            if seen >= self._fitted_on:
                self._model, self._proba, self._none, self._fitted_on = model, proba, none, seen
        return model

    def guess(self, path) -> dict:
        """The model's guess for ``path``: ``{"guess": class | "none" | None, "p": probability | None}``."""
        i = self.index[str(path)]
        proba, none = self._proba, self._none
        if proba is None or self.ok is None or not self.ok[i]:
            return {"guess": None, "p": None}
        j = int(proba[i].argmax())
        if none is not None and none(self._X, i):
            return {"guess": NONE, "p": None}
        return {"guess": self.classes[j], "p": float(proba[i, j])}

    def next_batch(self, n: int = 10) -> list[dict]:
        """The ``n`` undecided images to label next, each ``{"path", "guess", "p", "why"}``."""
        self._need_ready()
        with self._lock:
            taken = np.zeros(len(self.paths), bool)
            for p in self.records:
                taken[self.index[p]] = True
            labelled_rows = self._labelled()[0]
            proba = self._proba
        # strategies count "labelled" rows for the switch: the class labels; skipped/none rows are just taken
        n_lab = len(labelled_rows)
        ok = np.flatnonzero(self.ok)  # unreadable images are never shown
        rows, how = _strategy.choose(self.strategy, self._Z[ok], None if proba is None else proba[ok], taken[ok], n,
                                     n_classes=len(self.classes), seed=self.seed + n_lab, n_labelled=n_lab)
        rows = ok[rows]
        return [{"path": self.paths[r], **self.guess(self.paths[r]), "why": how} for r in rows]

    def current_batch(self, n: int = 10) -> list[dict]:
        """The batch the page shows: the last one while it has undecided images (so a reload shows the same
        images), else a new one. Decided images of the batch stay in it (shown as decided)."""
        with self._lock:
            if not any(p not in self.records for p in self._batch):
                self._batch = [b["path"] for b in self.next_batch(n)]
            out = []
            for p in self._batch:
                item = {"path": p, **self.guess(p)}
                rec = self.records.get(p)
                item["decided"] = None if rec is None else (rec["label"] if rec["decision"] == "label"
                                                            else rec["decision"])
                out.append(item)
            return out

    def batch_finished(self) -> bool:
        """Every image of the page's current batch has a decision (time to refit and choose the next)."""
        with self._lock:
            return all(p in self.records for p in self._batch)

    # -- estimate ----------------------------------------------------------------------------------------
    def estimate(self) -> dict:
        """Cross-validated accuracy of the small-data path on the labels so far, its Wilson interval, counts per
        class, and the stop advice. Also updates the head used for the guesses and the "none of these" guess."""
        from ..evaluation.bootstrap import wilson_ci
        from ..small_data import _fit, _folds, fit_small_data

        self._need_ready()
        with self._lock:
            idx, lab = self._labelled()
            counts = self.counts()
        out = {"n": len(idx), "counts": counts, "accuracy": None, "ci": None, "head": None}
        present = sorted(set(lab), key=self.classes.index)
        if len(present) < 2 or min(np.unique(lab, return_counts=True)[1]) < 2:
            out["advice"] = ("label at least 2 images of every class to get an estimate" if len(present) >= 2
                             else "label images of at least 2 classes to get a model and an estimate")
            missing = [c for c in self.classes if counts["per_class"][c] == 0]
            if missing:
                out["advice"] += f" (no label yet: {', '.join(missing)})"
            return out
        X = self._X[idx].astype(np.float64)
        if len(idx) <= FULL_CV_UP_TO:
            fit = fit_small_data(X, lab, present, seed=self.seed, repeats=3 if len(idx) < 100 else 1)
            est = fit.estimate
            kind, C, head = fit.kind, fit.C, fit.name
            acc, ci = est.get("accuracy"), est.get("ci")
        else:  # the head chosen last time, 5-fold once: seconds, not minutes, at thousands of labels
            kind, C = self._head
            y_idx = np.array([present.index(v) for v in lab])
            folds, k = _folds(y_idx, self.seed, 1)
            right = 0
            for tr, te in folds:
                W, b = _fit(kind if kind != "standard" else "cl2n", C or 10.0, X[tr], y_idx[tr], len(present))
                right += int(((X[te] @ W.T + b).argmax(1) == y_idx[te]).sum())
            acc, ci = right / len(idx), list(wilson_ci(right, len(idx)))
            head = f"{kind} (C={C}), {k}-fold cross-validation"
        out.update(accuracy=acc, ci=ci, head=head)
        with self._lock:
            self._head = (kind, C)
            if acc is not None:
                self._estimates.append({"n": len(idx), "accuracy": acc, "ci": ci})
        if len(idx) >= MIN_NONE_GUESS:
            self._fit_none(X, lab, present)
        out["advice"], out["stop"] = self._advice(acc, ci, counts)
        out["history"] = list(self._estimates)
        return out

    def _fit_none(self, X, lab, present):
        from ..ood import fit_ood, threshold_for_accept_rate

        model = loop_model(X, lab, self.classes, *self._head)
        state = fit_ood(X.astype(np.float32), lab, model.logits(X))
        # in-sample scores are optimistic; 99 % kept keeps wrong "none" guesses rare
        from ..ood import ood_score

        scores = ood_score(state, X.astype(np.float32), model.logits(X))
        with self._lock:
            self._ood = (state, float(threshold_for_accept_rate(scores, 0.99)))

    def _advice(self, acc, ci, counts) -> tuple[str, bool]:
        few = [c for c, k in counts["per_class"].items() if k < 5]
        if ci is not None and ci[0] >= self.goal:
            return (f"you can stop: the estimate's 95 % interval ({100 * ci[0]:.0f}-{100 * ci[1]:.0f} %) is above "
                    f"the goal of {100 * self.goal:.0f} %"), True
        hist = self._estimates
        if len(hist) >= 3 and hist[-1]["n"] >= 100:
            n = hist[-1]["n"]
            earlier = [h for h in hist if h["n"] <= n / 1.5]
            if earlier and hist[-1]["accuracy"] < earlier[-1]["accuracy"] - 0.02:
                # Not a flat curve: the loop labels the images its model finds hardest, and cross-validation on
                # them understates ordinary images (a probe: 62 % estimated, 89 % on the images left unlabelled).
                return (f"the estimate falls as labels are added ({100 * earlier[-1]['accuracy']:.1f} % at "
                        f"{earlier[-1]['n']} labels, {100 * hist[-1]['accuracy']:.1f} % at {n}): the loop now picks "
                        f"the images its model finds hardest, so cross-validating on them understates accuracy on "
                        f"ordinary images. To know where you stand, train on these labels and evaluate on images "
                        f"labelled in random order"), False
            if earlier and hist[-1]["accuracy"] - earlier[-1]["accuracy"] <= 0.005:
                return (f"the curve has flattened: {100 * earlier[-1]['accuracy']:.1f} % at {earlier[-1]['n']} "
                        f"labels, {100 * hist[-1]['accuracy']:.1f} % at {n}; more labels of the same kind help "
                        f"little"), True
        if few:
            return f"keep labelling: fewer than 5 labels of {', '.join(few)}", False
        return f"keep labelling: the goal is {100 * self.goal:.0f} % with the interval above it", False
