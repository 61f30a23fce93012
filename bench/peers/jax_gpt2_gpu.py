#!/usr/bin/env python3
"""JAX GPU peer for Hotstage's benchmarks: GPT-2 training steps.

The same GPT-2 as examples/gpt2.hot (tied embedding, pre-norm blocks, tanh
GELU, causal attention) as an expert writes it in JAX: one jitted step
with donated buffers, the layers under lax.scan, bf16 compute over fp32
master weights (layer norms and the loss in fp32), cuDNN's fused
attention (jax.nn.dot_product_attention), optax AdamW (lr 6e-4, betas
0.9/0.95, eps 1e-8, weight decay 0.1 on matrices) after clipping at 1.0.
--precision fp32 computes in fp32 (XLA's attention, no TF32).

    python3 bench/peers/jax_gpt2_gpu.py --batch 16 --seq 1024 --iters 20

Prints one JSON line like bench/peers/pytorch_gpt2_gpu.py.
"""

import json
import statistics
import time

import jax
import jax.numpy as jnp
import optax

import gpu_args  # the shared command line (bench/peers/gpu_args.py)


def init(key, vocab, ctx, dim, layers):
    keys = jax.random.split(key, 6)
    std, proj = 0.02, 0.02 / (2 * layers) ** 0.5

    def normal(k, shape, s):
        return s * jax.random.normal(k, shape, jnp.float32)

    zeros, ones = jnp.zeros, jnp.ones
    blocks = {
        "ln1_g": ones((layers, dim)), "ln1_b": zeros((layers, dim)),
        "qkv_w": normal(keys[0], (layers, dim, 3 * dim), std),
        "qkv_b": zeros((layers, 3 * dim)),
        "attn_w": normal(keys[1], (layers, dim, dim), proj),
        "attn_b": zeros((layers, dim)),
        "ln2_g": ones((layers, dim)), "ln2_b": zeros((layers, dim)),
        "fc_w": normal(keys[2], (layers, dim, 4 * dim), std),
        "fc_b": zeros((layers, 4 * dim)),
        "mlp_w": normal(keys[3], (layers, 4 * dim, dim), proj),
        "mlp_b": zeros((layers, dim)),
    }
    return {"wte": normal(keys[4], (vocab, dim), std),
            "wpe": normal(keys[5], (ctx, dim), 0.01), "blocks": blocks,
            "lnf_g": ones((dim,)), "lnf_b": zeros((dim,))}


def layer_norm(x, g, b):
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = ((x32 - mean) ** 2).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + 1e-5) * g + b
    return y.astype(x.dtype)


def make_loss(heads, dtype, attention):
    def loss_fn(params, tokens, targets):
        p = jax.tree.map(lambda a: a.astype(dtype), params)
        b, t = tokens.shape
        x = p["wte"][tokens] + p["wpe"][:t]
        dim = x.shape[-1]

        def block(x, w):
            qkv = layer_norm(x, w["ln1_g"], w["ln1_b"]) @ w["qkv_w"] + w["qkv_b"]
            q, k, v = (z.reshape(b, t, heads, dim // heads)
                       for z in jnp.split(qkv, 3, axis=-1))
            y = jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                             implementation=attention)
            x = x + y.reshape(b, t, dim) @ w["attn_w"] + w["attn_b"]
            h = jax.nn.gelu(layer_norm(x, w["ln2_g"], w["ln2_b"]) @ w["fc_w"]
                            + w["fc_b"], approximate=True)
            return x + h @ w["mlp_w"] + w["mlp_b"], None

        x, _ = jax.lax.scan(block, x, p["blocks"])
        logits = layer_norm(x, p["lnf_g"], p["lnf_b"]) @ p["wte"].T
        return optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), targets).mean()
    return loss_fn


def main():
    ap = gpu_args.parser(__doc__.split("\n\n")[0])
    args = ap.parse_args()

    jax.config.update("jax_default_matmul_precision", "highest")
    dtype = jnp.bfloat16 if args.precision == "bf16" else jnp.float32
    attention = "cudnn" if args.precision == "bf16" else "xla"
    params = init(jax.random.PRNGKey(0), args.vocab, args.ctx, args.dim,
                  args.layers)
    # Weight decay on matrices only, as Hotstage and the PyTorch peer.
    mask = jax.tree.map(lambda a: a.ndim >= 2, params)
    mask["blocks"] = {k: v.ndim >= 3 for k, v in params["blocks"].items()}
    opt = optax.chain(optax.clip_by_global_norm(1.0),
                      optax.adamw(6e-4, b1=0.9, b2=0.95, eps=1e-8,
                                  weight_decay=0.1, mask=mask))
    state = opt.init(params)
    loss_fn = make_loss(args.heads, dtype, attention)

    def train_step(params, state, tokens, targets):
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens, targets)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    step = jax.jit(train_step, donate_argnums=(0, 1))
    key = jax.random.PRNGKey(1)
    tokens = jax.random.randint(key, (args.batch, args.seq), 0, args.vocab)
    targets = jax.random.randint(jax.random.split(key)[0],
                                 (args.batch, args.seq), 0, args.vocab)
    for _ in range(args.warmup):
        params, state, loss = step(params, state, tokens, targets)
    loss.block_until_ready()
    times = []
    for _ in range(args.iters):
        start = time.perf_counter()
        params, state, loss = step(params, state, tokens, targets)
        loss.block_until_ready()
        times.append((time.perf_counter() - start) * 1e3)
    median = statistics.median(times)
    print(json.dumps({
        "peer": "jax", "jax": jax.__version__,
        "gpu": jax.devices()[0].device_kind, "precision": args.precision,
        "attention": attention,
        "params": sum(a.size for a in jax.tree.leaves(params)),
        "batch": args.batch, "seq": args.seq,
        "ms_per_step_median": median, "ms_per_step_min": min(times),
        "tokens_per_s": args.batch * args.seq / median * 1e3,
        "last_loss": float(loss)}))


if __name__ == "__main__":
    main()
