#!/usr/bin/python3
"""Independent PyTorch reference for Hotstage's GPT-2 (examples/gpt2.hot).

Computes, for given weights and token batches, the first loss, its
gradients, and N steps of AdamW training, so that Hotstage's compiled
executable can be checked against it.  fp32, CPU, single process,
deterministic.  Needs only PyTorch (Debian's, run with /usr/bin/python3).

Run:
    gpt2_reference.py --config CFG.json --weights W.safetensors \
        --batches BATCHES.safetensors --out OUT.safetensors [--threads N] [--steps K]
    gpt2_reference.py --make-inputs --config CFG.json --weights W.safetensors \
        --batches BATCHES.safetensors [--seed S] [--batch B] [--seq T] [--num-batches N] [--init random|gpt2]
    gpt2_reference.py --selftest

Config (JSON):
    {"vocab": V, "ctx": C, "dim": D, "heads": H, "layers": L, "eps": 1e-5,
     "optimizer": {"lr": .., "beta1": .., "beta2": .., "eps": .., "weight_decay": ..,
                   "warmup": W, "lr_schedule": "constant"|"cosine"|"linear",
                   "min_lr": .., "clip_grad_norm": c (0 = off), "total_steps": N}}
    "eps" is the layer-norm epsilon (default 1e-5).  Optimizer fields missing
    from the file take Hotstage's train defaults (docs/language.md section 12);
    total_steps defaults to the number of steps run.  Optional top-level
    "batch" and "seq", if given, must equal the batches' B and T;
    "precision": "bf16" rounds as Hotstage's precision = bf16 does
    (Bf16Matmul), "attention": "bf16" as its fused attention does, and
    "gelu": "epilogue" (with bf16) as its GEMMs with cuBLASLt's GELU
    epilogues do (Bf16GeluLinear), and "residual": "bf16" (with bf16) as
    `hotstage build --bf16-residual` keeps the residual stream and its
    gradient (RoundResidual), "bias": "epilogue" then rounding the biases
    that GEMMs writing it add in their epilogue (--gemm-epilogues=bias, as
    --target cuda has it).

Weights: one F32 tensor per parameter, named as Hotstage names them
(`hotstage build examples/gpt2.hot --emit=nn` prints them as nn.param @name):
    wte [V,D], wpe [C,D],
    blocks.{i}.ln1.weight [D], blocks.{i}.ln1.bias [D],
    blocks.{i}.attn.qkv.weight [3D,D], blocks.{i}.attn.qkv.bias [3D],
    blocks.{i}.attn.proj.weight [D,D], blocks.{i}.attn.proj.bias [D],
    blocks.{i}.ln2.weight [D], blocks.{i}.ln2.bias [D],
    blocks.{i}.mlp.fc.weight [4D,D], blocks.{i}.mlp.fc.bias [4D],
    blocks.{i}.mlp.proj.weight [D,4D], blocks.{i}.mlp.proj.bias [D],
    ln_f.weight [D], ln_f.bias [D]

Batches: `tokens` and `targets`, I32 [N, B, T]; batch s is tokens[s], targets[s].

Output (safetensors, all F32):
    loss0            []     loss on batch 0 with the given weights
    token_losses0    [B, T] each position's loss in it (the logits' check)
    grad.<param>     shape of <param>; gradient of loss0 (before clipping/update)
    losses           [N]    loss of step s on batch s, before step s's update
                            (losses[0] == loss0)
    grad_norm        [N]    global L2 norm of step s's gradients, before clipping
    lr               [N]    learning rate used by step s (see lr_at)
    final.<param>    shape of <param>; weights after the N steps
  metadata: "config" (the resolved config, JSON), "torch", "threads", "format".

The training step s (0-based): zero grads; loss = model(tokens[s], targets[s]);
backward; grad_norm = ||all grads||_2; if clip > 0, scale every gradient by
min(1, clip / (grad_norm + 1e-6)) (torch.nn.utils.clip_grad_norm_); set the
learning rate to lr_at(s); one torch.optim.AdamW step, with weight decay on
parameters of rank >= 2 only (wte, wpe, the Linear weights) and none on
rank-1 parameters (norm weights, biases).
"""

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

FORMAT = "hotstage-gpt2-reference/1"

# Hotstage's train defaults (docs/language.md, section 12).
OPT_DEFAULTS = {
    "lr": 3e-4, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0,
    "warmup": 0, "lr_schedule": "constant", "min_lr": 0.0, "clip_grad_norm": 0.0,
    "total_steps": None,
}
MODEL_KEYS = ("vocab", "ctx", "dim", "heads", "layers")
CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_: coef = max_norm / (norm + 1e-6)


class ReferenceError_(Exception):
    """A user-facing error: bad config, weights or batches."""


def fail(msg):
    raise ReferenceError_(msg)


# --------------------------------------------------------------------------
# Learning-rate schedule.  THE ONE PLACE that defines lr(s).
# --------------------------------------------------------------------------
def lr_at(step, opt):
    """Learning rate of optimizer step `step` (0-based: the first step is 0).

    warmup W > 0 and step < W:  lr * (step + 1) / W   (linear warmup; step W-1
                                                      reaches the full lr)
    otherwise, with p = (step - W) / max(1, total_steps - W), clamped to [0, 1]
    (so steps at or past total_steps stay at the final value):
      constant: lr                                   (min_lr unused)
      cosine:   min_lr + 0.5 * (lr - min_lr) * (1 + cos(pi * p))
      linear:   lr - (lr - min_lr) * p
    Computed in float64; the optimizer receives it as a Python float.
    """
    lr, warmup = float(opt["lr"]), int(opt["warmup"])
    min_lr, total = float(opt["min_lr"]), int(opt["total_steps"])
    if step < warmup:
        return lr * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    p = min(max(p, 0.0), 1.0)
    kind = opt["lr_schedule"]
    if kind == "constant":
        return lr
    if kind == "cosine":
        return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * p))
    if kind == "linear":
        return lr - (lr - min_lr) * p
    fail(f"unknown lr_schedule {kind!r}; expected constant, cosine or linear")


