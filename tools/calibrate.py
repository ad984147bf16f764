#!/usr/bin/env python3
"""Calibration of the answer's probability against "written within 161 km of the answered city" (issue #18).

  tools/calibrate.py fit   LABELLED.jsonl LOCATED.jsonl   # LOCATED from `locate --calibration 1,0`
  tools/calibrate.py check LABELLED.jsonl LOCATED.jsonl [--plot OUT.png] [--answer-accuracy 0.70]

LABELLED: posts with lat/lon (e.g. sets/test.jsonl); LOCATED: `contrastgeo locate --min-confidence 0` output for
them. Posts on odd lines are the fitting half, posts on even lines the evaluation half.

`fit` fits Platt scaling, p' = sigmoid(slope * logit(p) + intercept), to the answers' reported probabilities on
the fitting half (the pair with the least expected calibration error, ECE over 10 equal-width bins, on a
grid), and prints the evaluation half's reliability table and ECE before and after it: give the pair to
`locate --calibration SLOPE,INTERCEPT` (or make it the store's default). Answers whose city the post names by a
known place of the knowledge base (`mention_known_place` on the answered candidate) get a pair of their own,
fitted on them alone: `locate --known-place-calibration SLOPE,INTERCEPT`.

`check` scores the probabilities as reported (a run with the calibration in place): reliability table and
ECE on the evaluation half, and the coverage / accuracy curve per abstain threshold; `--plot` draws both.
It also chooses the abstain threshold on the fitting half: the lowest one (in steps of 0.01, so the most posts
answered) whose answers are within 161 km at least `--answer-accuracy` of the time, and scores it on the
evaluation half: give it to `locate --min-confidence` (or make it the store's default).
"""
import argparse
import json
import math

from geodesy import km




def reliability(points, bins=10):
    """points: (probability, within 161 km). Rows (low, high, posts, mean probability, observed) and ECE."""
    rows, ece, n = [], 0.0, len(points)
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = [(c, ok) for c, ok in points if low <= c < high or (b == bins - 1 and c >= 1.0)]
        if not inside:
            rows.append((low, high, 0, None, None))
            continue
        conf = sum(c for c, _ in inside) / len(inside)
        acc = sum(ok for _, ok in inside) / len(inside)
        ece += len(inside) / n * abs(acc - conf)
        rows.append((low, high, len(inside), conf, acc))
    return rows, ece


def platt(p, slope, intercept):
    p = min(max(p, 1e-6), 1 - 1e-6)
    return 1 / (1 + math.exp(-(slope * math.log(p / (1 - p)) + intercept)))


def load(labelled, located):
    truth = [json.loads(line) for line in open(labelled) if line.strip()]
    answers = {r["line"]: r for r in (json.loads(line) for line in open(located) if line.strip())}
    points = []  # (line, probability, within 161 km, named by a known place)
    for line, post in enumerate(truth, start=1):
        answer = answers.get(line)
        if answer is None or answer.get("lat") is None:
            continue
        near = km(post["lat"], post["lon"], answer["lat"], answer["lon"]) <= 161.0
        top = (answer.get("top_k") or [{}])[0]
        known = bool(top.get("mention_known_place")) and top.get("city_id") == answer.get("city_id")
        points.append((line, answer["probability"], near, known))
    return points


def choose_threshold(points, answer_accuracy):
    """The lowest threshold (0.01 steps) whose answers among points (probability, within 161 km) are within
    161 km at least answer_accuracy of the time; None when no threshold reaches it."""
    for step in range(0, 100):
        t = step / 100
        kept = [ok for p, ok in points if p >= t]
        if kept and sum(kept) / len(kept) >= answer_accuracy:
            return t
    return None


def coverage(points, t):
    kept = [ok for p, ok in points if p >= t]
    return len(kept) / len(points), (sum(kept) / len(kept)) if kept else None


