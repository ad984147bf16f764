#!/usr/bin/env python3
"""Writes a 100-city candidate set for the training-time measurement of the README: the benchmark's 60
cities plus the 40 most populous other US and Canadian cities of the GeoNames gazetteer fetched by
tools/setup.sh. Usage: tools/hundred_cities.py BENCHMARK_CITIES_JSONL GAZETTEER_DIR OUT_JSONL"""
import json
import sys

bench_path, gazetteer_dir, out_path = sys.argv[1:4]
bench = [json.loads(line) for line in open(bench_path) if line.strip()]
have = {int(c["id"]) for c in bench}
raw = json.load(open(f"{gazetteer_dir}/cities15000.json"))
states = {s["code"]: s["name"] for s in json.load(open(f"{gazetteer_dir}/us_states.json")).values()}
names = {"US": "United States", "CA": "Canada"}
extra = sorted(
    (c for c in raw.values() if c["countrycode"] in names and c["geonameid"] not in have),
    key=lambda c: -c["population"],
)[: 100 - len(bench)]
with open(out_path, "w") as out:
    for c in bench:
        out.write(json.dumps(c) + "\n")
    for c in extra:
        out.write(json.dumps({
            "id": c["geonameid"], "name": c["name"], "admin1": states.get(c["admin1code"]),
            "country": names[c["countrycode"]], "country_code": c["countrycode"],
            "lat": c["latitude"], "lon": c["longitude"], "population": c["population"],
        }) + "\n")
