"""Feeds hostile model files to `hotstage` and checks each gets a located
error and exit code 1 in bounded time: never a crash, a hang, or success.

Usage: hostile.py HOTSTAGE WORKDIR EXAMPLES_DIR
"""
import os
import random
import re
import subprocess
import sys
import time

hotstage, workdir, examples = sys.argv[1:4]
os.makedirs(workdir, exist_ok=True)
LOCATED = re.compile(rb"^\S+:\d+:\d+: error: ", re.M)
failures = []


def check(name, data=None, args=(), allow_success=False, located=True,
          path=None):
    if path is None:
        path = os.path.join(workdir, name + ".hot")
        with open(path, "wb") as f:
            f.write(data)
    start = time.time()
    try:
        r = subprocess.run([hotstage, "build", path, "--emit=nn", "-o",
                            os.devnull, *args], capture_output=True,
                           timeout=30)
    except subprocess.TimeoutExpired:
        failures.append(f"{name}: did not finish in 30 s")
        return
    took = time.time() - start
    if r.returncode == 0 and allow_success:
        return
    if r.returncode != 1:
        failures.append(f"{name}: exit code {r.returncode}, stderr: "
                        f"{r.stderr[-300:]!r}")
    elif located and not LOCATED.search(r.stderr):
        failures.append(f"{name}: no file:line:col error in {r.stderr[:300]!r}")
    elif b"error:" not in r.stderr:
        failures.append(f"{name}: no error message")
    if len(r.stderr) > 200_000:
        failures.append(f"{name}: {len(r.stderr)} bytes of diagnostics")
    if took > 10:
        failures.append(f"{name}: took {took:.1f} s")


rng = random.Random(20240520)
gpt2 = open(os.path.join(examples, "gpt2.hot"), "rb").read()

check("empty", b"")
check("only-comment", b"# nothing here\n")
check("only-newlines", b"\n" * 1000)
# Every 97th prefix of a real model: either valid or a located error.
for cut in range(0, len(gpt2), 97):
    check(f"truncated-{cut}", gpt2[:cut], allow_success=True)
for i in range(20):
    check(f"random-{i}", bytes(rng.randrange(256) for _ in range(4096)))
for i in range(20):
    # Random edits of a real model keep most of its structure.
    data = bytearray(gpt2)
    for _ in range(10):
        data[rng.randrange(len(data))] = rng.choice(b"()[]{}=,;:.@+-*/\n 0aZ\"#\x00\xff")
    check(f"mutated-{i}", bytes(data), allow_success=True)
check("nul-bytes", gpt2.replace(b"dim = 768", b"dim = 7\x0068"))
check("nul-only", b"\x00" * 1000)
check("invalid-utf8", b"config { a = \xff\xfe\xc0\xaf }\n" + gpt2)
check("utf8-identifier", "config { \u00e9t\u00e9 = 1 }\n".encode() + gpt2)
check("long-line-identifiers", b"const a = " + b"x" * (5 << 20) + b"\n")
check("long-line-sum", b"const a = " + b"1 + " * ((5 << 20) // 4) + b"1\n")
check("long-line-garbage", bytes(rng.randrange(128, 256) for _ in range(5 << 20)))
check("long-string", b"const a = \"" + b"s" * (5 << 20) + b"\"\n")
check("nested-parens", b"const a = " + b"(" * 50000 + b"1" + b")" * 50000 + b"\n")
check("nested-brackets", b"const a = " + b"[" * 50000 + b"]" * 50000 + b"\n")
check("nested-calls", b"const a = " + b"f(" * 50000 + b")" * 50000 + b"\n")
check("nested-minus", b"const a = " + b"-" * 50000 + b"1\n")
check("unclosed-parens", b"const a = " + b"(" * 50000 + b"\n")
check("member-chain", b"const a = x" + b".y" * 50000 + b"\n")
check("call-chain", b"const a = f" + b"()" * 50000 + b"\n")
check("unclosed-block", b"block A(d) {\n  forward(x: f32[d]) -> f32[d] {\n")
with open(os.path.join(workdir, "self_import.hot"), "wb") as f:
    f.write(b"import self_import\n")
check("self-import", path=os.path.join(workdir, "self_import.hot"))
check("huge-repeat",
      b"block A(d) {\n  forward(x: f32[B, T, d]) -> f32[B, T, d] { return x }\n}\n"
      b"block R(d) {\n  a = repeat(100000) A(d)\n  forward(x: f32[B, T, d]) -> f32[B, T, d] { return a(x) }\n}\n"
      b"model M {\n  w = param[16, 8] init normal(0.02)\n  r = repeat(100000) R(8)\n"
      b"  forward(tokens: i32[B, T], targets: i32[B, T]) -> f32 {\n"
      b"    return cross_entropy(r(embedding(w, tokens)), targets)\n  }\n}\n")
check("huge-param", gpt2.replace(b"param[vocab, dim]", b"param[vocab, dim, 99999999999]"))
check("integer-overflow", b"const a = 9223372036854775807 + 1\n" + gpt2)
check("many-errors", b"".join(b"const c%d = $\n" % i for i in range(10000)))
check("missing-file", path=os.path.join(workdir, "does-not-exist.hot"),
      located=False)
check("directory", path=workdir, located=False)

if failures:
    print("\n".join(failures))
    sys.exit(1)
print("all hostile inputs gave located errors and exit code 1")
