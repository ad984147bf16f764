#!/usr/bin/env python3
"""Tests of tools/calibrate.py on fixtures whose true calibration is known (stdlib unittest).
Run: python3 tools/test_calibrate.py"""
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def run_calibrate(mode, answers, *flags):
    """Writes a labelled-posts file and a located file for `answers` (one (probability, near, extra fields) per
    post, line numbers from 1: a right answer at the post, a wrong one about 1,500 km away) and returns what
    `calibrate.py MODE` prints for them."""
    with tempfile.TemporaryDirectory() as folder:
        labelled, located = os.path.join(folder, "posts.jsonl"), os.path.join(folder, "located.jsonl")
        with open(labelled, "w") as posts, open(located, "w") as out:
            for line, (p, near, extra) in enumerate(answers, start=1):
                posts.write(json.dumps({"text": "x", "lat": 0.0, "lon": 0.0}) + "\n")
                out.write(json.dumps({"line": line, "probability": p, "lat": 0.0 if near else 10.0,
                                      "lon": 0.0 if near else 10.0, **extra}) + "\n")
        return subprocess.run([sys.executable, os.path.join(HERE, "calibrate.py"), mode, labelled, located, *flags],
                              capture_output=True, text=True, check=True).stdout


class CalibrateTest(unittest.TestCase):
    def test_fit_recovers_an_overconfident_model_and_lowers_the_error(self):
        # Reported probabilities whose real chance of being within 161 km is sigmoid(0.5 logit(p) - 1): an
        # overconfident engine, like the world store's softmax.
        rng = random.Random(18)
        answers = []
        for _ in range(2000):
            p = min(max(rng.betavariate(2, 1), 0.01), 0.99)
            answers.append((p, rng.random() < sigmoid(0.5 * math.log(p / (1 - p)) - 1.0), {}))
        out = run_calibrate("fit", answers)
        found = re.search(r"--calibration ([-\d.]+),([-\d.]+); ECE on the evaluation half ([\d.]+) -> ([\d.]+)", out)
        self.assertIsNotNone(found, out)
        slope, intercept, before, after = map(float, found.groups())
        self.assertGreater(before, 0.15, out)
        self.assertLess(after, 0.05, out)
        self.assertLess(abs(slope - 0.5), 0.25, out)
        self.assertLess(abs(intercept + 1.0), 0.5, out)

    def test_the_threshold_rule_answers_the_most_posts_that_keep_the_asked_accuracy(self):
        # Calibrated probabilities (a post with p is near with chance p), uniform on [0, 1]: the answers above t
        # are near (1 + t) / 2 of the time, so 0.70 is first reached at t = 0.40.
        rng = random.Random(7)
        answers = []
        for _ in range(20000):
            p = rng.random()
            answers.append((p, rng.random() < p, {}))
        out = run_calibrate("check", answers, "--answer-accuracy", "0.70")
        found = re.search(r"--min-confidence ([\d.]+) \(fitting half: ([\d.]+)% answered, ([\d.]+) within", out)
        self.assertIsNotNone(found, out)
        threshold, answered, accuracy = map(float, found.groups())
        self.assertLess(abs(threshold - 0.40), 0.03, out)
        self.assertLess(abs(answered - 60.0), 3.0, out)
        self.assertGreaterEqual(accuracy, 0.70, out)

    def test_answers_named_by_a_known_place_get_a_pair_of_their_own(self):
        # Answers without a known place: overconfident, as above. Answers named by a known place (a landmark):
        # right more often than they say, sigmoid(logit(p) + 1.5).
        rng = random.Random(19)
        answers = []
        for line in range(1, 8001):
            known = line % 3 == 0
            p = min(max(rng.betavariate(2, 2), 0.01), 0.99)
            logit = math.log(p / (1 - p))
            near = rng.random() < (sigmoid(logit + 1.5) if known else sigmoid(0.5 * logit - 1.0))
            top = {"city_id": 7, "mention": "Atomium", "mention_known_place": True} if known else {"city_id": 7}
            answers.append((p, near, {"city_id": 7, "top_k": [top]}))
        out = run_calibrate("fit", answers)
        general = re.search(r"--calibration ([-\d.]+),([-\d.]+);", out)
        known = re.search(r"--known-place-calibration ([-\d.]+),([-\d.]+); their ECE on the evaluation half "
                          r"with the general pair ([\d.]+), with their own ([\d.]+)", out)
        self.assertIsNotNone(general, out)
        self.assertIsNotNone(known, out)
        slope, intercept = map(float, general.groups())
        _, k_intercept, with_general, with_own = map(float, known.groups())
        self.assertLess(abs(slope - 0.5), 0.25, out)
        self.assertLess(abs(intercept + 1.0), 0.5, out)
        # ECE does not pin the pair down on one group's narrow range of probabilities; what matters is that
        # their own pair raises them (at p = 0.5 the truth is 0.82) and calibrates them.
        self.assertGreater(sigmoid(k_intercept), 0.7, out)
        self.assertGreater(with_general, 0.15, out)
        self.assertLess(with_own, 0.06, out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
