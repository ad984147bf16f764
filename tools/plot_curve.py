#!/usr/bin/env python3
"""The learning curve: Acc@1 and macro Acc@1 against labels per city, contrastgeo's engine vs its peers.

Reads the engine's reports (every `reports/curve/*/report.json` written by `contrastgeo eval ... --out`) and the peers' (`tools/peers/run.sh`, `reports/curve/peers/peers.json`), writes
`reports/curve/curve.png` and prints the Markdown table the README quotes. The SetFit peer
(`tools/peers/run_setfit.sh`, `reports/curve/setfit/setfit.json`) joins the plot and the table when that file exists
(mean over the seeds it holds). The product's own path, encoders trained on the store's labels (`eval` without
`--no-train`), is slow on 2 cores, so it is measured at a few K only: each `--trained` report directory that exists
adds its points to the plot and a second table.

    python3 tools/plot_curve.py [--curve reports/curve] [--trained reports/k5-hybrid,reports/k16-hybrid,...]

Needs matplotlib (tools/peers/run.sh installs it in its virtual environment: run it with
target/peers-venv/bin/python).
"""

import argparse
import json
import math
import os

ORDER = ["1", "2", "4", "8", "16", "32", "64", "all"]


def engine_rows(curve):
    return report_rows(os.path.join(curve, name) for name in sorted(os.listdir(curve)))


def report_rows(directories):
    rows = {}
    for directory in directories:
        path = os.path.join(directory, "report.json")
        if not os.path.exists(path):
            continue
        report = json.load(open(path))
        for result in report["results"]:
            k = "all" if result["shots"] >= 2**63 else str(result["shots"])
            methods = result["methods"]
            authors = (result.get("authors") or {}).get("authors_with_many_posts") or {}
            rows[k] = {
                "engine": methods["engine"],
                "zero-shot": methods["zero-shot"],
                "seeds": len(result["runs"]),
                "authors": authors,
            }
    return rows


def engine_cell(e):
    """Acc@1 / macro Acc@1 / unnamed Acc@1 / Acc@161km of one engine result, as the tables print it."""
    return (f"{e['overall']['acc1']:.3f} / {e['macro_avg']['acc1']:.3f} / {e['unnamed']['acc1']:.3f} / "
            f"{e['overall']['acc161']:.3f}")


def position(k):
    """Where K sits on the plot's axis: the curve's K are powers of two one step apart, `all` one step past 64."""
    return len(ORDER) - 1 if k == "all" else math.log2(int(k))


def peer_rows(curve, name="peers"):
    path = os.path.join(curve, name, f"{name}.json")
    return json.load(open(path)) if os.path.exists(path) else {}


def peer_metric(peers, method, k, key):
    entry = peers.get("methods", {}).get(method, {}).get(k)
    return None if entry is None else entry["mean"].get(key)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curve", default="reports/curve")
    parser.add_argument("--trained", default="reports/k5-hybrid,reports/k16-hybrid,reports/all-encoder-2",
                        help="comma-separated eval report directories of the product with trained encoders")
    args = parser.parse_args()
    engine = engine_rows(args.curve)
    trained = report_rows(args.trained.split(",") if args.trained else [])
    peers = peer_rows(args.curve)
    setfit = peer_rows(args.curve, "setfit")
    ks = [k for k in ORDER if k in engine]

    print("| labels per city | seeds | engine Acc@1 / macro / unnamed / Acc@161km | "
          "TF-IDF LR Acc@1 / macro / unnamed / Acc@161km | SetFit Acc@1 / macro / unnamed / Acc@161km | "
          "majority Acc@1 | zero-shot Acc@1 | authors >= 5 posts: engine / LR / SetFit Acc@161km |")
    print("|---|---|---|---|---|---|---|---|")
    fmt = lambda x: "-" if x is None else f"{x:.3f}"
    for k in ks:
        e = engine[k]["engine"]
        lr, sf = ([peer_metric(source, method, k, key) for key in ("acc1", "macro_acc1", "unnamed_acc1", "acc161")]
                  for source, method in ((peers, "tfidf_lr"), (setfit, "setfit")))
        sf = " / ".join(map(fmt, sf)) if any(x is not None for x in sf) else "-"
        print(f"| {k} | {engine[k]['seeds']} | {engine_cell(e)} | {' / '.join(map(fmt, lr))} | {sf} | "
              f"{fmt(peer_metric(peers, 'majority', k, 'acc1'))} | {engine[k]['zero-shot']['overall']['acc1']:.3f} | "
              f"{fmt(engine[k]['authors'].get('acc161'))} / {fmt(peer_metric(peers, 'tfidf_lr', k, 'author_acc161'))}"
              f" / {fmt(peer_metric(setfit, 'setfit', k, 'author_acc161'))} |")

    if trained:
        print("\n| labels per city | seeds | trained encoders: engine Acc@1 / macro / unnamed / Acc@161km | "
              "authors >= 5 posts Acc@161km |")
        print("|---|---|---|---|")
        for k in sorted(trained, key=position):
            e = trained[k]["engine"]
            print(f"| {k} | {trained[k]['seeds']} | {engine_cell(e)} | {fmt(trained[k]['authors'].get('acc161'))} |")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [position(k) for k in ks]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
    for ax, (title, key, peer_key) in zip(axes, [("Acc@1", "overall", "acc1"), ("macro Acc@1", "macro_avg", "macro_acc1")]):
        ax.plot(xs, [engine[k]["engine"][key]["acc1"] for k in ks], "o-", label="contrastgeo engine, base encoder", color="C0")
        if trained:
            tks = sorted(trained, key=position)
            ax.plot([position(k) for k in tks], [trained[k]["engine"][key]["acc1"] for k in tks], "*", markersize=11,
                    label="contrastgeo engine, encoders trained on the labels", color="C4")
        for source, method, label, style, colour in [
                (peers, "tfidf_lr", "TF-IDF logistic regression", "s--", "C1"),
                (setfit, "setfit", "SetFit (all-MiniLM-L6-v2, 20 pair iterations)", "D-.", "C3"),
                (peers, "majority", "majority", "s--", "C7")]:
            ys = [peer_metric(source, method, k, peer_key) for k in ks]
            if any(y is not None for y in ys):
                ax.plot([x for x, y in zip(xs, ys) if y is not None], [y for y in ys if y is not None], style, label=label, color=colour)
        zero = engine[ks[0]]["zero-shot"][key]["acc1"] if ks else None
        if zero is not None:
            ax.axhline(zero, color="C2", linestyle=":", label="zero-shot (prompts only)")
        ax.set_xticks(xs, ks)
        ax.set_xlabel("labelled posts per city (K)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle("Learning curve on the shared benchmark (18,902 test posts, text only)")
    fig.tight_layout()
    out = os.path.join(args.curve, "curve.png")
    fig.savefig(out, dpi=110)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
