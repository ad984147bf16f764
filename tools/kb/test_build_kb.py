#!/usr/bin/env python3
"""Tests of tools/kb/build_kb.py (stdlib unittest). Run: python3 tools/kb/test_build_kb.py"""
import csv
import json
import math
import os
import random
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_kb  # noqa: E402


def city(gid, name, lat, lon, population):
    return {"geonameid": gid, "name": name, "latitude": lat, "longitude": lon, "countrycode": "XX",
            "population": population, "timezone": "UTC", "admin1code": "01", "alternatenames": []}


def geonames_line(gid, name, lat, lon, population, fcode="PPL", alternates=""):
    """One row of a GeoNames dump table (19 tab-separated columns)."""
    fields = [str(gid), name, name, alternates, str(lat), str(lon), "P", fcode, "XX", "", "01", "", "", "",
              str(population), "", "10", "UTC", "2024-01-01"]
    return "\t".join(fields) + "\n"


# Bigtown (2M) at the origin; Smallton (20k) 0.3 deg east (~33 km); Fartown (500k) 1.2 deg east (~133 km);
# Edgeville (50k) just west of the antimeridian.
GAZETTEER = [city(1, "Bigtown", 0.0, 0.0, 2_000_000), city(2, "Smallton", 0.0, 0.3, 20_000),
             city(3, "Fartown", 0.0, 1.2, 500_000), city(4, "Edgeville", 10.0, 179.9, 50_000),
             city(5, "Lonely", 30.0, 30.0, 20_000)]


class TempDirTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)
        self.gazetteer = self.write("cities15000.json", json.dumps({str(c["geonameid"]): c for c in GAZETTEER}))

    def write(self, name, text):
        path = os.path.join(self.dir.name, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def build(self, geonames=(), airports=(), landmarks=(), **options):
        out = os.path.join(self.dir.name, "out", "places.tsv")
        report, _ = build_kb.build(self.gazetteer, geonames, airports, landmarks, out, **options)
        with open(out, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        return report, rows


class NearestCityTest(TempDirTest):
    def setUp(self):
        super().setUp()
        cities = build_kb.load_gazetteer(self.gazetteer, build_kb.BadRows())
        self.resolver = build_kb.Resolver(cities)

    def resolve(self, lat, lon):
        found = self.resolver.resolve(lat, lon)
        return None if found is None else (found[0].name, round(found[1]))

    def test_nearest_city_within_50_km_wins_over_a_bigger_one(self):
        # 0.25 deg east: Smallton is 5.6 km away, Bigtown 27.8 km
        self.assertEqual(self.resolve(0.0, 0.25), ("Smallton", 6))

    def test_falls_back_to_a_100k_city_within_100_km(self):
        # 0.7 deg north of Bigtown: 77.8 km from Bigtown, nothing within 50 km
        self.assertEqual(self.resolve(0.7, 0.0), ("Bigtown", 78))

    def test_small_city_beyond_50_km_is_not_a_fallback(self):
        # 0.6 deg north of Lonely (20k people): 66.7 km, too far for the first rule, too small for the second
        self.assertIsNone(self.resolve(30.6, 30.0))

    def test_far_from_everything_is_dropped(self):
        self.assertIsNone(self.resolve(-45.0, -120.0))

    def test_across_the_antimeridian(self):
        # 0.15 deg of longitude across 180 at 10 N is about 16.4 km
        self.assertEqual(self.resolve(10.0, -179.95), ("Edgeville", 16))

    def test_across_the_prime_meridian(self):
        grid = build_kb.CityGrid([build_kb.City(9, "Westside", 51.5, -0.1, 30_000, "XX")])
        found = grid.nearest(51.5, 0.1, 50)
        self.assertEqual(found[0].name, "Westside")
        self.assertAlmostEqual(found[1], 13.8, places=0)

    def test_grid_agrees_with_brute_force(self):
        rng = random.Random(7)
        cities = [build_kb.City(i, f"c{i}", rng.uniform(-70, 70), rng.uniform(-180, 180),
                                rng.choice([20_000, 150_000]), "XX") for i in range(3000)]
        grid = build_kb.CityGrid(cities)
        for _ in range(300):
            lat, lon = rng.uniform(-70, 70), rng.uniform(-180, 180)
            for radius, min_pop in ((50, 0), (100, 100_000)):
                expected = min(((build_kb.km(lat, lon, c.lat, c.lon), c.id) for c in cities
                                if c.population >= min_pop), default=None)
                expected = expected if expected and expected[0] <= radius else None
                found = grid.nearest(lat, lon, radius, min_pop)
                self.assertEqual(None if found is None else found[0].id, None if expected is None else expected[1])

    def test_gravity_prefers_the_metropolis_for_its_suburbs(self):
        cities = build_kb.load_gazetteer(self.gazetteer, build_kb.BadRows())
        gravity = build_kb.Resolver(cities, gravity=True)
        # 0.22 deg east: Smallton 8.9 km (20k), Bigtown 24.5 km (2M): 20k/10.9^3 = 15 < 2M/26.5^3 = 107
        self.assertEqual(gravity.resolve(0.0, 0.22)[0].name, "Bigtown")
        # right next to Smallton it stays with Smallton
        self.assertEqual(gravity.resolve(0.0, 0.3)[0].name, "Smallton")

    def test_places_in_the_output_carry_their_city_and_distance(self):
        places = self.write("cities500.txt", geonames_line(101, "Westbank", 0.0, 0.25, 3000) +
                            geonames_line(102, "Nowhere Creek", -45.0, -120.0, 3000))
        report, rows = self.build([places])
        by_name = {r["name"]: r for r in rows}
        self.assertEqual(by_name["Westbank"]["city_id"], "2")
        self.assertEqual(by_name["Westbank"]["city_name"], "Smallton")
        self.assertAlmostEqual(float(by_name["Westbank"]["distance_km"]), 5.6, places=1)
        self.assertNotIn("Nowhere Creek", by_name)
        dropped = [n for what, n in report["counts"].items() if what.startswith("dropped: no city")]
        self.assertEqual(dropped, [1])


class NamesakeStrengthTest(TempDirTest):
    def strengths(self, lines, **options):
        places = self.write("cities500.txt", "".join(lines))
        _, rows = self.build([places], min_strength=0.0, **options)
        return {(r["name"], r["city_name"]): float(r["strength"]) for r in rows}

    def test_a_name_in_two_cities_is_weaker_than_a_unique_one(self):
        s = self.strengths([geonames_line(101, "Oldtown", 0.0, 0.05, 5000),
                            geonames_line(102, "Oldtown", 0.0, 1.25, 5000),
                            geonames_line(103, "Uniqueplace", 0.0, 0.05, 5000)])
        unique = s[("Uniqueplace", "Bigtown")]
        self.assertAlmostEqual(s[("Oldtown", "Bigtown")], unique / 2, places=3)
        self.assertAlmostEqual(s[("Oldtown", "Fartown")], unique / 2, places=3)

    def test_the_more_prominent_namesake_gets_the_larger_share(self):
        s = self.strengths([geonames_line(101, "Twinford", 0.0, 0.05, 200_000),
                            geonames_line(102, "Twinford", 0.0, 1.25, 600)])
        self.assertGreater(s[("Twinford", "Bigtown")], 2 * s[("Twinford", "Fartown")])

    def test_a_gazetteer_city_of_the_same_name_takes_most_of_the_strength(self):
        # a hamlet called "Fartown" next to Bigtown competes with the 500k city Fartown
        s = self.strengths([geonames_line(101, "Fartown", 0.0, 0.05, 800),
                            geonames_line(103, "Otherplace", 0.0, 0.05, 800)])
        self.assertLess(s[("Fartown", "Bigtown")], 0.5 * s[("Otherplace", "Bigtown")])

    def test_short_names_are_weaker(self):
        s = self.strengths([geonames_line(101, "Abc", 0.0, 0.05, 5000),
                            geonames_line(102, "Abcdefgh", 0.0, 0.05, 5000)])
        self.assertLess(s[("Abc", "Bigtown")], s[("Abcdefgh", "Bigtown")] / 2)

    def test_neighbourhoods_and_alternate_names(self):
        s = self.strengths([geonames_line(101, "Riverside", 0.0, 0.05, 50_000, fcode="PPLX",
                                          alternates="Riverside,Rive Droite,ke luo,RVS")])
        self.assertIn(("Rive Droite", "Bigtown"), s)          # a capitalised Latin alternate name
        self.assertNotIn(("ke luo", "Bigtown"), s)            # a lower-case romanisation
        self.assertNotIn(("RVS", "Bigtown"), s)               # a code
        self.assertLess(s[("Rive Droite", "Bigtown")], s[("Riverside", "Bigtown")])
        _, rows = self.build([self.write("b.txt", geonames_line(101, "Riverside", 0.0, 0.05, 50_000, "PPLX"))])
        self.assertEqual(rows[0]["kind"], "neighbourhood")

    def test_airport_names_and_codes(self):
        airports = self.write("airports.json", json.dumps([
            {"ident": "XXBG", "type": "large_airport", "name": "Bigtown Grand International Airport",
             "latitude_deg": "0.1", "longitude_deg": "0.0", "municipality": "Bigtown", "scheduled_service": "yes",
             "gps_code": "XXBG", "iata_code": "BGX", "keywords": "Grandfield"},
            {"ident": "XXSM", "type": "small_airport", "name": "Smallton Strip", "latitude_deg": "0.0",
             "longitude_deg": "0.31", "municipality": "Smallton", "scheduled_service": "no", "gps_code": "XXSM",
             "iata_code": "SMX", "keywords": ""}]))
        _, rows = self.build(airports=[airports])
        names = {(r["name"], r["kind"]): r for r in rows}
        self.assertIn(("BGX", "airport_code"), names)
        self.assertIn(("XXBG", "airport_code"), names)
        self.assertNotIn(("SMX", "airport_code"), names)       # small and unscheduled: no code
        self.assertIn(("Bigtown Grand", "airport"), names)      # short form
        self.assertIn(("Grand", "airport"), names)              # short form less its city
        self.assertIn(("Grandfield", "airport"), names)         # OurAirports keyword
        self.assertIn(("Bigtown Airport", "airport"), names)
        self.assertIn(("Smallton Strip", "airport"), names)
        self.assertGreater(float(names[("Bigtown Grand International Airport", "airport")]["strength"]),
                           float(names[("Smallton Strip", "airport")]["strength"]))


class BadRowTest(TempDirTest):
    def test_bad_rows_are_counted_with_their_line_numbers(self):
        lines = [geonames_line(101, "Goodplace", 0.0, 0.05, 5000),       # line 1
                 "102\tShort row\n",                                       # line 2: too few columns
                 geonames_line(103, "Fineplace", 0.0, 0.06, 5000),        # line 3
                 geonames_line(104, "Badlat", "north", 0.0, 5000),        # line 4: latitude not a number
                 geonames_line(105, "", 0.0, 0.0, 5000),                  # line 5: empty name
                 geonames_line(106, "Offmap", 95.0, 0.0, 5000),           # line 6: latitude out of range
                 geonames_line("x107", "Badid", 0.0, 0.0, 5000),          # line 7: id not a number
                 geonames_line(108, "Badpop", 0.0, 0.0, "many")]          # line 8: population not a number
        places = self.write("cities500.txt", "".join(lines))
        report, rows = self.build([places])
        bad = report["bad_rows"][places]
        self.assertEqual(bad["count"], 6)
        self.assertEqual(report["bad_rows_total"], 6)
        self.assertEqual([entry.split(":")[0] for entry in bad["first"]],
                         ["line 2", "line 4", "line 5", "line 6", "line 7"])   # the first 5 only
        self.assertEqual(sorted(r["name"] for r in rows), ["Fineplace", "Goodplace"])

    def test_bad_json_records_and_csv_lines_are_reported(self):
        airports = self.write("airports.json", json.dumps([
            {"type": "large_airport", "name": "Okay Airport", "latitude_deg": "0.1", "longitude_deg": "0.1",
             "iata_code": "OKA", "scheduled_service": "yes"},
            {"type": "large_airport", "name": "Nowhere Airport", "latitude_deg": "abc", "longitude_deg": "0",
             "iata_code": "NWA"},
            {"something": "else"}]))
        header = '"icao","iata","name","city","subd","country","elevation","lat","lon","tz","lid"\n'
        table = self.write("airports.csv", header +
                           '"XXAA","AAA","Alpha Field","Bigtown","","XX",10,0.05,0.05,"UTC",""\n'
                           '"XXBB","BBB","Beta Field","Bigtown","","XX",10,0.05\n'
                           '"XXCC","TOOLONG","Gamma Field","Bigtown","","XX",10,0.05,0.05,"UTC",""\n')
        report, rows = self.build(airports=[airports, table])
        self.assertEqual(report["bad_rows"][airports]["count"], 2)
        self.assertTrue(report["bad_rows"][airports]["first"][0].startswith("record 2:"))
        self.assertTrue(report["bad_rows"][airports]["first"][1].startswith("record 3:"))
        self.assertEqual([e.split(":")[0] for e in report["bad_rows"][table]["first"]], ["line 3", "line 4"])
        self.assertIn("Alpha Field", {r["name"] for r in rows})

    def test_output_is_complete_and_no_temporary_file_is_left(self):
        places = self.write("cities500.txt", geonames_line(101, "Goodplace", 0.0, 0.05, 5000))
        report, rows = self.build([places])
        folder = os.path.join(self.dir.name, "out")
        self.assertEqual(os.listdir(folder), ["places.tsv"])
        with open(os.path.join(folder, "places.tsv"), encoding="utf-8") as f:
            self.assertEqual(f.readline().rstrip("\n").split("\t"), build_kb.HEADER)
        self.assertEqual(report["rows"], len(rows))


class LandmarkListTest(TempDirTest):
    HEADER = "name\tkind\tcity_id\tcity\tcountry_code\n"

    def test_listed_names_point_at_their_city_and_bad_rows_are_named(self):
        listed = self.write("landmarks.tsv", self.HEADER +
                            "Big Tower\tlandmark\t1\tBigtown\tXX\n"          # line 2
                            "Small Bridge\tlandmark\t2\tSmallton\tXX\n"       # line 3: 33 km from Bigtown
                            "Typo Park\tpark\t2\tBigtown\tXX\n"               # line 4: id and name disagree
                            "Ghost Hall\tlandmark\t99\tGhost\tXX\n"           # line 5: no such city
                            "Odd\tshrine\t1\tBigtown\tXX\n"                   # line 6: unknown kind
                            "Short\tlandmark\t1\n")                           # line 7: too few columns
        report, rows = self.build(landmarks=[listed], gravity=True)
        self.assertEqual([e.split(":")[0] for e in report["bad_rows"][listed]["first"]],
                         ["line 4", "line 5", "line 6", "line 7"])
        by_name = {r["name"]: r for r in rows}
        self.assertEqual(set(by_name), {"Big Tower", "Small Bridge"})
        # the listed city, even where a bigger city's pull would resolve the point elsewhere
        self.assertEqual(by_name["Small Bridge"]["city_id"], "2")
        self.assertEqual(by_name["Big Tower"]["kind"], "landmark")
        self.assertGreater(float(by_name["Big Tower"]["strength"]), 0.9)

    def test_a_listed_name_that_is_also_a_gazetteer_city_elsewhere_is_shared(self):
        listed = self.write("landmarks.tsv", self.HEADER + "Fartown\tneighbourhood\t1\tBigtown\tXX\n"
                            "Grand Arena\tvenue\t1\tBigtown\tXX\n")
        _, rows = self.build(landmarks=[listed])
        strength = {r["name"]: float(r["strength"]) for r in rows}
        self.assertLess(strength["Fartown"], 0.7 * strength["Grand Arena"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
