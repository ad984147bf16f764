#!/usr/bin/env python3
"""Peer baselines for the learning curve: TF-IDF + logistic regression, and the majority city.

Run through tools/peers/run.sh (it makes target/peers-venv with pinned scikit-learn, numpy, scipy):

    tools/peers/run.sh [--sets /tmp/sets] [--cities ../shared/data/cities.jsonl] [--out reports/curve/peers]

For each support file SETS/k{K}-seed{S}.support.jsonl (K=all: seed 0 only; its other seeds hold the same posts
in another order), two methods answer every post of SETS/test.jsonl with one of the 60 cities:
- tfidf_lr: TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True) fit on the support texts,
  LogisticRegression(C=10, max_iter=1000) (multinomial, lbfgs);
- majority: the most frequent city of the support posts (ties: the smallest city id).
Metrics over the test posts: Acc@1; macro Acc@1 (mean of the per-city Acc@1 over the cities in test);
unnamed Acc@1 (the posts whose text does not name their city, the rule of src/data/mod.rs `names_city`);
Acc@161km (predicted city's centre to the post's own point). Author level: users with >= 5 test posts, truth
the city most of their posts have (ties: smaller id), prediction the argmax of the summed log probabilities
(majority: its one city); Acc@1 and Acc@161km against the true city's centre.
Writes OUT/peers.json (per method and K: the mean over seeds and each seed's metrics, fit seconds, versions)
and OUT/peers.md (the table).
"""

import argparse
import glob
import json
import os
import re
import time
import warnings
from collections import Counter, defaultdict
from importlib.metadata import version

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

# K=1 has one post per class, which sklearn takes for a possible regression target.
warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
METRICS = ["acc1", "macro_acc1", "unnamed_acc1", "acc161", "author_acc1", "author_acc161"]


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def normalise(s):
    """Lowercase, every non-alphanumeric char to a space, whitespace collapsed."""
    return " ".join("".join(c if c.isalnum() else " " for c in s.lower()).split())


def names_city(text, names):
    """Whether `text` names one of `names` as whole words (or with its spaces removed); names under 3 chars never count."""
    padded = f" {normalise(text)} "
    return any(len(n) >= 3 and (f" {n} " in padded or f" {n.replace(' ', '')} " in padded)
               for n in map(normalise, names))


def km(lat1, lon1, lat2, lon2):
    p1, p2, dl = np.radians(lat1), np.radians(lat2), np.radians(np.subtract(lon2, lon1))
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * 6371.0088 * np.arcsin(np.minimum(1.0, np.sqrt(a)))


class Test:
    """The test posts, with what every run's scoring needs precomputed."""

    def __init__(self, posts, cities):
        self.cities = cities
        self.texts = [p["text"] for p in posts]
        self.truth = np.array([int(p["city_id"]) for p in posts])
        self.lat = np.array([float(p["lat"]) for p in posts])
        self.lon = np.array([float(p["lon"]) for p in posts])
        self.unnamed = np.array([not names_city(p["text"], [cities[int(p["city_id"])]["name"]]
                                                + cities[int(p["city_id"])].get("alternate_names", []))
                                 for p in posts])
        by_user = defaultdict(list)
        for i, p in enumerate(posts):
            if p.get("user"):
                by_user[p["user"]].append(i)
        self.authors = [rows for rows in by_user.values() if len(rows) >= 5]
        # The city most of an author's posts have; ties go to the smaller id.
        self.author_truth = np.array([min(Counter(self.truth[rows]).items(), key=lambda kv: (-kv[1], kv[0]))[0]
                                      for rows in self.authors])

    def centre(self, ids):
        return (np.array([self.cities[i]["lat"] for i in ids]), np.array([self.cities[i]["lon"] for i in ids]))

    def score(self, pred, author_pred):
        hit = pred == self.truth
        per_city = [hit[self.truth == c].mean() for c in np.unique(self.truth)]
        author_hit = author_pred == self.author_truth
        return {
            "acc1": hit.mean(),
            "macro_acc1": float(np.mean(per_city)),
            "unnamed_acc1": hit[self.unnamed].mean(),
            "acc161": (km(*self.centre(pred), self.lat, self.lon) <= 161.0).mean(),
            "author_acc1": author_hit.mean(),
            "author_acc161": (km(*self.centre(author_pred), *self.centre(self.author_truth)) <= 161.0).mean(),
        }


def predictions(classes, log_p, test):
    """Per post the argmax city of its log probabilities; per author the argmax of their summed log probabilities."""
    pred = classes[log_p.argmax(axis=1)]
    author_pred = np.array([classes[log_p[rows].sum(axis=0).argmax()] for rows in test.authors])
    return pred, author_pred


def record(results, method, k, seed, support, test, pred, author_pred, fit_s, extra):
    """Scores one run into results[method][k]["seeds"][seed] and prints its line."""
    metrics = {m: round(float(v), 4) for m, v in test.score(pred, author_pred).items()}
    results[method].setdefault(k, {"seeds": {}})["seeds"][seed] = {
        "support_posts": len(support), "fit_s": round(fit_s, 3), **extra, **metrics}
    print(f"{method:9} K={k:>3} seed={seed} support={len(support):6} fit {fit_s:7.2f} s  "
          + "  ".join(f"{m} {metrics[m]:.3f}" for m in METRICS), flush=True)


