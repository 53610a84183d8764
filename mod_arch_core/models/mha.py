"""MHA setting: task-conditioned search and retrieval (spec §3.3).

Per token: encoder MLP F -> d -> d (F = 5R for search version 1, 7R for version 2), one
self-masked attention block, decoder MLP d -> d -> 1. No residual, LayerNorm, positional
encoding or causal mask. Every model has 2R heads of width ``head_dim = A // (2R)``
(scores scaled by ``head_dim ** -0.5``; each token is masked from attending to itself), plus
an ``in_`` projection of the token itself concatenated to the head outputs.

* Monolithic: ``in_`` is Linear(d, head_dim); the output MLP (2R + 1) head_dim -> 2d -> d.
* Modular models: R modules of 2 heads each (heads 2r, 2r+1 belong to module r); ``in_`` is
  Linear(d, R head_dim) with slice r for module r; module r's output MLP is
  ``GroupLinear(R, 3 head_dim, I) -> ReLU -> GroupLinear(R, I, d [+1])`` with the
  parameter-matching width I (:func:`mha_intermediate_dim`). Modular-op scores with an MLP
  R -> head_dim -> R on each token's one-hot rule.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mod_arch_core.models.base import ModelConfig, StackedModel
from mod_arch_core.models.layers import GroupMLP, StackedLinear, StackedMLP
from mod_arch_core.models.routing import build_routing

__all__ = [
    "HEADS_PER_MODULE",
    "MHAModel",
    "MHAModular",
    "MHAMonolithic",
    "masked_self_attention",
    "mha_head_dim",
    "mha_input_dim",
    "mha_intermediate_dim",
    "packed_masked_self_attention",
]

#: Heads per module in the modular models; Monolithic has HEADS_PER_MODULE * R heads.
HEADS_PER_MODULE = 2
#: Input features per rule for search versions 1 and 2 (spec §2.2): 4 (resp. 6) + 1 one-hot.
_FEATURES_PER_RULE = {1: 5, 2: 7}


def mha_input_dim(num_rules: int, search_version: int) -> int:
    """Token input width: 5R (search version 1) or 7R (version 2), one-hot included (§2.2)."""
    if search_version not in _FEATURES_PER_RULE:
        raise ValueError(f"search_version must be one of 1, 2; got {search_version!r}")
    return _FEATURES_PER_RULE[search_version] * num_rules


def mha_head_dim(num_rules: int, att_dim: int) -> int:
    """Head width ``A // (2R)`` (spec §3.3); A must be a positive multiple of 2R.

    >>> mha_head_dim(4, 256)
    32
    """
    heads = HEADS_PER_MODULE * num_rules
    if att_dim < heads or att_dim % heads:
        raise ValueError(
            f"dim (the MHA attention width A) must be a positive multiple of "
            f"2 * num_rules = {heads} (2R heads of equal width); got dim={att_dim}"
        )
    return att_dim // heads


def mha_intermediate_dim(num_rules: int, dim: int, att_dim: int) -> int:
    """Parameter-matching hidden width I of each module's output MLP (spec §3.3).

    ``I = int(2d (R H (A + d) + A) / (R (A (H + 1) + R H d)))`` with H = 2 heads per module,
    d the token width and A the attention width; it equates the R output MLPs with the
    monolithic ``(2R + 1) head_dim -> 2d -> d`` one. Computed in exact integer arithmetic.

    >>> mha_intermediate_dim(4, 32, 128)
    35
    """
    r, h, d, a = num_rules, HEADS_PER_MODULE, dim, att_dim
    width = (2 * d * (r * h * (a + d) + a)) // (r * (a * (h + 1) + r * h * d))
    if width < 1:
        raise ValueError(
            f"the MHA modular output width I is {width} for num_rules={r}, encoder_dim={d}, "
            f"dim={a}; increase encoder_dim or dim"
        )
    return width


def masked_self_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Softmax attention where no token attends to itself (spec §3.3).

    ``softmax_j(q_i . k_j / sqrt(head_dim))`` over ``j != i`` (the diagonal is -inf), then the
    weighted sum of ``v_j``. Mirrors the ``j != i`` of the search task (spec §2.2).

    Parameters
    ----------
    q, k, v : Tensor, shape (..., L, H, head_dim)
        Queries, keys and values of H heads; L >= 2.

    Returns
    -------
    Tensor, shape (..., L, H, head_dim)
    """
    return packed_masked_self_attention(torch.stack([q, k, v], dim=-3))


