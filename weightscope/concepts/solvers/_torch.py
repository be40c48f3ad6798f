"""The torch backend of the solvers: batched over signals, on any torch device (METHODS.md sections 5 and 14).

Same problems, stopping rules and tie-breaking as the Numba driver (``_fast``), arranged for a GPU:
  1. Correlations: one batched GEMM per step, ``Q D^T`` for every still-running signal of a chunk (Q is the
     residual, plus COMP's coherence term), in the dictionary's precision (or bf16/fp16 when asked);
     selected atoms are masked, the argmax takes the lowest index among equal scores.
  2. Least squares: the support's Gram matrix G (C, K, K) and a Cholesky factor L of its passive block
     (in passive order, identity-padded) are grown by one row per step (``_chol_append``: one batched
     triangular solve), never re-factored from scratch for OMP.
  3. Non-negativity: Lawson-Hanson active-set NNLS exactly as the Numba kernels run it (same entry rule,
     same dependence test, same step to the boundary), vectorised over signals: each signal is at its own
     point of the algorithm and only the signals still iterating are touched. A removal from the passive
     set (rare) re-factors that signal's small K x K factor.
Re-fits run in float64 where the device has it (CPU, CUDA), float32 on MPS (METHODS.md section 14).
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from weightscope.concepts.solvers._common import DEPENDENT_TOL, KKT_TOL, SELECT_TOL, Explanation, Problem

#: Bytes of the score block (signals x atoms) of one chunk on the CPU; on a GPU a quarter of free memory (<= 4 GiB).
CPU_SCORE_BYTES = 256 * 2**20
DEVICE_SCORE_BYTES = 4 * 2**30
_PROGRESS_WORK = 5e11


class _State:
    """Per-chunk solver state (C signals, K atoms), every tensor on the device."""

    def __init__(self, C, K, E2, fdt, dev):
        z = dict(dtype=fdt, device=dev)
        self.sel = torch.full((C, K), -1, dtype=torch.long, device=dev)
        self.coef = torch.zeros(C, K, **z)
        self.nsel = torch.zeros(C, dtype=torch.long, device=dev)
        self.done = torch.zeros(C, dtype=torch.bool, device=dev)
        self.G = torch.zeros(C, K, K, **z)
        self.b = torch.zeros(C, K, **z)
        self.L = torch.eye(K, **z).expand(C, K, K).clone()
        self.P = torch.zeros(C, K, dtype=torch.long, device=dev)
        self.npas = torch.zeros(C, dtype=torch.long, device=dev)
        self.inP = torch.zeros(C, K, dtype=torch.bool, device=dev)
        self.coh = torch.zeros(C, E2, **z)


def _passive_gather(vals, P, npas):
    """vals (n, K) read in passive order P (n, K); 0 beyond npas."""
    pos = torch.arange(P.shape[1], device=P.device)[None, :] < npas[:, None]
    return torch.where(pos, vals.gather(1, P), torch.zeros((), dtype=vals.dtype, device=vals.device)), pos


def _chol_append(L, G, P, npas, jb):
    """Grow the factors L (n, K, K) of G[P, P] by variable jb (n,): returns (ok (n,), new L). ok is False where
    jb's squared distance to the span of the passive variables is <= DEPENDENT_TOL (numba's chol_append)."""
    n, K = P.shape
    ar = torch.arange(n, device=L.device)
    g, _ = _passive_gather(G[ar, jb], P, npas)  # G[jb, P[q]]
    v = torch.linalg.solve_triangular(L, g[:, :, None], upper=False)[:, :, 0]
    d = G[ar, jb, jb] - (v * v).sum(1)
    ok = d > DEPENDENT_TOL
    Lnew = L.clone()
    row = v.clone()
    row[ar, npas] = torch.sqrt(torch.clamp(d, min=0))
    Lnew[ar, npas] = row
    return ok, Lnew


def _solve_passive(L, b, P, npas):
    """z (n, K) in passive order: (L L^T) z = b[P] on the passive block, 0 beyond."""
    rhs, _ = _passive_gather(b, P, npas)
    return torch.cholesky_solve(rhs[:, :, None], L)[:, :, 0]


def _refactor(G, P, npas):
    """Cholesky factors (n, K, K) of G[P, P] (passive block), identity beyond npas."""
    n, K = P.shape
    ar = torch.arange(n, device=G.device)
    Gp = G[ar[:, None, None], P[:, :, None], P[:, None, :]]
    pos = torch.arange(K, device=G.device)[None, :] < npas[:, None]
    both = pos[:, :, None] & pos[:, None, :]
    eye = torch.eye(K, dtype=G.dtype, device=G.device).expand(n, K, K)
    L, _ = torch.linalg.cholesky_ex(torch.where(both, Gp, eye))
    return L


def _scatter_passive(c, P, npas, zP):
    """c[i, P[i, q]] = zP[i, q] for q < npas[i]; other entries of c unchanged."""
    n, K = P.shape
    pos = torch.arange(K, device=P.device)[None, :] < npas[:, None]
    rows = torch.arange(n, device=P.device)[:, None].expand(n, K)
    c[rows[pos], P[pos]] = zP[pos]


def _nnls(st: _State, rows, nvars: int):
    """Lawson-Hanson NNLS on the first nvars variables of st.G / st.b for chunk signals ``rows``, warm-started
    from (coef, passive set, L); numba's nnls_active_set, one iteration of every still-running signal at a time."""
    if rows.numel() == 0:
        return
    K = st.G.shape[1]
    dev = st.G.device
    G, b, c = st.G[rows], st.b[rows], st.coef[rows]
    P, npas, inP, L = st.P[rows], st.npas[rows], st.inP[rows], st.L[rows]
    n = rows.numel()
    blocked = torch.zeros(n, K, dtype=torch.bool, device=dev)
    it = torch.zeros(n, dtype=torch.long, device=dev)
    maxit = 3 * nvars + 10
    var_ok = torch.arange(K, device=dev)[None, :] < nvars
    neg_inf = torch.tensor(-torch.inf, dtype=G.dtype, device=dev)
    outer = torch.arange(n, device=dev)
    while outer.numel():
        w = b[outer] - (G[outer] @ c[outer][:, :, None])[:, :, 0]
        w = torch.where(var_ok & ~inP[outer] & ~blocked[outer], w, neg_inf)
        jb = torch.argmax(w, dim=1)  # first maximum, as numba's strict '>'
        go = w.gather(1, jb[:, None])[:, 0] > KKT_TOL
        outer, jb = outer[go], jb[go]
        if outer.numel() == 0:
            break
        ok, Lnew = _chol_append(L[outer], G[outer], P[outer], npas[outer], jb)
        blocked[outer[~ok], jb[~ok]] = True
        o, j = outer[ok], jb[ok]
        L[o] = Lnew[ok]
        P[o, npas[o]] = j
        npas[o] += 1
        inP[o, j] = True
        inner, first = o, torch.ones(o.numel(), dtype=torch.bool, device=dev)
        jin = j
        while inner.numel():
            it[inner] += 1
            z = _solve_passive(L[inner], b[inner], P[inner], npas[inner])
            pos = torch.arange(K, device=dev)[None, :] < npas[inner][:, None]
            leave = ((z > 0) | ~pos).all(1) | (it[inner] > maxit)
            if leave.any():
                e = inner[leave]
                ce = c[e]
                _scatter_passive(ce, P[e], npas[e], torch.clamp(z[leave], min=0))
                c[e] = ce
            keep = ~leave
            inner, z, first, jin, pos = inner[keep], z[keep], first[keep], jin[keep], pos[keep]
            if inner.numel() == 0:
                break
            last = z.gather(1, (npas[inner] - 1)[:, None])[:, 0]
            undo = first & (last <= 0)
            if undo.any():
                # jb only looked useful through rounding: out again, and kept out
                u, ju = inner[undo], jin[undo]
                npas[u] -= 1
                inP[u, ju] = False
                blocked[u, ju] = True
                c[u, ju] = 0
                Lu = L[u]
                Lu[torch.arange(u.numel(), device=dev), npas[u]] = torch.nn.functional.one_hot(
                    npas[u], K).to(Lu.dtype)
                L[u] = Lu
            s = ~undo
            inner, z, jin, pos = inner[s], z[s], jin[s], pos[s]
            first = torch.zeros(inner.numel(), dtype=torch.bool, device=dev)
            if inner.numel() == 0:
                break
            # walk from c towards z until the first passive coefficient reaches zero
            Pi, ni = P[inner], npas[inner]
            cP, _ = _passive_gather(c[inner], Pi, ni)
            hit = pos & (z <= 0)
            ratio = torch.where(hit, cP / torch.where(hit, cP - z, torch.ones_like(z)),
                                torch.full_like(z, torch.inf))
            qmin = torch.argmin(ratio, dim=1)  # first minimum, as numba's strict '<'
            alpha = ratio.gather(1, qmin[:, None])
            cP = cP + alpha * (z - cP)
            cP[torch.arange(inner.numel(), device=dev), qmin] = 0
            cP = torch.where(pos, cP, torch.zeros_like(cP))
            ci = c[inner]
            _scatter_passive(ci, Pi, ni, cP)
            # drop every passive variable at or below zero; the order of the others is kept
            stay = pos & (cP > 0)
            out = pos & ~stay
            rows_o = torch.arange(inner.numel(), device=dev)[:, None].expand_as(Pi)
            ci[rows_o[out], Pi[out]] = 0
            c[inner] = ci
            inPi = inP[inner]
            inPi[rows_o[out], Pi[out]] = False
            inP[inner] = inPi
            order = torch.argsort((~stay).to(torch.int8), dim=1, stable=True)
            P[inner] = Pi.gather(1, order)
            npas[inner] = stay.sum(1)
            L[inner] = _refactor(G[inner], P[inner], npas[inner])
    st.coef[rows], st.P[rows], st.npas[rows], st.inP[rows], st.L[rows] = c, P, npas, inP, L


