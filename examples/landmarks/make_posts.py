#!/usr/bin/env python3
"""Builds examples/landmarks/posts.jsonl from posts.src: looks every city up in the gazetteer (cities15000.json of
the data home), takes its GeoNames id and coordinates, computes `names_city`, validates the set and prints counts.

Usage: examples/landmarks/make_posts.py [--gazetteer DIR] [--out FILE]
Exit status 1 when a check fails (a city missing from the gazetteer, more than 5 posts for a city, fewer than 80
cities or 220 posts, under 60% of posts not naming their city, a benchmark city used)."""
import argparse
import collections
import json
import os
import re
import sys
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = {"landmark", "neighbourhood", "airport", "team", "university", "dish"}
MIDDLE_EAST = {"AE", "QA", "IL", "JO", "LB", "SA", "OM", "IR", "BH", "KW", "IQ", "SY", "YE", "PS"}
LATIN_AMERICA_NA = {"MX", "CU", "GT", "CR", "PA", "DO", "HN", "NI", "SV", "PR", "JM", "HT", "BZ"}
# letters that NFKD does not split into a base letter and a mark
EXTRA_FOLD = str.maketrans({"ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "ß": "ss", "ı": "i", "đ": "d", "Đ": "D",
                            "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "þ": "th", "ð": "d", "’": "'"})


def ascii_fold(text):
    text = unicodedata.normalize("NFKD", text.translate(EXTRA_FOLD))
    return "".join(c for c in text if not unicodedata.combining(c))


def region(country_code, continent):
    if country_code in MIDDLE_EAST:
        return "Middle East"
    if country_code == "CA":
        return "Canada"
    if continent == "SA" or country_code in LATIN_AMERICA_NA:
        return "Latin America"
    return {"EU": "Europe", "AS": "Asia", "AF": "Africa", "OC": "Oceania", "NA": "North America"}[continent]


def main():
    home = os.environ.get("CONTRASTGEO_HOME", os.path.expanduser("~/.local/share/contrastgeo"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gazetteer", default=os.path.join(home, "gazetteer"))
    parser.add_argument("--src", default=os.path.join(HERE, "posts.src"))
    parser.add_argument("--out", default=os.path.join(HERE, "posts.jsonl"))
    parser.add_argument("--benchmark-cities", default=os.path.join(HERE, "../../../shared/data/cities.jsonl"))
    args = parser.parse_args()

    with open(os.path.join(args.gazetteer, "cities15000.json"), encoding="utf-8") as f:
        cities = json.load(f)
    with open(os.path.join(args.gazetteer, "countries.json"), encoding="utf-8") as f:
        countries = json.load(f)
    by_name = collections.defaultdict(list)
    for city in cities.values():
        by_name[(city["name"].lower(), city["countrycode"])].append(city)
    benchmark_ids = set()
    if os.path.exists(args.benchmark_cities):
        with open(args.benchmark_cities, encoding="utf-8") as f:
            benchmark_ids = {int(json.loads(line)["geonameid"]) for line in f if line.strip()}
    else:
        print(f"warning: {args.benchmark_cities} not found; benchmark cities not checked", file=sys.stderr)

    problems = []
    posts = []
    with open(args.src, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split("|", 3)
            if len(parts) != 4:
                problems.append(f"{args.src}:{number}: expected city|cc|kind|text")
                continue
            name, cc, kind, text = (p.strip() for p in parts)
            if kind not in KINDS:
                problems.append(f"{args.src}:{number}: unknown kind {kind!r}")
            matches = sorted(by_name.get((name.lower(), cc), []), key=lambda c: -c["population"])
            if not matches:
                problems.append(f"{args.src}:{number}: {name} ({cc}) is not in the gazetteer")
                continue
            city = matches[0]
            if city["geonameid"] in benchmark_ids:
                problems.append(f"{args.src}:{number}: {name} is a benchmark city")
            folded_text = ascii_fold(text).lower()
            names = {city["name"].lower(), ascii_fold(city["name"]).lower()}
            names_city = any(n in text.lower() or n in folded_text for n in names)
            # alternate names (4+ letters, whole word), e.g. "Napoli", "Saigon": reported, not used for names_city
            alternates = {ascii_fold(a).lower() for a in city.get("alternatenames", []) if len(a) >= 4}
            alt_hits = sorted(a for a in alternates - names
                              if re.search(r"(?<!\w)" + re.escape(a) + r"(?!\w)", folded_text))
            country = countries[cc]
            posts.append({"text": text, "city": city["name"], "country": country["name"],
                          "lat": city["latitude"], "lon": city["longitude"], "city_id": city["geonameid"],
                          "kind": kind, "names_city": names_city, "names_city_alt": bool(alt_hits),
                          "region": region(cc, country["continentcode"]), "src_line": number,
                          "_alt": alt_hits})

    per_city = collections.Counter(p["city_id"] for p in posts)
    for city_id, count in per_city.items():
        if count > 5:
            problems.append(f"city {city_id} has {count} posts (> 5)")
    texts = collections.Counter(p["text"] for p in posts)
    problems += [f"duplicate post: {t!r}" for t, c in texts.items() if c > 1]
    unnamed = sum(not p["names_city"] for p in posts)
    if len(posts) < 220:
        problems.append(f"only {len(posts)} posts (< 220)")
    if len(per_city) < 80:
        problems.append(f"only {len(per_city)} cities (< 80)")
    if unnamed < 0.6 * len(posts):
        problems.append(f"only {unnamed}/{len(posts)} posts do not name their city (< 60%)")

    with open(args.out, "w", encoding="utf-8") as f:
        for p in posts:
            row = {k: v for k, v in p.items() if not k.startswith("_")}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")

    print(f"posts: {len(posts)}, cities: {len(per_city)}, countries: "
          f"{len({p['country'] for p in posts})}, max posts per city: {max(per_city.values())}")
    print(f"names_city: true {len(posts) - unnamed} ({(len(posts) - unnamed) / len(posts):.1%}), "
          f"false {unnamed} ({unnamed / len(posts):.1%}); an alternate name of the city (not counted): "
          f"{sum(p['names_city_alt'] for p in posts)}")
    print("by region:   posts  cities  naming city")
    regions = collections.defaultdict(list)
    for p in posts:
        regions[p["region"]].append(p)
    for name, rows in sorted(regions.items(), key=lambda kv: -len(kv[1])):
        print(f"  {name:<14}{len(rows):>5}  {len({p['city_id'] for p in rows}):>6}  {sum(p['names_city'] for p in rows):>11}")
    print("by kind:", dict(collections.Counter(p["kind"] for p in posts).most_common()))
    for p in posts:
        if p["_alt"]:
            print(f"  alternate name in post (line {p['src_line']}, {p['city']}): {p['_alt']}")
    for problem in problems:
        print("PROBLEM:", problem, file=sys.stderr)
    print(f"wrote {args.out}" + ("" if not problems else f" with {len(problems)} problems"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
