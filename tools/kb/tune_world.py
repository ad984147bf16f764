#!/usr/bin/env python3
"""Chooses the world store's place-name weight on fitting halves and scores it on evaluation halves (issue #18).

Two labelled sets: the benchmark's test posts (sets/test.jsonl from `contrastgeo eval --export-sets`) and the
hand-written landmark posts (examples/landmarks/posts.jsonl). Posts on odd lines are the fitting half, posts
on even lines the evaluation half, in both (as tools/calibrate.py splits them).

For each weight, `contrastgeo locate --mention-weight W --min-confidence 0 --profile-weight 0` runs on both sets
(the store's own calibration as given by --calibration); the weight chosen is the one with the best mean of the
two fitting halves' best-guess Acc@161km (the benchmark alone would favour its own 60 cities, the landmark
posts alone the world's). Prints a table per weight and both halves; writes the chosen run's outputs to --out.

Usage: tools/kb/tune_world.py --binary target/release/contrastgeo --benchmark sets/test.jsonl \\
           --landmarks examples/landmarks/posts.jsonl --weights 0.1,0.2,0.3,0.5 --out /tmp/tune [--calibration 1,0]
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from geodesy import km  # noqa: E402


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def locate(binary, posts, out, weight, calibration):
    command = [binary, "locate", "-i", posts, "-o", out, "--min-confidence", "0", "--profile-weight", "0",
               "--mention-weight", str(weight)]
    if calibration:
        command += ["--calibration", calibration]
    subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
    return read_jsonl(out)


def within(post, answer):
    return answer.get("lat") is not None and km(post["lat"], post["lon"], answer["lat"], answer["lon"]) <= 161.0


def halves(posts, answers):
    """Best-guess Acc@161km of the fitting (odd lines) and evaluation (even lines) halves."""
    by_line = {a["line"]: a for a in answers}
    scores = {}
    for name, parity in (("fit", 1), ("eval", 0)):
        lines = [n for n in range(1, len(posts) + 1) if n % 2 == parity]
        scores[name] = sum(within(posts[n - 1], by_line.get(n, {})) for n in lines) / len(lines)
    return scores


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default="target/release/contrastgeo")
    parser.add_argument("--benchmark", required=True)
    parser.add_argument("--landmarks", required=True)
    parser.add_argument("--weights", default="0.1,0.2,0.3,0.5")
    parser.add_argument("--calibration", help="SLOPE,INTERCEPT passed to locate (default: the store's own)")
    parser.add_argument("--out", required=True, help="folder for the outputs")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    benchmark, landmarks = read_jsonl(args.benchmark), read_jsonl(args.landmarks)
    rows = []
    print("| mention weight | benchmark fit | benchmark eval | landmarks fit | landmarks eval | mean of fits |")
    print("|---:|---:|---:|---:|---:|---:|")
    for weight in [float(w) for w in args.weights.split(",")]:
        b = halves(benchmark, locate(args.binary, args.benchmark, f"{args.out}/benchmark-{weight}.jsonl", weight,
                                     args.calibration))
        m = halves(landmarks, locate(args.binary, args.landmarks, f"{args.out}/landmarks-{weight}.jsonl", weight,
                                     args.calibration))
        mean = (b["fit"] + m["fit"]) / 2
        rows.append((mean, weight))
        print(f"| {weight:g} | {b['fit']:.3f} | {b['eval']:.3f} | {m['fit']:.3f} | {m['eval']:.3f} | {mean:.3f} |",
              flush=True)
    best = max(rows)[1]
    print(f"chosen on the fitting halves: --mention-weight {best:g}")


if __name__ == "__main__":
    main()