# --------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------
def resolve_config(raw, steps=None):
    """Checks a config dict and fills defaults; returns a new dict."""
    if not isinstance(raw, dict):
        fail("config: the top level must be a JSON object")
    allowed = set(MODEL_KEYS) | {"eps", "optimizer", "batch", "seq", "precision",
                                 "attention", "gelu", "residual", "bias"}
    extra = sorted(set(raw) - allowed)
    if extra:
        fail(f"config: unknown key(s) {extra}; allowed: {sorted(allowed)}")
    cfg = {}
    for k in MODEL_KEYS:
        if k not in raw:
            fail(f"config: missing {k!r}")
        v = raw[k]
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            fail(f"config: {k!r} must be a positive integer, got {v!r}")
        cfg[k] = v
    if cfg["dim"] % cfg["heads"]:
        fail(f"config: dim {cfg['dim']} is not a multiple of heads {cfg['heads']}")
    cfg["eps"] = float(raw.get("eps", 1e-5))
    cfg["precision"] = raw.get("precision", "fp32")
    if cfg["precision"] not in ("fp32", "bf16"):
        fail(f"config: precision {cfg['precision']!r}; expected fp32 or bf16")
    cfg["attention"] = raw.get("attention", "fp32")
    if cfg["attention"] not in ("fp32", "bf16"):
        fail(f"config: attention {cfg['attention']!r}; expected fp32 or bf16")
    cfg["residual"] = raw.get("residual", "fp32")
    if cfg["residual"] not in ("fp32", "bf16"):
        fail(f"config: residual {cfg['residual']!r}; expected fp32 or bf16")
    if cfg["residual"] == "bf16" and cfg["precision"] != "bf16":
        fail("config: residual bf16 needs precision bf16")
    cfg["bias"] = raw.get("bias", "kernel")
    if cfg["bias"] not in ("kernel", "epilogue"):
        fail(f"config: bias {cfg['bias']!r}; expected kernel or epilogue")
    cfg["gelu"] = raw.get("gelu", "kernel")
    if cfg["gelu"] not in ("kernel", "epilogue"):
        fail(f"config: gelu {cfg['gelu']!r}; expected kernel or epilogue")
    for k in ("batch", "seq"):
        if k in raw:
            cfg[k] = int(raw[k])
    o = raw.get("optimizer", {})
    if not isinstance(o, dict):
        fail("config: 'optimizer' must be an object")
    extra = sorted(set(o) - set(OPT_DEFAULTS))
    if extra:
        fail(f"config: unknown optimizer key(s) {extra}; allowed: {sorted(OPT_DEFAULTS)}")
    opt = dict(OPT_DEFAULTS)
    opt.update(o)
    for k in ("lr", "beta1", "beta2", "eps", "weight_decay", "min_lr", "clip_grad_norm"):
        opt[k] = float(opt[k])
    opt["warmup"] = int(opt["warmup"])
    if opt["lr_schedule"] not in ("constant", "cosine", "linear"):
        fail(f"config: lr_schedule {opt['lr_schedule']!r}; expected constant, cosine or linear")
    if not (0 <= opt["beta1"] < 1 and 0 <= opt["beta2"] < 1):
        fail("config: beta1 and beta2 must be in [0, 1)")
    if opt["lr"] <= 0 or opt["eps"] <= 0 or opt["weight_decay"] < 0 or opt["warmup"] < 0 \
            or opt["min_lr"] < 0 or opt["clip_grad_norm"] < 0:
        fail("config: need lr > 0, eps > 0, weight_decay >= 0, warmup >= 0, min_lr >= 0, clip_grad_norm >= 0")
    if opt["total_steps"] is None:
        opt["total_steps"] = steps
    if opt["total_steps"] is not None:
        opt["total_steps"] = int(opt["total_steps"])
    cfg["optimizer"] = opt
    return cfg


def param_shapes(cfg):
    """Parameter names and shapes, in Hotstage's declaration order."""
    V, C, D, L = cfg["vocab"], cfg["ctx"], cfg["dim"], cfg["layers"]
    shapes = {"wte": [V, D], "wpe": [C, D]}
    for i in range(L):
        p = f"blocks.{i}."
        shapes.update({
            p + "ln1.weight": [D], p + "ln1.bias": [D],
            p + "attn.qkv.weight": [3 * D, D], p + "attn.qkv.bias": [3 * D],
            p + "attn.proj.weight": [D, D], p + "attn.proj.bias": [D],
            p + "ln2.weight": [D], p + "ln2.bias": [D],
            p + "mlp.fc.weight": [4 * D, D], p + "mlp.fc.bias": [4 * D],
            p + "mlp.proj.weight": [D, 4 * D], p + "mlp.proj.bias": [D],
        })
    shapes["ln_f.weight"] = [D]
    shapes["ln_f.bias"] = [D]
    return shapes


# --------------------------------------------------------------------------
# The model.  Parameter paths equal Hotstage's (named_parameters() order too).
# --------------------------------------------------------------------------
def round_bf16(x):
    """x rounded to bf16 (nearest, ties to even) and back to f32."""
    return x.to(torch.bfloat16).to(torch.float32)


class Bf16Matmul(torch.autograd.Function):
    """a @ b (+ bias) for a [..., k] and b [k, n] as Hotstage's precision =
    bf16 runs a GEMM: both operands rounded to bf16, f32 accumulation; with
    `keep` (a GEMM output that is not added to anything, which Hotstage
    keeps in bf16) the bias rounded too and the output rounded once. The
    backward's GEMMs round their operands (the incoming gradient too) and
    the input's gradient (kept in bf16: nothing adds it to anything in this
    model); the weight's and the bias's gradients stay f32, the bias's
    summed from the rounded incoming gradient with `keep` (Hotstage stores
    a gradient that only GEMMs and a bias's sum read in bf16; in this model
    those are the kept outputs' gradients)."""

    @staticmethod
    def forward(ctx, a, b, bias=None, keep=False, exact_input_grad=False):
        ra, rb = round_bf16(a), round_bf16(b)
        ctx.save_for_backward(ra, rb)
        ctx.has_bias, ctx.keep = bias is not None, keep
        ctx.exact_input_grad = exact_input_grad
        y = ra @ rb
        if bias is not None:
            y = round_bf16(bias) + y if keep else y + bias
        return round_bf16(y) if keep else y

    @staticmethod
    def backward(ctx, g):
        ra, rb = ctx.saved_tensors
        rg = round_bf16(g)
        k, n = rb.shape
        summed = rg if ctx.keep else g
        bias_grad = summed.reshape(-1, n).sum(0) if ctx.has_bias else None
        input_grad = rg @ rb.t()
        if not ctx.exact_input_grad:
            input_grad = round_bf16(input_grad)
        return (input_grad, ra.reshape(-1, k).t() @ rg.reshape(-1, n),
                bias_grad, None, None)


