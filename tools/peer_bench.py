#!/usr/bin/env python3
"""Encode throughput of contrastgeo against ONNX Runtime on the same posts, the same weights, the same run.

Run through tools/peer_bench.sh (which makes the virtual environment). What it does:
1. builds two ONNX graphs of the BERT encoder from the data home's model.safetensors with `onnx.helper` (no
   torch needed): one of standard ops (Gather, MatMul, Add, LayerNormalization, Softmax, Erf), left to ORT's
   own graph optimizer, and one of ORT's fused CPU kernels (Attention, SkipLayerNormalization, BiasGelu), as
   ORT's transformer optimizer makes them from a torch export; the faster of the two is the ORT peer;
2. tokenizes with the model's tokenizer.json, no padding, truncation at 128 (as contrastgeo does), sorts the
   posts by length and pads each batch of 32 to its longest post (the best case for a padded runtime);
3. runs, interleaved for --rounds rounds in a rotating order: ORT on each graph with intra-op threads = 2,
   spinning on and off, the real `contrastgeo embed` binary (posts on stdin, output to /dev/null), and
   examples/encode_rate (the same `TextEncoder::embed` timed in process, model load excluded);
4. prints posts/s per round, the medians and the ratios contrastgeo / ORT (each configuration and the best),
   and the cosine agreement of contrastgeo's embeddings with ORT's (min over the posts; exit 1 under 0.9999).

With --with-st, sentence-transformers on torch CPU joins the rounds: the model built offline from the same
directory (Transformer with max_seq_length 128, mean Pooling, Normalize), torch.set_num_threads(--threads),
`SentenceTransformer.encode` with --batch-size (it sorts by length and pads each batch itself), timed like ORT
(model load excluded). It runs in two worker processes, since libgomp reads its wait policy once at load (the
counterpart of ORT's spinning on/off): `st_default` (torch as installed: OpenMP threads spin a while before
sleeping) and `st_passive` (OMP_WAIT_POLICY=PASSIVE; far faster when the cores are oversubscribed). Its
ratios (each and best_st) and cosine agreement are printed too.
`--make-cuda-stubs` writes the CUDA library stand-ins that let PyPI's CUDA torch wheel import without its
nvidia-* wheels (tools/peers/torch_cpu.py, as `python tools/peers/torch_cpu.py`; see tools/peers/torch_cpu.sh).

ORT is timed from tokenization to pooled unit vectors (its session is made once, outside the timing).
`contrastgeo` is timed as a whole process (start-up and model load, tokenization, JSON output included: a
conservative ratio); `contrastgeo_in_process` like ORT, from tokenization to unit vectors.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file
from tokenizers import Tokenizer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers"))
from torch_cpu import data_home, make_cuda_stubs, st_model  # noqa: E402 (tools/peers/torch_cpu.py)


def read_posts(path, count):
    lines, texts = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            text = json.loads(line).get("text")
            if isinstance(text, str) and text.strip():
                lines.append(line if line.endswith("\n") else line + "\n")
                texts.append(text)
            if len(texts) == count:
                break
    return lines, texts


def build_graph(model_dir, path, contrib=False):
    """Writes an ONNX graph of the encoder (inputs input_ids, attention_mask; output last_hidden_state).

    contrib=False: standard ONNX ops only. contrib=True: ORT's fused CPU kernels from the com.microsoft domain
    (Attention with packed QKV weights, SkipLayerNormalization, BiasGelu), what ORT's transformer optimizer
    produces for BERT exports from torch.
    """
    config = json.load(open(os.path.join(model_dir, "config.json")))
    weights = load_file(os.path.join(model_dir, "model.safetensors"))
    prefix = "" if "embeddings.word_embeddings.weight" in weights else "bert."
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head_size = hidden // heads
    eps = float(config.get("layer_norm_eps", 1e-12))
    inits, nodes = [], []

    def init(name, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def w(name):
        return init(name, weights[prefix + name].astype(np.float32))

    counter = [0]

    def node(op, inputs, domain=None, **attrs):
        counter[0] += 1
        out = f"{op.lower()}_{counter[0]}"
        nodes.append(helper.make_node(op, inputs, [out], domain=domain, **attrs))
        return out

    def dense(x, name):
        weight = weights[prefix + name + ".weight"].astype(np.float32).T  # [in, out]
        y = node("MatMul", [x, init(name + ".weight_t", weight)])
        return node("Add", [y, w(name + ".bias")])

    def layer_norm(x, name):
        return node("LayerNormalization", [x, w(name + ".weight"), w(name + ".bias")], axis=-1, epsilon=eps)

    # Embeddings: word + position + token type 0.
    shape = node("Shape", ["input_ids"])
    zero, one, two = (init(f"i64_{v}", np.array([v], dtype=np.int64)) for v in (0, 1, 2))
    seq_len = node("Slice", [shape, one, two, zero])  # [T], 1-D
    words = node("Gather", [w("embeddings.word_embeddings.weight"), "input_ids"])
    # The first T rows of the position table.
    pos = node("Slice", [w("embeddings.position_embeddings.weight"), zero, seq_len, zero])
    token_type = init("token_type_0", weights[prefix + "embeddings.token_type_embeddings.weight"][0].astype(np.float32))
    x = node("Add", [node("Add", [words, pos]), token_type])
    x = layer_norm(x, "embeddings.LayerNorm")

    # Additive mask [B, 1, 1, T]: 0 on tokens, -10000 on padding.
    mask = node("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    mask = node("Unsqueeze", [mask, init("axes_12", np.array([1, 2], dtype=np.int64))])
    mask = node("Mul", [node("Sub", [init("one_f", np.array(1.0, dtype=np.float32)), mask]),
                        init("neg_big", np.array(-10000.0, dtype=np.float32))])
    split_shape = init("split_shape", np.array([0, 0, heads, head_size], dtype=np.int64))
    merge_shape = init("merge_shape", np.array([0, 0, hidden], dtype=np.int64))
    scale = init("scale", np.array(1.0 / np.sqrt(head_size), dtype=np.float32))
    if contrib:
        mask_index = node("Cast", ["attention_mask"], to=TensorProto.INT32)
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        if contrib:
            names = [p + "attention.self." + n for n in ("query", "key", "value")]
            qkv_w = np.concatenate([weights[prefix + n + ".weight"].astype(np.float32).T for n in names], axis=1)
            qkv_b = np.concatenate([weights[prefix + n + ".bias"].astype(np.float32) for n in names])
            context = node("Attention", [x, init(p + "qkv_w", qkv_w), init(p + "qkv_b", qkv_b), mask_index],
                           domain="com.microsoft", num_heads=heads)

            def skip_norm(y, skip, dense_name, norm_name):
                weight = weights[prefix + dense_name + ".weight"].astype(np.float32).T
                product = node("MatMul", [y, init(dense_name + ".weight_t", weight)])
                return node("SkipLayerNormalization",
                            [product, skip, w(norm_name + ".weight"), w(norm_name + ".bias"), w(dense_name + ".bias")],
                            domain="com.microsoft", epsilon=eps)

            attended = skip_norm(context, x, p + "attention.output.dense", p + "attention.output.LayerNorm")
            inter_w = weights[prefix + p + "intermediate.dense.weight"].astype(np.float32).T
            expanded = node("MatMul", [attended, init(p + "intermediate.weight_t", inter_w)])
            gelu = node("BiasGelu", [expanded, w(p + "intermediate.dense.bias")], domain="com.microsoft")
            x = skip_norm(gelu, attended, p + "output.dense", p + "output.LayerNorm")
            continue
        q = node("Transpose", [node("Reshape", [dense(x, p + "attention.self.query"), split_shape])], perm=[0, 2, 1, 3])
        k = node("Transpose", [node("Reshape", [dense(x, p + "attention.self.key"), split_shape])], perm=[0, 2, 3, 1])
        v = node("Transpose", [node("Reshape", [dense(x, p + "attention.self.value"), split_shape])], perm=[0, 2, 1, 3])
        scores = node("Add", [node("Mul", [node("MatMul", [q, k]), scale]), mask])
        probs = node("Softmax", [scores], axis=-1)
        context = node("Transpose", [node("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        context = node("Reshape", [context, merge_shape])
        attended = layer_norm(node("Add", [dense(context, p + "attention.output.dense"), x]), p + "attention.output.LayerNorm")
        expanded = dense(attended, p + "intermediate.dense")
        # Exact GELU: x/2 (1 + erf(x / sqrt 2)).
        erf = node("Erf", [node("Div", [expanded, init(f"sqrt2_{i}", np.array(np.sqrt(2.0), dtype=np.float32))])])
        gelu = node("Mul", [node("Mul", [expanded, node("Add", [erf, "one_f"])]), init(f"half_{i}", np.array(0.5, dtype=np.float32))])
        x = layer_norm(node("Add", [dense(gelu, p + "output.dense"), attended]), p + "output.LayerNorm")
    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    graph = helper.make_graph(
        nodes,
        "minilm",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", hidden])],
        inits,
    )
    opsets = [helper.make_opsetid("", 17)]
    if contrib:
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    if not contrib:
        onnx.checker.check_model(model)
    onnx.save(model, path)
    return heads, hidden


ort.set_default_logger_severity(3)


def session(path, threads, spinning):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def ort_embed(sess, tokenizer, texts, batch_size):
    """Tokenize, sort by length, pad each batch to its longest, run, mean-pool, normalise; input order."""
    encodings = tokenizer.encode_batch(texts)
    ids = [e.ids for e in encodings]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    out = np.zeros((len(ids), 0), dtype=np.float32)
    rows = [None] * len(ids)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        width = max(len(ids[i]) for i in batch)
        input_ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, i in enumerate(batch):
            input_ids[row, :len(ids[i])] = ids[i]
            mask[row, :len(ids[i])] = 1
        hidden = sess.run(["last_hidden_state"], {"input_ids": input_ids, "attention_mask": mask})[0]
        m = mask[:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(1) / m.sum(1)
        pooled /= np.linalg.norm(pooled, axis=1, keepdims=True) + 1e-12
        for row, i in enumerate(batch):
            rows[i] = pooled[row]
    out = np.stack(rows)
    return out


def contrastgeo_embed(binary, lines, output, threads):
    env = dict(os.environ, RUST_LOG="warn")
    if threads:
        env["RAYON_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    subprocess.run([binary, "embed", "--device", "cpu", "--input", "-", "--output", output],
                   input="".join(lines).encode(), env=env, check=True)
    return time.perf_counter() - start


def contrastgeo_in_process(binary, lines, threads):
    """Seconds of one `TextEncoder::embed` call over the posts (examples/encode_rate.rs; load not timed)."""
    env = dict(os.environ, RUST_LOG="warn")
    if threads:
        env["RAYON_NUM_THREADS"] = str(threads)
    done = subprocess.run([binary], input="".join(lines).encode(), env=env, check=True, capture_output=True)
    return json.loads(done.stdout)["seconds"]


def st_worker(args, model_dir):
    """One sentence-transformers peer: writes its vectors, says ready, then encodes the posts per stdin line."""
    import sentence_transformers
    import torch

    _, texts = read_posts(args.posts, args.count)
    model = st_model(model_dir, args.threads)
    st_embed(model, texts[:64], args.batch_size)  # warm-up
    np.save(args.st_vectors, st_embed(model, texts, args.batch_size))
    info = {"st_version": sentence_transformers.__version__, "torch_version": torch.__version__,
            "cuda_available": torch.cuda.is_available(), "torch_threads": torch.get_num_threads(),
            "max_seq_length": model.max_seq_length, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    print(json.dumps(info), flush=True)
    for _ in sys.stdin:
        print(timed(lambda: st_embed(model, texts, args.batch_size)), flush=True)


class StPeer:
    """A worker process of st_worker, started with the given extra environment."""

    def __init__(self, args, name, env):
        self.vectors = os.path.join(args.work_dir, f"{name}.npy")
        command = [sys.executable, os.path.abspath(__file__), "--st-worker", "--st-vectors", self.vectors,
                   "--posts", args.posts, "--count", str(args.count), "--threads", str(args.threads),
                   "--batch-size", str(args.batch_size)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env=dict(os.environ, **env))
        line = self.process.stdout.readline()
        if not line:
            sys.exit(f"peer_bench: the {name} worker failed to start")
        self.info = json.loads(line)

    def run(self):
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def st_embed(model, texts, batch_size):
    return model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", default="../shared/data/posts.jsonl")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--binary", default="target/release/contrastgeo")
    parser.add_argument("--rate-binary", default="target/release/examples/encode_rate",
                        help="in-process timing of the same encoder (model load excluded, as ORT's session)")
    parser.add_argument("--work-dir", default="target/peer-bench")
    parser.add_argument("--json", help="also write the summary here")
    parser.add_argument("--with-st", action="store_true",
                        help="add sentence-transformers (torch CPU) as a peer (tools/peer_bench.sh installs it)")
    parser.add_argument("--make-cuda-stubs", action="store_true",
                        help="write the CUDA library stubs into the venv's torch/lib and exit")
    parser.add_argument("--st-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--st-vectors", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_cuda_stubs:
        make_cuda_stubs()
        return

    os.makedirs(args.work_dir, exist_ok=True)
    model_dir = os.environ.get("CONTRASTGEO_MODEL") or os.path.join(data_home(), "models", "all-MiniLM-L6-v2")
    if args.st_worker:
        st_worker(args, model_dir)
        return
    lines, texts = read_posts(args.posts, args.count)
    tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(128)

    plain = os.path.join(args.work_dir, "minilm.onnx")
    build_graph(model_dir, plain)
    fused = os.path.join(args.work_dir, "minilm-fused.onnx")
    build_graph(model_dir, fused, contrib=True)
    print(f"posts: {len(texts)} from {args.posts}; threads: {args.threads}; ORT {ort.__version__}")

    graphs = {"plain": plain, "fused": fused}
    sessions = {}
    for graph, path in graphs.items():
        for spinning in (True, False):
            name = f"ort_{graph}_{'spin' if spinning else 'nospin'}"
            sessions[name] = session(path, args.threads, spinning)
            ort_embed(sessions[name], tokenizer, texts[:64], args.batch_size)  # warm-up
    st_peers = {}
    if args.with_st:
        st_peers = {"st_default": StPeer(args, "st_default", {}),
                    "st_passive": StPeer(args, "st_passive", {"OMP_WAIT_POLICY": "PASSIVE"})}
        info = st_peers["st_default"].info
        print(f"sentence-transformers {info['st_version']}, torch {info['torch_version']} "
              f"(CUDA available: {info['cuda_available']}), torch threads {info['torch_threads']}, "
              f"max_seq_length {info['max_seq_length']}")

    # Agreement: contrastgeo's vectors against ORT's.
    vectors_path = os.path.join(args.work_dir, "contrastgeo.jsonl")
    contrastgeo_embed(args.binary, lines, vectors_path, args.threads)
    ours = np.array([json.loads(l)["embedding"] for l in open(vectors_path)], dtype=np.float32)
    cosines = None
    for name, sess in sessions.items():
        theirs = ort_embed(sess, tokenizer, texts, args.batch_size)
        agreement = (ours * theirs).sum(1)
        print(f"cosine contrastgeo vs {name}: min {agreement.min():.7f}, mean {agreement.mean():.7f}")
        cosines = agreement if cosines is None or agreement.min() < cosines.min() else cosines
    st_cosines = None
    for name, peer in st_peers.items():
        agreement = (ours * np.load(peer.vectors)).sum(1)
        print(f"cosine contrastgeo vs {name}: min {agreement.min():.7f}, mean {agreement.mean():.7f}")
        st_cosines = agreement if st_cosines is None or agreement.min() < st_cosines.min() else st_cosines

    def ort_runner(sess):
        return lambda: timed(lambda: ort_embed(sess, tokenizer, texts, args.batch_size))

    runners = {name: ort_runner(sess) for name, sess in sessions.items()}
    for name, peer in st_peers.items():
        runners[name] = peer.run
    runners["contrastgeo"] = lambda: contrastgeo_embed(args.binary, lines, os.devnull, args.threads)
    if args.rate_binary and os.path.exists(args.rate_binary):
        runners["contrastgeo_in_process"] = lambda: contrastgeo_in_process(args.rate_binary, lines, args.threads)
    names = list(runners)
    rates = {name: [] for name in names}
    for round_index in range(args.rounds):
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        for name in order:
            rates[name].append(len(texts) / runners[name]())
        print(f"round {round_index}: " + ", ".join(f"{n} {rates[n][-1]:.1f}" for n in names) + " posts/s")
    medians = {name: statistics.median(values) for name, values in rates.items()}
    for peer in st_peers.values():
        peer.close()
    print("medians: " + ", ".join(f"{n} {medians[n]:.1f}" for n in names) + " posts/s")
    best = max(sessions, key=lambda n: medians[n])
    ratios = {}
    for ours in [n for n in names if n.startswith("contrastgeo")]:
        for n in sessions:
            ratios[f"{ours}/{n}"] = medians[ours] / medians[n]
        ratios[f"{ours}/best_ort"] = medians[ours] / medians[best]
        if st_peers:
            best_st = max(st_peers, key=lambda n: medians[n])
            for n in st_peers:
                ratios[f"{ours}/{n}"] = medians[ours] / medians[n]
            ratios[f"{ours}/best_st"] = medians[ours] / medians[best_st]
    print(f"best ORT configuration: {best}")
    if st_peers:
        print(f"best sentence-transformers configuration: {best_st}")
    print("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    print(f"cosine agreement (worst ORT configuration): min {cosines.min():.7f}")
    if st_cosines is not None:
        print(f"cosine agreement (worst sentence-transformers configuration): min {st_cosines.min():.7f}")
    summary = {
        "posts": len(texts), "threads": args.threads, "batch_size": args.batch_size, "rounds": args.rounds,
        "ort_version": ort.__version__, "best_ort": best, "rates": rates, "medians": medians, "ratios": ratios,
        "cosine_min": float(cosines.min()), "cosine_mean": float(cosines.mean()),
    }
    if st_peers:
        info = st_peers["st_default"].info
        summary.update({
            "st_version": info["st_version"], "torch_version": info["torch_version"],
            "st_max_seq_length": info["max_seq_length"], "best_st": best_st,
            "st_cosine_min": float(st_cosines.min()), "st_cosine_mean": float(st_cosines.mean()),
        })
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    if cosines.min() < 0.9999 or (st_cosines is not None and st_cosines.min() < 0.9999):
        print("FAIL: cosine agreement below 0.9999", file=sys.stderr)
        sys.exit(1)


def timed(f):
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
