#!/usr/bin/env python3
"""torch on CPU from PyPI's CUDA wheel, for the peers that run sentence-transformers (tools/peer_bench.py --with-st,
tools/peers/setfit_peer.py); tools/peers/torch_cpu.sh installs the wheel and runs this file.

    python tools/peers/torch_cpu.py    # writes the CUDA library stubs into this interpreter's torch/lib

Also the data home (as src/home.rs resolves it) and the offline all-MiniLM-L6-v2 SentenceTransformer that both
peers build from the data home's model directory.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile


def data_home():
    if os.environ.get("CONTRASTGEO_HOME"):
        return os.environ["CONTRASTGEO_HOME"]
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(base, "contrastgeo")


def make_cuda_stubs():
    """Writes stand-ins for the CUDA libraries that torch's .so files link into torch/lib (on their RPATH).

    For each library that a torch .so names as NEEDED and that is neither in torch/lib nor on the system
    (libcudart.so.13, libcublas.so.13, libcudnn.so.9, libnccl.so.2, ...): every symbol imported from it, with
    its symbol version (readelf), as a C function returning 100 (cudaErrorNoDevice), or a zeroed array for data
    symbols, compiled with cc under that version. Unversioned imports (cuFile*, cusparseLt*, nccl*) go to their
    library by prefix. Nothing of it runs unless CUDA is asked for: torch.cuda.is_available() stays False.
    """
    import importlib.util
    lib = os.path.join(importlib.util.find_spec("torch").submodule_search_locations[0], "lib")
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler or not shutil.which("readelf"):
        sys.exit("torch_cpu: making CUDA stubs needs cc and readelf (binutils)")
    marker = os.path.join(lib, "peer_bench_cuda_stubs.txt")
    stubs = set(open(marker).read().split()) if os.path.exists(marker) else set()

    def readelf(flag, path):
        return subprocess.run(["readelf", flag, "-W", path], capture_output=True, text=True, check=True).stdout

    def present(soname):
        if soname in stubs:
            return False
        if os.path.exists(os.path.join(lib, soname)):
            return True
        return subprocess.run(["sh", "-c", f"ldconfig -p | grep -qF '{soname} '"]).returncode == 0

    # libcaffe2_nvrtc.so is only dlopen'ed when NVRTC is used; it also needs libcuda.so.1 (the driver).
    objects = [os.path.join(lib, f) for f in sorted(os.listdir(lib))
               if ".so" in f and f not in stubs and f != "libcaffe2_nvrtc.so"]
    missing, version_file, imports = set(), {}, []
    for path in objects:
        dynamic = readelf("-d", path)
        missing |= {n for n in re.findall(r"\(NEEDED\).*\[(\S+)\]", dynamic) if not present(n)}
        current = None
        for line in readelf("-V", path).split("Version needs")[-1].splitlines():
            found = re.search(r"File: (\S+)", line)
            if found:
                current = found.group(1)
            named = re.search(r"Name: (\S+)", line)
            if named and current:
                version_file[named.group(1)] = current
        for line in readelf("--dyn-syms", path).splitlines():
            fields = line.split()
            if len(fields) >= 8 and fields[6] == "UND" and fields[4] == "GLOBAL" and fields[7]:
                name, _, version = fields[7].partition("@")
                imports.append((name, version.lstrip("@").split("(")[0], fields[3]))
    prefixes = {"libcufile.so.0": "cuFile", "libcusparseLt.so.0": "cusparseLt", "libnccl.so.2": "nccl"}
    symbols = {soname: {} for soname in missing}
    for name, version, kind in imports:
        soname = version_file.get(version) if version else next(
            (so for so, prefix in prefixes.items() if name.startswith(prefix)), None)
        if soname in symbols:
            symbols[soname][name] = (version, kind)
    with tempfile.TemporaryDirectory() as tmp:
        for soname, entries in sorted(symbols.items()):
            source = ['static const char stub_message[] = "CUDA library stub (peer_bench: torch without CUDA)";',
                      "static char stub_zero[4096] __attribute__((aligned(64)));"]
            for name, (version, kind) in sorted(entries.items()):
                if kind in ("OBJECT", "TLS"):
                    source.append(f"char {name}[4096] __attribute__((aligned(64)));")
                elif name.endswith(("GetErrorString", "GetErrorName")):
                    source.append(f"const char *{name}(void) {{ return stub_message; }}")
                elif name.startswith("__cudaRegisterFatBinary") and not name.endswith("End"):
                    source.append(f"void *{name}(void) {{ return stub_zero; }}")
                else:
                    source.append(f"long {name}(void) {{ return 100; }}")
            versions = sorted({version for version, _ in entries.values() if version})
            c_path, map_path = os.path.join(tmp, soname + ".c"), os.path.join(tmp, soname + ".map")
            with open(c_path, "w") as f:
                f.write("\n".join(source) + "\n")
            with open(map_path, "w") as f:
                f.write("".join(f"{v} {{ global: *; }};\n" for v in versions) or "{ global: *; };\n")
            subprocess.run([compiler, "-shared", "-fPIC", "-w", "-o", os.path.join(lib, soname), c_path,
                            f"-Wl,-soname,{soname}", f"-Wl,--version-script={map_path}"], check=True)
            stubs.add(soname)
            print(f"torch_cpu: stub {soname}: {len(entries)} symbols", file=sys.stderr)
    with open(marker, "w") as f:
        f.write("\n".join(sorted(stubs)) + "\n")


def st_model(model_dir, threads, max_seq_length=128):
    """sentence-transformers' all-MiniLM-L6-v2 from the local directory, no hub access, on CPU."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    encoder = Transformer(model_dir, max_seq_length=max_seq_length)
    dimension = json.load(open(os.path.join(model_dir, "config.json")))["hidden_size"]
    model = SentenceTransformer(modules=[encoder, Pooling(dimension, "mean"), Normalize()], device="cpu")
    model.eval()
    return model


if __name__ == "__main__":
    make_cuda_stubs()