def gelu_tanh_grad(x, g):
    """g * gelu'(x) in f32, tanh form."""
    with torch.enable_grad():
        x = x.detach().requires_grad_()
        (d,) = torch.autograd.grad(F.gelu(x, approximate="tanh"), x, g)
    return d


class Bf16GeluLinear(torch.autograd.Function):
    """gelu(a @ b + bias) as Hotstage's bf16 GEMM with cuBLASLt's GELU
    epilogue (--gemm-epilogues=gelu) computes it: the GELU of the f32 sum,
    rounded once; the sum rounded into aux for the backward, whose GEMM
    multiplies its unrounded product (the next GEMM's input gradient, from
    Bf16Matmul with exact_input_grad) by the GELU's slope at aux and rounds
    that once."""

    @staticmethod
    def forward(ctx, a, b, bias):
        ra, rb = round_bf16(a), round_bf16(b)
        pre = round_bf16(bias) + ra @ rb
        aux = round_bf16(pre)
        ctx.save_for_backward(ra, rb, aux)
        return round_bf16(F.gelu(pre, approximate="tanh"))

    @staticmethod
    def backward(ctx, g):
        ra, rb, aux = ctx.saved_tensors
        rg = round_bf16(gelu_tanh_grad(aux, g))
        k, n = rb.shape
        return (round_bf16(rg @ rb.t()), ra.reshape(-1, k).t() @ rg.reshape(-1, n),
                rg.reshape(-1, n).sum(0))


# Every GEMM of the model (not attention's products, which Hotstage
# computes in one f32 kernel): f32, or bf16 with precision = bf16.
GEMM = torch.matmul


class Linear(nn.Module):
    """y = x W^T + b, W is [out, in] (nn.linear)."""

    def __init__(self, in_dim, out_dim, residual=False):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_dim, in_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.residual = residual  # its output is added to the stream

    def forward(self, x):
        if GEMM is torch.matmul:
            return F.linear(x, self.weight, self.bias)
        return GEMM(x, self.weight.t(), residual_bias(self.bias, self.residual),
                    not self.residual)


def residual_bias(bias, residual):
    """A residual GEMM's bias: rounded to bf16 where the GEMM adds it in its
    epilogue and writes the stream in bf16 (cuBLASLt's bias has D's type),
    its gradient still the f32 sum."""
    if not (residual and RESIDUAL_BF16 and BIAS_EPILOGUE):
        return bias
    return bias + (round_bf16(bias) - bias).detach()


class LayerNorm(nn.Module):
    """Over the last axis: (x - mean) / sqrt(var + eps) * w + b, biased var."""

    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)


def causal_attention(q, k, v, heads):
    """nn.attention with causal = true and scale = 1/sqrt(head_dim).

    q, k, v: [B, T, heads * hd]; head h is columns h*hd .. (h+1)*hd - 1.
    Position i attends to positions j <= i.  Returns [B, T, heads * hd].
    """
    B, T, D = q.shape
    hd = D // heads

    def split_heads(x):  # [B, T, H*hd] -> [B, H, T, hd]
        return x.reshape(B, T, heads, hd).transpose(1, 2)

    q, k, v = split_heads(q), split_heads(k), split_heads(v)
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))  # [B, H, T, T]
    allowed = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    y = probs @ v  # [B, H, T, hd]
    return y.transpose(1, 2).reshape(B, T, D)


class Bf16Attention(torch.autograd.Function):
    """causal_attention as Hotstage's --sdpa runs it (cuDNN's fused flash
    attention on a GPU): on bf16 copies of q, k and v, f32 inside, the
    output rounded to bf16; the backward rounds the incoming gradient and
    each input's gradient."""

    @staticmethod
    def forward(ctx, q, k, v, heads):
        rq, rk, rv = round_bf16(q), round_bf16(k), round_bf16(v)
        ctx.save_for_backward(rq, rk, rv)
        ctx.heads = heads
        return round_bf16(causal_attention(rq, rk, rv, heads))

    @staticmethod
    def backward(ctx, g):
        inputs = [t.detach().requires_grad_() for t in ctx.saved_tensors]
        with torch.enable_grad():
            y = causal_attention(*inputs, ctx.heads)
        grads = torch.autograd.grad(y, inputs, round_bf16(g))
        return tuple(round_bf16(d) for d in grads) + (None,)


class RoundResidual(torch.autograd.Function):
    """A stretch of the residual stream as `--bf16-residual` stores it: each
    sum rounded to bf16 (the add, or the GEMM that adds it, rounds once),
    and its gradient, the sum of what its readers send back (the next
    stretch's and the layer norm's), rounded once as the norm's gradient
    kernel stores it."""

    @staticmethod
    def forward(ctx, x):
        return round_bf16(x)

    @staticmethod
    def backward(ctx, g):
        return round_bf16(g)


def residual(x):
    return RoundResidual.apply(x) if RESIDUAL_BF16 else x


# With "residual": "bf16" (and precision bf16), RoundResidual; with
# "bias": "epilogue" (or "gelu": "epilogue") too, the residual GEMMs' biases
# rounded (residual_bias).
RESIDUAL_BF16 = False
BIAS_EPILOGUE = False


# The model's attention: f32, or with "attention": "bf16" Bf16Attention.
ATTENTION = causal_attention
# With "gelu": "epilogue" and precision bf16, the MLP's first GEMM and its
# GELU as one (Bf16GeluLinear).
GELU_EPILOGUE = False


class CausalSelfAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = Linear(dim, 3 * dim)
        self.proj = Linear(dim, dim, residual=True)

    def forward(self, x):
        D = x.shape[-1]
        q, k, v = self.qkv(x).split(D, dim=-1)  # split(qkv(x), 3): q first
        if ATTENTION is causal_attention:
            return self.proj(causal_attention(q, k, v, self.heads))
        return self.proj(ATTENTION(q, k, v, self.heads))