def packed_masked_self_attention(qkv: Tensor) -> Tensor:
    """:func:`masked_self_attention` of ``q, k, v = qkv.unbind(-3)``; qkv (..., L, 3, H, hd).

    Returns a (..., L, H, head_dim) view of a (..., H, L, head_dim) tensor.
    """
    return _MaskedSelfAttention.apply(qkv).transpose(-3, -2)


def _padded_length(length: int) -> int:
    """Keys padded to a multiple of 16: PyTorch's CPU softmax over a last axis shorter than a
    vector register (L = 10) took 7x longer than over 16 padded entries (benchmarks/README)."""
    return -(-length // 16) * 16


class _MaskedSelfAttention(torch.autograd.Function):
    """Self-masked attention of all heads as one autograd node (spec §3.3).

    Every (sequence, head) pair is one small matrix product. The keys and values are copied
    head-major into a buffer padded with zero rows to ``_padded_length(L)``; the padded keys and
    the diagonal get logit -inf, so they have weight 0 and the result is the plain masked
    attention. The backward pass writes the gradients of q, k and v straight into one
    (..., L, 3, H, hd) buffer (no stacking of three gradients).
    """

    @staticmethod
    def forward(ctx, qkv: Tensor) -> Tensor:  # type: ignore[override]
        *lead, length, _, heads, head_dim = qkv.shape
        flat = math.prod(lead) * heads
        padded = _padded_length(length)
        parts = qkv.reshape(-1, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        q = parts[0].reshape(flat, length, head_dim)  # (S H, L, hd), head-major copy
        kv = qkv.new_empty(2, flat // heads, heads, padded, head_dim)
        kv[:, :, :, :length].copy_(parts[1:])
        kv[:, :, :, length:].zero_()
        k, v = kv.view(2, flat, padded, head_dim).unbind(0)
        mask = torch.zeros(length, padded, dtype=qkv.dtype, device=qkv.device)
        mask[:, length:] = float("-inf")
        mask.fill_diagonal_(float("-inf"))
        scale = head_dim**-0.5
        weights = torch.softmax(torch.baddbmm(mask, q, k.transpose(1, 2), alpha=scale), dim=-1)
        ctx.save_for_backward(q, kv, weights)
        ctx.scale = scale
        return torch.bmm(weights, v).view(*lead, heads, length, head_dim)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> Tensor:  # type: ignore[override]
        q, kv, weights = ctx.saved_tensors
        flat, length, head_dim = q.shape
        sequences, heads, padded = kv.shape[1], kv.shape[2], kv.shape[3]
        k, v = kv.view(2, flat, padded, head_dim).unbind(0)
        grad = grad_out.reshape(flat, length, head_dim)
        grad_weights = torch.bmm(grad, v.transpose(1, 2))
        grad_v = torch.bmm(weights.transpose(1, 2), grad)
        grad_logits = torch.ops.aten._softmax_backward_data(grad_weights, weights, -1, q.dtype)
        grad_logits.mul_(ctx.scale)
        grad_q = torch.bmm(grad_logits, k)
        grad_k = torch.bmm(grad_logits.transpose(1, 2), q)
        grad_qkv = q.new_empty(sequences, length, 3, heads, head_dim)
        parts = grad_qkv.permute(2, 0, 3, 1, 4)  # (3, S, H, L, hd) view
        parts[0].copy_(grad_q.view(sequences, heads, length, head_dim))
        parts[1].copy_(grad_k.view(sequences, heads, padded, head_dim)[:, :, :length])
        parts[2].copy_(grad_v.view(sequences, heads, padded, head_dim)[:, :, :length])
        return grad_qkv.view(*grad_out.shape[:-3], length, 3, heads, head_dim)


class MHAModel(StackedModel):
    """Shared encoder, attention heads and decoder of the MHA setting (spec §3.3).

    Build with ``build_model``. Forward: x (N, B, L, F) -> output (N, B, L),
    scores (N, B, L, R) or None.
    """

    setting = "mha"
    axes = ("batch", "length", "features")

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        n, r, d, a = config.num_runs, config.num_rules, config.encoder_dim, config.dim
        self.num_heads = HEADS_PER_MODULE * r
        self.head_dim = mha_head_dim(r, a)
        self._in_features = mha_input_dim(r, config.search_version)
        self.encoder = StackedMLP(n, self._in_features, d, d)
        # q, k and v side by side: three Linear(d, 2R head_dim) maps in one product.
        self.qkv = StackedLinear(n, d, 3 * self.num_heads * self.head_dim)
        self._build_core(config)
        self.decoder = StackedMLP(n, d, d, 1)

    @property
    def in_features(self) -> int:
        return self._in_features

    def _build_core(self, config: ModelConfig) -> None:
        raise NotImplementedError

    def _core(self, tokens: Tensor, heads: Tensor, onehot: Tensor) -> tuple[Tensor, Tensor | None]:
        """tokens (N, B, L, d), heads (N, B, L, 2R, head_dim), onehot -> (N, B, L, d), p."""
        raise NotImplementedError

    def attention_heads(self, tokens: Tensor) -> Tensor:
        """All 2R heads' outputs: (N, B, L, d) -> (N, B, L, 2R, head_dim)."""
        qkv = self.qkv(tokens).view(*tokens.shape[:-1], 3, self.num_heads, self.head_dim)
        return packed_masked_self_attention(qkv)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        if x.shape[2] < 2:
            raise ValueError(
                f"MHA input needs sequence length >= 2 (a token attends only to the others), "
                f"got shape {tuple(x.shape)}"
            )
        tokens = self.encoder(x)
        mixed, scores = self._core(tokens, self.attention_heads(tokens), self.rule_onehot(x))
        return self.decoder(mixed).squeeze(-1), scores


class MHAMonolithic(MHAModel):
    """Monolithic attention: 2R heads and one output MLP (spec §3.3, Table 1)."""

    def _build_core(self, config: ModelConfig) -> None:
        n, d, hd = config.num_runs, config.encoder_dim, self.head_dim
        self.in_proj = StackedLinear(n, d, hd)
        self.out_proj = StackedMLP(n, (self.num_heads + 1) * hd, 2 * d, d)

    def _core(self, tokens: Tensor, heads: Tensor, onehot: Tensor) -> tuple[Tensor, Tensor | None]:
        joined = torch.cat([heads.flatten(-2), self.in_proj(tokens)], dim=-1)
        return self.out_proj(joined), None


class MHAModular(MHAModel):
    """R attention modules of 2 heads each, mixed by a routing per token (spec §3.3, Table 1).

    Module r reads ``[head 2r, head 2r+1, in_ slice r]`` (3 head_dim wide) through its own
    output MLP; the routing (``modular``, ``modular-op``, ``gt-modular``) gives p per token.
    """

    def _build_core(self, config: ModelConfig) -> None:
        n, r, d, hd = config.num_runs, config.num_rules, config.encoder_dim, self.head_dim
        self.intermediate_dim = mha_intermediate_dim(r, d, config.dim)
        self.routing = build_routing(
            config.model, context_scorer=lambda: StackedMLP(n, r, hd, r), **config.options
        )
        self.in_proj = StackedLinear(n, d, r * hd)
        out = d + 1 if self.routing.self_scored else d
        width = (HEADS_PER_MODULE + 1) * hd
        self.out_proj = GroupMLP(n, r, width, self.intermediate_dim, out)

    def _core(self, tokens: Tensor, heads: Tensor, onehot: Tensor) -> tuple[Tensor, Tensor | None]:
        r, hd = self.num_rules, self.head_dim
        per_module = heads.reshape(*heads.shape[:-2], r, HEADS_PER_MODULE * hd)
        own = self.in_proj(tokens).view(*tokens.shape[:-1], r, hd)
        self_scored = self.routing.self_scored
        hidden = self.out_proj.hidden(torch.cat([per_module, own], dim=-1))  # (N, B, L, R, I)
        logits = self.out_proj.score_channel(hidden) if self_scored else None
        probs = self.routing(onehot, module_logits=logits)
        return self.out_proj.mix(hidden, probs, score_channel=self_scored), probs