def _gather_rows(Dx, idx):
    return Dx[idx.clamp(min=0)]


def _argmax_first(S):
    """(best value, lowest index holding it) per row."""
    idx = torch.argmax(S, dim=1)
    return S.gather(1, idx[:, None])[:, 0], idx


def _greedy(p: Problem, X, Dqg, Dx, Cx, fdt, bar):
    """MP / OMP / NN-OMP / COMP for the chunk signals X (C, E) on the device; returns (sel, coef)."""
    C, E = X.shape
    K = p.k
    dev = X.device
    comp, mp, omp = p.method == "comp", p.method == "mp", p.method == "omp"
    sep = comp and p.coherence is not None
    st = _State(C, K, Cx.shape[1] if comp else 1, fdt, dev)
    signed = not p.positive
    exclude = not mp
    query = X.clone() if not sep else torch.cat([X, torch.zeros(C, Cx.shape[1], dtype=fdt, device=dev)], 1)
    r = X.clone()
    for t in range(K):
        a = torch.nonzero(~st.done).flatten()
        if a.numel() == 0:
            bar.update(K - t)
            break
        S = query[a].to(Dqg.dtype) @ Dqg.T
        if exclude and t:
            S.scatter_(1, st.sel[a, :t], 0.0 if signed else -torch.inf)
        if signed:
            S.abs_()
        best, j = _argmax_first(S)
        del S
        stop = best.to(fdt) <= SELECT_TOL
        st.done[a[stop]] = True
        a, j = a[~stop], j[~stop]
        dj = Dx[j].to(fdt)
        if mp:
            cj = (r[a] * dj).sum(1)
            bad = (cj <= SELECT_TOL) if p.positive else (cj.abs() <= SELECT_TOL)
            st.done[a[bad]] = True
            a, j, dj, cj = a[~bad], j[~bad], dj[~bad], cj[~bad]
            st.sel[a, t], st.coef[a, t] = j, cj
            st.nsel[a] = t + 1
            r[a] -= cj[:, None] * dj
        else:
            Xa = X[a]
            for q in range(t):
                g = (_gather_rows(Dx, st.sel[a, q]).to(fdt) * dj).sum(1)
                st.G[a, t, q] = g
                st.G[a, q, t] = g
            st.G[a, t, t] = (dj * dj).sum(1)
            st.b[a, t] = (Xa * dj).sum(1)
            if omp:
                ok, Lnew = _chol_append(st.L[a], st.G[a], st.P[a], st.npas[a], torch.full_like(a, t))
                st.done[a[~ok]] = True
                a, j, Lnew = a[ok], j[ok], Lnew[ok]
                st.L[a] = Lnew
                st.sel[a, t] = j
                st.nsel[a] = t + 1
                st.P[a, t] = t
                st.npas[a] = t + 1
                st.coef[a] = _solve_passive(st.L[a], st.b[a], st.P[a], st.npas[a])
            else:
                st.sel[a, t] = j
                st.nsel[a] = t + 1
                st.coef[a, t] = 0
                st.inP[a, t] = False
                _nnls(st, a, t + 1)
            r[a] = _residual(X[a], Dx, st.sel[a], st.coef[a], t + 1)
        if comp:
            st.coh[a] += Cx[j].to(fdt)
        full = st.nsel[a] >= K
        st.done[a[full]] = True
        if comp:
            w = (p.lam / st.nsel[a].to(fdt))[:, None]
            if sep:
                query[a, :E] = r[a]
                query[a, E:] = w * st.coh[a]
            else:
                query[a] = r[a] + w * st.coh[a]
        else:
            query[a] = r[a]
        bar.update(1)
    return st.sel, st.coef


