#!/usr/bin/env python3
"""Synthetic training posts from the project's landmark lists, for the TLC fine-tuning experiment of issue #18.

Each listed name becomes a few short posts ("Dinner near {name}", "Let's go {name}!") labelled with its city.
The names are split in two by a hash of the name: the posts of one half ("seen") are written for training, the
other half ("held out") is listed so that an evaluation can keep to posts naming no seen name (the issue asks
whether the encoders learn what names mean beyond the names they were shown).

Writes to --out: synthetic.jsonl (id, text, city_id, lat, lon), cities.jsonl (the seen names' cities, in the
project's city schema, from the gazetteer), seen_names.txt and held_out_names.txt. Standard library only.

Usage: tools/kb/synthetic_posts.py --gazetteer ~/.local/share/contrastgeo/gazetteer \\
           --landmarks tools/kb/landmarks/*.tsv --out /tmp/synth [--posts-per-name 1] [--seed 18]
"""
import argparse
import hashlib
import json
import os
import random

TEMPLATES = {
    "landmark": ["Finally saw {n} today", "Photos from {n} this morning", "Dinner near {n}",
                 "Walking around {n} with friends", "The view from {n} never gets old"],
    "neighbourhood": ["Brunch in {n}", "Just moved to {n}", "Night out in {n}", "Coffee in {n} before work"],
    "street": ["Shopping on {n}", "Traffic on {n} again", "Late night food on {n}"],
    "venue": ["Game day at {n}", "Concert at {n} tonight", "Great seats at {n}"],
    "team": ["Let's go {n}!", "{n} win again", "Watching the {n} game tonight"],
    "university": ["First day of classes at {n}", "Campus tour at {n}", "Graduation day at {n}"],
    "park": ["Picnic in {n}", "Morning run through {n}", "Sunset at {n}"],
    "region": ["Back in the {n}", "Weekend trip around the {n}", "Nothing beats summer in the {n}"],
}


def name_key(name):
    return " ".join(name.casefold().split())


def is_seen(name):
    """Half of the names, fixed by a hash of the name (not by the run's seed)."""
    return hashlib.sha256(name_key(name).encode()).digest()[0] % 2 == 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gazetteer", required=True, help="folder holding cities15000.json")
    parser.add_argument("--landmarks", nargs="+", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--posts-per-name", type=int, default=1)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--all-names", action="store_true",
                        help="write posts for every name (no held-out half): for a model to use, not to evaluate")
    args = parser.parse_args()
    gazetteer = json.load(open(os.path.join(args.gazetteer, "cities15000.json"), encoding="utf-8"))
    countries = json.load(open(os.path.join(args.gazetteer, "countries.json"), encoding="utf-8"))
    country_name = {c["iso"]: c["name"] for c in countries.values()}
    # admin1 as the store's prompts write it (the Rust gazetteer import names US states and Canada's provinces)
    states = {s["code"]: s["name"] for s in json.load(open(os.path.join(args.gazetteer, "us_states.json"))).values()}
    canada = {"01": "Alberta", "02": "British Columbia", "03": "Manitoba", "04": "New Brunswick",
              "05": "Newfoundland and Labrador", "07": "Nova Scotia", "08": "Ontario", "09": "Prince Edward Island",
              "10": "Quebec", "11": "Saskatchewan", "12": "Yukon", "13": "Northwest Territories", "14": "Nunavut"}
    rng = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)
    posts, seen, held_out, cities = [], set(), set(), {}
    for path in args.landmarks:
        with open(path, encoding="utf-8") as f:
            next(f)
            for line in f:
                fields = line.rstrip("\n").split("\t")
                if len(fields) != 5:
                    continue
                name, kind, city_id = fields[0], fields[1], fields[2]
                city = gazetteer.get(city_id)
                if city is None or kind not in TEMPLATES:
                    continue
                if not args.all_names and not is_seen(name):
                    held_out.add(name_key(name))
                    continue
                seen.add(name_key(name))
                for template in rng.sample(TEMPLATES[kind], min(args.posts_per_name, len(TEMPLATES[kind]))):
                    posts.append({"text": template.format(n=name), "city_id": int(city_id),
                                  "lat": city["latitude"], "lon": city["longitude"]})
                cities[int(city_id)] = {
                    "id": int(city_id), "name": city["name"],
                    "admin1": (states if city["countrycode"] == "US" else canada if city["countrycode"] == "CA"
                               else {}).get(city["admin1code"]),
                    "country": country_name.get(city["countrycode"], ""),
                    "country_code": city["countrycode"], "lat": city["latitude"], "lon": city["longitude"],
                    "population": city["population"]}
    rng.shuffle(posts)
    for number, post in enumerate(posts, start=1):
        post["id"] = f"synthetic-{number}"
    with open(os.path.join(args.out, "synthetic.jsonl"), "w", encoding="utf-8") as f:
        for post in posts:
            f.write(json.dumps(post, ensure_ascii=False) + "\n")
    with open(os.path.join(args.out, "cities.jsonl"), "w", encoding="utf-8") as f:
        for city in cities.values():
            f.write(json.dumps(city, ensure_ascii=False) + "\n")
    for name, names in (("seen_names.txt", seen), ("held_out_names.txt", held_out - seen)):
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as f:
            f.write("\n".join(sorted(names)) + "\n")
    print(f"{len(posts)} posts of {len(seen)} seen names in {len(cities)} cities; "
          f"{len(held_out - seen)} names held out")


if __name__ == "__main__":
    main()