class MLP(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc = Linear(dim, 4 * dim)
        self.proj = Linear(4 * dim, dim, residual=True)

    def forward(self, x):
        if GELU_EPILOGUE and GEMM is not torch.matmul:
            h = Bf16GeluLinear.apply(x, self.fc.weight.t(), self.fc.bias)
            return GEMM(h, self.proj.weight.t(), residual_bias(self.proj.bias, True),
                        False, True)
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, dim, heads, eps):
        super().__init__()
        self.ln1 = LayerNorm(dim, eps)
        self.attn = CausalSelfAttention(dim, heads)
        self.ln2 = LayerNorm(dim, eps)
        self.mlp = MLP(dim)

    def forward(self, x):
        x = residual(x + self.attn(self.ln1(x)))
        return residual(x + self.mlp(self.ln2(x)))


class GPT2(nn.Module):
    """GPT-2 with the token embedding tied to the LM head (one `wte`)."""

    def __init__(self, cfg):
        super().__init__()
        V, C, D = cfg["vocab"], cfg["ctx"], cfg["dim"]
        self.vocab, self.ctx = V, C
        self.wte = nn.Parameter(torch.zeros(V, D))
        self.wpe = nn.Parameter(torch.zeros(C, D))
        self.blocks = nn.ModuleList(Block(D, cfg["heads"], cfg["eps"]) for _ in range(cfg["layers"]))
        self.ln_f = LayerNorm(D, cfg["eps"])

    def logits(self, tokens):
        T = tokens.shape[-1]
        x = residual(F.embedding(tokens.long(), self.wte) + self.wpe[0:T])
        for block in self.blocks:
            x = block(x)
        if GEMM is torch.matmul:
            return torch.matmul(self.ln_f(x), self.wte.t())
        return GEMM(self.ln_f(x), self.wte.t(), None, True)

    def forward(self, tokens, targets):
        """Mean cross entropy over all B*T positions."""
        logits = self.logits(tokens)
        return F.cross_entropy(logits.reshape(-1, self.vocab), targets.reshape(-1).long())


def build_model(cfg, weights=None, dtype=torch.float32):
    model = GPT2(cfg).to(dtype)
    names = [n for n, _ in model.named_parameters()]
    assert names == list(param_shapes(cfg)), "model parameter paths differ from param_shapes()"
    if weights is not None:
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(weights[n].to(dtype))
    return model


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------
def check_weights(cfg, weights, where):
    want = param_shapes(cfg)
    missing = [n for n in want if n not in weights]
    extra = sorted(n for n in weights if n not in want)
    problems = []
    if missing:
        problems.append(f"missing tensor(s): {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected tensor(s): {', '.join(extra)}")
    for n, shape in want.items():
        if n in weights:
            t = weights[n]
            if t.dtype != torch.float32:
                problems.append(f"{n}: dtype {safetensors_io._NAME_OF.get(t.dtype, t.dtype)}, expected F32")
            if list(t.shape) != shape:
                problems.append(f"{n}: shape {list(t.shape)}, expected {shape}")
            elif not torch.isfinite(t).all():
                problems.append(f"{n}: has non-finite values")
    if problems:
        fail(f"{where}: weights do not match the model "
             f"(vocab={cfg['vocab']} ctx={cfg['ctx']} dim={cfg['dim']} layers={cfg['layers']}):\n  "
             + "\n  ".join(problems))


def check_batches(cfg, batches, where):
    names = set(batches)
    if names != {"tokens", "targets"}:
        fail(f"{where}: expected exactly the tensors 'tokens' and 'targets', got {sorted(names)}")
    tok, tgt = batches["tokens"], batches["targets"]
    for n, t in (("tokens", tok), ("targets", tgt)):
        if t.dtype != torch.int32:
            fail(f"{where}: {n} has dtype {safetensors_io._NAME_OF.get(t.dtype, t.dtype)}, expected I32")
        if t.dim() != 3 or t.numel() == 0:
            fail(f"{where}: {n} has shape {list(t.shape)}, expected non-empty [N, B, T]")
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= cfg["vocab"]:
            fail(f"{where}: {n} has ids in [{lo}, {hi}], outside [0, vocab={cfg['vocab']})")
    if tok.shape != tgt.shape:
        fail(f"{where}: tokens {list(tok.shape)} and targets {list(tgt.shape)} differ in shape")
    N, B, T = tok.shape
    if T > cfg["ctx"]:
        fail(f"{where}: sequence length {T} exceeds ctx {cfg['ctx']}")
    if "batch" in cfg and cfg["batch"] != B:
        fail(f"{where}: batch {B}, but the config says batch = {cfg['batch']}")
    if "seq" in cfg and cfg["seq"] != T:
        fail(f"{where}: seq {T}, but the config says seq = {cfg['seq']}")
    return N


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------
def make_optimizer(model, opt):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": opt["weight_decay"]},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=opt["lr"], betas=(opt["beta1"], opt["beta2"]),
                             eps=opt["eps"], weight_decay=opt["weight_decay"],
                             amsgrad=False, foreach=False)


def global_grad_norm(params):
    """The L2 norm of all gradients together, as clip_grad_norm_ computes it."""
    grads = [p.grad.detach() for p in params if p.grad is not None]
    return torch.norm(torch.stack([torch.norm(g, 2.0) for g in grads]), 2.0)


def train(model, tokens, targets, opt, steps):
    """Runs `steps` AdamW steps; returns the result tensors (model's dtype)."""
    params = list(model.parameters())
    optimizer = make_optimizer(model, opt)
    clip = opt["clip_grad_norm"]
    losses, norms, lrs = [], [], []
    out = {}
    for s in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = model(tokens[s], targets[s])
        loss.backward()
        if s == 0:
            out["loss0"] = loss.detach().clone()
            with torch.no_grad():
                logits = model.logits(tokens[s])
                out["token_losses0"] = F.cross_entropy(
                    logits.reshape(-1, model.vocab).to(torch.float64),
                    targets[s].reshape(-1).long(),
                    reduction="none").reshape(targets[s].shape).float()
            for n, p in model.named_parameters():
                out["grad." + n] = p.grad.detach().clone()
        if clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, clip, norm_type=2.0)
        else:
            norm = global_grad_norm(params)
        lr = lr_at(s, opt)
        for g in optimizer.param_groups:
            g["lr"] = lr
        optimizer.step()
        losses.append(loss.detach().clone())
        norms.append(norm.detach().clone())
        lrs.append(lr)
    dtype = next(model.parameters()).dtype
    out["losses"] = torch.stack(losses)
    out["grad_norm"] = torch.stack(norms).to(dtype)
    out["lr"] = torch.tensor(lrs, dtype=dtype)
    for n, p in model.named_parameters():
        out["final." + n] = p.detach().clone()
    return out


