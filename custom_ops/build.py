"""Builds the compiled ops (directional pooling, soft-NMS) without Bazel.

The library is compiled from the sources beside this file with the flags
TensorFlow reports (`tf.sysconfig.get_compile_flags()` / `get_link_flags()`)
into a cache folder, never into the source tree:

    $TF_CENTERNET_OPS_DIR/<key>/          (default root:
    ~/.cache/tf_centernet/ops, or $XDG_CACHE_HOME/tf_centernet/ops)

where ``<key>`` is ``tf<version>-<hash>`` and the hash covers the sources,
this script and the compiler flags: a new TensorFlow or an edited kernel gets
a fresh build, an unchanged one is reused. In that folder:

* ``tf_centernet_ops.so``: CPU kernels only;
* ``tf_centernet_ops_cuda.so``: CPU and CUDA kernels (soft-NMS: CPU only);
* ``cuda_build_error.log``: why the CUDA variant could not be built.

The CUDA variant is built when ``cuda=True``, or with ``cuda="auto"`` when
`nvcc` is found (``$CUDA_HOME/bin``, ``$CUDA_PATH/bin`` or ``PATH``),
TensorFlow is a CUDA build and sees a GPU. In "auto" mode a failed CUDA
compile is logged and the CPU variant is built instead.

Used by `tf_centernet.ops.custom` (build on first use) and by the
``tf-centernet build-ops`` command; it can also run alone:

    python custom_ops/build.py [--cuda yes|no|auto] [--force] [-v]

Environment: ``CXX`` (default ``g++``), ``NVCC``, ``TF_CENTERNET_OPS_DIR``,
``TF_CENTERNET_OPS_CUDA`` (``0``/``1``: default for ``cuda``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

SOURCE_DIR = os.path.dirname(os.path.abspath(__file__))
OPS_SOURCES = ["cc/ops/directional_pool_ops.cc", "cc/ops/soft_nms_ops.cc"]
KERNEL_SOURCES = ["cc/kernels/directional_pool_kernels.cc", "cc/kernels/soft_nms_kernels.cc"]
GPU_SOURCES = ["cc/kernels/directional_pool_kernels_gpu.cu.cc"]
HEADERS = ["cc/kernels/directional_pool.h", "cc/kernels/directional_pool_cuda.cuh"]
# Flags for one source only. Soft-NMS: floating-point operations do not
# trap (the default assumes they may), so that its branch-free IoU loop is
# vectorised; values are unchanged.
SOURCE_FLAGS = {"cc/kernels/soft_nms_kernels.cc": ["-fno-trapping-math"]}
LIBRARY_NAME = "tf_centernet_ops"
CUDA_ERROR_LOG = "cuda_build_error.log"


class BuildError(RuntimeError):
    """The compiler failed; the message ends with its output."""


def _tf():
    import tensorflow as tf  # deferred: importing this file stays cheap

    return tf


def cache_root():
    """The folder holding one sub-folder per build key."""
    root = os.environ.get("TF_CENTERNET_OPS_DIR")
    if root:
        return os.path.abspath(os.path.expanduser(root))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tf_centernet", "ops")


def compile_flags():
    """`tf.sysconfig` compile flags plus ours (C++17, optimised, PIC)."""
    flags = [f for f in _tf().sysconfig.get_compile_flags() if not f.startswith(("-std=", "--std="))]
    return ["-std=c++17", "-O3", "-fPIC", "-DNDEBUG", "-Wno-deprecated-declarations", *flags]


def link_flags():
    return list(_tf().sysconfig.get_link_flags())


def build_key():
    """``tf<version>-<hash>`` of the sources, this script and the flags."""
    tf = _tf()
    digest = hashlib.sha256()
    for rel in [*OPS_SOURCES, *KERNEL_SOURCES, *GPU_SOURCES, *HEADERS]:
        digest.update(rel.encode())
        with open(os.path.join(SOURCE_DIR, rel), "rb") as f:
            digest.update(f.read())
    with open(os.path.abspath(__file__), "rb") as f:
        digest.update(f.read())
    digest.update(repr((compile_flags(), SOURCE_FLAGS, link_flags(), os.environ.get("CXX", "g++"))).encode())
    return f"tf{tf.__version__}-{digest.hexdigest()[:12]}"


def build_dir():
    return os.path.join(cache_root(), build_key())


def library_path(cuda):
    """Where the CPU-only (`cuda=False`) or CUDA variant lives."""
    suffix = "_cuda" if cuda else ""
    return os.path.join(build_dir(), f"{LIBRARY_NAME}{suffix}.so")


def find_nvcc():
    """Path of nvcc, or None."""
    explicit = os.environ.get("NVCC")
    if explicit:
        return explicit if shutil.which(explicit) else None
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home and os.path.isfile(os.path.join(home, "bin", "nvcc")):
            return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc")


def want_cuda(cuda="auto"):
    """Resolves ``cuda`` ("auto", True/False, "yes"/"no") to a bool.

    "auto" (or ``$TF_CENTERNET_OPS_CUDA`` when set) is True only when nvcc
    is found, TensorFlow is a CUDA build and it sees at least one GPU.
    """
    if cuda == "auto":
        env = os.environ.get("TF_CENTERNET_OPS_CUDA")
        if env is not None:
            return env.strip().lower() in ("1", "yes", "true", "on")
        tf = _tf()
        return bool(
            find_nvcc()
            and tf.test.is_built_with_cuda()
            and tf.config.list_physical_devices("GPU")
        )
    if isinstance(cuda, str):
        return cuda.strip().lower() in ("1", "yes", "true", "on")
    return bool(cuda)


def _run(commands, log):
    """Runs compiler commands in parallel; raises BuildError on a failure."""
    procs = []
    for cmd in commands:
        log(" ".join(cmd))
        procs.append((cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    failures = []
    for cmd, proc in procs:
        output, _ = proc.communicate()
        if proc.returncode != 0:
            failures.append(f"$ {' '.join(cmd)}\n{output[-6000:]}")
    if failures:
        raise BuildError("Building the compiled ops (pooling, soft-NMS) failed:\n" + "\n".join(failures))


def _gencode_flags(nvcc):
    """-gencode for the architectures TensorFlow was built for that nvcc knows."""
    wanted = _tf().sysconfig.get_build_info().get("cuda_compute_capabilities") or ["sm_75", "compute_75"]
    try:
        known = set(subprocess.run([nvcc, "--list-gpu-code"], capture_output=True, text=True, check=True).stdout.split())
    except (OSError, subprocess.CalledProcessError):
        known = set()
    flags = []
    for arch in wanted:
        number = arch.split("_", 1)[-1]
        sm, compute = f"sm_{number}", f"compute_{number}"
        if known and sm not in known and compute not in known:
            continue  # e.g. sm_60 and sm_70 are gone from CUDA 13
        if arch.startswith("sm_"):
            flags += ["-gencode", f"arch={compute},code={sm}"]
        else:
            flags += ["-gencode", f"arch={compute},code={compute}"]
    return flags or ["-arch=native"]


def _cuda_lib_dirs(nvcc):
    """Folders holding libcudart_static.a (nvcc may be a wrapper script)."""
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"),
             os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "/usr/local/cuda"]
    found = []
    for home in filter(None, homes):
        for sub in ("lib64", "lib", os.path.join("targets", "x86_64-linux", "lib")):
            folder = os.path.join(home, sub)
            if os.path.isfile(os.path.join(folder, "libcudart_static.a")) and folder not in found:
                found.append(folder)
    return found


def _compile_library(target, cuda, log):
    cxx = os.environ.get("CXX", "g++")
    cflags = compile_flags() + (["-DGOOGLE_CUDA=1"] if cuda else [])
    with tempfile.TemporaryDirectory(prefix="tfc_ops_build_") as tmp:
        objects, commands = [], []
        for rel in [*OPS_SOURCES, *KERNEL_SOURCES]:
            obj = os.path.join(tmp, os.path.basename(rel) + ".o")
            extra = SOURCE_FLAGS.get(rel, [])
            commands.append([cxx, *cflags, *extra, "-c", os.path.join(SOURCE_DIR, rel), "-o", obj])
            objects.append(obj)
        extra_link = []
        if cuda:
            nvcc = find_nvcc()
            if not nvcc:
                raise BuildError("nvcc not found (set CUDA_HOME or NVCC).")
            nvcc_flags = [
                f for f in compile_flags() if f not in ("-fPIC", "-Wno-deprecated-declarations")
            ] + ["-DGOOGLE_CUDA=1", "-x", "cu", "-Xcompiler", "-fPIC", "--expt-relaxed-constexpr"]
            for rel in GPU_SOURCES:
                obj = os.path.join(tmp, os.path.basename(rel) + ".o")
                commands.append([nvcc, *nvcc_flags, *_gencode_flags(nvcc), "-c", os.path.join(SOURCE_DIR, rel), "-o", obj])
                objects.append(obj)
            # Static cudart: no dependence on the CUDA runtime TensorFlow loads.
            extra_link = [f"-L{d}" for d in _cuda_lib_dirs(nvcc)] + ["-lcudart_static", "-ldl", "-lrt", "-lpthread"]
        _run(commands, log)
        tmp_target = os.path.join(tmp, os.path.basename(target))
        _run([[cxx, "-shared", *objects, "-o", tmp_target, *link_flags(), *extra_link]], log)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        # Atomic: a concurrent loader sees either no library or a whole one.
        staged = f"{target}.{os.getpid()}.tmp"
        shutil.copyfile(tmp_target, staged)
        os.replace(staged, target)


@contextlib.contextmanager
def _lock(folder):
    """An exclusive lock on `folder` so concurrent builds compile once."""
    os.makedirs(folder, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic rename is enough
        yield
        return
    with open(os.path.join(folder, ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(cuda="auto", force=False, verbose=False):
    """Compiles the library unless an up-to-date one is cached.

    Args:
        cuda: "auto", True or False (also "yes"/"no"). See the module
            docstring. Defaults to "auto".
        force: bool. Recompile even when the cached library exists.
            Defaults to False.
        verbose: bool. Print the compiler commands. Defaults to False.

    Returns:
        str. Path of the shared library to pass to `tf.load_op_library`.

    Raises:
        BuildError: the compiler failed (for the CUDA variant only when
            ``cuda`` was asked for explicitly).
    """
    log = (lambda msg: print(msg, file=sys.stderr)) if verbose else (lambda msg: None)
    use_cuda = want_cuda(cuda)
    folder = build_dir()
    with _lock(folder):
        if use_cuda:
            target = library_path(True)
            error_log = os.path.join(folder, CUDA_ERROR_LOG)
            if os.path.isfile(target) and not force:
                return target
            if os.path.isfile(error_log) and not force and cuda == "auto":
                use_cuda = False  # failed before with these sources
            else:
                start = time.time()
                try:
                    _compile_library(target, True, log)
                    log(f"built {target} in {time.time() - start:.1f} s")
                    return target
                except BuildError as error:
                    if cuda != "auto":
                        raise
                    with open(error_log, "w", encoding="utf-8") as f:
                        f.write(str(error))
                    log(f"CUDA build failed (see {error_log}); building the CPU kernels only")
        target = library_path(False)
        if os.path.isfile(target) and not force:
            return target
        start = time.time()
        _compile_library(target, False, log)
        log(f"built {target} in {time.time() - start:.1f} s")
        return target


def existing_library(cuda="auto"):
    """Path of an already built library for these sources, or None.

    Prefers the CUDA variant when `cuda` resolves to True.
    """
    candidates = [library_path(True), library_path(False)] if want_cuda(cuda) else [library_path(False)]
    for path in candidates:
        if os.path.isfile(path):
            return path
    return None


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description="Build the tf-centernet compiled ops (corner pooling, soft-NMS).")
    parser.add_argument("--cuda", default="auto", choices=["auto", "yes", "no"])
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    print(build(cuda=args.cuda, force=args.force, verbose=args.verbose))
    return 0


if __name__ == "__main__":
    sys.exit(main())
