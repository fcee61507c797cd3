"""AdamW that updates only the word-embedding rows a step used (``sparse_embeddings``).

A batch of 16 SST-2 sentences touches ~300 of MiniLM's 30,522 word-embedding rows, yet a dense
gradient makes autograd zero-fill, clipping read and AdamW rewrite all 11.7M numbers of the
matrix every step. With ``nn.Embedding(sparse=True)`` the gradient holds only the rows used;
:class:`RowAdamW` runs torch's (fused) AdamW on every dense parameter and, on a sparse one, the
same AdamW maths on the rows present: their moments first catch up on the decay of the steps
they missed (``beta ** skipped``, exactly what dense AdamW did to them with a zero gradient),
then take this step's gradient, bias correction and decoupled weight decay. What differs from
dense AdamW is only what it does to a row with a zero gradient: dense AdamW keeps moving it by
its decaying momentum and decays its weight; here it stays put until it is used again (the
"lazy" Adam of TF Addons' ``LazyAdam``). docs/performance.md measures the accuracy.

The optimizer state keeps dense AdamW's keys and shapes (``step``, ``exp_avg``,
``exp_avg_sq``), plus ``row_step`` (the step each row was last updated), so a checkpoint of
either resumes under the other.
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
        if "row_step" not in state:  # a dense AdamW's state: every row was updated last step
            state["row_step"] = torch.full(
                (p.shape[0],), float(state["step"]), dtype=torch.float32, device=p.device
            )
        state["step"] += 1
        step = float(state["step"])
        beta1, beta2 = group["betas"]
        lr, eps, wd = float(group["lr"]), group["eps"], group["weight_decay"]

        skipped = step - 1 - state["row_step"][rows]  # steps since each row's last update
        m = state["exp_avg"][rows]
        v = state["exp_avg_sq"][rows]
        if bool((skipped > 0).any()):
            m.mul_(torch.pow(beta1, skipped).unsqueeze(1))
            v.mul_(torch.pow(beta2, skipped).unsqueeze(1))
        m.mul_(beta1).add_(values, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(values, values, value=1 - beta2)
        bias1 = 1 - beta1**step
        bias2 = 1 - beta2**step
        denom = (v.sqrt() / math.sqrt(bias2)).add_(eps)
        w = p[rows]
        if wd:
            w.mul_(1 - lr * wd)
        w.addcdiv_(m, denom, value=-lr / bias1)
        p.index_copy_(0, rows, w)
        state["exp_avg"].index_copy_(0, rows, m)
        state["exp_avg_sq"].index_copy_(0, rows, v)
        state["row_step"][rows] = step


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
