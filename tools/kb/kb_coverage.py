#!/usr/bin/env python3
"""How many labelled posts mention a knowledge-base name of their own city.

A knowledge-base (KB) name is found in a post when it occurs as a whole word, case-insensitively (airport codes:
case-sensitively, 3-4 capitals). Two matching rules are reported:
  plain        any case ("hunting" matches the village Hunting): what the brief asks for
  capitalised  a one-word name must start with a capital letter in the post or follow '#' (what a matcher
               would do to avoid common words: "Rain", "Red", "Modern" as places)
Per rule and slice, the share of posts where
  any        some KB name matched at all
  same city  a matched entry's city_id is the post's city_id (the brief's KB coverage figure)
  161 km     a matched entry lies within 161 km of the post's city (a match that would count for Acc@161km)
  strongest  the strongest matched entry lies within 161 km of the post's city
  +gazetteer a matched KB entry or a gazetteer city name (cities15000, what the store already matches) lies
             within 161 km of the post's city

Usage: tools/kb/kb_coverage.py POSTS.jsonl PLACES.tsv [--gazetteer cities15000.json] [--show N]"""
import argparse
import collections
import csv
import json
import os
import re
import sys
import unicodedata

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from geodesy import km  # noqa: E402




def name_key(name):
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


WORD_START = re.compile(r"(?<!\w)\w")
WORD_END = re.compile(r"\w(?!\w)")
CODE = re.compile(r"(?<!\w)[A-Z0-9]{3,4}(?!\w)")


def mentions(text, names, codes, capitalised, max_len=80):
    """[(matched text, rows)] for every KB name found in text as a whole word."""
    found = []
    normal = " ".join(unicodedata.normalize("NFKC", text).split())
    lowered = normal.casefold()
    if len(lowered) != len(normal):   # case folding changed the length (e.g. "ß"): fall back to lower()
        lowered = normal.lower()
    starts = [m.start() for m in WORD_START.finditer(lowered)]
    ends = [m.end() for m in WORD_END.finditer(lowered)]
    for s in starts:
        for e in ends:
            if e <= s:
                continue
            if e - s > max_len:
                break
            rows = names.get(lowered[s:e])
            if not rows:
                continue
            if capitalised and " " not in lowered[s:e] and not (
                    normal[s].isupper() or (s > 0 and normal[s - 1] == "#")):
                continue
            found.append((normal[s:e], rows))
    for token in CODE.findall(normal):
        rows = codes.get(token)
        if rows:
            found.append((token, rows))
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("posts")
    parser.add_argument("places")
    parser.add_argument("--gazetteer", help="cities15000.json, for the +gazetteer column")
    parser.add_argument("--show", type=int, default=10, help="examples to list")
    args = parser.parse_args()

    names, codes = collections.defaultdict(list), collections.defaultdict(list)
    with open(args.places, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            row["strength"] = float(row["strength"])
            row["city_id"] = int(row["city_id"])
            row["lat"], row["lon"] = float(row["lat"]), float(row["lon"])
            (codes[row["name"]] if row["kind"] == "airport_code" else names[name_key(row["name"])]).append(row)
    gazetteer = collections.defaultdict(list)
    if args.gazetteer:
        with open(args.gazetteer, encoding="utf-8") as f:
            for city in json.load(f).values():
                gazetteer[name_key(city["name"])].append(
                    {"name": city["name"], "kind": "gazetteer city", "city_id": city["geonameid"],
                     "city_name": city["name"], "lat": city["latitude"], "lon": city["longitude"], "strength": 1.0})
    posts = [json.loads(line) for line in open(args.posts, encoding="utf-8") if line.strip()]

    def pct(a, b):
        return f"{a / b:.1%}" if b else "-"

    out = []
    for rule in ("plain", "capitalised"):
        stats = collections.defaultdict(collections.Counter)
        wrong, missing = [], []
        for post in posts:
            capital = rule == "capitalised"
            rows = [r for _, rs in mentions(post["text"], names, codes, capital) for r in rs]
            gaz = [r for _, rs in mentions(post["text"], gazetteer, {}, capital) for r in rs] if gazetteer else []
            near = lambda r: km(post["lat"], post["lon"], r["lat"], r["lon"]) <= 161.0
            best = max(rows, key=lambda r: r["strength"]) if rows else None
            hits = {"any": bool(rows),
                    "same city": any(r["city_id"] == int(post["city_id"]) for r in rows),
                    "161 km": any(near(r) for r in rows),
                    "strongest": best is not None and near(best),
                    "+gazetteer": any(near(r) for r in rows + gaz)}
            slices = ["all", "unnamed" if not post.get("names_city") else "named", f"kind={post.get('kind')}"]
            for s in slices:
                stats[s]["n"] += 1
                for k, v in hits.items():
                    stats[s][k] += v
            if best is not None and not near(best):
                wrong.append((post, best))
            if not hits["161 km"]:
                missing.append(post)
        out.append(f"Matching rule: **{rule}**\n")
        out.append("| slice | posts | any KB name | same city_id | KB entry within 161 km | strongest within 161 km "
                   "| KB or gazetteer name within 161 km |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        order = ["all", "unnamed", "named"] + sorted((s for s in stats if s.startswith("kind=")),
                                                      key=lambda s: -stats[s]["n"])
        for s in order:
            c = stats[s]
            out.append(f"| {s} | {c['n']} | {pct(c['any'], c['n'])} | {pct(c['same city'], c['n'])} | "
                       f"{pct(c['161 km'], c['n'])} | {pct(c['strongest'], c['n'])} | {pct(c['+gazetteer'], c['n'])} |")
        out.append("")
        if rule == "capitalised" and args.show:
            out.append(f"Strongest match more than 161 km away ({len(wrong)} posts; first {args.show}):\n")
            for post, best in wrong[: args.show]:
                out.append(f"- {post['city']}: \"{post['text']}\" -> `{best['name']}` ({best['kind']}, "
                           f"{best['city_name']}, strength {best['strength']:.2f})")
            out.append("")
            out.append(f"No KB entry within 161 km ({len(missing)} posts; first {args.show}):\n")
            for post in missing[: args.show]:
                out.append(f"- {post['city']}: \"{post['text']}\"")
            out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    sys.exit(main())