def _residual(X, Dx, sel, coef, t):
    """x - sum_q coef_q d_sel_q (n, E), in X's dtype."""
    r = X.clone()
    for q in range(t):
        r -= coef[:, q, None] * _gather_rows(Dx, sel[:, q]).to(X.dtype)
    return r


def _topk(p: Problem, X, Dg, Dx, fdt, bar):
    """top-k selection (lowest index first among equal scores) and the fixed-support re-fit."""
    C, _ = X.shape
    K = p.k
    dev = X.device
    S = X.to(Dg.dtype) @ Dg.T
    if not p.positive:
        S.abs_()
    vals, idx = torch.topk(S, K, dim=1)
    # order by (score desc, index asc); rows with ties across the K-th place are sorted in full
    idx, o = torch.sort(idx, dim=1)
    vals = vals.gather(1, o)
    o = torch.sort(vals, dim=1, descending=True, stable=True).indices
    vals, idx = vals.gather(1, o), idx.gather(1, o)
    kth = vals[:, -1:]
    tied = (S == kth).sum(1) > (vals == kth).sum(1)
    for i in torch.nonzero(tied).flatten().tolist():
        idx[i] = torch.sort(S[i], descending=True, stable=True).indices[:K]
    del S
    bar.update(1)
    st = _State(C, K, 1, fdt, dev)
    Dsel = [_gather_rows(Dx, idx[:, q]).to(fdt) for q in range(K)]
    for q in range(K):
        st.b[:, q] = (X * Dsel[q]).sum(1)
        for s in range(q + 1):
            g = (Dsel[q] * Dsel[s]).sum(1)
            st.G[:, q, s] = g
            st.G[:, s, q] = g
    allrows = torch.arange(C, device=dev)
    if p.positive:
        _nnls(st, allrows, K)
    else:
        for q in range(K):  # least squares over the atoms independent of those before them
            ok, Lnew = _chol_append(st.L, st.G, st.P, st.npas, torch.full_like(allrows, q))
            i = torch.nonzero(ok).flatten()
            st.L[i] = Lnew[i]
            st.P[i, st.npas[i]] = q
            st.npas[i] += 1
        z = _solve_passive(st.L, st.b, st.P, st.npas)
        _scatter_passive(st.coef, st.P, st.npas, z)
    return idx, st.coef


