"""AdamW that updates only the word-embedding rows that still move (``sparse_embeddings``).

A batch of 16 SST-2 sentences touches ~300 of MiniLM's 30,522 word-embedding rows, yet a dense
gradient makes autograd zero-fill, clipping read and AdamW rewrite all 11.7M numbers of the
matrix every step. With ``nn.Embedding(sparse=True)`` the gradient holds only the rows used, and
:class:`RowAdamW` runs torch's (fused) AdamW on every dense parameter and, on a sparse one, the
AdamW update on the rows whose momentum still moves them: those used within the last
:meth:`RowAdamW.momentum_window` steps (66 at beta1 0.9, after which the momentum is below 0.1 %
of its value). On those rows it is dense AdamW's maths exactly (a zero gradient for the rows
not in this batch). A row unused for longer waits; when it is used again, its moments first
catch up on the decay dense AdamW gave them meanwhile (``beta ** skipped``). Its weight decay
catches up too (the product of every step's ``1 - lr x weight_decay``). What differs from dense
AdamW is only the drift of a waiting row on its last 0.1 % of momentum.

The optimizer state keeps dense AdamW's keys and shapes (``step``, ``exp_avg``,
``exp_avg_sq``), plus ``row_used`` / ``row_step`` / ``row_decay`` (each row's last use, last update, and
the weight decay it has had), so a
checkpoint of either resumes under the other.
"""

from __future__ import annotations

import math
from typing import Any

import torch


class RowAdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` whose sparse-gradient parameters get row-wise updates."""

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        sparse = [
            p
            for group in self.param_groups
            for p in group["params"]
            if p.grad is not None and p.grad.is_sparse
        ]
        held = [p.grad for p in sparse]
        for p in sparse:
            p.grad = None  # the dense (fused) kernel skips parameters without a gradient
        try:
            loss = super().step(closure)
        finally:
            for p, g in zip(sparse, held):
                p.grad = g
        if sparse:
            ids = {id(p) for p in sparse}
            for group in self.param_groups:
                for p in group["params"]:
                    if id(p) in ids:
                        self._row_update(p, group)
        return loss

    def _row_update(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        if group.get("amsgrad") or group.get("maximize"):
            raise RuntimeError("RowAdamW: amsgrad and maximize need dense gradients.")
        grad = p.grad.coalesce()
        rows, values = grad.indices()[0], grad.values()
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if "row_used" not in state:
            # Fresh: no row used yet. A dense AdamW's state (resumed): every row up to date.
            now = float(state["step"])
            used = now if now > 0 else -1e9
            state["row_used"] = torch.full((p.shape[0],), used, device=p.device)
            state["row_step"] = torch.full((p.shape[0],), now, device=p.device)
            # Weight decay: the product of every step's (1 - lr x wd) so far, and its value at
            # each row's last update, so a waiting row gets the decay dense AdamW gave it.
            state["decay"] = torch.tensor(1.0, dtype=torch.float64, device=p.device)
            state["row_decay"] = torch.ones(p.shape[0], dtype=torch.float64, device=p.device)
        state["step"] += 1
        step = float(state["step"])
        beta1, beta2 = group["betas"]
        lr, eps, wd = float(group["lr"]), group["eps"], group["weight_decay"]

        # The rows whose momentum still moves them: used within the last `window` steps.
        state["row_used"][rows] = step
        window = self.momentum_window(beta1)
        active = torch.nonzero(state["row_used"] > step - 1 - window).squeeze(1)
        g = torch.zeros((active.numel(), *p.shape[1:]), dtype=p.dtype, device=p.device)
        g[torch.searchsorted(active, rows)] = values
        skipped = step - 1 - state["row_step"][active]  # steps since the row's last update
        m = state["exp_avg"][active]
        v = state["exp_avg_sq"][active]
        shape = (-1,) + (1,) * (p.dim() - 1)
        if bool((skipped > 0).any()):  # dense AdamW decayed them with zero gradients meanwhile
            m.mul_(torch.pow(beta1, skipped).view(shape))
            v.mul_(torch.pow(beta2, skipped).view(shape))
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bias1 = 1 - beta1**step
        bias2 = 1 - beta2**step
        denom = (v.sqrt() / math.sqrt(bias2)).add_(eps)
        w = p[active]
        if wd:
            decayed = state["decay"] * (1 - lr * wd)
            w.mul_((decayed / state["row_decay"][active]).to(p.dtype).view(shape))
            state["decay"] = decayed
            state["row_decay"][active] = decayed
        w.addcdiv_(m, denom, value=-lr / bias1)
        p.index_copy_(0, active, w)
        state["exp_avg"].index_copy_(0, active, m)
        state["exp_avg_sq"].index_copy_(0, active, v)
        state["row_step"][active] = step

    #: Momentum below this share of its value is dropped (rows unused that long stay put).
    MOMENTUM_TOLERANCE = 1e-3

    @classmethod
    def momentum_window(cls, beta1: float) -> int:
        """Steps after a row's last use until ``beta1 ** steps`` < the tolerance (66 at 0.9)."""
        if beta1 <= 0:
            return 0
        return math.ceil(math.log(cls.MOMENTUM_TOLERANCE) / math.log(beta1))


def clip_grad_norm(parameters: Any, max_norm: float, norm_type: float = 2.0, **kw: Any) -> Any:
    """``torch.nn.utils.clip_grad_norm_`` that also takes sparse gradients (their rows' values
    are what a dense gradient's norm would count: the other rows are zero)."""
    params = [p for p in parameters if p.grad is not None]
    if not any(p.grad.is_sparse for p in params):
        return torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type, **kw)
    if float(norm_type) != 2.0:
        raise RuntimeError("sparse_embeddings: gradient clipping supports the 2-norm only.")
    for p in params:
        if p.grad.is_sparse:
            p.grad = p.grad.coalesce()
    values = [p.grad.values() if p.grad.is_sparse else p.grad for p in params]
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(values, 2.0)), 2.0)
    if kw.get("error_if_nonfinite") and not torch.isfinite(total):
        raise RuntimeError(f"The total norm of gradients is non-finite ({float(total)}).")
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    torch._foreach_mul_(values, coef)  # coalesced values are the gradient's own storage
    return total