def setup_torch(threads):
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    try:
        torch.use_deterministic_algorithms(True)
    except Exception:  # pragma: no cover - older torch
        pass


def run_reference(args):
    with open(args.config) as f:
        raw = json.load(f)
    weights, _ = safetensors_io.load(args.weights)
    batches, _ = safetensors_io.load(args.batches)
    cfg = resolve_config(raw)
    check_weights(cfg, weights, args.weights)
    n = check_batches(cfg, batches, args.batches)
    steps = n if args.steps is None else args.steps
    if not 1 <= steps <= n:
        fail(f"--steps {steps}: the batches file has {n} batch(es)")
    cfg = resolve_config(raw, steps)
    global GEMM, ATTENTION, GELU_EPILOGUE, RESIDUAL_BF16, BIAS_EPILOGUE
    GEMM = Bf16Matmul.apply if cfg["precision"] == "bf16" else torch.matmul
    RESIDUAL_BF16 = cfg["residual"] == "bf16"
    BIAS_EPILOGUE = cfg["bias"] == "epilogue" or cfg["gelu"] == "epilogue"
    GELU_EPILOGUE = cfg["gelu"] == "epilogue"
    ATTENTION = Bf16Attention.apply if cfg["attention"] == "bf16" else causal_attention
    model = build_model(cfg, weights)
    out = train(model, batches["tokens"], batches["targets"], cfg["optimizer"], steps)
    meta = {"config": json.dumps(cfg, sort_keys=True), "torch": torch.__version__,
            "threads": str(torch.get_num_threads()), "format": FORMAT}
    safetensors_io.save(args.out, out, meta)
    print(f"loss0 {out['loss0'].item():.6f}  final loss {out['losses'][-1].item():.6f}  "
          f"steps {steps}  -> {args.out}", file=sys.stderr)


# --------------------------------------------------------------------------
# --make-inputs
# --------------------------------------------------------------------------
DEFAULT_TINY_CONFIG = {
    "vocab": 64, "ctx": 16, "dim": 32, "heads": 4, "layers": 2, "eps": 1e-5,
    "optimizer": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1,
                  "warmup": 2, "lr_schedule": "cosine", "min_lr": 1e-4, "clip_grad_norm": 1.0,
                  "total_steps": 8},
}


def init_weights(cfg, seed, kind="random", dtype=torch.float32):
    """Seeded weights.  'gpt2' follows Hotstage's initializers (normal(0.02),
    wpe normal(0.01), residual projections normal(0.02/sqrt(2L)), norms ones,
    biases zeros); 'random' (default) also randomizes norms and biases so
    that every gradient is exercised."""
    g = torch.Generator().manual_seed(seed)
    proj_std = 0.02 / math.sqrt(2 * cfg["layers"])
    w = {}
    for n, shape in param_shapes(cfg).items():
        rnd = torch.randn(shape, generator=g, dtype=torch.float64)
        if n == "wte":
            t = 0.02 * rnd
        elif n == "wpe":
            t = 0.01 * rnd
        elif n.endswith("proj.weight"):
            t = proj_std * rnd
        elif n.endswith(".weight") and len(shape) == 2:
            t = 0.02 * rnd
        elif n.endswith(".weight"):  # layer norm scale
            t = torch.ones(shape, dtype=torch.float64) + (0.1 * rnd if kind == "random" else 0)
        else:  # biases
            t = 0.02 * rnd if kind == "random" else torch.zeros(shape, dtype=torch.float64)
        w[n] = t.to(dtype)
    return w


def make_batches(cfg, n, batch, seq, seed):
    """Random token streams; targets are the next tokens."""
    g = torch.Generator().manual_seed(seed + 1)
    stream = torch.randint(0, cfg["vocab"], (n, batch, seq + 1), generator=g, dtype=torch.int64)
    return {"tokens": stream[:, :, :-1].to(torch.int32).contiguous(),
            "targets": stream[:, :, 1:].to(torch.int32).contiguous()}


def make_inputs(args):
    if os.path.exists(args.config):
        with open(args.config) as f:
            raw = json.load(f)
    else:
        raw = DEFAULT_TINY_CONFIG
        with open(args.config, "w") as f:
            json.dump(raw, f, indent=2)
            f.write("\n")
    cfg = resolve_config(raw)
    seq = args.seq or cfg.get("seq") or cfg["ctx"]
    batch = args.batch or cfg.get("batch") or 2
    if seq > cfg["ctx"]:
        fail(f"--seq {seq} exceeds ctx {cfg['ctx']}")
    safetensors_io.save(args.weights, init_weights(cfg, args.seed, args.init),
                        {"format": FORMAT, "seed": str(args.seed), "init": args.init})
    safetensors_io.save(args.batches, make_batches(cfg, args.num_batches, batch, seq, args.seed),
                        {"format": FORMAT, "seed": str(args.seed)})
    print(f"wrote {args.weights} and {args.batches} ({args.num_batches} batches of "
          f"[{batch}, {seq}]); config {args.config}", file=sys.stderr)


# --------------------------------------------------------------------------
# --selftest
# --------------------------------------------------------------------------
def _close(a, b, tol, what):
    err = (a - b).abs().max().item() if a.numel() else 0.0
    scale = max(1.0, b.abs().max().item() if b.numel() else 0.0)
    if not err <= tol * scale:
        raise AssertionError(f"{what}: max abs difference {err:.3e} > {tol:.1e} * {scale:.3g}")
    return err


