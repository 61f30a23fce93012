"""Checks that a pipelined run's checkpoint has bitwise one rank's weights.

    same_weights.py REFERENCE.safetensors STAGE.safetensors [STAGE ...]

Every tensor of the reference (parameters and optimizer moments) must be in
at least one stage's file, and every copy of it (a tied parameter is on two
stages) must equal the reference bit for bit.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "reference"))
import safetensors_io  # noqa: E402

reference, _ = safetensors_io.load(sys.argv[1])
seen = set()
for path in sys.argv[2:]:
    tensors, _ = safetensors_io.load(path)
    for name, tensor in tensors.items():
        if name not in reference:
            sys.exit(f"{path}: {name} is not in the reference")
        expected = reference[name]
        if (tensor.shape != expected.shape or
                tensor.numpy().tobytes() != expected.numpy().tobytes()):
            sys.exit(f"{path}: {name} differs from the reference")
        seen.add(name)
missing = sorted(set(reference) - seen)
if missing:
    sys.exit(f"no stage holds {', '.join(missing[:5])}")
print(f"{len(reference)} tensors bitwise equal across {len(sys.argv) - 2} stage file(s)")
