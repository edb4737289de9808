"""Fast float32 solvers for heads on cached embeddings (torch, CPU).

``fit_softmax`` minimises exactly scikit-learn's multinomial LogisticRegression objective
(for one C and one or more row weightings),
``C·Σ w_i·CE_i + ½‖W‖²`` (intercept unpenalised), with full-batch L-BFGS; on 10k×1280
embeddings it converges in well under a second where scikit-learn's float64 solver takes ~10 s.
``fit_mlp`` trains G one-hidden-layer heads on the same rows at once (one GEMM serves the first
layer of all of them), each with its own hyper-parameters, AdamW and early stopping.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_softmax", "fit_mlp"]


def _torch():
    import torch

    return torch


def fit_softmax(X, y, n_classes: int, *, C: float, sample_weights=(None,), init=None, max_iter: int = 500,
                tol: float = 1e-4):
    """Solve G problems that share rows and C but not row weights (e.g. class weighting on or off).

    ``X``: standardised features (array or float32 tensor); ``sample_weights``: G per-row weight arrays
    (None means 1); ``init``: ``(W (G, K, D), b (G, K))`` to warm-start. Returns ``(W, b, n_iter)``.
    The problems are independent; solving them together reads X once per evaluation for all G, and X
    bandwidth is what bounds this solver on a CPU (a 10-class GEMM is too thin to be compute-bound).
    """
    torch = _torch()
    Xt = torch.as_tensor(X, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    n, d = Xt.shape
    G = len(sample_weights)
    sw = torch.stack([torch.ones(n) if w is None else torch.as_tensor(w, dtype=torch.float32)
                      for w in sample_weights], 1)  # (n, G)
    scale = sw.sum(0)  # divide each objective by C·Σw: same minimiser, better conditioned
    wsc = (sw / scale)[:, :, None]
    lam = (1.0 / (C * scale))[:, None, None]
    W = torch.zeros((G, n_classes, d), requires_grad=True)
    b = torch.zeros((G, n_classes), requires_grad=True)
    if init is not None:
        with torch.no_grad():
            W.copy_(torch.as_tensor(init[0], dtype=torch.float32).reshape(W.shape))
            b.copy_(torch.as_tensor(init[1], dtype=torch.float32).reshape(b.shape))
    opt = torch.optim.LBFGS([W, b], lr=1, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-10,
                            history_size=20, line_search_fn="strong_wolfe")
    onehot = torch.nn.functional.one_hot(yt, n_classes).to(torch.float32)[:, None, :]

    @torch.no_grad()
    def closure():
        # Loss and gradient by hand: two GEMMs, no autograd graph.
        logp = torch.log_softmax(torch.addmm(b.reshape(-1), Xt, W.reshape(-1, d).T).view(n, G, n_classes), 2)
        g = (logp.exp() - onehot) * wsc
        W.grad = (g.view(n, -1).T @ Xt).view(W.shape) + lam * W
        b.grad = g.sum(0)
        return -(logp * onehot * wsc).sum() + 0.5 * (lam * W * W).sum()

    opt.step(closure)
    n_iter = opt.state[opt._params[0]].get("n_iter", 0)
    return W.detach().numpy().astype(np.float64), b.detach().numpy().astype(np.float64), int(n_iter)


# A fused AdamW step is one pass over each tensor; the default does ~10.
_FUSED = {"fused": True}
_GEMM_DTYPE = None


def gemm_dtype():
    """bfloat16 if this CPU multiplies it clearly faster than float32 (native bf16 units), else float32.

    Measured once per process on a small GEMM, because support flags don't tell speed: on this project's
    AVX512-BF16 machine bf16 is ~3x faster, on CPUs that emulate it, slower. ``FRUGALVISION_GEMM_DTYPE``
    (``float32``/``bfloat16``) overrides the probe.
    """
    global _GEMM_DTYPE
    if _GEMM_DTYPE is None:
        import os
        import time

        torch = _torch()
        forced = os.environ.get("FRUGALVISION_GEMM_DTYPE")
        if forced:
            _GEMM_DTYPE = {"float32": torch.float32, "bfloat16": torch.bfloat16}[forced]
            return _GEMM_DTYPE
        best = {}
        for dt in (torch.float32, torch.bfloat16):
            a, b = torch.ones((256, 1024), dtype=dt), torch.ones((1024, 1024), dtype=dt)
            a @ b
            t = time.perf_counter()
            for _ in range(5):
                a @ b
            best[dt] = time.perf_counter() - t
        _GEMM_DTYPE = torch.bfloat16 if best[torch.bfloat16] < 0.6 * best[torch.float32] else torch.float32
    return _GEMM_DTYPE


def fit_mlp(X, y, n_classes, *, hidden: int, dropouts, weight_decays, lrs, batch_size: int, max_epochs: int,
            patience: int, class_weights=None, validation_fraction: float = 0.1, seed: int = 0):
    """Train G heads ``Linear(hidden) -> ReLU -> Dropout -> Linear(classes)`` on the same rows at once.

    Each head has its own dropout, weight decay, learning rate and class weights, and stops early on
    its own validation loss (a stratified ``validation_fraction`` of the rows, shared). Rows are
    visited in the same shuffled order by all heads. Returns a list of G
    ``(state {w1, b1, w2, b2} as numpy, epochs, best validation loss)``.
    """
    torch = _torch()
    from sklearn.model_selection import train_test_split

    G, d = len(lrs), X.shape[1]
    g_rng = torch.Generator().manual_seed(seed)
    idx = np.arange(len(y))
    try:
        tr, va = train_test_split(idx, test_size=validation_fraction, stratify=y, random_state=seed)
    except ValueError:
        tr, va = train_test_split(idx, test_size=validation_fraction, random_state=seed)
    # The first layer (rows x features x G*hidden) is nearly all the work: it runs in bf16 where the CPU
    # has native bf16 (mixed precision: float32 master weights, optimizer and loss).
    dt = gemm_dtype()
    Xt = torch.as_tensor(X, dtype=torch.float32).to(dt)
    yt = torch.as_tensor(y, dtype=torch.long)
    cw = torch.ones((G, n_classes))
    for g, w in enumerate(class_weights or []):
        if w is not None:
            cw[g] = torch.as_tensor(w, dtype=torch.float32)
    # nn.Linear's default initialisation; one tensor set and one fused AdamW per head.
    b1_bound, b2_bound = 1 / np.sqrt(d), 1 / np.sqrt(hidden)

    def uniform(shape, bound, gen):
        return ((torch.rand(shape, generator=gen) * 2 - 1) * bound).requires_grad_(True)

    # Every head draws its initial weights and dropout masks from its own generator with the same seed, so a
    # head's result does not depend on which other heads share the stack (and they share random numbers).
    gens = [torch.Generator().manual_seed(seed) for _ in range(G)]
    heads = [{"w1": uniform((hidden, d), b1_bound, gens[g]), "b1": uniform((hidden,), b1_bound, gens[g]),
              "w2": uniform((n_classes, hidden), b2_bound, gens[g]), "b2": uniform((n_classes,), b2_bound, gens[g])}
             for g in range(G)]
    opts = [torch.optim.AdamW(h.values(), lr=lrs[g], weight_decay=weight_decays[g], **_FUSED)
            for g, h in enumerate(heads)]
    keep_p = 1 - torch.as_tensor(dropouts, dtype=torch.float32).view(G, 1, 1)
    live = list(range(G))  # heads still training
    best = np.full(G, np.inf)
    bad = np.zeros(G, dtype=int)
    best_state: list = [None] * G
    stopped_at = np.full(G, max_epochs)

    def forward(rows, train: bool):
        k, hs = len(live), [heads[g] for g in live]
        # One GEMM for the first layer of all live heads (the dominant cost), a batched one for the second.
        h = (Xt[rows] @ torch.cat([x["w1"] for x in hs]).to(dt).T).float() + torch.cat([x["b1"] for x in hs])
        h = torch.relu(h.view(len(rows), k, hidden).transpose(0, 1))  # (k, B, hidden)
        if train:
            kp = keep_p[live]
            u = torch.stack([torch.rand(h.shape[1:], generator=gens[g]) for g in live])
            h = h * (u < kp) / kp
        z = torch.baddbmm(torch.stack([x["b2"] for x in hs])[:, None, :], h,
                          torch.stack([x["w2"] for x in hs]).transpose(1, 2))  # (k, B, classes)
        yy = yt[rows]
        ce = -torch.log_softmax(z, 2).gather(2, yy.view(1, -1, 1).expand(k, -1, 1)).squeeze(2)
        w = cw[live][:, yy]  # (k, B): weighted mean, as cross_entropy(weight=...)
        return (ce * w).sum(1) / w.sum(1)

    tr_t = torch.as_tensor(tr)
    va_t = torch.as_tensor(va)
    for epoch in range(1, max_epochs + 1):
        perm = tr_t[torch.randperm(len(tr_t), generator=g_rng)]
        for s in range(0, len(perm), batch_size):
            for g in live:
                opts[g].zero_grad()
            forward(perm[s:s + batch_size], True).sum().backward()
            for g in live:
                opts[g].step()
        with torch.no_grad():
            val = forward(va_t, False).numpy()
        for j, g in enumerate(list(live)):
            if val[j] < best[g] - 1e-4:
                best[g], bad[g] = val[j], 0
                best_state[g] = {k: p.detach().clone().numpy() for k, p in heads[g].items()}
            else:
                bad[g] += 1
                if bad[g] >= patience:  # drop it from the stack: it costs nothing more
                    live.remove(g)
                    stopped_at[g] = epoch
        if not live:
            break
    return [(best_state[g], int(stopped_at[g]), float(best[g])) for g in range(G)]
