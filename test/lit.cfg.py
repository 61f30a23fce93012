# -*- Python -*-
#
# lit configuration of the Hotstage tests. Run it through the build tree
# (`lit -sv build/test`, `ninja check-hotstage` or `ctest`), whose
# lit.site.cfg.py says where the sources and the tools are.

import os
import subprocess
import sys

import lit.formats
from lit.llvm import llvm_config
from lit.llvm.subst import ToolSubst

config.name = "Hotstage"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".hot", ".test"]
config.excludes = [
    "CMakeLists.txt",
    "lit.cfg.py",
    "lit.site.cfg.py",
    "unit",
    "fuzz",
    "Inputs",
]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.hotstage_obj_root, "test")

llvm_config.with_system_environment(["HOME", "TMP", "TEMP", "CUDA_VISIBLE_DEVICES"])
llvm_config.use_default_substitutions()

# Our tools (hotstage, hotstage-opt) come first on PATH, then LLVM's
# (FileCheck, not, count), so RUN lines can name them directly.
llvm_config.with_environment(
    "PATH", [config.hotstage_tools_dir, config.llvm_tools_dir], append_path=True
)
llvm_config.add_tool_substitutions(
    [
        ToolSubst("hotstage-opt", unresolved="fatal"),
        ToolSubst("hotstage", unresolved="fatal"),
    ],
    [config.hotstage_tools_dir],
)

config.substitutions.append(("%python", sys.executable))
config.substitutions.append(
    ("%stdlib", os.path.join(config.hotstage_src_root, "stdlib"))
)
config.substitutions.append(
    ("%examples", os.path.join(config.hotstage_src_root, "examples"))
)


def has_cuda_gpu():
    """True when `nvidia-smi -L` lists a device; GPU tests say REQUIRES: cuda-gpu."""
    try:
        result = subprocess.run(
            ["nvidia-smi", "-L"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


if has_cuda_gpu():
    config.available_features.add("cuda-gpu")
# The compiler was built with the CUDA toolkit: --target cuda builds (PTX,
# ptxas, fatbinary, cuBLASLt); running them needs cuda-gpu.
if config.hotstage_cuda_toolkit.upper() in ("TRUE", "ON", "1", "YES"):
    config.available_features.add("cuda-toolkit")
    # The driver API's stub library: every function resolves, none works.
    config.substitutions.append(
        ("%cuda_stub_driver",
         os.path.join(config.hotstage_cuda_lib_dir, "stubs", "libcuda.so")))

# Tests compare runs of different rank counts and devices bit for bit,
# and oneDNN's GEMM sums can depend on its thread count (seen on an AVX2
# AMD EPYC with 2 threads against 1): every process computes with one
# thread unless its test says otherwise (lit runs the tests in parallel).
config.environment["HOTSTAGE_NUM_THREADS"] = "1"

# Multi-rank tests launch Open MPI's mpirun (scripts/setup.sh installs it):
# more ranks than cores, as root in CI containers, shared-memory transport
# without cross-process copies (which containers often forbid).
config.substitutions.append(("%mpirun", "mpirun --oversubscribe"))
for name, value in {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_btl": "self,vader",
    "OMPI_MCA_btl_vader_single_copy_mechanism": "none",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
}.items():
    config.environment[name] = value