def write_report(out, stem, report, caption):
    """Adds the mean over seeds to every method and K of report["methods"], writes OUT/{stem}.json and OUT/{stem}.md
    (caption, then the table) and returns the table's lines."""
    for per_k in report["methods"].values():
        for entry in per_k.values():
            entry["mean"] = {m: round(float(np.mean([s[m] for s in entry["seeds"].values()])), 4)
                             for m in METRICS + ["fit_s"]}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{stem}.json"), "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    lines = [caption,
             "",
             "| method | K | Acc@1 | macro Acc@1 | unnamed Acc@1 | Acc@161km | authors>=5 Acc@161km |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for method, per_k in report["methods"].items():
        for k, entry in sorted(per_k.items(), key=lambda kv: float("inf") if kv[0] == "all" else int(kv[0])):
            m = entry["mean"]
            lines.append(f"| {method} | {k} | " + " | ".join(f"{m[x]:.3f}" for x in
                         ("acc1", "macro_acc1", "unnamed_acc1", "acc161", "author_acc161")) + " |")
    with open(os.path.join(out, f"{stem}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return lines


def report_header(what, sets, test):
    """What a peer's report.json says first: what it is, the sets it ran on and the test posts' counts."""
    return {"what": what, "sets": sets, "test_posts": len(test.truth), "test_unnamed": int(test.unnamed.sum()),
            "test_authors": len(test.authors)}


def tfidf_lr(support, test):
    start = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)
    x = vectorizer.fit_transform([p["text"] for p in support])
    model = LogisticRegression(C=10, max_iter=1000).fit(x, [int(p["city_id"]) for p in support])
    fit_s = time.perf_counter() - start
    log_p = model.predict_log_proba(vectorizer.transform(test.texts))
    pred, author_pred = predictions(model.classes_, log_p, test)
    return pred, author_pred, fit_s, {"features": x.shape[1], "iterations": int(model.n_iter_.max()),
                                      "author_acc161_prior_once": author_acc161_prior_once(model, log_p, support, test)}


def author_acc161_prior_once(model, log_p, support, test):
    """Authors' Acc@161km when the label-count prior (the support set's city shares, which a logistic regression's
    probabilities hold) is taken out of each post's log probabilities and counted once, as the engine's author
    rule does (src/engine/author.rs); the reported author_acc161 sums the posts' log probabilities as they are."""
    counts = Counter(int(p["city_id"]) for p in support)
    log_prior = np.log(np.array([counts[c] for c in model.classes_]) / len(support))
    author_pred = np.array([model.classes_[(log_p[rows].sum(axis=0) - (len(rows) - 1) * log_prior).argmax()]
                            for rows in test.authors])
    return round(float((km(*test.centre(author_pred), *test.centre(test.author_truth)) <= 161.0).mean()), 4)


def majority(support, test):
    start = time.perf_counter()
    city = min(Counter(int(p["city_id"]) for p in support).items(), key=lambda kv: (-kv[1], kv[0]))[0]
    fit_s = time.perf_counter() - start
    return np.full(len(test.truth), city), np.full(len(test.authors), city), fit_s, {"city": city}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default="/tmp/sets")
    parser.add_argument("--cities", default="../shared/data/cities.jsonl")
    parser.add_argument("--out", default="reports/curve/peers")
    args = parser.parse_args()

    cities = {int(c["id"]): c for c in read_jsonl(args.cities)}
    test = Test(read_jsonl(os.path.join(args.sets, "test.jsonl")), cities)
    print(f"test: {len(test.truth)} posts, {int(test.unnamed.sum())} unnamed, {len(test.authors)} authors >= 5 posts")
    runs = []
    for path in glob.glob(os.path.join(args.sets, "k*-seed*.support.jsonl")):
        k, seed = re.fullmatch(r"k(\w+)-seed(\d+)\.support\.jsonl", os.path.basename(path)).groups()
        if k == "all" and seed != "0":
            continue  # every support post, in another order: one run is enough
        runs.append((float("inf") if k == "all" else int(k), k, int(seed), path))

    results = {"tfidf_lr": {}, "majority": {}}
    total = time.perf_counter()
    for _, k, seed, path in sorted(runs):
        support = read_jsonl(path)
        for method, run in (("tfidf_lr", tfidf_lr), ("majority", majority)):
            record(results, method, k, seed, support, test, *run(support, test))
    total = time.perf_counter() - total
    print(f"total {total:.1f} s")

    report = {
        **report_header("peer baselines on the learning-curve sets (tools/peers/tfidf_lr.py)", args.sets, test),
        "tfidf_lr": "TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True) + "
                    "LogisticRegression(C=10, max_iter=1000, solver='lbfgs', multinomial)",
        "versions": {p: version(p) for p in ("scikit-learn", "numpy", "scipy")},
        "total_s": round(total, 1),
        "methods": results,
    }
    lines = write_report(args.out, "peers", report,
                         f"Peer baselines on {len(test.truth)} test posts ({report['test_unnamed']} unnamed, "
                         f"{len(test.authors)} authors with >= 5 posts); mean over seeds. tools/peers/run.sh, "
                         + ", ".join(f"{p} {v}" for p, v in report["versions"].items()) + ".")
    print("\n".join(lines[2:]))


if __name__ == "__main__":
    main()