def solve(p: Problem, compute, progress) -> Explanation:
    """Run the prepared problem ``p`` with the torch backend on ``compute``'s device; see ``explain``."""
    dev = compute.torch_device()
    fdt = compute.exact_dtype()
    if compute.precision == "fp32":
        gdt = torch.float32 if (dev.type == "mps" or p.dictionary.dtype == np.float32) else torch.float64
    else:
        gdt = compute.gemm_dtype()
    Dx = torch.from_numpy(p.dictionary).to(dev)
    if Dx.dtype == torch.float64 and fdt == torch.float32:
        Dx = Dx.float()
    Dg = Dx.to(gdt)
    Cx = Dx
    Dqg = Dg
    if p.method == "comp" and p.coherence is not None:
        Cx = torch.from_numpy(p.coherence).to(dev).to(Dx.dtype)
        Dqg = torch.cat([Dx, Cx], 1).to(gdt)
    N, _ = p.signals.shape
    M = Dx.shape[0]
    K = p.k
    item = torch.finfo(gdt).bits // 8
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        budget = min(DEVICE_SCORE_BYTES, free // 4)
    else:
        budget = CPU_SCORE_BYTES
    chunk = p.chunk_size or int(max(64, budget // (2 * M * item)))
    chunk = min(chunk, N)
    chunk = -(-N // -(-N // chunk))
    steps = 1 if p.method == "topk" else K
    n_chunks = -(-N // chunk)
    work = float(N) * M * p.signals.shape[1] * steps
    show = (work > _PROGRESS_WORK) if progress is None else bool(progress)
    sel = np.full((N, K), -1, dtype=np.int64)
    coef = np.zeros((N, K))
    res = np.zeros(N)
    fid = np.zeros(N)
    with torch.inference_mode(), tqdm(total=n_chunks * steps, desc=f"{p.method} k={K} ({dev.type})", unit="step",
                                      disable=not show) as bar:
        for c0 in range(0, N, chunk):
            c1 = min(N, c0 + chunk)
            X = torch.from_numpy(p.signals[c0:c1]).to(dev).to(fdt)
            if p.method == "topk":
                s, c = _topk(p, X, Dg, Dx, fdt, bar)
            else:
                s, c = _greedy(p, X, Dqg, Dx, Cx, fdt, bar)
            rec = torch.zeros_like(X)
            for q in range(K):
                rec += torch.where(s[:, q:q + 1] >= 0, c[:, q:q + 1], 0) * _gather_rows(Dx, s[:, q]).to(fdt)
            nr = rec.norm(dim=1)
            res[c0:c1] = (X - rec).norm(dim=1).double().cpu().numpy()
            f = torch.where(nr > 0, (X * rec).sum(1) / torch.where(nr > 0, nr, 1), 0)
            fid[c0:c1] = f.double().cpu().numpy()
            sel[c0:c1] = s.cpu().numpy()
            coef[c0:c1] = torch.where(s >= 0, c, 0).double().cpu().numpy()
    return Explanation(sel, coef, res, fid, p.signal_norm.copy(), p.method, p.both_signs)
