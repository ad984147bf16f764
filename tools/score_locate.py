#!/usr/bin/env python3
"""Scores `contrastgeo locate` JSONL output against labelled posts (the same file, in the same order, that was
given to locate): prints Acc@1, Acc@161km, mean and median error in km, and the count; then, per confidence
threshold, the share of posts answered at or above it and the Acc@1 / Acc@161km of those (how an abstain
threshold, `--min-confidence`, trades coverage for precision). Usage: tools/score_locate.py LABELLED.jsonl LOCATED.jsonl"""
import json
import sys

from geodesy import km


truth = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
located = {r["line"]: r for r in (json.loads(line) for line in open(sys.argv[2]) if line.strip())}
hits = near = 0
errors = []
scored = []  # (probability, exact hit, within 161 km)
for line, post in enumerate(truth, start=1):
    answer = located.get(line)
    if answer is None or answer.get("city_id") is None:
        continue
    hits += str(answer["city_id"]) == str(post["city_id"])
    error = km(post["lat"], post["lon"], answer["lat"], answer["lon"])
    errors.append(error)
    near += error <= 161.0
    scored.append((answer.get("probability", 0.0), str(answer["city_id"]) == str(post["city_id"]), error <= 161.0))
n = len(truth)
errors.sort()
median = errors[len(errors) // 2] if errors else None
mean = sum(errors) / len(errors) if errors else None
print(json.dumps({"posts": n, "answered": len(located), "acc1": hits / n, "acc161": near / n,
                  "mean_km": mean, "median_km": median}))
for threshold in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6):
    kept = [s for s in scored if s[0] >= threshold]
    if kept:
        print(json.dumps({"min_confidence": threshold, "answered": round(len(kept) / n, 3),
                          "acc1_answered": round(sum(s[1] for s in kept) / len(kept), 3),
                          "acc161_answered": round(sum(s[2] for s in kept) / len(kept), 3)}))