def _explicit_loss(cfg, P, tokens, targets):
    """The whole model again, written out from the formulas of the docs, with
    no torch.nn.functional: per-head loops, explicit layer norm / GELU /
    softmax / cross entropy.  P maps parameter names to tensors."""
    eps = cfg["eps"]
    H, D = cfg["heads"], cfg["dim"]
    hd = D // H

    def ln(x, w, b):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + eps) * w + b

    def lin(x, w, b):
        return x @ w.t() + b

    def gelu(x):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))

    B, T = tokens.shape
    x = P["wte"][tokens.long()] + P["wpe"][:T]
    for i in range(cfg["layers"]):
        p = f"blocks.{i}."
        h = ln(x, P[p + "ln1.weight"], P[p + "ln1.bias"])
        qkv = lin(h, P[p + "attn.qkv.weight"], P[p + "attn.qkv.bias"])
        q, k, v = qkv[..., :D], qkv[..., D:2 * D], qkv[..., 2 * D:]
        heads_out = []
        for hh in range(H):
            cols = slice(hh * hd, (hh + 1) * hd)
            s = q[..., cols] @ k[..., cols].transpose(-1, -2) / math.sqrt(hd)  # [B, T, T]
            mask = torch.tensor([[j > i_ for j in range(T)] for i_ in range(T)])
            s = s.masked_fill(mask, -math.inf)
            e = torch.exp(s - s.max(-1, keepdim=True).values)
            heads_out.append((e / e.sum(-1, keepdim=True)) @ v[..., cols])
        y = torch.cat(heads_out, dim=-1)
        x = x + lin(y, P[p + "attn.proj.weight"], P[p + "attn.proj.bias"])
        h = ln(x, P[p + "ln2.weight"], P[p + "ln2.bias"])
        x = x + lin(gelu(lin(h, P[p + "mlp.fc.weight"], P[p + "mlp.fc.bias"])),
                    P[p + "mlp.proj.weight"], P[p + "mlp.proj.bias"])
    logits = ln(x, P["ln_f.weight"], P["ln_f.bias"]) @ P["wte"].t()
    m = logits.max(-1, keepdim=True).values
    lse = (m + torch.log(torch.exp(logits - m).sum(-1, keepdim=True))).squeeze(-1)
    picked = logits.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    return (lse - picked).mean()


def _manual_adamw(cfg, weights, tokens, targets, steps):
    """Hand-written AdamW loop (float64), independent of torch.optim and of
    lr_at: returns (losses, norms, lrs, final weights)."""
    o = cfg["optimizer"]
    names = list(param_shapes(cfg))
    P = {n: weights[n].clone().double() for n in names}
    m = {n: torch.zeros_like(P[n]) for n in names}
    v = {n: torch.zeros_like(P[n]) for n in names}
    losses, norms, lrs = [], [], []
    for s in range(steps):
        leaves = {n: P[n].clone().requires_grad_(True) for n in names}
        loss = _explicit_loss(cfg, leaves, tokens[s], targets[s])
        grads = dict(zip(names, torch.autograd.grad(loss, [leaves[n] for n in names])))
        norm = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
        if o["clip_grad_norm"] > 0:
            c = min(1.0, o["clip_grad_norm"] / (norm + 1e-6))
            grads = {n: g * c for n, g in grads.items()}
        # schedule, written independently of lr_at
        W, total, lr0, lo = o["warmup"], o["total_steps"], o["lr"], o["min_lr"]
        if s + 1 <= W:
            lr = lr0 * (s + 1) / W
        else:
            frac = min(1.0, (s - W) / max(1, total - W))
            lr = {"constant": lr0,
                  "cosine": lo + (lr0 - lo) * (math.cos(math.pi * frac) + 1) / 2,
                  "linear": lr0 + (lo - lr0) * frac}[o["lr_schedule"]]
        t = s + 1
        for n in names:
            g = grads[n]
            if P[n].dim() >= 2:
                P[n] = P[n] - lr * o["weight_decay"] * P[n]
            m[n] = o["beta1"] * m[n] + (1 - o["beta1"]) * g
            v[n] = o["beta2"] * v[n] + (1 - o["beta2"]) * g * g
            mhat = m[n] / (1 - o["beta1"] ** t)
            vhat = v[n] / (1 - o["beta2"] ** t)
            P[n] = P[n] - lr * mhat / (torch.sqrt(vhat) + o["eps"])
        losses.append(loss.item())
        norms.append(norm)
        lrs.append(lr)
    return losses, norms, lrs, P


