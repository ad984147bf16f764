#!/usr/bin/env python3
"""Scores `contrastgeo locate` JSONL output on labelled posts (the same file, in the same order, that locate read),
with abstentions kept apart: locate writes `"city": null` when it abstains but still gives its best guess
(`city_id`, `lat`, `lon`).

Reported per slice (all posts; names_city true/false; each kind; each region):
  n           posts in the slice
  answered    share of posts answered (city not null)
  acc161      share of ALL posts answered within 161 km of the post's city (abstentions count as misses;
              the issue #18 target for named landmarks: >= 0.80)
  prec161     Acc@161km among the answered posts
  guess161    Acc@161km of the best guess, answered or not (what the ranking alone achieves)
  acc1_guess  exact city (GeoNames id) of the best guess
  median_km   median error of the best guess

Usage: tools/kb/score_landmarks.py LABELLED.jsonl LOCATED.jsonl [--markdown] [--json OUT]"""
import argparse
import collections
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from geodesy import km  # noqa: E402




def summarise(rows):
    n = len(rows)
    if n == 0:
        return None
    answered = [r for r in rows if r["answered"]]
    errors = sorted(r["error_km"] for r in rows if r["error_km"] is not None)
    return {
        "n": n,
        "answered": len(answered) / n,
        "acc161": sum(r["answered"] and r["near"] for r in rows) / n,
        "prec161": (sum(r["near"] for r in answered) / len(answered)) if answered else None,
        "guess161": sum(r["near"] for r in rows) / n,
        "acc1_guess": sum(r["exact"] for r in rows) / n,
        "median_km": errors[len(errors) // 2] if errors else None,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labelled")
    parser.add_argument("located")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table instead of JSON lines")
    parser.add_argument("--json", help="also write every slice's figures to this JSON file")
    args = parser.parse_args()

    truth = [json.loads(line) for line in open(args.labelled, encoding="utf-8") if line.strip()]
    located = {}
    for line in open(args.located, encoding="utf-8"):
        if line.strip():
            answer = json.loads(line)
            located[answer["line"]] = answer
    missing = [i for i in range(1, len(truth) + 1) if i not in located]
    if missing:
        print(f"warning: {len(missing)} posts have no output line (first: {missing[:5]}); they count as misses",
              file=sys.stderr)

    rows = []
    for number, post in enumerate(truth, start=1):
        answer = located.get(number)
        has_guess = answer is not None and answer.get("city_id") is not None
        error = km(post["lat"], post["lon"], answer["lat"], answer["lon"]) if has_guess else None
        rows.append({
            "post": post,
            "answered": bool(answer and answer.get("city") is not None),
            "near": error is not None and error <= 161.0,
            "exact": has_guess and str(answer["city_id"]) == str(post["city_id"]),
            "error_km": error,
        })

    slices = [("all", rows)]
    for key, label in (("names_city", "names_city"), ("kind", "kind"), ("region", "region")):
        groups = collections.defaultdict(list)
        for r in rows:
            if key in r["post"]:
                groups[r["post"][key]].append(r)
        for value in sorted(groups, key=lambda v: (-len(groups[v]), str(v))):
            slices.append((f"{label}={str(value).lower() if isinstance(value, bool) else value}", groups[value]))
    results = [(name, summarise(group)) for name, group in slices]

    if args.markdown:
        print("| slice | n | answered | Acc@161km (all posts) | Acc@161km of answered | best guess Acc@161km "
              "| best guess Acc@1 | median km |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, s in results:
            prec = "-" if s["prec161"] is None else f"{s['prec161']:.3f}"
            med = "-" if s["median_km"] is None else f"{s['median_km']:.0f}"
            print(f"| {name} | {s['n']} | {s['answered']:.3f} | {s['acc161']:.3f} | {prec} | "
                  f"{s['guess161']:.3f} | {s['acc1_guess']:.3f} | {med} |")
    else:
        for name, s in results:
            print(json.dumps({"slice": name, **{k: (round(v, 4) if isinstance(v, float) else v)
                                                  for k, v in s.items()}}))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({name: s for name, s in results}, f, indent=1)


if __name__ == "__main__":
    main()
