"""Runs lit-style GPU tests on a machine that has a GPU but no compiler.

    bundle.py build OUT [TEST.test ...]   (on the build host)
    bundle.py run OUT                     (on the GPU machine)

The GPU machines have CUDA, PyTorch and JAX but no LLVM/MLIR, so neither
`hotstage` nor lit's FileCheck runs there. `build` runs each test's
RUN lines that call `hotstage` here, with %t set to OUT/NAME, and copies the
shared libraries the executables need that a GPU machine may lack (Open
MPI's, oneDNN) into OUT/lib; it also copies the tests and the Python scripts they
use. `run`, there, runs every other RUN line of each test with bash, in
order, with the same %t, FileCheck replaced by this file's own small
FileCheck (CHECK, CHECK-NEXT, CHECK-NOT, --check-prefix, {{regex}}) and
`not` by its own, and
reports each test as PASS or FAIL with the line that failed; it exits 1
if any failed. The tests default to test/gpu/*.test.
"""
import argparse
import glob
import lzma
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# Libraries of a model executable that a GPU machine may lack (Open MPI's,
# and oneDNN for the host builds the GPU tests compare with); the CUDA
# libraries are there, and too big to carry.
CARRIED_LIBS = ("libmpi.so", "libopen-rte.so", "libopen-pal.so", "libhwloc.so",
                "libevent_core", "libevent_pthreads", "libudev.so", "libgomp.so",
                "libdnnl.so")


def run_lines(path):
    """The test's RUN commands, continuation lines joined."""
    lines, pending = [], ""
    for line in open(path):
        m = re.match(r"\s*#\s*RUN:\s?(.*)$", line)
        if not m:
            continue
        text = m.group(1).rstrip()
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        lines.append(pending + text)
        pending = ""
    return lines


def prepare(command, test, tmp, hotstage="hotstage"):
    """The RUN line as bash runs it: lit's substitutions, with FileCheck and
    `not` as this file's own."""
    me = os.path.abspath(__file__)
    for key, value in (("%examples", os.path.join(ROOT, "examples")),
                       ("%stdlib", os.path.join(ROOT, "stdlib")),
                       ("%python", sys.executable),
                       ("%mpirun", "mpirun --oversubscribe"),
                       ("%S", os.path.dirname(test)), ("%s", test),
                       ("%t", tmp)):
        command = command.replace(key, value)
    command = re.sub(r"(^|\|\s*)not\s+", rf"\1{sys.executable} {me} not ",
                     command)
    command = re.sub(r"\bFileCheck\b", f"{sys.executable} {me} filecheck",
                     command)
    return re.sub(r"(^|not )hotstage\b", rf"\1{hotstage}", command)


def compiles(command):
    """Whether the RUN line runs the compiler (only the build host can)."""
    return re.match(r"(not\s+)?hotstage\b", command) is not None


def shell(command, env=None):
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], env=env,
                          capture_output=True, text=True)


def build(out, tests, hotstage):
    os.makedirs(os.path.join(out, "lib"), exist_ok=True)
    executables = []
    for test in tests:
        name = os.path.splitext(os.path.basename(test))[0]
        tmp = os.path.join(out, name)
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        shutil.copy(test, os.path.join(out, name + ".test"))
        # Where the test came from: its %S, for the scripts it runs.
        with open(os.path.join(out, name + ".src"), "w") as f:
            f.write(os.path.relpath(os.path.dirname(os.path.abspath(test)),
                                    ROOT))
        test = os.path.abspath(test)
        for command in run_lines(test):
            if not compiles(command):
                continue
            command = prepare(command, test, tmp, hotstage)
            done = shell(command)
            if done.returncode != 0:
                sys.exit(f"{test}: failed: {command}\n{done.stdout}{done.stderr}")
            m = re.search(r"\bbuild\b.*\s-o\s+(\S+)", command)
            if m and "--emit" not in command:
                executables.append(m.group(1))
    copy_libraries(executables, os.path.join(out, "lib"))
    pack_executables(executables)
    print(f"built {len(executables)} executables of {len(tests)} tests "
          f"into {out}")


