#!/usr/bin/env python3
"""Chooses the cities whose landmarks the project's hand-written lists (tools/kb/landmarks/*.tsv) cover.

The rule is by size and status only, never by any evaluation set. Tier 1: in the United States and Canada every
gazetteer city of at least 200,000 people; elsewhere every city of at least 2,000,000 people, each country's
capital, and each country's two most populous cities. Tier 2 (the cities tier 1 leaves out): in the United
States and Canada every city of 100,000 to 200,000 people; elsewhere every city of at least 700,000 people and
each country's five most populous cities. Depth (a second, longer list for the tier-1 cities that posts name
most, the `*_depth.tsv` lists): tier-1 cities of at least 500,000 people in the United States and Canada, of at
least 1,000,000 elsewhere, and every national capital. Writes one TSV per region (geonameid, name, admin1 code, country
code, population) to the output folder.

Usage: tools/kb/landmark_cities.py --gazetteer ~/.local/share/contrastgeo/gazetteer --out /tmp/kbcities [--tier 2 | --depth]
"""
import argparse
import collections
import json
import os

REGIONS = {
    "us_canada": {"US", "CA"},
    "europe": set("AD AL AT BA BE BG BY CH CY CZ DE DK EE ES FI FO FR GB GI GR HR HU IE IM IS IT LI LT LU LV MC MD "
                  "ME MK MT NL NO PL PT RO RS RU SE SI SK SM UA VA XK".split()),
    "asia_oceania": set("AF AM AU AZ BD BN BT CN FJ GE HK ID IN JP KG KH KP KR KZ LA LK MM MN MO MV MY NC NP NZ PF PG "
                        "PH PK SB SG TH TJ TL TM TW UZ VN VU WS TO KI FM MH NR PW TV".split()),
}


def region_of(cc, continent):
    for name, codes in REGIONS.items():
        if cc in codes:
            return name
    return "latam_africa_mideast"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gazetteer", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--tier", type=int, choices=(1, 2), default=1)
    parser.add_argument("--depth", action="store_true", help="the tier-1 cities that get a second, longer list")
    args = parser.parse_args()
    cities = list(json.load(open(os.path.join(args.gazetteer, "cities15000.json"))).values())
    countries = json.load(open(os.path.join(args.gazetteer, "countries.json")))
    capital_of = {c["iso"]: c["capital"] for c in countries.values()}
    continent_of = {c["iso"]: c["continentcode"] for c in countries.values()}
    chosen = {}
    by_country = collections.defaultdict(list)
    for c in cities:
        by_country[c["countrycode"]].append(c)
    def tier1(cc, own):
        if cc in ("US", "CA"):
            return [c for c in own if c["population"] >= 200_000]
        capital = [c for c in own if c["name"] == capital_of.get(cc)]
        return [c for c in own if c["population"] >= 2_000_000] + own[:2] + capital[:1]

    def tier2(cc, own):
        if cc in ("US", "CA"):
            return [c for c in own if 100_000 <= c["population"] < 200_000]
        return [c for c in own if c["population"] >= 700_000] + own[:5]

    def depth(cc, own):
        floor = 500_000 if cc in ("US", "CA") else 1_000_000
        capital = capital_of.get(cc)
        return [c for c in tier1(cc, own) if c["population"] >= floor or c["name"] == capital]

    for cc, own in by_country.items():
        own.sort(key=lambda c: -c["population"])
        picks = depth(cc, own) if args.depth else tier1(cc, own)
        if args.tier == 2:
            first = {c["geonameid"] for c in picks}
            picks = [c for c in tier2(cc, own) if c["geonameid"] not in first]
        for c in picks:
            chosen[c["geonameid"]] = c
    os.makedirs(args.out, exist_ok=True)
    rows = collections.defaultdict(list)
    for c in chosen.values():
        rows[region_of(c["countrycode"], continent_of.get(c["countrycode"]))].append(c)
    for region, own in sorted(rows.items()):
        own.sort(key=lambda c: (c["countrycode"], -c["population"]))
        with open(os.path.join(args.out, region + ".tsv"), "w") as out:
            out.write("geonameid\tname\tadmin1\tcountry_code\tpopulation\n")
            for c in own:
                out.write(f"{c['geonameid']}\t{c['name']}\t{c['admin1code']}\t{c['countrycode']}\t{c['population']}\n")
        print(region, len(own))


if __name__ == "__main__":
    main()
