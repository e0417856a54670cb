"""Redraw the README's figures of the committed results with the lessons' figure functions, so that
they share the course's look (one colour and marker per variant, `cosuda.config.VARIANT_STYLES`)
and its axes (differences on their own axis centred on 0):

    docs/results/synthetic_reproduction_curves.png  every grid row over training; below, the
                                                    self-training rows minus only SSL, paired by seed
    docs/results/synthetic_alignment.png            the alignment measures over training (lesson 07)
    docs/results/synthetic_sweep_tcos.png           T_cos and dict-size sweeps beside Table 6 (lesson 09)
    docs/results/synthetic_sweep_dict.png

    python scripts/readme_figures.py        # reads docs/results/synthetic*/ only; trains nothing
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cosuda import plots, results  # noqa: E402
from cosuda.config import VARIANTS  # noqa: E402
from cosuda.paper_results import PAPER_RESULTS  # noqa: E402

OUT = REPO / "docs" / "results"


def main() -> None:
    runs = results.load(results.PUBLISHED, "gta5")
    rows = [v for v in results.ROW_ORDER if v in runs]
    self_training = [v for v in rows if VARIANTS[v].uses_pseudo_labels]
    figures = {
        "synthetic_reproduction_curves.png": plots.curves_and_differences(
            runs, rows, "only-ssl", self_training, title="synthetic grid, GTA5-like → Cityscapes-like"),
        "synthetic_alignment.png": plots.alignment_figure(runs, ["source-only", "adversarial", "ours11", "only-ssl",
                                                                 "ours"]),
    }
    sweep = results.load(results.PUBLISHED_SWEEPS, "gta5")
    points, _ = results.sweep_points(sweep, runs.get("ours"), "miou19")
    paper6 = PAPER_RESULTS["table6"]
    for key, name, file in (("t_cos", "T_cos", "synthetic_sweep_tcos.png"),
                            ("dict_size", "dict-size", "synthetic_sweep_dict.png")):
        figures[file] = plots.sweep_beside_paper(name, {x: list(v.values()) for x, v in points[key].items()},
                                                 paper6[key])
    for file, fig in figures.items():
        fig.savefig(OUT / file, dpi=120, bbox_inches="tight")
        print(f"wrote {(OUT / file).relative_to(REPO)}")


if __name__ == "__main__":
    main()