def copy_libraries(executables, folder):
    """The shared libraries of CARRIED_LIBS the executables load, as ldd
    finds them here, into `folder`; those over 8 MB (oneDNN's 38 MB) xz
    compressed, to keep a bundle under what one device call carries
    (64 MiB): unpack_libraries() restores them there."""
    os.makedirs(folder, exist_ok=True)
    for exe in executables:
        text = subprocess.run(["ldd", exe], capture_output=True,
                              text=True).stdout
        for lib, path in re.findall(r"^\s*(\S+) => (\S+)", text, re.M):
            if not lib.startswith(CARRIED_LIBS):
                continue
            if os.path.getsize(path) < 8 << 20:
                shutil.copy(path, os.path.join(folder, lib))
            elif not os.path.exists(os.path.join(folder, lib + ".xz")):
                with open(path, "rb") as f, lzma.open(
                        os.path.join(folder, lib + ".xz"), "wb") as out:
                    shutil.copyfileobj(f, out)


def pack_executables(executables):
    """Each executable xz compressed in its place (4 MB -> 1 MB: the
    runtime's code and the kernels compress well), so that the bundle and
    the benchmark's build fit one device call together;
    unpack_executables() restores them there."""
    for exe in executables:
        if not os.path.exists(exe):
            continue
        with open(exe, "rb") as f, lzma.open(exe + ".xz", "wb") as out:
            shutil.copyfileobj(f, out)
        os.remove(exe)


def unpack_executables(out):
    """The executables pack_executables() compressed, restored."""
    for packed in glob.glob(os.path.join(out, "*", "*.xz")):
        if os.path.dirname(packed) == os.path.join(out, "lib"):
            continue
        exe = packed[:-3]
        with lzma.open(packed) as f, open(exe + ".part", "wb") as o:
            shutil.copyfileobj(f, o)
        os.chmod(exe + ".part", 0o755)
        os.rename(exe + ".part", exe)


def unpack_libraries(folder):
    """The libraries copy_libraries() compressed, restored in `folder`."""
    for packed in glob.glob(os.path.join(folder, "*.xz")):
        lib = packed[:-3]
        if not os.path.exists(lib):
            with lzma.open(packed) as f, open(lib + ".part", "wb") as out:
                shutil.copyfileobj(f, out)
            os.rename(lib + ".part", lib)


# A small FileCheck: what the GPU tests use of it.
def pattern(text):
    parts = re.split(r"\{\{(.*?)\}\}", text)
    return "".join(re.escape(p) if i % 2 == 0 else f"(?:{p})"
                   for i, p in enumerate(parts))


def filecheck(argv):
    p = argparse.ArgumentParser()
    p.add_argument("check_file")
    p.add_argument("--check-prefix", default="CHECK")
    args, _ = p.parse_known_args(argv)
    checks = []
    for line in open(args.check_file):
        m = re.search(rf"\b{re.escape(args.check_prefix)}(-NEXT|-NOT)?:\s?(.*)$",
                      line)
        if m:
            checks.append((m.group(1) or "", m.group(2).strip()))
    lines = sys.stdin.read().splitlines()
    at, nots = 0, []
    for kind, text in checks:
        regex = re.compile(pattern(text))
        if kind == "-NOT":
            nots.append(regex)
            continue
        found = None
        candidates = [at] if kind == "-NEXT" else range(at, len(lines))
        for i in candidates:
            if i < len(lines) and regex.search(lines[i]):
                found = i
                break
        span = lines[at:found] if found is not None else lines[at:]
        for bad in nots:
            for line in span:
                if bad.search(line):
                    sys.exit(f"CHECK-NOT matched: {line}")
        nots = []
        if found is None:
            sys.exit(f"{args.check_prefix}{kind}: not found: {text}")
        at = found + 1
    for bad in nots:
        for line in lines[at:]:
            if bad.search(line):
                sys.exit(f"CHECK-NOT matched: {line}")