def table(title_a, rows_a, title_b=None, rows_b=None):
    fmt = lambda v: "-" if v is None else f"{v:.3f}"
    if rows_b is None:
        print(f"| probability bin | posts | mean probability ({title_a}) | within 161 km |")
        print("|---|---|---|---|")
        for low, high, n, c, a in rows_a:
            print(f"| {low:.1f}-{high:.1f} | {n} | {fmt(c)} | {fmt(a)} |")
        return
    print(f"| probability bin | posts | mean probability ({title_a}) | within 161 km | posts | "
          f"mean probability ({title_b}) | within 161 km |")
    print("|---|---|---|---|---|---|---|")
    for (low, high, n1, c1, a1), (_, _, n2, c2, a2) in zip(rows_a, rows_b):
        print(f"| {low:.1f}-{high:.1f} | {n1} | {fmt(c1)} | {fmt(a1)} | {n2} | {fmt(c2)} | {fmt(a2)} |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["fit", "check"])
    parser.add_argument("labelled")
    parser.add_argument("located")
    parser.add_argument("--plot")
    parser.add_argument("--answer-accuracy", type=float, default=0.70,
                        help="the share of answers within 161 km the abstain threshold keeps on the fitting half")
    args = parser.parse_args()
    points = load(args.labelled, args.located)
    fit = [(p, ok) for line, p, ok, _ in points if line % 2 == 1]
    held = [(p, ok) for line, p, ok, _ in points if line % 2 == 0]
    print(f"posts: {len(points)} (fitting half {len(fit)}, evaluation half {len(held)}); "
          f"Acc@161km of the answers: {sum(ok for _, _, ok, _ in points) / len(points):.3f}")
    if args.mode == "fit":
        grid = [(s / 20, i / 20) for s in range(2, 61) for i in range(-80, 41)]
        best = lambda sample: min(grid, key=lambda g: reliability([(platt(p, *g), ok) for p, ok in sample])[1])
        general_fit = [(p, ok) for line, p, ok, known in points if line % 2 == 1 and not known]
        known_fit = [(p, ok) for line, p, ok, known in points if line % 2 == 1 and known]
        slope, intercept = best(general_fit)
        pairs = {False: (slope, intercept), True: best(known_fit) if known_fit else (slope, intercept)}
        before_rows, before = reliability(held)
        after_rows, after = reliability([(platt(p, *pairs[known]), ok)
                                         for line, p, ok, known in points if line % 2 == 0])
        print(f"Platt scaling: --calibration {slope},{intercept}; ECE on the evaluation half {before:.3f} -> {after:.3f}")
        known_held = [(p, ok) for line, p, ok, known in points if line % 2 == 0 and known]
        if known_fit:
            k_slope, k_intercept = pairs[True]
            _, known_before = reliability([(platt(p, slope, intercept), ok) for p, ok in known_held])
            _, known_after = reliability([(platt(p, k_slope, k_intercept), ok) for p, ok in known_held])
            print(f"answers named by a known place ({len(known_fit)} of the fitting half, {len(known_held)} of the "
                  f"evaluation half): --known-place-calibration {k_slope},{k_intercept}; their ECE on the "
                  f"evaluation half with the general pair {known_before:.3f}, with their own {known_after:.3f}")
        table("as reported", before_rows, "calibrated", after_rows)
        return
    rows, ece = reliability(held)
    print(f"ECE on the evaluation half: {ece:.3f}")
    table("as reported", rows)
    thresholds = [round(0.05 * i, 2) for i in range(0, 20)]
    curve = []
    for t in thresholds:
        kept = [ok for p, ok in held if p >= t]
        curve.append((t, len(kept) / len(held), (sum(kept) / len(kept)) if kept else None))
    print("| threshold | answered | Acc@161km of the answered |")
    print("|---|---|---|")
    for t, answered, acc in curve:
        print(f"| {t:.2f} | {answered:.3f} | {'-' if acc is None else f'{acc:.3f}'} |")
    chosen = choose_threshold(fit, args.answer_accuracy)
    if chosen is None:
        print(f"abstain threshold: no threshold keeps {args.answer_accuracy:.2f} of the fitting half's answers "
              "within 161 km")
    else:
        fit_answered, fit_acc = coverage(fit, chosen)
        held_answered, held_acc = coverage(held, chosen)
        print(f"abstain threshold for answers within 161 km >= {args.answer_accuracy:.2f} of the time: "
              f"--min-confidence {chosen:.2f} (fitting half: {fit_answered:.1%} answered, {fit_acc:.3f} within "
              f"161 km; evaluation half: {held_answered:.1%} answered, {held_acc:.3f} within 161 km)")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
        xs = [c for _, _, n, c, _ in rows if n]
        ys = [a for _, _, n, _, a in rows if n]
        left.plot(xs, ys, "s-", label="answers")
        left.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
        left.set_xlabel("reported probability (bin mean)")
        left.set_ylabel("share within 161 km")
        left.set_title(f"Reliability, world store, evaluation half (ECE {ece:.3f})")
        left.legend()
        kept = [(t, a, acc) for t, a, acc in curve if acc is not None]
        right.plot([t for t, _, _ in kept], [a for _, a, _ in kept], "o-", label="answered share (coverage)")
        right.plot([t for t, _, _ in kept], [acc for _, _, acc in kept], "s-", label="Acc@161km of the answered")
        right.set_xlabel("abstain threshold (--min-confidence)")
        right.set_title("Coverage vs accuracy")
        right.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)


if __name__ == "__main__":
    main()
