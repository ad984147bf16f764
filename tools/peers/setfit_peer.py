#!/usr/bin/env python3
"""SetFit peer for the learning curve: all-MiniLM-L6-v2 fine-tuned contrastively on the K-shot support posts,
then a logistic-regression head.

Run through tools/peers/run_setfit.sh (it makes target/setfit-venv: setfit 1.2.0, sentence-transformers 6.2.0,
transformers 5.24.0, torch 2.15.0 CPU, all pinned):

    tools/peers/run_setfit.sh [--sets /tmp/sets] [--out reports/curve/setfit] [--shots 1,2,4,8,16] [--seeds 0,1,2]

For each seed S (outer loop, so that seed 0 of every K comes first) and K, on SETS/k{K}-seed{S}.support.jsonl:
SetFit's standard recipe, setfit.Trainer with TrainingArguments(num_iterations=20, num_epochs=1, batch_size=16,
seed=S) and everything else at SetFit's defaults (body learning rate 2e-5, CosineSimilarityLoss, warm-up 0.1):
20 x 2 x (60 K) pairs of support posts (a positive and a negative pair per post and iteration, 150 K steps of 16
pairs), one epoch of fine-tuning of the body, then sklearn's LogisticRegression() (SetFit's default head) on the
body's embeddings. The body: the data home's all-MiniLM-L6-v2 (Transformer with max_seq_length 256 as the hub
model's sentence_bert_config, mean Pooling, Normalize), built offline, a fresh copy for every run. Every test post
of SETS/test.jsonl gets the head's argmax city; authors the argmax of their summed log probabilities. Metrics,
author rule and report schema are tools/peers/tfidf_lr.py's (imported). fit_s: trainer.train(), body and head;
predict_s: encoding the test posts and the head. Python, numpy and torch are seeded with S before each run.
Writes OUT/setfit.json after every finished run (--resume skips the runs it already holds) and OUT/setfit.md.
"""

import argparse
import copy
import json
import os
import random
import sys
import tempfile
import time
from importlib.metadata import version

for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[name] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from datasets import Dataset  # noqa: E402
from setfit import SetFitModel, Trainer, TrainingArguments  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tfidf_lr import METRICS, Test, predictions, read_jsonl, record, report_header, write_report  # noqa: E402
from torch_cpu import data_home, st_model  # noqa: E402

RECIPE = {"num_iterations": 20, "num_epochs": 1, "batch_size": 16}
PACKAGES = ("setfit", "sentence-transformers", "transformers", "torch", "scikit-learn", "numpy", "datasets")


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    transformers.set_seed(seed)


def setfit_run(base, support, test, seed, work_dir):
    """One SetFit fit on the support posts (a copy of the base body) and its predictions on the test posts."""
    seed_everything(seed)
    model = SetFitModel(model_body=copy.deepcopy(base), model_head=LogisticRegression())
    args = TrainingArguments(**RECIPE, seed=seed, output_dir=work_dir, report_to="none", save_strategy="no",
                             logging_strategy="no", show_progress_bar=False)
    train = {"text": [p["text"] for p in support], "label": [int(p["city_id"]) for p in support]}
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_dict(train))
    start = time.perf_counter()
    trainer.train()
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    head = model.model_head
    pred, author_pred = predictions(head.classes_, head.predict_log_proba(model.encode(test.texts, batch_size=64)),
                                    test)
    extra = {"predict_s": round(time.perf_counter() - start, 3), "pairs": len(trainer.st_trainer.train_dataset),
             "steps": int(trainer.st_trainer.state.global_step), "head_iterations": int(head.n_iter_.max())}
    return pred, author_pred, fit_s, extra


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default="/tmp/sets")
    parser.add_argument("--cities", default="../shared/data/cities.jsonl")
    parser.add_argument("--out", default="reports/curve/setfit")
    parser.add_argument("--shots", default="1,2,4,8,16")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--model", default=os.environ.get("CONTRASTGEO_MODEL")
                        or os.path.join(data_home(), "models", "all-MiniLM-L6-v2"))
    parser.add_argument("--resume", action="store_true", help="keep the runs OUT/setfit.json already holds")
    args = parser.parse_args()

    transformers.utils.logging.set_verbosity_error()
    base = st_model(args.model, args.threads, max_seq_length=256)
    cities = {int(c["id"]): c for c in read_jsonl(args.cities)}
    test = Test(read_jsonl(os.path.join(args.sets, "test.jsonl")), cities)
    print(f"test: {len(test.truth)} posts, {int(test.unnamed.sum())} unnamed, {len(test.authors)} authors >= 5 posts")

    results = {"setfit": {}}
    done_s = 0.0
    previous = os.path.join(args.out, "setfit.json")
    if args.resume and os.path.exists(previous):
        report = json.load(open(previous))
        results = {"setfit": {k: {"seeds": entry["seeds"]} for k, entry in report["methods"]["setfit"].items()}}
        done_s = report.get("total_s", 0.0)
    report = {
        **report_header("SetFit peer on the learning-curve sets (tools/peers/setfit_peer.py)", args.sets, test),
        "setfit": "setfit.Trainer, TrainingArguments(num_iterations=20, num_epochs=1, batch_size=16, seed=S; "
                  "defaults otherwise: body_learning_rate 2e-5, CosineSimilarityLoss, warmup_proportion 0.1), "
                  "body all-MiniLM-L6-v2 (max_seq_length 256, mean pooling, normalized), head "
                  "LogisticRegression() (sklearn defaults)",
        "threads": torch.get_num_threads(),
        "versions": {p: version(p) for p in PACKAGES},
        "total_s": done_s,
        "methods": results,
    }
    caption = (f"SetFit peer on {len(test.truth)} test posts ({report['test_unnamed']} unnamed, {len(test.authors)} "
               f"authors with >= 5 posts); mean over the seeds done. tools/peers/run_setfit.sh, num_iterations 20, "
               f"1 epoch, batch 16, {torch.get_num_threads()} torch thread(s); "
               + ", ".join(f"{p} {v}" for p, v in report["versions"].items()) + ".")
    total = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="setfit-") as work_dir:
        for seed in map(int, args.seeds.split(",")):
            for k in args.shots.split(","):
                if str(seed) in results["setfit"].get(k, {}).get("seeds", {}):
                    continue
                path = os.path.join(args.sets, f"k{k}-seed{seed}.support.jsonl")
                support = read_jsonl(path)
                record(results, "setfit", k, str(seed), support, test, *setfit_run(base, support, test, seed,
                                                                                     work_dir))
                report["total_s"] = round(done_s + time.perf_counter() - total, 1)
                write_report(args.out, "setfit", report, caption)
    lines = write_report(args.out, "setfit", report, caption)
    print("\n".join(lines[2:]))
    print(f"total {report['total_s']:.1f} s; metrics {', '.join(METRICS)}")


if __name__ == "__main__":
    main()