def gpu_env(lib):
    """The environment of a GPU run: the carried libraries (unpacked)
    first, then the CUDA libraries Python's NVIDIA wheels installed
    (PyTorch's and JAX's site-packages/nvidia/*/lib): cuDNN, which the
    fused attention opens at run time, and the CUDA runtime and NVRTC it
    opens in turn."""
    unpack_libraries(lib)
    env = dict(os.environ)
    wheels = sorted(glob.glob(os.path.join(p, "nvidia", "*", "lib"))
                    for p in sys.path if p.endswith(("site-packages",
                                                     "dist-packages")))
    dirs = [lib] + [d for found in wheels for d in found]
    env["LD_LIBRARY_PATH"] = ":".join(dirs + [env.get("LD_LIBRARY_PATH", "")])
    return env


def run(out):
    lib = os.path.join(out, "lib")
    env = gpu_env(lib)
    unpack_executables(out)
    # As test/lit.cfg.py has them for multi-rank runs.
    env.update({"OMPI_ALLOW_RUN_AS_ROOT": "1",
                "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMPI_MCA_btl": "self,vader",
                "OMPI_MCA_btl_vader_single_copy_mechanism": "none"})
    failed = skipped = 0
    tests = sorted(f for f in os.listdir(out) if f.endswith(".test"))
    for test_file in tests:
        name = test_file[:-5]
        test = os.path.join(out, test_file)
        tmp = os.path.join(out, name)
        # The test's scripts live beside the original test, under %S.
        with open(os.path.join(out, name + ".src")) as f:
            where = f.read().strip()
        src = os.path.join(ROOT, where)
        shown = f"{where}/{test_file}"
        result = "PASS"
        # This machine has what a GPU test may require.
        features = {"cuda-gpu", "cuda-toolkit"}
        text = open(test).read()
        required = set(re.findall(r"REQUIRES:\s*(\S+)", text))
        excluded = set(re.findall(r"UNSUPPORTED:\s*(\S+)", text))
        if not required <= features or excluded & features:
            print(f"UNSUPPORTED: {shown}", flush=True)
            skipped += 1
            continue
        for command in run_lines(test):
            # The executables are in %t already.
            if compiles(command) or re.match(r"rm -rf %t\b", command):
                continue
            command = prepare(command, os.path.join(src, test_file), tmp)
            done = shell(command, env)
            if done.returncode != 0:
                result = (f"FAIL\n  {command}\n"
                          + (done.stdout + done.stderr).strip()[-3000:])
                break
        print(f"{result.splitlines()[0]}: {shown}"
              + ("\n" + "\n".join(result.splitlines()[1:])
                 if result != "PASS" else ""), flush=True)
        failed += result != "PASS"
    print(f"{len(tests) - failed - skipped} passed, {failed} failed, "
          f"{skipped} unsupported")
    return 1 if failed else 0


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "filecheck":
        filecheck(sys.argv[2:])
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "not":  # lit's `not`
        return 0 if subprocess.run(sys.argv[2:]).returncode != 0 else 1
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["build", "run"])
    p.add_argument("out")
    p.add_argument("tests", nargs="*")
    p.add_argument("--hotstage", default=os.path.join(ROOT, "build", "bin",
                                                      "hotstage"))
    args = p.parse_args()
    out = os.path.abspath(args.out)
    if args.mode == "build":
        tests = args.tests or sorted(
            os.path.join(HERE, f) for f in os.listdir(HERE)
            if f.endswith(".test"))
        build(out, tests, args.hotstage)
        return 0
    return run(out)


if __name__ == "__main__":
    sys.exit(main())