def selftest(args):
    from torch.nn.utils import stateless

    setup_torch(args.threads)
    checks = []

    def ok(msg):
        checks.append(msg)
        print(f"  ok  {msg}", file=sys.stderr)

    # 1. safetensors round trip, including a scalar, an empty tensor, all dtypes.
    ts = {"a": torch.randn(3, 5), "s": torch.tensor(2.5), "e": torch.zeros(0, 4),
          "i": torch.arange(-6, 6, dtype=torch.int32).reshape(3, 4),
          "l": torch.arange(5, dtype=torch.int64), "d": torch.randn(2, dtype=torch.float64),
          "h": torch.randn(4).half(), "b": torch.randn(4).bfloat16(),
          "u": torch.arange(7, dtype=torch.uint8), "z": torch.tensor([True, False])}
    blob = safetensors_io.dumps(ts, {"k": "v"})
    (hlen,) = __import__("struct").unpack("<Q", blob[:8])
    assert (8 + hlen) % 8 == 0
    back, meta = safetensors_io.loads(blob)
    assert meta == {"k": "v"} and set(back) == set(ts)
    for k in ts:
        assert back[k].dtype == ts[k].dtype and back[k].shape == ts[k].shape and torch.equal(back[k], ts[k]), k
    for bad in (blob[:-1], blob + b"\0"):
        try:
            safetensors_io.loads(bad)
        except safetensors_io.SafetensorsError:
            pass
        else:
            raise AssertionError("a truncated/padded file was accepted")
    ok("safetensors round trip (10 dtypes, scalar, empty) and corrupt-file rejection")

    # 2. lr schedule against hand-computed values.
    o = {"lr": 1.0, "min_lr": 0.1, "warmup": 2, "total_steps": 6}
    want = {"cosine": [0.5, 1.0, 1.0, 0.1 + 0.45 * (1 + math.sqrt(0.5)), 0.55,
                       0.1 + 0.45 * (1 - math.sqrt(0.5)), 0.1, 0.1],
            "linear": [0.5, 1.0, 1.0, 0.775, 0.55, 0.325, 0.1, 0.1],
            "constant": [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]}
    for kind, vals in want.items():
        got = [lr_at(s, dict(o, lr_schedule=kind)) for s in range(8)]
        assert all(abs(a - b) < 1e-12 for a, b in zip(got, vals)), (kind, got)
    assert lr_at(0, dict(o, warmup=0, lr_schedule="cosine")) == 1.0
    ok("lr_at matches hand-computed constant/cosine/linear values with warmup")

    # 3. the model (float64) against the explicit per-head formulas.
    cfg = resolve_config({"vocab": 11, "ctx": 8, "dim": 8, "heads": 2, "layers": 2}, steps=5)
    w64 = init_weights(cfg, 7, "random", torch.float64)
    # larger weights than GPT-2's init, so that attention and GELU are far from linear
    w64 = {n: (t * 10 if t.dim() == 2 else t) for n, t in w64.items()}
    b = make_batches(cfg, 5, 2, 6, 3)
    tok, tgt = b["tokens"], b["targets"]
    model = build_model(cfg, w64, torch.float64)
    l_mod = model(tok[0], tgt[0])
    l_exp = _explicit_loss(cfg, dict(model.named_parameters()), tok[0], tgt[0])
    _close(l_mod.detach(), l_exp.detach(), 1e-12, "module vs explicit loss")
    g_mod = torch.autograd.grad(l_mod, list(model.parameters()))
    g_exp = torch.autograd.grad(l_exp, list(model.parameters()))
    for (n, _), a, c in zip(model.named_parameters(), g_mod, g_exp):
        _close(a, c, 1e-10, f"module vs explicit grad {n}")
    ok(f"module loss/grads == explicit per-head formulas (loss {l_mod.item():.6f})")

    # 4. causality: changing the last token changes no earlier logits.
    with torch.no_grad():
        lg = model.logits(tok[0])
        t2 = tok[0].clone()
        t2[:, -1] = (t2[:, -1] + 1) % cfg["vocab"]
        lg2 = model.logits(t2)
    assert torch.equal(lg[:, :-1], lg2[:, :-1]) and not torch.equal(lg[:, -1], lg2[:, -1])
    ok("causal mask: future tokens do not affect earlier logits")

    # 5. gradcheck of the whole loss w.r.t. every parameter (float64).
    names = [n for n, _ in model.named_parameters()]
    inputs = tuple(w64[n].clone().requires_grad_(True) for n in names)

    def loss_fn(*ps):
        return stateless.functional_call(model, dict(zip(names, ps)), (tok[0], tgt[0]))

    assert torch.autograd.gradcheck(loss_fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)
    ok(f"torch.autograd.gradcheck, float64, {sum(t.numel() for t in inputs)} parameters")

    # 6. float32 model agrees with float64.
    m32 = build_model(cfg, w64, torch.float32)
    l32 = m32(tok[0], tgt[0])
    g32 = torch.autograd.grad(l32, list(m32.parameters()))
    _close(l32.detach().double(), l_mod.detach(), 1e-5, "float32 vs float64 loss")
    for n, a, c in zip(names, g32, g_mod):
        _close(a.double(), c, 1e-4, f"float32 vs float64 grad {n}")
    ok("float32 loss and grads agree with float64")

    # 7. the torch.optim training loop against a hand-written AdamW, float64,
    #    with warmup, each schedule, clipping on (always active) and off.
    steps = 5
    for kind, clip, wd in (("cosine", 0.05, 0.1), ("linear", 0.0, 0.5), ("constant", 1e9, 0.3)):
        c = resolve_config({"vocab": 11, "ctx": 8, "dim": 8, "heads": 2, "layers": 2, "optimizer": {
            "lr": 2e-2, "beta1": 0.8, "beta2": 0.9, "eps": 1e-6, "weight_decay": wd, "warmup": 2,
            "lr_schedule": kind, "min_lr": 1e-3, "clip_grad_norm": clip, "total_steps": 4}}, steps)
        out = train(build_model(c, w64, torch.float64), tok, tgt, c["optimizer"], steps)
        losses, norms, lrs, P = _manual_adamw(c, w64, tok, tgt, steps)
        _close(out["losses"], torch.tensor(losses, dtype=torch.float64), 1e-10, f"{kind}: losses")
        _close(out["grad_norm"], torch.tensor(norms, dtype=torch.float64), 1e-10, f"{kind}: grad_norm")
        _close(out["lr"], torch.tensor(lrs, dtype=torch.float64), 1e-14, f"{kind}: lr")
        for n in names:
            _close(out["final." + n], P[n], 1e-10, f"{kind}: final.{n}")
        assert out["loss0"].item() == out["losses"][0].item()
        if clip and clip < 1:
            assert min(norms) > clip, "clipping was meant to be active"
    ok("AdamW loop == hand-written AdamW (cosine+clip, linear, constant; warmup; rank>=2 decay)")

    # 8. parameter names and shapes against the Hotstage compiler, if built.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    hot = os.environ.get("HOTSTAGE") or os.path.join(root, "build-dev", "bin", "hotstage")
    if os.path.exists(hot):
        dims = {"vocab": 256, "ctx": 64, "dim": 64, "heads": 4, "layers": 2}
        cmd = [hot, "build", os.path.join(root, "examples", "gpt2.hot"), "--emit=nn"]
        for k, v in dict(dims, batch=8, seq=64).items():
            cmd += ["-D", f"{k}={v}"]
        text = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
        got = {}
        for line in text.splitlines():
            mt = re.match(r"\s*nn\.param @(\S+) : tensor<([0-9x]+)xf32>", line)
            if mt:
                got[mt.group(1)] = [int(x) for x in mt.group(2).split("x")]
        want = param_shapes(resolve_config(dims))
        assert list(got.items()) == list(want.items()), f"hotstage params differ:\n{got}\n{want}"
        ok(f"parameter names/shapes/order == `{os.path.relpath(hot, root)} --emit=nn` ({len(got)} params)")
    else:
        print(f"  --  skipped the Hotstage parameter-name check ({hot} not built; set HOTSTAGE)", file=sys.stderr)

    # 9. the command line end to end: make inputs, run twice, same bytes.
    here = os.path.abspath(__file__)
    with tempfile.TemporaryDirectory() as d:
        cfg_p, w_p, b_p = (os.path.join(d, x) for x in ("cfg.json", "w.safetensors", "b.safetensors"))
        run = lambda *a: subprocess.run([sys.executable, here, *a], check=True,  # noqa: E731
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        run("--make-inputs", "--config", cfg_p, "--weights", w_p, "--batches", b_p,
            "--num-batches", "4", "--batch", "2", "--seq", "12")
        outs = []
        for i in range(2):
            o_p = os.path.join(d, f"out{i}.safetensors")
            run("--config", cfg_p, "--weights", w_p, "--batches", b_p, "--out", o_p)
            with open(o_p, "rb") as f:
                outs.append(f.read())
        assert outs[0] == outs[1], "two runs differ"
        res, meta = safetensors_io.loads(outs[0])
        c = resolve_config(json.loads(meta["config"]))
        shapes = param_shapes(c)
        want = {"loss0": [], "token_losses0": [2, 12], "losses": [4],
                "grad_norm": [4], "lr": [4]}
        want.update({"grad." + n: s for n, s in shapes.items()})
        want.update({"final." + n: s for n, s in shapes.items()})
        assert {k: list(v.shape) for k, v in res.items()} == want
        assert all(v.dtype == torch.float32 for v in res.values())
        assert res["loss0"].item() == res["losses"][0].item()
        assert abs(res["token_losses0"].double().mean().item() -
                   res["loss0"].item()) < 1e-5
        assert abs(res["loss0"].item() - math.log(c["vocab"])) < 0.5
        # a wrong weights file is refused with a message
        w, _ = safetensors_io.load(w_p)
        del w["ln_f.bias"]
        w["wte"] = w["wte"][:, :-1].contiguous()
        safetensors_io.save(w_p, w)
        r = subprocess.run([sys.executable, here, "--config", cfg_p, "--weights", w_p, "--batches", b_p,
                            "--out", os.path.join(d, "x.safetensors")], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
        assert r.returncode == 2 and "missing tensor(s): ln_f.bias" in r.stderr \
            and "wte: shape [64, 31], expected [64, 32]" in r.stderr, r.stderr
    ok("CLI: --make-inputs, run, deterministic bytes, output names/shapes, bad weights refused")

    # 9. bf16 GEMMs: rounding to nearest with ties to even, and the
    # backward's products of rounded operands.
    ties = torch.tensor([1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -9, -(1 + 2 ** -8)])
    assert round_bf16(ties).tolist() == [1.0, 1 + 2 ** -6, 1.0, -1.0], round_bf16(ties)
    a = torch.randn(2, 3, 5, requires_grad=True)
    b = torch.randn(5, 4, requires_grad=True)
    g = torch.randn(2, 3, 4)
    bias = torch.randn(4, requires_grad=True)
    y = Bf16Matmul.apply(a, b, bias, True)
    y.backward(g)
    ra, rb, rg = round_bf16(a.detach()), round_bf16(b.detach()), round_bf16(g)
    assert torch.equal(y, round_bf16(y)), "a kept GEMM output is bf16"
    assert torch.allclose(y, round_bf16(round_bf16(bias.detach()) + ra @ rb), atol=1e-6)
    assert torch.equal(a.grad, round_bf16(a.grad)), "the input's gradient is bf16"
    assert torch.allclose(a.grad, round_bf16(rg @ rb.t()), atol=1e-6)
    assert torch.allclose(b.grad, ra.reshape(-1, 5).t() @ rg.reshape(-1, 4), atol=1e-6)
    assert torch.allclose(bias.grad, rg.reshape(-1, 4).sum(0), atol=1e-6)
    ok("bf16 GEMM: round to nearest even, kept outputs and input gradients rounded")

    # 10. bf16 attention: outputs and gradients are f32 attention's on the
    # rounded inputs, rounded.
    q, k, v = (torch.randn(2, 5, 8, requires_grad=True) for _ in range(3))
    g = torch.randn(2, 5, 8)
    y = Bf16Attention.apply(q, k, v, 2)
    y.backward(g)
    rounded = [round_bf16(t.detach()).requires_grad_() for t in (q, k, v)]
    y32 = causal_attention(*rounded, 2)
    assert torch.equal(y, round_bf16(y32.detach())), "bf16 attention output"
    y32.backward(round_bf16(g))
    for t, r in zip((q, k, v), rounded):
        assert torch.equal(t.grad, round_bf16(r.grad)), "bf16 attention gradient"
    ok("bf16 attention: rounded inputs, outputs and gradients")
    print(f"selftest passed ({len(checks)} checks)", file=sys.stderr)


# --------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="model + optimizer JSON")
    ap.add_argument("--weights", help="initial weights, .safetensors")
    ap.add_argument("--batches", help="tokens/targets I32 [N,B,T], .safetensors")
    ap.add_argument("--out", help="results, .safetensors")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (default: all N batches)")
    ap.add_argument("--make-inputs", action="store_true",
                    help="write random weights and batches to --weights/--batches "
                         "(and a tiny default config to --config if it does not exist)")
    ap.add_argument("--seed", type=int, default=1234, help="--make-inputs seed")
    ap.add_argument("--batch", type=int, default=None, help="--make-inputs B (default: config batch or 2)")
    ap.add_argument("--seq", type=int, default=None, help="--make-inputs T (default: config seq or ctx)")
    ap.add_argument("--num-batches", type=int, default=4, help="--make-inputs N (default 4)")
    ap.add_argument("--init", choices=("random", "gpt2"), default="random", help="--make-inputs weights")
    ap.add_argument("--selftest", action="store_true", help="check this script and exit")
    args = ap.parse_args(argv)
    try:
        if args.selftest:
            selftest(args)
            return 0
        if args.make_inputs:
            if not (args.config and args.weights and args.batches):
                ap.error("--make-inputs needs --config, --weights and --batches")
            make_inputs(args)
            return 0
        if not (args.config and args.weights and args.batches and args.out):
            ap.error("needs --config, --weights, --batches and --out (or --make-inputs / --selftest)")
        setup_torch(args.threads)
        run_reference(args)
        return 0
    except (ReferenceError_, safetensors_io.SafetensorsError, OSError, json.JSONDecodeError) as e:
        print(f"gpt2_reference: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
