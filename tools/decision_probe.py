#!/usr/bin/env python3
"""Would another decision over the engine's shortlist meet issue 17's macro and Acc@161km targets?

Re-decides `contrastgeo locate` answers from their shortlists (`top_k`: score, lat/lon) without re-running the
engine, and prints Acc@1 / macro Acc@1 / Acc@161km (and, with --authors, the same for authors with >= 5 posts)
for two families of rules:
  prior beta     argmax of score - beta * ln(n_c / N): the store's label-count prior taken out of the decision
                 (n_c labelled posts of city c among N; beta 0 is the engine's own answer, a negative beta counts
                 the prior once more: big cities, which Acc@161km favours)
  mass T lam     argmax of p_c + lam * (probability within 161 km of c), p = softmax(score / T): the city with
                 the most probability around it, the decision that maximises Acc@161km when p is calibrated

Usage:
  contrastgeo locate --store S -i test.jsonl -o posts.jsonl
  contrastgeo locate --store S -i test.jsonl -o authors.jsonl --group-by user
  tools/decision_probe.py --test test.jsonl --support support.jsonl --posts posts.jsonl \
      [--authors authors.jsonl --cities cities.jsonl]
test.jsonl holds the labelled test posts (id, city_id, lat, lon, user), support.jsonl the store's labelled posts
(city_id), as `contrastgeo eval --export-sets` writes them; an author's truth is their city's centre (as in
`eval`), from cities.jsonl."""
import argparse
import collections
import json
import math

from geodesy import km

RADIUS_KM = 161.0
BETAS = [-4, -2, -1, -0.5, 0, 0.5, 1, 1.5, 2, 3, 4, 6, 8]
MASS = [(t, lam) for t in (1, 2, 4, 8) for lam in (1, 4, 100)]


def read_jsonl(path):
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def softmax(scores, temperature):
    top = max(scores)
    weights = [math.exp((s - top) / temperature) for s in scores]
    total = sum(weights)
    return [w / total for w in weights]


def by_prior(shortlist, log_share, beta):
    return max(shortlist, key=lambda c: c["score"] - beta * log_share(c["city_id"]))


def by_mass(shortlist, temperature, lam):
    p = softmax([c["score"] for c in shortlist], temperature)
    def value(i):
        here = shortlist[i]
        around = sum(p[j] for j, other in enumerate(shortlist)
                     if km(here["lat"], here["lon"], other["lat"], other["lon"]) <= RADIUS_KM)
        return p[i] + lam * around
    return shortlist[max(range(len(shortlist)), key=value)]


def score(cases, decide):
    """cases: (shortlist, true city id, true lat, true lon). Returns Acc@1, macro Acc@1, Acc@161km."""
    hits = near = 0
    per_city = collections.defaultdict(lambda: [0, 0])
    for shortlist, city, lat, lon in cases:
        answer = decide(shortlist)
        hit = str(answer["city_id"]) == str(city)
        hits += hit
        near += km(lat, lon, answer["lat"], answer["lon"]) <= RADIUS_KM
        per_city[str(city)][0] += 1
        per_city[str(city)][1] += hit
    n = len(cases)
    return hits / n, sum(h / m for m, h in per_city.values()) / len(per_city), near / n


def report(title, cases, log_share):
    print(f"{title} ({len(cases)}): rule, Acc@1 / macro Acc@1 / Acc@161km")
    for beta in BETAS:
        print("  prior beta %-4g %.3f / %.3f / %.3f" % ((beta,) + score(cases, lambda s: by_prior(s, log_share, beta))))
    for temperature, lam in MASS:
        figures = score(cases, lambda s: by_mass(s, temperature, lam))
        print("  mass T %-2g lam %-4g %.3f / %.3f / %.3f" % ((temperature, lam) + figures))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test", required=True)
    parser.add_argument("--support", required=True)
    parser.add_argument("--posts", required=True, help="locate's answers to --test, one per post")
    parser.add_argument("--authors", help="locate --group-by user's answers to --test")
    parser.add_argument("--cities", help="the cities (id, lat, lon): needed with --authors")
    args = parser.parse_args()
    if args.authors and not args.cities:
        parser.error("--authors needs --cities")
    test = {str(p["id"]): p for p in read_jsonl(args.test)}
    labels = collections.Counter(str(p["city_id"]) for p in read_jsonl(args.support))
    total = sum(labels.values())
    def log_share(city):
        return math.log(max(labels[str(city)], 1) / total)

    cases = []
    for answer in read_jsonl(args.posts):
        post = test[str(answer["id"])]
        cases.append((answer["top_k"], post["city_id"], post["lat"], post["lon"]))
    report("posts", cases, log_share)
    if args.authors:
        centres = {str(c["id"]): c for c in read_jsonl(args.cities)}
        posts_of = collections.defaultdict(list)
        for post in test.values():
            if post.get("user"):
                posts_of[post["user"]].append(post)
        cases = []
        for answer in read_jsonl(args.authors):
            posts = posts_of[answer["user"]]
            if len(posts) < 5:
                continue
            # An author's posts of one city are all on one side of the split: the most common is their city.
            city = collections.Counter(str(p["city_id"]) for p in posts).most_common(1)[0][0]
            cases.append((answer["top_k"], city, centres[city]["lat"], centres[city]["lon"]))
        report("authors with >= 5 posts", cases, log_share)


if __name__ == "__main__":
    main()
